/*
 * The lab's trace format: what the recorder (liblabrec.so, preloaded into the measured
 * 32-bit process) writes and `cargo xtask lab` reads. The Rust side gets these layouts through
 * bindgen (xtask/build.rs, for i686), so this header is the single definition.
 *
 * A trace is a sequence of events. Each starts with a lab_event; an event of kind
 * LAB_EV_ALLOC or LAB_EV_THREAD_CREATE is followed by `frames` 32-bit return addresses,
 * LAB_EV_PHASE and LAB_EV_MODULE by `a` bytes of name (not NUL-terminated), padded to 4.
 */
#ifndef LAB_TRACE_H
#define LAB_TRACE_H

#include <stdint.h>

#define LAB_TRACE_MAGIC 0x4c414232u /* "LAB2": the header with the completeness counts */
#define LAB_MAX_FRAMES 16

enum lab_event_kind {
	LAB_EV_ALLOC = 1,         /* a = address, b = size, origin, component, caps, frames */
	LAB_EV_FREE = 2,          /* a = address */
	LAB_EV_PHASE = 3,         /* a = name length; name follows */
	LAB_EV_THREAD_CREATE = 4, /* a = requested stack bytes (0: not given), b = thread serial; frames */
	LAB_EV_THREAD_END = 5,    /* a = stack high-water bytes, b = thread serial */
	LAB_EV_MUTEX = 6,         /* a = address; first use of a pthread mutex */
	LAB_EV_COND = 7,          /* a = address; first use of a condition variable */
	LAB_EV_SOCKET = 8,        /* a = fd, b = (domain << 16) | type */
	LAB_EV_SOCKET_CLOSE = 9,  /* a = fd */
	LAB_EV_MODULE = 10,       /* a = path length, b = load base; path follows */
	LAB_EV_SYNC_DESTROY = 11, /* a = address of a destroyed mutex or condition variable */
};

/* Where an allocation came from: decides placement in the ESP32 projection. */
enum lab_origin {
	LAB_ORIGIN_MALLOC = 0, /* malloc/calloc/realloc/memalign family, untagged */
	LAB_ORIGIN_NEW = 1,    /* C++ operator new (any form) */
	LAB_ORIGIN_TAGGED = 2, /* esp_dc_port_* via the force-included redirect header */
};

/* lab_trace_header.flags */
#define LAB_TRACE_FULL 1u        /* the log filled up: lost_events events are missing */
#define LAB_TRACE_UNPUBLISHED 2u /* unpublished_events were still being written and are left out */
#define LAB_TRACE_UNTRACKED 4u   /* sync_untracked first uses found no room in the recorder's table */

/* The counts say whether the trace is complete; the reader refuses one that is not. */
typedef struct lab_trace_header {
	uint32_t magic;
	uint32_t pointer_bytes; /* 4 for the 32-bit replica */
	uint32_t default_stack_bytes;
	uint32_t flags;              /* LAB_TRACE_* */
	uint32_t lost_events;        /* refused because the log was full */
	uint32_t unpublished_events; /* reserved by a thread but not yet written when the trace was taken */
	uint32_t sync_untracked;     /* mutex/cond first uses the table could not hold */
	uint32_t reserved;
} lab_trace_header;

typedef struct lab_event {
	uint8_t kind;
	uint8_t origin;
	uint8_t frames;
	int8_t component; /* ESP_DC_COMPONENT_* for tagged blocks, -1 otherwise */
	uint32_t thread;  /* recorder's thread index, 1 = main */
	/* Nanoseconds since the recorder started, as two words: a uint64_t would be 4-aligned on
	 * i686 and 8-aligned on the 64-bit reader. */
	uint32_t time_lo;
	uint32_t time_hi;
	uint32_t a;
	uint32_t b;
	uint32_t caps; /* heap caps for tagged blocks */
	uint32_t size; /* this event's bytes with what follows it: lab_finish steps over an unfinished one */
} lab_event;

#ifdef __cplusplus
extern "C" {
#endif
/* Marks the start of a phase; the driver finds it with dlsym so it runs without the recorder. */
void lab_phase(const char *name);
/* Writes the trace now (the driver calls it before _Exit). */
void lab_finish(void);
#ifdef __cplusplus
}
#endif

#endif

#pragma once
/*
 * The HTTP side of a WHEP endpoint (draft-ietf-wish-whep) as plain C: which status, headers and
 * body answer a request, and what an SDP offer asks for. No sockets, no ESP-IDF, no WebRTC: the
 * HTTP server (esp_http_server in examples/whep_camera) fills a whep_request_t, the WebRTC side
 * sits behind whep_backend_t, and the host tests drive whep_handle() directly.
 *
 *   GET     /               the page (text/html)
 *   POST    /whep           Content-Type application/sdp, body the offer -> 201 Created, the SDP
 *                           answer, Location: /whep/<session id>
 *   DELETE  /whep/<id>      ends that session -> 200
 *   OPTIONS /whep           204 with Accept-Post and the CORS headers a player on another page needs
 *   PATCH   /whep/<id>      405: no trickle ICE and no ICE restart (both sides send complete
 *                           descriptions, so the answer waits for ICE gathering)
 * Errors: 400 not an SDP offer or nothing we can send, 404 unknown path or session, 405 method,
 * 413 offer too large, 415 not application/sdp, 503 (Retry-After) the endpoint's `max_sessions`
 * sessions are all running: each PeerConnection costs the stack's per-connection memory again
 * (README "Many viewers"), so the application says how many it can afford.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define WHEP_ENDPOINT_PATH "/whep"
#define WHEP_MID_MAX 32
#define WHEP_FMTP_MAX 160
#define WHEP_HEADERS_MAX 6
/* The most sessions one endpoint can hold; whep_endpoint_init's max_sessions is at most this. */
#define WHEP_SESSIONS_MAX 8

typedef enum {
    WHEP_METHOD_GET,
    WHEP_METHOD_POST,
    WHEP_METHOD_DELETE,
    WHEP_METHOD_PATCH,
    WHEP_METHOD_OPTIONS,
    WHEP_METHOD_OTHER,
} whep_method_t;

/* What an offer asks for, as far as the device cares. */
typedef struct {
    char video_mid[WHEP_MID_MAX];  /* the first video section that wants to receive; "" if none */
    int h264_payload_type;         /* its H.264 payload type (packetization-mode 1); -1 if none */
    char h264_fmtp[WHEP_FMTP_MAX]; /* that payload type's fmtp parameters, "" if it had none */
    char data_mid[WHEP_MID_MAX];   /* the m=application (data channel) section's mid; "" if none */
} whep_offer_t;

typedef enum {
    WHEP_OFFER_OK = 0,
    WHEP_OFFER_NOT_SDP = -1,           /* does not start with v=0, or has no m= line */
    WHEP_OFFER_NO_H264 = -2,           /* video to receive, but no H.264 with packetization-mode 1 */
    WHEP_OFFER_NOTHING_TO_SEND = -3,   /* neither video to receive nor a data channel */
    WHEP_OFFER_FIELD_TOO_LONG = -4,    /* a mid or the fmtp does not fit */
} whep_offer_result_t;

/* Reads `len` bytes of SDP (need not be NUL-terminated; CRLF or LF lines). */
whep_offer_result_t whep_parse_offer(const char *sdp, size_t len, whep_offer_t *out);

/* A text for a whep_offer_result_t, used in 400 bodies. */
const char *whep_offer_result_text(whep_offer_result_t result);

typedef enum {
    WHEP_START_OK = 0,
    WHEP_START_BAD_OFFER = -1, /* the WebRTC stack refused the offer: 400 */
    WHEP_START_FAILED = -2,    /* out of memory, no answer: 500 */
} whep_start_result_t;

/* The WebRTC side. Every function is called from the HTTP server's task only. A session lives in
 * one of the endpoint's `max_sessions` slots (0 .. max_sessions - 1); the backend keeps its state
 * by slot. */
typedef struct {
    /* Starts a session in the free `slot` from `offer` (NUL-terminated) and writes the complete
     * answer, NUL-terminated, into `answer` (capacity `answer_size`). */
    whep_start_result_t (*start)(void *ctx, int slot, const char *offer, const whep_offer_t *parsed, char *answer,
                                 size_t answer_size);
    /* Ends the session in `slot` (DELETE, or what is left of one that ended by itself). */
    void (*stop)(void *ctx, int slot);
    /* Whether the session start() made in `slot` still runs; false once it ended by itself (the
     * peer went away without DELETE), which frees the slot for the next POST. */
    bool (*alive)(void *ctx, int slot);
    /* 32 random bits for session ids. */
    uint32_t (*random)(void *ctx);
    void *ctx;
} whep_backend_t;

typedef struct {
    whep_backend_t backend;
    const char *page; /* served on GET / */
    size_t page_len;
    size_t max_offer_bytes;  /* larger offers get 413 */
    size_t answer_capacity;  /* buffer given to backend.start() */
    int max_sessions;        /* sessions at once (1 .. WHEP_SESSIONS_MAX); one more POST gets 503 */
    /* Per slot: "/whep/<16 hex digits>" while its session exists, else "". */
    char session_path[WHEP_SESSIONS_MAX][40];
} whep_endpoint_t;

typedef struct {
    whep_method_t method;
    const char *path;         /* without the query string */
    const char *content_type; /* NULL: no Content-Type header */
    size_t content_length;    /* as the request announced it */
    const char *body;         /* content_length bytes; NULL if not read (too large) */
} whep_request_t;

typedef struct {
    const char *name;
    const char *value;
} whep_header_t;

typedef struct {
    int status;
    const char *status_line; /* "201 Created" */
    const char *content_type;
    whep_header_t headers[WHEP_HEADERS_MAX];
    int header_count;
    const char *body;
    size_t body_len;
    char *owned;             /* heap buffer behind body (the answer); whep_response_free() frees it */
    char location[40];       /* storage for the Location header's value */
} whep_response_t;

/* `max_sessions` is clamped to 1 .. WHEP_SESSIONS_MAX. */
void whep_endpoint_init(whep_endpoint_t *ep, const whep_backend_t *backend, const char *page,
                        size_t max_offer_bytes, size_t answer_capacity, int max_sessions);

/* Decides the response to `req`, calling the backend for POST and DELETE. */
void whep_handle(whep_endpoint_t *ep, const whep_request_t *req, whep_response_t *resp);

void whep_response_free(whep_response_t *resp);

/* "GET" -> WHEP_METHOD_GET etc.; anything else WHEP_METHOD_OTHER. */
whep_method_t whep_method_from_name(const char *name);

#ifdef __cplusplus
}
#endif

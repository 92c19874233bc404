/*
 * esp_memtrack: on-device memory accounting for `cargo xtask analyze`.
 *
 * Every call prints lines of the form
 *   MEMTRACK <kind> key=value key=value ...
 * one fact per line, no spaces inside values (labels and task names have spaces replaced by '_').
 * The format is documented in docs/analyze.md; changing it is a breaking change for the analyzer.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include "esp_err.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Prints one `MEMTRACK snapshot` line per heap (internal, psram, dma) and remembers it as
 *  the baseline for later deltas when `as_baseline` is true. */
void esp_memtrack_snapshot(const char *label, bool as_baseline);

/** Takes a snapshot and prints one `MEMTRACK delta` line per heap: now minus baseline. */
void esp_memtrack_delta(const char *label);

/** Prints one `MEMTRACK task` line per FreeRTOS task with its stack high-water mark. */
void esp_memtrack_tasks(const char *label);

/** Gives heap tracing its record buffer (PSRAM when configured). Call once, early. */
esp_err_t esp_memtrack_trace_init(void);

/** Starts heap tracing: every allocation (leaks_only false) or only unfreed ones. */
esp_err_t esp_memtrack_trace_start(const char *label, bool leaks_only);

/** Stops heap tracing. */
esp_err_t esp_memtrack_trace_stop(const char *label);

/** Prints a `MEMTRACK trace event=dump` line, then ESP-IDF's heap_trace_dump_caps(caps). */
void esp_memtrack_trace_dump(const char *label, uint32_t caps);

#ifdef __cplusplus
}
#endif

/* Test-only stand-in for ESP-IDF's esp_heap_trace.h. */
#pragma once
#include <stddef.h>
#include <stdint.h>
#include "esp_err.h"
typedef enum { HEAP_TRACE_ALL, HEAP_TRACE_LEAKS } heap_trace_mode_t;
typedef struct { uint32_t ccount; void *address; size_t size; void *alloced_by[4]; void *freed_by[4]; } heap_trace_record_t;
esp_err_t heap_trace_init_standalone(heap_trace_record_t *record_buffer, size_t num_records);
esp_err_t heap_trace_start(heap_trace_mode_t mode);
esp_err_t heap_trace_stop(void);
void heap_trace_dump_caps(const uint32_t caps);

/* Test-only stand-in for ESP-IDF's esp_heap_caps.h (same cap bit values as ESP-IDF 5.5). */
#pragma once
#include <stddef.h>
#include <stdint.h>
#define MALLOC_CAP_DMA (1 << 3)
#define MALLOC_CAP_SPIRAM (1 << 10)
#define MALLOC_CAP_INTERNAL (1 << 11)
size_t heap_caps_get_free_size(uint32_t caps);
size_t heap_caps_get_minimum_free_size(uint32_t caps);
size_t heap_caps_get_largest_free_block(uint32_t caps);
void *heap_caps_calloc(size_t n, size_t size, uint32_t caps);

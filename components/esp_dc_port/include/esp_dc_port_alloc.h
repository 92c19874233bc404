/*
 * Placement-aware allocation used by the force-included redirect header and by the
 * C++ operator new replacement. On ESP-IDF these call heap_caps_*; when the requested
 * heap is exhausted they fall back to any 8-bit capable heap (CONFIG_ESP_DC_PORT_ALLOC_FALLBACK)
 * rather than fail, because upstream code treats NULL from malloc as fatal.
 * In the host lab the same entry points are provided by the recorder, which attributes
 * each block to `component_id` exactly.
 */
#ifndef ESP_DC_PORT_ALLOC_H
#define ESP_DC_PORT_ALLOC_H

#include <stddef.h>
#include <stdint.h>

#ifdef ESP_PLATFORM
#include "esp_heap_caps.h"
#else
/* Same bit values as ESP-IDF's components/heap/include/esp_heap_caps.h, so caps masks
 * computed on the host (lab projection) mean what they mean on the device. */
#define MALLOC_CAP_8BIT (1 << 2)
#define MALLOC_CAP_DMA (1 << 3)
#define MALLOC_CAP_SPIRAM (1 << 10)
#define MALLOC_CAP_INTERNAL (1 << 11)
#define MALLOC_CAP_DEFAULT (1 << 12)
#endif

/* Component ids shared by CMake, the host recorder and the lab's report (order of policy::COMPONENTS). */
#define ESP_DC_COMPONENT_OTHER 0
#define ESP_DC_COMPONENT_LIBDATACHANNEL 1
#define ESP_DC_COMPONENT_LIBJUICE 2
#define ESP_DC_COMPONENT_USRSCTP 3
#define ESP_DC_COMPONENT_LIBSRTP 4
#define ESP_DC_COMPONENT_PLOG 5
#define ESP_DC_COMPONENT_ESP_DC_PORT 6
#define ESP_DC_COMPONENT_MBEDTLS 7

#ifdef __cplusplus
extern "C" {
#endif

void *esp_dc_port_malloc(size_t size, uint32_t caps, int component_id);
void *esp_dc_port_calloc(size_t count, size_t size, uint32_t caps, int component_id);
void *esp_dc_port_realloc(void *ptr, size_t size, uint32_t caps, int component_id);

#ifdef __cplusplus
}
#endif

#endif /* ESP_DC_PORT_ALLOC_H */

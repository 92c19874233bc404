/*
 * Placement-aware allocation behind esp_dc_alloc_redirect.h and operator new.
 * MALLOC_CAP_DEFAULT means "as plain malloc would": ESP-IDF's malloc() applies
 * CONFIG_SPIRAM_MALLOC_ALWAYSINTERNAL, heap_caps_malloc(MALLOC_CAP_DEFAULT) would not.
 * component_id is for the host lab's recorder, which provides these same entry points; on the
 * device the heap tracer attributes by caller address instead.
 */
#include <stdlib.h>
#include <string.h>

#include "esp_heap_caps.h"
#include "sdkconfig.h"

#include "esp_dc_port_alloc.h"

static inline int plain(uint32_t caps)
{
    return caps == 0 || caps == MALLOC_CAP_DEFAULT;
}

void *esp_dc_port_malloc(size_t size, uint32_t caps, int component_id)
{
    (void)component_id;
    if (plain(caps)) {
        return malloc(size);
    }
    void *p = heap_caps_malloc(size, caps);
#if CONFIG_ESP_DC_PORT_ALLOC_FALLBACK
    if (p == NULL && size != 0) {
        p = heap_caps_malloc(size, MALLOC_CAP_8BIT);
    }
#endif
    return p;
}

void *esp_dc_port_calloc(size_t count, size_t size, uint32_t caps, int component_id)
{
    (void)component_id;
    if (plain(caps)) {
        return calloc(count, size);
    }
    void *p = heap_caps_calloc(count, size, caps);
#if CONFIG_ESP_DC_PORT_ALLOC_FALLBACK
    if (p == NULL && count != 0 && size != 0) {
        p = heap_caps_calloc(count, size, MALLOC_CAP_8BIT);
    }
#endif
    return p;
}

void *esp_dc_port_realloc(void *ptr, size_t size, uint32_t caps, int component_id)
{
    (void)component_id;
    if (plain(caps)) {
        return realloc(ptr, size);
    }
    /* heap_caps_realloc moves the block into a heap with `caps` when it is not already in one. */
    void *p = heap_caps_realloc(ptr, size, caps);
#if CONFIG_ESP_DC_PORT_ALLOC_FALLBACK
    if (p == NULL && size != 0) {
        p = heap_caps_realloc(ptr, size, MALLOC_CAP_8BIT);
    }
#endif
    return p;
}

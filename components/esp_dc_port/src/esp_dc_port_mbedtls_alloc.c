/*
 * mbedtls.allocator = "custom" (CONFIG_MBEDTLS_CUSTOM_MEM_ALLOC): ESP-IDF's mbedTLS port then
 * calls these. mbedTLS allocations (handshake buffers, certificates, record buffers) go to PSRAM
 * when there is PSRAM, through the same fallback as the rest of the stack.
 */
#include <stdlib.h>

#include "esp_heap_caps.h"
#include "sdkconfig.h"

#include "esp_dc_port_alloc.h"

void *esp_mbedtls_mem_calloc(size_t n, size_t size)
{
#if CONFIG_SPIRAM
    return esp_dc_port_calloc(n, size, MALLOC_CAP_SPIRAM, ESP_DC_COMPONENT_MBEDTLS);
#else
    return esp_dc_port_calloc(n, size, MALLOC_CAP_INTERNAL | MALLOC_CAP_8BIT, ESP_DC_COMPONENT_MBEDTLS);
#endif
}

void esp_mbedtls_mem_free(void *ptr)
{
    free(ptr);
}

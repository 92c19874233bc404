/*
 * esp_dc_port: the heap-trace buffer size and the hardware RNG. The run-time half of the policy,
 * esp_dc_port_init() and the per-PeerConnection and per-track knobs (esp_dc_port_configure(),
 * esp_dc_port_chain_nack_responder()), is in the component esp_dc_init (esp_dc_init.h), which
 * depends on libdatachannel; this component stays a leaf that the stack's libraries require.
 */
#ifndef ESP_DC_PORT_H
#define ESP_DC_PORT_H

#include <stddef.h>
#include <stdint.h>

#include "esp_err.h"
#include "sdkconfig.h"

#include "esp_dc_port_alloc.h"

/* heap_tracing.records: size of the application's heap trace buffer. */
#ifdef CONFIG_ESP_DC_PORT_HEAP_TRACE_RECORDS
#define ESP_DC_HEAP_TRACE_RECORDS CONFIG_ESP_DC_PORT_HEAP_TRACE_RECORDS
#else
#define ESP_DC_HEAP_TRACE_RECORDS 0
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Random bytes from the hardware RNG (esp_fill_random). */
void esp_dc_port_random(void *buf, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* ESP_DC_PORT_H */

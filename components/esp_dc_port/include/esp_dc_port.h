/*
 * esp_dc_port: the policy's knobs an application passes on, and the hardware RNG. The
 * run-time half, esp_dc_port_init(), is in the component esp_dc_init (esp_dc_init.h), which
 * depends on libdatachannel; this component stays a leaf that the stack's libraries require.
 * Knobs that are per PeerConnection or per track are exposed as macros for the application:
 *
 *   rtcConfiguration config = {0};
 *   config.maxMessageSize = ESP_DC_MAX_MESSAGE_SIZE;
 *   ...
 *   rtcChainRtcpNackResponder(track, ESP_DC_NACK_MAX_PACKETS);
 */
#ifndef ESP_DC_PORT_H
#define ESP_DC_PORT_H

#include <stddef.h>
#include <stdint.h>

#include "esp_err.h"
#include "sdkconfig.h"

#include "esp_dc_port_alloc.h"

/* libdatachannel knob nack_max_packets: pass to rtcChainRtcpNackResponder(). */
#ifdef CONFIG_ESP_DC_LIBDATACHANNEL_NACK_MAX_PACKETS
#define ESP_DC_NACK_MAX_PACKETS CONFIG_ESP_DC_LIBDATACHANNEL_NACK_MAX_PACKETS
#else
#define ESP_DC_NACK_MAX_PACKETS 512
#endif

/* libdatachannel knob max_message_bytes: rtcConfiguration.maxMessageSize. */
#ifdef CONFIG_ESP_DC_LIBDATACHANNEL_MAX_MESSAGE_BYTES
#define ESP_DC_MAX_MESSAGE_SIZE CONFIG_ESP_DC_LIBDATACHANNEL_MAX_MESSAGE_BYTES
#else
#define ESP_DC_MAX_MESSAGE_SIZE (256 * 1024)
#endif

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

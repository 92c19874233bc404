/*
 * esp_dc_port: call esp_dc_port_init() once, before the first rtcCreatePeerConnection().
 *
 * It applies the policy's run-time knobs (SCTP buffer sizes through rtcSetSctpSettings) and
 * places the stacks of every thread the stack starts afterwards from the calling task
 * (esp_pthread_cfg_t with stack_alloc_caps and inherit_cfg). Knobs that are per PeerConnection
 * or per track are exposed as macros for the application to pass on:
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

/* What esp_dc_port_init() applied, for the application's start-up log. */
typedef struct {
    uint32_t thread_stack_bytes;
    uint32_t thread_stack_caps; /* 0: ESP-IDF's default */
    int sctp_recv_buffer_bytes;
    int sctp_send_buffer_bytes;
    int sctp_max_chunks_on_queue;
    uint32_t new_caps; /* caps of operator new, MALLOC_CAP_DEFAULT for plain malloc */
} esp_dc_port_settings_t;

/*
 * Applies the policy to the calling task and to libdatachannel. Call it from the task that will
 * create the PeerConnections. Returns ESP_ERR_INVALID_STATE when libdatachannel refuses the
 * SCTP settings, or the esp_pthread_set_cfg() error.
 */
esp_err_t esp_dc_port_init(void);

/* The settings esp_dc_port_init() applies (valid before and after the call). */
esp_dc_port_settings_t esp_dc_port_settings(void);

/* Random bytes from the hardware RNG (esp_fill_random). */
void esp_dc_port_random(void *buf, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* ESP_DC_PORT_H */

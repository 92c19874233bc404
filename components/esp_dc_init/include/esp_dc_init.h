/*
 * esp_dc_init: call esp_dc_port_init() once, before the first rtcCreatePeerConnection().
 *
 * It applies the policy's run-time knobs (SCTP buffer sizes through rtcSetSctpSettings) and
 * places the stacks of every thread the stack starts afterwards from the calling task
 * (esp_pthread_cfg_t with stack_alloc_caps and inherit_cfg). The per-PeerConnection and
 * per-track knobs are macros of esp_dc_port.h, included here.
 */
#ifndef ESP_DC_INIT_H
#define ESP_DC_INIT_H

#include <stdint.h>

#include "esp_err.h"

#include "esp_dc_port.h"

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

#ifdef __cplusplus
}
#endif

#endif /* ESP_DC_INIT_H */

/*
 * esp_dc_init: call esp_dc_port_init() once, before the first rtcCreatePeerConnection().
 *
 * It applies the policy's run-time knobs (SCTP buffer sizes through rtcSetSctpSettings) and
 * places the stacks of every thread the stack starts afterwards from the calling task
 * (esp_pthread_cfg_t with stack_alloc_caps and inherit_cfg). The per-PeerConnection and
 * per-track knobs are applied by esp_dc_port_configure() and esp_dc_port_chain_nack_responder():
 *
 *   rtcConfiguration config;
 *   memset(&config, 0, sizeof(config));
 *   esp_dc_port_configure(&config);      (maxMessageSize, ...)
 *   ...
 *   esp_dc_port_chain_nack_responder(track);
 */
#ifndef ESP_DC_INIT_H
#define ESP_DC_INIT_H

#include <stdint.h>

#include "esp_err.h"

#include "rtc/rtc.h"

#include "esp_dc_port.h"
#include "esp_dc_runtime_knobs.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What esp_dc_port_init() applied, for the application's start-up log, and the policy's value of
 * every run-time knob under its policy name (sctp_recv_buffer_bytes, max_message_bytes, ...): the
 * rows of esp_dc_runtime_knobs.h, generated from the knob catalogue. */
typedef struct {
    uint32_t thread_stack_bytes;
    uint32_t thread_stack_caps; /* 0: ESP-IDF's default */
    uint32_t new_caps;          /* caps of operator new, MALLOC_CAP_DEFAULT for plain malloc */
#define ESP_DC_SETTINGS_MEMBER(api, field, name, kconfig, lab_env, upstream) int name;
    ESP_DC_RUNTIME_KNOBS(ESP_DC_SETTINGS_MEMBER)
#undef ESP_DC_SETTINGS_MEMBER
} esp_dc_port_settings_t;

/*
 * Applies the policy to the calling task and to libdatachannel. Call it from the task that will
 * create the PeerConnections. Returns ESP_ERR_INVALID_STATE when libdatachannel refuses the
 * SCTP settings, or the esp_pthread_set_cfg() error.
 */
esp_err_t esp_dc_port_init(void);

/* The settings esp_dc_port_init() applies (valid before and after the call). */
esp_dc_port_settings_t esp_dc_port_settings(void);

/* Sets every rtcConfiguration field the policy has a knob for (the CONFIGURATION rows of
 * esp_dc_runtime_knobs.h: maxMessageSize); leaves the others as the caller set them. Call it on
 * each configuration before rtcCreatePeerConnection(). */
void esp_dc_port_configure(rtcConfiguration *config);

/* rtcChainRtcpNackResponder(track, <the policy's nack_max_packets>): what it returns. */
int esp_dc_port_chain_nack_responder(int track);

#ifdef __cplusplus
}
#endif

#endif /* ESP_DC_INIT_H */

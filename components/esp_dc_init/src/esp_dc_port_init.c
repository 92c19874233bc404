/*
 * esp_dc_port_init(): the policy's run-time half. Compile-time knobs are definitions on the
 * generated components; these are the ones libdatachannel only takes through its API.
 */
#include <string.h>

#include "esp_heap_caps.h"
#include "esp_log.h"
#include "esp_pthread.h"
#include "sdkconfig.h"

#include "rtc/rtc.h"

#include "esp_dc_init.h"

static const char *TAG = "esp_dc_port";

/* Knob values from the generated libdatachannel Kconfig; 0 = libdatachannel's own default. */
#ifndef CONFIG_ESP_DC_LIBDATACHANNEL_SCTP_RECV_BUFFER_BYTES
#define CONFIG_ESP_DC_LIBDATACHANNEL_SCTP_RECV_BUFFER_BYTES 0
#endif
#ifndef CONFIG_ESP_DC_LIBDATACHANNEL_SCTP_SEND_BUFFER_BYTES
#define CONFIG_ESP_DC_LIBDATACHANNEL_SCTP_SEND_BUFFER_BYTES 0
#endif
#ifndef CONFIG_ESP_DC_LIBDATACHANNEL_SCTP_MAX_CHUNKS_ON_QUEUE
#define CONFIG_ESP_DC_LIBDATACHANNEL_SCTP_MAX_CHUNKS_ON_QUEUE 0
#endif

esp_dc_port_settings_t esp_dc_port_settings(void)
{
    esp_dc_port_settings_t s = {
        .thread_stack_bytes = CONFIG_ESP_DC_PORT_THREAD_STACK_BYTES,
#if CONFIG_ESP_DC_PORT_THREAD_STACK_PSRAM
        .thread_stack_caps = MALLOC_CAP_SPIRAM | MALLOC_CAP_8BIT,
#elif CONFIG_ESP_DC_PORT_THREAD_STACK_INTERNAL
        .thread_stack_caps = MALLOC_CAP_INTERNAL | MALLOC_CAP_8BIT,
#else
        .thread_stack_caps = 0,
#endif
        .sctp_recv_buffer_bytes = CONFIG_ESP_DC_LIBDATACHANNEL_SCTP_RECV_BUFFER_BYTES,
        .sctp_send_buffer_bytes = CONFIG_ESP_DC_LIBDATACHANNEL_SCTP_SEND_BUFFER_BYTES,
        .sctp_max_chunks_on_queue = CONFIG_ESP_DC_LIBDATACHANNEL_SCTP_MAX_CHUNKS_ON_QUEUE,
#if CONFIG_ESP_DC_PORT_NEW_PLACEMENT_PSRAM
        .new_caps = MALLOC_CAP_SPIRAM,
#elif CONFIG_ESP_DC_PORT_NEW_PLACEMENT_INTERNAL
        .new_caps = MALLOC_CAP_INTERNAL | MALLOC_CAP_8BIT,
#else
        .new_caps = MALLOC_CAP_DEFAULT,
#endif
    };
    return s;
}

esp_err_t esp_dc_port_init(void)
{
    esp_dc_port_settings_t s = esp_dc_port_settings();

    /* Threads started from this task afterwards (libdatachannel's pool at the first
     * PeerConnection, usrsctp's timer thread) take this configuration, and inherit_cfg hands it
     * on to the threads they start (libjuice's connection threads). */
    esp_pthread_cfg_t cfg = esp_pthread_get_default_config();
    cfg.stack_size = s.thread_stack_bytes;
    cfg.prio = CONFIG_ESP_DC_PORT_THREAD_PRIORITY;
    cfg.inherit_cfg = true;
    cfg.thread_name = "esp_dc";
    if (s.thread_stack_caps != 0) {
        cfg.stack_alloc_caps = s.thread_stack_caps;
    }
    esp_err_t err = esp_pthread_set_cfg(&cfg);
    if (err != ESP_OK) {
        ESP_LOGE(TAG, "esp_pthread_set_cfg failed: %s", esp_err_to_name(err));
        return err;
    }

#if CONFIG_ESP_DC_PORT_APPLY_SCTP_SETTINGS
    rtcSctpSettings sctp;
    memset(&sctp, 0, sizeof(sctp)); /* 0: libdatachannel's default for every other field */
    sctp.recvBufferSize = s.sctp_recv_buffer_bytes;
    sctp.sendBufferSize = s.sctp_send_buffer_bytes;
    sctp.maxChunksOnQueue = s.sctp_max_chunks_on_queue;
    if (rtcSetSctpSettings(&sctp) < 0) {
        ESP_LOGE(TAG, "rtcSetSctpSettings refused the policy's SCTP settings");
        return ESP_ERR_INVALID_STATE;
    }
#endif

    ESP_LOGI(TAG, "threads: %u-byte stacks (caps 0x%x); SCTP recv %d send %d chunks %d; operator new caps 0x%x",
             (unsigned)s.thread_stack_bytes, (unsigned)s.thread_stack_caps, s.sctp_recv_buffer_bytes,
             s.sctp_send_buffer_bytes, s.sctp_max_chunks_on_queue, (unsigned)s.new_caps);
    return ESP_OK;
}

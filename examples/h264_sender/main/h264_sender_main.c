/*
 * H.264 sender: the ESP32 offers a sendonly H.264 video track (plus a data channel for control
 * messages), a browser (examples/web/index.html) answers and plays it. Frames come from
 * h264_testsrc (moving colour bars, no camera needed) through common_components/h264_track_sender;
 * replace h264_testsrc_frame() there with a camera + encoder to send real video. The NACK
 * responder keeps the policy's number of packets (esp_dc_port_chain_nack_responder), the biggest
 * per-track buffer in the stack.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dc_console_signaling.h"
#include "esp_dc_init.h"
#include "esp_heap_caps.h"
#include "esp_log.h"
#include "esp_random.h"
#include "freertos/FreeRTOS.h"
#include "freertos/task.h"
#include "h264_track_sender.h"
#include "rtc/rtc.h"
#include "sdkconfig.h"
#if !CONFIG_IDF_TARGET_LINUX
#include "esp_event.h"
#include "esp_netif.h"
#include "nvs_flash.h"
#include "protocol_examples_common.h"
#endif

static const char *TAG = "h264_sender";

#define FPS 5
#define PAYLOAD_TYPE 96

static void on_state(int pc, rtcState state, void *ptr)
{
    (void)pc;
    (void)ptr;
    ESP_LOGI(TAG, "state %d; internal free %u, PSRAM free %u", (int)state,
             (unsigned)heap_caps_get_free_size(MALLOC_CAP_INTERNAL),
             (unsigned)heap_caps_get_free_size(MALLOC_CAP_SPIRAM));
}

static void stream(int track)
{
    h264_track_sender_t sender;
    if (h264_track_sender_init(&sender, FPS * 10) != ESP_OK) {
        return;
    }
    for (;;) {
        if (!rtcIsOpen(track)) {
            vTaskDelay(pdMS_TO_TICKS(100));
            continue;
        }
        h264_track_sender_send(&sender, track);
        vTaskDelay(pdMS_TO_TICKS(1000 / FPS));
    }
}

void app_main(void)
{
#if !CONFIG_IDF_TARGET_LINUX /* the linux target runs on the host's network */
    ESP_ERROR_CHECK(nvs_flash_init());
    ESP_ERROR_CHECK(esp_netif_init());
    ESP_ERROR_CHECK(esp_event_loop_create_default());
    ESP_ERROR_CHECK(example_connect());
#endif

    ESP_ERROR_CHECK(esp_dc_port_init());
    rtcInitLogger(RTC_LOG_WARNING, NULL);

    rtcConfiguration config;
    memset(&config, 0, sizeof(config));
    dc_console_signaling_configure(&config); /* STUN server and bind address from menuconfig */
    esp_dc_port_configure(&config); /* the policy's knobs: maxMessageSize */
    /* One offer, made by dc_console_signaling_exchange() once the channel (and track) exist. */
    config.disableAutoNegotiation = true;

    int pc = rtcCreatePeerConnection(&config);
    if (pc < 0) {
        ESP_LOGE(TAG, "rtcCreatePeerConnection failed: %d", pc);
        return;
    }
    rtcSetStateChangeCallback(pc, on_state);

    uint32_t ssrc = esp_random();
    rtcTrackInit track_init = {
        .direction = RTC_DIRECTION_SENDONLY,
        .codec = RTC_CODEC_H264,
        .payloadType = PAYLOAD_TYPE,
        .ssrc = ssrc,
        .mid = "video",
        .name = "video",
        .msid = "esp32",
        .trackId = "video",
        .profile = "profile-level-id=42e01f;packetization-mode=1;level-asymmetry-allowed=1",
    };
    int track = rtcAddTrackEx(pc, &track_init);
    rtcPacketizerInit packetizer = {
        .ssrc = ssrc,
        .cname = "esp32",
        .payloadType = PAYLOAD_TYPE,
        .clockRate = 90000,
        .nalSeparator = RTC_NAL_SEPARATOR_START_SEQUENCE,
    };
    if (track < 0 || rtcSetH264Packetizer(track, &packetizer) < 0 || rtcChainRtcpSrReporter(track) < 0 ||
        esp_dc_port_chain_nack_responder(track) < 0) {
        ESP_LOGE(TAG, "cannot set up the video track");
        return;
    }
    rtcCreateDataChannel(pc, "control");

    int err = dc_console_signaling_exchange(pc);
    if (err < 0) {
        ESP_LOGE(TAG, "signaling failed: %d", err);
        return;
    }
    stream(track);
}

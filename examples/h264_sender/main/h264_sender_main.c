/*
 * H.264 sender: the ESP32 offers a sendonly H.264 video track (plus a data channel for control
 * messages), a browser (examples/web/index.html) answers and plays it. Frames come from
 * h264_testsrc (moving colour bars, no camera needed); replace h264_testsrc_frame() with a
 * camera + encoder to send real video. The NACK responder keeps the policy's number of packets
 * (ESP_DC_NACK_MAX_PACKETS), the biggest per-track buffer in the stack.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dc_console_signaling.h"
#include "esp_dc_init.h"
#include "esp_heap_caps.h"
#include "esp_log.h"
#include "esp_random.h"
#include "freertos/FreeRTOS.h"
#include "freertos/task.h"
#include "h264_testsrc.h"
#include "rtc/rtc.h"
#include "sdkconfig.h"
#if !CONFIG_IDF_TARGET_LINUX
#include "esp_event.h"
#include "esp_netif.h"
#include "nvs_flash.h"
#include "protocol_examples_common.h"
#endif

static const char *TAG = "h264_sender";

/* Microseconds on a monotonic clock. newlib on the chips and glibc on the linux target both have
 * CLOCK_MONOTONIC (esp_timer is header-only on the linux target). */
static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

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
    size_t capacity = h264_testsrc_max_frame_bytes();
    /* A frame is ~19 KB: PSRAM when there is some, so internal RAM stays for the stack. */
    uint8_t *frame = heap_caps_malloc(capacity, MALLOC_CAP_SPIRAM);
    if (frame == NULL) {
        frame = malloc(capacity);
    }
    if (frame == NULL) {
        ESP_LOGE(TAG, "no memory for a %u-byte frame", (unsigned)capacity);
        return;
    }
    int64_t start_us = now_us();
    uint32_t start_timestamp = 0;
    rtcGetCurrentTrackTimestamp(track, &start_timestamp);
    for (uint32_t n = 0;; ++n) {
        if (!rtcIsOpen(track)) {
            vTaskDelay(pdMS_TO_TICKS(100));
            continue;
        }
        size_t size = h264_testsrc_frame(n, frame, capacity);
        uint32_t elapsed = 0;
        rtcTransformSecondsToTimestamp(track, (double)(now_us() - start_us) / 1e6, &elapsed);
        rtcSetTrackRtpTimestamp(track, start_timestamp + elapsed);
        if (rtcSendMessage(track, (const char *)frame, (int)size) < 0) {
            ESP_LOGW(TAG, "frame %u not sent", (unsigned)n);
        }
        if (n % (FPS * 10) == 0) {
            ESP_LOGI(TAG, "frame %u (%u bytes); min free internal %u", (unsigned)n, (unsigned)size,
                     (unsigned)heap_caps_get_minimum_free_size(MALLOC_CAP_INTERNAL));
        }
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
    config.maxMessageSize = ESP_DC_MAX_MESSAGE_SIZE;
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
        rtcChainRtcpNackResponder(track, ESP_DC_NACK_MAX_PACKETS) < 0) {
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

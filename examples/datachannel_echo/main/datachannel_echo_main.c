/*
 * Data-channel echo: the ESP32 offers a data channel "echo", a browser (examples/web/index.html)
 * answers, and every message the browser sends comes back. Signaling is copy-paste over the
 * serial console, so the example needs no server.
 */
#include <stdio.h>
#include <string.h>

#include "dc_console_signaling.h"
#include "esp_dc_init.h"
#include "esp_heap_caps.h"
#include "esp_log.h"
#include "freertos/FreeRTOS.h"
#include "freertos/task.h"
#include "rtc/rtc.h"
#include "sdkconfig.h"
#if !CONFIG_IDF_TARGET_LINUX
#include "esp_event.h"
#include "esp_netif.h"
#include "nvs_flash.h"
#include "protocol_examples_common.h"
#endif

static const char *TAG = "dc_echo";

static void on_open(int dc, void *ptr)
{
    (void)ptr;
    ESP_LOGI(TAG, "data channel open");
    rtcSendMessage(dc, "hello from ESP32", -1);
}

static void on_message(int dc, const char *message, int size, void *ptr)
{
    (void)ptr;
    /* size < 0: a NUL-terminated string; echo it as a string so the browser sees text. */
    rtcSendMessage(dc, message, size);
}

static void on_state(int pc, rtcState state, void *ptr)
{
    (void)pc;
    (void)ptr;
    ESP_LOGI(TAG, "state %d; internal free %u, PSRAM free %u", (int)state,
             (unsigned)heap_caps_get_free_size(MALLOC_CAP_INTERNAL),
             (unsigned)heap_caps_get_free_size(MALLOC_CAP_SPIRAM));
}

void app_main(void)
{
#if !CONFIG_IDF_TARGET_LINUX /* the linux target runs on the host's network */
    ESP_ERROR_CHECK(nvs_flash_init());
    ESP_ERROR_CHECK(esp_netif_init());
    ESP_ERROR_CHECK(esp_event_loop_create_default());
    ESP_ERROR_CHECK(example_connect());
#endif

    /* Before the first PeerConnection: SCTP buffers and thread stacks from the policy. */
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

    int dc = rtcCreateDataChannel(pc, "echo");
    rtcSetOpenCallback(dc, on_open);
    rtcSetMessageCallback(dc, on_message);

    int err = dc_console_signaling_exchange(pc);
    if (err < 0) {
        ESP_LOGE(TAG, "signaling failed: %d", err);
        return;
    }
    for (;;) {
        vTaskDelay(pdMS_TO_TICKS(10000));
        ESP_LOGI(TAG, "min free internal %u bytes", (unsigned)heap_caps_get_minimum_free_size(MALLOC_CAP_INTERNAL));
    }
}

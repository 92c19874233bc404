#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver/uart.h"
#include "driver/uart_vfs.h"
#include "esp_log.h"
#include "freertos/FreeRTOS.h"
#include "freertos/event_groups.h"
#include "rtc/rtc.h"
#include "sdkconfig.h"

#include "dc_console_signaling.h"

static const char *TAG = "signaling";
static EventGroupHandle_t s_events;
#define GATHERING_DONE BIT0

static void on_gathering_state(int pc, rtcGatheringState state, void *ptr)
{
    (void)pc;
    (void)ptr;
    if (state == RTC_GATHERING_COMPLETE) {
        xEventGroupSetBits(s_events, GATHERING_DONE);
    }
}

/* Blocking line reads from the console UART (the default VFS console does not block). */
static void console_blocking_stdin(void)
{
    static bool done = false;
    if (done) {
        return;
    }
    setvbuf(stdin, NULL, _IONBF, 0);
    ESP_ERROR_CHECK(uart_driver_install(CONFIG_ESP_CONSOLE_UART_NUM, 1024, 0, 0, NULL, 0));
    uart_vfs_dev_use_driver(CONFIG_ESP_CONSOLE_UART_NUM);
    uart_vfs_dev_port_set_rx_line_endings(CONFIG_ESP_CONSOLE_UART_NUM, ESP_LINE_ENDINGS_CR);
    done = true;
}

int dc_console_signaling_exchange(int pc)
{
    s_events = xEventGroupCreate();
    rtcSetGatheringStateChangeCallback(pc, on_gathering_state);
    int err = rtcSetLocalDescription(pc, "offer");
    if (err < 0) {
        return err;
    }
    xEventGroupWaitBits(s_events, GATHERING_DONE, pdTRUE, pdTRUE, portMAX_DELAY);

    /* SDP of a data channel plus one video track stays well below 4 KB. */
    const int size = 4096;
    char *sdp = malloc(size);
    if (sdp == NULL || (err = rtcGetLocalDescription(pc, sdp, size)) < 0) {
        free(sdp);
        return err < 0 ? err : RTC_ERR_FAILURE;
    }
    printf("\n----- OFFER (paste into examples/web/index.html) -----\n%s\n----- END OFFER -----\n", sdp);
    printf("Paste the answer, then a line with only END:\n");

    console_blocking_stdin();
    size_t used = 0;
    char line[256];
    sdp[0] = '\0';
    while (fgets(line, sizeof(line), stdin) != NULL) {
        line[strcspn(line, "\r\n")] = '\0';
        if (strcmp(line, "END") == 0) {
            break;
        }
        size_t n = strlen(line);
        if (n == 0 || used + n + 3 >= (size_t)size) {
            continue;
        }
        memcpy(sdp + used, line, n);
        used += n;
        memcpy(sdp + used, "\r\n", 3);
        used += 2;
    }
    ESP_LOGI(TAG, "answer: %u bytes", (unsigned)used);
    err = rtcSetRemoteDescription(pc, sdp, "answer");
    free(sdp);
    return err < 0 ? err : 0;
}

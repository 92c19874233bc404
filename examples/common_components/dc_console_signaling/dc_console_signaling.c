#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "esp_log.h"
#include "freertos/FreeRTOS.h"
#include "freertos/task.h"
#include "sdkconfig.h"
#if !CONFIG_IDF_TARGET_LINUX
#include "driver/uart.h"
#include "driver/uart_vfs.h"
#endif

#include "dc_console_signaling.h"

static const char *TAG = "signaling";
/* Set from libdatachannel's thread, polled by the calling task. On the linux target that thread
 * is no FreeRTOS task, and a FreeRTOS call from it (an event group's set, which may yield)
 * switches tasks from the wrong thread: an atomic flag is safe from any thread on every target. */
static atomic_bool s_gathering_done;

void dc_console_signaling_configure(rtcConfiguration *config)
{
    static const char *ice_servers[] = {CONFIG_DC_EXAMPLE_STUN_SERVER};
    config->iceServers = ice_servers;
    config->iceServersCount = strlen(CONFIG_DC_EXAMPLE_STUN_SERVER) > 0 ? 1 : 0;
    config->bindAddress = strlen(CONFIG_DC_EXAMPLE_BIND_ADDRESS) > 0 ? CONFIG_DC_EXAMPLE_BIND_ADDRESS : NULL;
}

static void on_gathering_state(int pc, rtcGatheringState state, void *ptr)
{
    (void)pc;
    (void)ptr;
    if (state == RTC_GATHERING_COMPLETE) {
        atomic_store(&s_gathering_done, true);
    }
}

/* Blocking line reads from the console. On a chip the default VFS console does not block, so
 * the UART driver takes over; on the linux target stdin is the process's own. */
static void console_blocking_stdin(void)
{
    static bool done = false;
    if (done) {
        return;
    }
    setvbuf(stdin, NULL, _IONBF, 0);
#if !CONFIG_IDF_TARGET_LINUX
    ESP_ERROR_CHECK(uart_driver_install(CONFIG_ESP_CONSOLE_UART_NUM, 1024, 0, 0, NULL, 0));
    uart_vfs_dev_use_driver(CONFIG_ESP_CONSOLE_UART_NUM);
    uart_vfs_dev_port_set_rx_line_endings(CONFIG_ESP_CONSOLE_UART_NUM, ESP_LINE_ENDINGS_CR);
#endif
    done = true;
}

/* fgets that outlasts signals: the linux target's FreeRTOS port ticks with a POSIX timer
 * signal, which interrupts a blocking read with EINTR. NULL only at end of input. */
static char *read_line(char *line, int size)
{
    for (;;) {
        errno = 0;
        if (fgets(line, size, stdin) != NULL) {
            return line;
        }
        if (feof(stdin) || errno != EINTR) {
            return NULL;
        }
        clearerr(stdin);
    }
}

int dc_console_signaling_exchange(int pc)
{
    atomic_store(&s_gathering_done, false);
    rtcSetGatheringStateChangeCallback(pc, on_gathering_state);
    int err = rtcSetLocalDescription(pc, "offer");
    if (err < 0) {
        return err;
    }
    while (!atomic_load(&s_gathering_done)) {
        vTaskDelay(pdMS_TO_TICKS(10));
    }

    /* SDP of a data channel plus one video track stays well below 4 KB. */
    const int size = 4096;
    char *sdp = malloc(size);
    if (sdp == NULL || (err = rtcGetLocalDescription(pc, sdp, size)) < 0) {
        free(sdp);
        return err < 0 ? err : RTC_ERR_FAILURE;
    }
    printf("\n----- OFFER (paste into examples/web/index.html) -----\n%s\n----- END OFFER -----\n", sdp);
    printf("Paste the answer, then a line with only END:\n");
    fflush(stdout);

    console_blocking_stdin();
    size_t used = 0;
    char line[256];
    sdp[0] = '\0';
    bool continued = false; /* the previous read ended mid-line (a line longer than `line`) */
    while (read_line(line, sizeof(line)) != NULL) {
        size_t n = strcspn(line, "\r\n");
        bool complete = line[n] != '\0' || feof(stdin);
        line[n] = '\0';
        if (!continued && strcmp(line, "END") == 0) {
            break;
        }
        continued = !complete;
        if (used + n + 3 >= (size_t)size) {
            ESP_LOGE(TAG, "the answer does not fit %d bytes", size);
            free(sdp);
            return RTC_ERR_TOO_SMALL;
        }
        memcpy(sdp + used, line, n);
        used += n;
        if (complete && n > 0) {
            memcpy(sdp + used, "\r\n", 3);
            used += 2;
        }
        sdp[used] = '\0';
    }
    ESP_LOGI(TAG, "answer: %u bytes", (unsigned)used);
    if (used == 0) {
        free(sdp);
        return RTC_ERR_INVALID;
    }
    err = rtcSetRemoteDescription(pc, sdp, "answer");
    free(sdp);
    return err < 0 ? err : 0;
}

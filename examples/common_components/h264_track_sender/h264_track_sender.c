#include "h264_track_sender.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "esp_heap_caps.h"
#include "esp_log.h"
#include "h264_testsrc.h"
#include "rtc/rtc.h"

static const char *TAG = "h264_track_sender";

/* newlib on the chips and glibc on the linux target both have CLOCK_MONOTONIC (esp_timer is
 * header-only on the linux target). */
static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

esp_err_t h264_track_sender_init(h264_track_sender_t *sender, uint32_t log_every)
{
    memset(sender, 0, sizeof(*sender));
    sender->track = -1;
    sender->log_every = log_every;
    sender->capacity = h264_testsrc_max_frame_bytes();
    /* A frame is ~19 KB: PSRAM when there is some, so internal RAM stays for the stack. */
    sender->frame = heap_caps_malloc(sender->capacity, MALLOC_CAP_SPIRAM);
    if (sender->frame == NULL) {
        sender->frame = malloc(sender->capacity);
    }
    if (sender->frame == NULL) {
        ESP_LOGE(TAG, "no memory for a %u-byte frame", (unsigned)sender->capacity);
        return ESP_ERR_NO_MEM;
    }
    return ESP_OK;
}

int h264_track_sender_send(h264_track_sender_t *sender, int track)
{
    if (track != sender->track) {
        sender->track = track;
        sender->frames_sent = 0;
        sender->start_us = now_us();
        rtcGetCurrentTrackTimestamp(track, &sender->start_timestamp);
    }
    uint32_t n = sender->frames_sent++;
    size_t size = h264_testsrc_frame(n, sender->frame, sender->capacity);
    uint32_t elapsed = 0;
    rtcTransformSecondsToTimestamp(track, (double)(now_us() - sender->start_us) / 1e6, &elapsed);
    rtcSetTrackRtpTimestamp(track, sender->start_timestamp + elapsed);
    int result = rtcSendMessage(track, (const char *)sender->frame, (int)size);
    if (result < 0) {
        ESP_LOGW(TAG, "frame %u not sent: %d", (unsigned)n, result);
    }
    if (sender->log_every != 0 && n % sender->log_every == 0) {
        ESP_LOGI(TAG, "frame %u (%u bytes); min free internal %u", (unsigned)n, (unsigned)size,
                 (unsigned)heap_caps_get_minimum_free_size(MALLOC_CAP_INTERNAL));
    }
    return result;
}

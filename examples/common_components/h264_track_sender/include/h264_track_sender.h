#pragma once
#include <stddef.h>
#include <stdint.h>

#include "esp_err.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Sends h264_testsrc's frames on a libdatachannel track with RTP timestamps from a monotonic
 * clock, as a camera task would. The examples that send video (h264_sender, whep_camera) share it
 * so that a fix to timing or logging lands once.
 */
typedef struct {
    uint8_t *frame; /* one frame's buffer: PSRAM when there is some */
    size_t capacity;
    int track;                /* the track the count and clock belong to; -1 before the first frame */
    uint32_t frames_sent;     /* on `track` */
    uint32_t start_timestamp; /* the track's RTP timestamp at its first frame */
    int64_t start_us;         /* the clock at its first frame */
    uint32_t log_every;       /* log a line every this many frames (0: never) */
} h264_track_sender_t;

/* Allocates the frame buffer; ESP_ERR_NO_MEM without one. `log_every` frames between log lines. */
esp_err_t h264_track_sender_init(h264_track_sender_t *sender, uint32_t log_every);

/* Sends the next frame on `track` (open). A track other than the last restarts the count and the
 * clock, so a new session's stream starts at its own timestamp. Returns libdatachannel's result. */
int h264_track_sender_send(h264_track_sender_t *sender, int track);

#ifdef __cplusplus
}
#endif

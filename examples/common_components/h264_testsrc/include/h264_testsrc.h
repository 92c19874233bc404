#pragma once
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * A camera-less H.264 source: moving colour bars coded as I_PCM macroblocks (uncompressed, so
 * no encoder is needed and every decoder accepts it). Each frame is SPS + PPS + IDR slice in
 * Annex-B form. Constrained Baseline, profile-level-id 42e01f.
 */
#define H264_TESTSRC_WIDTH 128
#define H264_TESTSRC_HEIGHT 96

/* Upper bound of one frame's size in bytes. */
size_t h264_testsrc_max_frame_bytes(void);

/* Writes frame number `frame` into `out` (capacity h264_testsrc_max_frame_bytes()); returns its size. */
size_t h264_testsrc_frame(uint32_t frame, uint8_t *out, size_t capacity);

#ifdef __cplusplus
}
#endif

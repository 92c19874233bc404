#include "h264_testsrc.h"

#include <string.h>

#define MBS_W (H264_TESTSRC_WIDTH / 16)
#define MBS_H (H264_TESTSRC_HEIGHT / 16)
#define PCM_BYTES_PER_MB (256 + 2 * 64)

/* RBSP bit writer. */
typedef struct {
    uint8_t *buf;
    size_t cap;
    size_t len;
    int nbits; /* bits used in cur */
    uint8_t cur;
} bits_t;

static void put_bit(bits_t *b, int bit)
{
    b->cur = (uint8_t)((b->cur << 1) | (bit & 1));
    if (++b->nbits == 8) {
        if (b->len < b->cap) {
            b->buf[b->len] = b->cur;
        }
        b->len++;
        b->nbits = 0;
        b->cur = 0;
    }
}

static void put_bits(bits_t *b, uint32_t value, int n)
{
    while (n-- > 0) {
        put_bit(b, (int)((value >> n) & 1));
    }
}

/* Exp-Golomb ue(v). */
static void put_ue(bits_t *b, uint32_t value)
{
    uint32_t v = value + 1;
    int len = 0;
    for (uint32_t t = v; t > 1; t >>= 1) {
        len++;
    }
    put_bits(b, 0, len);
    put_bits(b, v, len + 1);
}

static void put_se(bits_t *b, int32_t value)
{
    put_ue(b, value > 0 ? (uint32_t)(2 * value - 1) : (uint32_t)(-2 * value));
}

static void align_zero(bits_t *b)
{
    while (b->nbits != 0) {
        put_bit(b, 0);
    }
}

static void trailing_bits(bits_t *b)
{
    put_bit(b, 1);
    align_zero(b);
}

/* Start code, NAL header, then the RBSP with emulation prevention bytes. */
static size_t emit_nal(uint8_t *out, size_t capacity, int ref_idc, int type, const uint8_t *rbsp, size_t len)
{
    size_t n = 0;
    const uint8_t start[] = {0, 0, 0, 1, (uint8_t)((ref_idc << 5) | type)};
    for (size_t i = 0; i < sizeof(start); ++i) {
        if (n < capacity) {
            out[n] = start[i];
        }
        n++;
    }
    int zeros = 0;
    for (size_t i = 0; i < len; ++i) {
        if (zeros >= 2 && rbsp[i] <= 3) {
            if (n < capacity) {
                out[n] = 3;
            }
            n++;
            zeros = 0;
        }
        if (n < capacity) {
            out[n] = rbsp[i];
        }
        n++;
        zeros = rbsp[i] == 0 ? zeros + 1 : 0;
    }
    return n;
}

size_t h264_testsrc_max_frame_bytes(void)
{
    /* PCM payload, ~2 bytes of mb_type/alignment per MB, headers; emulation prevention cannot
     * trigger inside PCM data (samples are never 0), so a 1/16 margin is ample. */
    size_t raw = (size_t)MBS_W * MBS_H * (PCM_BYTES_PER_MB + 2) + 64;
    return raw + raw / 16;
}

/* Eight bars (white, yellow, cyan, green, magenta, red, blue, black) in BT.601 YCbCr. */
static const uint8_t BARS[8][3] = {
    {235, 128, 128}, {210, 16, 146}, {170, 166, 16}, {145, 54, 34},
    {106, 202, 222}, {81, 90, 240}, {41, 240, 110}, {16, 128, 128},
};

static const uint8_t *bar_at(int x, uint32_t frame)
{
    int shifted = (x + (int)(frame * 4)) % H264_TESTSRC_WIDTH;
    return BARS[shifted * 8 / H264_TESTSRC_WIDTH];
}

size_t h264_testsrc_frame(uint32_t frame, uint8_t *out, size_t capacity)
{
    static uint8_t rbsp[(MBS_W * MBS_H) * (PCM_BYTES_PER_MB + 2) + 64];
    size_t n = 0;
    bits_t b;

    /* SPS: Constrained Baseline (profile 66, constraint_set0..2), level 3.1, POC type 2. */
    b = (bits_t){rbsp, sizeof(rbsp), 0, 0, 0};
    put_bits(&b, 66, 8);
    put_bits(&b, 0xE0, 8);
    put_bits(&b, 31, 8);
    put_ue(&b, 0);              /* seq_parameter_set_id */
    put_ue(&b, 0);              /* log2_max_frame_num_minus4 */
    put_ue(&b, 2);              /* pic_order_cnt_type */
    put_ue(&b, 1);              /* max_num_ref_frames */
    put_bit(&b, 0);             /* gaps_in_frame_num_value_allowed_flag */
    put_ue(&b, MBS_W - 1);      /* pic_width_in_mbs_minus1 */
    put_ue(&b, MBS_H - 1);      /* pic_height_in_map_units_minus1 */
    put_bit(&b, 1);             /* frame_mbs_only_flag */
    put_bit(&b, 1);             /* direct_8x8_inference_flag */
    put_bit(&b, 0);             /* frame_cropping_flag */
    put_bit(&b, 0);             /* vui_parameters_present_flag */
    trailing_bits(&b);
    n += emit_nal(out + n, capacity > n ? capacity - n : 0, 3, 7, rbsp, b.len);

    /* PPS: CAVLC, one slice group, no deblocking control. */
    b = (bits_t){rbsp, sizeof(rbsp), 0, 0, 0};
    put_ue(&b, 0);              /* pic_parameter_set_id */
    put_ue(&b, 0);              /* seq_parameter_set_id */
    put_bit(&b, 0);             /* entropy_coding_mode_flag */
    put_bit(&b, 0);             /* bottom_field_pic_order_in_frame_present_flag */
    put_ue(&b, 0);              /* num_slice_groups_minus1 */
    put_ue(&b, 0);              /* num_ref_idx_l0_default_active_minus1 */
    put_ue(&b, 0);              /* num_ref_idx_l1_default_active_minus1 */
    put_bit(&b, 0);             /* weighted_pred_flag */
    put_bits(&b, 0, 2);         /* weighted_bipred_idc */
    put_se(&b, 0);              /* pic_init_qp_minus26 */
    put_se(&b, 0);              /* pic_init_qs_minus26 */
    put_se(&b, 0);              /* chroma_qp_index_offset */
    put_bit(&b, 0);             /* deblocking_filter_control_present_flag */
    put_bit(&b, 0);             /* constrained_intra_pred_flag */
    put_bit(&b, 0);             /* redundant_pic_cnt_present_flag */
    trailing_bits(&b);
    n += emit_nal(out + n, capacity > n ? capacity - n : 0, 3, 8, rbsp, b.len);

    /* IDR slice, every macroblock I_PCM. */
    b = (bits_t){rbsp, sizeof(rbsp), 0, 0, 0};
    put_ue(&b, 0);              /* first_mb_in_slice */
    put_ue(&b, 7);              /* slice_type: I, all slices */
    put_ue(&b, 0);              /* pic_parameter_set_id */
    put_bits(&b, 0, 4);         /* frame_num (log2_max_frame_num = 4) */
    put_ue(&b, frame & 1);      /* idr_pic_id: consecutive IDRs must differ */
    put_bit(&b, 0);             /* no_output_of_prior_pics_flag */
    put_bit(&b, 0);             /* long_term_reference_flag */
    put_se(&b, 0);              /* slice_qp_delta */
    for (int mby = 0; mby < MBS_H; ++mby) {
        for (int mbx = 0; mbx < MBS_W; ++mbx) {
            put_ue(&b, 25);     /* mb_type I_PCM */
            align_zero(&b);     /* pcm_alignment_zero_bit */
            for (int y = 0; y < 16; ++y) {
                for (int x = 0; x < 16; ++x) {
                    put_bits(&b, bar_at(mbx * 16 + x, frame)[0], 8);
                }
            }
            for (int plane = 1; plane <= 2; ++plane) {
                for (int y = 0; y < 8; ++y) {
                    for (int x = 0; x < 8; ++x) {
                        put_bits(&b, bar_at(mbx * 16 + x * 2, frame)[plane], 8);
                    }
                }
            }
        }
    }
    trailing_bits(&b);
    n += emit_nal(out + n, capacity > n ? capacity - n : 0, 3, 5, rbsp, b.len);
    return n <= capacity ? n : 0;
}

/*
 * kernels_q_neon.c -- compressed-row primitives (qkernels.h) with NEON, for
 * aarch64 and for 32-bit ARM built with NEON (armv7 -mfpu=neon*).
 *
 * Four rows at a time (a short last block repeats its last row: computed,
 * never stored), one 4-lane accumulator per row, k in steps of 8 (two
 * multiply-adds per step, low half then high half), binary16 weights
 * through vcvt_f32_f16; packed int8 blocks in integers (below).  The D % 8 weights at a row's end come from the 8 that end
 * the row with the lanes already summed zeroed; rows shorter than 8 go
 * through a zero-padded copy.  Every row alike, so a row's score does not
 * depend on where it sits.
 *
 * 32-bit ARM: the multiply-add is fused (vfmaq_f32) where the FPU has FMA
 * (VFPv4, __ARM_FEATURE_FMA), else vmlaq_f32 (multiply, round, add); the
 * lane sum uses pairwise adds (vaddvq_f32 is aarch64 only); binary16 rows
 * use the scalar kernel unless the FPU converts binary16 (__ARM_FP bit 1,
 * -mfpu=neon-fp16 or later, with -mfp16-format=ieee).
 */
#include "qkernels.h"

#if defined(__ARM_NEON) || defined(__ARM_NEON__)

#include <arm_neon.h>
#include <string.h>

#if defined(__aarch64__) || defined(__ARM_FEATURE_FMA)
#  define DRE_Q_MLA(acc, a, b) vfmaq_f32((acc), (a), (b))
#else
#  define DRE_Q_MLA(acc, a, b) vmlaq_f32((acc), (a), (b))
#endif

#if defined(__aarch64__) || (defined(__ARM_FP) && (__ARM_FP & 2) && defined(__ARM_FP16_FORMAT_IEEE))
#  define DRE_Q_NEON_F16 1
#endif

#if defined(DRE_Q_NEON_F16) /* binary16 rows: the kernel below */
static inline float hsum4(float32x4_t v) {
#if defined(__aarch64__)
    return vaddvq_f32(v);
#else
    const float32x2_t p = vpadd_f32(vget_low_f32(v), vget_high_f32(v));
    return vget_lane_f32(vpadd_f32(p, p), 0);
#endif
}

static inline void load_h16x8(const uint16_t *p, float32x4_t *lo, float32x4_t *hi) {
    *lo = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p)));
    *hi = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p + 4)));
}
#endif

#define DRE_Q_GEMV_NEON(NAME, T, LOAD8)                                                      \
    static void NAME(int64_t n, int64_t D, const T *W, int64_t ldw, const int32_t *idx,     \
                     const float *scale, const float *x, const float *bias, float *y) {     \
        const int64_t D8 = D & ~(int64_t)7, rem = D - D8, t0 = D - 8;                        \
        const int shortrow = D < 8;                                                          \
        float xb[8] = {0};                                                                   \
        uint32_t kb[8] = {0};                                                                \
        if (shortrow) {                                                                      \
            if (D > 0) memcpy(xb, x, (size_t)D * sizeof(float));                             \
        } else if (rem) {                                                                    \
            for (int q = 0; q < 8; ++q) {                                                    \
                kb[q] = q >= 8 - rem ? 0xFFFFFFFFu : 0u;                                     \
                xb[q] = q >= 8 - rem ? x[t0 + q] : 0.0f;                                     \
            }                                                                                \
        }                                                                                    \
        const float32x4_t xt0 = vld1q_f32(xb), xt1 = vld1q_f32(xb + 4);                      \
        const uint32x4_t k0 = vld1q_u32(kb), k1 = vld1q_u32(kb + 4);                         \
        for (int64_t i = 0; i < n; i += 4) {                                                 \
            const int64_t nb = n - i < 4 ? n - i : 4;                                        \
            int64_t r[4];                                                                    \
            const T *w[4];                                                                   \
            for (int q = 0; q < 4; ++q) {                                                    \
                const int64_t j = i + (q < nb ? q : nb - 1);                                 \
                r[q] = idx ? (int64_t)idx[j] : j;                                            \
                w[q] = W + r[q] * ldw;                                                       \
            }                                                                                \
            float32x4_t s[4];                                                                \
            for (int q = 0; q < 4; ++q) s[q] = vdupq_n_f32(0.0f);                            \
            for (int64_t k = 0; k < D8; k += 8) {                                            \
                const float32x4_t x0 = vld1q_f32(x + k), x1 = vld1q_f32(x + k + 4);          \
                for (int q = 0; q < 4; ++q) {                                                \
                    float32x4_t lo, hi;                                                      \
                    LOAD8(w[q] + k, &lo, &hi);                                               \
                    s[q] = DRE_Q_MLA(s[q], lo, x0);                                          \
                    s[q] = DRE_Q_MLA(s[q], hi, x1);                                          \
                }                                                                            \
            }                                                                                \
            if (shortrow || rem) {                                                           \
                for (int q = 0; q < 4 && D > 0; ++q) {                                       \
                    float32x4_t lo, hi;                                                      \
                    if (shortrow) {                                                          \
                        T b[8] = {0};                                                        \
                        memcpy(b, w[q], (size_t)D * sizeof(T));                              \
                        LOAD8(b, &lo, &hi);                                                  \
                    } else {                                                                 \
                        LOAD8(w[q] + t0, &lo, &hi);                                          \
                        lo = vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(lo), k0)); \
                        hi = vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(hi), k1)); \
                    }                                                                        \
                    s[q] = DRE_Q_MLA(s[q], lo, xt0);                                         \
                    s[q] = DRE_Q_MLA(s[q], hi, xt1);                                         \
                }                                                                            \
            }                                                                                \
            for (int64_t q = 0; q < nb; ++q) {                                               \
                float dot = hsum4(s[q]);                                                     \
                if (scale) dot = dot * scale[r[q]];                                          \
                y[i + q] = dot + (bias ? bias[r[q]] : 0.0f);                                 \
            }                                                                                \
        }                                                                                    \
    }

#if defined(DRE_Q_NEON_F16)
DRE_Q_GEMV_NEON(gemv_h_neon, uint16_t, load_h16x8)
#endif

/* Packed int8 blocks (qkernels.h), exactly: the stored bytes back to q
 * (xor 0x80, signed), 8 bytes (two rows' 4 columns) times the group's 4
 * signed base-256 digits of U, twice (vmull_s8: at most 2^14 each), pairs
 * added into 32 bits (vpadalq_s16).  Eight rows at a time (12 accumulators:
 * 32-bit ARM has 16 q registers); the three digit sums meet in double in the
 * shared final step (32-bit NEON has no double lanes). */
static void score_i8p_neon(int64_t n, const uint8_t *P, const dre_i8p_user *u,
                           const float *scale, const float *bias, float *y) {
    const int64_t G = u->G;
    const int32_t *l[3] = {u->l8, u->l8 + G, u->l8 + 2 * G};
    const uint8x16_t x80 = vdupq_n_u8(0x80);
    for (int64_t i = 0; i < n; i += DRE_I8P_ROWS) {
        const uint8_t *blk = P + (i / DRE_I8P_ROWS) * 64 * G;
        for (int h = 0; h < 2; ++h) {
            if (i + 8 * h >= n) break;
            int32x4_t a[3][4];
            for (int j = 0; j < 3; ++j)
                for (int p = 0; p < 4; ++p) a[j][p] = vdupq_n_s32(0);
            for (int64_t g = 0; g < G; ++g) {
                int8x8_t dg[3];
                for (int j = 0; j < 3; ++j)
                    dg[j] = vreinterpret_s8_u32(vdup_n_u32((uint32_t)l[j][g]));
                for (int q = 0; q < 2; ++q) {
                    const int8x16_t w = vreinterpretq_s8_u8(
                        veorq_u8(vld1q_u8(blk + 64 * g + 32 * h + 16 * q), x80));
                    for (int j = 0; j < 3; ++j) {
                        a[j][2 * q] = vpadalq_s16(a[j][2 * q], vmull_s8(vget_low_s8(w), dg[j]));
                        a[j][2 * q + 1] = vpadalq_s16(a[j][2 * q + 1], vmull_s8(vget_high_s8(w), dg[j]));
                    }
                }
            }
            /* a[j][p]: rows 8h + 2p (lanes 0, 1) and 8h + 2p + 1 (lanes 2, 3) */
            for (int p = 0; p < 4; ++p) {
                int32_t s[3][2];
                for (int j = 0; j < 3; ++j) {
                    const int32x2_t v = vpadd_s32(vget_low_s32(a[j][p]), vget_high_s32(a[j][p]));
                    s[j][0] = vget_lane_s32(v, 0);
                    s[j][1] = vget_lane_s32(v, 1);
                }
                for (int t = 0; t < 2; ++t) {
                    const int64_t r = i + 8 * h + 2 * p + t;
                    if (r >= n) break;
                    const double I = ((double)s[0][t] + 256.0 * (double)s[1][t]) +
                                     65536.0 * (double)s[2][t];
                    y[r] = dre__i8p_finish(I, scale ? scale[r] : 1.0f, u->e2,
                                           bias ? bias[r] : 0.0f);
                }
            }
        }
    }
}

#if defined(DRE_Q_NEON_F16)
static const dre_qkernels dre__q_neon_table = {DRE_PATH_NEON, gemv_h_neon, score_i8p_neon,
                                               dre__pack16_i8_scalar};
#else /* no binary16 conversion in this FPU: the portable kernel */
static const dre_qkernels dre__q_neon_table = {DRE_PATH_NEON, dre__gemv_h_scalar,
                                               score_i8p_neon, dre__pack16_i8_scalar};
#endif

const dre_qkernels *dre__qkernels_neon(void) { return &dre__q_neon_table; }

#else /* no NEON */

const dre_qkernels *dre__qkernels_neon(void) { return 0; }

#endif

/*
 * kernels_neon.c -- NEON path for aarch64, where Advanced SIMD is part of
 * the baseline ISA: no feature check and no special flags are needed.
 * The algorithms mirror kernels_avx2.c with 4-lane vectors.
 */
#include "internal.h"

#if defined(__aarch64__) && defined(__ARM_NEON)

#include <arm_neon.h>
#include <string.h>

#define NEON_MR 5

/* ---- micro-kernel: 5 x 16 tile, 20 accumulators (of 32 registers) ---- */

/* The k loop alone, with named accumulators, in its own (not inlined)
 * function.  5 rows: 20 accumulators, 4 B vectors and 5 A values are 29 of
 * the 32 registers, and gcc schedules every A load of a k step first, so
 * that is what must fit.  The former 6-row tile (34 registers that way),
 * written over an array of accumulators, stored accumulators to the stack
 * in every iteration. */
#define DRE_ROW(i)                                                         \
    do {                                                                   \
        const float av = a##i[o];                                          \
        c##i##0 = vfmaq_n_f32(c##i##0, b0, av);                            \
        c##i##1 = vfmaq_n_f32(c##i##1, b1, av);                            \
        c##i##2 = vfmaq_n_f32(c##i##2, b2, av);                            \
        c##i##3 = vfmaq_n_f32(c##i##3, b3, av);                            \
    } while (0)

__attribute__((noinline))
static void gemm_tile_loop_neon(int64_t K, const float *a0, const float *a1, const float *a2,
                                const float *a3, const float *a4, int64_t csa,
                                const float *Bp, float32x4_t *acc) {
    const float32x4_t z = vdupq_n_f32(0.0f);
    float32x4_t c00 = z, c01 = z, c02 = z, c03 = z, c10 = z, c11 = z, c12 = z, c13 = z;
    float32x4_t c20 = z, c21 = z, c22 = z, c23 = z, c30 = z, c31 = z, c32 = z, c33 = z;
    float32x4_t c40 = z, c41 = z, c42 = z, c43 = z;
    for (int64_t k = 0; k < K; ++k) {
        const float *b = Bp + k * DRE_NR;
        const float32x4_t b0 = vld1q_f32(b), b1 = vld1q_f32(b + 4);
        const float32x4_t b2 = vld1q_f32(b + 8), b3 = vld1q_f32(b + 12);
        const int64_t o = k * csa;
        DRE_ROW(0); DRE_ROW(1); DRE_ROW(2); DRE_ROW(3); DRE_ROW(4);
    }
    const float32x4_t out[4 * NEON_MR] = {c00, c01, c02, c03, c10, c11, c12, c13,
                                          c20, c21, c22, c23, c30, c31, c32, c33,
                                          c40, c41, c42, c43};
    for (int q = 0; q < 4 * NEON_MR; ++q) acc[q] = out[q];
}
#undef DRE_ROW

static void gemm_tile_neon(int64_t mr, int64_t nr, int64_t K,
                           const float *A, int64_t rsa, int64_t csa,
                           const float *Bp, float alpha, float beta,
                           const float *bias, float *C, int64_t ldc) {
    /* rows past mr read row 0 again (valid memory); never stored */
    float32x4_t acc[4 * NEON_MR];
    gemm_tile_loop_neon(K, A, A + (mr > 1 ? 1 : 0) * rsa, A + (mr > 2 ? 2 : 0) * rsa,
                        A + (mr > 3 ? 3 : 0) * rsa, A + (mr > 4 ? 4 : 0) * rsa, csa, Bp, acc);
    for (int64_t i = 0; i < mr; ++i) {
        float *c = C + i * ldc;
        float tmp[DRE_NR];
        for (int q = 0; q < 4; ++q) vst1q_f32(tmp + 4 * q, acc[4 * i + q]);
        if (beta == 0.0f) {
            for (int64_t j = 0; j < nr; ++j) c[j] = alpha * tmp[j];
        } else {
            for (int64_t j = 0; j < nr; ++j) c[j] = alpha * tmp[j] + beta * c[j];
        }
        if (bias)
            for (int64_t j = 0; j < nr; ++j) c[j] += bias[j];
    }
}

/* ---- gemv: 4 rows at a time ---- */

static void gemv_neon(int64_t n, int64_t D, const float *W, int64_t ldw,
                      const int32_t *idx, const float *x, const float *bias, float *y) {
    const int64_t D4 = D & ~(int64_t)3;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        int64_t r[4];
        const float *w[4];
        for (int q = 0; q < 4; ++q) {
            r[q] = idx ? (int64_t)idx[i + q] : i + q;
            w[q] = W + r[q] * ldw;
        }
        float32x4_t s0 = vdupq_n_f32(0.0f), s1 = s0, s2 = s0, s3 = s0;
        int64_t k = 0;
        for (; k < D4; k += 4) {
            const float32x4_t xv = vld1q_f32(x + k);
            s0 = vfmaq_f32(s0, vld1q_f32(w[0] + k), xv);
            s1 = vfmaq_f32(s1, vld1q_f32(w[1] + k), xv);
            s2 = vfmaq_f32(s2, vld1q_f32(w[2] + k), xv);
            s3 = vfmaq_f32(s3, vld1q_f32(w[3] + k), xv);
        }
        float t[4] = {vaddvq_f32(s0), vaddvq_f32(s1), vaddvq_f32(s2), vaddvq_f32(s3)};
        for (; k < D; ++k)
            for (int q = 0; q < 4; ++q) t[q] += w[q][k] * x[k];
        for (int q = 0; q < 4; ++q) y[i + q] = t[q] + (bias ? bias[r[q]] : 0.0f);
    }
    for (; i < n; ++i) {
        const int64_t r = idx ? (int64_t)idx[i] : i;
        const float *w = W + r * ldw;
        float32x4_t s = vdupq_n_f32(0.0f);
        int64_t k = 0;
        for (; k < D4; k += 4) s = vfmaq_f32(s, vld1q_f32(w + k), vld1q_f32(x + k));
        float t = vaddvq_f32(s);
        for (; k < D; ++k) t += w[k] * x[k];
        y[i] = t + (bias ? bias[r] : 0.0f);
    }
}

/* gemv with binary16 weights: 4 rows at a time, vcvt_f32_f16 widening 4
 * weights per load (ARMv8 baseline); the < 4 weights at a row's end go
 * through the portable conversion. */
static inline float32x4_t load_f16x4(const uint16_t *p) {
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p)));
}

static void gemv_f16_neon(int64_t n, int64_t D, const uint16_t *W, int64_t ldw,
                          const float *x, const float *bias, float *y) {
    const int64_t D4 = D & ~(int64_t)3;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const uint16_t *w0 = W + i * ldw, *w1 = w0 + ldw, *w2 = w1 + ldw, *w3 = w2 + ldw;
        float32x4_t s0 = vdupq_n_f32(0.0f), s1 = s0, s2 = s0, s3 = s0;
        int64_t k = 0;
        for (; k < D4; k += 4) {
            const float32x4_t xv = vld1q_f32(x + k);
            s0 = vfmaq_f32(s0, load_f16x4(w0 + k), xv);
            s1 = vfmaq_f32(s1, load_f16x4(w1 + k), xv);
            s2 = vfmaq_f32(s2, load_f16x4(w2 + k), xv);
            s3 = vfmaq_f32(s3, load_f16x4(w3 + k), xv);
        }
        float t[4] = {vaddvq_f32(s0), vaddvq_f32(s1), vaddvq_f32(s2), vaddvq_f32(s3)};
        const uint16_t *w[4] = {w0, w1, w2, w3};
        for (; k < D; ++k)
            for (int q = 0; q < 4; ++q) t[q] += dre__f16_to_f32(w[q][k]) * x[k];
        for (int q = 0; q < 4; ++q) y[i + q] = t[q] + (bias ? bias[i + q] : 0.0f);
    }
    for (; i < n; ++i) {
        const uint16_t *w = W + i * ldw;
        float32x4_t s = vdupq_n_f32(0.0f);
        int64_t k = 0;
        for (; k < D4; k += 4) s = vfmaq_f32(s, load_f16x4(w + k), vld1q_f32(x + k));
        float t = vaddvq_f32(s);
        for (; k < D; ++k) t += dre__f16_to_f32(w[k]) * x[k];
        y[i] = t + (bias ? bias[i] : 0.0f);
    }
}

/* ---- activations (same algorithms as the AVX2 path) ---- */

static inline float32x4_t exp_neon(float32x4_t x) {
    x = vmaxq_f32(vminq_f32(x, vdupq_n_f32(88.0f)), vdupq_n_f32(-87.3365478515625f));
    const float32x4_t fx = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(1.44269504088896341f)));
    float32x4_t r = vfmsq_f32(x, fx, vdupq_n_f32(0.693359375f));
    r = vfmsq_f32(r, fx, vdupq_n_f32(-2.12194440e-4f));
    float32x4_t p = vdupq_n_f32(1.9875691500E-4f);
    p = vfmaq_f32(vdupq_n_f32(1.3981999507E-3f), p, r);
    p = vfmaq_f32(vdupq_n_f32(8.3334519073E-3f), p, r);
    p = vfmaq_f32(vdupq_n_f32(4.1665795894E-2f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.6666665459E-1f), p, r);
    p = vfmaq_f32(vdupq_n_f32(5.0000001201E-1f), p, r);
    p = vfmaq_f32(vaddq_f32(r, vdupq_n_f32(1.0f)), p, vmulq_f32(r, r));
    const int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(fx), vdupq_n_s32(127)), 23);
    return vmulq_f32(p, vreinterpretq_f32_s32(e));
}

static inline float32x4_t sigmoid_neon(float32x4_t x) {
    const float32x4_t one = vdupq_n_f32(1.0f);
    return vdivq_f32(one, vaddq_f32(one, exp_neon(vnegq_f32(x))));
}

static inline float32x4_t tanh_neon(float32x4_t x) {
    const float32x4_t one = vdupq_n_f32(1.0f);
    const float32x4_t e = exp_neon(vmulq_f32(vabsq_f32(x), vdupq_n_f32(-2.0f)));
    const float32x4_t t = vdivq_f32(vsubq_f32(one, e), vaddq_f32(one, e));
    /* copy the sign of x onto t */
    const uint32x4_t signbit = vdupq_n_u32(0x80000000u);
    return vbslq_f32(signbit, x, t);
}

static inline void gates4(const float *gi_r, const float *gi_z, const float *gi_n,
                          const float *gh_r, const float *gh_z, const float *gh_n,
                          const float *h, float *h_out, float *c_r, float *c_z,
                          float *c_n, float *c_g) {
    const float32x4_t r = sigmoid_neon(vaddq_f32(vld1q_f32(gi_r), vld1q_f32(gh_r)));
    const float32x4_t z = sigmoid_neon(vaddq_f32(vld1q_f32(gi_z), vld1q_f32(gh_z)));
    const float32x4_t ghn = vld1q_f32(gh_n);
    const float32x4_t n = tanh_neon(vfmaq_f32(vld1q_f32(gi_n), r, ghn));
    const float32x4_t hp = vld1q_f32(h);
    if (c_r) {
        vst1q_f32(c_r, r);
        vst1q_f32(c_z, z);
        vst1q_f32(c_n, n);
        vst1q_f32(c_g, ghn);
    }
    vst1q_f32(h_out, vfmaq_f32(n, z, vsubq_f32(hp, n)));
}

static void gru_gates_neon(int64_t H, const float *gi, const float *gh,
                           const float *h, float *h_out, float *cache) {
    int64_t j = 0;
    for (; j + 4 <= H; j += 4) {
        gates4(gi + j, gi + H + j, gi + 2 * H + j, gh + j, gh + H + j, gh + 2 * H + j,
               h + j, h_out + j,
               cache ? cache + j : NULL, cache ? cache + H + j : NULL,
               cache ? cache + 2 * H + j : NULL, cache ? cache + 3 * H + j : NULL);
    }
    if (j < H) {
        /* tail through small buffers: same math and rounding as full lanes,
         * without reading or writing past the arrays */
        const int64_t rem = H - j;
        float b[12][4];
        memset(b, 0, sizeof b);
        for (int64_t q = 0; q < rem; ++q) {
            b[0][q] = gi[j + q]; b[1][q] = gi[H + j + q]; b[2][q] = gi[2 * H + j + q];
            b[3][q] = gh[j + q]; b[4][q] = gh[H + j + q]; b[5][q] = gh[2 * H + j + q];
            b[6][q] = h[j + q];
        }
        gates4(b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11]);
        for (int64_t q = 0; q < rem; ++q) {
            h_out[j + q] = b[7][q];
            if (cache) {
                cache[j + q] = b[8][q];
                cache[H + j + q] = b[9][q];
                cache[2 * H + j + q] = b[10][q];
                cache[3 * H + j + q] = b[11][q];
            }
        }
    }
}

/* In-place exp / tanh; the tail goes through a 4-float buffer so the same
 * rounding applies to every element and nothing is read past the end. */
static void vexp_neon(int64_t n, float *x) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(x + i, exp_neon(vld1q_f32(x + i)));
    if (i < n) {
        float b[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        memcpy(b, x + i, (size_t)(n - i) * sizeof(float));
        vst1q_f32(b, exp_neon(vld1q_f32(b)));
        memcpy(x + i, b, (size_t)(n - i) * sizeof(float));
    }
}

static void vtanh_neon(int64_t n, float *x) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(x + i, tanh_neon(vld1q_f32(x + i)));
    if (i < n) {
        float b[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        memcpy(b, x + i, (size_t)(n - i) * sizeof(float));
        vst1q_f32(b, tanh_neon(vld1q_f32(b)));
        memcpy(x + i, b, (size_t)(n - i) * sizeof(float));
    }
}

static const dre_kernels dre__neon_table = {
    DRE_PATH_NEON, NEON_MR, gemm_tile_neon, gemv_neon, gru_gates_neon,
    vexp_neon, vtanh_neon, gemv_f16_neon,
};

const dre_kernels *dre__kernels_neon(void) { return &dre__neon_table; }

#else /* not aarch64 */

const dre_kernels *dre__kernels_neon(void) { return 0; }

#endif

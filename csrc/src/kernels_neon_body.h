/*
 * kernels_neon_body.h -- the NEON kernels written once over 4-lane vectors,
 * included by kernels_neon.c once per table:
 *
 *   aarch64                    NEON_FUSED 1: vfmaq_f32 (baseline)
 *   32-bit ARM, VFPv4          NEON_FUSED 1: vfmaq_f32, vcvt.f32.f16
 *                              (Cortex-A7/A15/A53/A72 in 32-bit mode, every
 *                              Raspberry Pi from the 2 on)
 *   32-bit ARM, VFPv3          NEON_FUSED 0: vmlaq_f32, a multiply and an
 *                              add each rounded -- the scalar path's
 *                              arithmetic (Cortex-A8/A9)
 *
 * NEON(name) gives each copy its own names.  Not a header to include
 * anywhere else; no include guard on purpose.  The aarch64 GEMM tile
 * (5 x 16, 32 registers) is in kernels_neon.c; the 32-bit one is here.
 *
 * What AArch32 NEON lacks next to aarch64, and what stands in:
 *   - 16 instead of 32 vector registers: the GEMM tile is 4 rows x 8
 *     columns per pass (8 accumulators), twice for the 16-column panel;
 *   - no vaddvq_f32: hsum() adds pairwise, (l0 + l1) + (l2 + l3), the
 *     order of vaddvq_f32 -- so a gemv row sums the same on both;
 *   - no vdivq_f32: a reciprocal estimate and two Newton-Raphson steps
 *     (vrecpsq_f32), within 2 ulp of the quotient;
 *   - no vrndnq_f32: exp rounds x*log2(e) with floor(t + 0.5) from a
 *     truncating conversion (any nearby integer keeps the reduced argument
 *     in the polynomial's range);
 *   - NEON arithmetic on AArch32 flushes subnormals to zero: results below
 *     FLT_MIN become 0 where the scalar path keeps a subnormal (an absolute
 *     difference under 1.2e-38).
 * Every row of gemv, in a block of four or in the tail, is reduced the same
 * way, so a row's score does not depend on where it sits.
 */

#if NEON_FUSED
#  define NEON_MLA(acc, a, b) vfmaq_f32((acc), (a), (b))   /* acc + a*b, fused */
#  define NEON_MLS(acc, a, b) vfmsq_f32((acc), (a), (b))   /* acc - a*b, fused */
#else
#  define NEON_MLA(acc, a, b) vmlaq_f32((acc), (a), (b))   /* acc + a*b, two roundings */
#  define NEON_MLS(acc, a, b) vmlsq_f32((acc), (a), (b))
#endif

/* ---- small helpers that differ between aarch64 and 32-bit ARM ---- */

/* (l0 + l1) + (l2 + l3) */
static inline float NEON(hsum)(float32x4_t v) {
#if defined(__aarch64__)
    return vaddvq_f32(v);
#else
    const float32x2_t s = vpadd_f32(vget_low_f32(v), vget_high_f32(v));
    return vget_lane_f32(vpadd_f32(s, s), 0);
#endif
}

static inline float32x4_t NEON(div)(float32x4_t a, float32x4_t b) {
#if defined(__aarch64__)
    return vdivq_f32(a, b);
#else
    /* 1/b: estimate (8 bits) and two Newton-Raphson steps, e' = e * (2 - b*e) */
    float32x4_t e = vrecpeq_f32(b);
    e = vmulq_f32(vrecpsq_f32(b, e), e);
    e = vmulq_f32(vrecpsq_f32(b, e), e);
    return vmulq_f32(a, e);
#endif
}

/* an integer near x*log2(e), as a float */
static inline float32x4_t NEON(round_log2e)(float32x4_t x) {
    const float32x4_t log2e = vdupq_n_f32(1.44269504088896341f);
#if defined(__aarch64__)
    return vrndnq_f32(vmulq_f32(x, log2e));
#else
    /* floor(t + 0.5): truncate, then step down where that rounded up */
    const float32x4_t t = NEON_MLA(vdupq_n_f32(0.5f), x, log2e);
    const float32x4_t f = vcvtq_f32_s32(vcvtq_s32_f32(t));
    const uint32x4_t one = vreinterpretq_u32_f32(vdupq_n_f32(1.0f));
    return vsubq_f32(f, vreinterpretq_f32_u32(vandq_u32(vcgtq_f32(f, t), one)));
#endif
}

/* 4 binary16 weights as floats (exact).  aarch64: vcvt_f32_f16 (baseline).
 * 32-bit VFPv4 includes the conversion, but gcc's arm_neon.h only declares
 * vcvt_f32_f16 under -mfp16-format=ieee, which a target pragma cannot set,
 * so the instruction is written out.  Without VFPv4 (Cortex-A8 has no
 * conversion): the portable one. */
static inline float32x4_t NEON(load_f16x4)(const uint16_t *p) {
#if defined(__aarch64__)
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p)));
#elif NEON_FUSED
    float32x4_t r;
    const uint16x4_t h = vld1_u16(p);
    __asm__("vcvt.f32.f16 %q0, %P1" : "=w"(r) : "w"(h));
    return r;
#else
    const float f[4] = {dre__f16_to_f32(p[0]), dre__f16_to_f32(p[1]),
                        dre__f16_to_f32(p[2]), dre__f16_to_f32(p[3])};
    return vld1q_f32(f);
#endif
}

/* ---- 32-bit micro-kernel: 4 rows, the 16-column panel in two passes of 8 ---- */

#if !defined(__aarch64__)
static void NEON(gemm_tile)(int64_t mr, int64_t nr, int64_t K,
                            const float *A, int64_t rsa, int64_t csa,
                            const float *Bp, float alpha, float beta,
                            const float *bias, float *C, int64_t ldc) {
    /* rows past mr read row 0 again (valid memory); never stored */
    const float *a0 = A, *a1 = A + (mr > 1 ? rsa : 0);
    const float *a2 = A + (mr > 2 ? 2 * rsa : 0), *a3 = A + (mr > 3 ? 3 * rsa : 0);
    for (int64_t j0 = 0; j0 < nr; j0 += 8) {
        const float32x4_t z = vdupq_n_f32(0.0f);
        float32x4_t c00 = z, c01 = z, c10 = z, c11 = z, c20 = z, c21 = z, c30 = z, c31 = z;
        const float *b = Bp + j0;
        for (int64_t k = 0; k < K; ++k, b += DRE_NR) {
            const float32x4_t b0 = vld1q_f32(b), b1 = vld1q_f32(b + 4);
            const int64_t o = k * csa;
            const float32x4_t x0 = vdupq_n_f32(a0[o]), x1 = vdupq_n_f32(a1[o]);
            const float32x4_t x2 = vdupq_n_f32(a2[o]), x3 = vdupq_n_f32(a3[o]);
            c00 = NEON_MLA(c00, x0, b0); c01 = NEON_MLA(c01, x0, b1);
            c10 = NEON_MLA(c10, x1, b0); c11 = NEON_MLA(c11, x1, b1);
            c20 = NEON_MLA(c20, x2, b0); c21 = NEON_MLA(c21, x2, b1);
            c30 = NEON_MLA(c30, x3, b0); c31 = NEON_MLA(c31, x3, b1);
        }
        const float32x4_t acc[8] = {c00, c01, c10, c11, c20, c21, c30, c31};
        const int64_t w = nr - j0 < 8 ? nr - j0 : 8;
        for (int64_t i = 0; i < mr; ++i) {
            float *c = C + i * ldc + j0;
            float tmp[8];
            vst1q_f32(tmp, acc[2 * i]);
            vst1q_f32(tmp + 4, acc[2 * i + 1]);
            if (beta == 0.0f) {
                for (int64_t j = 0; j < w; ++j) c[j] = alpha * tmp[j];
            } else {
                for (int64_t j = 0; j < w; ++j) c[j] = alpha * tmp[j] + beta * c[j];
            }
            if (bias)
                for (int64_t j = 0; j < w; ++j) c[j] += bias[j0 + j];
        }
    }
}
#endif

/* ---- gemv: 4 rows at a time ---- */

static void NEON(gemv)(int64_t n, int64_t D, const float *W, int64_t ldw,
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
            s0 = NEON_MLA(s0, vld1q_f32(w[0] + k), xv);
            s1 = NEON_MLA(s1, vld1q_f32(w[1] + k), xv);
            s2 = NEON_MLA(s2, vld1q_f32(w[2] + k), xv);
            s3 = NEON_MLA(s3, vld1q_f32(w[3] + k), xv);
        }
        float t[4] = {NEON(hsum)(s0), NEON(hsum)(s1), NEON(hsum)(s2), NEON(hsum)(s3)};
        for (; k < D; ++k)
            for (int q = 0; q < 4; ++q) t[q] += w[q][k] * x[k];
        for (int q = 0; q < 4; ++q) y[i + q] = t[q] + (bias ? bias[r[q]] : 0.0f);
    }
    for (; i < n; ++i) {
        const int64_t r = idx ? (int64_t)idx[i] : i;
        const float *w = W + r * ldw;
        float32x4_t s = vdupq_n_f32(0.0f);
        int64_t k = 0;
        for (; k < D4; k += 4) s = NEON_MLA(s, vld1q_f32(w + k), vld1q_f32(x + k));
        float t = NEON(hsum)(s);
        for (; k < D; ++k) t += w[k] * x[k];
        y[i] = t + (bias ? bias[r] : 0.0f);
    }
}

/* gemv with binary16 weights: 4 rows at a time, 4 weights widened per load;
 * the < 4 weights at a row's end go through the portable conversion. */
static void NEON(gemv_f16)(int64_t n, int64_t D, const uint16_t *W, int64_t ldw,
                           const float *x, const float *bias, float *y) {
    const int64_t D4 = D & ~(int64_t)3;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const uint16_t *w0 = W + i * ldw, *w1 = w0 + ldw, *w2 = w1 + ldw, *w3 = w2 + ldw;
        float32x4_t s0 = vdupq_n_f32(0.0f), s1 = s0, s2 = s0, s3 = s0;
        int64_t k = 0;
        for (; k < D4; k += 4) {
            const float32x4_t xv = vld1q_f32(x + k);
            s0 = NEON_MLA(s0, NEON(load_f16x4)(w0 + k), xv);
            s1 = NEON_MLA(s1, NEON(load_f16x4)(w1 + k), xv);
            s2 = NEON_MLA(s2, NEON(load_f16x4)(w2 + k), xv);
            s3 = NEON_MLA(s3, NEON(load_f16x4)(w3 + k), xv);
        }
        float t[4] = {NEON(hsum)(s0), NEON(hsum)(s1), NEON(hsum)(s2), NEON(hsum)(s3)};
        const uint16_t *w[4] = {w0, w1, w2, w3};
        for (; k < D; ++k)
            for (int q = 0; q < 4; ++q) t[q] += dre__f16_to_f32(w[q][k]) * x[k];
        for (int q = 0; q < 4; ++q) y[i + q] = t[q] + (bias ? bias[i + q] : 0.0f);
    }
    for (; i < n; ++i) {
        const uint16_t *w = W + i * ldw;
        float32x4_t s = vdupq_n_f32(0.0f);
        int64_t k = 0;
        for (; k < D4; k += 4) s = NEON_MLA(s, NEON(load_f16x4)(w + k), vld1q_f32(x + k));
        float t = NEON(hsum)(s);
        for (; k < D; ++k) t += dre__f16_to_f32(w[k]) * x[k];
        y[i] = t + (bias ? bias[i] : 0.0f);
    }
}

/* ---- activations (same algorithms as the AVX2 path) ---- */

static inline float32x4_t NEON(exp)(float32x4_t x) {
    x = vmaxq_f32(vminq_f32(x, vdupq_n_f32(88.0f)), vdupq_n_f32(-87.3365478515625f));
    const float32x4_t fx = NEON(round_log2e)(x);
    float32x4_t r = NEON_MLS(x, fx, vdupq_n_f32(0.693359375f));
    r = NEON_MLS(r, fx, vdupq_n_f32(-2.12194440e-4f));
    float32x4_t p = vdupq_n_f32(1.9875691500E-4f);
    p = NEON_MLA(vdupq_n_f32(1.3981999507E-3f), p, r);
    p = NEON_MLA(vdupq_n_f32(8.3334519073E-3f), p, r);
    p = NEON_MLA(vdupq_n_f32(4.1665795894E-2f), p, r);
    p = NEON_MLA(vdupq_n_f32(1.6666665459E-1f), p, r);
    p = NEON_MLA(vdupq_n_f32(5.0000001201E-1f), p, r);
    p = NEON_MLA(vaddq_f32(r, vdupq_n_f32(1.0f)), p, vmulq_f32(r, r));
    const int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(fx), vdupq_n_s32(127)), 23);
    return vmulq_f32(p, vreinterpretq_f32_s32(e));
}

static inline float32x4_t NEON(sigmoid)(float32x4_t x) {
    const float32x4_t one = vdupq_n_f32(1.0f);
    return NEON(div)(one, vaddq_f32(one, NEON(exp)(vnegq_f32(x))));
}

static inline float32x4_t NEON(tanh)(float32x4_t x) {
    const float32x4_t one = vdupq_n_f32(1.0f);
    const float32x4_t e = NEON(exp)(vmulq_f32(vabsq_f32(x), vdupq_n_f32(-2.0f)));
    const float32x4_t t = NEON(div)(vsubq_f32(one, e), vaddq_f32(one, e));
    /* copy the sign of x onto t */
    const uint32x4_t signbit = vdupq_n_u32(0x80000000u);
    return vbslq_f32(signbit, x, t);
}

static inline void NEON(gates4)(const float *gi_r, const float *gi_z, const float *gi_n,
                                const float *gh_r, const float *gh_z, const float *gh_n,
                                const float *h, float *h_out, float *c_r, float *c_z,
                                float *c_n, float *c_g) {
    const float32x4_t r = NEON(sigmoid)(vaddq_f32(vld1q_f32(gi_r), vld1q_f32(gh_r)));
    const float32x4_t z = NEON(sigmoid)(vaddq_f32(vld1q_f32(gi_z), vld1q_f32(gh_z)));
    const float32x4_t ghn = vld1q_f32(gh_n);
    const float32x4_t n = NEON(tanh)(NEON_MLA(vld1q_f32(gi_n), r, ghn));
    const float32x4_t hp = vld1q_f32(h);
    if (c_r) {
        vst1q_f32(c_r, r);
        vst1q_f32(c_z, z);
        vst1q_f32(c_n, n);
        vst1q_f32(c_g, ghn);
    }
    vst1q_f32(h_out, NEON_MLA(n, z, vsubq_f32(hp, n)));
}

static void NEON(gru_gates)(int64_t H, const float *gi, const float *gh,
                            const float *h, float *h_out, float *cache) {
    int64_t j = 0;
    for (; j + 4 <= H; j += 4) {
        NEON(gates4)(gi + j, gi + H + j, gi + 2 * H + j, gh + j, gh + H + j, gh + 2 * H + j,
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
        NEON(gates4)(b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11]);
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
static void NEON(vexp)(int64_t n, float *x) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(x + i, NEON(exp)(vld1q_f32(x + i)));
    if (i < n) {
        float b[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        memcpy(b, x + i, (size_t)(n - i) * sizeof(float));
        vst1q_f32(b, NEON(exp)(vld1q_f32(b)));
        memcpy(x + i, b, (size_t)(n - i) * sizeof(float));
    }
}

static void NEON(vtanh)(int64_t n, float *x) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(x + i, NEON(tanh)(vld1q_f32(x + i)));
    if (i < n) {
        float b[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        memcpy(b, x + i, (size_t)(n - i) * sizeof(float));
        vst1q_f32(b, NEON(tanh)(vld1q_f32(b)));
        memcpy(x + i, b, (size_t)(n - i) * sizeof(float));
    }
}

#undef NEON_MLA
#undef NEON_MLS

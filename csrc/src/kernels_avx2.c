/*
 * kernels_avx2.c -- AVX2/FMA path for x86-64.
 *
 * Compiled for the baseline ISA like the rest of the library: only the
 * functions in the target region below use AVX2/FMA (CRoaring's
 * CROARING_TARGET_AVX2 idea), so no -mavx2 reaches the build and the
 * library still loads on a CPU without AVX2; platform.c selects this table
 * only after cpuid + xgetbv say it is safe.  F16C (binary16 loads, in every
 * AVX2 CPU made) is part of the check.
 */
#include "internal.h"

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))

#if defined(__clang__)
#  pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#  pragma GCC push_options
#  pragma GCC target("avx2,fma,f16c")
#endif

#include <immintrin.h>
#include <string.h>

#define AVX2_MR 6

/* ---- micro-kernel: 6 x 16 tile, 12 accumulators ---- */

/* The k loop alone, in its own (not inlined) function: 12 accumulators, two
 * B vectors and the broadcast take 15 of the 16 YMM registers, and when the
 * loop sat in gemm_tile_avx2 gcc kept alpha and beta (xmm0/xmm1) live
 * across it and spilled a B vector instead -- a stack reload in every other
 * FMA, the kernel at ~40% of the FMA peak on Zen.  Called once per tile,
 * the call costs nothing measurable. */
__attribute__((noinline))
static void gemm_tile_loop_avx2(int64_t K, const float *a0, const float *a1, const float *a2,
                                const float *a3, const float *a4, const float *a5, int64_t csa,
                                const float *Bp, __m256 *acc) {
    __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
    __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
    __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
    __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
    __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
    __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
    for (int64_t k = 0; k < K; ++k) {
        const __m256 b0 = _mm256_loadu_ps(Bp + k * DRE_NR);
        const __m256 b1 = _mm256_loadu_ps(Bp + k * DRE_NR + 8);
        const int64_t o = k * csa;
        __m256 a;
        a = _mm256_broadcast_ss(a0 + o); c00 = _mm256_fmadd_ps(a, b0, c00); c01 = _mm256_fmadd_ps(a, b1, c01);
        a = _mm256_broadcast_ss(a1 + o); c10 = _mm256_fmadd_ps(a, b0, c10); c11 = _mm256_fmadd_ps(a, b1, c11);
        a = _mm256_broadcast_ss(a2 + o); c20 = _mm256_fmadd_ps(a, b0, c20); c21 = _mm256_fmadd_ps(a, b1, c21);
        a = _mm256_broadcast_ss(a3 + o); c30 = _mm256_fmadd_ps(a, b0, c30); c31 = _mm256_fmadd_ps(a, b1, c31);
        a = _mm256_broadcast_ss(a4 + o); c40 = _mm256_fmadd_ps(a, b0, c40); c41 = _mm256_fmadd_ps(a, b1, c41);
        a = _mm256_broadcast_ss(a5 + o); c50 = _mm256_fmadd_ps(a, b0, c50); c51 = _mm256_fmadd_ps(a, b1, c51);
    }
    acc[0] = c00; acc[1] = c01; acc[2] = c10; acc[3] = c11; acc[4] = c20; acc[5] = c21;
    acc[6] = c30; acc[7] = c31; acc[8] = c40; acc[9] = c41; acc[10] = c50; acc[11] = c51;
}

static void gemm_tile_avx2(int64_t mr, int64_t nr, int64_t K,
                           const float *A, int64_t rsa, int64_t csa,
                           const float *Bp, float alpha, float beta,
                           const float *bias, float *C, int64_t ldc) {
    /* Rows past mr read row 0 again (always valid memory); their results
     * are never stored.  This keeps one loop body for every tile. */
    __m256 acc_v[2 * AVX2_MR];
    gemm_tile_loop_avx2(K, A, A + (mr > 1 ? 1 : 0) * rsa, A + (mr > 2 ? 2 : 0) * rsa,
                        A + (mr > 3 ? 3 : 0) * rsa, A + (mr > 4 ? 4 : 0) * rsa,
                        A + (mr > 5 ? 5 : 0) * rsa, csa, Bp, acc_v);
    const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
    for (int64_t i = 0; i < mr; ++i) {
        float *c = C + i * ldc;
        if (nr == DRE_NR) {
            __m256 r0 = _mm256_mul_ps(va, acc_v[2 * i]), r1 = _mm256_mul_ps(va, acc_v[2 * i + 1]);
            if (beta != 0.0f) {
                r0 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(c), r0);
                r1 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(c + 8), r1);
            }
            if (bias) {
                r0 = _mm256_add_ps(r0, _mm256_loadu_ps(bias));
                r1 = _mm256_add_ps(r1, _mm256_loadu_ps(bias + 8));
            }
            _mm256_storeu_ps(c, r0);
            _mm256_storeu_ps(c + 8, r1);
        } else {
            float tmp[DRE_NR];
            _mm256_storeu_ps(tmp, acc_v[2 * i]);
            _mm256_storeu_ps(tmp + 8, acc_v[2 * i + 1]);
            for (int64_t j = 0; j < nr; ++j) {
                const float v = (beta == 0.0f) ? alpha * tmp[j] : alpha * tmp[j] + beta * c[j];
                c[j] = bias ? v + bias[j] : v;
            }
        }
    }
}

/* ---- gemv: 8 rows at a time, one accumulator per row ----
 *
 * Eight independent FMA chains keep both FMA pipes busy at any D (a chain
 * of D/8 FMAs per row), and one transposing reduction (hadd tree) turns the
 * eight accumulators into the eight results in one register: at the small
 * D of on-device work (64-256) the old per-row horizontal sums cost as much
 * as the dot products.  Every row, in a block of eight or in the tail, is
 * summed in the same order -- lanes over k in steps of 8, then
 * ((l0+l1)+(l2+l3)) + ((l4+l5)+(l6+l7)) -- so a row's score does not depend
 * on where it sits in the list (full-catalogue and candidate-list ranking
 * agree bit for bit). */

#include "avx2_inl.h" /* tail_mask, reduce8, reduce1 */

void dre__gemv_avx2(int64_t n, int64_t D, const float *W, int64_t ldw,
                      const int32_t *idx, const float *x, const float *bias, float *y) {
    const int64_t D8 = D & ~(int64_t)7, rem = D - D8;
    const __m256i m = tail_mask(rem);
    /* masked loads never touch memory past a row's end */
    const __m256 xt = rem ? _mm256_maskload_ps(x + D8, m) : _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const float *w0, *w1, *w2, *w3, *w4, *w5, *w6, *w7;
        if (idx) {
            w0 = W + (int64_t)idx[i] * ldw;     w1 = W + (int64_t)idx[i + 1] * ldw;
            w2 = W + (int64_t)idx[i + 2] * ldw; w3 = W + (int64_t)idx[i + 3] * ldw;
            w4 = W + (int64_t)idx[i + 4] * ldw; w5 = W + (int64_t)idx[i + 5] * ldw;
            w6 = W + (int64_t)idx[i + 6] * ldw; w7 = W + (int64_t)idx[i + 7] * ldw;
        } else {
            w0 = W + i * ldw; w1 = w0 + ldw; w2 = w1 + ldw; w3 = w2 + ldw;
            w4 = w3 + ldw;    w5 = w4 + ldw; w6 = w5 + ldw; w7 = w6 + ldw;
        }
        __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
        __m256 s4 = s0, s5 = s0, s6 = s0, s7 = s0;
        int64_t k = 0;
        for (; k < D8; k += 8) {
            const __m256 xv = _mm256_loadu_ps(x + k);
            s0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + k), xv, s0);
            s1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + k), xv, s1);
            s2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + k), xv, s2);
            s3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + k), xv, s3);
            s4 = _mm256_fmadd_ps(_mm256_loadu_ps(w4 + k), xv, s4);
            s5 = _mm256_fmadd_ps(_mm256_loadu_ps(w5 + k), xv, s5);
            s6 = _mm256_fmadd_ps(_mm256_loadu_ps(w6 + k), xv, s6);
            s7 = _mm256_fmadd_ps(_mm256_loadu_ps(w7 + k), xv, s7);
        }
        if (rem) {
            s0 = _mm256_fmadd_ps(_mm256_maskload_ps(w0 + k, m), xt, s0);
            s1 = _mm256_fmadd_ps(_mm256_maskload_ps(w1 + k, m), xt, s1);
            s2 = _mm256_fmadd_ps(_mm256_maskload_ps(w2 + k, m), xt, s2);
            s3 = _mm256_fmadd_ps(_mm256_maskload_ps(w3 + k, m), xt, s3);
            s4 = _mm256_fmadd_ps(_mm256_maskload_ps(w4 + k, m), xt, s4);
            s5 = _mm256_fmadd_ps(_mm256_maskload_ps(w5 + k, m), xt, s5);
            s6 = _mm256_fmadd_ps(_mm256_maskload_ps(w6 + k, m), xt, s6);
            s7 = _mm256_fmadd_ps(_mm256_maskload_ps(w7 + k, m), xt, s7);
        }
        __m256 out = reduce8(s0, s1, s2, s3, s4, s5, s6, s7);
        if (bias) {
            const __m256 b = idx ? _mm256_i32gather_ps(bias, _mm256_loadu_si256((const __m256i *)(idx + i)), 4)
                                 : _mm256_loadu_ps(bias + i);
            out = _mm256_add_ps(out, b);
        }
        _mm256_storeu_ps(y + i, out);
    }
    for (; i < n; ++i) {
        const int64_t r = idx ? (int64_t)idx[i] : i;
        const float *w = W + r * ldw;
        __m256 s = _mm256_setzero_ps();
        int64_t k = 0;
        for (; k < D8; k += 8) s = _mm256_fmadd_ps(_mm256_loadu_ps(w + k), _mm256_loadu_ps(x + k), s);
        if (rem) s = _mm256_fmadd_ps(_mm256_maskload_ps(w + k, m), xt, s);
        y[i] = reduce1(s) + (bias ? bias[r] : 0.0f);
    }
}

/* gemv with binary16 weights: the same 8-row blocks and reduction tree as
 * dre__gemv_avx2 (vcvtph2ps widens 8 weights per 16-byte load, so a row
 * costs half the bytes).  The rem = D % 8 weights at a row's end come from
 * the 8 weights that end the row (a load that starts inside the row, never
 * past its end), with the lanes already summed zeroed in both operands --
 * a per-row copy to a buffer instead stalled store-to-load forwarding and
 * cost more than the dot products.  Rows shorter than 8 use the portable
 * conversion. */
static inline __m256 load_f16x8(const uint16_t *p) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)p));
}

void dre__gemv_f16_avx2(int64_t n, int64_t D, const uint16_t *W, int64_t ldw,
                        const float *x, const float *bias, float *y) {
    if (D < 8) {
        for (int64_t i = 0; i < n; ++i) {
            float acc = 0.0f;
            for (int64_t k = 0; k < D; ++k) acc += dre__f16_to_f32(W[i * ldw + k]) * x[k];
            y[i] = acc + (bias ? bias[i] : 0.0f);
        }
        return;
    }
    const int64_t D8 = D & ~(int64_t)7, rem = D - D8, t0 = D - 8;
    /* lanes 8-rem .. 7 of the last 8 columns are the tail */
    const __m256 keep = _mm256_castsi256_ps(_mm256_cmpgt_epi32(
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32((int)(7 - rem))));
    const __m256 xt = _mm256_and_ps(_mm256_loadu_ps(x + t0), keep);
#define DRE_F16_TAIL(w) _mm256_and_ps(load_f16x8((w) + t0), keep)
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const uint16_t *w0 = W + i * ldw, *w1 = w0 + ldw, *w2 = w1 + ldw, *w3 = w2 + ldw;
        const uint16_t *w4 = w3 + ldw, *w5 = w4 + ldw, *w6 = w5 + ldw, *w7 = w6 + ldw;
        __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
        __m256 s4 = s0, s5 = s0, s6 = s0, s7 = s0;
        for (int64_t k = 0; k < D8; k += 8) {
            const __m256 xv = _mm256_loadu_ps(x + k);
            s0 = _mm256_fmadd_ps(load_f16x8(w0 + k), xv, s0);
            s1 = _mm256_fmadd_ps(load_f16x8(w1 + k), xv, s1);
            s2 = _mm256_fmadd_ps(load_f16x8(w2 + k), xv, s2);
            s3 = _mm256_fmadd_ps(load_f16x8(w3 + k), xv, s3);
            s4 = _mm256_fmadd_ps(load_f16x8(w4 + k), xv, s4);
            s5 = _mm256_fmadd_ps(load_f16x8(w5 + k), xv, s5);
            s6 = _mm256_fmadd_ps(load_f16x8(w6 + k), xv, s6);
            s7 = _mm256_fmadd_ps(load_f16x8(w7 + k), xv, s7);
        }
        if (rem) {
            s0 = _mm256_fmadd_ps(DRE_F16_TAIL(w0), xt, s0);
            s1 = _mm256_fmadd_ps(DRE_F16_TAIL(w1), xt, s1);
            s2 = _mm256_fmadd_ps(DRE_F16_TAIL(w2), xt, s2);
            s3 = _mm256_fmadd_ps(DRE_F16_TAIL(w3), xt, s3);
            s4 = _mm256_fmadd_ps(DRE_F16_TAIL(w4), xt, s4);
            s5 = _mm256_fmadd_ps(DRE_F16_TAIL(w5), xt, s5);
            s6 = _mm256_fmadd_ps(DRE_F16_TAIL(w6), xt, s6);
            s7 = _mm256_fmadd_ps(DRE_F16_TAIL(w7), xt, s7);
        }
        __m256 out = reduce8(s0, s1, s2, s3, s4, s5, s6, s7);
        if (bias) out = _mm256_add_ps(out, _mm256_loadu_ps(bias + i));
        _mm256_storeu_ps(y + i, out);
    }
    for (; i < n; ++i) {
        const uint16_t *w = W + i * ldw;
        __m256 s = _mm256_setzero_ps();
        for (int64_t k = 0; k < D8; k += 8) s = _mm256_fmadd_ps(load_f16x8(w + k), _mm256_loadu_ps(x + k), s);
        if (rem) s = _mm256_fmadd_ps(DRE_F16_TAIL(w), xt, s);
        y[i] = reduce1(s) + (bias ? bias[i] : 0.0f);
    }
#undef DRE_F16_TAIL
}

/* ---- activations ---- */

/* exp(x) for float lanes: Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2,
 * and the Cephes expf polynomial (about 1 ulp); inputs clamped to
 * [-87.3, 88.0] so 2^n stays a normal float (round(88 log2 e) = 127). */
static inline __m256 exp256(__m256 x) {
    const __m256 hi = _mm256_set1_ps(88.0f), lo = _mm256_set1_ps(-87.3365478515625f);
    /* operand order keeps NaN: minps/maxps return the second operand when
     * either is NaN, so x goes second (NaN in, NaN out, as the scalar path) */
    x = _mm256_max_ps(lo, _mm256_min_ps(hi, x));
    const __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500E-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507E-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073E-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894E-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459E-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201E-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

static inline __m256 sigmoid256(__m256 x) {
    const __m256 one = _mm256_set1_ps(1.0f);
    return _mm256_div_ps(one, _mm256_add_ps(one, exp256(_mm256_sub_ps(_mm256_setzero_ps(), x))));
}

/* tanh(x) = sign(x) (1 - e) / (1 + e), e = exp(-2|x|): no overflow for any
 * x; absolute error a few 1e-8 (relative accuracy degrades only for
 * |x| < 1e-3, where tanh(x) ~ x is tiny anyway). */
static inline __m256 tanh256(__m256 x) {
    const __m256 sign = _mm256_and_ps(x, _mm256_set1_ps(-0.0f));
    const __m256 ax = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x);
    const __m256 one = _mm256_set1_ps(1.0f);
    const __m256 e = exp256(_mm256_mul_ps(ax, _mm256_set1_ps(-2.0f)));
    const __m256 t = _mm256_div_ps(_mm256_sub_ps(one, e), _mm256_add_ps(one, e));
    return _mm256_or_ps(t, sign);
}

void dre__gru_gates_avx2(int64_t H, const float *gi, const float *gh,
                           const float *h, float *h_out, float *cache) {
    for (int64_t j = 0; j < H; j += 8) {
        const int64_t rem = H - j;
        if (rem >= 8) {
            const __m256 r = sigmoid256(_mm256_add_ps(_mm256_loadu_ps(gi + j), _mm256_loadu_ps(gh + j)));
            const __m256 z = sigmoid256(_mm256_add_ps(_mm256_loadu_ps(gi + H + j), _mm256_loadu_ps(gh + H + j)));
            const __m256 ghn = _mm256_loadu_ps(gh + 2 * H + j);
            const __m256 n = tanh256(_mm256_fmadd_ps(r, ghn, _mm256_loadu_ps(gi + 2 * H + j)));
            const __m256 hp = _mm256_loadu_ps(h + j);
            if (cache) {
                _mm256_storeu_ps(cache + j, r);
                _mm256_storeu_ps(cache + H + j, z);
                _mm256_storeu_ps(cache + 2 * H + j, n);
                _mm256_storeu_ps(cache + 3 * H + j, ghn);
            }
            _mm256_storeu_ps(h_out + j, _mm256_fmadd_ps(z, _mm256_sub_ps(hp, n), n));
        } else {
            /* same math on a masked tail: identical rounding for every lane */
            const __m256i m = tail_mask(rem);
            const __m256 r = sigmoid256(_mm256_add_ps(_mm256_maskload_ps(gi + j, m), _mm256_maskload_ps(gh + j, m)));
            const __m256 z = sigmoid256(_mm256_add_ps(_mm256_maskload_ps(gi + H + j, m), _mm256_maskload_ps(gh + H + j, m)));
            const __m256 ghn = _mm256_maskload_ps(gh + 2 * H + j, m);
            const __m256 n = tanh256(_mm256_fmadd_ps(r, ghn, _mm256_maskload_ps(gi + 2 * H + j, m)));
            const __m256 hp = _mm256_maskload_ps(h + j, m);
            if (cache) {
                _mm256_maskstore_ps(cache + j, m, r);
                _mm256_maskstore_ps(cache + H + j, m, z);
                _mm256_maskstore_ps(cache + 2 * H + j, m, n);
                _mm256_maskstore_ps(cache + 3 * H + j, m, ghn);
            }
            _mm256_maskstore_ps(h_out + j, m, _mm256_fmadd_ps(z, _mm256_sub_ps(hp, n), n));
        }
    }
}

void dre__vexp_avx2(int64_t n, float *x) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, exp256(_mm256_loadu_ps(x + i)));
    if (i < n) {
        const __m256i m = tail_mask(n - i);
        _mm256_maskstore_ps(x + i, m, exp256(_mm256_maskload_ps(x + i, m)));
    }
}

void dre__vtanh_avx2(int64_t n, float *x) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, tanh256(_mm256_loadu_ps(x + i)));
    if (i < n) {
        const __m256i m = tail_mask(n - i);
        _mm256_maskstore_ps(x + i, m, tanh256(_mm256_maskload_ps(x + i, m)));
    }
}

static const dre_kernels dre__avx2_table = {
    DRE_PATH_AVX2, AVX2_MR, gemm_tile_avx2, dre__gemv_avx2, dre__gru_gates_avx2,
    dre__vexp_avx2, dre__vtanh_avx2, dre__gemv_f16_avx2,
};

#if defined(__clang__)
#  pragma clang attribute pop
#else
#  pragma GCC pop_options
#endif

const dre_kernels *dre__kernels_avx2(void) { return &dre__avx2_table; }

#else /* not x86-64 */

const dre_kernels *dre__kernels_avx2(void) { return 0; }

#endif

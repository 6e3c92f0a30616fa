/*
 * kernels_avx512.c -- AVX-512F GEMM tile for x86-64.
 *
 * A packed-B panel row (DRE_NR = 16 floats) is exactly one ZMM register, so
 * the tile is 12 rows x 16 columns with 12 accumulators, each k step one
 * panel load and 12 broadcast-FMAs.  Doubling the FMA width pays where the
 * GRU is GEMM-bound (bench/); the gate math reuses the AVX2 code.  gemv is
 * bound by the bandwidth of wherever the weights live (at I=128, H=256 the
 * 1.18 MB of a GRU step stream from L2 at ~60 GB/s): 512-bit loads gain ~5%.
 * Compiled under a target region like kernels_avx2.c; selected only after
 * cpuid + xgetbv (ZMM state) checks.
 */
#include "internal.h"

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))

#if defined(__clang__)
#  pragma clang attribute push(__attribute__((target("avx512f,avx2,fma"))), apply_to = function)
#else
#  pragma GCC push_options
#  pragma GCC target("avx512f,avx2,fma")
#endif

#include <immintrin.h>

#define AVX512_MR 12

static void gemm_tile_avx512(int64_t mr, int64_t nr, int64_t K,
                             const float *A, int64_t rsa, int64_t csa,
                             const float *Bp, float alpha, float beta,
                             const float *bias, float *C, int64_t ldc) {
    __m512 c0 = _mm512_setzero_ps(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0;
    __m512 c6 = c0, c7 = c0, c8 = c0, c9 = c0, c10 = c0, c11 = c0;
    /* rows past mr read row 0 again (valid memory); never stored */
    const int64_t o1 = (mr > 1 ? 1 : 0) * rsa, o2 = (mr > 2 ? 2 : 0) * rsa;
    const int64_t o3 = (mr > 3 ? 3 : 0) * rsa, o4 = (mr > 4 ? 4 : 0) * rsa;
    const int64_t o5 = (mr > 5 ? 5 : 0) * rsa, o6 = (mr > 6 ? 6 : 0) * rsa;
    const int64_t o7 = (mr > 7 ? 7 : 0) * rsa, o8 = (mr > 8 ? 8 : 0) * rsa;
    const int64_t o9 = (mr > 9 ? 9 : 0) * rsa, o10 = (mr > 10 ? 10 : 0) * rsa;
    const int64_t o11 = (mr > 11 ? 11 : 0) * rsa;
    const float *a = A;
    for (int64_t k = 0; k < K; ++k, a += csa) {
        const __m512 b = _mm512_loadu_ps(Bp + k * DRE_NR);
        c0 = _mm512_fmadd_ps(_mm512_set1_ps(a[0]), b, c0);
        c1 = _mm512_fmadd_ps(_mm512_set1_ps(a[o1]), b, c1);
        c2 = _mm512_fmadd_ps(_mm512_set1_ps(a[o2]), b, c2);
        c3 = _mm512_fmadd_ps(_mm512_set1_ps(a[o3]), b, c3);
        c4 = _mm512_fmadd_ps(_mm512_set1_ps(a[o4]), b, c4);
        c5 = _mm512_fmadd_ps(_mm512_set1_ps(a[o5]), b, c5);
        c6 = _mm512_fmadd_ps(_mm512_set1_ps(a[o6]), b, c6);
        c7 = _mm512_fmadd_ps(_mm512_set1_ps(a[o7]), b, c7);
        c8 = _mm512_fmadd_ps(_mm512_set1_ps(a[o8]), b, c8);
        c9 = _mm512_fmadd_ps(_mm512_set1_ps(a[o9]), b, c9);
        c10 = _mm512_fmadd_ps(_mm512_set1_ps(a[o10]), b, c10);
        c11 = _mm512_fmadd_ps(_mm512_set1_ps(a[o11]), b, c11);
    }
    const __m512 acc[AVX512_MR] = {c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11};
    /* masked loads/stores never touch columns past nr (fault-suppressing) */
    const __mmask16 m = (__mmask16)((nr >= 16) ? 0xFFFFu : ((1u << nr) - 1u));
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    const __m512 vbias = bias ? _mm512_maskz_loadu_ps(m, bias) : _mm512_setzero_ps();
    for (int64_t i = 0; i < mr; ++i) {
        float *c = C + i * ldc;
        __m512 r = _mm512_mul_ps(va, acc[i]);
        if (beta != 0.0f) r = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m, c), r);
        if (bias) r = _mm512_add_ps(r, vbias);
        _mm512_mask_storeu_ps(c, m, r);
    }
}

/* gemv: 4 rows at a time, 16 lanes, two accumulators per row. */
/* [sum(a), sum(b), sum(c), sum(d)] of four 16-lane vectors (AVX-512F
 * only: the upper halves come out through the 64-bit-lane extract). */
static inline __m128 reduce4(__m512 a, __m512 b, __m512 c, __m512 d) {
#define DRE_FOLD(v) _mm256_add_ps(_mm512_castps512_ps256(v), \
    _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)))
    const __m256 a8 = DRE_FOLD(a), b8 = DRE_FOLD(b), c8 = DRE_FOLD(c), d8 = DRE_FOLD(d);
#undef DRE_FOLD
    const __m256 abcd = _mm256_hadd_ps(_mm256_hadd_ps(a8, b8), _mm256_hadd_ps(c8, d8));
    return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

/* The dot products of 4 rows w[0..3] with x (bias added by the caller).
 * Each lane's sum is independent of the other three rows, so a row gets
 * the same bits in any block: the tail pads its block with copies of its
 * last row instead of handing it to another kernel. */
static inline __m128 dot4_avx512(const float *const w[4], int64_t D, const float *x) {
    const int64_t D32 = D & ~(int64_t)31, D16 = D & ~(int64_t)15, rem = D - D16;
    const __mmask16 m = (__mmask16)((1u << rem) - 1u);
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    __m512 t0 = s0, t1 = s0, t2 = s0, t3 = s0;
    int64_t k = 0;
    for (; k < D32; k += 32) {
        const __m512 x0 = _mm512_loadu_ps(x + k), x1 = _mm512_loadu_ps(x + k + 16);
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(w[0] + k), x0, s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(w[1] + k), x0, s1);
        s2 = _mm512_fmadd_ps(_mm512_loadu_ps(w[2] + k), x0, s2);
        s3 = _mm512_fmadd_ps(_mm512_loadu_ps(w[3] + k), x0, s3);
        t0 = _mm512_fmadd_ps(_mm512_loadu_ps(w[0] + k + 16), x1, t0);
        t1 = _mm512_fmadd_ps(_mm512_loadu_ps(w[1] + k + 16), x1, t1);
        t2 = _mm512_fmadd_ps(_mm512_loadu_ps(w[2] + k + 16), x1, t2);
        t3 = _mm512_fmadd_ps(_mm512_loadu_ps(w[3] + k + 16), x1, t3);
    }
    for (; k < D16; k += 16) {
        const __m512 x0 = _mm512_loadu_ps(x + k);
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(w[0] + k), x0, s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(w[1] + k), x0, s1);
        s2 = _mm512_fmadd_ps(_mm512_loadu_ps(w[2] + k), x0, s2);
        s3 = _mm512_fmadd_ps(_mm512_loadu_ps(w[3] + k), x0, s3);
    }
    if (rem) { /* masked loads never touch memory past the row's end */
        const __m512 x0 = _mm512_maskz_loadu_ps(m, x + k);
        s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w[0] + k), x0, s0);
        s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w[1] + k), x0, s1);
        s2 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w[2] + k), x0, s2);
        s3 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w[3] + k), x0, s3);
    }
    /* one transposing reduction for the 4 rows instead of 4 separate
     * horizontal sums (those were ~15% of a batch-1 GRU step) */
    return reduce4(_mm512_add_ps(s0, t0), _mm512_add_ps(s1, t1),
                   _mm512_add_ps(s2, t2), _mm512_add_ps(s3, t3));
}

static void gemv_avx512(int64_t n, int64_t D, const float *W, int64_t ldw,
                        const int32_t *idx, const float *x, const float *bias, float *y) {
    for (int64_t i = 0; i < n; i += 4) {
        /* rows past n (the last block of n % 4 != 0) repeat the last row:
         * computed, never stored */
        const int64_t nb = n - i < 4 ? n - i : 4;
        int64_t r[4];
        const float *w[4];
        for (int q = 0; q < 4; ++q) {
            const int64_t j = i + (q < nb ? q : nb - 1);
            r[q] = idx ? (int64_t)idx[j] : j;
            w[q] = W + r[q] * ldw;
        }
        __m128 sums = dot4_avx512(w, D, x);
        if (bias) sums = _mm_add_ps(sums, _mm_setr_ps(bias[r[0]], bias[r[1]], bias[r[2]], bias[r[3]]));
        if (nb == 4) {
            _mm_storeu_ps(y + i, sums);
        } else {
            float t[4];
            _mm_storeu_ps(t, sums);
            for (int64_t q = 0; q < nb; ++q) y[i + q] = t[q];
        }
    }
}

static const dre_kernels dre__avx512_table = {
    DRE_PATH_AVX512, AVX512_MR, gemm_tile_avx512, gemv_avx512, dre__gru_gates_avx2,
    dre__vexp_avx2, dre__vtanh_avx2, dre__gemv_f16_avx2,
};

#if defined(__clang__)
#  pragma clang attribute pop
#else
#  pragma GCC pop_options
#endif

const dre_kernels *dre__kernels_avx512(void) { return &dre__avx512_table; }

#else /* not x86-64 */

const dre_kernels *dre__kernels_avx512(void) { return 0; }

#endif

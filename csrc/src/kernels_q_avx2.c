/*
 * kernels_q_avx2.c -- compressed-row primitives (qkernels.h) for x86-64
 * AVX2/FMA, and their AVX-512F variants in kernels_q_avx512.c.
 *
 * Eight rows at a time, one 8-lane accumulator per row, k in steps of 8:
 * an int8 row costs a 64-bit load, vpmovsxbd and vcvtdq2ps per 8 weights
 * (exact), a binary16 row a 128-bit load and vcvtph2ps; the FMA and the
 * transposing reduction are those of the float32 gemv (avx2_inl.h).  A
 * short last block repeats its last row (computed, never stored), so every
 * row -- in a block or in the tail -- is summed by the same instructions in
 * the same order.  The D % 8 weights at a row's end come from the 8 weights
 * that end the row (a load inside the row, never past it) with the lanes
 * already summed zeroed in both operands; rows shorter than 8 are copied to
 * a zero-padded buffer first (all rows alike, so the order is still one).
 * Compiled under a target region like kernels_avx2.c; platform.c selects
 * the path only after cpuid + xgetbv.
 */
#include "qkernels.h"

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))

#if defined(__clang__)
#  pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#  pragma GCC push_options
#  pragma GCC target("avx2,fma,f16c")
#endif

#include <immintrin.h>
#include <string.h>

#include "avx2_inl.h"

static inline __m256 load_i8x8(const int8_t *p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)p)));
}

static inline __m256 load_h16x8(const uint16_t *p) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)p));
}

/* y = dot * scale + bias for the 8 lanes, rows r[0..7] (separate roundings) */
/* y = dot * scale + bias for 8 rows (separate roundings): the rows' scales
 * and biases by one load when the block is 8 consecutive rows, else by a
 * gather (the same values either way) */
static inline __m256 finish8(__m256 dot, const int64_t *r, int contiguous, const float *scale,
                                  const float *bias) {
    const __m256i ri = _mm256_setr_epi32((int)r[0], (int)r[1], (int)r[2], (int)r[3], (int)r[4],
                                         (int)r[5], (int)r[6], (int)r[7]);
    if (scale)
        dot = _mm256_mul_ps(dot, contiguous ? _mm256_loadu_ps(scale + r[0])
                                            : _mm256_i32gather_ps(scale, ri, 4));
    const __m256 b = !bias ? _mm256_setzero_ps()
                           : contiguous ? _mm256_loadu_ps(bias + r[0])
                                        : _mm256_i32gather_ps(bias, ri, 4);
    return _mm256_add_ps(dot, b);
}

#define DRE_Q_GEMV_AVX2(NAME, T, LOAD8)                                                      \
    static void NAME(int64_t n, int64_t D, const T *W, int64_t ldw, const int32_t *idx,     \
                     const float *scale, const float *x, const float *bias, float *y) {     \
        const int64_t D8 = D & ~(int64_t)7, rem = D - D8, t0 = D - 8;                        \
        const int shortrow = D < 8;                                                          \
        __m256 keep = _mm256_setzero_ps(), xt = _mm256_setzero_ps();                         \
        if (shortrow) {                                                                      \
            float xb[8] = {0};                                                               \
            if (D > 0) memcpy(xb, x, (size_t)D * sizeof(float));                             \
            xt = _mm256_loadu_ps(xb);                                                        \
        } else if (rem) {                                                                    \
            /* lanes 8-rem .. 7 of the last 8 columns are the tail */                        \
            keep = _mm256_castsi256_ps(_mm256_cmpgt_epi32(                                   \
                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32((int)(7 - rem)))); \
            xt = _mm256_and_ps(_mm256_loadu_ps(x + t0), keep);                               \
        }                                                                                    \
        for (int64_t i = 0; i < n; i += 8) {                                                 \
            const int64_t nb = n - i < 8 ? n - i : 8;                                        \
            int64_t r[8];                                                                    \
            const T *w[8];                                                                   \
            for (int q = 0; q < 8; ++q) {                                                    \
                const int64_t j = i + (q < nb ? q : nb - 1);                                 \
                r[q] = idx ? (int64_t)idx[j] : j;                                            \
                w[q] = W + r[q] * ldw;                                                       \
            }                                                                                \
            __m256 s[8];                                                                     \
            for (int q = 0; q < 8; ++q) s[q] = _mm256_setzero_ps();                          \
            for (int64_t k = 0; k < D8; k += 8) {                                            \
                const __m256 xv = _mm256_loadu_ps(x + k);                                    \
                for (int q = 0; q < 8; ++q) s[q] = _mm256_fmadd_ps(LOAD8(w[q] + k), xv, s[q]); \
            }                                                                                \
            if (shortrow) {                                                                  \
                for (int q = 0; q < 8 && D > 0; ++q) {                                       \
                    T b[8] = {0};                                                            \
                    memcpy(b, w[q], (size_t)D * sizeof(T));                                  \
                    s[q] = _mm256_fmadd_ps(LOAD8(b), xt, s[q]);                              \
                }                                                                            \
            } else if (rem) {                                                                \
                for (int q = 0; q < 8; ++q)                                                  \
                    s[q] = _mm256_fmadd_ps(_mm256_and_ps(LOAD8(w[q] + t0), keep), xt, s[q]); \
            }                                                                                \
            const __m256 out = finish8(reduce8(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]), \
                                       r, !idx && nb == 8, scale, bias);                                      \
            if (nb == 8) {                                                                   \
                _mm256_storeu_ps(y + i, out);                                                \
            } else {                                                                         \
                float t[8];                                                                  \
                _mm256_storeu_ps(t, out);                                                    \
                for (int64_t q = 0; q < nb; ++q) y[i + q] = t[q];                            \
            }                                                                                \
        }                                                                                    \
    }

DRE_Q_GEMV_AVX2(gemv_i8_avx2, int8_t, load_i8x8)
DRE_Q_GEMV_AVX2(gemv_h_avx2, uint16_t, load_h16x8)

static const dre_qkernels dre__q_avx2_table = {DRE_PATH_AVX2, gemv_i8_avx2, gemv_h_avx2};

#if defined(__clang__)
#  pragma clang attribute pop
#else
#  pragma GCC pop_options
#endif

const dre_qkernels *dre__qkernels_avx2(void) { return &dre__q_avx2_table; }

#else /* not x86-64 */

const dre_qkernels *dre__qkernels_avx2(void) { return 0; }

#endif

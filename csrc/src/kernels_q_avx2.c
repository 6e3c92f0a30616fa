/*
 * kernels_q_avx2.c -- compressed-row primitives (qkernels.h) for x86-64
 * AVX2/FMA, and their AVX-512F variants in kernels_q_avx512.c.
 *
 * binary16 rows: eight rows at a time, one 8-lane accumulator per row, k in
 * steps of 8: a 128-bit load and vcvtph2ps per 8 weights (exact); the FMA and the
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

DRE_Q_GEMV_AVX2(gemv_h_avx2, uint16_t, load_h16x8)

/* Packed int8 blocks (qkernels.h), exactly: a row quad's 16 bytes of a
 * group widened to 16 bits (vpmovzxbw, the stored q + 128), times the
 * group's 4 int16 digits of each limb (U = lo + 4096 hi; vpmaddwd sums the
 * pairs into 32 bits, at most 2^21 per group), the +128 taken back once per
 * row (c16).  The integer sums are exact, so the bits are the scalar
 * specification's; the AVX-512 path without VNNI uses this kernel too. */
void dre__score_i8p_avx2(int64_t n, const uint8_t *P, const dre_i8p_user *u,
                         const float *scale, const float *bias, float *y) {
    const int64_t G = u->G;
    const int64_t *lo = u->l16, *hi = u->l16 + G;
    const __m256i clo = _mm256_set1_epi32(u->c16[0]), chi = _mm256_set1_epi32(u->c16[1]);
    const __m256d e2 = _mm256_set1_pd(u->e2), k4096 = _mm256_set1_pd(4096.0);
    for (int64_t i = 0; i < n; i += DRE_I8P_ROWS) {
        const uint8_t *blk = P + (i / DRE_I8P_ROWS) * 64 * G;
        const int64_t m = n - i < DRE_I8P_ROWS ? n - i : DRE_I8P_ROWS;
        float sc[DRE_I8P_ROWS], bi[DRE_I8P_ROWS], out[DRE_I8P_ROWS];
        for (int64_t t = 0; t < DRE_I8P_ROWS; ++t) {
            sc[t] = scale && t < m ? scale[i + t] : 1.0f;
            bi[t] = bias && t < m ? bias[i + t] : 0.0f;
        }
        __m256i aL[4], aH[4];
        for (int q = 0; q < 4; ++q) aL[q] = aH[q] = _mm256_setzero_si256();
        for (int64_t g = 0; g < G; ++g) {
            const __m256i dl = _mm256_set1_epi64x(lo[g]), dh = _mm256_set1_epi64x(hi[g]);
            for (int q = 0; q < 4; ++q) {
                const __m256i w = _mm256_cvtepu8_epi16(
                    _mm_loadu_si128((const __m128i *)(const void *)(blk + 64 * g + 16 * q)));
                aL[q] = _mm256_add_epi32(aL[q], _mm256_madd_epi16(w, dl));
                aH[q] = _mm256_add_epi32(aH[q], _mm256_madd_epi16(w, dh));
            }
        }
        for (int h = 0; h < 2; ++h) {
            /* hadd: [r0 r1 r4 r5 | r2 r3 r6 r7] of rows 8h..; 0xD8 puts them in order */
            const __m256i sl = _mm256_sub_epi32(
                _mm256_permute4x64_epi64(_mm256_hadd_epi32(aL[2 * h], aL[2 * h + 1]), 0xD8), clo);
            const __m256i sh = _mm256_sub_epi32(
                _mm256_permute4x64_epi64(_mm256_hadd_epi32(aH[2 * h], aH[2 * h + 1]), 0xD8), chi);
            for (int p = 0; p < 2; ++p) {
                const __m128i l4 = p ? _mm256_extracti128_si256(sl, 1) : _mm256_castsi256_si128(sl);
                const __m128i h4 = p ? _mm256_extracti128_si256(sh, 1) : _mm256_castsi256_si128(sh);
                const int r = 8 * h + 4 * p;
                const __m256d d = _mm256_add_pd(_mm256_cvtepi32_pd(l4),
                                                _mm256_mul_pd(k4096, _mm256_cvtepi32_pd(h4)));
                const __m256d tt = _mm256_mul_pd(_mm256_cvtps_pd(_mm_loadu_ps(sc + r)), e2);
                const __m128 f = _mm256_cvtpd_ps(_mm256_mul_pd(d, tt));
                _mm_storeu_ps(out + r, _mm_add_ps(f, _mm_loadu_ps(bi + r)));
            }
        }
        memcpy(y + i, out, (size_t)m * sizeof(float));
    }
}

static const dre_qkernels dre__q_avx2_table = {DRE_PATH_AVX2, gemv_h_avx2, dre__score_i8p_avx2,
                                               dre__pack16_i8_scalar};

#if defined(__clang__)
#  pragma clang attribute pop
#else
#  pragma GCC pop_options
#endif

const dre_qkernels *dre__qkernels_avx2(void) { return &dre__q_avx2_table; }

#else /* not x86-64 */

const dre_qkernels *dre__qkernels_avx2(void) { return 0; }

#endif

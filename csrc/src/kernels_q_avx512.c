/*
 * kernels_q_avx512.c -- compressed-row primitives (qkernels.h) with
 * AVX-512F: the binary16 algorithm of kernels_q_avx2.c with 16-lane
 * accumulators (16 weights per vcvtph2ps from a 256-bit load), and packed
 * int8 blocks with AVX512-VNNI.  Each accumulator folds its halves
 * (lane j + lane j+8) before the AVX2 transposing reduction, for every row
 * alike.  The tail uses the last 16 weights of the row under a lane mask
 * (rows shorter than 16: a zero-padded copy).  Selected only after cpuid +
 * xgetbv (ZMM state) checks.
 */
#include "qkernels.h"

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))

#if defined(__clang__)
#  pragma clang attribute push(__attribute__((target("avx512f,avx2,fma,f16c"))), apply_to = function)
#else
#  pragma GCC push_options
#  pragma GCC target("avx512f,avx2,fma,f16c")
#endif

#include <immintrin.h>
#include <string.h>

#include "avx2_inl.h"

static inline __m512 load_h16x16(const uint16_t *p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)p));
}

/* lanes j + j+8 (AVX-512F only: the upper half through the 64-bit-lane extract) */
static inline __m256 fold16(__m512 v) {
    return _mm256_add_ps(_mm512_castps512_ps256(v),
                         _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}

/* y = dot * scale + bias for 8 rows (separate roundings): the rows' scales
 * and biases by one load when the block is 8 consecutive rows, else by a
 * gather (the same values either way) */
static inline __m256 finish8_512(__m256 dot, const int64_t *r, int contiguous, const float *scale,
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

#define DRE_Q_GEMV_AVX512(NAME, T, LOAD16)                                                   \
    static void NAME(int64_t n, int64_t D, const T *W, int64_t ldw, const int32_t *idx,     \
                     const float *scale, const float *x, const float *bias, float *y) {     \
        const int64_t D16 = D & ~(int64_t)15, rem = D - D16, t0 = D - 16;                    \
        const int shortrow = D < 16;                                                         \
        const __mmask16 keep = (__mmask16)(rem ? (0xFFFFu << (16 - rem)) & 0xFFFFu : 0u);    \
        __m512 xt = _mm512_setzero_ps();                                                     \
        if (shortrow) {                                                                      \
            float xb[16] = {0};                                                              \
            if (D > 0) memcpy(xb, x, (size_t)D * sizeof(float));                             \
            xt = _mm512_loadu_ps(xb);                                                        \
        } else if (rem) {                                                                    \
            xt = _mm512_maskz_mov_ps(keep, _mm512_loadu_ps(x + t0));                         \
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
            __m512 s[8];                                                                     \
            for (int q = 0; q < 8; ++q) s[q] = _mm512_setzero_ps();                          \
            for (int64_t k = 0; k < D16; k += 16) {                                          \
                const __m512 xv = _mm512_loadu_ps(x + k);                                    \
                for (int q = 0; q < 8; ++q) s[q] = _mm512_fmadd_ps(LOAD16(w[q] + k), xv, s[q]); \
            }                                                                                \
            if (shortrow) {                                                                  \
                for (int q = 0; q < 8 && D > 0; ++q) {                                       \
                    T b[16] = {0};                                                           \
                    memcpy(b, w[q], (size_t)D * sizeof(T));                                  \
                    s[q] = _mm512_fmadd_ps(LOAD16(b), xt, s[q]);                             \
                }                                                                            \
            } else if (rem) {                                                                \
                for (int q = 0; q < 8; ++q)                                                  \
                    s[q] = _mm512_fmadd_ps(_mm512_maskz_mov_ps(keep, LOAD16(w[q] + t0)), xt, s[q]); \
            }                                                                                \
            const __m256 out = finish8_512(                                                  \
                reduce8(fold16(s[0]), fold16(s[1]), fold16(s[2]), fold16(s[3]),              \
                        fold16(s[4]), fold16(s[5]), fold16(s[6]), fold16(s[7])),             \
                r, !idx && nb == 8, scale, bias);                                                             \
            if (nb == 8) {                                                                   \
                _mm256_storeu_ps(y + i, out);                                                \
            } else {                                                                         \
                float t[8];                                                                  \
                _mm256_storeu_ps(t, out);                                                    \
                for (int64_t q = 0; q < nb; ++q) y[i + q] = t[q];                            \
            }                                                                                \
        }                                                                                    \
    }

DRE_Q_GEMV_AVX512(gemv_h_avx512, uint16_t, load_h16x16)

/* without AVX512-VNNI (Skylake-X): the AVX2 kernel for packed int8 blocks */
static const dre_qkernels dre__q_avx512_table = {DRE_PATH_AVX512, gemv_h_avx512,
                                                 dre__score_i8p_avx2, dre__pack16_i8_scalar};

#if defined(__clang__)
#  pragma clang attribute pop
#else
#  pragma GCC pop_options
#endif

/* ---- packed int8 blocks with AVX512-VNNI ---- */

#if defined(__clang__)
#  pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vnni,avx2,fma,f16c"))), apply_to = function)
#else
#  pragma GCC push_options
#  pragma GCC target("avx512f,avx512bw,avx512vnni,avx2,fma,f16c")
#endif

/* Packed int8 blocks (qkernels.h), exactly: one 64-byte group is the 16
 * rows' 4 stored bytes (q + 128, unsigned), and vpdpbusd multiplies them by
 * the group's 4 signed base-256 digits of U (broadcast from memory) and adds
 * the 4 products to each row's 32-bit lane: three accumulators (one per
 * digit), at most 255 * 128 * 4 per group, no overflow for D <= 1024.  The
 * +128 comes back out per digit (c8); the three sums meet in double, exactly
 * ((a0 + 256 a1) + 65536 a2 < 2^53), then the shared final step. */
static void score_i8p_vnni(int64_t n, const uint8_t *P, const dre_i8p_user *u,
                           const float *scale, const float *bias, float *y) {
    const int64_t G = u->G;
    const int32_t *l0 = u->l8, *l1 = u->l8 + G, *l2 = u->l8 + 2 * G;
    const __m512i c0 = _mm512_set1_epi32(u->c8[0]), c1 = _mm512_set1_epi32(u->c8[1]),
                  c2 = _mm512_set1_epi32(u->c8[2]);
    const __m512d e2 = _mm512_set1_pd(u->e2), k256 = _mm512_set1_pd(256.0),
                  k65536 = _mm512_set1_pd(65536.0);
    for (int64_t i = 0; i < n; i += DRE_I8P_ROWS) {
        const uint8_t *blk = P + (i / DRE_I8P_ROWS) * 64 * G;
        const int64_t m = n - i < DRE_I8P_ROWS ? n - i : DRE_I8P_ROWS;
        const __mmask16 km = (__mmask16)(m == 16 ? 0xFFFFu : (1u << m) - 1u);
        __m512i a0 = _mm512_setzero_si512(), a1 = _mm512_setzero_si512(),
                a2 = _mm512_setzero_si512();
        for (int64_t g = 0; g < G; ++g) {
            const __m512i w = _mm512_loadu_si512((const void *)(blk + 64 * g));
            a0 = _mm512_dpbusd_epi32(a0, w, _mm512_set1_epi32(l0[g]));
            a1 = _mm512_dpbusd_epi32(a1, w, _mm512_set1_epi32(l1[g]));
            a2 = _mm512_dpbusd_epi32(a2, w, _mm512_set1_epi32(l2[g]));
        }
        a0 = _mm512_sub_epi32(a0, c0);
        a1 = _mm512_sub_epi32(a1, c1);
        a2 = _mm512_sub_epi32(a2, c2);
        const __m512 sc = scale ? _mm512_maskz_loadu_ps(km, scale + i) : _mm512_set1_ps(1.0f);
        const __m512 bi = bias ? _mm512_maskz_loadu_ps(km, bias + i) : _mm512_setzero_ps();
        __m256 half[2];
        for (int h = 0; h < 2; ++h) {
            const __m256i x0 = h ? _mm512_extracti64x4_epi64(a0, 1) : _mm512_castsi512_si256(a0);
            const __m256i x1 = h ? _mm512_extracti64x4_epi64(a1, 1) : _mm512_castsi512_si256(a1);
            const __m256i x2 = h ? _mm512_extracti64x4_epi64(a2, 1) : _mm512_castsi512_si256(a2);
            const __m512d d = _mm512_add_pd(
                _mm512_add_pd(_mm512_cvtepi32_pd(x0), _mm512_mul_pd(k256, _mm512_cvtepi32_pd(x1))),
                _mm512_mul_pd(k65536, _mm512_cvtepi32_pd(x2)));
            const __m256 s8 = h ? _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(sc), 1))
                                : _mm512_castps512_ps256(sc);
            const __m256 b8 = h ? _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(bi), 1))
                                : _mm512_castps512_ps256(bi);
            const __m512d t = _mm512_mul_pd(_mm512_cvtps_pd(s8), e2);
            half[h] = _mm256_add_ps(_mm512_cvtpd_ps(_mm512_mul_pd(d, t)), b8);
        }
        const __m512 out = _mm512_castpd_ps(_mm512_insertf64x4(
            _mm512_castpd256_pd512(_mm256_castps_pd(half[0])), _mm256_castps_pd(half[1]), 1));
        _mm512_mask_storeu_ps(y + i, km, out);
    }
}

/* 16 rows into a packed block: 64 bytes (16 groups) of each row at a time,
 * loaded under a byte mask (zeros past D and for padding rows), the 16 x 16
 * dwords transposed (unpack 32, unpack 64, two 128-bit lane shuffles), each
 * result -- one group of the 16 rows -- stored with its sign bits flipped. */
static void pack16_i8_avx512(const int8_t *const *rows, int64_t D, int64_t G, uint8_t *blk) {
    const __m512i x80 = _mm512_set1_epi8((char)0x80);
    for (int64_t c0 = 0; c0 < G; c0 += 16) {
        const int64_t nb = D - 4 * c0 < 64 ? D - 4 * c0 : 64;
        const __mmask64 km = nb >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << nb) - 1);
        __m512i v[16], t[16];
        for (int r = 0; r < 16; ++r)
            v[r] = rows[r] ? _mm512_maskz_loadu_epi8(km, (const void *)(rows[r] + 4 * c0))
                           : _mm512_setzero_si512();
        for (int i = 0; i < 8; ++i) {
            t[2 * i] = _mm512_unpacklo_epi32(v[2 * i], v[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_epi32(v[2 * i], v[2 * i + 1]);
        }
        for (int i = 0; i < 4; ++i) { /* v[4i + j]: dword 4L + j of rows 4i .. 4i+3, lane L */
            v[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
            v[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
            v[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
            v[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
        }
        for (int j = 0; j < 4; ++j) {
            const __m512i a0 = _mm512_shuffle_i32x4(v[j], v[4 + j], 0x44);
            const __m512i a1 = _mm512_shuffle_i32x4(v[j], v[4 + j], 0xEE);
            const __m512i b0 = _mm512_shuffle_i32x4(v[8 + j], v[12 + j], 0x44);
            const __m512i b1 = _mm512_shuffle_i32x4(v[8 + j], v[12 + j], 0xEE);
            t[j] = _mm512_shuffle_i32x4(a0, b0, 0x88);      /* dword j      */
            t[4 + j] = _mm512_shuffle_i32x4(a0, b0, 0xDD);  /* dword 4 + j  */
            t[8 + j] = _mm512_shuffle_i32x4(a1, b1, 0x88);  /* dword 8 + j  */
            t[12 + j] = _mm512_shuffle_i32x4(a1, b1, 0xDD); /* dword 12 + j */
        }
        const int64_t ng = G - c0 < 16 ? G - c0 : 16;
        for (int64_t g = 0; g < ng; ++g)
            _mm512_storeu_si512((void *)(blk + 64 * (c0 + g)), _mm512_xor_si512(t[g], x80));
    }
}

static const dre_qkernels dre__q_avx512_vnni_table = {DRE_PATH_AVX512, gemv_h_avx512,
                                                      score_i8p_vnni, pack16_i8_avx512};

#if defined(__clang__)
#  pragma clang attribute pop
#else
#  pragma GCC pop_options
#endif

#include <cpuid.h>

/* AVX512BW and AVX512-VNNI cpuid bits (the OS's ZMM state was checked before
 * the AVX-512 path was chosen); cpuid traps to the hypervisor in a VM, so
 * the answer is kept (a benign race: every thread computes the same). */
static int dre__cpu_avx512_vnni(void) {
    static volatile int known = -1;
    if (known < 0) {
        unsigned a = 0, b = 0, c = 0, d = 0;
        int ok = 0;
        if (__get_cpuid_max(0, 0) >= 7) {
            __cpuid_count(7, 0, a, b, c, d);
            ok = ((b >> 30) & 1u) && ((c >> 11) & 1u);
        }
        known = ok;
    }
    return known;
}

const dre_qkernels *dre__qkernels_avx512(void) {
    return dre__cpu_avx512_vnni() ? &dre__q_avx512_vnni_table : &dre__q_avx512_table;
}

#else /* not x86-64 */

const dre_qkernels *dre__qkernels_avx512(void) { return 0; }

#endif

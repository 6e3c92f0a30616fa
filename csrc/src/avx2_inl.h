/*
 * avx2_inl.h -- AVX2 helpers shared by the AVX2 kernel files.  Include it
 * only inside a target("avx2,fma,...") region (kernels_avx2.c,
 * kernels_q_avx2.c): the functions are static inline and compiled with
 * the includer's target.
 */
#ifndef DRE_AVX2_INL_H
#define DRE_AVX2_INL_H

#include <immintrin.h>

static inline __m256i tail_mask(int64_t rem) { /* rem in [0, 8) lanes on */
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)rem), lane);
}

/* [sum(v0), ..., sum(v7)], each sum of lanes l0..l7 in the order
 * ((l0+l1)+(l2+l3)) + ((l4+l5)+(l6+l7)). */
static inline __m256 reduce8(__m256 v0, __m256 v1, __m256 v2, __m256 v3,
                             __m256 v4, __m256 v5, __m256 v6, __m256 v7) {
    const __m256 q0 = _mm256_hadd_ps(_mm256_hadd_ps(v0, v1), _mm256_hadd_ps(v2, v3));
    const __m256 q1 = _mm256_hadd_ps(_mm256_hadd_ps(v4, v5), _mm256_hadd_ps(v6, v7));
    /* q0 = [v0 l0-3, v1 l0-3, v2 l0-3, v3 l0-3 | the same of l4-7]; q1 for v4..v7 */
    return _mm256_add_ps(_mm256_permute2f128_ps(q0, q1, 0x20), _mm256_permute2f128_ps(q0, q1, 0x31));
}

/* sum(v) in the same order as one lane of reduce8. */
static inline float reduce1(__m256 v) {
    const __m256 q = _mm256_hadd_ps(_mm256_hadd_ps(v, v), _mm256_hadd_ps(v, v));
    return _mm_cvtss_f32(_mm_add_ss(_mm256_castps256_ps128(q), _mm256_extractf128_ps(q, 1)));
}

#endif /* DRE_AVX2_INL_H */

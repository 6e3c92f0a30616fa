/*
 * half.c -- IEEE 754 binary16 ("float16") storage of weights.
 *
 * Weights of a GRU step stream from memory once per click: stored as
 * binary16 they take half the bytes (a 2-layer H=100 session then fits in a
 * 512 KB L2 with its candidate table), and every product is still formed and
 * summed in float32.  These two conversions are the portable definition;
 * numpy's astype(float16) rounds the same way, bit for bit for every
 * non-NaN value (a signalling NaN comes out quiet here, signalling there).
 */
#include "internal.h"

#include <string.h>

/* float32 -> binary16, round to nearest, ties to even (the IEEE default).
 * |x| >= 65520 becomes +-inf (65504 is the largest binary16), NaN stays NaN
 * (quiet, payload truncated), and values below the smallest subnormal
 * 2^-24 round to a signed zero or to that subnormal. */
static uint16_t f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    const uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    const uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) /* NaN: keep the top payload bits, force quiet */
        return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
    if (ax >= 0x477ff000u) /* >= 65520 (halfway above 65504) or inf */
        return (uint16_t)(sign | 0x7c00u);
    if (ax >= 0x38800000u) {
        /* normal result (|x| >= 2^-14): rebias the exponent 127 -> 15 and
         * round the 13 dropped mantissa bits to nearest even; a carry out
         * of the mantissa correctly bumps the exponent */
        const uint32_t odd = (ax >> 13) & 1u;
        return (uint16_t)(sign | ((ax - (112u << 23) + 0xfffu + odd) >> 13));
    }
    if (ax < 0x33000000u) /* < 2^-25: rounds to zero (2^-25 itself ties to even 0) */
        return sign;
    /* subnormal result m * 2^-24, m in [0, 1024]: shift the 24-bit
     * significand right and round to nearest even by hand */
    const uint32_t e = ax >> 23;                          /* 102 .. 112 */
    const uint32_t sig = (ax & 0x7fffffu) | 0x800000u;    /* value = sig * 2^(e-150) */
    const uint32_t shift = 126u - e;                      /* 14 .. 24: to units of 2^-24 */
    uint32_t m = sig >> shift;
    const uint32_t rest = sig & ((1u << shift) - 1u), half = 1u << (shift - 1u);
    if (rest > half || (rest == half && (m & 1u))) ++m; /* m == 1024 is 2^-14, the smallest normal */
    return (uint16_t)(sign | m);
}

dre_status dre_f32_to_f16(int64_t n, const float *src, uint16_t *dst) {
    if (n < 0) return DRE_ERR_SIZE;
    if (n == 0) return DRE_OK;
    if (src == NULL || dst == NULL) return DRE_ERR_NULL;
    for (int64_t i = 0; i < n; ++i) dst[i] = f32_to_f16(src[i]);
    return DRE_OK;
}

dre_status dre_f16_to_f32(int64_t n, const uint16_t *src, float *dst) {
    if (n < 0) return DRE_ERR_SIZE;
    if (n == 0) return DRE_OK;
    if (src == NULL || dst == NULL) return DRE_ERR_NULL;
    for (int64_t i = 0; i < n; ++i) dst[i] = dre__f16_to_f32(src[i]);
    return DRE_OK;
}

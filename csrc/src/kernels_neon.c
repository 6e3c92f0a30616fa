/*
 * kernels_neon.c -- NEON paths.
 *
 * aarch64: Advanced SIMD is part of the baseline ISA: no feature check and
 * no special flags are needed.  The algorithms mirror kernels_avx2.c with
 * 4-lane vectors.
 *
 * 32-bit ARM (ARMv7-A/AArch32; Raspberry Pi OS 32-bit, armeabi-v7a phones):
 * NEON is optional and Debian's armhf baseline (VFPv3-D16) lacks it, so the
 * kernels are compiled per function (gcc: target pragmas fpu=neon and
 * fpu=neon-vfpv4, like the AVX2 region of kernels_avx2.c), and platform.c
 * picks a table from the kernel's AT_HWCAP: NEON, and NEON with VFPv4 fused
 * multiply-add where present.  Both tables report DRE_PATH_NEON.  clang
 * (the Android NDK) only offers the NEON intrinsics when NEON is enabled
 * for the whole file (-mfpu=neon, the NDK's armeabi-v7a default; the VFPv4
 * table needs -mfpu=neon-vfpv4); without it the 32-bit NEON tables are not
 * built and the scalar path serves.
 *
 * The kernels common to all three tables are written once, over 4-lane
 * vectors, in kernels_neon_body.h, included once per table.
 */
#include "internal.h"

#if defined(__aarch64__) && defined(__ARM_NEON)
#  define DRE_NEON_A64 1
#elif defined(__arm__) && ((defined(__clang__) && defined(__ARM_NEON)) \
                           || (!defined(__clang__) && defined(__GNUC__) && defined(__ARM_FP)))
/* 32-bit ARM with hardware floating point (hard-float or softfp ABI) */
#  define DRE_NEON_A32 1
#  if !defined(__clang__) || defined(__ARM_FEATURE_FMA)
/* clang's arm_neon.h declares vfmaq_f32 only when the whole file is built
 * for VFPv4 (-mfpu=neon-vfpv4) */
#    define DRE_NEON_A32_VFPV4 1
#  endif
#endif

#if defined(DRE_NEON_A64) || defined(DRE_NEON_A32)
#  include <arm_neon.h>
#  include <string.h>
#endif

#if defined(DRE_NEON_A64)

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

#define NEON(name) name##_neon
#define NEON_FUSED 1
#include "kernels_neon_body.h"
#undef NEON
#undef NEON_FUSED

static const dre_kernels dre__neon_table = {
    DRE_PATH_NEON, NEON_MR, gemm_tile_neon, gemv_neon, gru_gates_neon,
    vexp_neon, vtanh_neon, gemv_f16_neon,
};

const dre_kernels *dre__kernels_neon(void) { return &dre__neon_table; }

#elif defined(DRE_NEON_A32)

#define NEON_A32_MR 4

/* NEON, VFPv3: no fused multiply-add */
#if !defined(__clang__)
#  pragma GCC push_options
#  pragma GCC target("fpu=neon")
#endif
#define NEON(name) name##_neon_a32
#define NEON_FUSED 0
#include "kernels_neon_body.h"
#undef NEON
#undef NEON_FUSED
static const dre_kernels dre__neon_a32_table = {
    DRE_PATH_NEON, NEON_A32_MR, gemm_tile_neon_a32, gemv_neon_a32, gru_gates_neon_a32,
    vexp_neon_a32, vtanh_neon_a32, gemv_f16_neon_a32,
};
#if !defined(__clang__)
#  pragma GCC pop_options
#endif

const dre_kernels *dre__kernels_neon(void) { return &dre__neon_a32_table; }

/* NEON with VFPv4: fused multiply-add, binary16 conversion */
#if defined(DRE_NEON_A32_VFPV4)
#if !defined(__clang__)
#  pragma GCC push_options
#  pragma GCC target("fpu=neon-vfpv4")
#endif
#define NEON(name) name##_neon_a32_vfpv4
#define NEON_FUSED 1
#include "kernels_neon_body.h"
#undef NEON
#undef NEON_FUSED
static const dre_kernels dre__neon_a32_vfpv4_table = {
    DRE_PATH_NEON, NEON_A32_MR, gemm_tile_neon_a32_vfpv4, gemv_neon_a32_vfpv4,
    gru_gates_neon_a32_vfpv4, vexp_neon_a32_vfpv4, vtanh_neon_a32_vfpv4,
    gemv_f16_neon_a32_vfpv4,
};
#if !defined(__clang__)
#  pragma GCC pop_options
#endif

const dre_kernels *dre__kernels_neon_vfpv4(void) { return &dre__neon_a32_vfpv4_table; }
#endif /* DRE_NEON_A32_VFPV4 */

#else /* no NEON in this build */

const dre_kernels *dre__kernels_neon(void) { return 0; }

#endif

#if !defined(DRE_NEON_A32_VFPV4)
const dre_kernels *dre__kernels_neon_vfpv4(void) { return 0; }
#endif

/*
 * internal.h -- what the kernel files share; not installed, not public.
 *
 * The dispatch table holds the few primitives that have SIMD variants.
 * Everything else (GRU time loop, losses, optimisers) is portable C written
 * over these primitives, so each algorithm is written once.
 */
#ifndef DRE_INTERNAL_H
#define DRE_INTERNAL_H

#include "deeprec_edge.h"
#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__) || defined(__clang__)
#  define DRE_RESTRICT __restrict__
#  define DRE_HIDDEN __attribute__((visibility("hidden")))
#else
#  define DRE_RESTRICT
#  define DRE_HIDDEN
#endif

/* Packed-B panel width, the same for every path, so packing code is shared:
 * a packed B of K rows and N columns is ceil(N/16) panels, each K x 16
 * floats (row k of a panel = 16 consecutive columns, zero-padded). */
#define DRE_NR 16

typedef struct dre_kernels {
    dre_path path;
    /* rows of A per micro-tile (<= DRE_MR_MAX) */
    int mr;
    /* C tile [mr x nr] (mr <= this->mr, nr <= DRE_NR):
     *   acc[i][j] = sum_k A[i*rsa + k*csa] * Bp[k*DRE_NR + j]
     *   C[i*ldc + j] = alpha*acc + (beta == 0 ? 0 : beta*C[i*ldc + j])
     *                  + (bias ? bias[j] : 0)
     * (evaluated as (alpha*acc + beta*C) + bias). */
    void (*gemm_tile)(int64_t mr, int64_t nr, int64_t K,
                      const float *A, int64_t rsa, int64_t csa,
                      const float *Bp, float alpha, float beta,
                      const float *bias, float *C, int64_t ldc);
    /* y[i] = W[r*ldw : r*ldw + D] . x + (bias ? bias[r] : 0), r = idx ? idx[i] : i,
     * for i in [0, n).  idx entries are trusted (checked by the caller). */
    void (*gemv)(int64_t n, int64_t D, const float *W, int64_t ldw,
                 const int32_t *idx, const float *x, const float *bias, float *y);
    /* GRU gate math for one sequence and one step.
     * gi = W_ih x + b_ih (3H, gate order r,z,n), gh = W_hh h + b_hh (3H).
     * h_out[j] = (1-z)*n + z*h[j]; h_out may alias h.
     * cache (NULL: skip) receives r[H], z[H], n[H], ghn[H] (= gh[2H + j]). */
    void (*gru_gates)(int64_t H, const float *gi, const float *gh,
                      const float *h, float *h_out, float *cache);
    /* x[i] = exp(x[i]) and x[i] = tanh(x[i]) in place, i in [0, n): the
     * softmax of the sampled loss and the head's activation. */
    void (*vexp)(int64_t n, float *x);
    void (*vtanh)(int64_t n, float *x);
    /* gemv with IEEE binary16 weights (float32 math):
     * y[i] = sum_k f32(W[i*ldw + k]) * x[k] + (bias ? bias[i] : 0), i in [0, n). */
    void (*gemv_f16)(int64_t n, int64_t D, const uint16_t *W, int64_t ldw,
                     const float *x, const float *bias, float *y);
} dre_kernels;

#define DRE_MR_MAX 16

/* The active table (initialised once, thread-safe). */
DRE_HIDDEN const dre_kernels *dre__kernels(void);

/* Per-path tables; a path whose ISA the build lacks returns NULL. */
DRE_HIDDEN const dre_kernels *dre__kernels_scalar(void);
DRE_HIDDEN const dre_kernels *dre__kernels_avx2(void);
DRE_HIDDEN const dre_kernels *dre__kernels_neon(void);
DRE_HIDDEN const dre_kernels *dre__kernels_avx512(void);
/* 32-bit ARM only: NEON with VFPv4 fused multiply-add (dre__kernels_neon()
 * is NEON without it there).  Which of them a CPU may run is platform.c's
 * AT_HWCAP check; both report DRE_PATH_NEON. */
DRE_HIDDEN const dre_kernels *dre__kernels_neon_vfpv4(void);

/* AVX2 primitives that the AVX-512 table reuses (the gate math is
 * latency-bound: a 512-bit version bought nothing).  The AVX-512 gemv, ~5%
 * faster on L2-resident weights, is its own, tail rows included: a row's
 * score must not depend on where it sits in the list. */
DRE_HIDDEN void dre__gemv_avx2(int64_t n, int64_t D, const float *W, int64_t ldw,
                               const int32_t *idx, const float *x, const float *bias, float *y);
DRE_HIDDEN void dre__gru_gates_avx2(int64_t H, const float *gi, const float *gh,
                                    const float *h, float *h_out, float *cache);
DRE_HIDDEN void dre__vexp_avx2(int64_t n, float *x);
DRE_HIDDEN void dre__vtanh_avx2(int64_t n, float *x);
DRE_HIDDEN void dre__gemv_f16_avx2(int64_t n, int64_t D, const uint16_t *W, int64_t ldw,
                                   const float *x, const float *bias, float *y);

/* ---- IEEE 754 binary16 <-> float32, portable (the readable reference) ---- */

/* Exact: every binary16 value (zeros, subnormals, normals, infinities)
 * is a float32; a NaN stays a NaN with its payload shifted up. */
static inline float dre__f16_to_f32(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    uint32_t bits;
    if (e == 0x1fu) {
        bits = sign | 0x7f800000u | (m << 13);           /* inf / NaN */
    } else if (e != 0) {
        bits = sign | ((e + 112u) << 23) | (m << 13);     /* normal: rebias 15 -> 127 */
    } else {
        /* zero or subnormal m * 2^-24: exact in float32 */
        union { float f; uint32_t u; } v;
        v.f = (float)m * 5.9604644775390625e-8f;
        bits = sign | v.u;
    }
    union { uint32_t u; float f; } o;
    o.u = bits;
    return o.f;
}


/* ---- packed GEMM (sgemm.c) ---- */

/* Floats of a packed B with K rows and N columns. */
DRE_HIDDEN size_t dre__packb_floats(int64_t K, int64_t N);

/* Pack logical B [K][N]: element (k, n) is B[k*ldb + n], or B[n*ldb + k]
 * when trans_b. */
DRE_HIDDEN void dre__packb(int trans_b, int64_t K, int64_t N,
                           const float *B, int64_t ldb, float *Bp);

/* C[M][N] = alpha * A B + beta * C with A(i,k) = A[i*rsa + k*csa] and B
 * packed by dre__packb.  beta == 0 does not read C.  K == 0 gives
 * C = beta*C. */
DRE_HIDDEN void dre__gemm_packed(int64_t M, int64_t N, int64_t K, float alpha,
                                 const float *A, int64_t rsa, int64_t csa,
                                 const float *Bp, float beta, float *C, int64_t ldc,
                                 const dre_kernels *kt);
/* The same plus a row vector: C = (alpha A B + beta C) + bias[j] for every
 * row (bias NULL: none), without a pass over C to set it up. */
DRE_HIDDEN void dre__gemm_packed_bias(int64_t M, int64_t N, int64_t K, float alpha,
                                      const float *A, int64_t rsa, int64_t csa,
                                      const float *Bp, float beta, const float *bias,
                                      float *C, int64_t ldc, const dre_kernels *kt);

/* ---- size arithmetic with overflow checks ---- */

#if SIZE_MAX / 8 > INT64_MAX
#  error "size_t wider than 64 bits: dre__mul3 must check its intermediate product"
#endif

/* *out = a*b (and *c) as size_t; returns 0 on overflow or a negative factor. */
static inline int dre__mul2(size_t *out, int64_t a, int64_t b) {
    if (a < 0 || b < 0) return 0;
    if (a != 0 && (uint64_t)b > (uint64_t)(SIZE_MAX / 8) / (uint64_t)a) return 0;
    *out = (size_t)a * (size_t)b;
    return 1;
}
static inline int dre__mul3(size_t *out, int64_t a, int64_t b, int64_t c) {
    size_t ab;
    if (!dre__mul2(&ab, a, b) || c < 0) return 0;
    /* ab <= SIZE_MAX / 8 (dre__mul2), which fits in int64_t (checked below);
     * a run-time test would be always false and -Wtype-limits says so on
     * 32-bit targets. */
    return dre__mul2(out, (int64_t)ab, c);
}
static inline int dre__add(size_t *out, size_t a, size_t b) {
    if (a > SIZE_MAX / 8 || b > SIZE_MAX / 8) return 0;
    *out = a + b;
    return 1;
}

/* Round a byte count up to a multiple of 64 (cache-line separation of
 * workspace regions). */
static inline size_t dre__round64(size_t n) { return (n + 63u) & ~(size_t)63u; }

/* Workspaces need no particular alignment from the caller: each kernel
 * rounds the base up to 64 bytes, and every *_workspace_size() includes
 * this slack (for a non-zero layout). */
#define DRE_WS_SLACK 63u
static inline char *dre__ws_align(void *workspace) {
    const uintptr_t p = (uintptr_t)workspace;
    return (char *)workspace + ((64u - (unsigned)(p & 63u)) & 63u);
}
/* *out = total + slack (0 stays 0); 0 on overflow. */
static inline int dre__ws_total(size_t *out, size_t total) {
    if (total == 0) { *out = 0; return 1; }
    return dre__add(out, total, DRE_WS_SLACK);
}

#endif /* DRE_INTERNAL_H */

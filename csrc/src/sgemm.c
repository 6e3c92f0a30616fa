/*
 * sgemm.c -- packed GEMM shared by every path.
 *
 * B is packed once into panels of DRE_NR columns (K x 16 floats each,
 * zero-padded), so one micro-kernel per path (kernels_*.c: gemm_tile)
 * serves all four transpose combinations: A is read through (row, column)
 * strides, op(B) through the packing.  Inside the GRU the weights are
 * packed once per call and reused at every time step.
 */
#include "internal.h"

#include <string.h>

size_t dre__packb_floats(int64_t K, int64_t N) {
    size_t out;
    const int64_t panels = (N + DRE_NR - 1) / DRE_NR;
    if (!dre__mul3(&out, panels, K, DRE_NR)) return 0;
    return out;
}

void dre__packb(int trans_b, int64_t K, int64_t N, const float *B, int64_t ldb, float *Bp) {
    for (int64_t j0 = 0; j0 < N; j0 += DRE_NR) {
        const int64_t nr = (N - j0 < DRE_NR) ? N - j0 : DRE_NR;
        float *panel = Bp + (j0 / DRE_NR) * K * DRE_NR;
        for (int64_t k = 0; k < K; ++k) {
            float *dst = panel + k * DRE_NR;
            if (!trans_b) {
                const float *src = B + k * ldb + j0;
                memcpy(dst, src, (size_t)nr * sizeof(float));
            } else {
                for (int64_t j = 0; j < nr; ++j) dst[j] = B[(j0 + j) * ldb + k];
            }
            for (int64_t j = nr; j < DRE_NR; ++j) dst[j] = 0.0f;
        }
    }
}

/* Blocking (BLIS-style, sized for a 32-48 KB L1 and a >= 1 MB L2):
 *
 *   for each K block of DRE_KC rows           (b_eff: later blocks accumulate)
 *     for each column block of DRE_NC columns (a KC x NC slice of packed B,
 *                                              256 KB, stays in L2)
 *       for each micro-row of mr rows of A    (packed: an mr x KC micro-panel,
 *                                              <= 16 KB, stays in L1)
 *         for each 16-wide panel in the block: one micro-kernel call
 *
 * The A micro-panel is copied into a small stack buffer in k-major order
 * (Ap[k*mr + i]), so the micro-kernel reads it with unit row stride and
 * column stride mr whatever the layout of A: for a transposed A (the
 * dW += dG^T X products of the backward passes) this turns a walk with a
 * row-sized stride at every k into a contiguous one, and the copy is
 * amortised over the NC/16 panels of the column block.  A row-major A is
 * read in place: its mr rows are contiguous streams the prefetchers follow,
 * and packing it measured slower. */
#define DRE_KC 256
#define DRE_NC 256

/* Ap[k*ldp + i] = A[i*rsa + k*csa] for i < m, k < kb. */
static void pack_a(int64_t m, int64_t kb, const float *DRE_RESTRICT A, int64_t rsa,
                   int64_t csa, float *DRE_RESTRICT Ap, int64_t ldp) {
    if (rsa == 1) {
        for (int64_t k = 0; k < kb; ++k) memcpy(Ap + k * ldp, A + k * csa, (size_t)m * sizeof(float));
    } else {
        for (int64_t k = 0; k < kb; ++k) {
            const float *a = A + k * csa;
            float *d = Ap + k * ldp;
            for (int64_t i = 0; i < m; ++i) d[i] = a[i * rsa];
        }
    }
}

void dre__gemm_packed_bias(int64_t M, int64_t N, int64_t K, float alpha,
                           const float *A, int64_t rsa, int64_t csa,
                           const float *Bp, float beta, const float *bias,
                           float *C, int64_t ldc, const dre_kernels *kt) {
    /* 64-byte aligned micro-panel of A: at most DRE_MR_MAX x DRE_KC floats */
    float ap_buf[DRE_MR_MAX * DRE_KC + 16];
    float *Ap = (float *)(((uintptr_t)ap_buf + 63u) & ~(uintptr_t)63u);
    const int64_t mr = kt->mr;
    for (int64_t k0 = 0; k0 < K || (K == 0 && k0 == 0); k0 += DRE_KC) {
        const int64_t kb = (K - k0 < DRE_KC) ? K - k0 : DRE_KC;
        const float b_eff = (k0 == 0) ? beta : 1.0f; /* later blocks accumulate */
        const float *bias_k = (k0 == 0) ? bias : NULL; /* added once */
        for (int64_t jc = 0; jc < N; jc += DRE_NC) {
            const int64_t nc = (N - jc < DRE_NC) ? N - jc : DRE_NC;
            /* a row-major A is read in place (packing it measured slower) */
            const int pack = kb > 0 && csa != 1;
            for (int64_t i0 = 0; i0 < M; i0 += mr) {
                const int64_t m = (M - i0 < mr) ? M - i0 : mr;
                const float *a = A + i0 * rsa + k0 * csa;
                int64_t ars = rsa, acs = csa;
                if (pack) {
                    pack_a(m, kb, a, rsa, csa, Ap, mr);
                    a = Ap; ars = 1; acs = mr;
                }
                for (int64_t j0 = jc; j0 < jc + nc; j0 += DRE_NR) {
                    const int64_t nr = (N - j0 < DRE_NR) ? N - j0 : DRE_NR;
                    const float *panel = Bp + (j0 / DRE_NR) * K * DRE_NR + k0 * DRE_NR;
                    kt->gemm_tile(m, nr, kb, a, ars, acs, panel, alpha, b_eff,
                                  bias_k ? bias_k + j0 : NULL, C + i0 * ldc + j0, ldc);
                }
            }
        }
        if (K == 0) break;
    }
}

void dre__gemm_packed(int64_t M, int64_t N, int64_t K, float alpha,
                      const float *A, int64_t rsa, int64_t csa,
                      const float *Bp, float beta, float *C, int64_t ldc,
                      const dre_kernels *kt) {
    dre__gemm_packed_bias(M, N, K, alpha, A, rsa, csa, Bp, beta, NULL, C, ldc, kt);
}

size_t dre_sgemm_workspace_size(int64_t N, int64_t K) {
    if (N < 0 || K < 0) return 0;
    size_t f = dre__packb_floats(K, N), bytes, total;
    if (!dre__mul2(&bytes, (int64_t)f, (int64_t)sizeof(float))) return 0;
    if (!dre__ws_total(&total, bytes)) return 0;
    return total;
}

dre_status dre_sgemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K,
                     float alpha, const float *A, int64_t lda,
                     const float *B, int64_t ldb, float beta,
                     float *C, int64_t ldc,
                     void *workspace, size_t workspace_bytes) {
    size_t tmp;
    if (M < 0 || N < 0 || K < 0) return DRE_ERR_SIZE;
    if (!dre__mul2(&tmp, M, K) || !dre__mul2(&tmp, K, N) || !dre__mul2(&tmp, M, N))
        return DRE_ERR_SIZE;
    if (M == 0 || N == 0) return DRE_OK;
    /* leading dimensions must cover a stored row */
    if (ldc < N) return DRE_ERR_SIZE;
    if (K > 0) {
        if (lda < (trans_a ? M : K)) return DRE_ERR_SIZE;
        if (ldb < (trans_b ? K : N)) return DRE_ERR_SIZE;
        if (A == NULL || B == NULL) return DRE_ERR_NULL;
    }
    if (C == NULL) return DRE_ERR_NULL;
    const size_t need = dre_sgemm_workspace_size(N, K);
    if (need == 0 && K > 0) return DRE_ERR_SIZE;
    if (need > 0 && (workspace == NULL || workspace_bytes < need)) return DRE_ERR_WORKSPACE;

    float *Bp = need > 0 ? (float *)dre__ws_align(workspace) : NULL;
    if (K > 0) dre__packb(trans_b, K, N, B, ldb, Bp);
    if (K == 0) {
        /* op(A) op(B) is the zero matrix: C = beta * C */
        for (int64_t i = 0; i < M; ++i)
            for (int64_t j = 0; j < N; ++j)
                C[i * ldc + j] = (beta == 0.0f) ? 0.0f : beta * C[i * ldc + j];
        return DRE_OK;
    }
    const int64_t rsa = trans_a ? 1 : lda, csa = trans_a ? lda : 1;
    dre__gemm_packed(M, N, K, alpha, A, rsa, csa, Bp, beta, C, ldc, dre__kernels());
    return DRE_OK;
}

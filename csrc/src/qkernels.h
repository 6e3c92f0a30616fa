/*
 * qkernels.h -- compressed-row primitives (binary16 and int8 rows with
 * per-row scales); not installed, not public.
 *
 * A second dispatch table beside dre_kernels (internal.h), chosen from the
 * same active path: dre__qkernels() returns the table of the path
 * dre__kernels() runs (or the scalar table where a path has no variant
 * here).  Each primitive computes, for i in [0, n) and r = idx ? idx[i] : i,
 *
 *     dot = sum_k f32(W[r*ldw + k]) * x[k]          (the path's fixed order)
 *     y[i] = (scale ? dot * scale[r] : dot) + (bias ? bias[r] : 0)
 *
 * f32() of a binary16 or int8 value is exact.  The multiply and the add after
 * the dot product are separate roundings on every path (no FMA there), and a
 * row's dot product is summed in the same order wherever it sits in the list
 * -- in a block of rows or in the tail -- so a row scores the same bits in a
 * full table, from a table offset and in a candidate list (the top-k tie
 * rule and full-vs-candidate ranking depend on that).  idx entries are
 * trusted (checked by the caller).
 */
#ifndef DRE_QKERNELS_H
#define DRE_QKERNELS_H

#include "internal.h"

typedef void (*dre_gemv_i8_fn)(int64_t n, int64_t D, const int8_t *W, int64_t ldw,
                               const int32_t *idx, const float *scale, const float *x,
                               const float *bias, float *y);
typedef void (*dre_gemv_h_fn)(int64_t n, int64_t D, const uint16_t *W, int64_t ldw,
                              const int32_t *idx, const float *scale, const float *x,
                              const float *bias, float *y);

typedef struct dre_qkernels {
    dre_path path;
    dre_gemv_i8_fn gemv_i8;  /* int8 rows */
    dre_gemv_h_fn gemv_h;    /* binary16 rows (row list and scales, unlike gemv_f16) */
} dre_qkernels;

/* The table of the active path. */
DRE_HIDDEN const dre_qkernels *dre__qkernels(void);

/* Per-path tables; NULL where the build has no such variant. */
DRE_HIDDEN const dre_qkernels *dre__qkernels_scalar(void);
DRE_HIDDEN const dre_qkernels *dre__qkernels_avx2(void);
DRE_HIDDEN const dre_qkernels *dre__qkernels_avx512(void);
DRE_HIDDEN const dre_qkernels *dre__qkernels_neon(void);

/* The scalar primitives (other tables may reuse them). */
DRE_HIDDEN void dre__gemv_i8_scalar(int64_t n, int64_t D, const int8_t *W, int64_t ldw,
                                    const int32_t *idx, const float *scale, const float *x,
                                    const float *bias, float *y);
DRE_HIDDEN void dre__gemv_h_scalar(int64_t n, int64_t D, const uint16_t *W, int64_t ldw,
                                   const int32_t *idx, const float *scale, const float *x,
                                   const float *bias, float *y);

/* Argument checks of the batch-1 GRU steps (gru.c); *run = 0: H == 0. */
DRE_HIDDEN dre_status dre__step_check(int64_t I, int64_t H, const float *x, const float *h,
                                      const void *W_ih, const void *W_hh,
                                      const float *b_ih, const float *b_hh, const float *h_out,
                                      const void *workspace, size_t workspace_bytes, int *run);

/* ---- the selection loop of dre_score_topk, over any scorer (score.c) ---- */

/* Writes the scores of rows base .. base+c-1 of the candidate list (c <= 256)
 * into buf; ci = the list's entries there (NULL: rows base .. base+c-1). */
typedef void (*dre_score_chunk_fn)(const void *ctx, int64_t base, int64_t c,
                                   const int32_t *ci, float *buf);

/* The k best of n scored candidates (idx NULL: rows 0..n-1), excluding rows
 * with exclude[r] != 0; arguments already validated, k >= 1, n >= 1.  The
 * order, outputs and *n_out are those of dre_score_topk. */
DRE_HIDDEN void dre__topk_select(int64_t n, const int32_t *idx, const uint8_t *exclude,
                                 int64_t k, dre_score_chunk_fn score, const void *ctx,
                                 int32_t *top_idx, float *top_score, int64_t *n_out);

#endif /* DRE_QKERNELS_H */

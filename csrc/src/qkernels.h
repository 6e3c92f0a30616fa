/*
 * qkernels.h -- compressed-row primitives (binary16 rows with optional
 * per-row scales; int8 rows, exactly in integers, below); not installed,
 * not public.
 *
 * A second dispatch table beside dre_kernels (internal.h), chosen from the
 * same active path: dre__qkernels() returns the table of the path
 * dre__kernels() runs (or the scalar table where a path has no variant
 * here).  gemv_h computes, for i in [0, n) and r = idx ? idx[i] : i,
 *
 *     dot = sum_k f32(W[r*ldw + k]) * x[k]          (the path's fixed order)
 *     y[i] = (scale ? dot * scale[r] : dot) + (bias ? bias[r] : 0)
 *
 * f32() of a binary16 value is exact.  The multiply and the add after
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

typedef void (*dre_gemv_h_fn)(int64_t n, int64_t D, const uint16_t *W, int64_t ldw,
                              const int32_t *idx, const float *scale, const float *x,
                              const float *bias, float *y);

/* ---- int8 tables scored exactly in integers (dre_score_rows on DRE_DTYPE_I8
 * and DRE_DTYPE_I8P) ----
 *
 * The user vector in fixed point: with m = max|u[k]| = f * 2^x (frexp, f in
 * [0.5, 1)), U[k] = rint(u[k] * 2^(22 - x)) (|U| <= 2^22) and e2 = 2^(x - 22);
 * m == 0: U = 0, e2 = 1.  The score of row r (values q[r][k], scale s, bias b):
 *
 *     I = sum_k q[r][k] * U[k]                       (exact, in integers)
 *     y = (float)((double)I * ((double)s * e2)) + b  (one double rounding, one
 *                                                     float rounding, one add)
 *
 * I is an exact integer however it is summed, so every path, every limb
 * decomposition and every position of a row in a list gives the same bits.
 * The packed layout (DRE_DTYPE_I8P, dre_pack_rows_i8): blocks of 16 rows;
 * in a block, G = ceil(D/4) groups of 64 bytes; group g holds, for the 16
 * rows in order, the 4 bytes q[r][4g .. 4g+3] + 128 (columns past D and rows
 * past N: q = 0).  A kernel scores whole blocks of that layout. */
#define DRE_I8P_ROWS 16
#define DRE_I8P_GMAX 256 /* the limbs live on the stack: D <= 1024 (else exact scalar) */

/* Groups of 4 columns in a packed row (G). */
static inline int64_t dre__i8p_groups(int64_t D) { return D / 4 + (D % 4 != 0); }

/* Row r's 4 bytes of group 0 in a packed table of G groups (group g: + 64 g). */
static inline const uint8_t *dre__i8p_row(const uint8_t *P, int64_t G, int64_t r) {
    return P + (r / DRE_I8P_ROWS) * 64 * G + (r % DRE_I8P_ROWS) * 4;
}

typedef struct dre_i8p_user {
    int64_t G;         /* groups of 4 columns */
    double e2;         /* 2^(x - 22) */
    const int32_t *U;  /* [4G]: the fixed-point user vector, 0 past D */
    /* U = l8[0] + 256 l8[1] + 65536 l8[2], digits in [-128, 127]: word g of
     * l8[j] holds the digits of columns 4g .. 4g+3 (byte b: column 4g+b) */
    const int32_t *l8; /* [3][G] */
    int32_t c8[3];     /* 128 * sum of the digits of l8[j] (the +128 of the bytes) */
    /* U = l16[0] + 4096 l16[1], l16[0] in [0, 4096), l16[1] in [-1024, 1024]:
     * word g of l16[j] holds 4 int16 digits (columns 4g .. 4g+3) */
    const int64_t *l16; /* [2][G] */
    int32_t c16[2];
} dre_i8p_user;

/* y[i] = score of row i of the packed blocks at P (i < n; ceil(n/16) blocks
 * read); scale, bias: [n] (NULL: 1, 0). */
typedef void (*dre_score_i8p_fn)(int64_t n, const uint8_t *P, const dre_i8p_user *u,
                                 const float *scale, const float *bias, float *y);

/* The final step every path shares (written once so it is one expression). */
static inline float dre__i8p_finish(double I, float s, double e2, float b) {
    const double t = (double)s * e2; /* exact: e2 is a power of two */
    const float y = (float)(I * t);
    return y + b;
}

/* Packs 16 rows of a row-major int8 table (rows[t], D columns; NULL: a
 * padding row) into one block of G = ceil(D/4) groups (the layout above). */
typedef void (*dre_pack16_i8_fn)(const int8_t *const *rows, int64_t D, int64_t G, uint8_t *blk);

typedef struct dre_qkernels {
    dre_path path;
    dre_gemv_h_fn gemv_h;    /* binary16 rows (row list and scales, unlike gemv_f16) */
    dre_score_i8p_fn score_i8p; /* packed int8 blocks, exact (above) */
    dre_pack16_i8_fn pack16_i8; /* 16 rows into a packed block */
} dre_qkernels;

/* The table of the active path. */
DRE_HIDDEN const dre_qkernels *dre__qkernels(void);

/* Per-path tables; NULL where the build has no such variant. */
DRE_HIDDEN const dre_qkernels *dre__qkernels_scalar(void);
DRE_HIDDEN const dre_qkernels *dre__qkernels_avx2(void);
DRE_HIDDEN const dre_qkernels *dre__qkernels_avx512(void);
DRE_HIDDEN const dre_qkernels *dre__qkernels_neon(void);

/* The scalar primitives (other tables may reuse them). */
DRE_HIDDEN void dre__score_i8p_scalar(int64_t n, const uint8_t *P, const dre_i8p_user *u,
                                      const float *scale, const float *bias, float *y);
DRE_HIDDEN void dre__pack16_i8_scalar(const int8_t *const *rows, int64_t D, int64_t G,
                                     uint8_t *blk);
DRE_HIDDEN void dre__score_i8p_avx2(int64_t n, const uint8_t *P, const dre_i8p_user *u,
                                    const float *scale, const float *bias, float *y);
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

/*
 * deeprec_edge.h -- public C99 API of the deeprec-edge core.
 *
 * One header, no Python dependency: an Android or iOS app can link the
 * library directly.  Conventions that hold for every function:
 *
 *  - Every exported name starts with dre_ / DRE_.
 *  - float32 everywhere, row-major, contiguous unless a leading dimension is
 *    passed.  Sizes are int64_t; a negative size is DRE_ERR_SIZE.
 *  - Memory is owned by the caller.  Kernels that need scratch take a
 *    `workspace` pointer and its size in bytes; the matching
 *    *_workspace_size() function says how much is needed.  No kernel calls
 *    malloc.  The workspace needs no particular alignment.
 *  - Every index read from an input array (lengths, target columns, row
 *    lists) is checked before any memory is touched: an out-of-range index
 *    returns DRE_ERR_INDEX and leaves every output untouched.
 *  - Outputs documented as "accumulated" are added to (+=), so gradients of
 *    several windows or batches can be summed without a copy; outputs
 *    documented as "overwritten" are written in full.
 *  - NaN/Inf policy: kernels do not scan their inputs for non-finite values
 *    (that would cost as much as the kernel).  Non-finite inputs propagate
 *    through the arithmetic per IEEE 754 and never cause an out-of-bounds
 *    access or a crash.  Top-k treats a NaN score as lower than every other
 *    score.  The Python runtime validates model files for finite values at
 *    load time.
 *  - All kernels are single-threaded and reentrant: different threads may
 *    call them concurrently on different output buffers.
 *
 * Model semantics (PyTorch nn.GRU), gate order r, z, n in stacked weights:
 *   r  = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
 *   z  = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
 *   n  = tanh(W_in x + b_in + r * (W_hn h + b_hn))
 *   h' = (1 - z) * n + z * h
 */
#ifndef DEEPREC_EDGE_H
#define DEEPREC_EDGE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#  if defined(DRE_BUILD_SHARED)
#    define DRE_API __declspec(dllexport)
#  else
#    define DRE_API
#  endif
#elif defined(__GNUC__) || defined(__clang__)
#  define DRE_API __attribute__((visibility("default")))
#else
#  define DRE_API
#endif

#define DRE_VERSION_MAJOR 0
#define DRE_VERSION_MINOR 1
#define DRE_VERSION_PATCH 0

/* ------------------------------------------------------------------------ */
/* Status codes                                                              */
/* ------------------------------------------------------------------------ */

typedef enum dre_status {
    DRE_OK = 0,
    DRE_ERR_NULL = 1,      /* a required pointer is NULL                     */
    DRE_ERR_SIZE = 2,      /* a size is negative, or a product overflows     */
    DRE_ERR_INDEX = 3,     /* an index or length read from an array is out of range */
    DRE_ERR_WORKSPACE = 4, /* workspace smaller than *_workspace_size()      */
    DRE_ERR_ARG = 5,       /* an enum, flag or hyperparameter is invalid     */
    DRE_ERR_UNSUPPORTED = 6 /* the requested SIMD path is not available here */
} dre_status;

/* A static, human-readable description of a status ("ok", "null pointer" ...). */
DRE_API const char *dre_status_to_string(dre_status status);

/* ------------------------------------------------------------------------ */
/* Kernel paths (run-time dispatch)                                          */
/* ------------------------------------------------------------------------ */

typedef enum dre_path {
    DRE_PATH_SCALAR = 0, /* portable C, the readable specification; always available */
    DRE_PATH_AVX2 = 1,   /* x86-64 with AVX2 + FMA (cpuid) and OS-saved YMM state (xgetbv) */
    DRE_PATH_NEON = 2,   /* aarch64 (NEON is baseline there) */
    DRE_PATH_AVX512 = 3  /* x86-64 with AVX-512F (+ the AVX2/FMA path's needs) and
                            OS-saved ZMM state; GEMM tiles in 512-bit registers */
} dre_path;

/* The path the kernels use now.  Decided once, on first use: the best path
 * the CPU supports, or DRE_PATH_SCALAR when the environment variable
 * DEEPREC_EDGE_FORCE_SCALAR is set to a non-empty value other than "0". */
DRE_API dre_path dre_active_path(void);

/* Name of a path: "scalar", "avx2", "neon", "avx512"; "unknown" otherwise. */
DRE_API const char *dre_path_name(dre_path path);

/* 1 if this build and CPU can run `path`, else 0. */
DRE_API int dre_path_supported(dre_path path);

/* Switch every kernel to `path` (for tests and benchmarks).  Returns
 * DRE_ERR_UNSUPPORTED if the CPU or build cannot run it.  Not meant to be
 * called while other threads are inside kernels. */
DRE_API dre_status dre_set_path(dre_path path);

/* ------------------------------------------------------------------------ */
/* SGEMM                                                                     */
/* ------------------------------------------------------------------------ */

/* Bytes of workspace dre_sgemm needs for an N-column, K-deep product
 * (B is packed into it).  0 on overflow or negative sizes. */
DRE_API size_t dre_sgemm_workspace_size(int64_t N, int64_t K);

/* C[M][N] = alpha * op(A) op(B) + beta * C, op(X) = X or X^T.
 * op(A) is M x K, op(B) is K x N; lda/ldb/ldc are row strides of the
 * stored (untransposed) arrays.  beta == 0 overwrites C without reading it. */
DRE_API dre_status dre_sgemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K,
                             float alpha, const float *A, int64_t lda,
                             const float *B, int64_t ldb, float beta,
                             float *C, int64_t ldc,
                             void *workspace, size_t workspace_bytes);

/* ------------------------------------------------------------------------ */
/* GRU layer                                                                 */
/* ------------------------------------------------------------------------ */
/*
 * Layouts: x [T][B][I] (time-major), y [T][B][H], h0 and h_n [B][H],
 * W_ih [3H][I], W_hh [3H][H], b_ih [3H], b_hh [3H] (gate order r, z, n),
 * lengths [B] int32 with 0 <= lengths[b] <= T (NULL: every sequence has T
 * steps).  Step t of sequence b runs only if t < lengths[b]; later steps
 * leave its state untouched and write zeros to y[t][b].
 */

/* Floats in the cache that a forward pass keeps for backward: T*B*4H. */
DRE_API size_t dre_gru_cache_floats(int64_t T, int64_t B, int64_t H);

/* Workspace bytes of dre_gru_forward (0 on overflow or negative sizes). */
DRE_API size_t dre_gru_forward_workspace_size(int64_t T, int64_t B, int64_t I, int64_t H);

/* Forward over a batch of sequences.  h0 may be NULL (zeros).  y and h_n
 * are overwritten; h_n[b] is the state after sequence b's last step (h0[b]
 * for a zero-length sequence).  cache may be NULL (inference); otherwise it
 * must hold dre_gru_cache_floats() floats and is overwritten with what
 * dre_gru_backward needs. */
DRE_API dre_status dre_gru_forward(int64_t T, int64_t B, int64_t I, int64_t H,
                                   const float *x, const int32_t *lengths, const float *h0,
                                   const float *W_ih, const float *W_hh,
                                   const float *b_ih, const float *b_hh,
                                   float *y, float *h_n, float *cache,
                                   void *workspace, size_t workspace_bytes);

/* Workspace bytes of dre_gru_backward (0 on overflow or negative sizes). */
DRE_API size_t dre_gru_backward_workspace_size(int64_t T, int64_t B, int64_t I, int64_t H);

/* Backward through time.  x, lengths, h0, y and cache must be those of
 * the forward pass.  dy [T][B][H] (NULL: zeros; entries at padded steps
 * are ignored) and dh_n [B][H] (NULL: zeros) are the loss gradients of the
 * outputs.  dx [T][B][I] and dh0 [B][H] are overwritten (NULL: not
 * computed).  dW_ih, dW_hh, db_ih, db_hh are accumulated (NULL: not
 * computed). */
DRE_API dre_status dre_gru_backward(int64_t T, int64_t B, int64_t I, int64_t H,
                                    const float *x, const int32_t *lengths, const float *h0,
                                    const float *W_ih, const float *W_hh,
                                    const float *y, const float *cache,
                                    const float *dy, const float *dh_n,
                                    float *dx, float *dh0,
                                    float *dW_ih, float *dW_hh, float *db_ih, float *db_hh,
                                    void *workspace, size_t workspace_bytes);

/* Workspace bytes of dre_gru_step: 6H floats. */
DRE_API size_t dre_gru_step_workspace_size(int64_t I, int64_t H);

/* One step of one sequence (streaming clicks): h_out = GRU(x [I], h [H]).
 * h_out may be the same buffer as h. */
DRE_API dre_status dre_gru_step(int64_t I, int64_t H, const float *x, const float *h,
                                const float *W_ih, const float *W_hh,
                                const float *b_ih, const float *b_hh,
                                float *h_out, void *workspace, size_t workspace_bytes);

/* The same step with the weight matrices W_ih, W_hh stored as IEEE 754
 * binary16 (uint16_t bit patterns, e.g. from dre_f32_to_f16 or numpy's
 * float16); biases, states and every product and sum stay float32.  Half the
 * bytes per click: at batch 1 a step streams its weights from memory, so
 * this is the fast streaming variant.  The result equals dre_gru_step on
 * the float32 values of those binary16 weights (up to float32 summation
 * order).  Same workspace as dre_gru_step. */
DRE_API dre_status dre_gru_step_f16(int64_t I, int64_t H, const float *x, const float *h,
                                    const uint16_t *W_ih, const uint16_t *W_hh,
                                    const float *b_ih, const float *b_hh,
                                    float *h_out, void *workspace, size_t workspace_bytes);

/* ------------------------------------------------------------------------ */
/* Half precision storage                                                    */
/* ------------------------------------------------------------------------ */

/* float32 -> IEEE 754 binary16, round to nearest even (numpy's
 * astype(float16)); |x| >= 65520 gives +-inf, NaN stays NaN. */
DRE_API dre_status dre_f32_to_f16(int64_t n, const float *src, uint16_t *dst);

/* binary16 -> float32 (exact). */
DRE_API dre_status dre_f16_to_f32(int64_t n, const uint16_t *src, float *dst);

/* ------------------------------------------------------------------------ */
/* Dense head  u = act(W_p h + b_p)                                          */
/* ------------------------------------------------------------------------ */

typedef enum dre_activation {
    DRE_ACT_IDENTITY = 0,
    DRE_ACT_TANH = 1
} dre_activation;

/* Workspace bytes of dre_head_forward (0 on overflow or negative sizes). */
DRE_API size_t dre_head_forward_workspace_size(int64_t N, int64_t H, int64_t D);

/* h [N][H], W_p [D][H], b_p [D] (NULL: zeros); u [N][D] overwritten. */
DRE_API dre_status dre_head_forward(int64_t N, int64_t H, int64_t D,
                                    const float *h, const float *W_p, const float *b_p,
                                    dre_activation act, float *u,
                                    void *workspace, size_t workspace_bytes);

/* One row, for streaming: u [D] = act(W_p h + b_p), h [H]; no workspace
 * (a matrix-vector product, W_p is not packed).  b_p may be NULL. */
DRE_API dre_status dre_head_forward_row(int64_t H, int64_t D, const float *h, const float *W_p,
                                        const float *b_p, dre_activation act, float *u);

/* Workspace bytes of dre_head_backward (0 on overflow or negative sizes). */
DRE_API size_t dre_head_backward_workspace_size(int64_t N, int64_t H, int64_t D);

/* u is the forward output, du [N][D] its gradient.  dh [N][H] overwritten
 * (NULL: skip); dW_p [D][H] and db_p [D] accumulated (NULL: skip). */
DRE_API dre_status dre_head_backward(int64_t N, int64_t H, int64_t D,
                                     const float *h, const float *W_p, dre_activation act,
                                     const float *u, const float *du,
                                     float *dh, float *dW_p, float *db_p,
                                     void *workspace, size_t workspace_bytes);

/* ------------------------------------------------------------------------ */
/* Sampled losses                                                            */
/* ------------------------------------------------------------------------ */
/*
 * Logits of row b (a user vector U[b]) over S sampled columns (output rows
 * O_s[j], usually: the batch's targets, then negatives shared by the batch):
 *     l[b][j] = U[b] . O_s[j] + b_s[j] - logq[j]
 * (b_s NULL: 0; logq NULL: no logQ correction).  target_col[b] in [0, S)
 * is the column of row b's true next item; -1 skips the row.  If col_ids
 * (S item ids) is given, a column j != target_col[b] with col_ids[j] ==
 * col_ids[target_col[b]] is masked out of row b (a sampled copy of the
 * target is not a negative).
 *
 * DRE_LOSS_XE:      loss_b = logsumexp_j l[b][j] - l[b][t]   (max-shifted)
 * DRE_LOSS_BPR_MAX: w = softmax of l[b][j] over the negatives j (unmasked,
 *                   j != t); loss_b = -log(sum_j w_j sigmoid(l_t - l_j) + 1e-24)
 *                   + bpreg * sum_j w_j l_j^2    (GRU4Rec's BPR-max)
 * The loss is the mean over the non-skipped rows (0 if none).  Gradients
 * are those of that mean.
 */

typedef enum dre_loss_kind {
    DRE_LOSS_XE = 0,
    DRE_LOSS_BPR_MAX = 1
} dre_loss_kind;

/* Workspace bytes of dre_sampled_loss (0 on overflow or negative sizes). */
DRE_API size_t dre_sampled_loss_workspace_size(int64_t B, int64_t S, int64_t D);

/* loss: scalar out (required).  row_loss [B] overwritten (NULL: skip; 0
 * for skipped rows).  dU [B][D] overwritten (NULL: skip).  dO_s [S][D]
 * and db_s [S] accumulated (NULL: skip). */
DRE_API dre_status dre_sampled_loss(int64_t B, int64_t S, int64_t D,
                                    const float *U, const float *O_s, const float *b_s,
                                    const int32_t *target_col, const int32_t *col_ids,
                                    const float *logq, dre_loss_kind kind, float bpreg,
                                    float *loss, float *row_loss,
                                    float *dU, float *dO_s, float *db_s,
                                    void *workspace, size_t workspace_bytes);

/* ------------------------------------------------------------------------ */
/* Candidate scoring fused with top-k                                        */
/* ------------------------------------------------------------------------ */

/* scores[i] = O[r] . u + bias[r] with r = idx[i] (idx NULL: r = i, n <= N).
 * bias may be NULL.  Every idx entry must be in [0, N). */
DRE_API dre_status dre_score(int64_t N, int64_t D, const float *O, const float *bias,
                             const float *u, const int32_t *idx, int64_t n, float *scores);

/* The k best of those n scores, fused (no n-sized buffer).  exclude [N]
 * (NULL: none) marks rows never returned.  Results in top_idx (row numbers
 * r of O) and top_score, best first; *n_out = min(k, number of eligible
 * rows).  Order: higher score first; equal scores: lower row number first;
 * NaN scores rank below every other score.  k == 0 or n == 0 gives
 * *n_out = 0 (top_idx/top_score may then be NULL). */
DRE_API dre_status dre_score_topk(int64_t N, int64_t D, const float *O, const float *bias,
                                  const float *u, const int32_t *idx, int64_t n,
                                  const uint8_t *exclude, int64_t k,
                                  int32_t *top_idx, float *top_score, int64_t *n_out);

/* ------------------------------------------------------------------------ */
/* Compressed row tables: binary16 and int8 rows with per-row scales         */
/* ------------------------------------------------------------------------ */
/*
 * A table of N rows and D columns (row-major, contiguous) stored as
 * `dtype`, with optional per-row scales row_scale [N] (NULL: 1).  The value
 * of element (r, k) is f32(O[r][k]) * row_scale[r]; f32() of a binary16 or
 * int8 value is exact.  Model files store item tables and GRU weights this
 * way (docs/model-format.md); the kernels read them as they are, never
 * inflating a table to float32.
 */
typedef enum dre_dtype {
    DRE_DTYPE_F32 = 0, /* float                                   */
    DRE_DTYPE_F16 = 1, /* IEEE binary16 bit patterns (uint16_t)   */
    DRE_DTYPE_I8 = 2,  /* int8_t (symmetric quantisation: usually in [-127, 127]) */
    DRE_DTYPE_I8P = 3  /* int8 rows packed for scoring by dre_pack_rows_i8 (uint8_t) */
} dre_dtype;

/* scores[i] = dot(O[r], u) * row_scale[r] + bias[r], r = idx ? idx[i] : i
 * (idx NULL: n <= N; row_scale, bias NULL: 1, 0).
 *
 * Float32 and binary16 rows: the dot product is summed in float32 over the
 * exactly converted stored values, then multiplied by the scale and the
 * bias added (two roundings).
 *
 * int8 rows (DRE_DTYPE_I8 and DRE_DTYPE_I8P) are scored exactly in
 * integers: u becomes fixed point, U[k] = rint(u[k] * 2^s) with s such that
 * max|U| is in [2^21, 2^22] (e2 = 2^-s; u == 0: U = 0, e2 = 1), the dot
 * product I = sum_k q[r][k] * U[k] is exact, and the score is
 * (float)((double)I * ((double)row_scale[r] * e2)) + bias[r].  The only
 * approximation is u's rounding, at most 2^-23 * max|u| per component (the
 * error of float32 summation is of that order); the result is the same
 * bits on every SIMD path.  A NaN or infinite component of u makes every
 * int8 score NaN.
 *
 * Either way a row's score is the same bits wherever it sits (full table,
 * table offset, candidate list).  DRE_DTYPE_F32 without scales is dre_score
 * exactly. */
DRE_API dre_status dre_score_rows(int64_t N, int64_t D, dre_dtype dtype, const void *O,
                                  const float *row_scale, const float *bias, const float *u,
                                  const int32_t *idx, int64_t n, float *scores);

/* The k best of those scores, fused: the selection, order and outputs of
 * dre_score_topk (higher first; ties: lower row first; NaN last), exact on
 * the scores dre_score_rows computes. */
DRE_API dre_status dre_score_topk_rows(int64_t N, int64_t D, dre_dtype dtype, const void *O,
                                       const float *row_scale, const float *bias,
                                       const float *u, const int32_t *idx, int64_t n,
                                       const uint8_t *exclude, int64_t k,
                                       int32_t *top_idx, float *top_score, int64_t *n_out);

/* The packed layout of an int8 table for scoring (DRE_DTYPE_I8P): blocks of
 * 16 rows; in a block, ceil(D/4) groups of 64 bytes, group g holding for
 * each of the 16 rows in order its 4 values q[r][4g .. 4g+3] + 128 (columns
 * past D and rows past N: q = 0).  The same bytes as the table, give or take
 * the padding, in the order SIMD integer dot products read them: AVX512-VNNI
 * scores 16 rows x 4 columns per instruction.  dre_packed_i8_bytes gives the
 * size (-1: negative or too large); dre_pack_rows_i8 writes it (P_bytes: the
 * buffer's size, DRE_ERR_SIZE if too small).  Every function taking a dtype
 * reads DRE_DTYPE_I8P tables with N and D those of the unpacked table. */
DRE_API int64_t dre_packed_i8_bytes(int64_t N, int64_t D);
DRE_API dre_status dre_pack_rows_i8(int64_t N, int64_t D, const int8_t *O, uint8_t *P,
                                    int64_t P_bytes);

/* out[i][k] = f32(W[r][k]) * row_scale[r] (one float32 rounding), r = idx ?
 * idx[i] : i: the float32 rows a caller needs (an input embedding per click,
 * the columns of a sampled loss), not the table. */
DRE_API dre_status dre_dequantize_rows(int64_t N, int64_t D, dre_dtype dtype, const void *W,
                                       const float *row_scale, const int32_t *idx, int64_t n,
                                       float *out);

/* dre_gru_step with int8 weight matrices and per-row scales: W_ih [3H][I]
 * with s_ih [3H], W_hh [3H][H] with s_hh [3H] (NULL: 1); biases, state and
 * gates float32; the gate pre-activations dot(W_ih[j], x) * s_ih[j] +
 * b_ih[j] and dot(W_hh[j], h) * s_hh[j] + b_hh[j] as dre_score_rows
 * computes them on int8 rows (exact integer dot products with x and h in
 * fixed point).  A quarter of the float32 bytes per click.  Same workspace
 * as dre_gru_step; h_out may be h.  dre_gru_step_i8p takes the matrices
 * packed by dre_pack_rows_i8 (N = 3H rows of I, and of H, columns) and gives
 * the same bits, several times faster: pack once, step every click. */
DRE_API dre_status dre_gru_step_i8(int64_t I, int64_t H, const float *x, const float *h,
                                   const int8_t *W_ih, const float *s_ih,
                                   const int8_t *W_hh, const float *s_hh,
                                   const float *b_ih, const float *b_hh,
                                   float *h_out, void *workspace, size_t workspace_bytes);
DRE_API dre_status dre_gru_step_i8p(int64_t I, int64_t H, const float *x, const float *h,
                                    const uint8_t *P_ih, const float *s_ih,
                                    const uint8_t *P_hh, const float *s_hh,
                                    const float *b_ih, const float *b_hh,
                                    float *h_out, void *workspace, size_t workspace_bytes);

/* ------------------------------------------------------------------------ */
/* Optimisers (in place)                                                     */
/* ------------------------------------------------------------------------ */

/* Adagrad: acc += g^2; p -= lr * g / sqrt(acc + eps). */
DRE_API dre_status dre_adagrad_step(int64_t n, float *param, const float *grad,
                                    float *accum, float lr, float eps);

/* Adam (bias-corrected; step is 1-based); weight_decay adds wd*p to g
 * (L2, as torch.optim.Adam). */
DRE_API dre_status dre_adam_step(int64_t n, float *param, const float *grad,
                                 float *m, float *v, int64_t step, float lr,
                                 float beta1, float beta2, float eps, float weight_decay);

/* SGD with momentum (torch.optim.SGD semantics, dampening 0):
 * vel = momentum*vel + g; p -= lr * (nesterov ? g + momentum*vel : vel).
 * velocity may be NULL only when momentum == 0. */
DRE_API dre_status dre_sgd_step(int64_t n, float *param, const float *grad,
                                float *velocity, float lr, float momentum, int nesterov);

/* Global L2 norm over n_tensors gradient buffers (accumulated in double). */
DRE_API dre_status dre_global_norm(int64_t n_tensors, const float *const *grads,
                                   const int64_t *sizes, double *norm);

/* If the global norm exceeds max_norm (> 0), scale every buffer by
 * max_norm / norm.  *norm_out (may be NULL) receives the norm before
 * clipping. */
DRE_API dre_status dre_clip_by_global_norm(int64_t n_tensors, float *const *grads,
                                           const int64_t *sizes, float max_norm,
                                           double *norm_out);

/* Sparse row updates of a table [n_rows][D] with grad_rows [n][D] for the
 * rows listed in rows[n] (each in [0, n_rows)).  Rows are updated in list
 * order; list each row once (sum duplicate gradients first) for the usual
 * semantics.  Adam's bias correction uses the global step (lazy Adam). */
DRE_API dre_status dre_adagrad_rows(int64_t n_rows, int64_t D, float *table, float *accum,
                                    int64_t n, const int32_t *rows, const float *grad_rows,
                                    float lr, float eps);
DRE_API dre_status dre_adam_rows(int64_t n_rows, int64_t D, float *table, float *m, float *v,
                                 int64_t n, const int32_t *rows, const float *grad_rows,
                                 int64_t step, float lr, float beta1, float beta2, float eps);
DRE_API dre_status dre_sgd_rows(int64_t n_rows, int64_t D, float *table,
                                int64_t n, const int32_t *rows, const float *grad_rows, float lr);

#ifdef __cplusplus
}
#endif
#endif /* DEEPREC_EDGE_H */

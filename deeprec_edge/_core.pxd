# cython: language_level=3
"""Extern declarations of the C core's public header (csrc/include/deeprec_edge.h).

Keep this file a one-to-one transcription of the header: same names, same
argument order.  Everything is declared ``nogil``: the kernels never touch
Python objects, so the binding calls them with the GIL released.
"""
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t, uint16_t


cdef extern from "deeprec_edge.h" nogil:
    int DRE_VERSION_MAJOR
    int DRE_VERSION_MINOR
    int DRE_VERSION_PATCH

    # ---- status codes ----
    ctypedef enum dre_status:
        DRE_OK
        DRE_ERR_NULL
        DRE_ERR_SIZE
        DRE_ERR_INDEX
        DRE_ERR_WORKSPACE
        DRE_ERR_ARG
        DRE_ERR_UNSUPPORTED

    const char *dre_status_to_string(dre_status status)

    # ---- kernel paths ----
    ctypedef enum dre_path:
        DRE_PATH_SCALAR
        DRE_PATH_AVX2
        DRE_PATH_NEON
        DRE_PATH_AVX512

    dre_path dre_active_path()
    const char *dre_path_name(dre_path path)
    int dre_path_supported(dre_path path)
    dre_status dre_set_path(dre_path path)

    # ---- SGEMM ----
    size_t dre_sgemm_workspace_size(int64_t N, int64_t K)
    dre_status dre_sgemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K,
                         float alpha, const float *A, int64_t lda,
                         const float *B, int64_t ldb, float beta,
                         float *C, int64_t ldc,
                         void *workspace, size_t workspace_bytes)

    # ---- GRU layer ----
    size_t dre_gru_cache_floats(int64_t T, int64_t B, int64_t H)
    size_t dre_gru_forward_workspace_size(int64_t T, int64_t B, int64_t I, int64_t H)
    dre_status dre_gru_forward(int64_t T, int64_t B, int64_t I, int64_t H,
                               const float *x, const int32_t *lengths, const float *h0,
                               const float *W_ih, const float *W_hh,
                               const float *b_ih, const float *b_hh,
                               float *y, float *h_n, float *cache,
                               void *workspace, size_t workspace_bytes)
    size_t dre_gru_backward_workspace_size(int64_t T, int64_t B, int64_t I, int64_t H)
    dre_status dre_gru_backward(int64_t T, int64_t B, int64_t I, int64_t H,
                                const float *x, const int32_t *lengths, const float *h0,
                                const float *W_ih, const float *W_hh,
                                const float *y, const float *cache,
                                const float *dy, const float *dh_n,
                                float *dx, float *dh0,
                                float *dW_ih, float *dW_hh, float *db_ih, float *db_hh,
                                void *workspace, size_t workspace_bytes)
    size_t dre_gru_step_workspace_size(int64_t I, int64_t H)
    dre_status dre_gru_step(int64_t I, int64_t H, const float *x, const float *h,
                            const float *W_ih, const float *W_hh,
                            const float *b_ih, const float *b_hh,
                            float *h_out, void *workspace, size_t workspace_bytes)

    dre_status dre_gru_step_f16(int64_t I, int64_t H, const float *x, const float *h,
                                const uint16_t *W_ih, const uint16_t *W_hh,
                                const float *b_ih, const float *b_hh,
                                float *h_out, void *workspace, size_t workspace_bytes)

    # ---- half precision storage ----
    dre_status dre_f32_to_f16(int64_t n, const float *src, uint16_t *dst)
    dre_status dre_f16_to_f32(int64_t n, const uint16_t *src, float *dst)

    # ---- dense head ----
    ctypedef enum dre_activation:
        DRE_ACT_IDENTITY
        DRE_ACT_TANH

    size_t dre_head_forward_workspace_size(int64_t N, int64_t H, int64_t D)
    dre_status dre_head_forward(int64_t N, int64_t H, int64_t D,
                                const float *h, const float *W_p, const float *b_p,
                                dre_activation act, float *u,
                                void *workspace, size_t workspace_bytes)
    dre_status dre_head_forward_row(int64_t H, int64_t D, const float *h, const float *W_p,
                                    const float *b_p, dre_activation act, float *u)
    size_t dre_head_backward_workspace_size(int64_t N, int64_t H, int64_t D)
    dre_status dre_head_backward(int64_t N, int64_t H, int64_t D,
                                 const float *h, const float *W_p, dre_activation act,
                                 const float *u, const float *du,
                                 float *dh, float *dW_p, float *db_p,
                                 void *workspace, size_t workspace_bytes)

    # ---- sampled losses ----
    ctypedef enum dre_loss_kind:
        DRE_LOSS_XE
        DRE_LOSS_BPR_MAX

    size_t dre_sampled_loss_workspace_size(int64_t B, int64_t S, int64_t D)
    dre_status dre_sampled_loss(int64_t B, int64_t S, int64_t D,
                                const float *U, const float *O_s, const float *b_s,
                                const int32_t *target_col, const int32_t *col_ids,
                                const float *logq, dre_loss_kind kind, float bpreg,
                                float *loss, float *row_loss,
                                float *dU, float *dO_s, float *db_s,
                                void *workspace, size_t workspace_bytes)

    # ---- candidate scoring ----
    dre_status dre_score(int64_t N, int64_t D, const float *O, const float *bias,
                         const float *u, const int32_t *idx, int64_t n, float *scores)
    dre_status dre_score_topk(int64_t N, int64_t D, const float *O, const float *bias,
                              const float *u, const int32_t *idx, int64_t n,
                              const uint8_t *exclude, int64_t k,
                              int32_t *top_idx, float *top_score, int64_t *n_out)

    # ---- compressed row tables ----
    ctypedef enum dre_dtype:
        DRE_DTYPE_F32
        DRE_DTYPE_F16
        DRE_DTYPE_I8
        DRE_DTYPE_I8P

    int64_t dre_packed_i8_bytes(int64_t N, int64_t D)
    dre_status dre_pack_rows_i8(int64_t N, int64_t D, const int8_t *O, uint8_t *P,
                                int64_t P_bytes)
    dre_status dre_score_rows(int64_t N, int64_t D, dre_dtype dtype, const void *O,
                              const float *row_scale, const float *bias, const float *u,
                              const int32_t *idx, int64_t n, float *scores)
    dre_status dre_score_topk_rows(int64_t N, int64_t D, dre_dtype dtype, const void *O,
                                   const float *row_scale, const float *bias,
                                   const float *u, const int32_t *idx, int64_t n,
                                   const uint8_t *exclude, int64_t k,
                                   int32_t *top_idx, float *top_score, int64_t *n_out)
    dre_status dre_dequantize_rows(int64_t N, int64_t D, dre_dtype dtype, const void *W,
                                   const float *row_scale, const int32_t *idx, int64_t n,
                                   float *out)
    dre_status dre_gru_step_i8(int64_t I, int64_t H, const float *x, const float *h,
                               const int8_t *W_ih, const float *s_ih,
                               const int8_t *W_hh, const float *s_hh,
                               const float *b_ih, const float *b_hh,
                               float *h_out, void *workspace, size_t workspace_bytes)
    dre_status dre_gru_step_i8p(int64_t I, int64_t H, const float *x, const float *h,
                                const uint8_t *P_ih, const float *s_ih,
                                const uint8_t *P_hh, const float *s_hh,
                                const float *b_ih, const float *b_hh,
                                float *h_out, void *workspace, size_t workspace_bytes)

    # ---- optimisers ----
    dre_status dre_adagrad_step(int64_t n, float *param, const float *grad,
                                float *accum, float lr, float eps)
    dre_status dre_adam_step(int64_t n, float *param, const float *grad,
                             float *m, float *v, int64_t step, float lr,
                             float beta1, float beta2, float eps, float weight_decay)
    dre_status dre_sgd_step(int64_t n, float *param, const float *grad,
                            float *velocity, float lr, float momentum, int nesterov)
    dre_status dre_global_norm(int64_t n_tensors, const float *const *grads,
                               const int64_t *sizes, double *norm)
    dre_status dre_clip_by_global_norm(int64_t n_tensors, float *const *grads,
                                       const int64_t *sizes, float max_norm,
                                       double *norm_out)
    dre_status dre_adagrad_rows(int64_t n_rows, int64_t D, float *table, float *accum,
                                int64_t n, const int32_t *rows, const float *grad_rows,
                                float lr, float eps)
    dre_status dre_adam_rows(int64_t n_rows, int64_t D, float *table, float *m, float *v,
                             int64_t n, const int32_t *rows, const float *grad_rows,
                             int64_t step, float lr, float beta1, float beta2, float eps)
    dre_status dre_sgd_rows(int64_t n_rows, int64_t D, float *table,
                            int64_t n, const int32_t *rows, const float *grad_rows, float lr)


cdef class GruStepper:
    cdef readonly object W_ih
    cdef readonly object W_hh
    cdef readonly object b_ih
    cdef readonly object b_hh
    cdef readonly Py_ssize_t input_size
    cdef readonly Py_ssize_t hidden_size
    cdef readonly object weight_dtype
    cdef readonly object s_ih
    cdef readonly object s_hh
    cdef int _wk
    cdef object _packed  # int8 weights packed for the step (dre_gru_step_i8p)
    cdef const float *_s_ih
    cdef const float *_s_hh
    cdef const void *_w_ih
    cdef const void *_w_hh
    cdef const float *_b_ih
    cdef const float *_b_hh
    cdef object _ws
    cdef void *_ws_ptr
    cdef size_t _ws_bytes
    cdef int _busy

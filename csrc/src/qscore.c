/*
 * qscore.c -- scoring and top-k over compressed row tables (binary16 and
 * int8 rows with per-row scales), row dequantisation, and the batch-1 GRU
 * step with int8 weights; the dispatch of the compressed-row primitives.
 *
 * The selection is score.c's (dre__topk_select); only the scorer of a
 * chunk of candidates differs.  See qkernels.h for what every path
 * computes.
 */
#include "qkernels.h"

#include <string.h>

/* ---- dispatch: the table of the active path ---- */

const dre_qkernels *dre__qkernels(void) {
    const dre_qkernels *q = NULL;
    switch (dre__kernels()->path) {
    case DRE_PATH_AVX512: q = dre__qkernels_avx512(); break;
    case DRE_PATH_AVX2: q = dre__qkernels_avx2(); break;
    case DRE_PATH_NEON: q = dre__qkernels_neon(); break;
    case DRE_PATH_SCALAR: break;
    }
    return q ? q : dre__qkernels_scalar();
}

/* ---- validation ---- */

static const float dre__q_dummy[1] = {0.0f};

static size_t dtype_size(dre_dtype dtype) {
    switch (dtype) {
    case DRE_DTYPE_F32: return sizeof(float);
    case DRE_DTYPE_F16: return sizeof(uint16_t);
    case DRE_DTYPE_I8: return sizeof(int8_t);
    }
    return 0;
}

/* Order: sizes, dtype, pointers, indices (nothing written before all passed). */
static dre_status rows_check(int64_t N, int64_t D, dre_dtype dtype, const void *O,
                             const float *u, int need_u, const int32_t *idx, int64_t n) {
    size_t t;
    if (N < 0 || D < 0 || n < 0) return DRE_ERR_SIZE;
    if (!dre__mul3(&t, N, D, 4)) return DRE_ERR_SIZE;
    if (idx == NULL && n > N) return DRE_ERR_SIZE;
    if (dtype_size(dtype) == 0) return DRE_ERR_ARG;
    if (n == 0) return DRE_OK;
    if (D > 0 && (O == NULL || (need_u && u == NULL))) return DRE_ERR_NULL;
    if (idx) {
        int bad = 0;
        for (int64_t i = 0; i < n; ++i) bad |= (idx[i] < 0) | ((int64_t)idx[i] >= N);
        if (bad) return DRE_ERR_INDEX;
    }
    return DRE_OK;
}

/* ---- one chunk of scores, any dtype ---- */

typedef struct {
    const dre_kernels *kt;
    const dre_qkernels *qt;
    int64_t D;
    dre_dtype dtype;
    const void *O;
    const float *scale, *bias, *u;
} rows_ctx;

/* Scores of rows r = ci ? ci[j] : base + j, j < c, into buf. */
static void rows_chunk(const void *ctx_, int64_t base, int64_t c, const int32_t *ci, float *buf) {
    const rows_ctx *x = (const rows_ctx *)ctx_;
    const int64_t D = x->D;
    /* contiguous rows: offset the table, bias and scales (the kernels then see rows 0..c-1) */
    const int64_t off = ci ? 0 : base;
    const float *bias = x->bias && !ci ? x->bias + off : x->bias;
    const float *scale = x->scale && !ci ? x->scale + off : x->scale;
    const int64_t eoff = D > 0 ? off * D : 0;
    switch (x->dtype) {
    case DRE_DTYPE_I8:
        x->qt->gemv_i8(c, D, (const int8_t *)x->O + eoff, D, ci, scale, x->u, bias, buf);
        return;
    case DRE_DTYPE_F16:
        x->qt->gemv_h(c, D, (const uint16_t *)x->O + eoff, D, ci, scale, x->u, bias, buf);
        return;
    case DRE_DTYPE_F32:
        if (!scale) {
            x->kt->gemv(c, D, (const float *)x->O + eoff, D, ci, x->u, bias, buf);
            return;
        }
        /* dot, then the scale and the bias as separate roundings */
        x->kt->gemv(c, D, (const float *)x->O + eoff, D, ci, x->u, NULL, buf);
        for (int64_t j = 0; j < c; ++j) {
            const int64_t r = ci ? (int64_t)ci[j] : j;
            buf[j] = buf[j] * scale[r] + (bias ? bias[r] : 0.0f);
        }
        return;
    }
}

static rows_ctx make_ctx(int64_t D, dre_dtype dtype, const void *O, const float *scale,
                         const float *bias, const float *u) {
    rows_ctx c;
    c.kt = dre__kernels();
    c.qt = dre__qkernels();
    c.D = D;
    c.dtype = dtype;
    c.O = O ? O : (const void *)dre__q_dummy; /* only when D == 0 */
    c.scale = scale;
    c.bias = bias;
    c.u = u ? u : dre__q_dummy;
    return c;
}

dre_status dre_score_rows(int64_t N, int64_t D, dre_dtype dtype, const void *O,
                          const float *row_scale, const float *bias, const float *u,
                          const int32_t *idx, int64_t n, float *scores) {
    const dre_status st = rows_check(N, D, dtype, O, u, 1, idx, n);
    if (st != DRE_OK) return st;
    if (n == 0) return DRE_OK;
    if (scores == NULL) return DRE_ERR_NULL;
    const rows_ctx cx = make_ctx(D, dtype, O, row_scale, bias, u);
    /* in chunks, as the top-k scores them (the same calls, the same bits) */
    for (int64_t base = 0; base < n; base += 256) {
        const int64_t c = n - base < 256 ? n - base : 256;
        rows_chunk(&cx, base, c, idx ? idx + base : NULL, scores + base);
    }
    return DRE_OK;
}

dre_status dre_score_topk_rows(int64_t N, int64_t D, dre_dtype dtype, const void *O,
                               const float *row_scale, const float *bias, const float *u,
                               const int32_t *idx, int64_t n, const uint8_t *exclude, int64_t k,
                               int32_t *top_idx, float *top_score, int64_t *n_out) {
    if (k < 0) return DRE_ERR_SIZE;
    const dre_status st = rows_check(N, D, dtype, O, u, 1, idx, n);
    if (st != DRE_OK) return st;
    if (idx == NULL && n > (int64_t)INT32_MAX + 1) return DRE_ERR_SIZE; /* int32 row numbers */
    if (n_out == NULL) return DRE_ERR_NULL;
    if (k == 0 || n == 0) {
        *n_out = 0;
        return DRE_OK;
    }
    if (top_idx == NULL || top_score == NULL) return DRE_ERR_NULL;
    const rows_ctx cx = make_ctx(D, dtype, O, row_scale, bias, u);
    dre__topk_select(n, idx, exclude, k, rows_chunk, &cx, top_idx, top_score, n_out);
    return DRE_OK;
}

dre_status dre_dequantize_rows(int64_t N, int64_t D, dre_dtype dtype, const void *W,
                               const float *row_scale, const int32_t *idx, int64_t n,
                               float *out) {
    const dre_status st = rows_check(N, D, dtype, W, NULL, 0, idx, n);
    if (st != DRE_OK) return st;
    if (n == 0 || D == 0) return DRE_OK;
    if (out == NULL) return DRE_ERR_NULL;
    for (int64_t i = 0; i < n; ++i) {
        const int64_t r = idx ? (int64_t)idx[i] : i;
        float *o = out + i * D;
        switch (dtype) {
        case DRE_DTYPE_I8: {
            const int8_t *w = (const int8_t *)W + r * D;
            for (int64_t k = 0; k < D; ++k) o[k] = (float)w[k];
            break;
        }
        case DRE_DTYPE_F16: {
            const uint16_t *w = (const uint16_t *)W + r * D;
            for (int64_t k = 0; k < D; ++k) o[k] = dre__f16_to_f32(w[k]);
            break;
        }
        case DRE_DTYPE_F32:
            memcpy(o, (const float *)W + r * D, (size_t)D * sizeof(float));
            break;
        }
        if (row_scale) {
            const float s = row_scale[r];
            for (int64_t k = 0; k < D; ++k) o[k] = o[k] * s;
        }
    }
    return DRE_OK;
}

/* ---- the batch-1 GRU step with int8 weights ---- */

dre_status dre_gru_step_i8(int64_t I, int64_t H, const float *x, const float *h,
                           const int8_t *W_ih, const float *s_ih,
                           const int8_t *W_hh, const float *s_hh,
                           const float *b_ih, const float *b_hh,
                           float *h_out, void *workspace, size_t workspace_bytes) {
    int run;
    const dre_status st = dre__step_check(I, H, x, h, W_ih, W_hh, b_ih, b_hh, h_out, workspace,
                                          workspace_bytes, &run);
    if (!run) return st;
    const dre_qkernels *qt = dre__qkernels();
    float *gi = (float *)dre__ws_align(workspace), *gh = gi + 3 * H;
    qt->gemv_i8(3 * H, I, W_ih, I, NULL, s_ih, I > 0 ? x : dre__q_dummy, b_ih, gi);
    qt->gemv_i8(3 * H, H, W_hh, H, NULL, s_hh, h, b_hh, gh);
    dre__kernels()->gru_gates(H, gi, gh, h, h_out, NULL);
    return DRE_OK;
}

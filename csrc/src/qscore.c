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

#include <float.h>
#include <math.h>
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
    case DRE_DTYPE_I8P: return sizeof(uint8_t);
    }
    return 0;
}

/* Order: sizes, dtype, pointers, indices (nothing written before all passed). */
static dre_status rows_check(int64_t N, int64_t D, dre_dtype dtype, const void *O,
                             const float *u, int need_u, const int32_t *idx, int64_t n) {
    size_t t;
    if (N < 0 || D < 0 || n < 0) return DRE_ERR_SIZE;
    if (!dre__mul3(&t, N, D, 4)) return DRE_ERR_SIZE;
    if (dtype == DRE_DTYPE_I8P && dre_packed_i8_bytes(N, D) < 0) return DRE_ERR_SIZE;
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

/* ---- int8 tables: the packed layout and the fixed-point user vector ---- */

int64_t dre_packed_i8_bytes(int64_t N, int64_t D) {
    size_t t;
    if (N < 0 || D < 0) return -1;
    const int64_t blocks = N / DRE_I8P_ROWS + (N % DRE_I8P_ROWS != 0);
    if (!dre__mul3(&t, blocks, dre__i8p_groups(D), 64) || t > (size_t)INT64_MAX / 2) return -1;
    return (int64_t)t;
}

dre_status dre_pack_rows_i8(int64_t N, int64_t D, const int8_t *O, uint8_t *P, int64_t P_bytes) {
    const int64_t need = dre_packed_i8_bytes(N, D);
    if (need < 0) return DRE_ERR_SIZE;
    if (P_bytes < need) return DRE_ERR_SIZE;
    if (need == 0) return DRE_OK;
    if (P == NULL || (N > 0 && D > 0 && O == NULL)) return DRE_ERR_NULL;
    const int64_t G = dre__i8p_groups(D);
    const dre_qkernels *qt = dre__qkernels();
    for (int64_t r0 = 0; r0 < N; r0 += DRE_I8P_ROWS) {
        const int8_t *rows[DRE_I8P_ROWS];
        for (int t = 0; t < DRE_I8P_ROWS; ++t) rows[t] = r0 + t < N ? O + (r0 + t) * D : NULL;
        qt->pack16_i8(rows, D, G, P + (r0 / DRE_I8P_ROWS) * 64 * G);
    }
    return DRE_OK;
}

typedef enum {
    I8_PACKED,     /* the packed kernels (D <= 4 * DRE_I8P_GMAX) */
    I8_LONG_ROWS,  /* longer rows: the exact scalar loop, U computed as it goes */
    I8_NOT_FINITE  /* u has a NaN or infinity: every score NaN */
} i8_mode;

typedef struct {
    i8_mode mode;
    double f;  /* U[k] = rint(u[k] * f), f = 2^shift */
    dre_i8p_user iu;
    int32_t U[4 * DRE_I8P_GMAX];
    int32_t l8[3 * DRE_I8P_GMAX];
    int64_t l16[2 * DRE_I8P_GMAX];
} i8_user;

/* rint(v * f) for |v * f| <= 2^22, f a power of two (the product is exact):
 * adding and taking back 1.5 * 2^52 rounds to the nearest integer, ties to
 * even, as rint does in the default rounding mode -- without a libm call
 * per component (this runs before every scoring call and twice per GRU
 * layer per click).  ISO C evaluates (t + magic) - magic as written (no
 * -ffast-math here, ever), and double has no excess precision on the
 * targets (SSE2, VFP, NEON). */
static inline int32_t fixed_u(float v, double f) {
    const double magic = 6755399441055744.0;
    const double t = (double)v * f + magic;
    return (int32_t)(t - magic);
}

/* qkernels.h: U, e2 and the two digit decompositions the kernels read.
 * Written as flat loops over the columns (no early exit, no libm call in
 * them) so the compiler vectorises them. */
static void i8_user_init(i8_user *w, int64_t D, const float *u) {
    float m = 0.0f;
    int bad = 0;
    for (int64_t k = 0; k < D; ++k) {
        const float a = fabsf(u[k]);
        bad |= !(a <= FLT_MAX); /* NaN or infinite */
        m = a > m ? a : m;
    }
    if (bad) {
        w->mode = I8_NOT_FINITE;
        return;
    }
    int x = 0;
    if (m > 0.0f) (void)frexp((double)m, &x);
    w->f = m > 0.0f ? ldexp(1.0, 22 - x) : 1.0;
    w->iu.e2 = m > 0.0f ? ldexp(1.0, x - 22) : 1.0;
    const int64_t G = dre__i8p_groups(D);
    w->iu.G = G;
    if (G > DRE_I8P_GMAX) {
        w->mode = I8_LONG_ROWS;
        return;
    }
    w->mode = I8_PACKED;
    const double f = w->f;
    int32_t *U = w->U;
    for (int64_t k = 0; k < D; ++k) U[k] = fixed_u(u[k], f);
    for (int64_t k = D; k < 4 * G; ++k) U[k] = 0;
    /* balanced base 256 (digits in [-128, 127]; |U| <= 2^22 leaves the top
     * one in [-64, 64]) and U = lo + 4096 hi (lo in [0, 4096)); the digit
     * sums give the +128 corrections */
    int32_t s8[3] = {0, 0, 0}, s16[2] = {0, 0};
    for (int64_t g = 0; g < G; ++g) {
        uint32_t wd[3] = {0, 0, 0};
        uint64_t wq[2] = {0, 0};
        for (int b = 0; b < 4; ++b) {
            const int32_t v = U[4 * g + b];
            const int32_t d0 = (int32_t)(((uint32_t)v + 128u) & 255u) - 128;
            const int32_t r1 = (v - d0) / 256;
            const int32_t d1 = (int32_t)(((uint32_t)r1 + 128u) & 255u) - 128;
            const int32_t d2 = (r1 - d1) / 256;
            const int32_t lo = (int32_t)((uint32_t)v & 4095u), hi = (v - lo) / 4096;
            wd[0] |= ((uint32_t)d0 & 255u) << (8 * b);
            wd[1] |= ((uint32_t)d1 & 255u) << (8 * b);
            wd[2] |= ((uint32_t)d2 & 255u) << (8 * b);
            wq[0] |= ((uint64_t)(uint32_t)lo & 0xFFFFu) << (16 * b);
            wq[1] |= ((uint64_t)(uint32_t)hi & 0xFFFFu) << (16 * b);
            s8[0] += d0;
            s8[1] += d1;
            s8[2] += d2;
            s16[0] += lo;
            s16[1] += hi;
        }
        for (int j = 0; j < 3; ++j) w->l8[j * G + g] = (int32_t)wd[j];
        for (int j = 0; j < 2; ++j) w->l16[j * G + g] = (int64_t)wq[j];
    }
    for (int j = 0; j < 3; ++j) w->iu.c8[j] = 128 * s8[j];
    for (int j = 0; j < 2; ++j) w->iu.c16[j] = 128 * s16[j];
    w->iu.U = w->U;
    w->iu.l8 = w->l8;
    w->iu.l16 = w->l16;
}

/* ---- one chunk of scores, any dtype ---- */

typedef struct {
    const dre_kernels *kt;
    const dre_qkernels *qt;
    int64_t D;
    dre_dtype dtype;
    const void *O;
    const float *scale, *bias, *u;
    const i8_user *i8; /* int8 tables */
} rows_ctx;

/* q[r][k] of an int8 table, row-major or packed */
static inline int i8_elem(const rows_ctx *x, int64_t r, int64_t k) {
    if (x->dtype == DRE_DTYPE_I8) return ((const int8_t *)x->O)[r * x->D + k];
    const uint8_t *w = dre__i8p_row((const uint8_t *)x->O, dre__i8p_groups(x->D), r);
    return (int)w[(k / 4) * 64 + k % 4] - 128;
}

/* int8 rows, exactly (qkernels.h): packed blocks go to the kernel as they
 * are; rows of a list, or of a row-major table, are packed 16 at a time on
 * the stack first. */
static void i8_chunk(const rows_ctx *x, int64_t base, int64_t c, const int32_t *ci, float *buf) {
    const i8_user *w = x->i8;
    const int64_t D = x->D, G = w->iu.G;
    if (w->mode == I8_NOT_FINITE) {
        for (int64_t j = 0; j < c; ++j) buf[j] = NAN;
        return;
    }
    if (w->mode == I8_LONG_ROWS) {
        for (int64_t j = 0; j < c; ++j) {
            const int64_t r = ci ? (int64_t)ci[j] : base + j;
            int64_t I = 0;
            for (int64_t k = 0; k < D; ++k) I += (int64_t)i8_elem(x, r, k) * fixed_u(x->u[k], w->f);
            buf[j] = dre__i8p_finish((double)I, x->scale ? x->scale[r] : 1.0f, w->iu.e2,
                                     x->bias ? x->bias[r] : 0.0f);
        }
        return;
    }
    if (x->dtype == DRE_DTYPE_I8P && !ci) { /* base: a multiple of 16 (chunks of 256) */
        x->qt->score_i8p(c, (const uint8_t *)x->O + (base / DRE_I8P_ROWS) * 64 * G, &w->iu,
                         x->scale ? x->scale + base : NULL, x->bias ? x->bias + base : NULL, buf);
        return;
    }
    uint8_t blk[64 * DRE_I8P_GMAX];
    float sc[DRE_I8P_ROWS], bi[DRE_I8P_ROWS];
    for (int64_t j0 = 0; j0 < c; j0 += DRE_I8P_ROWS) {
        const int m = (int)(c - j0 < DRE_I8P_ROWS ? c - j0 : DRE_I8P_ROWS);
        const int8_t *rows[DRE_I8P_ROWS];
        for (int t = 0; t < DRE_I8P_ROWS; ++t) {
            rows[t] = NULL;
            if (t >= m) {
                if (x->dtype == DRE_DTYPE_I8P)
                    for (int64_t g = 0; g < G; ++g) memset(blk + 64 * g + 4 * t, 128, 4);
                continue;
            }
            const int64_t r = ci ? (int64_t)ci[j0 + t] : base + j0 + t;
            if (x->dtype == DRE_DTYPE_I8) {
                rows[t] = (const int8_t *)x->O + r * D;
            } else {
                const uint8_t *src = dre__i8p_row((const uint8_t *)x->O, G, r);
                for (int64_t g = 0; g < G; ++g) memcpy(blk + 64 * g + 4 * t, src + 64 * g, 4);
            }
            sc[t] = x->scale ? x->scale[r] : 1.0f;
            bi[t] = x->bias ? x->bias[r] : 0.0f;
        }
        if (x->dtype == DRE_DTYPE_I8) x->qt->pack16_i8(rows, D, G, blk);
        x->qt->score_i8p(m, blk, &w->iu, sc, bi, buf + j0);
    }
}

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
    case DRE_DTYPE_I8P:
        i8_chunk(x, base, c, ci, buf);
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
                         const float *bias, const float *u, i8_user *i8) {
    rows_ctx c;
    c.i8 = NULL;
    if (dtype == DRE_DTYPE_I8 || dtype == DRE_DTYPE_I8P) {
        i8_user_init(i8, D, u ? u : dre__q_dummy);
        c.i8 = i8;
    }
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
    i8_user i8;
    const rows_ctx cx = make_ctx(D, dtype, O, row_scale, bias, u, &i8);
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
    i8_user i8;
    const rows_ctx cx = make_ctx(D, dtype, O, row_scale, bias, u, &i8);
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
        case DRE_DTYPE_I8P: {
            const uint8_t *w = dre__i8p_row((const uint8_t *)W, dre__i8p_groups(D), r);
            for (int64_t k = 0; k < D; ++k) o[k] = (float)((int)w[(k / 4) * 64 + k % 4] - 128);
            break;
        }
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

static dre_status gru_step_int8(int64_t I, int64_t H, const float *x, const float *h,
                                dre_dtype dtype, const void *W_ih, const float *s_ih,
                                const void *W_hh, const float *s_hh, const float *b_ih,
                                const float *b_hh, float *h_out, void *workspace,
                                size_t workspace_bytes) {
    int run;
    const dre_status st = dre__step_check(I, H, x, h, W_ih, W_hh, b_ih, b_hh, h_out, workspace,
                                          workspace_bytes, &run);
    if (!run) return st;
    float *gi = (float *)dre__ws_align(workspace), *gh = gi + 3 * H;
    /* the pre-activations as dre_score_rows scores int8 rows (its checks
     * pass: dre__step_check took the sizes and pointers) */
    (void)dre_score_rows(3 * H, I, dtype, W_ih, s_ih, b_ih, x, NULL, 3 * H, gi);
    (void)dre_score_rows(3 * H, H, dtype, W_hh, s_hh, b_hh, h, NULL, 3 * H, gh);
    dre__kernels()->gru_gates(H, gi, gh, h, h_out, NULL);
    return DRE_OK;
}

dre_status dre_gru_step_i8(int64_t I, int64_t H, const float *x, const float *h,
                           const int8_t *W_ih, const float *s_ih,
                           const int8_t *W_hh, const float *s_hh,
                           const float *b_ih, const float *b_hh,
                           float *h_out, void *workspace, size_t workspace_bytes) {
    return gru_step_int8(I, H, x, h, DRE_DTYPE_I8, W_ih, s_ih, W_hh, s_hh, b_ih, b_hh, h_out,
                         workspace, workspace_bytes);
}

dre_status dre_gru_step_i8p(int64_t I, int64_t H, const float *x, const float *h,
                            const uint8_t *P_ih, const float *s_ih,
                            const uint8_t *P_hh, const float *s_hh,
                            const float *b_ih, const float *b_hh,
                            float *h_out, void *workspace, size_t workspace_bytes) {
    return gru_step_int8(I, H, x, h, DRE_DTYPE_I8P, P_ih, s_ih, P_hh, s_hh, b_ih, b_hh, h_out,
                         workspace, workspace_bytes);
}

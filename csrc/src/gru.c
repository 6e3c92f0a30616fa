/*
 * gru.c -- GRU layer: forward over a batch of variable-length sequences,
 * backward through time, and the single-step streaming variant.
 *
 * Not a loop of matrix-vector products: the input projections of all T*B
 * steps are one GEMM, the recurrent part one small GEMM per step with W_hh
 * packed once per call.  The gate math runs through the dispatched
 * gru_gates primitive; the backward gate math is portable C below.
 *
 * If lengths are non-increasing (sorted, as packed sequences usually are),
 * the rows still running at step t are a prefix, and the per-step GEMMs
 * cover only that prefix.
 */
#include "qkernels.h" /* dre__step_check, shared with dre_gru_step_i8 */

#include <string.h>

/* ---- validation shared by forward and backward ---- */

static dre_status check_dims(int64_t T, int64_t B, int64_t I, int64_t H) {
    size_t tmp;
    if (T < 0 || B < 0 || I < 0 || H < 0) return DRE_ERR_SIZE;
    if (!dre__mul3(&tmp, T, B, 4 * H) || !dre__mul3(&tmp, T, B, I) ||
        !dre__mul3(&tmp, 3 * H, H > I ? H : I, 1))
        return DRE_ERR_SIZE;
    return DRE_OK;
}

static dre_status check_lengths(int64_t T, int64_t B, const int32_t *lengths) {
    if (lengths == NULL) return DRE_OK;
    for (int64_t b = 0; b < B; ++b)
        if (lengths[b] < 0 || (int64_t)lengths[b] > T) return DRE_ERR_INDEX;
    return DRE_OK;
}

static int64_t seq_len(const int32_t *lengths, int64_t b, int64_t T) {
    return lengths ? (int64_t)lengths[b] : T;
}

/* Number of leading rows to run at step t: the active prefix when lengths
 * are non-increasing, else all B rows (inactive rows are then skipped in the
 * element-wise part and their GEMM rows ignored). */
static int64_t active_rows(const int32_t *lengths, int sorted, int64_t B, int64_t t) {
    if (lengths == NULL || !sorted) return B;
    int64_t lo = 0, hi = B; /* first b with lengths[b] <= t */
    while (lo < hi) {
        const int64_t mid = lo + (hi - lo) / 2;
        if ((int64_t)lengths[mid] > t) lo = mid + 1; else hi = mid;
    }
    return lo;
}

static int lengths_sorted(const int32_t *lengths, int64_t B) {
    if (lengths == NULL) return 1;
    for (int64_t b = 1; b < B; ++b)
        if (lengths[b] > lengths[b - 1]) return 0;
    return 1;
}

/* ---- workspace layouts ---- */

typedef struct {
    size_t wih_p, whh_p, gi, gh, zero_h, total; /* byte offsets */
} fwd_layout;

static int fwd_plan(int64_t T, int64_t B, int64_t I, int64_t H, fwd_layout *L) {
    size_t off = 0, n;
    const size_t f = sizeof(float);
    L->wih_p = off; n = dre__packb_floats(I, 3 * H) * f; off = dre__round64(off + n);
    L->whh_p = off; n = dre__packb_floats(H, 3 * H) * f; off = dre__round64(off + n);
    L->gi = off;
    if (!dre__mul3(&n, T * B, 3 * H, (int64_t)f)) return 0;
    off = dre__round64(off + n);
    L->gh = off;
    if (!dre__mul3(&n, B, 3 * H, (int64_t)f)) return 0;
    off = dre__round64(off + n);
    L->zero_h = off;
    if (!dre__mul3(&n, B, H, (int64_t)f)) return 0;
    off = dre__round64(off + n);
    return dre__ws_total(&L->total, off);
}

size_t dre_gru_cache_floats(int64_t T, int64_t B, int64_t H) {
    size_t n;
    if (T < 0 || B < 0 || H < 0 || !dre__mul3(&n, T, B, 4 * H)) return 0;
    return n;
}

size_t dre_gru_forward_workspace_size(int64_t T, int64_t B, int64_t I, int64_t H) {
    fwd_layout L;
    if (check_dims(T, B, I, H) != DRE_OK || !fwd_plan(T, B, I, H, &L)) return 0;
    return L.total;
}

dre_status dre_gru_forward(int64_t T, int64_t B, int64_t I, int64_t H,
                           const float *x, const int32_t *lengths, const float *h0,
                           const float *W_ih, const float *W_hh,
                           const float *b_ih, const float *b_hh,
                           float *y, float *h_n, float *cache,
                           void *workspace, size_t workspace_bytes) {
    dre_status st = check_dims(T, B, I, H);
    if (st != DRE_OK) return st;
    fwd_layout L;
    if (!fwd_plan(T, B, I, H, &L)) return DRE_ERR_SIZE;
    const int64_t TB = T * B, G = 3 * H;
    if (B > 0 && H > 0) {
        if (h_n == NULL) return DRE_ERR_NULL;
        if (TB > 0 && (y == NULL || (I > 0 && x == NULL))) return DRE_ERR_NULL;
        if (W_hh == NULL || b_ih == NULL || b_hh == NULL || (I > 0 && W_ih == NULL))
            return DRE_ERR_NULL;
        if (workspace == NULL || workspace_bytes < L.total) return DRE_ERR_WORKSPACE;
    }
    if ((st = check_lengths(T, B, lengths)) != DRE_OK) return st;
    if (B == 0 || H == 0) return DRE_OK;

    const dre_kernels *kt = dre__kernels();
    char *ws = dre__ws_align(workspace);
    float *wih_p = (float *)(ws + L.wih_p), *whh_p = (float *)(ws + L.whh_p);
    float *gi = (float *)(ws + L.gi), *gh = (float *)(ws + L.gh);
    float *zero_h = (float *)(ws + L.zero_h);
    const int sorted = lengths_sorted(lengths, B);

    /* Input projections of every step at once: gi = x W_ih^T + b_ih (the
     * bias is added as the GEMM stores, not by a pass over gi first). */
    if (I > 0 && TB > 0) {
        dre__packb(1, I, G, W_ih, I, wih_p);
        dre__gemm_packed_bias(TB, G, I, 1.0f, x, I, 1, wih_p, 0.0f, b_ih, gi, G, kt);
    } else {
        for (int64_t r = 0; r < TB; ++r) memcpy(gi + r * G, b_ih, (size_t)G * sizeof(float));
    }
    dre__packb(1, H, G, W_hh, H, whh_p);

    const float *h_init = h0;
    if (h_init == NULL) {
        memset(zero_h, 0, (size_t)(B * H) * sizeof(float));
        h_init = zero_h;
    }
    for (int64_t t = 0; t < T; ++t) {
        const float *hprev = (t == 0) ? h_init : y + (t - 1) * B * H;
        float *yt = y + t * B * H;
        const int64_t M = active_rows(lengths, sorted, B, t);
        if (M > 0) dre__gemm_packed_bias(M, G, H, 1.0f, hprev, H, 1, whh_p, 0.0f, b_hh, gh, G, kt);
        for (int64_t b = 0; b < B; ++b) {
            float *c = cache ? cache + (t * B + b) * 4 * H : NULL;
            if (b < M && t < seq_len(lengths, b, T)) {
                kt->gru_gates(H, gi + (t * B + b) * G, gh + b * G, hprev + b * H,
                              yt + b * H, c);
            } else {
                memset(yt + b * H, 0, (size_t)H * sizeof(float));
                if (c) memset(c, 0, (size_t)(4 * H) * sizeof(float));
            }
        }
    }
    for (int64_t b = 0; b < B; ++b) {
        const int64_t len = seq_len(lengths, b, T);
        const float *src = (len == 0) ? h_init + b * H : y + ((len - 1) * B + b) * H;
        memcpy(h_n + b * H, src, (size_t)H * sizeof(float));
    }
    return DRE_OK;
}

/* ---- backward ---- */

typedef struct {
    size_t whh_p, wih_p, dgi, dghn, dh, dh2, dbias, pack, total;
} bwd_layout;

static int bwd_plan(int64_t T, int64_t B, int64_t I, int64_t H, bwd_layout *L) {
    size_t off = 0, n, p1, p2;
    const size_t f = sizeof(float);
    const int64_t TB = T * B;
    /* W_hh packed as two K ranges: the r,z rows (2H) and the n rows (H) */
    L->whh_p = off;
    n = (dre__packb_floats(2 * H, H) + dre__packb_floats(H, H)) * f;
    off = dre__round64(off + n);
    L->wih_p = off; n = dre__packb_floats(3 * H, I) * f; off = dre__round64(off + n);
    L->dgi = off;
    if (!dre__mul3(&n, TB, 3 * H, (int64_t)f)) return 0;
    off = dre__round64(off + n);
    /* recurrent-side gradient: only its n block differs from dgi */
    L->dghn = off;
    if (!dre__mul3(&n, TB, H, (int64_t)f)) return 0;
    off = dre__round64(off + n);
    L->dh = off;
    if (!dre__mul3(&n, B, H, (int64_t)f)) return 0;
    off = dre__round64(off + n);
    L->dh2 = off; off = dre__round64(off + n);
    /* bias-gradient accumulators: 3H (input side) + H (n block of b_hh) */
    L->dbias = off;
    if (!dre__mul3(&n, 4, H, (int64_t)f)) return 0;
    off = dre__round64(off + n);
    /* one region reused for packing x (TB x I), y (TB x H) and h0 (B x H) */
    p1 = dre__packb_floats(TB, I);
    p2 = dre__packb_floats(TB, H);
    L->pack = off;
    n = (p1 > p2 ? p1 : p2) * f;
    off = dre__round64(off + n);
    return dre__ws_total(&L->total, off);
}

size_t dre_gru_backward_workspace_size(int64_t T, int64_t B, int64_t I, int64_t H) {
    bwd_layout L;
    if (check_dims(T, B, I, H) != DRE_OK || !bwd_plan(T, B, I, H, &L)) return 0;
    return L.total;
}

/* Gate backward for one (t, b): given dh (gradient of h_t from later
 * steps) and dy (NULL: none; dh_t = dh + dy), the cached r, z, n, ghn and
 * h_{t-1} (NULL: the zero initial state), write the gradients of the
 * pre-activations, dgi = [dr_pre, dz_pre, dn_pre] (input side), and of the
 * recurrent n pre-activation, dghn = dn_pre * r (the recurrent r and z
 * gradients equal the input-side ones, so they are not stored twice); the
 * direct part of dh_{t-1}, dh_t * z; and add dgi to dbi and dghn to dbhn
 * (the bias gradients, summed here while the row is in registers).
 *   h_t = n + z (h_{t-1} - n),  n = tanh(a_n + r ghn). */
/* The loop body with the two optional inputs as compile-time flags, so each
 * of the four instances has no branch inside and gcc vectorises it. */
static inline void gates_backward_loop(int64_t H, const float *DRE_RESTRICT dh,
                                       const float *DRE_RESTRICT dy,
                                       const float *DRE_RESTRICT cache,
                                       const float *DRE_RESTRICT hprev,
                                       float *DRE_RESTRICT dgi, float *DRE_RESTRICT dghn,
                                       float *DRE_RESTRICT dh_direct,
                                       float *DRE_RESTRICT dbi, float *DRE_RESTRICT dbhn,
                                       const int has_dy, const int has_h) {
    const float *r = cache, *z = cache + H, *n = cache + 2 * H, *ghn = cache + 3 * H;
    for (int64_t j = 0; j < H; ++j) {
        const float g = has_dy ? dh[j] + dy[j] : dh[j];
        const float dn_pre = g * (1.0f - z[j]) * (1.0f - n[j] * n[j]);
        const float hp = has_h ? hprev[j] : 0.0f;
        const float dz_pre = g * (hp - n[j]) * z[j] * (1.0f - z[j]);
        const float dr_pre = dn_pre * ghn[j] * r[j] * (1.0f - r[j]);
        const float dhn = dn_pre * r[j];
        dgi[j] = dr_pre;
        dgi[H + j] = dz_pre;
        dgi[2 * H + j] = dn_pre;
        dghn[j] = dhn;
        dh_direct[j] = g * z[j];
        dbi[j] += dr_pre;
        dbi[H + j] += dz_pre;
        dbi[2 * H + j] += dn_pre;
        dbhn[j] += dhn;
    }
}

static void gates_backward(int64_t H, const float *dh, const float *dy, const float *cache,
                           const float *hprev, float *dgi, float *dghn, float *dh_direct,
                           float *dbi, float *dbhn) {
    if (dy && hprev)
        gates_backward_loop(H, dh, dy, cache, hprev, dgi, dghn, dh_direct, dbi, dbhn, 1, 1);
    else if (dy)
        gates_backward_loop(H, dh, dy, cache, hprev, dgi, dghn, dh_direct, dbi, dbhn, 1, 0);
    else if (hprev)
        gates_backward_loop(H, dh, dy, cache, hprev, dgi, dghn, dh_direct, dbi, dbhn, 0, 1);
    else
        gates_backward_loop(H, dh, dy, cache, hprev, dgi, dghn, dh_direct, dbi, dbhn, 0, 0);
}

dre_status dre_gru_backward(int64_t T, int64_t B, int64_t I, int64_t H,
                            const float *x, const int32_t *lengths, const float *h0,
                            const float *W_ih, const float *W_hh,
                            const float *y, const float *cache,
                            const float *dy, const float *dh_n,
                            float *dx, float *dh0,
                            float *dW_ih, float *dW_hh, float *db_ih, float *db_hh,
                            void *workspace, size_t workspace_bytes) {
    dre_status st = check_dims(T, B, I, H);
    if (st != DRE_OK) return st;
    bwd_layout L;
    if (!bwd_plan(T, B, I, H, &L)) return DRE_ERR_SIZE;
    const int64_t TB = T * B, G = 3 * H;
    if (B > 0 && H > 0) {
        if (W_hh == NULL || (I > 0 && W_ih == NULL)) return DRE_ERR_NULL;
        if (TB > 0 && (y == NULL || cache == NULL || (I > 0 && x == NULL))) return DRE_ERR_NULL;
        if (workspace == NULL || workspace_bytes < L.total) return DRE_ERR_WORKSPACE;
    }
    if ((st = check_lengths(T, B, lengths)) != DRE_OK) return st;
    if (B == 0) return DRE_OK;
    if (H == 0) {
        if (dx && TB > 0 && I > 0) memset(dx, 0, (size_t)(TB * I) * sizeof(float));
        return DRE_OK;
    }

    const dre_kernels *kt = dre__kernels();
    char *ws = dre__ws_align(workspace);
    float *whh_p = (float *)(ws + L.whh_p), *wih_p = (float *)(ws + L.wih_p);
    float *dgi = (float *)(ws + L.dgi), *dghn = (float *)(ws + L.dghn);
    float *dh = (float *)(ws + L.dh), *dh2 = (float *)(ws + L.dh2);
    float *dbi = (float *)(ws + L.dbias), *dbhn = dbi + G;
    float *whh_rz_p = whh_p, *whh_n_p = whh_p + dre__packb_floats(2 * H, H);
    float *pack = (float *)(ws + L.pack);
    const int sorted = lengths_sorted(lengths, B);

    /* dh holds the gradient of each sequence's current state; it starts as
     * dh_n, which reaches a sequence at its own last step. */
    if (dh_n) memcpy(dh, dh_n, (size_t)(B * H) * sizeof(float));
    else memset(dh, 0, (size_t)(B * H) * sizeof(float));
    memset(dbi, 0, (size_t)(4 * H) * sizeof(float));
    /* d h_{t-1} += dgh_t W_hh = dgi_t[:, :2H] W_hh[:2H] + dghn_t W_hh[2H:]:
     * B operands are row ranges of W_hh [3H][H] itself. */
    dre__packb(0, 2 * H, H, W_hh, H, whh_rz_p);
    dre__packb(0, H, H, W_hh + 2 * H * H, H, whh_n_p);

    for (int64_t t = T - 1; t >= 0; --t) {
        const int64_t M = active_rows(lengths, sorted, B, t);
        float *dgi_t = dgi + t * B * G, *dghn_t = dghn + t * B * H;
        for (int64_t b = 0; b < B; ++b) {
            float *dnext = dh2 + b * H;
            if (b < M && t < seq_len(lengths, b, T)) {
                const float *hprev = (t == 0) ? (h0 ? h0 + b * H : NULL)
                                              : y + ((t - 1) * B + b) * H;
                gates_backward(H, dh + b * H, dy ? dy + (t * B + b) * H : NULL,
                               cache + (t * B + b) * 4 * H, hprev,
                               dgi_t + b * G, dghn_t + b * H, dnext, dbi, dbhn);
            } else {
                /* padded step: no gradient flows; its rows of the weight
                 * GEMMs below must be zero */
                memcpy(dnext, dh + b * H, (size_t)H * sizeof(float));
                memset(dgi_t + b * G, 0, (size_t)G * sizeof(float));
                memset(dghn_t + b * H, 0, (size_t)H * sizeof(float));
            }
        }
        if (M > 0) {
            dre__gemm_packed(M, H, 2 * H, 1.0f, dgi_t, G, 1, whh_rz_p, 1.0f, dh2, H, kt);
            dre__gemm_packed(M, H, H, 1.0f, dghn_t, H, 1, whh_n_p, 1.0f, dh2, H, kt);
        }
        float *swap = dh; dh = dh2; dh2 = swap;
    }
    if (dh0) memcpy(dh0, dh, (size_t)(B * H) * sizeof(float));

    if (TB == 0) return DRE_OK;
    /* dx = dgi W_ih (padded rows of dgi are zero, so dx is zero there) */
    if (dx && I > 0) {
        dre__packb(0, G, I, W_ih, I, wih_p);
        dre__gemm_packed(TB, I, G, 1.0f, dgi, G, 1, wih_p, 0.0f, dx, I, kt);
    }
    /* dW_ih += dgi^T x */
    if (dW_ih && I > 0) {
        dre__packb(0, TB, I, x, I, pack);
        dre__gemm_packed(G, I, TB, 1.0f, dgi, 1, G, pack, 1.0f, dW_ih, I, kt);
    }
    /* dW_hh += dgh_0^T h0 + sum_{t>=1} dgh_t^T y_{t-1}, where the rows of
     * dgh^T are those of dgi^T (r, z blocks) and of dghn^T (n block) */
    if (dW_hh) {
        if (T > 1) {
            const int64_t K1 = (T - 1) * B;
            dre__packb(0, K1, H, y, H, pack);
            dre__gemm_packed(2 * H, H, K1, 1.0f, dgi + B * G, 1, G, pack, 1.0f, dW_hh, H, kt);
            dre__gemm_packed(H, H, K1, 1.0f, dghn + B * H, 1, H, pack, 1.0f,
                             dW_hh + 2 * H * H, H, kt);
        }
        if (h0) {
            dre__packb(0, B, H, h0, H, pack);
            dre__gemm_packed(2 * H, H, B, 1.0f, dgi, 1, G, pack, 1.0f, dW_hh, H, kt);
            dre__gemm_packed(H, H, B, 1.0f, dghn, 1, H, pack, 1.0f, dW_hh + 2 * H * H, H, kt);
        }
    }
    if (db_ih)
        for (int64_t j = 0; j < G; ++j) db_ih[j] += dbi[j];
    if (db_hh) {
        for (int64_t j = 0; j < 2 * H; ++j) db_hh[j] += dbi[j];
        for (int64_t j = 0; j < H; ++j) db_hh[2 * H + j] += dbhn[j];
    }
    return DRE_OK;
}

/* ---- single step ---- */

size_t dre_gru_step_workspace_size(int64_t I, int64_t H) {
    size_t n, total;
    if (I < 0 || H < 0 || !dre__mul3(&n, 6, H, (int64_t)sizeof(float))) return 0;
    if (!dre__ws_total(&total, n)) return 0;
    return total;
}

/* Arguments of dre_gru_step, dre_gru_step_f16 and dre_gru_step_i8 (weights
 * of any type).  DRE_OK with *run = 0: nothing to do (H == 0). */
dre_status dre__step_check(int64_t I, int64_t H, const float *x, const float *h,
                             const void *W_ih, const void *W_hh,
                             const float *b_ih, const float *b_hh, const float *h_out,
                             const void *workspace, size_t workspace_bytes, int *run) {
    *run = 0;
    if (check_dims(1, 1, I, H) != DRE_OK) return DRE_ERR_SIZE;
    if (H == 0) return DRE_OK;
    if (h == NULL || h_out == NULL || W_hh == NULL || b_ih == NULL || b_hh == NULL ||
        (I > 0 && (x == NULL || W_ih == NULL)))
        return DRE_ERR_NULL;
    if (workspace == NULL || workspace_bytes < dre_gru_step_workspace_size(I, H))
        return DRE_ERR_WORKSPACE;
    *run = 1;
    return DRE_OK;
}

dre_status dre_gru_step(int64_t I, int64_t H, const float *x, const float *h,
                        const float *W_ih, const float *W_hh,
                        const float *b_ih, const float *b_hh,
                        float *h_out, void *workspace, size_t workspace_bytes) {
    int run;
    const dre_status st = dre__step_check(I, H, x, h, W_ih, W_hh, b_ih, b_hh, h_out, workspace,
                                     workspace_bytes, &run);
    if (!run) return st;
    const dre_kernels *kt = dre__kernels();
    float *gi = (float *)dre__ws_align(workspace), *gh = gi + 3 * H;
    kt->gemv(3 * H, I, W_ih, I, NULL, x, b_ih, gi);
    kt->gemv(3 * H, H, W_hh, H, NULL, h, b_hh, gh);
    kt->gru_gates(H, gi, gh, h, h_out, NULL);
    return DRE_OK;
}

dre_status dre_gru_step_f16(int64_t I, int64_t H, const float *x, const float *h,
                            const uint16_t *W_ih, const uint16_t *W_hh,
                            const float *b_ih, const float *b_hh,
                            float *h_out, void *workspace, size_t workspace_bytes) {
    int run;
    const dre_status st = dre__step_check(I, H, x, h, W_ih, W_hh, b_ih, b_hh, h_out, workspace,
                                     workspace_bytes, &run);
    if (!run) return st;
    const dre_kernels *kt = dre__kernels();
    float *gi = (float *)dre__ws_align(workspace), *gh = gi + 3 * H;
    kt->gemv_f16(3 * H, I, W_ih, I, x, b_ih, gi);
    kt->gemv_f16(3 * H, H, W_hh, H, h, b_hh, gh);
    kt->gru_gates(H, gi, gh, h, h_out, NULL);
    return DRE_OK;
}

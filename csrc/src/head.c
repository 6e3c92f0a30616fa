/*
 * head.c -- dense head u = act(h W_p^T + b_p), forward and backward.
 *
 * Both matrix products go through the packed GEMM of sgemm.c, so the head
 * runs on whatever SIMD path is active.  Shapes: h [N][H], W_p [D][H],
 * b_p [D], u and du [N][D].
 *
 * Workspace layouts (byte offsets from the workspace pointer rounded up to
 * 64 bytes; the sizes include 63 bytes of slack for that rounding, so the
 * caller's buffer needs no particular alignment):
 *   forward:  [ W_p^T packed: packb(H, D) floats ]
 *   backward: [ g = du * act'(u): N*D floats ] [ pack: max(packb(D, H),
 *             packb(N, H)) floats, reused for W_p then h ]
 *             [ column sums of g: D doubles ]
 * Nothing is needed (size 0) when a product has no work to do.
 */
#include "internal.h"

#include <math.h>
#include <string.h>

/* ---- shared helpers ---- */

/* Bytes of a packed B with K rows and N columns; 0 if K or N is 0.  Returns
 * 0 on overflow. */
static int head_pack_bytes(int64_t K, int64_t N, size_t *out) {
    size_t f;
    if (K == 0 || N == 0) { *out = 0; return 1; }
    f = dre__packb_floats(K, N);
    if (f == 0 || f > (size_t)INT64_MAX) return 0;
    return dre__mul2(out, (int64_t)f, (int64_t)sizeof(float));
}

/* Sizes valid: non-negative, every array's byte count representable, and
 * every single dimension small enough that the panel arithmetic of
 * dre__packb_floats cannot overflow even when another dimension is 0. */
static dre_status head_check_dims(int64_t N, int64_t H, int64_t D) {
    size_t t;
    if (N < 0 || H < 0 || D < 0) return DRE_ERR_SIZE;
    if (!dre__mul2(&t, N, 64) || !dre__mul2(&t, H, 64) || !dre__mul2(&t, D, 64))
        return DRE_ERR_SIZE;
    if (!dre__mul3(&t, N, H, (int64_t)sizeof(float)) ||
        !dre__mul3(&t, D, H, (int64_t)sizeof(float)) ||
        !dre__mul3(&t, N, D, (int64_t)sizeof(double)))
        return DRE_ERR_SIZE;
    return DRE_OK;
}


/* ---- forward ---- */

typedef struct {
    size_t wp, total; /* byte offsets; total includes alignment slack */
} head_fwd_layout;

static int head_fwd_plan(int64_t N, int64_t H, int64_t D, head_fwd_layout *L) {
    size_t n, off = 0;
    L->wp = 0;
    if (N > 0 && D > 0 && H > 0) {
        if (!head_pack_bytes(H, D, &n)) return 0;
        off = dre__round64(n);
    }
    return dre__ws_total(&L->total, off);
}

size_t dre_head_forward_workspace_size(int64_t N, int64_t H, int64_t D) {
    head_fwd_layout L;
    if (head_check_dims(N, H, D) != DRE_OK || !head_fwd_plan(N, H, D, &L)) return 0;
    return L.total;
}

dre_status dre_head_forward(int64_t N, int64_t H, int64_t D,
                            const float *h, const float *W_p, const float *b_p,
                            dre_activation act, float *u,
                            void *workspace, size_t workspace_bytes) {
    dre_status st = head_check_dims(N, H, D);
    if (st != DRE_OK) return st;
    head_fwd_layout L;
    if (!head_fwd_plan(N, H, D, &L)) return DRE_ERR_SIZE;
    /* a pointer is required when its array is non-empty */
    if ((N > 0 && H > 0 && h == NULL) || (D > 0 && H > 0 && W_p == NULL) ||
        (N > 0 && D > 0 && u == NULL))
        return DRE_ERR_NULL;
    if (act != DRE_ACT_IDENTITY && act != DRE_ACT_TANH) return DRE_ERR_ARG;
    if (L.total > 0 && (workspace == NULL || workspace_bytes < L.total))
        return DRE_ERR_WORKSPACE;
    if (N == 0 || D == 0) return DRE_OK;

    /* u = h W_p^T (beta = 0: u is not read) */
    if (H > 0) {
        float *wp = (float *)(dre__ws_align(workspace) + L.wp);
        dre__packb(1, H, D, W_p, H, wp);
        dre__gemm_packed(N, D, H, 1.0f, h, H, 1, wp, 0.0f, u, D, dre__kernels());
    } else {
        memset(u, 0, (size_t)(N * D) * sizeof(float));
    }
    /* u = act(u + b_p) in one pass */
    const dre_kernels *kt = dre__kernels();
    for (int64_t i = 0; i < N; ++i) {
        float *ui = u + i * D;
        if (b_p)
            for (int64_t j = 0; j < D; ++j) ui[j] += b_p[j];
        if (act == DRE_ACT_TANH) kt->vtanh(D, ui);
    }
    return DRE_OK;
}

/* ---- backward ---- */

typedef struct {
    size_t g, pack, colsum, total; /* byte offsets; total includes slack */
} head_bwd_layout;

static int head_bwd_plan(int64_t N, int64_t H, int64_t D, head_bwd_layout *L) {
    size_t off = 0, n, p1, p2;
    L->g = L->pack = L->colsum = 0;
    if (N > 0 && D > 0) {
        L->g = off;
        if (!dre__mul3(&n, N, D, (int64_t)sizeof(float))) return 0;
        off = dre__round64(off + n);
        /* dh = g W_p packs W_p (K = D, N = H); dW_p = g^T h packs h (K = N, N = H) */
        if (!head_pack_bytes(D, H, &p1) || !head_pack_bytes(N, H, &p2)) return 0;
        L->pack = off;
        if (!dre__add(&n, off, p1 > p2 ? p1 : p2)) return 0;
        off = dre__round64(n);
        L->colsum = off;
        if (!dre__mul2(&n, D, (int64_t)sizeof(double)) || !dre__add(&n, off, n)) return 0;
        off = dre__round64(n);
    }
    return dre__ws_total(&L->total, off);
}

size_t dre_head_backward_workspace_size(int64_t N, int64_t H, int64_t D) {
    head_bwd_layout L;
    if (head_check_dims(N, H, D) != DRE_OK || !head_bwd_plan(N, H, D, &L)) return 0;
    return L.total;
}

dre_status dre_head_backward(int64_t N, int64_t H, int64_t D,
                             const float *h, const float *W_p, dre_activation act,
                             const float *u, const float *du,
                             float *dh, float *dW_p, float *db_p,
                             void *workspace, size_t workspace_bytes) {
    dre_status st = head_check_dims(N, H, D);
    if (st != DRE_OK) return st;
    head_bwd_layout L;
    if (!head_bwd_plan(N, H, D, &L)) return DRE_ERR_SIZE;
    if ((N > 0 && H > 0 && h == NULL) || (D > 0 && H > 0 && W_p == NULL) ||
        (N > 0 && D > 0 && (u == NULL || du == NULL)))
        return DRE_ERR_NULL;
    if (act != DRE_ACT_IDENTITY && act != DRE_ACT_TANH) return DRE_ERR_ARG;
    if (L.total > 0 && (workspace == NULL || workspace_bytes < L.total))
        return DRE_ERR_WORKSPACE;
    if (N == 0 || D == 0) {
        /* dh = g W_p with an empty inner dimension: zeros; nothing accumulates */
        if (dh && N > 0 && H > 0) memset(dh, 0, (size_t)(N * H) * sizeof(float));
        return DRE_OK;
    }

    const dre_kernels *kt = dre__kernels();
    char *ws = dre__ws_align(workspace);
    float *pack = (float *)(ws + L.pack);

    /* g = du * act'(pre) with tanh' = 1 - u^2 read off the forward output;
     * identity: g is du itself (no copy). */
    const float *g = du;
    if (act == DRE_ACT_TANH) {
        float *gw = (float *)(ws + L.g);
        const int64_t ND = N * D;
        for (int64_t k = 0; k < ND; ++k) gw[k] = du[k] * (1.0f - u[k] * u[k]);
        g = gw;
    }

    /* dh = g W_p: [N][D] x [D][H], overwritten */
    if (dh && H > 0) {
        dre__packb(0, D, H, W_p, H, pack);
        dre__gemm_packed(N, H, D, 1.0f, g, D, 1, pack, 0.0f, dh, H, kt);
    }
    /* dW_p += g^T h: A(i, k) = g[k][i] (rsa = 1, csa = D), B = h [N][H] */
    if (dW_p && H > 0) {
        dre__packb(0, N, H, h, H, pack);
        dre__gemm_packed(D, H, N, 1.0f, g, 1, D, pack, 1.0f, dW_p, H, kt);
    }
    /* db_p += column sums of g, accumulated in double row by row */
    if (db_p) {
        double *cs = (double *)(ws + L.colsum);
        for (int64_t j = 0; j < D; ++j) cs[j] = 0.0;
        for (int64_t i = 0; i < N; ++i) {
            const float *gi = g + i * D;
            for (int64_t j = 0; j < D; ++j) cs[j] += (double)gi[j];
        }
        for (int64_t j = 0; j < D; ++j) db_p[j] = (float)((double)db_p[j] + cs[j]);
    }
    return DRE_OK;
}

/* ---- one row (streaming) ---- */

dre_status dre_head_forward_row(int64_t H, int64_t D, const float *h, const float *W_p,
                                const float *b_p, dre_activation act, float *u) {
    size_t tmp;
    if (H < 0 || D < 0 || !dre__mul2(&tmp, H, D)) return DRE_ERR_SIZE;
    if (act != DRE_ACT_IDENTITY && act != DRE_ACT_TANH) return DRE_ERR_ARG;
    if (D == 0) return DRE_OK;
    if (u == NULL || (H > 0 && (h == NULL || W_p == NULL))) return DRE_ERR_NULL;
    const dre_kernels *kt = dre__kernels();
    kt->gemv(D, H, W_p, H, NULL, h, b_p, u);
    if (act == DRE_ACT_TANH) kt->vtanh(D, u);
    return DRE_OK;
}

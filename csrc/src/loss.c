/*
 * loss.c -- sampled losses over a shared set of S columns: softmax
 * cross-entropy with logQ correction and GRU4Rec's BPR-max.
 *
 * Logits  l[b][j] = U[b] . O_s[j] + b_s[j] - logq[j]  come from one packed
 * GEMM (B x S, depth D).  Each row is then reduced in double precision into
 * its loss and the gradient of the *mean* loss with respect to its logits,
 * which overwrites the logits in place (G, B x S floats).  Then
 *     dU   = G O_s        (GEMM, overwritten)
 *     dO_s += G^T U       (GEMM, A read transposed through strides)
 *     db_s += sum_b G[b]  (double column sums; logq is a constant)
 *
 * Numerical stability (|l| up to ~1e4 and beyond): both softmaxes are
 * max-shifted, the sigmoids only ever evaluate exp(-|x|),
 * sigma(x)(1 - sigma(x)) is formed as sigma(x) sigma(-x) (no cancellation),
 * and every row reduction runs in double.  The BPR-max gradient is written in a form whose terms stay
 * bounded (see bpr_max_row).
 *
 * Workspace layout (byte offsets from the workspace pointer rounded up to
 * 64 bytes; the size includes 63 bytes of slack for that rounding, so the
 * caller's buffer needs no particular alignment):
 *   [ logits, then G: B*S floats ]
 *   [ pack: max(packb(D,S), packb(S,D), packb(B,D)) floats, reused for
 *     O_s^T, O_s and U in turn ]
 *   [ 5 x S doubles: column offsets b_s - logq, row logits, softmax
 *     numerators, sigmoids, db_s column sums ]
 * The size is 0 when B == 0 or S == 0 (nothing needs scratch then).
 */
#include "internal.h"

#include <float.h>
#include <math.h>
#include <string.h>

/* GRU4Rec's constant inside the BPR-max log (keeps it finite when every
 * negative outranks the target by a wide margin). */
#define DRE_BPR_EPS 1e-24

/* ---- sizes ---- */

static int loss_pack_bytes(int64_t K, int64_t N, size_t *out) {
    size_t f;
    if (K == 0 || N == 0) { *out = 0; return 1; }
    f = dre__packb_floats(K, N);
    if (f == 0 || f > (size_t)INT64_MAX) return 0;
    return dre__mul2(out, (int64_t)f, (int64_t)sizeof(float));
}

static dre_status loss_check_dims(int64_t B, int64_t S, int64_t D) {
    size_t t;
    if (B < 0 || S < 0 || D < 0) return DRE_ERR_SIZE;
    /* single dimensions bounded too, so panel arithmetic cannot overflow
     * when another dimension is 0 */
    if (!dre__mul2(&t, B, 64) || !dre__mul2(&t, S, 64) || !dre__mul2(&t, D, 64))
        return DRE_ERR_SIZE;
    if (!dre__mul3(&t, B, S, (int64_t)sizeof(float)) ||
        !dre__mul3(&t, B, D, (int64_t)sizeof(float)) ||
        !dre__mul3(&t, S, D, (int64_t)sizeof(float)) ||
        !dre__mul3(&t, S, 5, (int64_t)sizeof(double)))
        return DRE_ERR_SIZE;
    return DRE_OK;
}

typedef struct {
    size_t logits, pack, dbl, total; /* byte offsets; total includes slack */
} loss_layout;

static int loss_plan(int64_t B, int64_t S, int64_t D, loss_layout *L) {
    size_t off = 0, n, p1, p2, p3, p;
    L->logits = L->pack = L->dbl = 0;
    L->total = 0;
    if (B == 0 || S == 0) return 1;
    L->logits = off;
    if (!dre__mul3(&n, B, S, (int64_t)sizeof(float))) return 0;
    off = dre__round64(n);
    if (!loss_pack_bytes(D, S, &p1) || !loss_pack_bytes(S, D, &p2) ||
        !loss_pack_bytes(B, D, &p3))
        return 0;
    p = p1 > p2 ? p1 : p2;
    p = p > p3 ? p : p3;
    L->pack = off;
    if (!dre__add(&n, off, p)) return 0;
    off = dre__round64(n);
    L->dbl = off;
    if (!dre__mul3(&n, S, 5, (int64_t)sizeof(double)) || !dre__add(&n, off, n)) return 0;
    off = dre__round64(n);
    return dre__ws_total(&L->total, off);
}

size_t dre_sampled_loss_workspace_size(int64_t B, int64_t S, int64_t D) {
    loss_layout L;
    if (loss_check_dims(B, S, D) != DRE_OK || !loss_plan(B, S, D, &L)) return 0;
    return L.total;
}

/* ---- row math ---- */

/* sigmoid(x) and sigmoid(-x) = 1 - sigmoid(x) from one exp of -|x| (never
 * overflows, and the smaller of the two keeps full relative precision
 * instead of being formed as 1 - s). */
static void loss_sigmoid2(double x, double *s, double *q) {
    const double e = exp(-fabs(x));
    const double r = 1.0 / (1.0 + e);
    if (x >= 0.0) {
        *s = r;
        *q = e * r;
    } else {
        *s = e * r;
        *q = r;
    }
}

static int loss_masked(const int32_t *col_ids, int64_t j, int64_t t) {
    return col_ids != NULL && j != t && col_ids[j] == col_ids[t];
}

/* Softmax cross-entropy of one row over its unmasked columns (the target is
 * never masked):  loss = logsumexp_j l_j - l_t,  dloss/dl_j = p_j - [j==t].
 * l [S] holds the logits; e [S] is scratch; grad [S] receives scale times
 * the gradient (0 on masked columns).  Returns the row loss. */
static double xe_row(int64_t S, int64_t t, const int32_t *col_ids, const double *l,
                     float *e, double scale, float *grad, const dre_kernels *kt) {
    double m = l[t], sum = 0.0;
    for (int64_t j = 0; j < S; ++j)
        if (!loss_masked(col_ids, j, t) && l[j] > m) m = l[j];
    /* the shifted logits are <= 0 (masked ones may exceed: zeroed below);
     * the dispatched vector exp is accurate to ~1 ulp, the sum is in double */
    for (int64_t j = 0; j < S; ++j) e[j] = (float)(l[j] - m);
    kt->vexp(S, e);
    for (int64_t j = 0; j < S; ++j) {
        if (loss_masked(col_ids, j, t)) e[j] = 0.0f;
        sum += (double)e[j];
    }
    /* sum >= exp(l_t - m) > 0 unless l_t is -inf or NaN (then IEEE rules) */
    const double inv = 1.0 / sum;
    for (int64_t j = 0; j < S; ++j) grad[j] = (float)(scale * ((double)e[j] * inv));
    grad[t] = (float)(scale * ((double)e[t] * inv - 1.0));
    return (m + log(sum)) - l[t];
}

/* GRU4Rec's BPR-max for one row (Hidasi & Karatzoglou, "Recurrent Neural
 * Networks with Top-k Gains for Session-based Recommendations", 2018; the
 * reference implementation's bpr_max loss with softmax_neg).  Over the
 * negatives N = {j unmasked, j != t}:
 *     w_j   = exp(l_j - m) / sum_{k in N} exp(l_k - m)     (m = max over N)
 *     s_j   = sigmoid(l_t - l_j)
 *     P     = sum_j w_j s_j,   R = sum_j w_j l_j^2
 *     loss  = -log(P + eps) + bpreg * R
 * The gradient includes the path through the softmax weights
 * (dw_j/dl_k = w_j (delta_jk - w_k)), which simplifies to
 *     dP/dl_t = sum_j w_j s_j (1 - s_j)
 *     dP/dl_k = w_k (s_k^2 - P)                  (k in N)
 *     dR/dl_k = w_k (l_k^2 - R + 2 l_k)          (k in N),  dR/dl_t = 0
 *     dloss   = -dP / (P + eps) + bpreg * dR.
 * Since w_k s_k <= P and s(1-s) <= s, |dP/dl| <= 2P for every column, so
 * the 1/(P + eps) factor never amplifies a term beyond 2: the gradient is
 * finite even when P underflows.  With no negatives (S == 1 or all masked)
 * the loss is the constant -log(eps) with a zero gradient.
 * w and s are scratch [S]; grad [S] receives scale times the gradient. */
static double bpr_max_row(int64_t S, int64_t t, const int32_t *col_ids, const double *l,
                          double bpreg, double *w, double *s, double scale, float *grad) {
    int64_t nneg = 0;
    double m = 0.0;
    for (int64_t j = 0; j < S; ++j) {
        if (j == t || loss_masked(col_ids, j, t)) continue;
        if (nneg == 0 || l[j] > m) m = l[j];
        ++nneg;
    }
    for (int64_t j = 0; j < S; ++j) grad[j] = 0.0f;
    if (nneg == 0) return -log(DRE_BPR_EPS);

    double z = 0.0;
    for (int64_t j = 0; j < S; ++j) {
        if (j == t || loss_masked(col_ids, j, t)) {
            w[j] = 0.0;
            continue;
        }
        w[j] = exp(l[j] - m);
        z += w[j];
    }
    const double invz = 1.0 / z; /* z >= 1: the max term is exp(0) */
    const double lt = l[t];
    double P = 0.0, R = 0.0, T = 0.0;
    for (int64_t j = 0; j < S; ++j) {
        if (w[j] == 0.0) {
            s[j] = 0.0;
            continue;
        }
        w[j] *= invz;
        double q;
        loss_sigmoid2(lt - l[j], &s[j], &q);
        P += w[j] * s[j];
        R += w[j] * (l[j] * l[j]);
        T += w[j] * (s[j] * q); /* s (1 - s) without cancellation */
    }
    const double inv = 1.0 / (P + DRE_BPR_EPS);
    for (int64_t j = 0; j < S; ++j) {
        if (w[j] == 0.0) continue; /* target, masked, or underflowed weight */
        const double dP = w[j] * (s[j] * s[j] - P);
        const double dR = w[j] * (l[j] * l[j] - R + 2.0 * l[j]);
        grad[j] = (float)(scale * (-dP * inv + bpreg * dR));
    }
    grad[t] = (float)(scale * (-T * inv));
    return -log(P + DRE_BPR_EPS) + bpreg * R;
}

/* ---- entry point ---- */

dre_status dre_sampled_loss(int64_t B, int64_t S, int64_t D,
                            const float *U, const float *O_s, const float *b_s,
                            const int32_t *target_col, const int32_t *col_ids,
                            const float *logq, dre_loss_kind kind, float bpreg,
                            float *loss, float *row_loss,
                            float *dU, float *dO_s, float *db_s,
                            void *workspace, size_t workspace_bytes) {
    dre_status st = loss_check_dims(B, S, D);
    if (st != DRE_OK) return st;
    loss_layout L;
    if (!loss_plan(B, S, D, &L)) return DRE_ERR_SIZE;
    /* required pointers (an empty array may be NULL) */
    if (loss == NULL || (B > 0 && target_col == NULL) || (B > 0 && D > 0 && U == NULL) ||
        (S > 0 && D > 0 && O_s == NULL))
        return DRE_ERR_NULL;
    if (kind != DRE_LOSS_XE && kind != DRE_LOSS_BPR_MAX) return DRE_ERR_ARG;
    /* BPR-max's regulariser weight must be a finite non-negative number */
    if (kind == DRE_LOSS_BPR_MAX && !(bpreg >= 0.0f && bpreg <= FLT_MAX))
        return DRE_ERR_ARG;
    if (L.total > 0 && (workspace == NULL || workspace_bytes < L.total))
        return DRE_ERR_WORKSPACE;
    /* every target column checked before any output is written */
    int64_t nrows = 0;
    for (int64_t b = 0; b < B; ++b) {
        const int32_t t = target_col[b];
        if (t < -1 || (int64_t)t >= S) return DRE_ERR_INDEX;
        if (t >= 0) ++nrows;
    }

    if (B == 0 || S == 0) {
        /* no column: every row is skipped (checked above); dU = G O_s = 0 */
        *loss = 0.0f;
        if (row_loss) for (int64_t b = 0; b < B; ++b) row_loss[b] = 0.0f;
        if (dU && B > 0 && D > 0) memset(dU, 0, (size_t)(B * D) * sizeof(float));
        return DRE_OK;
    }

    const dre_kernels *kt = dre__kernels();
    char *ws = dre__ws_align(workspace);
    float *G = (float *)(ws + L.logits);
    float *pack = (float *)(ws + L.pack);
    double *off = (double *)(ws + L.dbl);
    double *lrow = off + S, *w = off + 2 * S, *sg = off + 3 * S, *cs = off + 4 * S;

    /* raw logits U O_s^T (beta = 0: G is not read) */
    if (D > 0) {
        dre__packb(1, D, S, O_s, D, pack);
        dre__gemm_packed(B, S, D, 1.0f, U, D, 1, pack, 0.0f, G, S, kt);
    } else {
        memset(G, 0, (size_t)(B * S) * sizeof(float));
    }
    for (int64_t j = 0; j < S; ++j)
        off[j] = (b_s ? (double)b_s[j] : 0.0) - (logq ? (double)logq[j] : 0.0);

    /* per row: loss and gradient of the mean, written over the logits */
    const double scale = nrows > 0 ? 1.0 / (double)nrows : 0.0;
    double total = 0.0;
    for (int64_t b = 0; b < B; ++b) {
        float *gb = G + b * S;
        const int64_t t = target_col[b];
        double lb = 0.0;
        if (t >= 0) {
            for (int64_t j = 0; j < S; ++j) lrow[j] = (double)gb[j] + off[j];
            if (kind == DRE_LOSS_XE)
                lb = xe_row(S, t, col_ids, lrow, (float *)w, scale, gb, kt);
            else
                lb = bpr_max_row(S, t, col_ids, lrow, (double)bpreg, w, sg, scale, gb);
            total += lb;
        } else {
            memset(gb, 0, (size_t)S * sizeof(float));
        }
        if (row_loss) row_loss[b] = (float)lb;
    }
    *loss = (float)(total * scale);

    /* dU = G O_s: [B][S] x [S][D], overwritten */
    if (dU && D > 0) {
        dre__packb(0, S, D, O_s, D, pack);
        dre__gemm_packed(B, D, S, 1.0f, G, S, 1, pack, 0.0f, dU, D, kt);
    }
    /* dO_s += G^T U: A(i, k) = G[k][i] (rsa = 1, csa = S), B = U [B][D] */
    if (dO_s && D > 0) {
        dre__packb(0, B, D, U, D, pack);
        dre__gemm_packed(S, D, B, 1.0f, G, 1, S, pack, 1.0f, dO_s, D, kt);
    }
    /* db_s += column sums of G (d loss / d b_s = d loss / d l) */
    if (db_s) {
        for (int64_t j = 0; j < S; ++j) cs[j] = 0.0;
        for (int64_t b = 0; b < B; ++b) {
            if (target_col[b] < 0) continue;
            const float *gb = G + b * S;
            for (int64_t j = 0; j < S; ++j) cs[j] += (double)gb[j];
        }
        for (int64_t j = 0; j < S; ++j) db_s[j] = (float)((double)db_s[j] + cs[j]);
    }
    return DRE_OK;
}

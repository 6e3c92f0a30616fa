/*
 * reference.h -- straightforward double-precision references of every
 * kernel, written from the header's definitions (not from the kernels):
 * plain loops, no blocking, no packing, no cleverness.  Gradients come from
 * a textbook BPTT (itself checked against finite differences of the forward
 * reference) or from finite differences of the double function directly.
 */
#ifndef DRE_REFERENCE_H
#define DRE_REFERENCE_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static double ref_sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

/* ---- SGEMM ----------------------------------------------------------- */

/* C = alpha op(A) op(B) + beta C; with beta == 0, C is not read.  cabs
 * (may be NULL) receives |alpha| sum |a b| + |beta c|, the scale of the
 * rounding error of each element. */
static void ref_sgemm(int ta, int tb, int64_t M, int64_t N, int64_t K, double alpha,
                      const float *A, int64_t lda, const float *B, int64_t ldb, double beta,
                      const float *C, int64_t ldc, double *out, double *cabs) {
    for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) {
            double s = 0.0, sa = 0.0;
            for (int64_t k = 0; k < K; ++k) {
                const double a = ta ? A[k * lda + i] : A[i * lda + k];
                const double b = tb ? B[j * ldb + k] : B[k * ldb + j];
                s += a * b;
                sa += fabs(a * b);
            }
            double v = alpha * s, va = fabs(alpha) * sa;
            if (beta != 0.0) {
                v += beta * (double)C[i * ldc + j];
                va += fabs(beta * (double)C[i * ldc + j]);
            }
            out[i * N + j] = v;
            if (cabs) cabs[i * N + j] = va;
        }
}

/* ---- GRU (PyTorch nn.GRU semantics, gate order r, z, n) -------------- */

typedef struct {
    int64_t T, B, I, H;
    const float *x, *h0, *W_ih, *W_hh, *b_ih, *b_hh;
    const int32_t *lengths; /* NULL: all T */
} ref_gru_in;

static int64_t ref_len(const ref_gru_in *p, int64_t b) {
    return p->lengths ? (int64_t)p->lengths[b] : p->T;
}

/* Parameters as doubles, so finite differences can perturb them. */
typedef struct {
    double *x, *h0, *W_ih, *W_hh, *b_ih, *b_hh; /* h0 NULL: zeros */
} ref_gru_par;

static void ref_gru_par_init(const ref_gru_in *p, ref_gru_par *d) {
    const int64_t T = p->T, B = p->B, I = p->I, H = p->H;
    d->x = dalloc(T * B * I);
    d->h0 = dalloc(B * H);
    d->W_ih = dalloc(3 * H * I);
    d->W_hh = dalloc(3 * H * H);
    d->b_ih = dalloc(3 * H);
    d->b_hh = dalloc(3 * H);
    for (int64_t i = 0; i < T * B * I; ++i) d->x[i] = p->x[i];
    for (int64_t i = 0; i < B * H; ++i) d->h0[i] = p->h0 ? p->h0[i] : 0.0;
    for (int64_t i = 0; i < 3 * H * I; ++i) d->W_ih[i] = p->W_ih[i];
    for (int64_t i = 0; i < 3 * H * H; ++i) d->W_hh[i] = p->W_hh[i];
    for (int64_t i = 0; i < 3 * H; ++i) {
        d->b_ih[i] = p->b_ih[i];
        d->b_hh[i] = p->b_hh[i];
    }
}

static void ref_gru_par_free(ref_gru_par *d) {
    free(d->x); free(d->h0); free(d->W_ih); free(d->W_hh); free(d->b_ih); free(d->b_hh);
}

/* One step: h' from x [I], h [H]; gates (may be NULL) receives r, z, n,
 * ghn = W_hn h + b_hn. */
static void ref_gru_cell(int64_t I, int64_t H, const double *x, const double *h,
                         const ref_gru_par *d, double *h_out, double *gates) {
    for (int64_t j = 0; j < H; ++j) {
        double gi[3], gh[3];
        for (int g = 0; g < 3; ++g) {
            const int64_t row = g * H + j;
            double si = d->b_ih[row], sh = d->b_hh[row];
            for (int64_t k = 0; k < I; ++k) si += d->W_ih[row * I + k] * x[k];
            for (int64_t k = 0; k < H; ++k) sh += d->W_hh[row * H + k] * h[k];
            gi[g] = si;
            gh[g] = sh;
        }
        const double r = ref_sigmoid(gi[0] + gh[0]);
        const double z = ref_sigmoid(gi[1] + gh[1]);
        const double n = tanh(gi[2] + r * gh[2]);
        h_out[j] = (1.0 - z) * n + z * h[j];
        if (gates) {
            gates[j] = r;
            gates[H + j] = z;
            gates[2 * H + j] = n;
            gates[3 * H + j] = gh[2];
        }
    }
}

/* Forward: y [T][B][H] (zeros at padded steps), h_n [B][H]; gates
 * [T][B][4H] (may be NULL). */
static void ref_gru_forward(const ref_gru_in *p, const ref_gru_par *d, double *y, double *h_n,
                            double *gates) {
    const int64_t T = p->T, B = p->B, I = p->I, H = p->H;
    double *h = dalloc(H), *hn = dalloc(H);
    for (int64_t b = 0; b < B; ++b) {
        const int64_t len = ref_len(p, b);
        memcpy(h, d->h0 + b * H, (size_t)H * sizeof(double));
        for (int64_t t = 0; t < T; ++t) {
            double *yt = y + (t * B + b) * H;
            if (t < len) {
                ref_gru_cell(I, H, d->x + (t * B + b) * I, h, d, hn,
                             gates ? gates + (t * B + b) * 4 * H : NULL);
                memcpy(h, hn, (size_t)H * sizeof(double));
                memcpy(yt, h, (size_t)H * sizeof(double));
            } else {
                memset(yt, 0, (size_t)H * sizeof(double));
                if (gates) memset(gates + (t * B + b) * 4 * H, 0, (size_t)(4 * H) * sizeof(double));
            }
        }
        memcpy(h_n + b * H, h, (size_t)H * sizeof(double));
    }
    free(h);
    free(hn);
}

/* The scalar loss whose gradients backward returns:
 * L = sum over unpadded (t, b) of dy . y  +  sum_b dh_n . h_n. */
static double ref_gru_loss(const ref_gru_in *p, const ref_gru_par *d, const float *dy,
                           const float *dh_n) {
    const int64_t T = p->T, B = p->B, H = p->H;
    double *y = dalloc(T * B * H), *hn = dalloc(B * H);
    ref_gru_forward(p, d, y, hn, NULL);
    double L = 0.0;
    for (int64_t b = 0; b < B; ++b) {
        const int64_t len = ref_len(p, b);
        if (dy)
            for (int64_t t = 0; t < len; ++t)
                for (int64_t j = 0; j < H; ++j)
                    L += (double)dy[(t * B + b) * H + j] * y[(t * B + b) * H + j];
        if (dh_n)
            for (int64_t j = 0; j < H; ++j) L += (double)dh_n[b * H + j] * hn[b * H + j];
    }
    free(y);
    free(hn);
    return L;
}

typedef struct {
    double *dx, *dh0, *dW_ih, *dW_hh, *db_ih, *db_hh;
} ref_gru_grads;

static void ref_gru_grads_init(const ref_gru_in *p, ref_gru_grads *g) {
    const int64_t T = p->T, B = p->B, I = p->I, H = p->H;
    g->dx = dalloc(T * B * I);
    g->dh0 = dalloc(B * H);
    g->dW_ih = dalloc(3 * H * I);
    g->dW_hh = dalloc(3 * H * H);
    g->db_ih = dalloc(3 * H);
    g->db_hh = dalloc(3 * H);
}

static void ref_gru_grads_free(ref_gru_grads *g) {
    free(g->dx); free(g->dh0); free(g->dW_ih); free(g->dW_hh); free(g->db_ih); free(g->db_hh);
}

/* Textbook BPTT, one sequence at a time, in double. */
static void ref_gru_backward(const ref_gru_in *p, const ref_gru_par *d, const float *dy,
                             const float *dh_n, ref_gru_grads *g) {
    const int64_t T = p->T, B = p->B, I = p->I, H = p->H;
    double *y = dalloc(T * B * H), *hn = dalloc(B * H), *gates = dalloc(T * B * 4 * H);
    double *dh = dalloc(H), *dprev = dalloc(H), *dgi = dalloc(3 * H), *dgh = dalloc(3 * H);
    ref_gru_forward(p, d, y, hn, gates);
    for (int64_t b = 0; b < B; ++b) {
        const int64_t len = ref_len(p, b);
        for (int64_t j = 0; j < H; ++j) dh[j] = dh_n ? dh_n[b * H + j] : 0.0;
        for (int64_t t = T - 1; t >= 0; --t) {
            double *dxt = g->dx + (t * B + b) * I;
            if (t >= len) {
                for (int64_t k = 0; k < I; ++k) dxt[k] = 0.0;
                continue;
            }
            if (dy)
                for (int64_t j = 0; j < H; ++j) dh[j] += dy[(t * B + b) * H + j];
            const double *gt = gates + (t * B + b) * 4 * H;
            const double *hp = (t == 0) ? d->h0 + b * H : y + ((t - 1) * B + b) * H;
            const double *xt = d->x + (t * B + b) * I;
            for (int64_t j = 0; j < H; ++j) {
                const double r = gt[j], z = gt[H + j], n = gt[2 * H + j], ghn = gt[3 * H + j];
                const double dn = dh[j] * (1.0 - z);
                const double dz = dh[j] * (hp[j] - n);
                const double dn_pre = dn * (1.0 - n * n);
                const double dz_pre = dz * z * (1.0 - z);
                const double dr_pre = dn_pre * ghn * r * (1.0 - r);
                dgi[j] = dr_pre;
                dgi[H + j] = dz_pre;
                dgi[2 * H + j] = dn_pre;
                dgh[j] = dr_pre;
                dgh[H + j] = dz_pre;
                dgh[2 * H + j] = dn_pre * r;
                dprev[j] = dh[j] * z;
            }
            for (int64_t row = 0; row < 3 * H; ++row) {
                g->db_ih[row] += dgi[row];
                g->db_hh[row] += dgh[row];
                for (int64_t k = 0; k < I; ++k) g->dW_ih[row * I + k] += dgi[row] * xt[k];
                for (int64_t k = 0; k < H; ++k) g->dW_hh[row * H + k] += dgh[row] * hp[k];
            }
            for (int64_t k = 0; k < I; ++k) {
                double s = 0.0;
                for (int64_t row = 0; row < 3 * H; ++row) s += dgi[row] * d->W_ih[row * I + k];
                dxt[k] = s;
            }
            for (int64_t k = 0; k < H; ++k) {
                double s = dprev[k];
                for (int64_t row = 0; row < 3 * H; ++row) s += dgh[row] * d->W_hh[row * H + k];
                dh[k] = s;
            }
        }
        memcpy(g->dh0 + b * H, dh, (size_t)H * sizeof(double));
    }
    free(y); free(hn); free(gates); free(dh); free(dprev); free(dgi); free(dgh);
}

/* ---- dense head ------------------------------------------------------- */

static void ref_head_forward(int64_t N, int64_t H, int64_t D, const float *h, const float *W,
                             const float *b, int act, double *u) {
    for (int64_t i = 0; i < N; ++i)
        for (int64_t j = 0; j < D; ++j) {
            double s = b ? b[j] : 0.0;
            for (int64_t k = 0; k < H; ++k) s += (double)W[j * H + k] * h[i * H + k];
            u[i * D + j] = act == DRE_ACT_TANH ? tanh(s) : s;
        }
}

/* dh = g W, dW = g^T h, db = colsum g with g = du * act'(pre). */
static void ref_head_backward(int64_t N, int64_t H, int64_t D, const float *h, const float *W,
                              const float *b, int act, const float *du, double *dh,
                              double *dW, double *db) {
    double *u = dalloc(N * D), *g = dalloc(N * D);
    ref_head_forward(N, H, D, h, W, b, act, u);
    for (int64_t i = 0; i < N * D; ++i)
        g[i] = (double)du[i] * (act == DRE_ACT_TANH ? 1.0 - u[i] * u[i] : 1.0);
    for (int64_t i = 0; i < N; ++i)
        for (int64_t k = 0; k < H; ++k) {
            double s = 0.0;
            for (int64_t j = 0; j < D; ++j) s += g[i * D + j] * W[j * H + k];
            dh[i * H + k] = s;
        }
    for (int64_t j = 0; j < D; ++j) {
        for (int64_t k = 0; k < H; ++k) {
            double s = 0.0;
            for (int64_t i = 0; i < N; ++i) s += g[i * D + j] * h[i * H + k];
            dW[j * H + k] = s;
        }
        double s = 0.0;
        for (int64_t i = 0; i < N; ++i) s += g[i * D + j];
        db[j] = s;
    }
    free(u);
    free(g);
}

/* ---- sampled losses --------------------------------------------------- */

static int ref_masked(const int32_t *col_ids, int64_t j, int64_t t) {
    return col_ids && j != t && col_ids[j] == col_ids[t];
}

/* Loss of one row from its logits l [S], by the header's definitions.
 * Both softmaxes max-shifted (as any sane implementation must be). */
static double ref_row_loss(int kind, int64_t S, int64_t t, const int32_t *col_ids,
                           const double *l, double bpreg) {
    if (kind == DRE_LOSS_XE) {
        double m = -INFINITY, s = 0.0;
        for (int64_t j = 0; j < S; ++j)
            if (!ref_masked(col_ids, j, t) && l[j] > m) m = l[j];
        for (int64_t j = 0; j < S; ++j)
            if (!ref_masked(col_ids, j, t)) s += exp(l[j] - m);
        return m + log(s) - l[t];
    }
    /* BPR-max: w = softmax over the negatives (unmasked, j != t) */
    double m = -INFINITY, z = 0.0, P = 0.0, R = 0.0;
    for (int64_t j = 0; j < S; ++j)
        if (j != t && !ref_masked(col_ids, j, t) && l[j] > m) m = l[j];
    for (int64_t j = 0; j < S; ++j)
        if (j != t && !ref_masked(col_ids, j, t)) z += exp(l[j] - m);
    for (int64_t j = 0; j < S; ++j) {
        if (j == t || ref_masked(col_ids, j, t)) continue;
        const double w = exp(l[j] - m) / z;
        P += w * ref_sigmoid(l[t] - l[j]);
        R += w * l[j] * l[j];
    }
    return -log(P + 1e-24) + bpreg * R;
}

/* Row gradient over the logits: XE analytically (softmax - onehot, over
 * the unmasked columns); BPR-max by central differences of ref_row_loss in
 * double (an independent route to the kernel's closed form). */
static void ref_row_grad(int kind, int64_t S, int64_t t, const int32_t *col_ids, double *l,
                         double bpreg, double *grad) {
    if (kind == DRE_LOSS_XE) {
        double m = -INFINITY, s = 0.0;
        for (int64_t j = 0; j < S; ++j)
            if (!ref_masked(col_ids, j, t) && l[j] > m) m = l[j];
        for (int64_t j = 0; j < S; ++j)
            if (!ref_masked(col_ids, j, t)) s += exp(l[j] - m);
        for (int64_t j = 0; j < S; ++j)
            grad[j] = ref_masked(col_ids, j, t) ? 0.0 : exp(l[j] - m) / s;
        grad[t] -= 1.0;
        return;
    }
    for (int64_t j = 0; j < S; ++j) {
        const double save = l[j], h = 1e-5 * (fabs(save) > 1.0 ? fabs(save) : 1.0);
        l[j] = save + h;
        const double fp = ref_row_loss(kind, S, t, col_ids, l, bpreg);
        l[j] = save - h;
        const double fm = ref_row_loss(kind, S, t, col_ids, l, bpreg);
        l[j] = save;
        grad[j] = (fp - fm) / (2.0 * h);
    }
}

typedef struct {
    double loss;
    double *row_loss, *dU, *dO, *db; /* [B], [B][D], [S][D], [S] */
} ref_loss_out;

static void ref_sampled_loss(int64_t B, int64_t S, int64_t D, const float *U, const float *O,
                             const float *b_s, const int32_t *tcol, const int32_t *col_ids,
                             const float *logq, int kind, double bpreg, ref_loss_out *o) {
    double *l = dalloc(S), *gr = dalloc(S), *G = dalloc(B * S);
    int64_t rows = 0;
    for (int64_t b = 0; b < B; ++b) rows += tcol[b] >= 0;
    double total = 0.0;
    for (int64_t b = 0; b < B; ++b) {
        o->row_loss[b] = 0.0;
        if (tcol[b] < 0) continue;
        for (int64_t j = 0; j < S; ++j) {
            double s = (b_s ? b_s[j] : 0.0) - (logq ? logq[j] : 0.0);
            for (int64_t k = 0; k < D; ++k) s += (double)U[b * D + k] * O[j * D + k];
            l[j] = s;
        }
        o->row_loss[b] = ref_row_loss(kind, S, tcol[b], col_ids, l, bpreg);
        total += o->row_loss[b];
        ref_row_grad(kind, S, tcol[b], col_ids, l, bpreg, gr);
        for (int64_t j = 0; j < S; ++j) G[b * S + j] = gr[j] / (double)rows;
    }
    o->loss = rows ? total / (double)rows : 0.0;
    for (int64_t b = 0; b < B; ++b)
        for (int64_t k = 0; k < D; ++k) {
            double s = 0.0;
            for (int64_t j = 0; j < S; ++j) s += G[b * S + j] * O[j * D + k];
            o->dU[b * D + k] = s;
        }
    for (int64_t j = 0; j < S; ++j) {
        double sb = 0.0;
        for (int64_t k = 0; k < D; ++k) {
            double s = 0.0;
            for (int64_t b = 0; b < B; ++b) s += G[b * S + j] * U[b * D + k];
            o->dO[j * D + k] = s;
        }
        for (int64_t b = 0; b < B; ++b) sb += G[b * S + j];
        o->db[j] = sb;
    }
    free(l);
    free(gr);
    free(G);
}

/* ---- scoring ----------------------------------------------------------- */

static double ref_score_row(int64_t D, const float *O, const float *bias, const float *u,
                            int64_t r) {
    double s = bias ? bias[r] : 0.0;
    for (int64_t k = 0; k < D; ++k) s += (double)O[r * D + k] * u[k];
    return s;
}

/* Top-k order: higher first, equal: lower row first, NaN below everything. */
typedef struct {
    double s;
    int32_t r;
} ref_ranked;

static int ref_rank_cmp(const void *a_, const void *b_) {
    const ref_ranked *a = (const ref_ranked *)a_, *b = (const ref_ranked *)b_;
    const int an = isnan(a->s), bn = isnan(b->s);
    if (an != bn) return an ? 1 : -1;
    if (!an && a->s != b->s) return a->s > b->s ? -1 : 1;
    return (a->r > b->r) - (a->r < b->r);
}

#endif /* DRE_REFERENCE_H */

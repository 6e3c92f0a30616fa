/*
 * optim.c -- optimiser steps (in place), gradient-norm clipping and sparse
 * row updates.
 *
 * Semantics (torch.optim, float32 state):
 *   Adagrad  acc += g^2;  p -= lr * g / sqrt(acc + eps)
 *            (eps inside the square root, as the public header says; torch
 *            adds it outside.)
 *   Adam     g' = g + wd*p;  m = b1*m + (1-b1)*g';  v = b2*v + (1-b2)*g'^2;
 *            p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 *            with the bias corrections computed in double from the 1-based
 *            step t, as torch does with a Python-float step.
 *   SGD      vel = momentum*vel + g;  p -= lr * (nesterov ? g + momentum*vel : vel)
 *            (dampening 0; a zero velocity buffer reproduces torch's first
 *            step, which initialises the buffer with g).
 *
 * Hyperparameters are checked (finite and in range) before anything is
 * touched; so are row indices.  The element loops are plain restrict-
 * qualified loops that gcc -O3 vectorises with the baseline ISA; param,
 * grad and state buffers must not overlap.  (The Adagrad and Adam loops
 * call sqrtf, which gcc vectorises only under -fno-math-errno: with the
 * default -fmath-errno it must keep a scalar call for the errno side
 * effect.  -fno-math-errno changes no result; nothing here reads errno.)
 * eps == 0 is accepted, so an Adagrad element whose accumulator is still 0
 * with g == 0 gets 0/0 = NaN, exactly as the formula says.
 */
#include "internal.h"

#include <math.h>

/* ---- element kernels shared by the dense and the row variants ---- */

static void adagrad_kernel(int64_t n, float *DRE_RESTRICT p, const float *DRE_RESTRICT g,
                           float *DRE_RESTRICT acc, float lr, float eps) {
    for (int64_t i = 0; i < n; ++i) {
        const float gi = g[i];
        const float a = acc[i] + gi * gi;
        acc[i] = a;
        p[i] -= lr * gi / sqrtf(a + eps);
    }
}

typedef struct {
    float b1, b2, omb1, omb2; /* beta1, beta2, 1 - beta1, 1 - beta2 */
    float step_size;          /* lr / (1 - beta1^t) */
    float bc2_sqrt;           /* sqrt(1 - beta2^t) */
    float eps, wd;
} adam_coef;

static void adam_kernel(int64_t n, float *DRE_RESTRICT p, const float *DRE_RESTRICT g,
                        float *DRE_RESTRICT m, float *DRE_RESTRICT v, adam_coef c) {
    for (int64_t i = 0; i < n; ++i) {
        const float gi = g[i] + c.wd * p[i];
        const float mi = c.b1 * m[i] + c.omb1 * gi;
        const float vi = c.b2 * v[i] + c.omb2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        const float denom = sqrtf(vi) / c.bc2_sqrt + c.eps;
        p[i] -= c.step_size * (mi / denom);
    }
}

static void sgd_plain_kernel(int64_t n, float *DRE_RESTRICT p, const float *DRE_RESTRICT g,
                             float lr) {
    for (int64_t i = 0; i < n; ++i) p[i] -= lr * g[i];
}

static void sgd_momentum_kernel(int64_t n, float *DRE_RESTRICT p, const float *DRE_RESTRICT g,
                                float *DRE_RESTRICT vel, float lr, float mu, int nesterov) {
    if (nesterov) {
        for (int64_t i = 0; i < n; ++i) {
            const float b = mu * vel[i] + g[i];
            vel[i] = b;
            p[i] -= lr * (g[i] + mu * b);
        }
    } else {
        for (int64_t i = 0; i < n; ++i) {
            const float b = mu * vel[i] + g[i];
            vel[i] = b;
            p[i] -= lr * b;
        }
    }
}

/* ---- hyperparameter checks ---- */

static int finite_nonneg(float x) { return isfinite(x) && x >= 0.0f; }
static int beta_ok(float b) { return isfinite(b) && b >= 0.0f && b < 1.0f; }

static dre_status adam_coefs(int64_t step, float lr, float beta1, float beta2, float eps,
                             float wd, adam_coef *c) {
    if (step < 1 || !finite_nonneg(lr) || !beta_ok(beta1) || !beta_ok(beta2) ||
        !finite_nonneg(eps) || !finite_nonneg(wd))
        return DRE_ERR_ARG;
    const double t = (double)step;
    const double bc1 = 1.0 - pow((double)beta1, t);
    const double bc2 = 1.0 - pow((double)beta2, t);
    c->b1 = beta1;
    c->b2 = beta2;
    c->omb1 = 1.0f - beta1;
    c->omb2 = 1.0f - beta2;
    c->step_size = (float)((double)lr / bc1); /* bc1 >= 1 - beta1 > 0 */
    c->bc2_sqrt = (float)sqrt(bc2);           /* bc2 >= 1 - beta2 > 0 */
    c->eps = eps;
    c->wd = wd;
    return DRE_OK;
}

/* ---- dense steps ---- */

dre_status dre_adagrad_step(int64_t n, float *param, const float *grad,
                            float *accum, float lr, float eps) {
    if (n < 0) return DRE_ERR_SIZE;
    if (n > 0 && (param == NULL || grad == NULL || accum == NULL)) return DRE_ERR_NULL;
    if (!finite_nonneg(lr) || !finite_nonneg(eps)) return DRE_ERR_ARG;
    adagrad_kernel(n, param, grad, accum, lr, eps);
    return DRE_OK;
}

dre_status dre_adam_step(int64_t n, float *param, const float *grad,
                         float *m, float *v, int64_t step, float lr,
                         float beta1, float beta2, float eps, float weight_decay) {
    if (n < 0) return DRE_ERR_SIZE;
    if (n > 0 && (param == NULL || grad == NULL || m == NULL || v == NULL))
        return DRE_ERR_NULL;
    adam_coef c;
    dre_status st = adam_coefs(step, lr, beta1, beta2, eps, weight_decay, &c);
    if (st != DRE_OK) return st;
    adam_kernel(n, param, grad, m, v, c);
    return DRE_OK;
}

dre_status dre_sgd_step(int64_t n, float *param, const float *grad,
                        float *velocity, float lr, float momentum, int nesterov) {
    if (n < 0) return DRE_ERR_SIZE;
    if (n > 0 && (param == NULL || grad == NULL)) return DRE_ERR_NULL;
    if (!finite_nonneg(lr) || !finite_nonneg(momentum)) return DRE_ERR_ARG;
    /* torch.optim.SGD: Nesterov momentum requires a momentum */
    if (nesterov && momentum == 0.0f) return DRE_ERR_ARG;
    if (momentum > 0.0f) {
        if (n > 0 && velocity == NULL) return DRE_ERR_NULL;
        sgd_momentum_kernel(n, param, grad, velocity, lr, momentum, nesterov != 0);
    } else {
        sgd_plain_kernel(n, param, grad, lr);
        /* vel = 0*vel + g, written without reading vel (no 0*inf = NaN) */
        if (velocity)
            for (int64_t i = 0; i < n; ++i) velocity[i] = grad[i];
    }
    return DRE_OK;
}

/* ---- global norm ---- */

/* Sum of squares in double.  Eight independent accumulators: without
 * -ffast-math gcc will not reassociate one running sum, but it can keep
 * these in vector registers, and the result does not depend on the ISA. */
static double sumsq(int64_t n, const float *DRE_RESTRICT x) {
    double a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int q = 0; q < 8; ++q) {
            const double t = (double)x[i + q];
            a[q] += t * t;
        }
    for (; i < n; ++i) {
        const double t = (double)x[i];
        a[0] += t * t;
    }
    return ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
}

static dre_status norm_check(int64_t n_tensors, const void *grads, const int64_t *sizes) {
    if (n_tensors < 0) return DRE_ERR_SIZE;
    if (n_tensors > 0 && (grads == NULL || sizes == NULL)) return DRE_ERR_NULL;
    for (int64_t t = 0; t < n_tensors; ++t)
        if (sizes[t] < 0) return DRE_ERR_SIZE;
    return DRE_OK;
}

static double global_sumsq(int64_t n_tensors, const float *const *grads, const int64_t *sizes) {
    double s = 0.0;
    for (int64_t t = 0; t < n_tensors; ++t) s += sumsq(sizes[t], grads[t]);
    return s;
}

dre_status dre_global_norm(int64_t n_tensors, const float *const *grads,
                           const int64_t *sizes, double *norm) {
    dre_status st = norm_check(n_tensors, grads, sizes);
    if (st != DRE_OK) return st;
    if (norm == NULL) return DRE_ERR_NULL;
    for (int64_t t = 0; t < n_tensors; ++t)
        if (sizes[t] > 0 && grads[t] == NULL) return DRE_ERR_NULL;
    *norm = sqrt(global_sumsq(n_tensors, grads, sizes));
    return DRE_OK;
}

dre_status dre_clip_by_global_norm(int64_t n_tensors, float *const *grads,
                                   const int64_t *sizes, float max_norm,
                                   double *norm_out) {
    dre_status st = norm_check(n_tensors, grads, sizes);
    if (st != DRE_OK) return st;
    for (int64_t t = 0; t < n_tensors; ++t)
        if (sizes[t] > 0 && grads[t] == NULL) return DRE_ERR_NULL;
    if (!(isfinite(max_norm) && max_norm > 0.0f)) return DRE_ERR_ARG;
    /* float *const * -> const float *const * needs a cast in C */
    const double norm = sqrt(global_sumsq(n_tensors, (const float *const *)grads, sizes));
    if (norm_out) *norm_out = norm;
    /* norm == +inf scales by 0 (inf entries become NaN, as in torch);
     * a NaN norm compares false and leaves the buffers alone. */
    if (norm > (double)max_norm) {
        const float scale = (float)((double)max_norm / norm);
        for (int64_t t = 0; t < n_tensors; ++t) {
            float *DRE_RESTRICT g = grads[t];
            const int64_t n = sizes[t];
            for (int64_t i = 0; i < n; ++i) g[i] *= scale;
        }
    }
    return DRE_OK;
}

/* ---- sparse row updates ---- */

/* Sizes, pointers and every row index, before anything is touched. */
static dre_status rows_check(int64_t n_rows, int64_t D, int64_t n, const int32_t *rows,
                             const float *grad_rows, const void *table, const void *s1,
                             const void *s2) {
    size_t t;
    if (n_rows < 0 || D < 0 || n < 0) return DRE_ERR_SIZE;
    if (!dre__mul3(&t, n_rows, D, (int64_t)sizeof(float)) ||
        !dre__mul3(&t, n, D, (int64_t)sizeof(float)))
        return DRE_ERR_SIZE;
    if (n == 0) return DRE_OK;
    if (rows == NULL) return DRE_ERR_NULL;
    if (D > 0 && (grad_rows == NULL || table == NULL || s1 == NULL || s2 == NULL))
        return DRE_ERR_NULL;
    int bad = 0;
    for (int64_t i = 0; i < n; ++i) bad |= (rows[i] < 0) | ((int64_t)rows[i] >= n_rows);
    return bad ? DRE_ERR_INDEX : DRE_OK;
}

dre_status dre_adagrad_rows(int64_t n_rows, int64_t D, float *table, float *accum,
                            int64_t n, const int32_t *rows, const float *grad_rows,
                            float lr, float eps) {
    dre_status st = rows_check(n_rows, D, n, rows, grad_rows, table, accum, accum);
    if (st != DRE_OK) return st;
    if (!finite_nonneg(lr) || !finite_nonneg(eps)) return DRE_ERR_ARG;
    if (D == 0) return DRE_OK;
    for (int64_t i = 0; i < n; ++i) {
        const int64_t r = rows[i];
        adagrad_kernel(D, table + r * D, grad_rows + i * D, accum + r * D, lr, eps);
    }
    return DRE_OK;
}

dre_status dre_adam_rows(int64_t n_rows, int64_t D, float *table, float *m, float *v,
                         int64_t n, const int32_t *rows, const float *grad_rows,
                         int64_t step, float lr, float beta1, float beta2, float eps) {
    dre_status st = rows_check(n_rows, D, n, rows, grad_rows, table, m, v);
    if (st != DRE_OK) return st;
    adam_coef c;
    st = adam_coefs(step, lr, beta1, beta2, eps, 0.0f, &c);
    if (st != DRE_OK) return st;
    if (D == 0) return DRE_OK;
    for (int64_t i = 0; i < n; ++i) {
        const int64_t r = rows[i];
        adam_kernel(D, table + r * D, grad_rows + i * D, m + r * D, v + r * D, c);
    }
    return DRE_OK;
}

dre_status dre_sgd_rows(int64_t n_rows, int64_t D, float *table,
                        int64_t n, const int32_t *rows, const float *grad_rows, float lr) {
    dre_status st = rows_check(n_rows, D, n, rows, grad_rows, table, table, table);
    if (st != DRE_OK) return st;
    if (!finite_nonneg(lr)) return DRE_ERR_ARG;
    if (D == 0) return DRE_OK;
    for (int64_t i = 0; i < n; ++i)
        sgd_plain_kernel(D, table + (int64_t)rows[i] * D, grad_rows + i * D, lr);
    return DRE_OK;
}

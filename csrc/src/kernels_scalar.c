/*
 * kernels_scalar.c -- the portable path: the readable specification of
 * every dispatched primitive.  Always compiled and callable; SIMD paths are
 * tested against it.  Plain loops that any C99 compiler handles (gcc -O3
 * auto-vectorises the inner loops with the baseline ISA).
 */
#include "internal.h"

#include <math.h>
#include <string.h>

#define DRE_SCALAR_MR 4

/* C tile = alpha * A Bp + beta * C (+ bias row) over mr <= 4 rows and nr <= 16 columns.
 * Rows past mr read row 0 again (always valid) and are never stored, so one
 * fixed-shape loop serves every tile and the compiler keeps the 4 x 16
 * accumulators in registers. */
static void gemm_tile_scalar(int64_t mr, int64_t nr, int64_t K,
                             const float *A, int64_t rsa, int64_t csa,
                             const float *Bp, float alpha, float beta,
                             const float *bias, float *C, int64_t ldc) {
    float acc0[DRE_NR] = {0}, acc1[DRE_NR] = {0}, acc2[DRE_NR] = {0}, acc3[DRE_NR] = {0};
    const float *a0 = A, *a1 = A + (mr > 1 ? rsa : 0);
    const float *a2 = A + (mr > 2 ? 2 * rsa : 0), *a3 = A + (mr > 3 ? 3 * rsa : 0);
    for (int64_t k = 0; k < K; ++k) {
        const float *b = Bp + k * DRE_NR;
        const float x0 = a0[k * csa], x1 = a1[k * csa], x2 = a2[k * csa], x3 = a3[k * csa];
        for (int j = 0; j < DRE_NR; ++j) {
            acc0[j] += x0 * b[j];
            acc1[j] += x1 * b[j];
            acc2[j] += x2 * b[j];
            acc3[j] += x3 * b[j];
        }
    }
    const float *acc[DRE_SCALAR_MR] = {acc0, acc1, acc2, acc3};
    for (int64_t i = 0; i < mr; ++i) {
        float *c = C + i * ldc;
        if (beta == 0.0f) {
            for (int64_t j = 0; j < nr; ++j) c[j] = alpha * acc[i][j];
        } else {
            for (int64_t j = 0; j < nr; ++j) c[j] = alpha * acc[i][j] + beta * c[j];
        }
        if (bias)
            for (int64_t j = 0; j < nr; ++j) c[j] += bias[j];
    }
}

/* Dot products with 16 independent partial sums (a fixed summation order
 * that compilers vectorise without reassociating floating-point adds). */
static void gemv_scalar(int64_t n, int64_t D, const float *W, int64_t ldw,
                        const int32_t *idx, const float *x, const float *bias, float *y) {
    const int64_t D16 = D & ~(int64_t)15;
    for (int64_t i = 0; i < n; ++i) {
        const int64_t r = idx ? (int64_t)idx[i] : i;
        const float *w = W + r * ldw;
        float part[16] = {0};
        for (int64_t k = 0; k < D16; k += 16)
            for (int j = 0; j < 16; ++j) part[j] += w[k + j] * x[k + j];
        float acc = 0.0f;
        for (int j = 0; j < 16; ++j) acc += part[j];
        for (int64_t k = D16; k < D; ++k) acc += w[k] * x[k];
        y[i] = acc + (bias ? bias[r] : 0.0f);
    }
}

/* The same with binary16 weights, converted one by one (same summation
 * order as gemv_scalar). */
static void gemv_f16_scalar(int64_t n, int64_t D, const uint16_t *W, int64_t ldw,
                            const float *x, const float *bias, float *y) {
    const int64_t D16 = D & ~(int64_t)15;
    for (int64_t i = 0; i < n; ++i) {
        const uint16_t *w = W + i * ldw;
        float part[16] = {0};
        for (int64_t k = 0; k < D16; k += 16)
            for (int j = 0; j < 16; ++j) part[j] += dre__f16_to_f32(w[k + j]) * x[k + j];
        float acc = 0.0f;
        for (int j = 0; j < 16; ++j) acc += part[j];
        for (int64_t k = D16; k < D; ++k) acc += dre__f16_to_f32(w[k]) * x[k];
        y[i] = acc + (bias ? bias[i] : 0.0f);
    }
}

static float sigmoid_scalar(float x) { return 1.0f / (1.0f + expf(-x)); }

static void gru_gates_scalar(int64_t H, const float *gi, const float *gh,
                             const float *h, float *h_out, float *cache) {
    for (int64_t j = 0; j < H; ++j) {
        const float r = sigmoid_scalar(gi[j] + gh[j]);
        const float z = sigmoid_scalar(gi[H + j] + gh[H + j]);
        const float ghn = gh[2 * H + j];
        const float n = tanhf(gi[2 * H + j] + r * ghn);
        const float hp = h[j];
        if (cache) {
            cache[j] = r;
            cache[H + j] = z;
            cache[2 * H + j] = n;
            cache[3 * H + j] = ghn;
        }
        h_out[j] = n + z * (hp - n); /* = (1 - z) n + z h */
    }
}

static void vexp_scalar(int64_t n, float *x) {
    for (int64_t i = 0; i < n; ++i) x[i] = expf(x[i]);
}

static void vtanh_scalar(int64_t n, float *x) {
    for (int64_t i = 0; i < n; ++i) x[i] = tanhf(x[i]);
}

static const dre_kernels dre__scalar_table = {
    DRE_PATH_SCALAR, DRE_SCALAR_MR, gemm_tile_scalar, gemv_scalar, gru_gates_scalar,
    vexp_scalar, vtanh_scalar, gemv_f16_scalar,
};

const dre_kernels *dre__kernels_scalar(void) { return &dre__scalar_table; }

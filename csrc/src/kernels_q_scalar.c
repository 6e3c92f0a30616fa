/*
 * kernels_q_scalar.c -- the portable compressed-row primitives: the
 * readable specification of qkernels.h.  binary16 rows: the same 16
 * partial sums as gemv_scalar (kernels_scalar.c), over exactly converted
 * weights, so a binary16 row scores like the float32 row of the same values
 * before the per-row scale is applied; packed int8 blocks: the exact
 * integer dot product.
 */
#include "qkernels.h"

#include <string.h>

#define DRE_Q_GEMV_SCALAR(NAME, T, CONV)                                                     \
    void NAME(int64_t n, int64_t D, const T *W, int64_t ldw, const int32_t *idx,     \
                     const float *scale, const float *x, const float *bias, float *y) {     \
        const int64_t D16 = D & ~(int64_t)15;                                                \
        for (int64_t i = 0; i < n; ++i) {                                                    \
            const int64_t r = idx ? (int64_t)idx[i] : i;                                     \
            const T *w = W + r * ldw;                                                        \
            float part[16] = {0};                                                            \
            for (int64_t k = 0; k < D16; k += 16)                                            \
                for (int j = 0; j < 16; ++j) part[j] += CONV(w[k + j]) * x[k + j];           \
            float acc = 0.0f;                                                                \
            for (int j = 0; j < 16; ++j) acc += part[j];                                     \
            for (int64_t k = D16; k < D; ++k) acc += CONV(w[k]) * x[k];                      \
            if (scale) acc = acc * scale[r];                                                 \
            y[i] = acc + (bias ? bias[r] : 0.0f);                                            \
        }                                                                                    \
    }

DRE_Q_GEMV_SCALAR(dre__gemv_h_scalar, uint16_t, dre__f16_to_f32)

/* Packed int8 blocks (qkernels.h): the integer dot product as written. */
void dre__score_i8p_scalar(int64_t n, const uint8_t *P, const dre_i8p_user *u,
                           const float *scale, const float *bias, float *y) {
    const int64_t G = u->G;
    for (int64_t i = 0; i < n; ++i) {
        const uint8_t *w = dre__i8p_row(P, G, i);
        int64_t I = 0;
        for (int64_t g = 0; g < G; ++g)
            for (int b = 0; b < 4; ++b)
                I += (int64_t)((int)w[64 * g + b] - 128) * u->U[4 * g + b];
        y[i] = dre__i8p_finish((double)I, scale ? scale[i] : 1.0f, u->e2, bias ? bias[i] : 0.0f);
    }
}

/* 16 rows into a packed block: q + 128 by flipping the sign bit of each byte. */
void dre__pack16_i8_scalar(const int8_t *const *rows, int64_t D, int64_t G, uint8_t *blk) {
    const int64_t full = D / 4; /* whole groups */
    for (int t = 0; t < DRE_I8P_ROWS; ++t) {
        const int8_t *row = rows[t];
        if (row == NULL) {
            for (int64_t g = 0; g < G; ++g) memset(blk + 64 * g + 4 * t, 128, 4);
            continue;
        }
        for (int64_t g = 0; g < full; ++g) {
            uint32_t w;
            memcpy(&w, row + 4 * g, 4);
            w ^= 0x80808080u;
            memcpy(blk + 64 * g + 4 * t, &w, 4);
        }
        for (int64_t g = full; g < G; ++g)
            for (int b = 0; b < 4; ++b) {
                const int64_t k = 4 * g + b;
                blk[64 * g + 4 * t + b] = (uint8_t)(k < D ? (int)row[k] + 128 : 128);
            }
    }
}

static const dre_qkernels dre__q_scalar_table = {DRE_PATH_SCALAR, dre__gemv_h_scalar,
                                                 dre__score_i8p_scalar, dre__pack16_i8_scalar};

const dre_qkernels *dre__qkernels_scalar(void) { return &dre__q_scalar_table; }

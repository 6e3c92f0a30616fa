/*
 * example_gru.c -- the C API example of docs/c-api.md, compiled and run by
 * `make test` against the shared library (so the example, the exported
 * symbols and the documentation stay in step).
 *
 * A batch of two click sequences (lengths 5 and 3) through one GRU layer,
 * then the user embedding of the first sequence, then the same sequence
 * streamed click by click with dre_gru_step.
 */
#include <deeprec_edge.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define CHECK_DRE(call)                                                          \
    do {                                                                         \
        dre_status st_ = (call);                                                 \
        if (st_ != DRE_OK) {                                                     \
            fprintf(stderr, "%s failed: %s\n", #call, dre_status_to_string(st_)); \
            return 1;                                                            \
        }                                                                        \
    } while (0)

int main(void) {
    enum { T = 5, B = 2, I = 8, H = 16, D = 4 };
    static float x[T * B * I];                  /* [T][B][I], time-major */
    static float W_ih[3 * H * I], W_hh[3 * H * H], b_ih[3 * H], b_hh[3 * H];
    static float W_p[D * H], b_p[D];
    static float y[T * B * H], h_n[B * H], u[B * D];
    const int32_t lengths[B] = {5, 3};          /* sequence 1 is padded after step 3 */

    /* stand-in weights; a real app loads them from the model file */
    for (int i = 0; i < T * B * I; ++i) x[i] = (float)sin(0.37 * i);
    for (int i = 0; i < 3 * H * I; ++i) W_ih[i] = 0.2f * (float)cos(0.11 * i);
    for (int i = 0; i < 3 * H * H; ++i) W_hh[i] = 0.1f * (float)sin(0.07 * i);
    for (int i = 0; i < 3 * H; ++i) b_ih[i] = b_hh[i] = 0.01f * (float)i;
    for (int i = 0; i < D * H; ++i) W_p[i] = 0.3f * (float)cos(0.5 * i);
    for (int i = 0; i < D; ++i) b_p[i] = 0.0f;

    printf("kernel path: %s\n", dre_path_name(dre_active_path()));

    /* GRU forward: ask for the workspace size, allocate it once, reuse it */
    size_t ws_bytes = dre_gru_forward_workspace_size(T, B, I, H);
    void *ws = malloc(ws_bytes);
    if (ws == NULL) return 1;
    CHECK_DRE(dre_gru_forward(T, B, I, H, x, lengths, /*h0=*/NULL, W_ih, W_hh, b_ih, b_hh,
                              y, h_n, /*cache=*/NULL, ws, ws_bytes));
    free(ws);

    /* user embeddings u = tanh(W_p h_n + b_p) */
    ws_bytes = dre_head_forward_workspace_size(B, H, D);
    ws = ws_bytes ? malloc(ws_bytes) : NULL;
    CHECK_DRE(dre_head_forward(B, H, D, h_n, W_p, b_p, DRE_ACT_TANH, u, ws, ws_bytes));
    free(ws);
    printf("user 0 embedding: %.5f %.5f %.5f %.5f\n", u[0], u[1], u[2], u[3]);

    /* streaming: sequence 1, one click at a time, state updated in place */
    float h[H] = {0};
    float step_ws[64 + 6 * H];                   /* >= dre_gru_step_workspace_size(I, H) */
    if (sizeof step_ws < dre_gru_step_workspace_size(I, H)) return 1;
    for (int t = 0; t < lengths[1]; ++t)
        CHECK_DRE(dre_gru_step(I, H, x + (t * B + 1) * I, h, W_ih, W_hh, b_ih, b_hh, h,
                               step_ws, sizeof step_ws));
    /* max |diff| that lets a NaN through (fmax would drop it and pass the
     * check below); as a plain comparison it also avoids a gcc 12.2 crash
     * on aarch64 (internal compiler error in vect_transform_reduction while
     * vectorising a double fmax reduction at -O3) */
    double diff = 0.0;
    for (int j = 0; j < H; ++j) {
        const double d = fabs((double)h[j] - h_n[1 * H + j]);
        if (!(d <= diff)) diff = d;
    }
    printf("streamed state vs batch h_n[1]: max |diff| = %.2e\n", diff);

    /* errors come back as status codes; nothing is written on error */
    const int32_t bad_lengths[B] = {5, 6};       /* 6 > T */
    ws_bytes = dre_gru_forward_workspace_size(T, B, I, H);
    ws = malloc(ws_bytes);
    dre_status st = dre_gru_forward(T, B, I, H, x, bad_lengths, NULL, W_ih, W_hh, b_ih, b_hh,
                                    y, h_n, NULL, ws, ws_bytes);
    free(ws);
    printf("bad lengths -> %s\n", dre_status_to_string(st));
    return (diff < 1e-5 && st == DRE_ERR_INDEX) ? 0 : 1;
}

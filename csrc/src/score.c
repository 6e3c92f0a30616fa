/*
 * score.c -- candidate scoring, plain and fused with top-k.
 *
 *   scores[i] = O[r] . u + bias[r],   r = idx ? idx[i] : i
 *
 * The dot products come from the dispatched gemv (SIMD where available);
 * this file only validates, chunks and selects.
 *
 * Ranking order used by dre_score_topk (a strict total order on
 * (score, row) pairs, so the result does not depend on the order in which
 * candidates arrive, nor on the chunking):
 *   - a higher score ranks first;
 *   - equal scores (including -0.0 == +0.0): the lower row number r ranks
 *     first -- np.argsort(-scores, kind="stable") order when idx is NULL;
 *   - NaN ranks below every other score, -inf included; among NaNs the
 *     lower row number ranks first.
 * A row listed twice in idx is scored twice and may be returned twice.
 *
 * The fused top-k keeps the best k seen so far directly in the caller's
 * top_idx/top_score arrays -- sorted best first for k <= 64, else a bounded
 * heap (root = the worst of them) --, scores
 * the candidates in chunks of DRE_TOPK_CHUNK rows into a stack buffer (no
 * n-sized buffer, no malloc) and, once the heap is full, rejects a whole
 * chunk with one vectorised compare-and-or pass against the root's score,
 * or else each element with a single float comparison unless it can
 * possibly enter.  For n = 1e5, k = 20 almost every element takes that
 * path, so the run time is the gemv's.
 */
#include "qkernels.h"

#include <math.h>
#include <string.h>

#define DRE_TOPK_CHUNK 256

/* Stand-in for O / u when D == 0 and the caller passed NULL: gemv then forms
 * W + r*0 and x + 0 without reading them. */
static const float dre__score_dummy[1] = {0.0f};

/* Shared validation.  Order: sizes, pointers, indices (nothing is written
 * before all three passed). */
static dre_status score_check(int64_t N, int64_t D, const float *O, const float *u,
                              const int32_t *idx, int64_t n) {
    size_t t;
    if (N < 0 || D < 0 || n < 0) return DRE_ERR_SIZE;
    if (!dre__mul3(&t, N, D, (int64_t)sizeof(float))) return DRE_ERR_SIZE;
    if (idx == NULL && n > N) return DRE_ERR_SIZE;
    if (n == 0) return DRE_OK;
    if (D > 0 && (O == NULL || u == NULL)) return DRE_ERR_NULL;
    if (idx) {
        /* one cheap pass; accumulate so the loop has no early exit and
         * vectorises */
        int bad = 0;
        for (int64_t i = 0; i < n; ++i) bad |= (idx[i] < 0) | ((int64_t)idx[i] >= N);
        if (bad) return DRE_ERR_INDEX;
    }
    return DRE_OK;
}

dre_status dre_score(int64_t N, int64_t D, const float *O, const float *bias,
                     const float *u, const int32_t *idx, int64_t n, float *scores) {
    dre_status st = score_check(N, D, O, u, idx, n);
    if (st != DRE_OK) return st;
    if (n == 0) return DRE_OK;
    if (scores == NULL) return DRE_ERR_NULL;
    if (O == NULL) O = dre__score_dummy; /* only when D == 0 */
    if (u == NULL) u = dre__score_dummy;
    dre__kernels()->gemv(n, D, O, D, idx, u, bias, scores);
    return DRE_OK;
}

/* ---- top-k ---- */

/* 1 if (sa, ra) ranks strictly before (sb, rb) in the order documented at
 * the top of the file. */
static inline int topk_better(float sa, int32_t ra, float sb, int32_t rb) {
    const int na = isnan(sa), nb = isnan(sb);
    if (na | nb) {
        if (na && nb) return ra < rb;
        return nb; /* a non-NaN beats a NaN */
    }
    if (sa != sb) return sa > sb;
    return ra < rb;
}

/* Min-heap on "rank": the root (slot 0) is the worst entry. */
static void heap_sift_down(int32_t *hi, float *hs, int64_t size, int64_t pos) {
    const int32_t r = hi[pos];
    const float s = hs[pos];
    for (;;) {
        int64_t c = 2 * pos + 1;
        if (c >= size) break;
        /* pick the worse child */
        if (c + 1 < size && topk_better(hs[c], hi[c], hs[c + 1], hi[c + 1])) ++c;
        /* stop when the moving entry is worse than (or as bad as) that child */
        if (!topk_better(s, r, hs[c], hi[c])) break;
        hi[pos] = hi[c];
        hs[pos] = hs[c];
        pos = c;
    }
    hi[pos] = r;
    hs[pos] = s;
}

static void heap_push(int32_t *hi, float *hs, int64_t size, float s, int32_t r) {
    int64_t pos = size; /* new slot */
    while (pos > 0) {
        const int64_t p = (pos - 1) / 2;
        /* the parent must stay worse than the child */
        if (!topk_better(hs[p], hi[p], s, r)) break;
        hi[pos] = hi[p];
        hs[pos] = hs[p];
        pos = p;
    }
    hi[pos] = r;
    hs[pos] = s;
}

/* Small k: the best-so-far kept sorted best first, a new entry moved up
 * from the freed last slot past the entries it ranks before (insertion
 * sort's step: an entry that passes the threshold usually lands near the
 * end, so it moves few places, and the loop's exit is its only hard
 * branch).  A heap's sift takes a data-dependent branch per level instead,
 * mispredicted about half the time; counting the place and moving the tail
 * with memmove cost two library calls per entry (k = 20 of 500 candidates:
 * about 80 entries).  Larger k: the heap. */
#define DRE_TOPK_SORTED_MAX 32

/* Insert (s, r) into the sorted list ti/ts of `size` entries; when the list
 * is full (size == cap) the last entry, which (s, r) must rank before,
 * drops out. */
static void sorted_insert(int32_t *ti, float *ts, int64_t size, int64_t cap, float s, int32_t r) {
    int64_t pos = size < cap ? size : cap - 1; /* the slot that is freed */
    while (pos > 0 && topk_better(s, r, ts[pos - 1], ti[pos - 1])) {
        ti[pos] = ti[pos - 1];
        ts[pos] = ts[pos - 1];
        --pos;
    }
    ti[pos] = r;
    ts[pos] = s;
}

/* The selection loop, over any scorer of chunks of candidates. */
void dre__topk_select(int64_t n, const int32_t *idx, const uint8_t *exclude, int64_t k,
                      dre_score_chunk_fn score, const void *ctx,
                      int32_t *top_idx, float *top_score, int64_t *n_out) {
    const int64_t cap = k < n ? k : n; /* the heap never holds more than n */
    const int sorted = cap <= DRE_TOPK_SORTED_MAX;
    const int64_t worst = sorted ? cap - 1 : 0; /* where the worst entry kept sits, once full */
    int64_t size = 0;
    /* Fast rejection once the heap is full: an element with !(s >= thr)
     * cannot enter (smaller, or NaN).  Valid only while the root's score is
     * not NaN; while it is NaN (fewer than k non-NaN scores seen), every
     * element takes the full comparison. */
    float thr = 0.0f;
    int fast = 0;
    float buf[DRE_TOPK_CHUNK];

    for (int64_t base = 0; base < n; base += DRE_TOPK_CHUNK) {
        const int64_t c = n - base < DRE_TOPK_CHUNK ? n - base : DRE_TOPK_CHUNK;
        const int32_t *ci = idx ? idx + base : NULL;
        score(ctx, base, c, ci, buf);
        if (fast) {
            /* Whole-chunk rejection: one vectorisable pass (compare + or). */
            int any = 0;
            for (int64_t j = 0; j < c; ++j) any |= buf[j] >= thr;
            if (!any) continue;
        }
        for (int64_t j = 0; j < c; ++j) {
            const float s = buf[j];
            if (fast && !(s >= thr)) continue; /* hot path */
            const int32_t r = ci ? ci[j] : (int32_t)(base + j);
            if (exclude && exclude[r]) continue;
            if (size == cap && !topk_better(s, r, top_score[worst], top_idx[worst])) continue;
            if (sorted) {
                sorted_insert(top_idx, top_score, size, cap, s, r);
                if (size < cap) ++size;
            } else if (size < cap) {
                heap_push(top_idx, top_score, size, s, r);
                ++size;
            } else {
                top_idx[0] = r;
                top_score[0] = s;
                heap_sift_down(top_idx, top_score, size, 0);
            }
            if (size == cap) {
                thr = top_score[worst];
                fast = !isnan(thr);
            }
        }
    }

    /* Heap sort in place: move the worst to the end, repeatedly; the array
     * ends best first.  (The sorted list already is.) */
    for (int64_t end = sorted ? 0 : size - 1; end > 0; --end) {
        const int32_t r = top_idx[0];
        const float s = top_score[0];
        top_idx[0] = top_idx[end];
        top_score[0] = top_score[end];
        top_idx[end] = r;
        top_score[end] = s;
        heap_sift_down(top_idx, top_score, end, 0);
    }
    *n_out = size;
}

/* float32 rows through the dispatched gemv. */
typedef struct {
    const dre_kernels *kt;
    int64_t D;
    const float *O, *bias, *u;
} f32_chunk_ctx;

static void f32_chunk(const void *ctx_, int64_t base, int64_t c, const int32_t *ci, float *buf) {
    const f32_chunk_ctx *x = (const f32_chunk_ctx *)ctx_;
    if (ci) {
        x->kt->gemv(c, x->D, x->O, x->D, ci, x->u, x->bias, buf);
    } else {
        /* contiguous rows base..base+c-1: offset the table and bias */
        x->kt->gemv(c, x->D, x->O + (x->D > 0 ? base * x->D : 0), x->D, NULL, x->u,
                    x->bias ? x->bias + base : NULL, buf);
    }
}

dre_status dre_score_topk(int64_t N, int64_t D, const float *O, const float *bias,
                          const float *u, const int32_t *idx, int64_t n,
                          const uint8_t *exclude, int64_t k,
                          int32_t *top_idx, float *top_score, int64_t *n_out) {
    if (k < 0) return DRE_ERR_SIZE;
    dre_status st = score_check(N, D, O, u, idx, n);
    if (st != DRE_OK) return st;
    /* row numbers are returned as int32 */
    if (idx == NULL && n > (int64_t)INT32_MAX + 1) return DRE_ERR_SIZE;
    if (n_out == NULL) return DRE_ERR_NULL;
    if (k == 0 || n == 0) {
        *n_out = 0;
        return DRE_OK;
    }
    if (top_idx == NULL || top_score == NULL) return DRE_ERR_NULL;
    if (O == NULL) O = dre__score_dummy; /* only when D == 0 */
    if (u == NULL) u = dre__score_dummy;
    const f32_chunk_ctx cx = {dre__kernels(), D, O, bias, u};
    dre__topk_select(n, idx, exclude, k, f32_chunk, &cx, top_idx, top_score, n_out);
    return DRE_OK;
}

/*
 * test_core.c -- the C tests of the deeprec-edge core (no Python needed).
 *
 *   build/<target>/test_core [-v] [--expect-path=scalar|avx2|avx512|neon] [--quick]
 *
 * For every path this CPU and build support (scalar, avx2, avx512, neon),
 * every kernel is checked against a double-precision reference written here
 * (reference.h), and every SIMD path against the scalar path directly, at
 * sizes on both sides of the vector widths (1..33, 63, 64, 65, a few up to
 * 256+).  Every array a kernel sees ends at an unmapped guard page
 * (tester.h), workspaces are exactly the size the kernel asked for and not
 * aligned; a second, thinner pass puts the guard page in front of every
 * array instead.  Error returns are checked with outputs filled with a pattern
 * that must survive.  Output: one line per group, then "N passed, M
 * failed"; exit status 1 on any failure.
 *
 * Tolerances are stated per check: GEMM-like results against
 * (K + 3) * FLT_EPSILON * sum|terms| (twice the textbook worst-case bound of
 * a K-term float dot product, so a correct kernel never trips it and a
 * wrong element does); nonlinear kernels against absolute + relative
 * bounds an order of magnitude above what correct float kernels show.
 */
#if !defined(_DEFAULT_SOURCE)
#  define _DEFAULT_SOURCE 1 /* MAP_ANONYMOUS with -std=c99 (glibc) */
#endif
#if !defined(_POSIX_C_SOURCE)
#  define _POSIX_C_SOURCE 200809L
#endif
#if defined(__APPLE__) && !defined(_DARWIN_C_SOURCE)
#  define _DARWIN_C_SOURCE 1
#endif

#include "deeprec_edge.h"
#include "tester.h"
#include "reference.h"

#include <float.h>

#if defined(__arm__) && !defined(__aarch64__) && defined(__linux__)
/* 32-bit ARM: NEON is optional; the library reads AT_HWCAP, and so do the
 * tests, to know what the dispatcher must have chosen */
#  include <sys/auxv.h>
#  define ARM32_HWCAP 1
#  define ARM32_HWCAP_NEON (1UL << 12)
#  define ARM32_HWCAP_VFPV4 (1UL << 16)
/* the compilers that build the 32-bit NEON kernels (kernels_neon.c) */
#  if (defined(__clang__) && defined(__ARM_NEON)) \
      || (!defined(__clang__) && defined(__GNUC__) && defined(__ARM_FP))
#    define ARM32_NEON_BUILT 1
#  endif
#endif

static int g_quick; /* --quick: thinner sweeps (slow emulators) */

/* ======================================================================== */
/* status strings and paths                                                  */
/* ======================================================================== */

static void test_status_and_paths(const char *expect_path) {
    group_begin("status+paths");
    /* dre_status_to_string: every value named, distinct, static */
    const char *names[7];
    const char *fallback = dre_status_to_string((dre_status)42);
    for (int s = DRE_OK; s <= DRE_ERR_UNSUPPORTED; ++s) {
        names[s] = dre_status_to_string((dre_status)s);
        ctx("status %d", s);
        CHECK(names[s] != NULL && names[s][0] != '\0', "empty string");
        CHECK(names[s] == NULL || fallback == NULL || strcmp(names[s], fallback) != 0,
              "same string as an unknown status: %s", names[s]);
        for (int o = 0; o < s; ++o)
            CHECK(names[s] && names[o] && strcmp(names[s], names[o]) != 0,
                  "same string as status %d: %s", o, names[s]);
    }
    CHECK(strcmp(dre_status_to_string(DRE_OK), "ok") == 0, "DRE_OK is \"%s\", want \"ok\"",
          dre_status_to_string(DRE_OK));
    ctx("status out of range");
    CHECK(dre_status_to_string((dre_status)42) != NULL, "NULL for 42");
    CHECK(dre_status_to_string((dre_status)-1) != NULL, "NULL for -1");

    /* dre_path_name */
    ctx("dre_path_name");
    CHECK(strcmp(dre_path_name(DRE_PATH_SCALAR), "scalar") == 0, "scalar");
    CHECK(strcmp(dre_path_name(DRE_PATH_AVX2), "avx2") == 0, "avx2");
    CHECK(strcmp(dre_path_name(DRE_PATH_NEON), "neon") == 0, "neon");
    CHECK(strcmp(dre_path_name(DRE_PATH_AVX512), "avx512") == 0, "avx512");
    CHECK(strcmp(dre_path_name((dre_path)17), "unknown") == 0, "17 -> %s", dre_path_name((dre_path)17));
    CHECK(strcmp(dre_path_name((dre_path)-1), "unknown") == 0, "-1");

    /* the path chosen at first use: nothing has called dre_set_path yet */
    const dre_path first = dre_active_path();
    const char *force = getenv("DEEPREC_EDGE_FORCE_SCALAR");
    const int forced = force && force[0] && strcmp(force, "0") != 0;
    ctx("first active path %s, DEEPREC_EDGE_FORCE_SCALAR=%s", dre_path_name(first),
        force ? force : "(unset)");
    CHECK(dre_path_supported(first), "active path is not supported");
    int any_simd = 0;
    for (int i = 1; i < N_ALL_PATHS; ++i) any_simd |= dre_path_supported(ALL_PATHS[i]);
    if (forced)
        CHECK(first == DRE_PATH_SCALAR, "forced scalar, but %s is active", dre_path_name(first));
    else
        CHECK(!any_simd || first != DRE_PATH_SCALAR, "a SIMD path is supported but scalar was chosen");
    if (expect_path)
        CHECK(strcmp(dre_path_name(first), expect_path) == 0, "expected path %s, active is %s",
              expect_path, dre_path_name(first));
#if defined(__aarch64__)
    CHECK(dre_path_supported(DRE_PATH_NEON), "NEON is baseline on aarch64");
    CHECK(!forced ? first == DRE_PATH_NEON : 1, "aarch64 must pick neon");
#endif
#if !defined(__x86_64__) && !defined(_M_X64)
    CHECK(!dre_path_supported(DRE_PATH_AVX2) && !dre_path_supported(DRE_PATH_AVX512),
          "x86 path claimed on a non-x86 build");
#endif
#if defined(ARM32_HWCAP)
    {
        const int cpu_neon = (getauxval(AT_HWCAP) & ARM32_HWCAP_NEON) != 0;
#  if defined(ARM32_NEON_BUILT)
        CHECK(dre_path_supported(DRE_PATH_NEON) == cpu_neon,
              "neon supported=%d, but the CPU's AT_HWCAP says NEON=%d",
              dre_path_supported(DRE_PATH_NEON), cpu_neon);
        CHECK(forced || !cpu_neon || first == DRE_PATH_NEON, "armv7 with NEON must pick neon");
#  else
        CHECK(!dre_path_supported(DRE_PATH_NEON), "neon claimed by a build without NEON kernels");
#  endif
    }
#elif !defined(__aarch64__) && !defined(_M_ARM64) && !defined(__arm__) && !defined(_M_ARM)
    CHECK(!dre_path_supported(DRE_PATH_NEON), "neon claimed on a non-ARM build");
#endif
    CHECK(dre_path_supported(DRE_PATH_SCALAR) == 1, "scalar must always be supported");
    for (int i = 0; i < n_paths; ++i)
        CHECK(strcmp(dre_path_name(paths[i]), "unknown") != 0, "supported path %d has no name",
              (int)paths[i]);
    CHECK(dre_path_supported((dre_path)9) == 0, "path 9 supported?");
    CHECK(dre_path_supported((dre_path)-1) == 0, "path -1 supported?");

    /* set_path: each supported path becomes active; an unsupported or
     * unknown one is refused and leaves the active path alone */
    for (int i = 0; i < N_ALL_PATHS; ++i) {
        const dre_path p = ALL_PATHS[i];
        ctx("dre_set_path(%s)", dre_path_name(p));
        const dre_path before = dre_active_path();
        if (dre_path_supported(p)) {
            CHECK_STATUS(dre_set_path(p), DRE_OK);
            CHECK(dre_active_path() == p, "active is %s", dre_path_name(dre_active_path()));
        } else {
            CHECK_STATUS(dre_set_path(p), DRE_ERR_UNSUPPORTED);
            CHECK(dre_active_path() == before, "active path changed on a refused set_path");
        }
    }
    ctx("dre_set_path(unknown)");
    {
        const dre_path before = dre_active_path();
        const dre_status s = dre_set_path((dre_path)9);
        CHECK(s == DRE_ERR_ARG || s == DRE_ERR_UNSUPPORTED, "set_path(9) returned %d", (int)s);
        CHECK(dre_active_path() == before, "active path changed");
        const dre_status s2 = dre_set_path((dre_path)-1);
        CHECK(s2 == DRE_ERR_ARG || s2 == DRE_ERR_UNSUPPORTED, "set_path(-1) returned %d", (int)s2);
    }
    use_path(first);
    case_end();
    group_end();
}

/* ======================================================================== */
/* SGEMM                                                                     */
/* ======================================================================== */

/* got (rows x cols, row stride ldg) against ref with per-element error
 * scale: |got - ref| <= factor * scale + tiny. */
static int check_scaled_at(int line, const char *what, const float *got, int64_t ldg,
                           const double *ref, const double *scale, int64_t rows, int64_t cols,
                           double factor) {
    int64_t bad = 0, wi = 0, wj = 0;
    double worst = -1.0;
    for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < cols; ++j) {
            const double g = got[i * ldg + j], r = ref[i * cols + j];
            const double tol = factor * scale[i * cols + j] + 1e-30;
            const double d = fabs(g - r);
            if (g_verbose && isfinite(d)) note_ratio(d / tol, what);
            if (d <= tol && !isnan(g)) continue;
            if (isnan(g) && isnan(r)) continue;
            ++bad;
            const double ratio = isnan(d) ? INFINITY : d / tol;
            if (ratio > worst) { worst = ratio; wi = i; wj = j; }
        }
    if (!bad) return check_at(1, line, "");
    return check_at(0, line, "%s: %lld elements off; worst (%lld,%lld) got %.9g ref %.9g tol %.3g",
                    what, (long long)bad, (long long)wi, (long long)wj,
                    (double)got[wi * ldg + wj], ref[wi * cols + wj],
                    factor * scale[wi * cols + wj]);
}
#define CHECK_SCALED(what, got, ldg, ref, scale, rows, cols, factor) \
    check_scaled_at(__LINE__, what, got, ldg, ref, scale, rows, cols, factor)

static void sgemm_case(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, float beta,
                       int64_t pad) {
    const int64_t lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
    const int64_t ra = ta ? K : M, ca = ta ? M : K, rb = tb ? N : K, cb = tb ? K : N;
    /* the last row needs no padding: the guard page follows its last element */
    const int64_t na = ra > 0 ? (ra - 1) * lda + ca : 0, nb = rb > 0 ? (rb - 1) * ldb + cb : 0;
    const int64_t nc = M > 0 ? (M - 1) * ldc + N : 0;
    float *A = gf(na), *B = gf(nb), *C0 = gf(nc);
    fill_uniform(A, na, -1.0f, 1.0f);
    fill_uniform(B, nb, -1.0f, 1.0f);
    fill_uniform(C0, nc, -1.0f, 1.0f);
    if (beta == 0.0f) /* beta == 0 must not read C: NaNs there must vanish */
        for (int64_t i = 0; i < nc; ++i) if ((i & 3) == 0) C0[i] = NAN;
    double *ref = dtmp(M * N), *scale = dtmp(M * N);
    ref_sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C0, ldc, ref, scale);
    const size_t need = dre_sgemm_workspace_size(N, K);
    double *Cs = dtmp(M * N); /* the scalar path's C */
    for (int pi = 0; pi < n_paths; ++pi) {
        use_path(paths[pi]);
        ctx("path=%s ta=%d tb=%d M=%lld N=%lld K=%lld alpha=%g beta=%g pad=%lld",
            dre_path_name(paths[pi]), ta, tb, (long long)M, (long long)N, (long long)K,
            (double)alpha, (double)beta, (long long)pad);
        float *C = gcopy(C0, nc);
        void *ws = gws(need);
        CHECK_STATUS(dre_sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, ws, need),
                     DRE_OK);
        CHECK_SCALED("C vs double", C, ldc, ref, scale, M, N, (double)(K + 3) * FLT_EPSILON);
        /* the padding between rows of C is not C */
        int pad_ok = 1;
        for (int64_t i = 0; i + 1 < M; ++i)
            for (int64_t j = N; j < ldc; ++j)
                if (memcmp(&C[i * ldc + j], &C0[i * ldc + j], sizeof(float)) != 0) pad_ok = 0;
        CHECK(pad_ok, "wrote into the padding of C (columns N..ldc-1)");
        if (pi == 0) {
            for (int64_t i = 0; i < M; ++i)
                for (int64_t j = 0; j < N; ++j) Cs[i * N + j] = C[i * ldc + j];
        } else {
            CHECK_SCALED("C vs scalar path", C, ldc, Cs, scale, M, N,
                         2.0 * (double)(K + 3) * FLT_EPSILON);
        }
    }
    case_end();
}

static void test_sgemm(void) {
    group_begin("sgemm");
    static const float ab[][2] = {{1.0f, 0.0f}, {0.5f, -1.25f}, {-2.0f, 1.0f}, {1.0f, 1.0f},
                                  {0.0f, 0.5f}};
    int c = 0;
    for (int ta = 0; ta < 2; ++ta)
        for (int tb = 0; tb < 2; ++tb) {
            for (int s = 0; s < N_SWEEP; ++s) {
                const int64_t v = SWEEP[s];
                if (g_quick && s % 3 && v < 63) continue;
                const float *a = ab[c++ % 5];
                const int64_t pad = (c & 1) ? 0 : 3;
                sgemm_case(ta, tb, v, 17, 9, a[0], a[1], pad);  /* M sweep: row tiles */
                sgemm_case(ta, tb, 7, v, 9, a[0], a[1], pad);   /* N sweep: column tails */
                sgemm_case(ta, tb, 5, 19, v, a[0], a[1], pad);  /* K sweep */
            }
            /* K blocking (KC = 256) and larger tiles */
            sgemm_case(ta, tb, 13, 33, 255, 1.0f, 0.0f, 0);
            sgemm_case(ta, tb, 13, 33, 257, 0.5f, 1.0f, 1);
            sgemm_case(ta, tb, 7, 20, 513, 1.0f, -1.0f, 0);
            sgemm_case(ta, tb, 65, 65, 65, 1.0f, 0.0f, 2);
            if (!g_quick) sgemm_case(ta, tb, 64, 256, 64, -1.0f, 0.5f, 0);
            /* empty products */
            sgemm_case(ta, tb, 6, 5, 0, 1.0f, 0.5f, 0);
            sgemm_case(ta, tb, 6, 5, 0, 1.0f, 0.0f, 1);
            sgemm_case(ta, tb, 0, 5, 3, 1.0f, 0.0f, 0);
            sgemm_case(ta, tb, 6, 0, 3, 1.0f, 0.0f, 0);
            /* every (row tail, column tail) pair of the micro-tiles */
            for (int64_t m = 1; m <= 17; ++m)
                for (int64_t n = 1; n <= 17; ++n) {
                    if (g_quick && (m + n) % 4) continue;
                    sgemm_case(ta, tb, m, n, (m + n) % 7 + 1, ab[(m * n) % 5][0], ab[(m * n) % 5][1],
                               (m + n) & 1);
                }
        }
    group_end();
}

/* ======================================================================== */
/* GRU                                                                       */
/* ======================================================================== */

/* A GRU problem: host inputs (guarded, reused read-only by every path). */
typedef struct {
    int64_t T, B, I, H;
    float *x, *h0, *W_ih, *W_hh, *b_ih, *b_hh; /* h0 may be NULL */
    int32_t *lengths;                           /* may be NULL */
    ref_gru_in in;
} gru_problem;

enum { LEN_NONE = 0, LEN_RANDOM = 1, LEN_SORTED = 2, LEN_FULL = 3, LEN_WITH_ZEROS = 4 };

static void gru_make(gru_problem *p, int64_t T, int64_t B, int64_t I, int64_t H, int lmode,
                     int use_h0, float wscale) {
    p->T = T; p->B = B; p->I = I; p->H = H;
    const float k = wscale > 0 ? wscale : (float)(1.0 / sqrt((double)(H > 0 ? H : 1)));
    p->x = gf(T * B * I);
    fill_uniform(p->x, T * B * I, -1.0f, 1.0f);
    p->h0 = use_h0 ? gf(B * H) : NULL;
    if (p->h0) fill_uniform(p->h0, B * H, -1.0f, 1.0f);
    p->W_ih = gf(3 * H * I);
    p->W_hh = gf(3 * H * H);
    p->b_ih = gf(3 * H);
    p->b_hh = gf(3 * H);
    fill_uniform(p->W_ih, 3 * H * I, -k, k);
    fill_uniform(p->W_hh, 3 * H * H, -k, k);
    fill_uniform(p->b_ih, 3 * H, -k, k);
    fill_uniform(p->b_hh, 3 * H, -k, k);
    p->lengths = NULL;
    if (lmode != LEN_NONE) {
        p->lengths = gi32(B);
        for (int64_t b = 0; b < B; ++b) {
            switch (lmode) {
            case LEN_FULL: p->lengths[b] = (int32_t)T; break;
            case LEN_WITH_ZEROS: p->lengths[b] = (b % 3 == 1) ? 0 : (int32_t)rng_int(0, T); break;
            default: p->lengths[b] = (int32_t)rng_int(T > 0 ? 1 : 0, T); break;
            }
        }
        if (lmode == LEN_SORTED) /* non-increasing, with a full-length first row */
            for (int64_t b = 0; b < B; ++b) {
                int64_t best = b;
                for (int64_t c = b + 1; c < B; ++c) if (p->lengths[c] > p->lengths[best]) best = c;
                const int32_t t = p->lengths[b]; p->lengths[b] = p->lengths[best]; p->lengths[best] = t;
            }
        if (lmode == LEN_RANDOM && B > 1) p->lengths[B - 1] = (int32_t)T; /* last row longest: unsorted */
    }
    p->in.T = T; p->in.B = B; p->in.I = I; p->in.H = H;
    p->in.x = p->x; p->in.h0 = p->h0; p->in.W_ih = p->W_ih; p->in.W_hh = p->W_hh;
    p->in.b_ih = p->b_ih; p->in.b_hh = p->b_hh; p->in.lengths = p->lengths;
}

static int64_t gru_len(const gru_problem *p, int64_t b) {
    return p->lengths ? p->lengths[b] : p->T;
}

typedef struct {
    float *y, *h_n, *cache;
} gru_fwd_out;

/* Kernel forward on the active path; guarded outputs, exact workspace. */
static dre_status gru_run_forward(const gru_problem *p, int with_cache, gru_fwd_out *o,
                                  int misalign_ws) {
    const int64_t T = p->T, B = p->B, H = p->H;
    o->y = gf(T * B * H);
    o->h_n = gf(B * H);
    o->cache = with_cache ? gf((int64_t)dre_gru_cache_floats(T, B, H)) : NULL;
    const size_t need = dre_gru_forward_workspace_size(T, B, p->I, H);
    char *ws = (char *)gws(need + (size_t)misalign_ws) + misalign_ws;
    return dre_gru_forward(T, B, p->I, H, p->x, p->lengths, p->h0, p->W_ih, p->W_hh, p->b_ih,
                           p->b_hh, o->y, o->h_n, o->cache, ws, need);
}

/* y, h_n and the cache of active steps against the double reference;
 * padded steps of y must be exactly 0. */
static double gru_fwd_atol(const gru_problem *p) {
    return 2e-6 * sqrt((double)(p->I + p->H + 1)) * (double)(p->T > 0 ? p->T : 1) + 1e-6;
}

static void gru_fwd_case(int64_t T, int64_t B, int64_t I, int64_t H, int lmode, int use_h0,
                         float wscale) {
    gru_problem p;
    gru_make(&p, T, B, I, H, lmode, use_h0, wscale);
    ref_gru_par d;
    ref_gru_par_init(&p.in, &d);
    double *y = dtmp(T * B * H), *hn = dtmp(B * H), *gates = dtmp(T * B * 4 * H);
    ref_gru_forward(&p.in, &d, y, hn, gates);
    ref_gru_par_free(&d);
    const double atol = gru_fwd_atol(&p), rtol = 1e-5;
    gru_fwd_out s = {0, 0, 0};
    for (int pi = 0; pi < n_paths; ++pi) {
        use_path(paths[pi]);
        ctx("path=%s gru_forward T=%lld B=%lld I=%lld H=%lld lengths=%d h0=%d wscale=%g",
            dre_path_name(paths[pi]), (long long)T, (long long)B, (long long)I, (long long)H,
            lmode, use_h0, (double)wscale);
        gru_fwd_out o;
        CHECK_STATUS(gru_run_forward(&p, 1, &o, pi), DRE_OK);
        CHECK_CLOSE("y", o.y, y, T * B * H, atol, rtol);
        CHECK_CLOSE("h_n", o.h_n, hn, B * H, atol, rtol);
        int zeros = 1;
        double *cref = dtmp(T * B * 4 * H);
        float *cgot = gf(T * B * 4 * H);
        int64_t nc = 0;
        for (int64_t t = 0; t < T; ++t)
            for (int64_t b = 0; b < B; ++b) {
                const int64_t at = (t * B + b);
                if (t >= gru_len(&p, b)) {
                    for (int64_t j = 0; j < H; ++j) zeros &= o.y[at * H + j] == 0.0f;
                    continue;
                }
                memcpy(cgot + nc, o.cache + at * 4 * H, (size_t)(4 * H) * sizeof(float));
                memcpy(cref + nc, gates + at * 4 * H, (size_t)(4 * H) * sizeof(double));
                nc += 4 * H;
            }
        CHECK(zeros, "y at padded steps is not exactly 0");
        CHECK_CLOSE("cache (r, z, n, W_hn h + b_hn) at active steps", cgot, cref, nc, atol, rtol);
        if (pi == 0) {
            s = o;
        } else {
            CHECK_CLOSE_FF("y vs scalar path", o.y, s.y, T * B * H, atol, rtol);
            CHECK_CLOSE_FF("h_n vs scalar path", o.h_n, s.h_n, B * H, atol, rtol);
        }
        /* inference: no cache, same results */
        gru_fwd_out o2;
        CHECK_STATUS(gru_run_forward(&p, 0, &o2, 0), DRE_OK);
        CHECK(memcmp(o2.y, o.y, (size_t)(T * B * H) * sizeof(float)) == 0 &&
              memcmp(o2.h_n, o.h_n, (size_t)(B * H) * sizeof(float)) == 0,
              "cache == NULL changes y or h_n");
    }
    case_end();
}

static void test_gru_forward(void) {
    group_begin("gru_forward");
    int c = 0;
    for (int s = 0; s < N_SWEEP; ++s) {
        const int64_t v = SWEEP[s];
        if (g_quick && s % 3 && v < 63) continue;
        ++c;
        gru_fwd_case(3, 3, 5, v, c % 5, c & 1, 0.0f);  /* H sweep: gate tails */
        gru_fwd_case(2, 2, v, 7, (c + 2) % 5, 1, 0.0f); /* I sweep */
        if (v <= 20) gru_fwd_case(4, v, 3, 9, (c + 1) % 5, c & 2, 0.0f); /* B sweep */
        if (v <= 12) gru_fwd_case(v, 2, 4, 6, LEN_RANDOM, 1, 0.0f);     /* T sweep */
    }
    /* large hidden sizes, saturating weights */
    gru_fwd_case(2, 2, 16, 255, LEN_RANDOM, 1, 0.0f);
    gru_fwd_case(2, 3, 17, 256, LEN_SORTED, 1, 0.0f);
    gru_fwd_case(2, 1, 9, 257, LEN_NONE, 0, 0.0f);
    gru_fwd_case(5, 4, 8, 24, LEN_WITH_ZEROS, 1, 2.0f);
    gru_fwd_case(3, 7, 6, 33, LEN_SORTED, 1, 3.0f);
    /* empty: T == 0, H == 0, I == 0, B == 0 */
    gru_fwd_case(0, 3, 4, 5, LEN_NONE, 1, 0.0f);
    gru_fwd_case(0, 3, 4, 5, LEN_FULL, 0, 0.0f);
    gru_fwd_case(3, 2, 0, 5, LEN_RANDOM, 1, 0.0f);
    gru_fwd_case(3, 0, 4, 5, LEN_NONE, 1, 0.0f);
    gru_fwd_case(3, 2, 4, 0, LEN_RANDOM, 1, 0.0f);
    gru_fwd_case(4, 5, 3, 8, LEN_WITH_ZEROS, 0, 0.0f);
    group_end();
}

/* Kernel backward on the active path, after its own forward.  Accumulators
 * start from acc0 (copied); dx and dh0 start as the guard pattern. */
typedef struct {
    float *dx, *dh0, *dW_ih, *dW_hh, *db_ih, *db_hh;
} gru_bwd_out;

typedef struct {
    int dx, dh0, dW_ih, dW_hh, db_ih, db_hh; /* which outputs to ask for */
} gru_bwd_want;

static const gru_bwd_want WANT_ALL = {1, 1, 1, 1, 1, 1};

static dre_status gru_run_backward(const gru_problem *p, const gru_fwd_out *f, const float *dy,
                                   const float *dh_n, const gru_bwd_out *acc0, gru_bwd_want w,
                                   gru_bwd_out *o, int misalign_ws) {
    const int64_t T = p->T, B = p->B, I = p->I, H = p->H;
    o->dx = w.dx ? gf(T * B * I) : NULL;
    o->dh0 = w.dh0 ? gf(B * H) : NULL;
    o->dW_ih = w.dW_ih ? gcopy(acc0->dW_ih, 3 * H * I) : NULL;
    o->dW_hh = w.dW_hh ? gcopy(acc0->dW_hh, 3 * H * H) : NULL;
    o->db_ih = w.db_ih ? gcopy(acc0->db_ih, 3 * H) : NULL;
    o->db_hh = w.db_hh ? gcopy(acc0->db_hh, 3 * H) : NULL;
    const size_t need = dre_gru_backward_workspace_size(T, B, I, H);
    char *ws = (char *)gws(need + (size_t)misalign_ws) + misalign_ws;
    return dre_gru_backward(T, B, I, H, p->x, p->lengths, p->h0, p->W_ih, p->W_hh, f->y,
                            f->cache, dy, dh_n, o->dx, o->dh0, o->dW_ih, o->dW_hh, o->db_ih,
                            o->db_hh, ws, need);
}

static void gru_acc0(const gru_problem *p, gru_bwd_out *a, float val_scale) {
    const int64_t I = p->I, H = p->H;
    a->dx = a->dh0 = NULL;
    a->dW_ih = gf(3 * H * I); a->dW_hh = gf(3 * H * H); a->db_ih = gf(3 * H); a->db_hh = gf(3 * H);
    fill_uniform(a->dW_ih, 3 * H * I, -val_scale, val_scale);
    fill_uniform(a->dW_hh, 3 * H * H, -val_scale, val_scale);
    fill_uniform(a->db_ih, 3 * H, -val_scale, val_scale);
    fill_uniform(a->db_hh, 3 * H, -val_scale, val_scale);
}

/* ref + acc0 (accumulated outputs) */
static double *plus_acc(const double *g, const float *acc0, int64_t n) {
    double *r = dtmp(n);
    for (int64_t i = 0; i < n; ++i) r[i] = g[i] + (acc0 ? (double)acc0[i] : 0.0);
    return r;
}

static void gru_check_grads(const gru_problem *p, const gru_bwd_out *o, const gru_bwd_out *acc0,
                            const ref_gru_grads *g, double atol, double rtol) {
    const int64_t T = p->T, B = p->B, I = p->I, H = p->H;
    if (o->dx) CHECK_CLOSE("dx", o->dx, g->dx, T * B * I, atol, rtol);
    if (o->dh0) CHECK_CLOSE("dh0", o->dh0, g->dh0, B * H, atol, rtol);
    if (o->dW_ih) CHECK_CLOSE("dW_ih (accumulated)", o->dW_ih, plus_acc(g->dW_ih, acc0->dW_ih, 3 * H * I), 3 * H * I, atol, rtol);
    if (o->dW_hh) CHECK_CLOSE("dW_hh (accumulated)", o->dW_hh, plus_acc(g->dW_hh, acc0->dW_hh, 3 * H * H), 3 * H * H, atol, rtol);
    if (o->db_ih) CHECK_CLOSE("db_ih (accumulated)", o->db_ih, plus_acc(g->db_ih, acc0->db_ih, 3 * H), 3 * H, atol, rtol);
    if (o->db_hh) CHECK_CLOSE("db_hh (accumulated)", o->db_hh, plus_acc(g->db_hh, acc0->db_hh, 3 * H), 3 * H, atol, rtol);
}

/* Central differences of the double reference loss over every parameter. */
static void gru_fd_grads(const gru_problem *p, const float *dy, const float *dh_n,
                         ref_gru_grads *g) {
    ref_gru_par d;
    ref_gru_par_init(&p->in, &d);
    const int64_t T = p->T, B = p->B, I = p->I, H = p->H;
    double *sets[6] = {d.x, d.h0, d.W_ih, d.W_hh, d.b_ih, d.b_hh};
    double *outs[6] = {g->dx, g->dh0, g->dW_ih, g->dW_hh, g->db_ih, g->db_hh};
    const int64_t sizes[6] = {T * B * I, B * H, 3 * H * I, 3 * H * H, 3 * H, 3 * H};
    const double h = 1e-6;
    for (int s = 0; s < 6; ++s)
        for (int64_t i = 0; i < sizes[s]; ++i) {
            const double save = sets[s][i];
            sets[s][i] = save + h;
            const double fp = ref_gru_loss(&p->in, &d, dy, dh_n);
            sets[s][i] = save - h;
            const double fm = ref_gru_loss(&p->in, &d, dy, dh_n);
            sets[s][i] = save;
            outs[s][i] = (fp - fm) / (2.0 * h);
        }
    ref_gru_par_free(&d);
}

/* Kernel gradients against finite differences of the double reference, at
 * small sizes; the reference BPTT is checked against the same differences. */
static void gru_bwd_fd_case(int64_t T, int64_t B, int64_t I, int64_t H, int lmode, int use_h0,
                            int use_dy, int use_dhn, float wscale) {
    gru_problem p;
    gru_make(&p, T, B, I, H, lmode, use_h0, wscale);
    float *dy = use_dy ? gf(T * B * H) : NULL, *dhn = use_dhn ? gf(B * H) : NULL;
    if (dy) fill_uniform(dy, T * B * H, -1.0f, 1.0f);
    if (dhn) fill_uniform(dhn, B * H, -1.0f, 1.0f);
    ref_gru_grads fd, bp;
    ref_gru_grads_init(&p.in, &fd);
    ref_gru_grads_init(&p.in, &bp);
    gru_fd_grads(&p, dy, dhn, &fd);
    {
        ref_gru_par d;
        ref_gru_par_init(&p.in, &d);
        ref_gru_backward(&p.in, &d, dy, dhn, &bp);
        ref_gru_par_free(&d);
    }
    ctx("reference BPTT vs finite differences T=%lld B=%lld I=%lld H=%lld", (long long)T,
        (long long)B, (long long)I, (long long)H);
    {
        /* the test's own reference, in double: agree to ~1e-8 */
        const int64_t sizes[6] = {T * B * I, B * H, 3 * H * I, 3 * H * H, 3 * H, 3 * H};
        double *a[6] = {bp.dx, bp.dh0, bp.dW_ih, bp.dW_hh, bp.db_ih, bp.db_hh};
        double *b[6] = {fd.dx, fd.dh0, fd.dW_ih, fd.dW_hh, fd.db_ih, fd.db_hh};
        for (int s = 0; s < 6; ++s) {
            double worst = 0.0;
            for (int64_t i = 0; i < sizes[s]; ++i) {
                const double e = fabs(a[s][i] - b[s][i]) / (1.0 + fabs(b[s][i]));
                if (e > worst) worst = e;
            }
            CHECK(worst < 1e-7, "reference gradient set %d off by %.3g", s, worst);
        }
    }
    gru_bwd_out acc0;
    gru_acc0(&p, &acc0, 0.5f);
    for (int pi = 0; pi < n_paths; ++pi) {
        use_path(paths[pi]);
        ctx("path=%s gru_backward vs finite differences T=%lld B=%lld I=%lld H=%lld lengths=%d "
            "h0=%d dy=%d dh_n=%d", dre_path_name(paths[pi]), (long long)T, (long long)B,
            (long long)I, (long long)H, lmode, use_h0, use_dy, use_dhn);
        gru_fwd_out f;
        CHECK_STATUS(gru_run_forward(&p, 1, &f, 0), DRE_OK);
        gru_bwd_out o;
        CHECK_STATUS(gru_run_backward(&p, &f, dy, dhn, &acc0, WANT_ALL, &o, 3), DRE_OK);
        gru_check_grads(&p, &o, &acc0, &fd, 2e-5, 2e-4);
    }
    ref_gru_grads_free(&fd);
    ref_gru_grads_free(&bp);
    case_end();
}

/* Kernel gradients against the double BPTT, every path, SIMD vs scalar,
 * optional outputs left out, dy at padded steps poisoned. */
static void gru_bwd_case(int64_t T, int64_t B, int64_t I, int64_t H, int lmode, int use_h0,
                         float wscale, gru_bwd_want want) {
    gru_problem p;
    gru_make(&p, T, B, I, H, lmode, use_h0, wscale);
    float *dy = gf(T * B * H), *dhn = gf(B * H);
    fill_uniform(dy, T * B * H, -1.0f, 1.0f);
    fill_uniform(dhn, B * H, -1.0f, 1.0f);
    /* "entries at padded steps are ignored": NaN there must not leak */
    for (int64_t t = 0; t < T; ++t)
        for (int64_t b = 0; b < B; ++b)
            if (t >= gru_len(&p, b))
                for (int64_t j = 0; j < H; ++j) dy[(t * B + b) * H + j] = NAN;
    ref_gru_grads g;
    ref_gru_grads_init(&p.in, &g);
    {
        ref_gru_par d;
        ref_gru_par_init(&p.in, &d);
        ref_gru_backward(&p.in, &d, dy, dhn, &g);
        ref_gru_par_free(&d);
    }
    const double atol = 3e-6 * sqrt((double)(I + H + B + 1)) * (double)(T > 0 ? T : 1) + 2e-6;
    const double rtol = 1e-4;
    gru_bwd_out acc0, s = {0, 0, 0, 0, 0, 0};
    gru_acc0(&p, &acc0, 1.0f);
    for (int pi = 0; pi < n_paths; ++pi) {
        use_path(paths[pi]);
        ctx("path=%s gru_backward T=%lld B=%lld I=%lld H=%lld lengths=%d h0=%d wscale=%g "
            "want=%d%d%d%d%d%d", dre_path_name(paths[pi]), (long long)T, (long long)B,
            (long long)I, (long long)H, lmode, use_h0, (double)wscale, want.dx, want.dh0,
            want.dW_ih, want.dW_hh, want.db_ih, want.db_hh);
        gru_fwd_out f;
        CHECK_STATUS(gru_run_forward(&p, 1, &f, 0), DRE_OK);
        gru_bwd_out o;
        CHECK_STATUS(gru_run_backward(&p, &f, dy, dhn, &acc0, want, &o, pi), DRE_OK);
        gru_check_grads(&p, &o, &acc0, &g, atol, rtol);
        if (o.dx) {
            int zeros = 1;
            for (int64_t t = 0; t < T; ++t)
                for (int64_t b = 0; b < B; ++b)
                    if (t >= gru_len(&p, b))
                        for (int64_t k = 0; k < I; ++k) zeros &= o.dx[(t * B + b) * I + k] == 0.0f;
            CHECK(zeros, "dx at padded steps is not exactly 0");
        }
        if (pi == 0) {
            s = o;
        } else {
            if (o.dx) CHECK_CLOSE_FF("dx vs scalar", o.dx, s.dx, T * B * I, atol, rtol);
            if (o.dh0) CHECK_CLOSE_FF("dh0 vs scalar", o.dh0, s.dh0, B * H, atol, rtol);
            if (o.dW_ih) CHECK_CLOSE_FF("dW_ih vs scalar", o.dW_ih, s.dW_ih, 3 * H * I, atol, rtol);
            if (o.dW_hh) CHECK_CLOSE_FF("dW_hh vs scalar", o.dW_hh, s.dW_hh, 3 * H * H, atol, rtol);
            if (o.db_ih) CHECK_CLOSE_FF("db_ih vs scalar", o.db_ih, s.db_ih, 3 * H, atol, rtol);
            if (o.db_hh) CHECK_CLOSE_FF("db_hh vs scalar", o.db_hh, s.db_hh, 3 * H, atol, rtol);
        }
    }
    ref_gru_grads_free(&g);
    case_end();
}

static void test_gru_backward(void) {
    group_begin("gru_backward");
    /* finite differences of the double reference (small sizes) */
    gru_bwd_fd_case(3, 2, 3, 4, LEN_RANDOM, 1, 1, 1, 0.0f);
    gru_bwd_fd_case(4, 3, 2, 5, LEN_WITH_ZEROS, 1, 1, 1, 1.0f);
    gru_bwd_fd_case(2, 1, 1, 1, LEN_NONE, 1, 1, 1, 1.5f);
    gru_bwd_fd_case(3, 2, 4, 3, LEN_SORTED, 0, 1, 0, 0.0f);
    gru_bwd_fd_case(3, 3, 2, 9, LEN_RANDOM, 1, 0, 1, 0.8f);
    if (!g_quick) gru_bwd_fd_case(2, 2, 3, 17, LEN_FULL, 1, 1, 1, 0.0f);
    /* double BPTT at sweep sizes */
    int c = 0;
    for (int s = 0; s < N_SWEEP; ++s) {
        const int64_t v = SWEEP[s];
        if (g_quick && s % 3 && v < 63) continue;
        ++c;
        gru_bwd_case(3, 3, 5, v, c % 5, c & 1, 0.0f, WANT_ALL); /* H sweep */
        gru_bwd_case(2, 2, v, 6, (c + 2) % 5, 1, 0.0f, WANT_ALL); /* I sweep */
        if (v <= 20) gru_bwd_case(3, v, 4, 5, (c + 1) % 5, 1, 1.0f, WANT_ALL); /* B sweep */
    }
    gru_bwd_case(2, 2, 8, 256, LEN_RANDOM, 1, 0.0f, WANT_ALL);
    gru_bwd_case(2, 3, 5, 255, LEN_SORTED, 0, 0.0f, WANT_ALL);
    gru_bwd_case(6, 5, 7, 12, LEN_WITH_ZEROS, 1, 2.0f, WANT_ALL);
    /* each optional output left out in turn */
    {
        static const gru_bwd_want wants[] = {
            {0, 1, 1, 1, 1, 1}, {1, 0, 1, 1, 1, 1}, {1, 1, 0, 1, 1, 1}, {1, 1, 1, 0, 1, 1},
            {1, 1, 1, 1, 0, 1}, {1, 1, 1, 1, 1, 0}, {0, 0, 0, 0, 0, 0}, {0, 1, 0, 0, 0, 0}};
        for (size_t i = 0; i < sizeof wants / sizeof wants[0]; ++i)
            gru_bwd_case(3, 4, 5, 11, LEN_RANDOM, 1, 0.0f, wants[i]);
    }
    /* empty */
    gru_bwd_case(0, 2, 3, 4, LEN_NONE, 1, 0.0f, WANT_ALL);
    gru_bwd_case(3, 2, 0, 4, LEN_RANDOM, 1, 0.0f, WANT_ALL);
    gru_bwd_case(3, 2, 3, 0, LEN_RANDOM, 1, 0.0f, WANT_ALL);
    gru_bwd_case(3, 0, 3, 4, LEN_NONE, 1, 0.0f, WANT_ALL);
    group_end();
}

/* dre_gru_step against the forward kernel with T = 1, B = 1 (same path) and
 * against the double cell; also with h_out == h. */
static void gru_step_case(int64_t I, int64_t H, float wscale) {
    gru_problem p;
    gru_make(&p, 1, 1, I, H, LEN_NONE, 1, wscale);
    ref_gru_par d;
    ref_gru_par_init(&p.in, &d);
    double *ref = dtmp(H);
    ref_gru_cell(I, H, d.x, d.h0, &d, ref, NULL);
    ref_gru_par_free(&d);
    const double atol = 2e-6 * sqrt((double)(I + H + 1)) + 1e-6, rtol = 1e-5;
    float *s = NULL;
    for (int pi = 0; pi < n_paths; ++pi) {
        use_path(paths[pi]);
        ctx("path=%s gru_step I=%lld H=%lld wscale=%g", dre_path_name(paths[pi]), (long long)I,
            (long long)H, (double)wscale);
        const size_t need = dre_gru_step_workspace_size(I, H);
        CHECK(need >= (size_t)(6 * H) * sizeof(float), "step workspace %zu < 6H floats", need);
        float *out = gf(H);
        void *ws = gws(need);
        CHECK_STATUS(dre_gru_step(I, H, p.x, p.h0, p.W_ih, p.W_hh, p.b_ih, p.b_hh, out, ws, need),
                     DRE_OK);
        CHECK_CLOSE("h_out vs double", out, ref, H, atol, rtol);
        gru_fwd_out f;
        CHECK_STATUS(gru_run_forward(&p, 0, &f, 0), DRE_OK);
        CHECK_CLOSE_FF("h_out vs gru_forward T=1 B=1", out, f.h_n, H, atol, rtol);
        /* in place: h_out aliases h */
        float *h = gcopy(p.h0, H);
        ws = gws(need);
        CHECK_STATUS(dre_gru_step(I, H, p.x, h, p.W_ih, p.W_hh, p.b_ih, p.b_hh, h, ws, need),
                     DRE_OK);
        CHECK(memcmp(h, out, (size_t)H * sizeof(float)) == 0, "h_out == h gives other results");
        if (pi == 0) s = out;
        else CHECK_CLOSE_FF("h_out vs scalar", out, s, H, atol, rtol);
    }
    case_end();
}

static void test_gru_step(void) {
    group_begin("gru_step");
    for (int s = 0; s < N_SWEEP; ++s) {
        gru_step_case(5, SWEEP[s], 0.0f);
        gru_step_case(SWEEP[s], 7, 1.0f);
        if (SWEEP[s] > 10) gru_step_case(SWEEP[s], SWEEP[s], 0.0f);
    }
    gru_step_case(32, 256, 0.0f);
    gru_step_case(255, 129, 0.0f);
    gru_step_case(0, 9, 0.0f);
    /* a click stream: step after step equals one forward over the stream */
    {
        const int64_t T = 7, I = 6, H = 19;
        gru_problem p;
        gru_make(&p, T, 1, I, H, LEN_NONE, 1, 0.0f);
        for (int pi = 0; pi < n_paths; ++pi) {
            use_path(paths[pi]);
            ctx("path=%s gru_step stream T=%lld I=%lld H=%lld", dre_path_name(paths[pi]),
                (long long)T, (long long)I, (long long)H);
            gru_fwd_out f;
            CHECK_STATUS(gru_run_forward(&p, 0, &f, 0), DRE_OK);
            float *h = gcopy(p.h0, H);
            const size_t need = dre_gru_step_workspace_size(I, H);
            void *ws = gws(need);
            for (int64_t t = 0; t < T; ++t)
                CHECK_STATUS(dre_gru_step(I, H, p.x + t * I, h, p.W_ih, p.W_hh, p.b_ih, p.b_hh,
                                          h, ws, need), DRE_OK);
            CHECK_CLOSE_FF("streamed h vs forward h_n", h, f.h_n, H, 2e-5, 1e-4);
        }
        case_end();
    }
    group_end();
}

/* ======================================================================== */
/* binary16 weights                                                          */
/* ======================================================================== */

static uint16_t *gu16(int64_t n) { return (uint16_t *)gws((size_t)(n > 0 ? n : 0) * sizeof(uint16_t)); }

/* The double value of a binary16 bit pattern (not NaN), from its fields. */
static double half_value(uint16_t h) {
    const int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    const double mag = e == 0 ? ldexp((double)m, -24)
                     : e == 31 ? HUGE_VAL : ldexp(1.0 + m / 1024.0, e - 15);
    return (h & 0x8000) ? -mag : mag;
}

static int half_is_nan(uint16_t h) { return ((h >> 10) & 0x1f) == 31 && (h & 0x3ff) != 0; }

static float f32_of_bits(uint32_t u) { float f; memcpy(&f, &u, sizeof f); return f; }

/* f32 -> f16 of one value checked against its definition: the result is a
 * nearest binary16 (no neighbour strictly closer; halfway: even mantissa),
 * +-inf from 65520 on. */
static void check_half_rounding(float v, uint16_t h) {
    const double dv = (double)v, av = fabs(dv);
    if (isnan(v)) { CHECK(half_is_nan(h), "f32_to_f16(NaN) = 0x%04x, not NaN", h); return; }
    CHECK(((h & 0x8000) != 0) == (signbit(v) != 0), "f32_to_f16(%a) = 0x%04x: sign", dv, h);
    if (av >= 65520.0) { CHECK((h & 0x7fff) == 0x7c00, "f32_to_f16(%a) = 0x%04x, want inf", dv, h); return; }
    const uint16_t mag = (uint16_t)(h & 0x7fff);
    CHECK(mag < 0x7c00, "f32_to_f16(%a) = 0x%04x: inf or NaN for a finite value", dv, h);
    if (mag >= 0x7c00) return;
    const double err = fabs(fabs(half_value(h)) - av);
    /* neighbours of the same sign; past 65504 the next value would be 65536 */
    const int64_t nb[2] = {(int64_t)mag - 1, mag < 0x7bff ? (int64_t)mag + 1 : -1};
    for (int q = 0; q < 2; ++q) {
        if (nb[q] < 0) continue;
        const double e2 = fabs(fabs(half_value((uint16_t)nb[q])) - av);
        CHECK(e2 > err || (e2 == err && (mag & 1) == 0),
              "f32_to_f16(%a) = 0x%04x: binary16 0x%04x is as close or closer", dv, h, (unsigned)nb[q]);
    }
}

static void test_half(void) {
    group_begin("f16 conversions");
    ctx("every binary16 pattern: f16 -> f32 exact, f32 -> f16 round trip");
    {
        uint16_t *h = gu16(65536), *back = gu16(65536);
        float *f = gf(65536);
        for (int64_t i = 0; i < 65536; ++i) h[i] = (uint16_t)i;
        CHECK_STATUS(dre_f16_to_f32(65536, h, f), DRE_OK);
        CHECK_STATUS(dre_f32_to_f16(65536, f, back), DRE_OK);
        for (int64_t i = 0; i < 65536; ++i) {
            if (half_is_nan(h[i])) {
                CHECK(isnan(f[i]), "f16_to_f32(0x%04x) not NaN", h[i]);
                CHECK(half_is_nan(back[i]), "NaN 0x%04x -> 0x%04x", h[i], back[i]);
            } else {
                CHECK((double)f[i] == half_value(h[i]) && !signbit(f[i]) == !signbit(half_value(h[i])),
                      "f16_to_f32(0x%04x) = %a, want %a", h[i], (double)f[i], half_value(h[i]));
                CHECK(back[i] == h[i], "round trip 0x%04x -> 0x%04x", h[i], back[i]);
            }
        }
    }
    case_end();
    ctx("f32 -> f16 rounding: specials, ties, and random floats of every binade");
    {
        const float special[] = {
            0.0f, -0.0f, 1.0f, -1.0f, 65504.0f, 65519.99609375f, 65520.0f, -65520.0f, 1e30f,
            f32_of_bits(0x7f800000u), f32_of_bits(0xff800000u), f32_of_bits(0x7fc00000u),
            f32_of_bits(0x7f800001u), f32_of_bits(0x33000000u) /* 2^-25: tie, to 0 */,
            f32_of_bits(0x33000001u), f32_of_bits(0x33800000u) /* 2^-24 */,
            1.5f * f32_of_bits(0x33800000u) /* tie 1|2 -> 2 */, 2.5f * f32_of_bits(0x33800000u) /* -> 2 */,
            f32_of_bits(0x387fffffu), f32_of_bits(0x38800000u) /* 2^-14 */, 1.0f + 1.0f / 2048.0f /* tie -> 1 */,
            1.0f + 3.0f / 2048.0f /* tie -> up */, f32_of_bits(0x00000001u), 1e-30f,
        };
        const int64_t ns = (int64_t)(sizeof special / sizeof special[0]);
        const int64_t nr = g_quick ? 20000 : 200000, n = ns + nr;
        float *v = gf(n);
        uint16_t *h = gu16(n);
        for (int64_t i = 0; i < ns; ++i) v[i] = special[i];
        for (int64_t i = 0; i < nr; ++i) {
            /* exponents 96..150 cover zero-rounding, subnormal, normal, overflow */
            const uint32_t e = (uint32_t)rng_int(96, 150), m = (uint32_t)rng_int(0, 0x7fffff);
            const uint32_t sgn = (uint32_t)rng_int(0, 1) << 31;
            v[ns + i] = f32_of_bits(sgn | (e << 23) | m);
        }
        CHECK_STATUS(dre_f32_to_f16(n, v, h), DRE_OK);
        for (int64_t i = 0; i < n; ++i) check_half_rounding(v[i], h[i]);
        CHECK(h[4] == 0x7bff && h[5] == 0x7bff && h[6] == 0x7c00 && h[7] == 0xfc00,
              "65504/65519.996/65520/-65520 -> %04x %04x %04x %04x", h[4], h[5], h[6], h[7]);
        CHECK(h[13] == 0 && h[14] == 1 && h[15] == 1 && h[16] == 2 && h[17] == 2,
              "subnormal ties: %04x %04x %04x %04x %04x", h[13], h[14], h[15], h[16], h[17]);
        CHECK(h[20] == 0x3c00 && h[21] == 0x3c02, "normal ties: %04x %04x", h[20], h[21]);
        CHECK_STATUS(dre_f32_to_f16(0, NULL, NULL), DRE_OK);
        CHECK_STATUS(dre_f32_to_f16(-1, v, h), DRE_ERR_SIZE);
        CHECK_STATUS(dre_f32_to_f16(3, NULL, h), DRE_ERR_NULL);
        CHECK_STATUS(dre_f16_to_f32(3, h, NULL), DRE_ERR_NULL);
        CHECK_STATUS(dre_f16_to_f32(-2, h, v), DRE_ERR_SIZE);
    }
    case_end();
    group_end();
}

/* dre_gru_step_f16 against the double cell on the binary16 weights' values,
 * against dre_gru_step on those values (same path), and SIMD vs scalar. */
static void gru_step_f16_case(int64_t I, int64_t H) {
    gru_problem p;
    gru_make(&p, 1, 1, I, H, LEN_NONE, 1, 0.0f);
    uint16_t *wi = gu16(3 * H * I), *wh = gu16(3 * H * H);
    CHECK_STATUS(dre_f32_to_f16(3 * H * I, p.W_ih, wi), DRE_OK);
    CHECK_STATUS(dre_f32_to_f16(3 * H * H, p.W_hh, wh), DRE_OK);
    /* the float32 problem now holds exactly the binary16 weights */
    CHECK_STATUS(dre_f16_to_f32(3 * H * I, wi, p.W_ih), DRE_OK);
    CHECK_STATUS(dre_f16_to_f32(3 * H * H, wh, p.W_hh), DRE_OK);
    ref_gru_par d;
    ref_gru_par_init(&p.in, &d);
    double *ref = dtmp(H);
    ref_gru_cell(I, H, d.x, d.h0, &d, ref, NULL);
    ref_gru_par_free(&d);
    const double atol = 2e-6 * sqrt((double)(I + H + 1)) + 1e-6, rtol = 1e-5;
    float *s = NULL;
    for (int pi = 0; pi < n_paths; ++pi) {
        use_path(paths[pi]);
        ctx("path=%s gru_step_f16 I=%lld H=%lld", dre_path_name(paths[pi]), (long long)I, (long long)H);
        const size_t need = dre_gru_step_workspace_size(I, H);
        float *out = gf(H), *out32 = gf(H);
        CHECK_STATUS(dre_gru_step_f16(I, H, p.x, p.h0, wi, wh, p.b_ih, p.b_hh, out, gws(need), need),
                     DRE_OK);
        CHECK_CLOSE("h_out vs double", out, ref, H, atol, rtol);
        CHECK_STATUS(dre_gru_step(I, H, p.x, p.h0, p.W_ih, p.W_hh, p.b_ih, p.b_hh, out32,
                                  gws(need), need), DRE_OK);
        CHECK_CLOSE_FF("h_out vs gru_step on the same values", out, out32, H, atol, rtol);
        float *h = gcopy(p.h0, H);
        CHECK_STATUS(dre_gru_step_f16(I, H, p.x, h, wi, wh, p.b_ih, p.b_hh, h, gws(need), need),
                     DRE_OK);
        CHECK(memcmp(h, out, (size_t)H * sizeof(float)) == 0, "h_out == h gives other results");
        if (pi == 0) s = out;
        else CHECK_CLOSE_FF("h_out vs scalar", out, s, H, atol, rtol);
    }
    case_end();
}

static void test_gru_step_f16(void) {
    group_begin("gru_step_f16");
    for (int s = 0; s < N_SWEEP; ++s) {
        gru_step_f16_case(5, SWEEP[s]);
        gru_step_f16_case(SWEEP[s], 7);
        if (SWEEP[s] > 10 && (!g_quick || s % 2)) gru_step_f16_case(SWEEP[s], SWEEP[s]);
    }
    gru_step_f16_case(128, 256);
    gru_step_f16_case(0, 9);
    {
        ctx("gru_step_f16 argument errors");
        const int64_t I = 3, H = 4;
        float *x = gf(I), *h = gf(H), *b = gf(3 * H), *o = gf(H);
        uint16_t *wi = gu16(3 * H * I), *wh = gu16(3 * H * H);
        memset(x, 0, (size_t)I * sizeof(float)); memset(h, 0, (size_t)H * sizeof(float));
        memset(b, 0, (size_t)(3 * H) * sizeof(float));
        memset(wi, 0, (size_t)(3 * H * I) * 2); memset(wh, 0, (size_t)(3 * H * H) * 2);
        const size_t need = dre_gru_step_workspace_size(I, H);
        void *ws = gws(need);
        CHECK_STATUS(dre_gru_step_f16(-1, H, x, h, wi, wh, b, b, o, ws, need), DRE_ERR_SIZE);
        CHECK_STATUS(dre_gru_step_f16(I, H, x, h, NULL, wh, b, b, o, ws, need), DRE_ERR_NULL);
        CHECK_STATUS(dre_gru_step_f16(I, H, x, h, wi, NULL, b, b, o, ws, need), DRE_ERR_NULL);
        CHECK_STATUS(dre_gru_step_f16(I, H, x, h, wi, wh, b, b, NULL, ws, need), DRE_ERR_NULL);
        CHECK_STATUS(dre_gru_step_f16(I, H, x, h, wi, wh, b, b, o, ws, need - 1), DRE_ERR_WORKSPACE);
        CHECK_STATUS(dre_gru_step_f16(I, H, x, h, wi, wh, b, b, o, ws, need), DRE_OK);
        case_end();
    }
    group_end();
}

/* ======================================================================== */
/* dense head                                                                */
/* ======================================================================== */

static void head_case(int64_t N, int64_t H, int64_t D, int act, int use_b, int want_dh,
                      int want_dW, int want_db) {
    float *h = gf(N * H), *W = gf(D * H), *b = use_b ? gf(D) : NULL, *du = gf(N * D);
    const float k = (float)(1.5 / sqrt((double)(H > 0 ? H : 1)));
    fill_uniform(h, N * H, -1.0f, 1.0f);
    fill_uniform(W, D * H, -k, k);
    if (b) fill_uniform(b, D, -0.5f, 0.5f);
    fill_uniform(du, N * D, -1.0f, 1.0f);
    float *dW0 = gf(D * H), *db0 = gf(D);
    fill_uniform(dW0, D * H, -1.0f, 1.0f);
    fill_uniform(db0, D, -1.0f, 1.0f);
    double *u = dtmp(N * D), *dh = dtmp(N * H), *dW = dtmp(D * H), *db = dtmp(D);
    ref_head_forward(N, H, D, h, W, b, act, u);
    ref_head_backward(N, H, D, h, W, b, act, du, dh, dW, db);
    const double atol = 5e-7 * (double)(H + D + N + 4), rtol = 1e-5;
    float *su = NULL, *sdh = NULL, *sdW = NULL;
    for (int pi = 0; pi < n_paths; ++pi) {
        use_path(paths[pi]);
        ctx("path=%s head N=%lld H=%lld D=%lld act=%d b_p=%d want=%d%d%d",
            dre_path_name(paths[pi]), (long long)N, (long long)H, (long long)D, act, use_b,
            want_dh, want_dW, want_db);
        float *uk = gf(N * D);
        size_t need = dre_head_forward_workspace_size(N, H, D);
        CHECK_STATUS(dre_head_forward(N, H, D, h, W, b, (dre_activation)act, uk,
                                      (char *)gws(need + 1) + 1, need), DRE_OK);
        CHECK_CLOSE("u", uk, u, N * D, atol, rtol);
        need = dre_head_backward_workspace_size(N, H, D);
        float *dhk = want_dh ? gf(N * H) : NULL;
        float *dWk = want_dW ? gcopy(dW0, D * H) : NULL, *dbk = want_db ? gcopy(db0, D) : NULL;
        CHECK_STATUS(dre_head_backward(N, H, D, h, W, (dre_activation)act, uk, du, dhk, dWk, dbk,
                                       gws(need), need), DRE_OK);
        if (dhk) CHECK_CLOSE("dh", dhk, dh, N * H, atol, rtol);
        if (dWk) CHECK_CLOSE("dW_p (accumulated)", dWk, plus_acc(dW, dW0, D * H), D * H, atol, rtol);
        if (dbk) CHECK_CLOSE("db_p (accumulated)", dbk, plus_acc(db, db0, D), D, atol, rtol);
        if (pi == 0) {
            su = uk; sdh = dhk; sdW = dWk;
        } else {
            CHECK_CLOSE_FF("u vs scalar", uk, su, N * D, atol, rtol);
            if (dhk && sdh) CHECK_CLOSE_FF("dh vs scalar", dhk, sdh, N * H, atol, rtol);
            if (dWk && sdW) CHECK_CLOSE_FF("dW_p vs scalar", dWk, sdW, D * H, atol, rtol);
        }
    }
    case_end();
}

static void test_head(void) {
    group_begin("head");
    int c = 0;
    for (int s = 0; s < N_SWEEP; ++s) {
        const int64_t v = SWEEP[s];
        if (g_quick && s % 3 && v < 63) continue;
        ++c;
        head_case(v, 9, 7, c & 1, c & 2, 1, 1, 1);  /* N sweep */
        head_case(5, v, 11, (c + 1) & 1, 1, 1, 1, 1); /* H sweep */
        head_case(6, 13, v, c & 1, (c & 4) == 0, 1, 1, 1); /* D sweep */
    }
    head_case(33, 256, 64, DRE_ACT_TANH, 1, 1, 1, 1);
    head_case(300, 65, 17, DRE_ACT_IDENTITY, 1, 1, 1, 1);
    for (int m = 0; m < 8; ++m) head_case(7, 10, 9, DRE_ACT_TANH, 1, m & 1, (m >> 1) & 1, (m >> 2) & 1);
    head_case(0, 5, 4, DRE_ACT_TANH, 1, 1, 1, 1);
    head_case(3, 0, 4, DRE_ACT_TANH, 1, 1, 1, 1);
    head_case(3, 5, 0, DRE_ACT_TANH, 1, 1, 1, 1);
    group_end();
}

/* ======================================================================== */
/* sampled losses                                                            */
/* ======================================================================== */

enum { L_BIAS = 1, L_LOGQ = 2, L_IDS = 4, L_SKIP = 8 };

static void loss_case(int64_t B, int64_t S, int64_t D, int kind, int flags, float bpreg,
                      float scale) {
    float *U = gf(B * D), *O = gf(S * D);
    fill_uniform(U, B * D, -scale, scale);
    fill_uniform(O, S * D, -1.0f, 1.0f);
    float *b_s = (flags & L_BIAS) ? gf(S) : NULL, *logq = (flags & L_LOGQ) ? gf(S) : NULL;
    if (b_s) fill_uniform(b_s, S, -1.0f, 1.0f);
    if (logq) fill_uniform(logq, S, -6.0f, -0.5f);
    int32_t *ids = (flags & L_IDS) ? gi32(S) : NULL, *tcol = gi32(B);
    if (ids) /* duplicates on purpose: sampled copies of a target get masked */
        for (int64_t j = 0; j < S; ++j) ids[j] = (int32_t)rng_int(100, 100 + (S + 1) / 2);
    for (int64_t b = 0; b < B; ++b)
        tcol[b] = (flags & L_SKIP) && b % 3 == 1 ? -1 : (int32_t)rng_int(0, S - 1);
    float *dO0 = gf(S * D), *db0 = gf(S);
    fill_uniform(dO0, S * D, -1.0f, 1.0f);
    fill_uniform(db0, S, -1.0f, 1.0f);
    ref_loss_out r;
    r.row_loss = dtmp(B); r.dU = dtmp(B * D); r.dO = dtmp(S * D); r.db = dtmp(S);
    ref_sampled_loss(B, S, D, U, O, b_s, tcol, ids, logq, kind, bpreg, &r);
    /* logits carry float rounding of D-term dot products of size ~ scale D */
    const double lmag = (double)scale * (double)D + 8.0;
    const double atol_l = 4e-7 * lmag * sqrt((double)D + 1.0) + 1e-6;
    double gmax = max_abs_d(r.dU, B * D);
    const double m2 = max_abs_d(r.dO, S * D);
    if (m2 > gmax) gmax = m2;
    const double atol_g = 1e-5 * (gmax + 1.0 / (double)(B > 0 ? B : 1)) * (kind ? 10.0 : 1.0) +
                          2e-6 * (1.0 + bpreg * lmag * lmag) * lmag / (double)(B > 0 ? B : 1);
    float sloss = 0.0f, *sdU = NULL;
    for (int pi = 0; pi < n_paths; ++pi) {
        use_path(paths[pi]);
        ctx("path=%s sampled_loss B=%lld S=%lld D=%lld kind=%s flags=%d bpreg=%g scale=%g",
            dre_path_name(paths[pi]), (long long)B, (long long)S, (long long)D,
            kind ? "bpr-max" : "xe", flags, (double)bpreg, (double)scale);
        const size_t need = dre_sampled_loss_workspace_size(B, S, D);
        float *loss = gf(1), *row = gf(B), *dU = gf(B * D), *dO = gcopy(dO0, S * D),
              *db = gcopy(db0, S);
        CHECK_STATUS(dre_sampled_loss(B, S, D, U, O, b_s, tcol, ids, logq, (dre_loss_kind)kind,
                                      bpreg, loss, row, dU, dO, db,
                                      (char *)gws(need + 5) + 5, need), DRE_OK);
        const double rl = r.loss;
        CHECK_CLOSE("loss", loss, &rl, 1, atol_l, 1e-5);
        CHECK_CLOSE("row_loss", row, r.row_loss, B, atol_l, 1e-5);
        CHECK_CLOSE("dU", dU, r.dU, B * D, atol_g, 1e-4);
        CHECK_CLOSE("dO_s (accumulated)", dO, plus_acc(r.dO, dO0, S * D), S * D, atol_g, 1e-4);
        CHECK_CLOSE("db_s (accumulated)", db, plus_acc(r.db, db0, S), S, atol_g, 1e-4);
        /* the optional outputs are optional */
        float *loss2 = gf(1);
        CHECK_STATUS(dre_sampled_loss(B, S, D, U, O, b_s, tcol, ids, logq, (dre_loss_kind)kind,
                                      bpreg, loss2, NULL, NULL, NULL, NULL, gws(need), need),
                     DRE_OK);
        CHECK(memcmp(loss, loss2, sizeof(float)) == 0, "loss changes without the optional outputs "
              "(%.9g vs %.9g)", (double)*loss, (double)*loss2);
        if (pi == 0) {
            sloss = *loss; sdU = dU;
        } else {
            CHECK_CLOSE_FF("loss vs scalar", loss, &sloss, 1, atol_l, 1e-5);
            CHECK_CLOSE_FF("dU vs scalar", dU, sdU, B * D, atol_g, 1e-4);
        }
    }
    case_end();
}

static void test_loss(void) {
    group_begin("sampled_loss");
    int c = 0;
    for (int kind = 0; kind < 2; ++kind) {
        for (int s = 0; s < N_SWEEP; ++s) {
            const int64_t v = SWEEP[s];
            if (g_quick && s % 3 && v < 63) continue;
            ++c;
            const float bp = kind ? ((c & 1) ? 0.0f : 0.5f) : 0.0f;
            loss_case(5, v, 7, kind, c & 15, bp, 1.0f);   /* S sweep */
            loss_case(4, 9, v, kind, (c + 5) & 15, bp, 0.5f); /* D sweep */
            if (v <= 20) loss_case(v, 11, 6, kind, (c + 9) & 15, bp, 1.0f); /* B sweep */
        }
        for (int f = 0; f < 16; ++f) loss_case(6, 13, 8, kind, f, kind ? 1.0f : 0.0f, 1.0f);
        loss_case(32, 64, 65, kind, L_BIAS | L_LOGQ | L_IDS | L_SKIP, kind ? 0.25f : 0.0f, 0.3f);
        loss_case(3, 1, 4, kind, 0, 0.0f, 1.0f);          /* one column */
        loss_case(4, 5, 3, kind, L_IDS, 0.0f, 1.0f);
        /* XNNPACK-style stability: logits of size ~1e3..1e4 where a naive
         * exp overflows and a max-shifted one does not */
        loss_case(4, 17, 16, kind, L_BIAS | L_IDS, 0.0f, 60.0f);
        loss_case(3, 33, 8, kind, L_LOGQ, 0.0f, 500.0f);
        loss_case(0, 5, 3, kind, 0, 0.0f, 1.0f);          /* empty batch */
        loss_case(3, 5, 0, kind, L_BIAS, 0.0f, 1.0f);     /* D == 0 */
    }
    /* every row skipped: loss 0, dU 0, accumulators unchanged */
    for (int pi = 0; pi < n_paths; ++pi) {
        use_path(paths[pi]);
        ctx("path=%s sampled_loss all rows skipped", dre_path_name(paths[pi]));
        const int64_t B = 3, S = 4, D = 5;
        float *U = gf(B * D), *O = gf(S * D), *dO = gf(S * D), *dU = gf(B * D), *loss = gf(1);
        fill_uniform(U, B * D, -1, 1); fill_uniform(O, S * D, -1, 1); fill_uniform(dO, S * D, -1, 1);
        float *dO0 = gcopy(dO, S * D);
        int32_t *t = gi32(B);
        for (int b = 0; b < B; ++b) t[b] = -1;
        const size_t need = dre_sampled_loss_workspace_size(B, S, D);
        CHECK_STATUS(dre_sampled_loss(B, S, D, U, O, NULL, t, NULL, NULL, DRE_LOSS_XE, 0.0f, loss,
                                      NULL, dU, dO, NULL, gws(need), need), DRE_OK);
        CHECK(*loss == 0.0f, "loss %g", (double)*loss);
        int z = 1;
        for (int64_t i = 0; i < B * D; ++i) z &= dU[i] == 0.0f;
        CHECK(z, "dU not zero");
        double *ref = dtmp(S * D);
        for (int64_t i = 0; i < S * D; ++i) ref[i] = dO0[i];
        CHECK_CLOSE("dO_s unchanged", dO, ref, S * D, 0.0, 0.0);
        case_end();
    }
    group_end();
}

/* ======================================================================== */
/* scoring                                                                   */
/* ======================================================================== */

/* a random subset of [0, N) of size n, in random order, no duplicates */
static int32_t *random_rows(int64_t N, int64_t n) {
    int32_t *perm = (int32_t *)malloc((size_t)(N > 0 ? N : 1) * sizeof(int32_t));
    if (!perm) die("out of memory");
    for (int64_t i = 0; i < N; ++i) perm[i] = (int32_t)i;
    for (int64_t i = N - 1; i > 0; --i) {
        const int64_t j = rng_int(0, i);
        const int32_t t = perm[i]; perm[i] = perm[j]; perm[j] = t;
    }
    int32_t *idx = gi32(n);
    if (n > 0) memcpy(idx, perm, (size_t)n * sizeof(int32_t));
    free(perm);
    return idx;
}

static void score_case(int64_t N, int64_t D, int64_t n, int use_idx, int use_bias) {
    float *O = gf(N * D), *u = gf(D), *bias = use_bias ? gf(N) : NULL;
    fill_uniform(O, N * D, -1.0f, 1.0f);
    fill_uniform(u, D, -1.0f, 1.0f);
    if (bias) fill_uniform(bias, N, -1.0f, 1.0f);
    int32_t *idx = use_idx ? random_rows(N, n) : NULL;
    double *ref = dtmp(n), *scale = dtmp(n);
    for (int64_t i = 0; i < n; ++i) {
        const int64_t r = idx ? idx[i] : i;
        ref[i] = ref_score_row(D, O, bias, u, r);
        double s = bias ? fabs(bias[r]) : 0.0;
        for (int64_t k = 0; k < D; ++k) s += fabs((double)O[r * D + k] * u[k]);
        scale[i] = s;
    }
    double *s0 = dtmp(n); /* the scalar path's scores */
    for (int pi = 0; pi < n_paths; ++pi) {
        use_path(paths[pi]);
        ctx("path=%s score N=%lld D=%lld n=%lld idx=%d bias=%d", dre_path_name(paths[pi]),
            (long long)N, (long long)D, (long long)n, use_idx, use_bias);
        float *sc = gf(n);
        CHECK_STATUS(dre_score(N, D, O, bias, u, idx, n, sc), DRE_OK);
        CHECK_SCALED("scores", sc, n, ref, scale, n > 0 ? 1 : 0, n, (double)(D + 3) * FLT_EPSILON);
        if (pi == 0)
            for (int64_t i = 0; i < n; ++i) s0[i] = sc[i];
        else
            CHECK_SCALED("scores vs scalar", sc, n, s0, scale, n > 0 ? 1 : 0, n,
                         2.0 * (double)(D + 3) * FLT_EPSILON);
    }
    case_end();
}

/* Top-k.  exact != 0: small-integer data (every score exact in float, lots
 * of ties, NaN biases): the result must equal the reference ordering
 * exactly.  exact == 0: random floats; the result must be a valid top-k
 * of the true scores up to rounding. */
static void topk_case(int64_t N, int64_t D, int64_t n, int64_t k, int use_idx, int use_bias,
                      int use_excl, int exact) {
    float *O = gf(N * D), *u = gf(D), *bias = use_bias ? gf(N) : NULL;
    if (exact) {
        fill_small_int(O, N * D, -2, 2);
        fill_small_int(u, D, -2, 2);
        if (bias) {
            for (int64_t r = 0; r < N; ++r) bias[r] = 0.5f * (float)rng_int(-2, 2);
            for (int64_t r = 0; r < N; r += 7) bias[r] = NAN; /* NaN ranks last */
        }
    } else {
        fill_uniform(O, N * D, -1.0f, 1.0f);
        fill_uniform(u, D, -1.0f, 1.0f);
        if (bias) fill_uniform(bias, N, -1.0f, 1.0f);
    }
    int32_t *idx = use_idx ? random_rows(N, n) : NULL;
    uint8_t *ex = use_excl ? gu8(N) : NULL;
    if (ex)
        for (int64_t r = 0; r < N; ++r) ex[r] = rng_int(0, 4) == 0;
    /* reference ranking of the eligible rows */
    ref_ranked *rk = (ref_ranked *)malloc((size_t)(n > 0 ? n : 1) * sizeof(ref_ranked));
    if (!rk) die("out of memory");
    int64_t ne = 0;
    double tol_s = (double)(D + 3) * FLT_EPSILON * ((double)D + 2.0);
    for (int64_t i = 0; i < n; ++i) {
        const int32_t r = idx ? idx[i] : (int32_t)i;
        if (ex && ex[r]) continue;
        rk[ne].r = r;
        rk[ne].s = ref_score_row(D, O, bias, u, r);
        ++ne;
    }
    qsort(rk, (size_t)ne, sizeof(ref_ranked), ref_rank_cmp);
    const int64_t want_n = k < ne ? k : ne;
    for (int pi = 0; pi < n_paths; ++pi) {
        use_path(paths[pi]);
        ctx("path=%s score_topk N=%lld D=%lld n=%lld k=%lld idx=%d bias=%d exclude=%d exact=%d",
            dre_path_name(paths[pi]), (long long)N, (long long)D, (long long)n, (long long)k,
            use_idx, use_bias, use_excl, exact);
        int32_t *ti = gi32(k);
        float *ts = gf(k);
        int64_t *nout = (int64_t *)guard_alloc(sizeof(int64_t));
        CHECK_STATUS(dre_score_topk(N, D, O, bias, u, idx, n, ex, k, ti, ts, nout), DRE_OK);
        CHECK(*nout == want_n, "n_out %lld, want min(k, eligible) = %lld", (long long)*nout,
              (long long)want_n);
        const int64_t m = *nout < want_n ? *nout : want_n;
        if (m < 0) continue;
        if (exact) {
            int64_t bad = -1;
            for (int64_t i = 0; i < m && bad < 0; ++i) {
                const int same_s = isnan(rk[i].s) ? isnan(ts[i]) : (double)ts[i] == rk[i].s;
                if (ti[i] != rk[i].r || !same_s) bad = i;
            }
            CHECK(bad < 0, "rank %lld: got row %d score %g, want row %d score %g",
                  (long long)bad, bad >= 0 ? ti[bad] : 0, bad >= 0 ? (double)ts[bad] : 0.0,
                  bad >= 0 ? rk[bad].r : 0, bad >= 0 ? rk[bad].s : 0.0);
        } else {
            /* rows distinct, eligible; scores right; order non-increasing;
             * nothing left out beats the last one returned */
            int ok_rows = 1, ok_scores = 1, ok_order = 1;
            for (int64_t i = 0; i < m; ++i) {
                const int32_t r = ti[i];
                int listed = 0;
                for (int64_t j = 0; j < ne; ++j) listed |= rk[j].r == r;
                for (int64_t j = 0; j < i; ++j) ok_rows &= ti[j] != r;
                ok_rows &= listed;
                if (listed && r >= 0 && r < N)
                    ok_scores &= fabs((double)ts[i] - ref_score_row(D, O, bias, u, r)) <= tol_s;
                if (i > 0) ok_order &= ts[i - 1] > ts[i] || (ts[i - 1] == ts[i] && ti[i - 1] < ti[i]);
            }
            CHECK(ok_rows, "returned rows not distinct or not eligible");
            CHECK(ok_scores, "returned scores differ from the rows' scores");
            CHECK(ok_order, "not sorted best first (ties: lower row first)");
            if (m > 0 && m < ne) {
                double thr = (double)ts[m - 1];
                int ok_set = 1;
                for (int64_t j = m; j < ne; ++j) ok_set &= rk[j].s <= thr + tol_s;
                for (int64_t j = 0; j < m; ++j) ok_set &= rk[j].s >= thr - tol_s;
                CHECK(ok_set, "not the k best rows");
            }
        }
    }
    free(rk);
    case_end();
}

/* A row's score must be the same bits wherever it sits: in the full table
 * or a candidate list, at any position, in a block or in the n % 4/8/16 tail
 * of any path (a path may sum differently from another path, never from
 * itself).  Otherwise "equal scores: lower row first" fails for identical
 * rows, and ranking within candidates disagrees with full ranking. */
static void position_case(int64_t N, int64_t D) {
    float *O = gf(N * D), *u = gf(D), *bias = gf(N);
    fill_uniform(O, N * D, -1.0f, 1.0f);
    fill_uniform(u, D, -1.0f, 1.0f);
    fill_uniform(bias, N, -1.0f, 1.0f);
    for (int pi = 0; pi < n_paths; ++pi) {
        use_path(paths[pi]);
        float *full = gf(N), *sc = gf(N);
        int32_t *idx = gi32(N);
        ctx("path=%s score position N=%lld D=%lld", dre_path_name(paths[pi]), (long long)N,
            (long long)D);
        CHECK_STATUS(dre_score(N, D, O, bias, u, NULL, N, full), DRE_OK);
        /* through a candidate list: row r at every position p of lists of
         * every length n (other entries random rows) */
        int64_t bad_list = -1, bad_pos = -1, bad_n = -1;
        for (int64_t n = 1; n <= N; ++n) {
            for (int64_t p = 0; p < n; ++p) {
                const int32_t r = (int32_t)rng_int(0, N - 1);
                for (int64_t i = 0; i < n; ++i) idx[i] = (int32_t)rng_int(0, N - 1);
                idx[p] = r;
                if (dre_score(N, D, O, bias, u, idx, n, sc) != DRE_OK) bad_list = -2;
                for (int64_t i = 0; i < n; ++i)
                    if (memcmp(&sc[i], &full[idx[i]], sizeof(float)) != 0 && bad_list == -1) {
                        bad_list = idx[i];
                        bad_pos = i;
                        bad_n = n;
                    }
            }
        }
        CHECK(bad_list == -1, "row %lld scored at position %lld of a %lld-row list differs "
              "from its full-table score", (long long)bad_list, (long long)bad_pos, (long long)bad_n);
        /* contiguous: the table seen from every row offset */
        int64_t bad_off = -1;
        for (int64_t b = 0; b < N; ++b) {
            CHECK_STATUS(dre_score(N - b, D, O + b * D, bias + b, u, NULL, N - b, sc), DRE_OK);
            if (memcmp(sc, full + b, (size_t)(N - b) * sizeof(float)) != 0 && bad_off < 0)
                bad_off = b;
        }
        CHECK(bad_off < 0, "rows scored from table offset %lld differ from the full-table scores",
              (long long)bad_off);
        /* identical rows: identical scores, so top-k returns rows in order */
        float *Oi = gf(N * D), *bi = gf(N);
        for (int64_t r = 0; r < N; ++r) {
            memcpy(Oi + r * D, O, (size_t)D * sizeof(float));
            bi[r] = bias[0];
        }
        int32_t *ti = gi32(N);
        float *ts = gf(N);
        int64_t nout = -1;
        CHECK_STATUS(dre_score_topk(N, D, Oi, bi, u, NULL, N, NULL, N, ti, ts, &nout), DRE_OK);
        int ok = nout == N;
        for (int64_t i = 0; i < N && ok; ++i) ok = ti[i] == i && memcmp(&ts[i], &ts[0], sizeof(float)) == 0;
        CHECK(ok, "identical rows: top-k must return rows 0..N-1 with one score");
        /* the same through a reversed candidate list */
        for (int64_t i = 0; i < N; ++i) idx[i] = (int32_t)(N - 1 - i);
        CHECK_STATUS(dre_score_topk(N, D, Oi, bi, u, idx, N, NULL, N, ti, ts, &nout), DRE_OK);
        ok = nout == N;
        for (int64_t i = 0; i < N && ok; ++i) ok = ti[i] == i && memcmp(&ts[i], &ts[0], sizeof(float)) == 0;
        CHECK(ok, "identical rows via a candidate list: rows 0..N-1 with one score expected");
    }
    case_end();
}

static void test_score_position(void) {
    group_begin("score position");
    static const int64_t Ds[] = {1, 3, 4, 7, 8, 9, 15, 16, 17, 31, 32, 33, 47, 64, 65, 100};
    for (size_t i = 0; i < sizeof Ds / sizeof Ds[0]; ++i) {
        position_case(g_quick ? 13 : 37, Ds[i]);
        if (!g_quick) position_case(18, Ds[i]);
    }
    group_end();
}

static void test_score(void) {
    group_begin("score");
    int c = 0;
    for (int s = 0; s < N_SWEEP; ++s) {
        const int64_t v = SWEEP[s];
        ++c;
        score_case(40, v, 40, 0, c & 1);  /* D sweep: gemv tails */
        score_case(v + 3, 9, v, 1, 1);    /* n sweep with idx: 4-row blocks */
        score_case(v, 16, v, 0, c & 2);   /* n sweep, contiguous rows */
    }
    score_case(300, 256, 300, 1, 1);
    score_case(1000, 33, 777, 0, 1);
    score_case(5, 0, 5, 0, 1);   /* D == 0: scores are the biases */
    score_case(5, 0, 3, 1, 0);
    score_case(4, 3, 0, 0, 1);
    group_end();

    group_begin("score_topk");
    static const int64_t ks[] = {0, 1, 2, 3, 5, 8, 16, 17, 40, 1000};
    for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ++ki) {
        const int64_t k = ks[ki];
        for (int f = 0; f < 8; ++f) {
            topk_case(60, 3, 60, k, 0, f & 1, f & 2, 1);
            topk_case(60, 5, 37, k, f & 4, f & 1, f & 2, 1);
            if (!g_quick || f == 7) {
                topk_case(90, 17, 90, k, f & 4, f & 1, f & 2, 0);
                topk_case(33, 8, 20, k, 1, f & 1, f & 2, 0);
            }
        }
    }
    /* across chunk boundaries (whole-chunk rejection), large n */
    topk_case(3000, 4, 3000, 20, 0, 1, 1, 1);
    topk_case(3000, 4, 2900, 20, 1, 1, 0, 1);
    topk_case(3000, 33, 3000, 64, 0, 1, 1, 0);
    topk_case(600, 7, 600, 600, 0, 1, 1, 1);   /* k == n */
    topk_case(513, 2, 513, 257, 1, 1, 1, 1);
    topk_case(10, 0, 10, 4, 0, 1, 0, 1);       /* D == 0: ranking by bias */
    topk_case(10, 3, 0, 4, 0, 1, 0, 1);        /* n == 0 */
    /* every score tied */
    for (int pi = 0; pi < n_paths; ++pi) {
        use_path(paths[pi]);
        ctx("path=%s score_topk all ties", dre_path_name(paths[pi]));
        const int64_t N = 50, D = 4, k = 10;
        float *O = gf(N * D), *u = gf(D), *ts = gf(k);
        for (int64_t i = 0; i < N * D; ++i) O[i] = 1.0f;
        for (int64_t i = 0; i < D; ++i) u[i] = 0.25f;
        int32_t *ti = gi32(k);
        int64_t nout = -1;
        CHECK_STATUS(dre_score_topk(N, D, O, NULL, u, NULL, N, NULL, k, ti, ts, &nout), DRE_OK);
        int ok = nout == k;
        for (int64_t i = 0; i < k && ok; ++i) ok = ti[i] == i && ts[i] == 1.0f;
        CHECK(ok, "ties must come back lowest row first");
        /* every score NaN: still k rows, lowest first */
        for (int64_t i = 0; i < D; ++i) u[i] = NAN;
        CHECK_STATUS(dre_score_topk(N, D, O, NULL, u, NULL, N, NULL, k, ti, ts, &nout), DRE_OK);
        ok = nout == k;
        for (int64_t i = 0; i < k && ok; ++i) ok = ti[i] == i && isnan(ts[i]);
        CHECK(ok, "all-NaN scores: rows 0..k-1 with NaN scores expected");
        case_end();
    }
    group_end();
}

/* ======================================================================== */
/* optimisers                                                                */
/* ======================================================================== */

static void optim_case(int64_t n) {
    float *p0 = gf(n), *g = gf(n), *acc0 = gf(n), *m0 = gf(n), *v0 = gf(n);
    fill_uniform(p0, n, -1.0f, 1.0f);
    fill_uniform(g, n, -1.0f, 1.0f);
    fill_uniform(acc0, n, 0.0f, 0.5f);
    fill_uniform(m0, n, -0.1f, 0.1f);
    fill_uniform(v0, n, 0.0f, 0.01f);
    double *rp = dtmp(n), *ra = dtmp(n), *rm = dtmp(n), *rv = dtmp(n);
    const int steps = 3;
    float *sp_adagrad = NULL, *sp_adam = NULL; /* scalar path results */
    for (int pi = 0; pi < n_paths; ++pi) {
        use_path(paths[pi]);
        const char *pn = dre_path_name(paths[pi]);
        /* Adagrad, 3 steps */
        ctx("path=%s adagrad n=%lld", pn, (long long)n);
        {
            float *p = gcopy(p0, n), *a = gcopy(acc0, n);
            for (int64_t i = 0; i < n; ++i) { rp[i] = p0[i]; ra[i] = acc0[i]; }
            int ok = 1;
            for (int s = 0; s < steps; ++s) {
                ok &= dre_adagrad_step(n, p, g, a, 0.1f, 1e-8f) == DRE_OK;
                for (int64_t i = 0; i < n; ++i) {
                    ra[i] += (double)g[i] * g[i];
                    rp[i] -= 0.1 * g[i] / sqrt(ra[i] + 1e-8);
                }
            }
            CHECK(ok, "status");
            CHECK_CLOSE("param", p, rp, n, 1e-6, 1e-5);
            CHECK_CLOSE("accum", a, ra, n, 1e-7, 1e-6);
            if (pi == 0) sp_adagrad = p;
            else CHECK_CLOSE_FF("param vs scalar", p, sp_adagrad, n, 1e-6, 1e-5);
        }
        /* Adam with and without weight decay, steps 1..3 */
        for (int wdi = 0; wdi < 2; ++wdi) {
            const float wd = wdi ? 0.01f : 0.0f, lr = 0.01f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
            ctx("path=%s adam n=%lld wd=%g", pn, (long long)n, (double)wd);
            float *p = gcopy(p0, n), *m = gcopy(m0, n), *v = gcopy(v0, n);
            for (int64_t i = 0; i < n; ++i) { rp[i] = p0[i]; rm[i] = m0[i]; rv[i] = v0[i]; }
            int ok = 1;
            for (int s = 1; s <= steps; ++s) {
                ok &= dre_adam_step(n, p, g, m, v, s, lr, b1, b2, eps, wd) == DRE_OK;
                const double bc1 = 1.0 - pow((double)b1, s), bc2 = 1.0 - pow((double)b2, s);
                for (int64_t i = 0; i < n; ++i) {
                    const double gi = (double)g[i] + (double)wd * rp[i];
                    rm[i] = (double)b1 * rm[i] + (1.0 - (double)b1) * gi;
                    rv[i] = (double)b2 * rv[i] + (1.0 - (double)b2) * gi * gi;
                    rp[i] -= (double)lr * (rm[i] / bc1) / (sqrt(rv[i] / bc2) + (double)eps);
                }
            }
            CHECK(ok, "status");
            CHECK_CLOSE("param", p, rp, n, 2e-6, 1e-5);
            CHECK_CLOSE("m", m, rm, n, 1e-7, 1e-5);
            CHECK_CLOSE("v", v, rv, n, 1e-9, 1e-5);
            if (wdi == 1) {
                if (pi == 0) sp_adam = p;
                else CHECK_CLOSE_FF("param vs scalar", p, sp_adam, n, 2e-6, 1e-5);
            }
        }
        /* SGD: plain (velocity NULL), momentum, Nesterov */
        for (int mode = 0; mode < 3; ++mode) {
            const float lr = 0.05f, mu = mode ? 0.9f : 0.0f;
            ctx("path=%s sgd n=%lld mode=%d", pn, (long long)n, mode);
            float *p = gcopy(p0, n), *vel = mode ? gcopy(m0, n) : NULL;
            for (int64_t i = 0; i < n; ++i) { rp[i] = p0[i]; rv[i] = m0[i]; }
            int ok = 1;
            for (int s = 0; s < steps; ++s) {
                ok &= dre_sgd_step(n, p, g, vel, lr, mu, mode == 2) == DRE_OK;
                for (int64_t i = 0; i < n; ++i) {
                    rv[i] = (double)mu * rv[i] + g[i];
                    rp[i] -= (double)lr * (mode == 2 ? g[i] + (double)mu * rv[i]
                                                     : (mode ? rv[i] : (double)g[i]));
                }
            }
            CHECK(ok, "status");
            CHECK_CLOSE("param", p, rp, n, 1e-6, 1e-5);
            if (vel) CHECK_CLOSE("velocity", vel, rv, n, 1e-6, 1e-5);
        }
        /* momentum 0 with a velocity buffer: vel = g */
        ctx("path=%s sgd n=%lld momentum 0 with velocity", pn, (long long)n);
        {
            float *p = gcopy(p0, n), *vel = gcopy(m0, n);
            CHECK_STATUS(dre_sgd_step(n, p, g, vel, 0.1f, 0.0f, 0), DRE_OK);
            for (int64_t i = 0; i < n; ++i) rv[i] = g[i];
            CHECK_CLOSE("velocity", vel, rv, n, 0.0, 0.0);
        }
    }
    case_end();
}

static void norm_case(int64_t n1, int64_t n2, int64_t n3, float max_norm_frac) {
    const int64_t sizes[3] = {n1, n2, n3};
    float *g0[3], *g[3];
    double ss = 0.0;
    for (int t = 0; t < 3; ++t) {
        g0[t] = gf(sizes[t]);
        fill_uniform(g0[t], sizes[t], -2.0f, 2.0f);
        for (int64_t i = 0; i < sizes[t]; ++i) ss += (double)g0[t][i] * g0[t][i];
    }
    const double norm = sqrt(ss);
    const float max_norm = max_norm_frac > 0 ? (float)(norm * max_norm_frac) + 1e-3f : 1.0f;
    for (int pi = 0; pi < n_paths; ++pi) {
        use_path(paths[pi]);
        ctx("path=%s global_norm sizes=%lld,%lld,%lld max_norm=%g (norm %g)",
            dre_path_name(paths[pi]), (long long)n1, (long long)n2, (long long)n3,
            (double)max_norm, norm);
        double got = -1.0;
        CHECK_STATUS(dre_global_norm(3, (const float *const *)g0, sizes, &got), DRE_OK);
        CHECK(fabs(got - norm) <= 1e-12 * (norm + 1.0), "norm %.17g, want %.17g", got, norm);
        for (int t = 0; t < 3; ++t) g[t] = gcopy(g0[t], sizes[t]);
        double before = -1.0;
        CHECK_STATUS(dre_clip_by_global_norm(3, g, sizes, max_norm, &before), DRE_OK);
        CHECK(fabs(before - norm) <= 1e-12 * (norm + 1.0), "norm_out %.17g, want %.17g", before, norm);
        for (int t = 0; t < 3; ++t) {
            double *r = dtmp(sizes[t]);
            const double sc = norm > max_norm ? (double)max_norm / norm : 1.0;
            for (int64_t i = 0; i < sizes[t]; ++i) r[i] = g0[t][i] * sc;
            if (norm > max_norm) CHECK_CLOSE("clipped", g[t], r, sizes[t], 1e-7, 1e-6);
            else CHECK_UNTOUCHED("below max_norm: buffer", g[t], g0[t], (size_t)sizes[t] * sizeof(float));
        }
        /* norm_out may be NULL */
        for (int t = 0; t < 3; ++t) g[t] = gcopy(g0[t], sizes[t]);
        CHECK_STATUS(dre_clip_by_global_norm(3, g, sizes, max_norm, NULL), DRE_OK);
    }
    case_end();
}

static void rows_case(int64_t n_rows, int64_t D, int64_t n) {
    float *t0 = gf(n_rows * D), *a0 = gf(n_rows * D), *m0 = gf(n_rows * D), *v0 = gf(n_rows * D);
    float *gr = gf(n * D);
    fill_uniform(t0, n_rows * D, -1.0f, 1.0f);
    fill_uniform(a0, n_rows * D, 0.0f, 0.5f);
    fill_uniform(m0, n_rows * D, -0.1f, 0.1f);
    fill_uniform(v0, n_rows * D, 0.0f, 0.01f);
    fill_uniform(gr, n * D, -1.0f, 1.0f);
    int32_t *rows = random_rows(n_rows, n);
    const int64_t T = n_rows * D;
    double *rt = dtmp(T), *ra = dtmp(T), *rm = dtmp(T), *rv = dtmp(T);
    for (int pi = 0; pi < n_paths; ++pi) {
        use_path(paths[pi]);
        const char *pn = dre_path_name(paths[pi]);
        ctx("path=%s adagrad_rows n_rows=%lld D=%lld n=%lld", pn, (long long)n_rows, (long long)D, (long long)n);
        {
            float *t = gcopy(t0, T), *a = gcopy(a0, T);
            for (int64_t i = 0; i < T; ++i) { rt[i] = t0[i]; ra[i] = a0[i]; }
            for (int64_t i = 0; i < n; ++i)
                for (int64_t k = 0; k < D; ++k) {
                    const int64_t e = (int64_t)rows[i] * D + k;
                    const double gg = gr[i * D + k];
                    ra[e] += gg * gg;
                    rt[e] -= 0.1 * gg / sqrt(ra[e] + 1e-10);
                }
            CHECK_STATUS(dre_adagrad_rows(n_rows, D, t, a, n, rows, gr, 0.1f, 1e-10f), DRE_OK);
            CHECK_CLOSE("table", t, rt, T, 1e-6, 1e-5);   /* unlisted rows: exact */
            CHECK_CLOSE("accum", a, ra, T, 1e-7, 1e-6);
        }
        ctx("path=%s adam_rows n_rows=%lld D=%lld n=%lld", pn, (long long)n_rows, (long long)D, (long long)n);
        {
            float *t = gcopy(t0, T), *m = gcopy(m0, T), *v = gcopy(v0, T);
            const int64_t step = 7;
            const double b1 = 0.9, b2 = 0.99, bc1 = 1.0 - pow(b1, 7), bc2 = 1.0 - pow(b2, 7);
            for (int64_t i = 0; i < T; ++i) { rt[i] = t0[i]; rm[i] = m0[i]; rv[i] = v0[i]; }
            for (int64_t i = 0; i < n; ++i)
                for (int64_t k = 0; k < D; ++k) {
                    const int64_t e = (int64_t)rows[i] * D + k;
                    const double gg = gr[i * D + k];
                    rm[e] = b1 * rm[e] + (1 - b1) * gg;
                    rv[e] = b2 * rv[e] + (1 - b2) * gg * gg;
                    rt[e] -= 0.01 * (rm[e] / bc1) / (sqrt(rv[e] / bc2) + 1e-8);
                }
            CHECK_STATUS(dre_adam_rows(n_rows, D, t, m, v, n, rows, gr, step, 0.01f, 0.9f, 0.99f,
                                       1e-8f), DRE_OK);
            CHECK_CLOSE("table", t, rt, T, 2e-6, 1e-5);
            CHECK_CLOSE("m", m, rm, T, 1e-7, 1e-5);
            CHECK_CLOSE("v", v, rv, T, 1e-9, 1e-5);
        }
        ctx("path=%s sgd_rows n_rows=%lld D=%lld n=%lld", pn, (long long)n_rows, (long long)D, (long long)n);
        {
            float *t = gcopy(t0, T);
            for (int64_t i = 0; i < T; ++i) rt[i] = t0[i];
            for (int64_t i = 0; i < n; ++i)
                for (int64_t k = 0; k < D; ++k) rt[(int64_t)rows[i] * D + k] -= 0.5 * gr[i * D + k];
            CHECK_STATUS(dre_sgd_rows(n_rows, D, t, n, rows, gr, 0.5f), DRE_OK);
            CHECK_CLOSE("table", t, rt, T, 1e-7, 1e-6);
        }
    }
    case_end();
}

static void test_optim(void) {
    group_begin("optim");
    for (int s = 0; s < N_SWEEP; ++s) optim_case(SWEEP[s]);
    optim_case(0);
    optim_case(1000);
    optim_case(4099);
    norm_case(3, 17, 64, 0.5f);
    norm_case(1, 0, 65, 0.1f);
    norm_case(33, 8, 2, 2.0f);
    norm_case(0, 0, 0, 0.0f);
    for (int s = 0; s < N_SWEEP; s += 4) rows_case(SWEEP[s] + 4, SWEEP[s], (SWEEP[s] + 4) / 2);
    rows_case(10, 65, 10);
    rows_case(10, 3, 0);
    rows_case(6, 0, 3);
    group_end();
}

/* ======================================================================== */
/* error returns: the right status, outputs untouched                        */
/* ======================================================================== */

/* A guarded output array filled with a pattern, plus a copy to compare. */
typedef struct {
    void *p, *copy;
    size_t bytes;
    const char *name;
} sentinel;

#define MAX_SENT 8
static sentinel sents[MAX_SENT];
static int n_sents;

static void *sent_new(const char *name, size_t bytes) {
    if (n_sents >= MAX_SENT) die("too many sentinels");
    sentinel *s = &sents[n_sents++];
    s->p = guard_alloc(bytes);
    s->copy = guard_alloc(bytes);
    for (size_t i = 0; i < bytes; ++i) ((unsigned char *)s->p)[i] = (unsigned char)(0x3C + i * 7);
    memcpy(s->copy, s->p, bytes);
    s->bytes = bytes;
    s->name = name;
    return s->p;
}

static void sents_check(int line) {
    for (int i = 0; i < n_sents; ++i)
        check_same_bytes_at(line, sents[i].name, sents[i].p, sents[i].copy, sents[i].bytes);
}

/* status == want, and every sentinel intact */
#define EXPECT(call, want, ...)                                                     \
    do {                                                                            \
        ctx(__VA_ARGS__);                                                           \
        const dre_status st_ = (call);                                              \
        check_at(st_ == (want), __LINE__, "%s: returned %d (%s), expected %d (%s)", \
                 #call, (int)st_, dre_status_to_string(st_), (int)(want),           \
                 dre_status_to_string(want));                                       \
        sents_check(__LINE__);                                                      \
    } while (0)

#define EXPECT2(call, want1, want2, ...)                                                        \
    do {                                                                                        \
        ctx(__VA_ARGS__);                                                                       \
        const dre_status st_ = (call);                                                          \
        check_at(st_ == (want1) || st_ == (want2), __LINE__, "%s: returned %d (%s), expected %s or %s", \
                 #call, (int)st_, dre_status_to_string(st_), dre_status_to_string(want1),       \
                 dre_status_to_string(want2));                                                  \
        sents_check(__LINE__);                                                                  \
    } while (0)

static const int64_t HUGE_DIM = (int64_t)1 << 40; /* products overflow 64 bits */

static void errors_sgemm(void) {
    n_sents = 0;
    const int64_t M = 4, N = 5, K = 3;
    float *A = gf(M * K), *B = gf(K * N);
    fill_uniform(A, M * K, -1, 1); fill_uniform(B, K * N, -1, 1);
    float *C = (float *)sent_new("C", (size_t)(M * N) * sizeof(float));
    const size_t need = dre_sgemm_workspace_size(N, K);
    void *ws = gws(need);
    EXPECT(dre_sgemm(0, 0, -1, N, K, 1, A, K, B, N, 0, C, N, ws, need), DRE_ERR_SIZE, "sgemm M=-1");
    EXPECT(dre_sgemm(0, 0, M, -1, K, 1, A, K, B, N, 0, C, N, ws, need), DRE_ERR_SIZE, "sgemm N=-1");
    EXPECT(dre_sgemm(0, 0, M, N, -1, 1, A, K, B, N, 0, C, N, ws, need), DRE_ERR_SIZE, "sgemm K=-1");
    EXPECT(dre_sgemm(0, 0, M, N, K, 1, A, K - 1, B, N, 0, C, N, ws, need), DRE_ERR_SIZE, "sgemm lda < K");
    EXPECT(dre_sgemm(1, 0, M, N, K, 1, A, M - 1, B, N, 0, C, N, ws, need), DRE_ERR_SIZE, "sgemm trans lda < M");
    EXPECT(dre_sgemm(0, 0, M, N, K, 1, A, K, B, N - 1, 0, C, N, ws, need), DRE_ERR_SIZE, "sgemm ldb < N");
    EXPECT(dre_sgemm(0, 0, M, N, K, 1, A, K, B, N, 0, C, N - 1, ws, need), DRE_ERR_SIZE, "sgemm ldc < N");
    EXPECT(dre_sgemm(0, 0, HUGE_DIM, HUGE_DIM, HUGE_DIM, 1, A, HUGE_DIM, B, HUGE_DIM, 0, C, HUGE_DIM, ws, need),
           DRE_ERR_SIZE, "sgemm overflowing sizes");
    EXPECT(dre_sgemm(0, 0, M, N, K, 1, NULL, K, B, N, 0, C, N, ws, need), DRE_ERR_NULL, "sgemm A NULL");
    EXPECT(dre_sgemm(0, 0, M, N, K, 1, A, K, NULL, N, 0, C, N, ws, need), DRE_ERR_NULL, "sgemm B NULL");
    EXPECT(dre_sgemm(0, 0, M, N, K, 1, A, K, B, N, 0, NULL, N, ws, need), DRE_ERR_NULL, "sgemm C NULL");
    EXPECT(dre_sgemm(0, 0, M, N, K, 1, A, K, B, N, 0, C, N, ws, need - 1), DRE_ERR_WORKSPACE, "sgemm workspace need-1");
    EXPECT(dre_sgemm(0, 0, M, N, K, 1, A, K, B, N, 0, C, N, NULL, 0), DRE_ERR_WORKSPACE, "sgemm workspace NULL");
    EXPECT(dre_sgemm(0, 0, 0, N, K, 1, A, K, B, N, 0, C, N, NULL, 0), DRE_OK, "sgemm M=0 needs nothing");
    ctx("sgemm_workspace_size");
    CHECK(dre_sgemm_workspace_size(-1, 3) == 0 && dre_sgemm_workspace_size(3, -1) == 0, "negative -> 0");
    CHECK(dre_sgemm_workspace_size(HUGE_DIM, HUGE_DIM) == 0, "overflow -> 0");
    CHECK(dre_sgemm_workspace_size(N, K) >= (size_t)(N * K) * sizeof(float), "too small");
    case_end();
}

static void errors_gru(void) {
    n_sents = 0;
    const int64_t T = 3, B = 3, I = 4, H = 5;
    gru_problem p;
    gru_make(&p, T, B, I, H, LEN_FULL, 1, 0.0f);
    float *y = (float *)sent_new("y", (size_t)(T * B * H) * sizeof(float));
    float *hn = (float *)sent_new("h_n", (size_t)(B * H) * sizeof(float));
    float *cache = (float *)sent_new("cache", dre_gru_cache_floats(T, B, H) * sizeof(float));
    const size_t need = dre_gru_forward_workspace_size(T, B, I, H);
    void *ws = gws(need);
    const float *x = p.x, *h0 = p.h0, *Wi = p.W_ih, *Wh = p.W_hh, *bi = p.b_ih, *bh = p.b_hh;
    int32_t *L = p.lengths;
#define FWD(T_, B_, I_, H_, x_, L_, Wi_, Wh_, bi_, bh_, y_, hn_, ws_, nb_) \
    dre_gru_forward(T_, B_, I_, H_, x_, L_, h0, Wi_, Wh_, bi_, bh_, y_, hn_, cache, ws_, nb_)
    EXPECT(FWD(-1, B, I, H, x, L, Wi, Wh, bi, bh, y, hn, ws, need), DRE_ERR_SIZE, "gru_forward T=-1");
    EXPECT(FWD(T, -1, I, H, x, L, Wi, Wh, bi, bh, y, hn, ws, need), DRE_ERR_SIZE, "gru_forward B=-1");
    EXPECT(FWD(T, B, -1, H, x, L, Wi, Wh, bi, bh, y, hn, ws, need), DRE_ERR_SIZE, "gru_forward I=-1");
    EXPECT(FWD(T, B, I, -1, x, L, Wi, Wh, bi, bh, y, hn, ws, need), DRE_ERR_SIZE, "gru_forward H=-1");
    EXPECT(FWD(HUGE_DIM, HUGE_DIM, I, H, x, L, Wi, Wh, bi, bh, y, hn, ws, need), DRE_ERR_SIZE, "gru_forward T*B overflows");
    EXPECT(FWD(T, B, I, HUGE_DIM, x, L, Wi, Wh, bi, bh, y, hn, ws, need), DRE_ERR_SIZE, "gru_forward H*H overflows");
    EXPECT(FWD(T, B, I, H, NULL, L, Wi, Wh, bi, bh, y, hn, ws, need), DRE_ERR_NULL, "gru_forward x NULL");
    EXPECT(FWD(T, B, I, H, x, L, NULL, Wh, bi, bh, y, hn, ws, need), DRE_ERR_NULL, "gru_forward W_ih NULL");
    EXPECT(FWD(T, B, I, H, x, L, Wi, NULL, bi, bh, y, hn, ws, need), DRE_ERR_NULL, "gru_forward W_hh NULL");
    EXPECT(FWD(T, B, I, H, x, L, Wi, Wh, NULL, bh, y, hn, ws, need), DRE_ERR_NULL, "gru_forward b_ih NULL");
    EXPECT(FWD(T, B, I, H, x, L, Wi, Wh, bi, NULL, y, hn, ws, need), DRE_ERR_NULL, "gru_forward b_hh NULL");
    EXPECT(FWD(T, B, I, H, x, L, Wi, Wh, bi, bh, NULL, hn, ws, need), DRE_ERR_NULL, "gru_forward y NULL");
    EXPECT(FWD(T, B, I, H, x, L, Wi, Wh, bi, bh, y, NULL, ws, need), DRE_ERR_NULL, "gru_forward h_n NULL");
    EXPECT(FWD(T, B, I, H, x, L, Wi, Wh, bi, bh, y, hn, ws, need - 1), DRE_ERR_WORKSPACE, "gru_forward workspace need-1");
    EXPECT(FWD(T, B, I, H, x, L, Wi, Wh, bi, bh, y, hn, NULL, 0), DRE_ERR_WORKSPACE, "gru_forward workspace NULL");
    /* a bad length anywhere (here: the last entry) -> nothing written */
    static const int32_t bad_len[] = {-1, 4, INT32_MAX, INT32_MIN};
    for (int i = 0; i < 4; ++i) {
        int32_t *Lb = gi32(B);
        Lb[0] = 3; Lb[1] = 1; Lb[2] = bad_len[i];
        EXPECT(FWD(T, B, I, H, x, Lb, Wi, Wh, bi, bh, y, hn, ws, need), DRE_ERR_INDEX,
               "gru_forward lengths[2] = %d (T = 3)", bad_len[i]);
    }
#undef FWD
    ctx("gru workspace sizes");
    CHECK(dre_gru_forward_workspace_size(-1, B, I, H) == 0, "negative -> 0");
    CHECK(dre_gru_forward_workspace_size(HUGE_DIM, HUGE_DIM, I, H) == 0, "overflow -> 0");
    CHECK(dre_gru_backward_workspace_size(T, -1, I, H) == 0, "negative -> 0");
    CHECK(dre_gru_backward_workspace_size(HUGE_DIM, HUGE_DIM, I, H) == 0, "overflow -> 0");
    CHECK(dre_gru_cache_floats(T, B, -1) == 0 && dre_gru_cache_floats(HUGE_DIM, HUGE_DIM, H) == 0, "cache floats");
    CHECK(dre_gru_cache_floats(T, B, H) == (size_t)(T * B * 4 * H), "cache floats %zu != T*B*4H",
          dre_gru_cache_floats(T, B, H));
    CHECK(dre_gru_step_workspace_size(I, -1) == 0, "step negative -> 0");

    /* backward: outputs (overwritten and accumulated) must survive errors */
    n_sents = 0;
    gru_fwd_out f;
    if (gru_run_forward(&p, 1, &f, 0) != DRE_OK) die("forward failed");
    float *dy = gf(T * B * H), *dhn = gf(B * H);
    fill_uniform(dy, T * B * H, -1, 1); fill_uniform(dhn, B * H, -1, 1);
    float *dx = (float *)sent_new("dx", (size_t)(T * B * I) * sizeof(float));
    float *dh0 = (float *)sent_new("dh0", (size_t)(B * H) * sizeof(float));
    float *dWi = (float *)sent_new("dW_ih", (size_t)(3 * H * I) * sizeof(float));
    float *dWh = (float *)sent_new("dW_hh", (size_t)(3 * H * H) * sizeof(float));
    float *dbi = (float *)sent_new("db_ih", (size_t)(3 * H) * sizeof(float));
    float *dbh = (float *)sent_new("db_hh", (size_t)(3 * H) * sizeof(float));
    const size_t bneed = dre_gru_backward_workspace_size(T, B, I, H);
    void *bws = gws(bneed);
#define BWD(T_, B_, I_, H_, x_, L_, Wi_, Wh_, y_, c_, ws_, nb_) \
    dre_gru_backward(T_, B_, I_, H_, x_, L_, h0, Wi_, Wh_, y_, c_, dy, dhn, dx, dh0, dWi, dWh, dbi, dbh, ws_, nb_)
    EXPECT(BWD(-1, B, I, H, x, L, Wi, Wh, f.y, f.cache, bws, bneed), DRE_ERR_SIZE, "gru_backward T=-1");
    EXPECT(BWD(T, B, I, -1, x, L, Wi, Wh, f.y, f.cache, bws, bneed), DRE_ERR_SIZE, "gru_backward H=-1");
    EXPECT(BWD(HUGE_DIM, HUGE_DIM, I, H, x, L, Wi, Wh, f.y, f.cache, bws, bneed), DRE_ERR_SIZE, "gru_backward overflow");
    EXPECT(BWD(T, B, I, H, NULL, L, Wi, Wh, f.y, f.cache, bws, bneed), DRE_ERR_NULL, "gru_backward x NULL");
    EXPECT(BWD(T, B, I, H, x, L, NULL, Wh, f.y, f.cache, bws, bneed), DRE_ERR_NULL, "gru_backward W_ih NULL");
    EXPECT(BWD(T, B, I, H, x, L, Wi, NULL, f.y, f.cache, bws, bneed), DRE_ERR_NULL, "gru_backward W_hh NULL");
    EXPECT(BWD(T, B, I, H, x, L, Wi, Wh, NULL, f.cache, bws, bneed), DRE_ERR_NULL, "gru_backward y NULL");
    EXPECT(BWD(T, B, I, H, x, L, Wi, Wh, f.y, NULL, bws, bneed), DRE_ERR_NULL, "gru_backward cache NULL");
    EXPECT(BWD(T, B, I, H, x, L, Wi, Wh, f.y, f.cache, bws, bneed - 1), DRE_ERR_WORKSPACE, "gru_backward workspace need-1");
    EXPECT(BWD(T, B, I, H, x, L, Wi, Wh, f.y, f.cache, NULL, 0), DRE_ERR_WORKSPACE, "gru_backward workspace NULL");
    for (int i = 0; i < 4; ++i) {
        int32_t *Lb = gi32(B);
        Lb[0] = 3; Lb[1] = 2; Lb[2] = bad_len[i];
        EXPECT(BWD(T, B, I, H, x, Lb, Wi, Wh, f.y, f.cache, bws, bneed), DRE_ERR_INDEX,
               "gru_backward lengths[2] = %d (T = 3)", bad_len[i]);
    }
#undef BWD

    /* step */
    n_sents = 0;
    float *hout = (float *)sent_new("h_out", (size_t)H * sizeof(float));
    const size_t sneed = dre_gru_step_workspace_size(I, H);
    void *sws = gws(sneed);
    EXPECT(dre_gru_step(-1, H, x, h0, Wi, Wh, bi, bh, hout, sws, sneed), DRE_ERR_SIZE, "gru_step I=-1");
    EXPECT(dre_gru_step(I, -1, x, h0, Wi, Wh, bi, bh, hout, sws, sneed), DRE_ERR_SIZE, "gru_step H=-1");
    EXPECT(dre_gru_step(I, H, NULL, h0, Wi, Wh, bi, bh, hout, sws, sneed), DRE_ERR_NULL, "gru_step x NULL");
    EXPECT(dre_gru_step(I, H, x, NULL, Wi, Wh, bi, bh, hout, sws, sneed), DRE_ERR_NULL, "gru_step h NULL");
    EXPECT(dre_gru_step(I, H, x, h0, NULL, Wh, bi, bh, hout, sws, sneed), DRE_ERR_NULL, "gru_step W_ih NULL");
    EXPECT(dre_gru_step(I, H, x, h0, Wi, NULL, bi, bh, hout, sws, sneed), DRE_ERR_NULL, "gru_step W_hh NULL");
    EXPECT(dre_gru_step(I, H, x, h0, Wi, Wh, NULL, bh, hout, sws, sneed), DRE_ERR_NULL, "gru_step b_ih NULL");
    EXPECT(dre_gru_step(I, H, x, h0, Wi, Wh, bi, NULL, hout, sws, sneed), DRE_ERR_NULL, "gru_step b_hh NULL");
    EXPECT(dre_gru_step(I, H, x, h0, Wi, Wh, bi, bh, NULL, sws, sneed), DRE_ERR_NULL, "gru_step h_out NULL");
    EXPECT(dre_gru_step(I, H, x, h0, Wi, Wh, bi, bh, hout, sws, sneed - 1), DRE_ERR_WORKSPACE, "gru_step workspace need-1");
    EXPECT(dre_gru_step(I, H, x, h0, Wi, Wh, bi, bh, hout, NULL, 0), DRE_ERR_WORKSPACE, "gru_step workspace NULL");
    case_end();
}

static void errors_head(void) {
    n_sents = 0;
    const int64_t N = 3, H = 4, D = 5;
    float *h = gf(N * H), *W = gf(D * H), *b = gf(D), *du = gf(N * D), *u0 = gf(N * D);
    fill_uniform(h, N * H, -1, 1); fill_uniform(W, D * H, -1, 1); fill_uniform(b, D, -1, 1);
    fill_uniform(du, N * D, -1, 1); fill_uniform(u0, N * D, -0.9f, 0.9f);
    float *u = (float *)sent_new("u", (size_t)(N * D) * sizeof(float));
    const size_t need = dre_head_forward_workspace_size(N, H, D);
    void *ws = gws(need);
    const dre_activation A = DRE_ACT_TANH;
    EXPECT(dre_head_forward(-1, H, D, h, W, b, A, u, ws, need), DRE_ERR_SIZE, "head_forward N=-1");
    EXPECT(dre_head_forward(N, -1, D, h, W, b, A, u, ws, need), DRE_ERR_SIZE, "head_forward H=-1");
    EXPECT(dre_head_forward(N, H, -1, h, W, b, A, u, ws, need), DRE_ERR_SIZE, "head_forward D=-1");
    EXPECT(dre_head_forward(HUGE_DIM, HUGE_DIM, D, h, W, b, A, u, ws, need), DRE_ERR_SIZE, "head_forward overflow");
    EXPECT(dre_head_forward(N, H, D, NULL, W, b, A, u, ws, need), DRE_ERR_NULL, "head_forward h NULL");
    EXPECT(dre_head_forward(N, H, D, h, NULL, b, A, u, ws, need), DRE_ERR_NULL, "head_forward W_p NULL");
    EXPECT(dre_head_forward(N, H, D, h, W, b, A, NULL, ws, need), DRE_ERR_NULL, "head_forward u NULL");
    EXPECT(dre_head_forward(N, H, D, h, W, b, (dre_activation)2, u, ws, need), DRE_ERR_ARG, "head_forward act=2");
    EXPECT(dre_head_forward(N, H, D, h, W, b, (dre_activation)-1, u, ws, need), DRE_ERR_ARG, "head_forward act=-1");
    if (need > 0) {
        EXPECT(dre_head_forward(N, H, D, h, W, b, A, u, ws, need - 1), DRE_ERR_WORKSPACE, "head_forward workspace need-1");
        EXPECT(dre_head_forward(N, H, D, h, W, b, A, u, NULL, 0), DRE_ERR_WORKSPACE, "head_forward workspace NULL");
    }
    n_sents = 0;
    float *dh = (float *)sent_new("dh", (size_t)(N * H) * sizeof(float));
    float *dW = (float *)sent_new("dW_p", (size_t)(D * H) * sizeof(float));
    float *db = (float *)sent_new("db_p", (size_t)D * sizeof(float));
    const size_t bneed = dre_head_backward_workspace_size(N, H, D);
    void *bws = gws(bneed);
    EXPECT(dre_head_backward(-1, H, D, h, W, A, u0, du, dh, dW, db, bws, bneed), DRE_ERR_SIZE, "head_backward N=-1");
    EXPECT(dre_head_backward(N, H, -1, h, W, A, u0, du, dh, dW, db, bws, bneed), DRE_ERR_SIZE, "head_backward D=-1");
    EXPECT(dre_head_backward(N, H, D, NULL, W, A, u0, du, dh, dW, db, bws, bneed), DRE_ERR_NULL, "head_backward h NULL");
    EXPECT(dre_head_backward(N, H, D, h, NULL, A, u0, du, dh, dW, db, bws, bneed), DRE_ERR_NULL, "head_backward W_p NULL");
    EXPECT(dre_head_backward(N, H, D, h, W, A, NULL, du, dh, dW, db, bws, bneed), DRE_ERR_NULL, "head_backward u NULL");
    EXPECT(dre_head_backward(N, H, D, h, W, A, u0, NULL, dh, dW, db, bws, bneed), DRE_ERR_NULL, "head_backward du NULL");
    EXPECT(dre_head_backward(N, H, D, h, W, (dre_activation)5, u0, du, dh, dW, db, bws, bneed), DRE_ERR_ARG, "head_backward act=5");
    EXPECT(dre_head_backward(N, H, D, h, W, A, u0, du, dh, dW, db, bws, bneed - 1), DRE_ERR_WORKSPACE, "head_backward workspace need-1");
    EXPECT(dre_head_backward(N, H, D, h, W, A, u0, du, dh, dW, db, NULL, 0), DRE_ERR_WORKSPACE, "head_backward workspace NULL");
    ctx("head workspace sizes");
    CHECK(dre_head_forward_workspace_size(-1, H, D) == 0 && dre_head_backward_workspace_size(N, -1, D) == 0, "negative -> 0");
    CHECK(dre_head_forward_workspace_size(HUGE_DIM, HUGE_DIM, D) == 0, "overflow -> 0");
    case_end();
}

static void errors_loss(void) {
    n_sents = 0;
    const int64_t B = 3, S = 6, D = 4;
    float *U = gf(B * D), *O = gf(S * D), *bs = gf(S), *lq = gf(S);
    fill_uniform(U, B * D, -1, 1); fill_uniform(O, S * D, -1, 1);
    fill_uniform(bs, S, -1, 1); fill_uniform(lq, S, -3, -1);
    int32_t *t = gi32(B), *ids = gi32(S);
    t[0] = 0; t[1] = 5; t[2] = -1;
    for (int64_t j = 0; j < S; ++j) ids[j] = (int32_t)(10 + j);
    float *loss = (float *)sent_new("loss", sizeof(float));
    float *row = (float *)sent_new("row_loss", (size_t)B * sizeof(float));
    float *dU = (float *)sent_new("dU", (size_t)(B * D) * sizeof(float));
    float *dO = (float *)sent_new("dO_s", (size_t)(S * D) * sizeof(float));
    float *db = (float *)sent_new("db_s", (size_t)S * sizeof(float));
    const size_t need = dre_sampled_loss_workspace_size(B, S, D);
    void *ws = gws(need);
#define LOSS(B_, S_, D_, U_, O_, t_, kind_, bpreg_, loss_, ws_, nb_) \
    dre_sampled_loss(B_, S_, D_, U_, O_, bs, t_, ids, lq, kind_, bpreg_, loss_, row, dU, dO, db, ws_, nb_)
    const dre_loss_kind XE = DRE_LOSS_XE, BPR = DRE_LOSS_BPR_MAX;
    EXPECT(LOSS(-1, S, D, U, O, t, XE, 0, loss, ws, need), DRE_ERR_SIZE, "loss B=-1");
    EXPECT(LOSS(B, -1, D, U, O, t, XE, 0, loss, ws, need), DRE_ERR_SIZE, "loss S=-1");
    EXPECT(LOSS(B, S, -1, U, O, t, XE, 0, loss, ws, need), DRE_ERR_SIZE, "loss D=-1");
    EXPECT(LOSS(HUGE_DIM, HUGE_DIM, D, U, O, t, XE, 0, loss, ws, need), DRE_ERR_SIZE, "loss overflow");
    EXPECT(LOSS(B, S, D, NULL, O, t, XE, 0, loss, ws, need), DRE_ERR_NULL, "loss U NULL");
    EXPECT(LOSS(B, S, D, U, NULL, t, XE, 0, loss, ws, need), DRE_ERR_NULL, "loss O_s NULL");
    EXPECT(LOSS(B, S, D, U, O, NULL, XE, 0, loss, ws, need), DRE_ERR_NULL, "loss target_col NULL");
    EXPECT(LOSS(B, S, D, U, O, t, XE, 0, NULL, ws, need), DRE_ERR_NULL, "loss loss NULL");
    EXPECT(LOSS(B, S, D, U, O, t, (dre_loss_kind)2, 0, loss, ws, need), DRE_ERR_ARG, "loss kind=2");
    EXPECT(LOSS(B, S, D, U, O, t, BPR, -1.0f, loss, ws, need), DRE_ERR_ARG, "loss bpr-max bpreg=-1");
    EXPECT(LOSS(B, S, D, U, O, t, BPR, NAN, loss, ws, need), DRE_ERR_ARG, "loss bpr-max bpreg=NaN");
    EXPECT(LOSS(B, S, D, U, O, t, XE, 0, loss, ws, need - 1), DRE_ERR_WORKSPACE, "loss workspace need-1");
    EXPECT(LOSS(B, S, D, U, O, t, XE, 0, loss, NULL, 0), DRE_ERR_WORKSPACE, "loss workspace NULL");
    static const int32_t bad_t[] = {6, -2, INT32_MAX, INT32_MIN};
    for (int i = 0; i < 4; ++i)
        for (int kind = 0; kind < 2; ++kind) {
            int32_t *tb = gi32(B);
            tb[0] = 1; tb[1] = 0; tb[2] = bad_t[i];
            EXPECT(LOSS(B, S, D, U, O, tb, (dre_loss_kind)kind, 0, loss, ws, need), DRE_ERR_INDEX,
                   "loss kind=%d target_col[2] = %d (S = 6)", kind, bad_t[i]);
        }
#undef LOSS
    ctx("loss workspace size");
    CHECK(dre_sampled_loss_workspace_size(-1, S, D) == 0, "negative -> 0");
    CHECK(dre_sampled_loss_workspace_size(HUGE_DIM, HUGE_DIM, D) == 0, "overflow -> 0");
    case_end();
}

static void errors_score(void) {
    n_sents = 0;
    const int64_t N = 7, D = 4, n = 4, k = 3;
    float *O = gf(N * D), *u = gf(D), *bias = gf(N);
    fill_uniform(O, N * D, -1, 1); fill_uniform(u, D, -1, 1); fill_uniform(bias, N, -1, 1);
    int32_t *idx = gi32(n);
    idx[0] = 6; idx[1] = 0; idx[2] = 3; idx[3] = 5;
    float *sc = (float *)sent_new("scores", (size_t)n * sizeof(float));
    EXPECT(dre_score(-1, D, O, bias, u, idx, n, sc), DRE_ERR_SIZE, "score N=-1");
    EXPECT(dre_score(N, -1, O, bias, u, idx, n, sc), DRE_ERR_SIZE, "score D=-1");
    EXPECT(dre_score(N, D, O, bias, u, idx, -1, sc), DRE_ERR_SIZE, "score n=-1");
    EXPECT(dre_score(HUGE_DIM, HUGE_DIM, O, bias, u, idx, n, sc), DRE_ERR_SIZE, "score N*D overflows");
    EXPECT(dre_score(N, D, NULL, bias, u, idx, n, sc), DRE_ERR_NULL, "score O NULL");
    EXPECT(dre_score(N, D, O, bias, NULL, idx, n, sc), DRE_ERR_NULL, "score u NULL");
    EXPECT(dre_score(N, D, O, bias, u, idx, n, NULL), DRE_ERR_NULL, "score scores NULL");
    EXPECT2(dre_score(N, D, O, bias, u, NULL, N + 1, sc), DRE_ERR_SIZE, DRE_ERR_INDEX, "score idx NULL, n > N");
    static const int32_t bad_i[] = {7, -1, INT32_MAX, INT32_MIN};
    for (int i = 0; i < 4; ++i) {
        int32_t *ib = gi32(n);
        ib[0] = 1; ib[1] = 2; ib[2] = 3; ib[3] = bad_i[i];
        EXPECT(dre_score(N, D, O, bias, u, ib, n, sc), DRE_ERR_INDEX, "score idx[3] = %d (N = 7)", bad_i[i]);
    }
    n_sents = 0;
    int32_t *ti = (int32_t *)sent_new("top_idx", (size_t)k * sizeof(int32_t));
    float *ts = (float *)sent_new("top_score", (size_t)k * sizeof(float));
    int64_t *no = (int64_t *)sent_new("n_out", sizeof(int64_t));
    uint8_t *ex = gu8(N);
    memset(ex, 0, (size_t)N);
    EXPECT(dre_score_topk(-1, D, O, bias, u, idx, n, ex, k, ti, ts, no), DRE_ERR_SIZE, "topk N=-1");
    EXPECT(dre_score_topk(N, -1, O, bias, u, idx, n, ex, k, ti, ts, no), DRE_ERR_SIZE, "topk D=-1");
    EXPECT(dre_score_topk(N, D, O, bias, u, idx, -1, ex, k, ti, ts, no), DRE_ERR_SIZE, "topk n=-1");
    EXPECT(dre_score_topk(N, D, O, bias, u, idx, n, ex, -1, ti, ts, no), DRE_ERR_SIZE, "topk k=-1");
    EXPECT(dre_score_topk(HUGE_DIM, HUGE_DIM, O, bias, u, idx, n, ex, k, ti, ts, no), DRE_ERR_SIZE, "topk overflow");
    EXPECT(dre_score_topk(N, D, NULL, bias, u, idx, n, ex, k, ti, ts, no), DRE_ERR_NULL, "topk O NULL");
    EXPECT(dre_score_topk(N, D, O, bias, NULL, idx, n, ex, k, ti, ts, no), DRE_ERR_NULL, "topk u NULL");
    EXPECT(dre_score_topk(N, D, O, bias, u, idx, n, ex, k, NULL, ts, no), DRE_ERR_NULL, "topk top_idx NULL");
    EXPECT(dre_score_topk(N, D, O, bias, u, idx, n, ex, k, ti, NULL, no), DRE_ERR_NULL, "topk top_score NULL");
    EXPECT(dre_score_topk(N, D, O, bias, u, idx, n, ex, k, ti, ts, NULL), DRE_ERR_NULL, "topk n_out NULL");
    EXPECT2(dre_score_topk(N, D, O, bias, u, NULL, N + 1, ex, k, ti, ts, no), DRE_ERR_SIZE, DRE_ERR_INDEX, "topk idx NULL, n > N");
    for (int i = 0; i < 4; ++i) {
        int32_t *ib = gi32(n);
        ib[0] = 1; ib[1] = 2; ib[2] = 3; ib[3] = bad_i[i];
        EXPECT(dre_score_topk(N, D, O, bias, u, ib, n, ex, k, ti, ts, no), DRE_ERR_INDEX,
               "topk idx[3] = %d (N = 7)", bad_i[i]);
    }
    case_end();
    /* k == 0 or n == 0: n_out = 0, output arrays may be NULL */
    ctx("topk k == 0 / n == 0 with NULL outputs");
    {
        float O2[8] = {1, 2, 3, 4, 5, 6, 7, 8}, u2[2] = {1, 1};
        int64_t nout = 99;
        CHECK_STATUS(dre_score_topk(4, 2, O2, NULL, u2, NULL, 4, NULL, 0, NULL, NULL, &nout), DRE_OK);
        CHECK(nout == 0, "k=0: n_out %lld", (long long)nout);
        nout = 99;
        CHECK_STATUS(dre_score_topk(4, 2, O2, NULL, u2, NULL, 0, NULL, 3, NULL, NULL, &nout), DRE_OK);
        CHECK(nout == 0, "n=0: n_out %lld", (long long)nout);
    }
}

static void errors_optim(void) {
    const int64_t n = 5;
    float *g = gf(n);
    fill_uniform(g, n, -1, 1);
    n_sents = 0;
    float *p = (float *)sent_new("param", (size_t)n * sizeof(float));
    float *a = (float *)sent_new("accum/m", (size_t)n * sizeof(float));
    float *v = (float *)sent_new("v/velocity", (size_t)n * sizeof(float));
    EXPECT(dre_adagrad_step(-1, p, g, a, 0.1f, 1e-8f), DRE_ERR_SIZE, "adagrad n=-1");
    EXPECT(dre_adagrad_step(n, NULL, g, a, 0.1f, 1e-8f), DRE_ERR_NULL, "adagrad param NULL");
    EXPECT(dre_adagrad_step(n, p, NULL, a, 0.1f, 1e-8f), DRE_ERR_NULL, "adagrad grad NULL");
    EXPECT(dre_adagrad_step(n, p, g, NULL, 0.1f, 1e-8f), DRE_ERR_NULL, "adagrad accum NULL");
    EXPECT(dre_adagrad_step(n, p, g, a, -0.1f, 1e-8f), DRE_ERR_ARG, "adagrad lr<0");
    EXPECT(dre_adagrad_step(n, p, g, a, NAN, 1e-8f), DRE_ERR_ARG, "adagrad lr NaN");
    EXPECT(dre_adam_step(-1, p, g, a, v, 1, 0.01f, 0.9f, 0.999f, 1e-8f, 0), DRE_ERR_SIZE, "adam n=-1");
    EXPECT(dre_adam_step(n, NULL, g, a, v, 1, 0.01f, 0.9f, 0.999f, 1e-8f, 0), DRE_ERR_NULL, "adam param NULL");
    EXPECT(dre_adam_step(n, p, NULL, a, v, 1, 0.01f, 0.9f, 0.999f, 1e-8f, 0), DRE_ERR_NULL, "adam grad NULL");
    EXPECT(dre_adam_step(n, p, g, NULL, v, 1, 0.01f, 0.9f, 0.999f, 1e-8f, 0), DRE_ERR_NULL, "adam m NULL");
    EXPECT(dre_adam_step(n, p, g, a, NULL, 1, 0.01f, 0.9f, 0.999f, 1e-8f, 0), DRE_ERR_NULL, "adam v NULL");
    EXPECT(dre_adam_step(n, p, g, a, v, 0, 0.01f, 0.9f, 0.999f, 1e-8f, 0), DRE_ERR_ARG, "adam step=0 (1-based)");
    EXPECT(dre_adam_step(n, p, g, a, v, 1, 0.01f, 1.0f, 0.999f, 1e-8f, 0), DRE_ERR_ARG, "adam beta1=1");
    EXPECT(dre_adam_step(n, p, g, a, v, 1, 0.01f, 0.9f, 1.5f, 1e-8f, 0), DRE_ERR_ARG, "adam beta2=1.5");
    EXPECT(dre_sgd_step(-1, p, g, v, 0.1f, 0.9f, 0), DRE_ERR_SIZE, "sgd n=-1");
    EXPECT(dre_sgd_step(n, NULL, g, v, 0.1f, 0.9f, 0), DRE_ERR_NULL, "sgd param NULL");
    EXPECT(dre_sgd_step(n, p, NULL, v, 0.1f, 0.9f, 0), DRE_ERR_NULL, "sgd grad NULL");
    EXPECT(dre_sgd_step(n, p, g, NULL, 0.1f, 0.9f, 0), DRE_ERR_NULL, "sgd velocity NULL with momentum");
    EXPECT(dre_sgd_step(n, p, g, v, 0.1f, -0.5f, 0), DRE_ERR_ARG, "sgd momentum<0");
    /* global norm and clipping */
    n_sents = 0;
    float *g1 = (float *)sent_new("grads[0]", 4 * sizeof(float));
    float *g2 = (float *)sent_new("grads[1]", 3 * sizeof(float));
    double *nrm = (double *)sent_new("norm", sizeof(double));
    float *gl[2] = {g1, g2};
    const float *cgl[2] = {g1, g2};
    int64_t sz[2] = {4, 3}, szbad[2] = {4, -3};
    EXPECT(dre_global_norm(-1, cgl, sz, nrm), DRE_ERR_SIZE, "global_norm n_tensors=-1");
    EXPECT(dre_global_norm(2, NULL, sz, nrm), DRE_ERR_NULL, "global_norm grads NULL");
    EXPECT(dre_global_norm(2, cgl, NULL, nrm), DRE_ERR_NULL, "global_norm sizes NULL");
    EXPECT(dre_global_norm(2, cgl, sz, NULL), DRE_ERR_NULL, "global_norm norm NULL");
    EXPECT(dre_global_norm(2, cgl, szbad, nrm), DRE_ERR_SIZE, "global_norm sizes[1]=-3");
    EXPECT(dre_clip_by_global_norm(-1, gl, sz, 1.0f, nrm), DRE_ERR_SIZE, "clip n_tensors=-1");
    EXPECT(dre_clip_by_global_norm(2, NULL, sz, 1.0f, nrm), DRE_ERR_NULL, "clip grads NULL");
    EXPECT(dre_clip_by_global_norm(2, gl, szbad, 1.0f, nrm), DRE_ERR_SIZE, "clip sizes[1]=-3");
    EXPECT(dre_clip_by_global_norm(2, gl, sz, 0.0f, nrm), DRE_ERR_ARG, "clip max_norm=0");
    EXPECT(dre_clip_by_global_norm(2, gl, sz, -1.0f, nrm), DRE_ERR_ARG, "clip max_norm<0");
    /* row updates: a bad row anywhere -> nothing updated */
    n_sents = 0;
    const int64_t R = 6, D = 4, nr = 3;
    float *gr = gf(nr * D);
    fill_uniform(gr, nr * D, -1, 1);
    float *tab = (float *)sent_new("table", (size_t)(R * D) * sizeof(float));
    float *s1 = (float *)sent_new("accum/m", (size_t)(R * D) * sizeof(float));
    float *s2 = (float *)sent_new("v", (size_t)(R * D) * sizeof(float));
    int32_t *rows = gi32(nr);
    rows[0] = 1; rows[1] = 4; rows[2] = 2;
    EXPECT(dre_adagrad_rows(-1, D, tab, s1, nr, rows, gr, 0.1f, 1e-8f), DRE_ERR_SIZE, "adagrad_rows n_rows=-1");
    EXPECT(dre_adagrad_rows(R, -1, tab, s1, nr, rows, gr, 0.1f, 1e-8f), DRE_ERR_SIZE, "adagrad_rows D=-1");
    EXPECT(dre_adagrad_rows(R, D, tab, s1, -1, rows, gr, 0.1f, 1e-8f), DRE_ERR_SIZE, "adagrad_rows n=-1");
    EXPECT(dre_adagrad_rows(HUGE_DIM, HUGE_DIM, tab, s1, nr, rows, gr, 0.1f, 1e-8f), DRE_ERR_SIZE, "adagrad_rows overflow");
    EXPECT(dre_adagrad_rows(R, D, NULL, s1, nr, rows, gr, 0.1f, 1e-8f), DRE_ERR_NULL, "adagrad_rows table NULL");
    EXPECT(dre_adagrad_rows(R, D, tab, NULL, nr, rows, gr, 0.1f, 1e-8f), DRE_ERR_NULL, "adagrad_rows accum NULL");
    EXPECT(dre_adagrad_rows(R, D, tab, s1, nr, NULL, gr, 0.1f, 1e-8f), DRE_ERR_NULL, "adagrad_rows rows NULL");
    EXPECT(dre_adagrad_rows(R, D, tab, s1, nr, rows, NULL, 0.1f, 1e-8f), DRE_ERR_NULL, "adagrad_rows grad_rows NULL");
    EXPECT(dre_adam_rows(R, D, tab, s1, s2, nr, rows, gr, 0, 0.01f, 0.9f, 0.999f, 1e-8f), DRE_ERR_ARG, "adam_rows step=0");
    EXPECT(dre_adam_rows(R, D, tab, s1, NULL, nr, rows, gr, 1, 0.01f, 0.9f, 0.999f, 1e-8f), DRE_ERR_NULL, "adam_rows v NULL");
    EXPECT(dre_sgd_rows(R, D, NULL, nr, rows, gr, 0.1f), DRE_ERR_NULL, "sgd_rows table NULL");
    static const int32_t bad_r[] = {6, -1, INT32_MAX, INT32_MIN};
    for (int i = 0; i < 4; ++i) {
        int32_t *rb = gi32(nr);
        rb[0] = 1; rb[1] = 4; rb[2] = bad_r[i];
        EXPECT(dre_adagrad_rows(R, D, tab, s1, nr, rb, gr, 0.1f, 1e-8f), DRE_ERR_INDEX, "adagrad_rows rows[2] = %d (n_rows = 6)", bad_r[i]);
        EXPECT(dre_adam_rows(R, D, tab, s1, s2, nr, rb, gr, 1, 0.01f, 0.9f, 0.999f, 1e-8f), DRE_ERR_INDEX, "adam_rows rows[2] = %d", bad_r[i]);
        EXPECT(dre_sgd_rows(R, D, tab, nr, rb, gr, 0.1f), DRE_ERR_INDEX, "sgd_rows rows[2] = %d", bad_r[i]);
    }
    case_end();
}

static void test_errors(void) {
    group_begin("errors");
    for (int pi = 0; pi < n_paths; ++pi) {
        use_path(paths[pi]);
        errors_sgemm();
        errors_gru();
        errors_head();
        errors_loss();
        errors_score();
        errors_optim();
    }
    group_end();
}

/* ======================================================================== */
/* NaN policy: non-finite inputs propagate (IEEE 754), never crash           */
/* ======================================================================== */

static int all_nan(const float *p, int64_t n) {
    for (int64_t i = 0; i < n; ++i)
        if (!isnan(p[i])) return 0;
    return 1;
}

static void test_nan_policy(void) {
    group_begin("nan_policy");
    for (int pi = 0; pi < n_paths; ++pi) {
        use_path(paths[pi]);
        const char *pn = dre_path_name(paths[pi]);
        /* sgemm: a NaN in row i of A poisons row i of C only */
        {
            const int64_t M = 7, N = 19, K = 9;
            ctx("path=%s sgemm NaN in A row 3", pn);
            float *A = gf(M * K), *B = gf(K * N), *C = gf(M * N);
            fill_uniform(A, M * K, -1, 1); fill_uniform(B, K * N, -1, 1);
            A[3 * K + 4] = NAN;
            const size_t need = dre_sgemm_workspace_size(N, K);
            CHECK_STATUS(dre_sgemm(0, 0, M, N, K, 1, A, K, B, N, 0, C, N, gws(need), need), DRE_OK);
            CHECK(all_nan(C + 3 * N, N), "row 3 of C should be NaN");
            CHECK(all_finite(C, 3 * N) && all_finite(C + 4 * N, (M - 4) * N), "other rows not finite");
            case_end();
        }
        /* GRU forward: a NaN input of sequence 1 at step 1 makes every later
         * output of that sequence NaN; the other sequences are unaffected.
         * H = 12 covers a full vector and a tail on every path. */
        for (int where = 0; where < 3; ++where) {
            const int64_t T = 3, B = 3, I = 4, H = 12;
            ctx("path=%s gru_forward NaN in %s of sequence 1", pn,
                where == 0 ? "x[1][1][2]" : where == 1 ? "h0[1][5]" : "b_hh (all sequences)");
            gru_problem p;
            gru_make(&p, T, B, I, H, LEN_NONE, 1, 0.0f);
            if (where == 0) p.x[(1 * B + 1) * I + 2] = NAN;
            if (where == 1) p.h0[1 * H + 5] = NAN;
            if (where == 2) p.b_hh[2 * H + 3] = NAN; /* b_hn of unit 3 */
            gru_fwd_out f;
            CHECK_STATUS(gru_run_forward(&p, 1, &f, 0), DRE_OK);
            if (where == 0) {
                CHECK(all_nan(f.y + (1 * B + 1) * H, H) && all_nan(f.y + (2 * B + 1) * H, H) &&
                      all_nan(f.h_n + 1 * H, H), "y[1..2][1] and h_n[1] must be NaN");
                CHECK(all_finite(f.y + 1 * H, H), "y[0][1] (before the NaN) must be finite");
                CHECK(all_finite(f.h_n, H) && all_finite(f.h_n + 2 * H, H), "other sequences poisoned");
            } else if (where == 1) {
                CHECK(all_nan(f.h_n + 1 * H, H), "h_n[1] must be NaN");
                CHECK(all_finite(f.h_n, H) && all_finite(f.h_n + 2 * H, H), "other sequences poisoned");
            } else {
                /* n of unit 3 is NaN at step 0, so h[3] is; from step 1 on
                 * every unit (W_hh h mixes it in) */
                int ok = 1;
                for (int64_t b = 0; b < B; ++b) ok &= isnan(f.y[(0 * B + b) * H + 3]) && all_nan(f.h_n + b * H, H);
                CHECK(ok, "NaN in b_hh must reach every h_n");
            }
            case_end();
        }
        /* head: a NaN in h row 1 -> u row 1 NaN (tanh of NaN is NaN) */
        {
            const int64_t N = 3, H = 10, D = 9;
            ctx("path=%s head NaN in h[1]", pn);
            float *h = gf(N * H), *W = gf(D * H), *u = gf(N * D);
            fill_uniform(h, N * H, -1, 1); fill_uniform(W, D * H, -1, 1);
            h[1 * H + 2] = NAN;
            const size_t need = dre_head_forward_workspace_size(N, H, D);
            CHECK_STATUS(dre_head_forward(N, H, D, h, W, NULL, DRE_ACT_TANH, u, gws(need), need), DRE_OK);
            CHECK(all_nan(u + D, D) && all_finite(u, D) && all_finite(u + 2 * D, D), "NaN must stay in row 1");
            case_end();
        }
        /* score: NaN in u -> every score NaN; topk still returns k rows */
        {
            const int64_t N = 20, D = 11;
            ctx("path=%s score NaN in O row 4", pn);
            float *O = gf(N * D), *u = gf(D), *sc = gf(N);
            fill_uniform(O, N * D, -1, 1); fill_uniform(u, D, -1, 1);
            O[4 * D + 10] = NAN;
            CHECK_STATUS(dre_score(N, D, O, NULL, u, NULL, N, sc), DRE_OK);
            CHECK(isnan(sc[4]) && all_finite(sc, 4) && all_finite(sc + 5, N - 5), "only score 4 NaN");
            int32_t ti[20];
            float ts[20];
            int64_t no = 0;
            CHECK_STATUS(dre_score_topk(N, D, O, NULL, u, NULL, N, NULL, N, ti, ts, &no), DRE_OK);
            CHECK(no == N && ti[N - 1] == 4 && isnan(ts[N - 1]), "NaN row must rank last");
            case_end();
        }
    }
    group_end();
}

/* ======================================================================== */

/* ======================================================================== */
/* compressed row tables: binary16 and int8 rows with per-row scales         */
/* ======================================================================== */

/* A table of N x D values stored as `dtype` (guarded), with scales [N]
 * (NULL unless use_scale) and the double value of every element.  exact:
 * small integers and power-of-two scales, so every score is exact in float
 * (ties, NaN biases and the tie rule can be checked bit for bit). */
typedef struct {
    dre_dtype dtype;
    void *W;
    float *scale;
    double *val; /* N*D values: f32(stored) * scale */
} qtable;

static const char *dtype_name(dre_dtype t) {
    return t == DRE_DTYPE_I8 ? "i8" : t == DRE_DTYPE_F16 ? "f16" : "f32";
}

static qtable qtable_make(int64_t N, int64_t D, dre_dtype dtype, int use_scale, int exact) {
    qtable q;
    q.dtype = dtype;
    q.scale = use_scale ? gf(N) : NULL;
    q.val = dtmp(N * D);
    float *f = (float *)malloc((size_t)(N * D > 0 ? N * D : 1) * sizeof(float));
    if (!f) die("out of memory");
    if (dtype == DRE_DTYPE_I8) {
        int8_t *w = (int8_t *)guard_alloc((size_t)(N * D > 0 ? N * D : 0));
        for (int64_t i = 0; i < N * D; ++i) {
            w[i] = (int8_t)(exact ? rng_int(-2, 2) : rng_int(-127, 127));
            f[i] = (float)w[i];
        }
        q.W = w;
    } else if (dtype == DRE_DTYPE_F16) {
        uint16_t *w = gu16(N * D);
        if (exact) fill_small_int(f, N * D, -2, 2);
        else fill_uniform(f, N * D, -1.0f, 1.0f);
        if (N * D > 0) dre_f32_to_f16(N * D, f, w);
        if (N * D > 0) dre_f16_to_f32(N * D, w, f);
        q.W = w;
    } else {
        float *w = gf(N * D);
        if (exact) fill_small_int(w, N * D, -2, 2);
        else fill_uniform(w, N * D, -1.0f, 1.0f);
        if (N * D > 0) memcpy(f, w, (size_t)(N * D) * sizeof(float));
        q.W = w;
    }
    for (int64_t r = 0; r < N; ++r) {
        if (q.scale) q.scale[r] = exact ? (float)ldexp(1.0, (int)rng_int(-2, 1))
                                        : rng_uniform(0.001f, 0.02f);
        for (int64_t k = 0; k < D; ++k)
            q.val[r * D + k] = (double)f[r * D + k] * (q.scale ? (double)q.scale[r] : 1.0);
    }
    free(f);
    return q;
}

/* double reference of a row's score and the scale of its rounding error */
static double qref_row(const qtable *q, int64_t D, const float *bias, const float *u, int64_t r,
                       double *mag) {
    double s = 0.0, m = 0.0;
    for (int64_t k = 0; k < D; ++k) {
        s += q->val[r * D + k] * u[k];
        m += fabs(q->val[r * D + k] * u[k]);
    }
    if (bias) { s += bias[r]; m += fabs(bias[r]); }
    if (mag) *mag = m;
    return s;
}

static void qscore_case(int64_t N, int64_t D, int64_t n, dre_dtype dt, int use_idx, int use_bias,
                        int use_scale) {
    qtable q = qtable_make(N, D, dt, use_scale, 0);
    float *u = gf(D), *bias = use_bias ? gf(N) : NULL;
    fill_uniform(u, D, -1.0f, 1.0f);
    if (bias) fill_uniform(bias, N, -0.1f, 0.1f);
    int32_t *idx = use_idx ? random_rows(N, n) : NULL;
    double *ref = dtmp(n), *mag = dtmp(n);
    for (int64_t i = 0; i < n; ++i) ref[i] = qref_row(&q, D, bias, u, idx ? idx[i] : i, &mag[i]);
    double *s0 = dtmp(n);
    for (int pi = 0; pi < n_paths; ++pi) {
        use_path(paths[pi]);
        ctx("path=%s score_rows %s N=%lld D=%lld n=%lld idx=%d bias=%d scale=%d",
            dre_path_name(paths[pi]), dtype_name(dt), (long long)N, (long long)D, (long long)n,
            use_idx, use_bias, use_scale);
        float *sc = gf(n);
        CHECK_STATUS(dre_score_rows(N, D, dt, q.W, q.scale, bias, u, idx, n, sc), DRE_OK);
        CHECK_SCALED("scores vs double", sc, n, ref, mag, n > 0 ? 1 : 0, n,
                     (double)(D + 5) * FLT_EPSILON);
        if (pi == 0)
            for (int64_t i = 0; i < n; ++i) s0[i] = sc[i];
        else
            CHECK_SCALED("scores vs scalar", sc, n, s0, mag, n > 0 ? 1 : 0, n,
                         2.0 * (double)(D + 5) * FLT_EPSILON);
        /* the float32 entry point on a float32 table without scales is dre_score */
        if (dt == DRE_DTYPE_F32 && !use_scale) {
            float *s1 = gf(n);
            CHECK_STATUS(dre_score(N, D, (const float *)q.W, bias, u, idx, n, s1), DRE_OK);
            CHECK(n == 0 || memcmp(s1, sc, (size_t)n * sizeof(float)) == 0,
                  "dre_score_rows(F32, no scale) differs from dre_score");
        }
        /* dequantised rows: exactly f32(stored) * scale */
        float *rows = gf(n * D);
        CHECK_STATUS(dre_dequantize_rows(N, D, dt, q.W, q.scale, idx, n, rows), DRE_OK);
        int64_t bad = -1;
        for (int64_t i = 0; i < n && bad < 0; ++i) {
            const int64_t r = idx ? idx[i] : i;
            for (int64_t k = 0; k < D; ++k) {
                const double v = q.scale ? q.val[r * D + k] / (double)q.scale[r] : q.val[r * D + k];
                const float want = q.scale ? (float)v * q.scale[r] : (float)v;
                if (memcmp(&rows[i * D + k], &want, sizeof(float)) != 0) bad = i;
            }
        }
        CHECK(bad < 0, "dequantize_rows: row %lld is not f32(stored) * scale", (long long)bad);
    }
    case_end();
}

/* The fused top-k must be exactly the top-k of the scores dre_score_rows
 * gives on the same path (order: higher, then lower row; NaN last); with
 * exact data also the top-k of the double reference and of dre_score_topk
 * on the float32 table of the same values. */
static void qtopk_case(int64_t N, int64_t D, int64_t n, int64_t k, dre_dtype dt, int use_idx,
                       int use_excl, int exact) {
    qtable q = qtable_make(N, D, dt, 1, exact);
    float *u = gf(D), *bias = gf(N), *f32 = gf(N * D);
    if (exact) {
        fill_small_int(u, D, -2, 2);
        for (int64_t r = 0; r < N; ++r) bias[r] = (r % 7 == 3) ? NAN : 0.5f * (float)rng_int(-2, 2);
    } else {
        fill_uniform(u, D, -1.0f, 1.0f);
        fill_uniform(bias, N, -0.1f, 0.1f);
    }
    for (int64_t i = 0; i < N * D; ++i) f32[i] = (float)q.val[i];
    int32_t *idx = use_idx ? random_rows(N, n) : NULL;
    uint8_t *ex = use_excl ? gu8(N) : NULL;
    if (ex)
        for (int64_t r = 0; r < N; ++r) ex[r] = rng_int(0, 4) == 0;
    ref_ranked *rk = (ref_ranked *)malloc((size_t)(n > 0 ? n : 1) * sizeof(ref_ranked));
    if (!rk) die("out of memory");
    for (int pi = 0; pi < n_paths; ++pi) {
        use_path(paths[pi]);
        ctx("path=%s score_topk_rows %s N=%lld D=%lld n=%lld k=%lld idx=%d exclude=%d exact=%d",
            dre_path_name(paths[pi]), dtype_name(dt), (long long)N, (long long)D, (long long)n,
            (long long)k, use_idx, use_excl, exact);
        float *sc = gf(n);
        CHECK_STATUS(dre_score_rows(N, D, dt, q.W, q.scale, bias, u, idx, n, sc), DRE_OK);
        int64_t ne = 0;
        for (int64_t i = 0; i < n; ++i) {
            const int32_t r = idx ? idx[i] : (int32_t)i;
            if (ex && ex[r]) continue;
            rk[ne].r = r;
            rk[ne].s = exact ? qref_row(&q, D, bias, u, r, NULL) : (double)sc[i];
            ++ne;
        }
        qsort(rk, (size_t)ne, sizeof(ref_ranked), ref_rank_cmp);
        const int64_t want_n = k < ne ? k : ne;
        int32_t *ti = gi32(k);
        float *ts = gf(k);
        int64_t nout = -1;
        CHECK_STATUS(dre_score_topk_rows(N, D, dt, q.W, q.scale, bias, u, idx, n, ex, k, ti, ts,
                                         &nout), DRE_OK);
        CHECK(nout == want_n, "n_out %lld, want %lld", (long long)nout, (long long)want_n);
        int64_t bad = -1;
        for (int64_t i = 0; i < want_n && i < nout && bad < 0; ++i) {
            const int same = isnan(rk[i].s) ? isnan(ts[i]) : (double)ts[i] == rk[i].s;
            if (ti[i] != rk[i].r || !same) bad = i;
        }
        CHECK(bad < 0, "rank %lld: got row %d score %.9g, want row %d score %.9g", (long long)bad,
              bad >= 0 ? ti[bad] : 0, bad >= 0 ? (double)ts[bad] : 0.0, bad >= 0 ? rk[bad].r : 0,
              bad >= 0 ? rk[bad].s : 0.0);
        if (exact) {
            int32_t *ti2 = gi32(k);
            float *ts2 = gf(k);
            int64_t n2 = -1;
            CHECK_STATUS(dre_score_topk(N, D, f32, bias, u, idx, n, ex, k, ti2, ts2, &n2), DRE_OK);
            CHECK(n2 == nout && (nout <= 0 || (memcmp(ti2, ti, (size_t)nout * 4) == 0 &&
                                              memcmp(ts2, ts, (size_t)nout * 4) == 0)),
                  "differs from dre_score_topk on the float32 table of the same values");
        }
    }
    free(rk);
    case_end();
}

/* int8 tables, exactly (deeprec_edge.h): the specification written out
 * independently of the library -- U = rint(u * 2^s), max|U| in [2^21, 2^22],
 * I = q . U in int64, (float)((double)I * ((double)scale * 2^-s)) + bias --
 * and the packed table (DRE_DTYPE_I8P) scoring the same bits as the
 * row-major one on every path, from the full table, a candidate list and
 * the top-k; dequantisation of the packed table; the packed size. */
static void packed_i8_case(int64_t N, int64_t D, int nonfinite) {
    qtable q = qtable_make(N, D, DRE_DTYPE_I8, 1, 0);
    float *u = gf(D), *bias = gf(N);
    fill_uniform(u, D, -1.0f, 1.0f);
    if (D > 2) u[D / 2] *= 3.0f;
    if (nonfinite && D > 0) u[D - 1] = INFINITY;
    fill_uniform(bias, N, -0.1f, 0.1f);
    const int64_t nb = dre_packed_i8_bytes(N, D);
    const int64_t G = (D + 3) / 4;
    CHECK(nb == ((N + 15) / 16) * 16 * G * 4, "dre_packed_i8_bytes(%lld, %lld) = %lld",
          (long long)N, (long long)D, (long long)nb);
    uint8_t *P = (uint8_t *)guard_alloc((size_t)(nb > 0 ? nb : 0));
    CHECK_STATUS(dre_pack_rows_i8(N, D, (const int8_t *)q.W, P, nb - 1), nb > 0 ? DRE_ERR_SIZE : DRE_OK);
    CHECK_STATUS(dre_pack_rows_i8(N, D, (const int8_t *)q.W, P, nb), DRE_OK);
    /* the reference */
    float m = 0.0f;
    for (int64_t k = 0; k < D; ++k) m = fabsf(u[k]) > m ? fabsf(u[k]) : m;
    int x = 0;
    if (m > 0.0f) (void)frexp((double)m, &x);
    const int sh = m > 0.0f ? 22 - x : 0;
    float *want = gf(N);
    for (int64_t r = 0; r < N; ++r) {
        int64_t I = 0;
        for (int64_t k = 0; k < D && !nonfinite; ++k)
            I += (int64_t)((const int8_t *)q.W)[r * D + k] * (int64_t)rint(ldexp((double)u[k], sh));
        want[r] = nonfinite ? NAN
                            : (float)((double)I * ((double)q.scale[r] * ldexp(1.0, -sh))) + bias[r];
    }
    int32_t *idx = gi32(N);
    for (int64_t i = 0; i < N; ++i) idx[i] = (int32_t)rng_int(0, N - 1);
    for (int pi = 0; pi < n_paths; ++pi) {
        use_path(paths[pi]);
        ctx("path=%s packed int8 N=%lld D=%lld%s", dre_path_name(paths[pi]), (long long)N,
            (long long)D, nonfinite ? " (u not finite)" : "");
        float *a = gf(N), *b = gf(N), *c = gf(N);
        CHECK_STATUS(dre_score_rows(N, D, DRE_DTYPE_I8, q.W, q.scale, bias, u, NULL, N, a), DRE_OK);
        CHECK_STATUS(dre_score_rows(N, D, DRE_DTYPE_I8P, P, q.scale, bias, u, NULL, N, b), DRE_OK);
        CHECK_STATUS(dre_score_rows(N, D, DRE_DTYPE_I8P, P, q.scale, bias, u, idx, N, c), DRE_OK);
        int64_t bad = -1;
        for (int64_t r = 0; r < N; ++r) {
            const int same = isnan(want[r]) ? isnan(a[r]) && isnan(b[r])
                                            : memcmp(&a[r], &want[r], 4) == 0 &&
                                                  memcmp(&b[r], &want[r], 4) == 0;
            if (!same) bad = r;
        }
        CHECK(bad < 0, "row %lld: row-major %.9g, packed %.9g, specification %.9g", (long long)bad,
              bad >= 0 ? (double)a[bad] : 0.0, bad >= 0 ? (double)b[bad] : 0.0,
              bad >= 0 ? (double)want[bad] : 0.0);
        bad = -1;
        for (int64_t i = 0; i < N; ++i)
            if (memcmp(&c[i], &b[idx[i]], 4) != 0 && !(isnan(c[i]) && isnan(b[idx[i]]))) bad = i;
        CHECK(bad < 0, "packed rows through a candidate list differ (entry %lld)", (long long)bad);
        const int64_t k = N < 20 ? N : 20;
        int32_t *t1 = gi32(k), *t2 = gi32(k);
        float *s1 = gf(k), *s2 = gf(k);
        int64_t n1 = -1, n2 = -1;
        CHECK_STATUS(dre_score_topk_rows(N, D, DRE_DTYPE_I8, q.W, q.scale, bias, u, NULL, N, NULL,
                                         k, t1, s1, &n1), DRE_OK);
        CHECK_STATUS(dre_score_topk_rows(N, D, DRE_DTYPE_I8P, P, q.scale, bias, u, NULL, N, NULL,
                                         k, t2, s2, &n2), DRE_OK);
        CHECK(n1 == n2 && (n1 <= 0 || (memcmp(t1, t2, (size_t)n1 * 4) == 0 &&
                                       memcmp(s1, s2, (size_t)n1 * 4) == 0)),
              "top-k on the packed table differs");
    }
    float *d1 = gf(N * D), *d2 = gf(N * D);
    CHECK_STATUS(dre_dequantize_rows(N, D, DRE_DTYPE_I8, q.W, q.scale, idx, N, d1), DRE_OK);
    CHECK_STATUS(dre_dequantize_rows(N, D, DRE_DTYPE_I8P, P, q.scale, idx, N, d2), DRE_OK);
    CHECK(N * D == 0 || memcmp(d1, d2, (size_t)(N * D) * 4) == 0, "dequantised packed rows differ");
    case_end();
}

/* A row scores the same bits anywhere: full table, table offset, candidate
 * list position (in a block or a tail), so identical rows tie exactly. */
static void qposition_case(int64_t N, int64_t D, dre_dtype dt) {
    qtable q = qtable_make(N, D, dt, 1, 0);
    float *u = gf(D), *bias = gf(N);
    fill_uniform(u, D, -1.0f, 1.0f);
    fill_uniform(bias, N, -0.1f, 0.1f);
    const size_t es = dt == DRE_DTYPE_I8 ? 1 : dt == DRE_DTYPE_F16 ? 2 : 4;
    for (int pi = 0; pi < n_paths; ++pi) {
        use_path(paths[pi]);
        ctx("path=%s score_rows position %s N=%lld D=%lld", dre_path_name(paths[pi]),
            dtype_name(dt), (long long)N, (long long)D);
        float *full = gf(N), *sc = gf(N);
        int32_t *idx = gi32(N);
        CHECK_STATUS(dre_score_rows(N, D, dt, q.W, q.scale, bias, u, NULL, N, full), DRE_OK);
        int64_t bad = -1;
        for (int64_t n = 1; n <= N; ++n) {
            for (int64_t i = 0; i < n; ++i) idx[i] = (int32_t)rng_int(0, N - 1);
            CHECK_STATUS(dre_score_rows(N, D, dt, q.W, q.scale, bias, u, idx, n, sc), DRE_OK);
            for (int64_t i = 0; i < n; ++i)
                if (memcmp(&sc[i], &full[idx[i]], sizeof(float)) != 0 && bad < 0) bad = idx[i];
        }
        CHECK(bad < 0, "row %lld scored through a candidate list differs from its full-table score",
              (long long)bad);
        int64_t bad_off = -1;
        for (int64_t b = 0; b < N; ++b) {
            CHECK_STATUS(dre_score_rows(N - b, D, dt, (const char *)q.W + (size_t)(b * D) * es,
                                        q.scale + b, bias + b, u, NULL, N - b, sc), DRE_OK);
            if (memcmp(sc, full + b, (size_t)(N - b) * sizeof(float)) != 0 && bad_off < 0) bad_off = b;
        }
        CHECK(bad_off < 0, "rows scored from table offset %lld differ", (long long)bad_off);
        /* identical rows (same values, scale and bias): top-k returns 0..N-1 */
        char *Wi = (char *)guard_alloc((size_t)(N * D) * es);
        float *si = gf(N), *bi = gf(N);
        for (int64_t r = 0; r < N; ++r) {
            memcpy(Wi + (size_t)(r * D) * es, q.W, (size_t)D * es);
            si[r] = q.scale[0];
            bi[r] = bias[0];
        }
        int32_t *ti = gi32(N);
        float *ts = gf(N);
        int64_t nout = -1;
        for (int via = 0; via < 2; ++via) {
            for (int64_t i = 0; i < N; ++i) idx[i] = (int32_t)(N - 1 - i);
            CHECK_STATUS(dre_score_topk_rows(N, D, dt, Wi, si, bi, u, via ? idx : NULL, N, NULL, N,
                                             ti, ts, &nout), DRE_OK);
            int ok = nout == N;
            for (int64_t i = 0; i < N && ok; ++i)
                ok = ti[i] == i && memcmp(&ts[i], &ts[0], sizeof(float)) == 0;
            CHECK(ok, "identical rows%s: top-k must return rows 0..N-1 with one score",
                  via ? " via a reversed list" : "");
        }
    }
    case_end();
}

/* dre_gru_step_i8 against the double cell on the dequantised weights, and
 * SIMD against scalar. */
static void gru_step_i8_case(int64_t I, int64_t H) {
    gru_problem p;
    gru_make(&p, 1, 1, I, H, LEN_NONE, 1, 0.0f);
    int8_t *wi = (int8_t *)guard_alloc((size_t)(3 * H * I)), *wh = (int8_t *)guard_alloc((size_t)(3 * H * H));
    float *si = gf(3 * H), *sh = gf(3 * H);
    /* symmetric per-row quantisation; the float problem then holds the
     * dequantised values (used by the double reference) */
    for (int m = 0; m < 2; ++m) {
        const int64_t C = m ? H : I;
        float *Wf = m ? p.W_hh : p.W_ih, *s = m ? sh : si;
        int8_t *Wq = m ? wh : wi;
        for (int64_t r = 0; r < 3 * H; ++r) {
            float amax = 0.0f;
            for (int64_t k = 0; k < C; ++k) amax = fabsf(Wf[r * C + k]) > amax ? fabsf(Wf[r * C + k]) : amax;
            s[r] = amax > 0 ? amax / 127.0f : 1.0f;
            for (int64_t k = 0; k < C; ++k) {
                Wq[r * C + k] = (int8_t)lrintf(Wf[r * C + k] / s[r]);
                Wf[r * C + k] = (float)Wq[r * C + k] * s[r];
            }
        }
    }
    ref_gru_par d;
    ref_gru_par_init(&p.in, &d);
    double *ref = dtmp(H);
    ref_gru_cell(I, H, d.x, d.h0, &d, ref, NULL);
    ref_gru_par_free(&d);
    const double atol = 2e-6 * sqrt((double)(I + H + 1)) + 1e-6, rtol = 1e-5;
    float *s0 = NULL;
    for (int pi = 0; pi < n_paths; ++pi) {
        use_path(paths[pi]);
        ctx("path=%s gru_step_i8 I=%lld H=%lld", dre_path_name(paths[pi]), (long long)I, (long long)H);
        const size_t need = dre_gru_step_workspace_size(I, H);
        float *out = gf(H);
        CHECK_STATUS(dre_gru_step_i8(I, H, p.x, p.h0, wi, si, wh, sh, p.b_ih, p.b_hh, out,
                                     gws(need), need), DRE_OK);
        CHECK_CLOSE("h_out vs double", out, ref, H, atol, rtol);
        float *h = gcopy(p.h0, H);
        CHECK_STATUS(dre_gru_step_i8(I, H, p.x, h, wi, si, wh, sh, p.b_ih, p.b_hh, h, gws(need), need),
                     DRE_OK);
        CHECK(memcmp(h, out, (size_t)H * sizeof(float)) == 0, "h_out == h gives other results");
        /* the packed matrices: the same bits */
        const int64_t ni = dre_packed_i8_bytes(3 * H, I), nh = dre_packed_i8_bytes(3 * H, H);
        uint8_t *pi_ = (uint8_t *)guard_alloc((size_t)ni), *ph = (uint8_t *)guard_alloc((size_t)nh);
        CHECK_STATUS(dre_pack_rows_i8(3 * H, I, wi, pi_, ni), DRE_OK);
        CHECK_STATUS(dre_pack_rows_i8(3 * H, H, wh, ph, nh), DRE_OK);
        float *op = gf(H);
        CHECK_STATUS(dre_gru_step_i8p(I, H, p.x, p.h0, pi_, si, ph, sh, p.b_ih, p.b_hh, op,
                                      gws(need), need), DRE_OK);
        CHECK(memcmp(op, out, (size_t)H * sizeof(float)) == 0,
              "dre_gru_step_i8p differs from dre_gru_step_i8");
        if (pi == 0) s0 = out;
        else CHECK_CLOSE_FF("h_out vs scalar", out, s0, H, atol, rtol);
    }
    case_end();
}

static void errors_rows(void) {
    n_sents = 0;
    const int64_t N = 7, D = 4, n = 4, k = 3;
    int8_t *W = (int8_t *)guard_alloc((size_t)(N * D));
    memset(W, 1, (size_t)(N * D));
    float *u = gf(D), *bias = gf(N), *sc_ = gf(N);
    fill_uniform(u, D, -1, 1); fill_uniform(bias, N, -1, 1); fill_uniform(sc_, N, 0.5f, 1);
    int32_t *idx = gi32(n);
    idx[0] = 6; idx[1] = 0; idx[2] = 3; idx[3] = 5;
    float *sc = (float *)sent_new("scores", (size_t)n * sizeof(float));
    float *rows = (float *)sent_new("rows", (size_t)(n * D) * sizeof(float));
    int32_t *ti = (int32_t *)sent_new("top_idx", (size_t)k * sizeof(int32_t));
    float *ts = (float *)sent_new("top_score", (size_t)k * sizeof(float));
    int64_t *no = (int64_t *)sent_new("n_out", sizeof(int64_t));
    const dre_dtype I8 = DRE_DTYPE_I8, BAD = (dre_dtype)7;
    EXPECT(dre_score_rows(-1, D, I8, W, sc_, bias, u, idx, n, sc), DRE_ERR_SIZE, "rows N=-1");
    EXPECT(dre_score_rows(N, -1, I8, W, sc_, bias, u, idx, n, sc), DRE_ERR_SIZE, "rows D=-1");
    EXPECT(dre_score_rows(N, D, I8, W, sc_, bias, u, idx, -1, sc), DRE_ERR_SIZE, "rows n=-1");
    EXPECT(dre_score_rows(HUGE_DIM, HUGE_DIM, I8, W, sc_, bias, u, idx, n, sc), DRE_ERR_SIZE, "rows overflow");
    EXPECT(dre_score_rows(N, D, BAD, W, sc_, bias, u, idx, n, sc), DRE_ERR_ARG, "rows dtype 7");
    EXPECT(dre_score_rows(N, D, I8, NULL, sc_, bias, u, idx, n, sc), DRE_ERR_NULL, "rows O NULL");
    EXPECT(dre_score_rows(N, D, I8, W, sc_, bias, NULL, idx, n, sc), DRE_ERR_NULL, "rows u NULL");
    EXPECT(dre_score_rows(N, D, I8, W, sc_, bias, u, idx, n, NULL), DRE_ERR_NULL, "rows scores NULL");
    EXPECT2(dre_score_rows(N, D, I8, W, sc_, bias, u, NULL, N + 1, sc), DRE_ERR_SIZE, DRE_ERR_INDEX, "rows n > N");
    EXPECT(dre_score_topk_rows(N, D, I8, W, sc_, bias, u, idx, n, NULL, -1, ti, ts, no), DRE_ERR_SIZE, "topk_rows k=-1");
    EXPECT(dre_score_topk_rows(N, D, BAD, W, sc_, bias, u, idx, n, NULL, k, ti, ts, no), DRE_ERR_ARG, "topk_rows dtype");
    EXPECT(dre_score_topk_rows(N, D, I8, W, sc_, bias, u, idx, n, NULL, k, ti, ts, NULL), DRE_ERR_NULL, "topk_rows n_out NULL");
    EXPECT(dre_score_topk_rows(N, D, I8, W, sc_, bias, u, idx, n, NULL, k, NULL, ts, no), DRE_ERR_NULL, "topk_rows top_idx NULL");
    EXPECT(dre_dequantize_rows(N, D, BAD, W, sc_, idx, n, rows), DRE_ERR_ARG, "dequantize dtype");
    EXPECT(dre_dequantize_rows(N, D, I8, NULL, sc_, idx, n, rows), DRE_ERR_NULL, "dequantize W NULL");
    EXPECT(dre_dequantize_rows(N, D, I8, W, sc_, idx, n, NULL), DRE_ERR_NULL, "dequantize out NULL");
    static const int32_t bad_i[] = {7, -1, INT32_MAX, INT32_MIN};
    for (int i = 0; i < 4; ++i) {
        int32_t *ib = gi32(n);
        ib[0] = 1; ib[1] = 2; ib[2] = 3; ib[3] = bad_i[i];
        EXPECT(dre_score_rows(N, D, I8, W, sc_, bias, u, ib, n, sc), DRE_ERR_INDEX, "rows idx %d", bad_i[i]);
        EXPECT(dre_score_topk_rows(N, D, I8, W, sc_, bias, u, ib, n, NULL, k, ti, ts, no), DRE_ERR_INDEX,
               "topk_rows idx %d", bad_i[i]);
        EXPECT(dre_dequantize_rows(N, D, I8, W, sc_, ib, n, rows), DRE_ERR_INDEX, "dequantize idx %d", bad_i[i]);
    }
    /* the int8 step */
    const int64_t I = 3, H = 4;
    float *x = gf(I), *h = gf(H), *b = gf(3 * H), *s = gf(3 * H);
    memset(x, 0, (size_t)I * 4); memset(h, 0, (size_t)H * 4); memset(b, 0, (size_t)(3 * H) * 4);
    fill_uniform(s, 3 * H, 0.5f, 1.0f);
    int8_t *wi = (int8_t *)guard_alloc((size_t)(3 * H * I)), *wh = (int8_t *)guard_alloc((size_t)(3 * H * H));
    memset(wi, 0, (size_t)(3 * H * I)); memset(wh, 0, (size_t)(3 * H * H));
    float *o = (float *)sent_new("h_out", (size_t)H * 4);
    const size_t need = dre_gru_step_workspace_size(I, H);
    void *ws = gws(need);
    EXPECT(dre_gru_step_i8(-1, H, x, h, wi, s, wh, s, b, b, o, ws, need), DRE_ERR_SIZE, "step_i8 I=-1");
    EXPECT(dre_gru_step_i8(I, H, x, h, NULL, s, wh, s, b, b, o, ws, need), DRE_ERR_NULL, "step_i8 W_ih NULL");
    EXPECT(dre_gru_step_i8(I, H, x, h, wi, s, NULL, s, b, b, o, ws, need), DRE_ERR_NULL, "step_i8 W_hh NULL");
    EXPECT(dre_gru_step_i8(I, H, x, h, wi, s, wh, s, b, b, NULL, ws, need), DRE_ERR_NULL, "step_i8 h_out NULL");
    EXPECT(dre_gru_step_i8(I, H, x, h, wi, s, wh, s, b, b, o, ws, need - 1), DRE_ERR_WORKSPACE, "step_i8 workspace");
    case_end();
}

static void test_rows(void) {
    static const dre_dtype DT[] = {DRE_DTYPE_I8, DRE_DTYPE_F16, DRE_DTYPE_F32};
    group_begin("score_rows");
    for (int t = 0; t < 3; ++t) {
        for (int s = 0; s < N_SWEEP; ++s) {
            const int64_t v = SWEEP[s];
            if (g_quick && (s % 3)) continue;
            qscore_case(40, v, 40, DT[t], 0, s & 1, (s & 2) || DT[t] == DRE_DTYPE_I8); /* D tails */
            qscore_case(v + 3, 9, v, DT[t], 1, 1, 1);   /* n sweep via a list: row blocks */
            qscore_case(v, 20, v, DT[t], 0, s & 1, 1);  /* n sweep, contiguous rows */
        }
        qscore_case(300, 100, 300, DT[t], 1, 1, 1);
        qscore_case(1000, 64, 777, DT[t], 0, 1, 1);
        qscore_case(5, 0, 5, DT[t], 0, 1, 1); /* D == 0: the biases */
        qscore_case(4, 3, 0, DT[t], 0, 1, 1);
    }
    group_end();

    group_begin("score_topk_rows");
    static const int64_t ks[] = {0, 1, 3, 8, 17, 40, 1000};
    for (int t = 0; t < 3; ++t) {
        for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ++ki) {
            for (int f = 0; f < 4; ++f) {
                qtopk_case(60, 5, 60, ks[ki], DT[t], 0, f & 1, 1);
                qtopk_case(60, 19, 37, ks[ki], DT[t], 1, f & 2, f & 1);
                if (!g_quick) qtopk_case(90, 33, 90, ks[ki], DT[t], f & 1, f & 2, 0);
            }
        }
        qtopk_case(3000, 24, 3000, 20, DT[t], 0, 1, 1); /* chunk boundaries */
        qtopk_case(3000, 64, 2900, 20, DT[t], 1, 0, 0);
        qtopk_case(513, 7, 513, 257, DT[t], 1, 1, 1);   /* heap */
    }
    group_end();

    group_begin("score_rows position");
    static const int64_t Ds[] = {1, 3, 7, 8, 9, 15, 16, 17, 31, 33, 64, 100};
    for (int t = 0; t < 3; ++t)
        for (size_t i = 0; i < sizeof Ds / sizeof Ds[0]; ++i)
            qposition_case(g_quick ? 13 : 37, Ds[i], DT[t]);
    group_end();

    group_begin("packed int8");
    {
        static const int64_t PN[] = {1, 15, 16, 17, 300};
        static const int64_t PD[] = {1, 3, 4, 5, 16, 64, 67, 1024, 1029};
        for (size_t i = 0; i < sizeof PN / sizeof PN[0]; ++i)
            for (size_t j = 0; j < sizeof PD / sizeof PD[0]; ++j)
                if (!g_quick || PN[i] * PD[j] < 5000) packed_i8_case(PN[i], PD[j], 0);
        packed_i8_case(40, 12, 1);
        CHECK(dre_packed_i8_bytes(-1, 4) == -1 && dre_packed_i8_bytes(4, -1) == -1 &&
              dre_packed_i8_bytes(INT64_MAX / 2, INT64_MAX / 2) == -1 &&
              dre_packed_i8_bytes(0, 5) == 0, "dre_packed_i8_bytes on bad sizes");
        case_end();
    }
    group_end();

    group_begin("gru_step_i8");
    for (int s = 0; s < N_SWEEP; ++s) {
        if (g_quick && (s % 3)) continue;
        gru_step_i8_case(5, SWEEP[s]);
        gru_step_i8_case(SWEEP[s], 7);
    }
    gru_step_i8_case(128, 256);
    gru_step_i8_case(0, 9);
    group_end();

    group_begin("rows errors");
    errors_rows();
    group_end();
}

int main(int argc, char **argv) {
    const char *expect_path = NULL;
    for (int i = 1; i < argc; ++i) {
        if (strcmp(argv[i], "-v") == 0) g_verbose = 1;
        else if (strcmp(argv[i], "--quick") == 0) g_quick = 1;
        else if (strncmp(argv[i], "--expect-path=", 14) == 0) expect_path = argv[i] + 14;
        else {
            fprintf(stderr, "usage: %s [-v] [--quick] [--expect-path=scalar|avx2|avx512|neon]\n", argv[0]);
            return 2;
        }
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    install_fault_handler();
    rng_seed(20240601u);
    paths_init(); /* dre_path_supported only: no path is chosen yet */
    printf("deeprec-edge %d.%d.%d C tests; supported paths:", DRE_VERSION_MAJOR,
           DRE_VERSION_MINOR, DRE_VERSION_PATCH);
    for (int i = 0; i < n_paths; ++i) printf(" %s", dre_path_name(paths[i]));
    /* the dispatch decision (the first call chooses; nothing has set a path) */
    printf("; active path: %s", dre_path_name(dre_active_path()));
#if defined(ARM32_HWCAP)
    {
        const unsigned long hw = getauxval(AT_HWCAP);
        printf(" (AT_HWCAP: %s, %s)", (hw & ARM32_HWCAP_NEON) ? "neon" : "no neon",
               (hw & ARM32_HWCAP_VFPV4) ? "vfpv4 fma" : "no vfpv4");
    }
#endif
    printf("%s\n", g_quick ? " (quick)" : "");
    /* first: the dispatch decision, before anything switches paths */
    test_status_and_paths(expect_path);

    test_sgemm();
    test_gru_forward();
    test_gru_backward();
    test_gru_step();
    test_half();
    test_gru_step_f16();
    test_head();
    test_loss();
    test_score();
    test_score_position();
    test_optim();
    test_errors();
    test_nan_policy();
    test_rows();

    /* again, thinner, with every buffer starting right after a guard page
     * (a read before the first element faults) */
    g_guard_front = 1;
    g_quick = 1;
    printf("-- again with guard pages in front of every buffer --\n");
    test_sgemm();
    test_gru_forward();
    test_gru_backward();
    test_gru_step();
    test_gru_step_f16();
    test_head();
    test_loss();
    test_score();
    test_score_position();
    test_optim();
    test_rows();

    printf("%ld passed, %ld failed\n", t_pass, t_fail);
    return t_fail ? 1 : 0;
}

/*
 * tester.h -- the small test harness of the C tests (one translation unit:
 * test_core.c includes this once).
 *
 *  - Checks are counted; each group prints one line, the run ends with
 *    "N passed, M failed" and a non-zero exit status on any failure.
 *  - A failure prints the group, the current path and case (ctx()), the
 *    source line and what differed, so a report can be turned into a repro.
 *  - Guard buffers (onnxruntime MLAS MatrixGuardBuffer style): every array
 *    handed to a kernel ends exactly where an unmapped PROT_NONE page
 *    begins, so a SIMD over-read or over-write faults instead of passing
 *    silently.  The fault handler prints the context before exiting.
 *  - Comparisons against double references report the worst element.
 */
#ifndef DRE_TESTER_H
#define DRE_TESTER_H

#include "deeprec_edge.h"

#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#if !defined(MAP_ANONYMOUS) && defined(MAP_ANON)
#  define MAP_ANONYMOUS MAP_ANON
#endif

#if defined(__SANITIZE_ADDRESS__)
#  define DRE_TEST_ASAN 1
#elif defined(__has_feature)
#  if __has_feature(address_sanitizer)
#    define DRE_TEST_ASAN 1
#  endif
#endif

/* ------------------------------------------------------------------------ */
/* counting and reporting                                                    */
/* ------------------------------------------------------------------------ */

static long t_pass, t_fail;            /* whole run */
static long g_pass, g_fail;            /* current group */
static const char *g_group = "";
static char g_ctx[512];                /* current path / case, for messages */
static int g_verbose;
static double g_worst_ratio;           /* largest error/tolerance seen (-v) */
static char g_worst_where[640];
#define T_MAX_MSGS_PER_GROUP 25

static void ctx(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_ctx, sizeof g_ctx, fmt, ap);
    va_end(ap);
}

static void group_begin(const char *name) {
    g_group = name;
    g_pass = g_fail = 0;
    g_ctx[0] = '\0';
    g_worst_ratio = 0.0;
    g_worst_where[0] = '\0';
}

static int g_guard_front; /* see guard_alloc */

static void group_end(void) {
    char name[64];
    snprintf(name, sizeof name, "%s%s", g_group, g_guard_front ? " (front guard)" : "");
    printf("%-28s %6ld checks  %s\n", name, g_pass + g_fail, g_fail ? "FAILED" : "ok");
    if (g_fail) printf("%-28s %6ld failed\n", "", g_fail);
    if (g_verbose && g_worst_ratio > 0.0)
        printf("%-28s worst error/tolerance %.3g at %s\n", "", g_worst_ratio, g_worst_where);
    fflush(stdout);
    t_pass += g_pass;
    t_fail += g_fail;
}

static int check_v(int ok, int line, const char *fmt, va_list ap) {
    if (ok) {
        ++g_pass;
        return 1;
    }
    ++g_fail;
    if (g_fail <= T_MAX_MSGS_PER_GROUP || g_verbose) {
        printf("FAIL [%s%s] %s (test_core line %d): ", g_group, g_guard_front ? ", front guard" : "",
               g_ctx, line);
        vprintf(fmt, ap);
        printf("\n");
    } else if (g_fail == T_MAX_MSGS_PER_GROUP + 1) {
        printf("FAIL [%s] ... further failures of this group not shown (-v shows all)\n",
               g_group);
    }
    fflush(stdout);
    return 0;
}

static int check_at(int ok, int line, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    const int r = check_v(ok, line, fmt, ap);
    va_end(ap);
    return r;
}
#define CHECK(cond, ...) check_at(!!(cond), __LINE__, __VA_ARGS__)

#define CHECK_STATUS(got, want)                                                        \
    do {                                                                               \
        const dre_status got_ = (got), want_ = (want);                                 \
        check_at(got_ == want_, __LINE__, "%s returned %d (%s), expected %d (%s)", #got, \
                 (int)got_, dre_status_to_string(got_), (int)want_,                    \
                 dre_status_to_string(want_));                                         \
    } while (0)

/* ------------------------------------------------------------------------ */
/* random numbers (splitmix64: reproducible on every platform)               */
/* ------------------------------------------------------------------------ */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static void rng_seed(uint64_t s) { rng_state = s * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull; }

static uint64_t rng_u64(void) {
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* uniform in [lo, hi) */
static float rng_uniform(float lo, float hi) {
    const double u = (double)(rng_u64() >> 11) * (1.0 / 9007199254740992.0);
    return (float)(lo + (hi - lo) * u);
}

static int64_t rng_int(int64_t lo, int64_t hi) { /* inclusive */
    return lo + (int64_t)(rng_u64() % (uint64_t)(hi - lo + 1));
}

static void fill_uniform(float *p, int64_t n, float lo, float hi) {
    for (int64_t i = 0; i < n; ++i) p[i] = rng_uniform(lo, hi);
}

/* small integers as floats: products and short sums are exact in float */
static void fill_small_int(float *p, int64_t n, int lo, int hi) {
    for (int64_t i = 0; i < n; ++i) p[i] = (float)rng_int(lo, hi);
}

/* ------------------------------------------------------------------------ */
/* guard buffers                                                             */
/* ------------------------------------------------------------------------ */

typedef struct guard_map {
    void *base;
    size_t len;
    struct guard_map *next;
} guard_map;

static guard_map *guard_list;
static size_t guard_page;

static void die(const char *msg) {
    fprintf(stderr, "test_core: %s\n", msg);
    exit(3);
}

/* `bytes` bytes between two PROT_NONE pages.  Default: the buffer ends
 * exactly where the upper guard page begins (starts at page end - bytes, so
 * its alignment is whatever `bytes` makes it: 4-byte for float arrays, any
 * for a workspace).  With g_guard_front set, the buffer starts right after
 * the lower guard page instead (catches reads before the start).  Freed by
 * case_end().  Contents: a 0xA5 pattern (not zero, so an output a kernel
 * forgets to write shows). */

static void *guard_alloc(size_t bytes) {
    if (guard_page == 0) {
        const long ps = sysconf(_SC_PAGESIZE);
        guard_page = ps > 0 ? (size_t)ps : 4096u;
    }
    const size_t data = (bytes + guard_page - 1) / guard_page * guard_page;
    const size_t len = guard_page + data + guard_page;
    char *base = (char *)mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if ((void *)base == MAP_FAILED) die("mmap failed");
    if (mprotect(base, guard_page, PROT_NONE) != 0 ||
        mprotect(base + guard_page + data, guard_page, PROT_NONE) != 0)
        die("mprotect failed");
    guard_map *m = (guard_map *)malloc(sizeof *m);
    if (!m) die("out of memory");
    m->base = base;
    m->len = len;
    m->next = guard_list;
    guard_list = m;
    char *p = base + guard_page + (g_guard_front ? 0 : data - bytes);
    memset(p, 0xA5, bytes);
    return p;
}

static float *gf(int64_t n) { return (float *)guard_alloc((size_t)(n > 0 ? n : 0) * sizeof(float)); }
static int32_t *gi32(int64_t n) { return (int32_t *)guard_alloc((size_t)(n > 0 ? n : 0) * sizeof(int32_t)); }
static uint8_t *gu8(int64_t n) { return (uint8_t *)guard_alloc((size_t)(n > 0 ? n : 0)); }

/* A workspace of exactly `bytes` bytes, ending at a guard page; `bytes` == 0
 * gives a pointer right at the guard page (valid, but any access faults). */
static void *gws(size_t bytes) { return guard_alloc(bytes); }

/* A guarded copy of a float array. */
static float *gcopy(const float *src, int64_t n) {
    float *p = gf(n);
    if (n > 0) memcpy(p, src, (size_t)n * sizeof(float));
    return p;
}

static void guard_free_all(void) {
    while (guard_list) {
        guard_map *m = guard_list;
        guard_list = m->next;
        munmap(m->base, m->len);
        free(m);
    }
}

/* plain heap arrays for references (double); caller frees */
static double *dalloc(int64_t n) {
    double *p = (double *)calloc((size_t)(n > 0 ? n : 1), sizeof(double));
    if (!p) die("out of memory");
    return p;
}

/* zeroed doubles freed at case_end() */
typedef struct tmp_block {
    struct tmp_block *next;
    double data[];
} tmp_block;
static tmp_block *tmp_list;

static double *dtmp(int64_t n) {
    tmp_block *b = (tmp_block *)calloc(1, sizeof(tmp_block) + (size_t)(n > 0 ? n : 1) * sizeof(double));
    if (!b) die("out of memory");
    b->next = tmp_list;
    tmp_list = b;
    return b->data;
}

/* Release every guard buffer and temporary of the case just run. */
static void case_end(void) {
    guard_free_all();
    while (tmp_list) {
        tmp_block *b = tmp_list;
        tmp_list = b->next;
        free(b);
    }
}

/* ------------------------------------------------------------------------ */
/* fault handler: name the case that faulted (guard page hit)                */
/* ------------------------------------------------------------------------ */

#if !defined(DRE_TEST_ASAN) /* ASan's own report has the stack trace */
static void on_fault(int sig) {
    char buf[800];
    const int n = snprintf(buf, sizeof buf,
                           "\nFATAL signal %d in group [%s] %s\n"
                           "(a guard page was touched: a kernel read or wrote past an array)\n",
                           sig, g_group, g_ctx);
    if (n > 0) {
        ssize_t w = write(2, buf, (size_t)(n < (int)sizeof buf ? n : (int)sizeof buf - 1));
        (void)w;
    }
    _exit(2);
}
#endif

static void install_fault_handler(void) {
#if !defined(DRE_TEST_ASAN)
    signal(SIGSEGV, on_fault);
    signal(SIGBUS, on_fault);
#endif
}

/* ------------------------------------------------------------------------ */
/* comparisons                                                               */
/* ------------------------------------------------------------------------ */

/* Both NaN, both the same infinity, or |got - ref| <= atol + rtol |ref|. */
static int close_enough(double got, double ref, double atol, double rtol) {
    if (isnan(ref) || isnan(got)) return isnan(ref) && isnan(got);
    if (isinf(ref) || isinf(got)) return got == ref;
    return fabs(got - ref) <= atol + rtol * fabs(ref);
}

/* One check over an array: float results against a double reference. */
static void note_ratio(double ratio, const char *what) {
    if (ratio > g_worst_ratio) {
        g_worst_ratio = ratio;
        snprintf(g_worst_where, sizeof g_worst_where, "%s: %s", g_ctx, what);
    }
}

static int check_close_at(int line, const char *what, const float *got, const double *ref,
                          int64_t n, double atol, double rtol) {
    int64_t worst = -1, bad = 0;
    double worst_ratio = -1.0;
    for (int64_t i = 0; i < n; ++i) {
        if (g_verbose && isfinite(ref[i]) && atol + rtol * fabs(ref[i]) > 0.0)
            note_ratio(fabs((double)got[i] - ref[i]) / (atol + rtol * fabs(ref[i])), what);
        if (close_enough(got[i], ref[i], atol, rtol)) continue;
        ++bad;
        const double d = fabs((double)got[i] - ref[i]);
        const double ratio = isnan(d) ? INFINITY : d / (atol + rtol * fabs(ref[i]));
        if (ratio > worst_ratio) {
            worst_ratio = ratio;
            worst = i;
        }
    }
    if (bad == 0) return check_at(1, line, "");
    return check_at(0, line,
                    "%s: %lld of %lld elements off; worst [%lld] got %.9g ref %.9g "
                    "(|diff| %.3g, atol %.2g rtol %.2g)",
                    what, (long long)bad, (long long)n, (long long)worst, (double)got[worst],
                    ref[worst], fabs((double)got[worst] - ref[worst]), atol, rtol);
}
#define CHECK_CLOSE(what, got, ref, n, atol, rtol) \
    check_close_at(__LINE__, what, got, ref, n, atol, rtol)

/* float against float (a SIMD path against the scalar path) */
static int check_close_ff_at(int line, const char *what, const float *got, const float *ref,
                             int64_t n, double atol, double rtol) {
    double *r = dalloc(n);
    for (int64_t i = 0; i < n; ++i) r[i] = ref[i];
    const int ok = check_close_at(line, what, got, r, n, atol, rtol);
    free(r);
    return ok;
}
#define CHECK_CLOSE_FF(what, got, ref, n, atol, rtol) \
    check_close_ff_at(__LINE__, what, got, ref, n, atol, rtol)

/* Bitwise equality to a saved copy (an output that must stay untouched). */
static int check_same_bytes_at(int line, const char *what, const void *got, const void *ref,
                               size_t bytes) {
    return check_at(bytes == 0 || memcmp(got, ref, bytes) == 0, line,
                    "%s was modified (must be left untouched)", what);
}
#define CHECK_UNTOUCHED(what, got, ref, bytes) check_same_bytes_at(__LINE__, what, got, ref, bytes)

static int all_finite(const float *p, int64_t n) {
    for (int64_t i = 0; i < n; ++i)
        if (!isfinite(p[i])) return 0;
    return 1;
}

static double max_abs_d(const double *p, int64_t n) {
    double m = 0.0;
    for (int64_t i = 0; i < n; ++i)
        if (fabs(p[i]) > m) m = fabs(p[i]);
    return m;
}

/* ------------------------------------------------------------------------ */
/* paths                                                                     */
/* ------------------------------------------------------------------------ */

static const dre_path ALL_PATHS[] = {DRE_PATH_SCALAR, DRE_PATH_AVX2, DRE_PATH_AVX512,
                                     DRE_PATH_NEON};
#define N_ALL_PATHS 4

/* The supported paths, paths[0] == scalar.  Found by asking about every
 * path id (not only the four named today), so a path added to the library
 * later is tested without touching this file. */
#define MAX_PATH_ID 32
static dre_path paths[MAX_PATH_ID];
static int n_paths;

static void paths_init(void) {
    n_paths = 0;
    for (int i = 0; i < MAX_PATH_ID; ++i)
        if (dre_path_supported((dre_path)i)) paths[n_paths++] = (dre_path)i;
    if (n_paths == 0 || paths[0] != DRE_PATH_SCALAR) die("the scalar path is not supported");
}

static void use_path(dre_path p) {
    if (dre_set_path(p) != DRE_OK) die("dre_set_path failed for a supported path");
}

/* The size sweep of the brief: 1..33 and 63, 64, 65 (both sides of 4-, 8-
 * and 16-lane vectors and of the 4/6/12-row GEMM tiles). */
static const int64_t SWEEP[] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12,
                                13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24,
                                25, 26, 27, 28, 29, 30, 31, 32, 33, 63, 64, 65};
#define N_SWEEP ((int)(sizeof SWEEP / sizeof SWEEP[0]))

#endif /* DRE_TESTER_H */

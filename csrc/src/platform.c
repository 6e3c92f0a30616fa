/*
 * platform.c -- status strings, CPU feature detection and kernel dispatch.
 *
 * Dispatch follows onnxruntime MLAS (lib/platform.cpp) and CRoaring
 * (src/isadetection.c): start from the portable kernels, check cpuid, check
 * that the OS saves the YMM state (xgetbv), then upgrade.  NEON is baseline
 * on aarch64 and taken without a check; on 32-bit ARM it is optional and
 * read from the kernel's AT_HWCAP (with VFPv4, for fused multiply-add).
 * The choice is made once, on first use, and cached;
 * DEEPREC_EDGE_FORCE_SCALAR=1 pins the scalar path.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(_M_X64)
#  define DRE_X86_64 1
#  if defined(__GNUC__) || defined(__clang__)
#    include <cpuid.h>
#  endif
#endif

#if defined(__arm__) && !defined(__aarch64__)
#  define DRE_ARM32 1
#  if defined(__linux__)                /* Android too */
#    include <sys/auxv.h>
#  endif
#endif

const char *dre_status_to_string(dre_status status) {
    switch (status) {
    case DRE_OK: return "ok";
    case DRE_ERR_NULL: return "a required pointer is NULL";
    case DRE_ERR_SIZE: return "invalid size (negative, inconsistent, or overflowing)";
    case DRE_ERR_INDEX: return "index or length out of range";
    case DRE_ERR_WORKSPACE: return "workspace too small";
    case DRE_ERR_ARG: return "invalid argument";
    case DRE_ERR_UNSUPPORTED: return "kernel path not supported on this CPU or build";
    }
    return "unknown status";
}

const char *dre_path_name(dre_path path) {
    switch (path) {
    case DRE_PATH_SCALAR: return "scalar";
    case DRE_PATH_AVX2: return "avx2";
    case DRE_PATH_NEON: return "neon";
    case DRE_PATH_AVX512: return "avx512";
    }
    return "unknown";
}

#if defined(DRE_X86_64) && (defined(__GNUC__) || defined(__clang__))
/* AVX2 + FMA usable: CPU flags for AVX, FMA, F16C, OSXSAVE and AVX2, and the OS
 * enabled XMM and YMM state in XCR0 (a CPU can have AVX2 while the OS does
 * not save the upper halves; ggml's scorer forgets this check). */
static int dre__cpu_avx2_fma(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    const int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
    const int f16c = (c >> 29) & 1; /* binary16 weight loads (dre_gru_step_f16) */
    if (!(fma && osxsave && avx && f16c)) return 0;
    unsigned xcr0_lo, xcr0_hi;
    __asm__ __volatile__("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
    (void)xcr0_hi;
    if ((xcr0_lo & 0x6u) != 0x6u) return 0;
    if (__get_cpuid_max(0, 0) < 7) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    return (int)((b >> 5) & 1u);
}

/* AVX-512F usable: the AVX2/FMA conditions, the AVX512F cpuid bit, and the
 * OS saving opmask and all ZMM state (XCR0 bits 5-7). */
static int dre__cpu_avx512f(void) {
    unsigned a, b, c, d;
    if (!dre__cpu_avx2_fma()) return 0;
    unsigned xcr0_lo, xcr0_hi;
    __asm__ __volatile__("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
    (void)xcr0_hi;
    if ((xcr0_lo & 0xE6u) != 0xE6u) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    return (int)((b >> 16) & 1u);
}
#endif

#if defined(DRE_ARM32)
/* AT_HWCAP bits of 32-bit ARM Linux (arch/arm/include/uapi/asm/hwcap.h;
 * glibc calls them HWCAP_ARM_NEON and HWCAP_ARM_VFPv4, bionic HWCAP_NEON
 * and HWCAP_VFPv4). */
#  define DRE_HWCAP_ARM_NEON (1UL << 12)
#  define DRE_HWCAP_ARM_VFPV4 (1UL << 16)

static unsigned long dre__arm32_hwcap(void) {
#  if defined(__linux__)
    return getauxval(AT_HWCAP);        /* glibc >= 2.16, Android API >= 18 */
#  else
    /* no auxiliary vector: what the compiler was told the CPU has */
    unsigned long hw = 0;
#    if defined(__ARM_NEON)
    hw |= DRE_HWCAP_ARM_NEON;
#    endif
#    if defined(__ARM_NEON) && defined(__ARM_FEATURE_FMA)
    hw |= DRE_HWCAP_ARM_VFPV4;
#    endif
    return hw;
#  endif
}

/* The NEON table this CPU can run: with VFPv4 FMA where present. */
static const dre_kernels *dre__arm32_neon(void) {
    const unsigned long hw = dre__arm32_hwcap();
    if (!(hw & DRE_HWCAP_ARM_NEON)) return NULL;
    const dre_kernels *k = (hw & DRE_HWCAP_ARM_VFPV4) ? dre__kernels_neon_vfpv4() : NULL;
    return k ? k : dre__kernels_neon();
}
#endif

static const dre_kernels *dre__table_for(dre_path path) {
    switch (path) {
    case DRE_PATH_SCALAR: return dre__kernels_scalar();
    case DRE_PATH_AVX2:
#if defined(DRE_X86_64) && (defined(__GNUC__) || defined(__clang__))
        return dre__cpu_avx2_fma() ? dre__kernels_avx2() : NULL;
#else
        return NULL;
#endif
    case DRE_PATH_NEON:
#if defined(DRE_ARM32)
        return dre__arm32_neon();
#else
        return dre__kernels_neon();
#endif
    case DRE_PATH_AVX512:
#if defined(DRE_X86_64) && (defined(__GNUC__) || defined(__clang__))
        return dre__cpu_avx512f() ? dre__kernels_avx512() : NULL;
#else
        return NULL;
#endif
    }
    return NULL;
}

static int dre__env_force_scalar(void) {
    const char *v = getenv("DEEPREC_EDGE_FORCE_SCALAR");
    return v != NULL && v[0] != '\0' && strcmp(v, "0") != 0;
}

static const dre_kernels *dre__choose(void) {
    if (!dre__env_force_scalar()) {
        const dre_kernels *k = dre__table_for(DRE_PATH_NEON);
        if (k) return k;
        k = dre__table_for(DRE_PATH_AVX512);
        if (k) return k;
        k = dre__table_for(DRE_PATH_AVX2);
        if (k) return k;
    }
    return dre__kernels_scalar();
}

/* The active table.  Choosing is idempotent and cheap, so a race on first
 * use only computes the same answer twice; atomics keep the publication
 * well-defined without pthread_once (and without -lpthread on old glibc). */
static const dre_kernels *dre__active;

#if defined(__GNUC__) || defined(__clang__)
#  define DRE_LOAD(p) __atomic_load_n(&(p), __ATOMIC_ACQUIRE)
#  define DRE_STORE(p, v) __atomic_store_n(&(p), (v), __ATOMIC_RELEASE)
#else
#  define DRE_LOAD(p) (p)
#  define DRE_STORE(p, v) ((p) = (v))
#endif

const dre_kernels *dre__kernels(void) {
    const dre_kernels *k = DRE_LOAD(dre__active);
    if (k == NULL) {
        k = dre__choose();
        DRE_STORE(dre__active, k);
    }
    return k;
}

dre_path dre_active_path(void) { return dre__kernels()->path; }

int dre_path_supported(dre_path path) { return dre__table_for(path) != NULL; }

dre_status dre_set_path(dre_path path) {
    if ((int)path < (int)DRE_PATH_SCALAR || (int)path > (int)DRE_PATH_AVX512) return DRE_ERR_ARG;
    const dre_kernels *k = dre__table_for(path);
    if (k == NULL) return DRE_ERR_UNSUPPORTED;
    DRE_STORE(dre__active, k);
    return DRE_OK;
}

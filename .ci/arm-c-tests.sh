#!/usr/bin/env bash
# The C core on ARM: cross-compiled (static binaries, warnings are errors)
# and run under qemu-user.  test_core checks every kernel on every path the
# CPU supports against double references and the scalar path, and prints the
# path the dispatcher chose; the docs' example runs too.
#
#   aarch64, gcc    NEON (baseline) must be chosen; then forced scalar.
#   armv7, gcc      armhf (ARMv7-A, VFPv3-D16 baseline): NEON from AT_HWCAP,
#                   on three emulated CPUs -- qemu's default (NEON + VFPv4:
#                   the fused-multiply-add table), Cortex-A8 (NEON without
#                   VFPv4: the vmla table), Cortex-R5F (no NEON: scalar) --
#                   then forced scalar.
#   clang           both targets again (--quick): the compiler of the Android
#                   NDK, whose NEON intrinsics and pragmas differ from gcc's.
#
# Needs (installed by .ci/run): gcc-aarch64-linux-gnu libc6-dev-arm64-cross
# gcc-arm-linux-gnueabihf libc6-dev-armhf-cross qemu-user-static clang lld llvm.
# QEMU_AARCH64 / QEMU_ARM override the emulators.
set -euo pipefail
cd "$(dirname "$0")/.."

QEMU_AARCH64="${QEMU_AARCH64:-qemu-aarch64-static}"
QEMU_ARM="${QEMU_ARM:-qemu-arm-static}"
for tool in aarch64-linux-gnu-gcc arm-linux-gnueabihf-gcc "$QEMU_AARCH64" "$QEMU_ARM" clang llvm-ar; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "error: $tool not found; apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross" \
             "gcc-arm-linux-gnueabihf libc6-dev-armhf-cross qemu-user-static clang lld llvm" >&2
        exit 1
    }
done

BUILD="${DRE_C_BUILD:-}"
if [ -z "$BUILD" ]; then
    BUILD="$(mktemp -d "${TMPDIR:-/tmp}/deeprec-edge-arm.XXXXXX")"
    trap 'rm -rf "$BUILD"' EXIT
fi
MAKE=(make -s -C csrc --no-print-directory "BUILD=$BUILD" "WARN=-Wall -Wextra -Wno-unused-parameter -Werror")

step() { printf '\n---- %s ----\n' "$*"; }

# run_tests LABEL EXPECTED_PATH EXPECTED_LINE_REGEX -- COMMAND...
# Runs the C tests, keeps the log, and checks the chosen path, the line that
# names it and the closing "N passed, 0 failed".
run_tests() {
    local label="$1" want="$2" line="$3"; shift 4
    local log="$BUILD/$label.log"
    step "$label"
    "$@" --expect-path="$want" | tee "$log" | grep -E 'C tests;|FAIL|passed' || true
    grep -Eq "$line" "$log" || { echo "error: $label: header does not match /$line/" >&2; exit 1; }
    grep -Eq '^[0-9]+ passed, 0 failed$' "$log" || { echo "error: $label: C tests failed" >&2; exit 1; }
}

step "aarch64 (gcc $(aarch64-linux-gnu-gcc -dumpversion)): build, docs example"
"${MAKE[@]}" cross-aarch64
A64="$BUILD/aarch64-linux-gnu"
"$QEMU_AARCH64" "$A64/example_gru"
run_tests aarch64-neon neon 'supported paths: scalar neon; active path: neon' -- \
    "$QEMU_AARCH64" "$A64/test_core"
run_tests aarch64-forced-scalar scalar 'active path: scalar' -- \
    env DEEPREC_EDGE_FORCE_SCALAR=1 "$QEMU_AARCH64" "$A64/test_core" --quick

step "armv7 (gcc $(arm-linux-gnueabihf-gcc -dumpversion), armhf): build, docs example"
"${MAKE[@]}" cross-armv7
A32="$BUILD/arm-linux-gnueabihf"
"$QEMU_ARM" "$A32/example_gru"
run_tests armv7-neon-vfpv4 neon 'active path: neon \(AT_HWCAP: neon, vfpv4 fma\)' -- \
    "$QEMU_ARM" "$A32/test_core"
run_tests armv7-cortex-a8-neon neon 'active path: neon \(AT_HWCAP: neon, no vfpv4\)' -- \
    "$QEMU_ARM" -cpu cortex-a8 "$A32/test_core"
run_tests armv7-cortex-r5f-no-neon scalar 'supported paths: scalar; active path: scalar \(AT_HWCAP: no neon' -- \
    "$QEMU_ARM" -cpu cortex-r5f "$A32/test_core" --quick
run_tests armv7-forced-scalar scalar 'active path: scalar \(AT_HWCAP: neon' -- \
    env DEEPREC_EDGE_FORCE_SCALAR=1 "$QEMU_ARM" "$A32/test_core" --quick

step "clang $(clang -dumpversion): aarch64 and armv7 (NEON, and NEON + VFPv4)"
"${MAKE[@]}" cross-aarch64 CROSS_CC=clang CROSS_AR=llvm-ar CROSS_CFLAGS="--target=aarch64-linux-gnu -O3"
run_tests clang-aarch64-neon neon 'active path: neon' -- \
    "$QEMU_AARCH64" "$BUILD/aarch64-unknown-linux-gnu/test_core" --quick
"${MAKE[@]}" cross-armv7 ARMV7_CC=clang ARMV7_AR=llvm-ar \
    ARMV7_CFLAGS="--target=arm-linux-gnueabihf -mfpu=neon-vfpv4 -O3"
run_tests clang-armv7-neon-vfpv4 neon 'active path: neon \(AT_HWCAP: neon, vfpv4 fma\)' -- \
    "$QEMU_ARM" "$BUILD/arm-unknown-linux-gnueabihf/test_core" --quick
"${MAKE[@]}" cross-armv7 BUILD="$BUILD/clang-neon" ARMV7_CC=clang ARMV7_AR=llvm-ar \
    ARMV7_CFLAGS="--target=arm-linux-gnueabihf -mfpu=neon -O3"
run_tests clang-armv7-neon neon 'active path: neon \(AT_HWCAP: neon, no vfpv4\)' -- \
    "$QEMU_ARM" -cpu cortex-a8 "$BUILD/clang-neon/arm-unknown-linux-gnueabihf/test_core" --quick

echo
echo "ARM C tests: all passed"

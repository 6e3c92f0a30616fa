#!/usr/bin/env bash
# Cross-compile the C core and its tests for aarch64 (static binary) and run
# them under qemu-user: the NEON path must be the one chosen at start-up
# (--expect-path=neon), and test_core compares every kernel on NEON with the
# double reference and with the scalar path directly.  A second run with
# DEEPREC_EDGE_FORCE_SCALAR=1 checks the switch on that architecture.
#
# Needs (installed by .ci/run):
#   apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static
# Emulator: qemu-aarch64-static, else qemu-aarch64, else a registered
# binfmt_misc handler (the binary is then executed directly).
set -euo pipefail
cd "$(dirname "$0")/.."

CROSS_CC="${CROSS_CC:-aarch64-linux-gnu-gcc}"
if ! command -v "$CROSS_CC" >/dev/null 2>&1; then
    echo "error: $CROSS_CC not found;" \
         "apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross" >&2
    exit 1
fi

if [ -n "${QEMU+set}" ]; then
    :                                   # caller's choice (may be empty: binfmt)
elif command -v qemu-aarch64-static >/dev/null 2>&1; then
    QEMU=qemu-aarch64-static
elif command -v qemu-aarch64 >/dev/null 2>&1; then
    QEMU=qemu-aarch64
elif grep -qs '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null; then
    QEMU=""                             # the kernel runs aarch64 ELF files via binfmt
else
    echo "error: no aarch64 emulator: apt-get install qemu-user-static" \
         "(or register a binfmt_misc handler for aarch64)" >&2
    exit 1
fi

BUILD="${DRE_C_BUILD:-}"
if [ -z "$BUILD" ]; then
    BUILD="$(mktemp -d "${TMPDIR:-/tmp}/deeprec-edge-a64.XXXXXX")"
    trap 'rm -rf "$BUILD"' EXIT
fi
MAKE="make -C csrc --no-print-directory BUILD=$BUILD CROSS_CC=$CROSS_CC"
MAKE_AR="${CROSS_CC%gcc}ar"
command -v "$MAKE_AR" >/dev/null 2>&1 || MAKE_AR=ar

echo "---- cross build: $CROSS_CC ($("$CROSS_CC" -dumpversion)), emulator: ${QEMU:-binfmt_misc} ----"
$MAKE CROSS_AR="$MAKE_AR" WARN="-Wall -Wextra -Wno-unused-parameter -Werror" cross-aarch64
BIN="$BUILD/aarch64-linux-gnu/test_core"
READELF="${CROSS_CC%gcc}readelf"
command -v "$READELF" >/dev/null 2>&1 || READELF=readelf
if command -v "$READELF" >/dev/null 2>&1; then
    "$READELF" -h "$BIN" | grep -q 'AArch64' || { echo "error: $BIN is not an aarch64 binary" >&2; exit 1; }
fi

run() { if [ -n "$QEMU" ]; then "$QEMU" "$@"; else "$@"; fi; }

echo "---- C tests on aarch64 (NEON must be active and match scalar) ----"
OUT="$BUILD/aarch64-linux-gnu/neon.log"
run "$BIN" --expect-path=neon | tee "$OUT"
grep -q 'supported paths: scalar neon' "$OUT" || { echo "error: NEON path not supported in the aarch64 build" >&2; exit 1; }
grep -Eq '^[0-9]+ passed, 0 failed$' "$OUT" || { echo "error: aarch64 C tests failed" >&2; exit 1; }

echo "---- C tests on aarch64, DEEPREC_EDGE_FORCE_SCALAR=1 ----"
DEEPREC_EDGE_FORCE_SCALAR=1 run "$BIN" --expect-path=scalar --quick

echo
echo "aarch64 C tests: all passed"

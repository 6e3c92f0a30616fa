#!/usr/bin/env bash
# C tests of the deeprec-edge core, no Python involved:
#   1. build the library (warnings are errors here) and run the C tests on
#      the dispatched path (every supported path is exercised either way);
#   2. the same binary with DEEPREC_EDGE_FORCE_SCALAR=1, which must pin the
#      scalar path at start-up (--expect-path=scalar asserts it);
#   3. library and tests rebuilt with AddressSanitizer + UBSan and run.
# Everything is built out of tree (a temporary directory, or $DRE_C_BUILD),
# so the source tree stays clean.  Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD="${DRE_C_BUILD:-}"
if [ -z "$BUILD" ]; then
    BUILD="$(mktemp -d "${TMPDIR:-/tmp}/deeprec-edge-c.XXXXXX")"
    trap 'rm -rf "$BUILD"' EXIT
fi
MAKE="make -C csrc --no-print-directory BUILD=$BUILD"
WARN="-Wall -Wextra -Wno-unused-parameter -Werror"

step() { printf '\n---- %s ----\n' "$*"; }

step "C tests, dispatched path (build dir $BUILD)"
$MAKE WARN="$WARN" test

step "C tests, DEEPREC_EDGE_FORCE_SCALAR=1"
DEEPREC_EDGE_FORCE_SCALAR=1 "$($MAKE -s print-out)/test_core" --expect-path=scalar

step "C tests under AddressSanitizer + UBSan"
$MAKE WARN="$WARN" asan

echo
echo "C tests: all passed"

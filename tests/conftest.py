"""Shared fixtures, tolerances and helpers of the kernel tests.

- ``path``: parametrizes a test over every kernel path this CPU and build
  support (``kernels.forced_path``), restoring the previous path afterwards.
  With ``DEEPREC_EDGE_FORCE_SCALAR`` set (the second CI run) only the scalar
  path is used, as on a CPU without SIMD.
- ``rng``: a numpy Generator seeded from the test's node id, so every test is
  deterministic and independent of the order tests run in.
- Named tolerances (``Tol``): every float32 kernel is compared with a float64
  reference from ``reference.py``; the bound is elementwise
  ``|got - want| <= atol * max(1, max|want|) + rtol * |want|``.

Test modules import the helpers with ``from conftest import ...`` (this
directory is put on sys.path below), so keep this file free of side effects.
"""
from __future__ import annotations

import ctypes
import mmap
import os
import sys
import zlib
from typing import NamedTuple

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    # appended, not prepended: a test folder (tests/trainer, ...) must never
    # shadow an installed package
    sys.path.append(HERE)

try:  # hypothesis: deterministic, no example database written into the tree
    from hypothesis import HealthCheck, settings as _hyp_settings
    _hyp_settings.register_profile(
        "deeprec-edge", database=None, derandomize=True, deadline=None, print_blob=True,
        suppress_health_check=[HealthCheck.too_slow])
    # HYPOTHESIS_PROFILE=long: the same properties with many more examples
    _hyp_settings.register_profile("long", parent=_hyp_settings.get_profile("deeprec-edge"),
                                   max_examples=2000, derandomize=False)
    _hyp_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deeprec-edge"))
except ImportError:  # the test extra is not installed: property tests are skipped
    pass

try:
    from deeprec_edge import kernels
    KERNELS_IMPORT_ERROR = None
except ImportError as exc:  # reported by the fixtures, not hidden as a skip
    kernels = None
    KERNELS_IMPORT_ERROR = exc


# --------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------

#: Either side of every vector width (4 for NEON/SSE, 8 for AVX2, 16-float
#: GEMM panels, 32/64 unrolls).
EDGE_SIZES = (1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65)


# --------------------------------------------------------------------------
# Tolerances
# --------------------------------------------------------------------------

class Tol(NamedTuple):
    rtol: float
    atol: float


#: float64 reference vs an independent float64 implementation (torch double).
TOL_F64 = Tol(rtol=1e-10, atol=1e-11)
#: float64 analytic gradient vs float64 central differences (eps = 1e-6).
TOL_FD64 = Tol(rtol=1e-6, atol=1e-7)
#: elementwise float32 maths (optimisers, clipping): a few ulps.
TOL_F32_ELEM = Tol(rtol=2e-6, atol=1e-7)
#: several float32 optimiser steps (state carried in float32) vs float64.
TOL_F32_OPT = Tol(rtol=1e-5, atol=1e-6)
#: float32 dot products / GEMM (K up to a few hundred) vs float64.
TOL_F32_DOT = Tol(rtol=2e-5, atol=2e-6)
#: float32 GRU forward (error accumulates through the recurrence).
TOL_F32_GRU = Tol(rtol=2e-5, atol=4e-6)
#: float32 gradients through time / through the head vs float64 analytic.
TOL_F32_GRAD = Tol(rtol=4e-5, atol=1e-5)
#: float32 sampled loss and its gradients vs float64.
TOL_F32_LOSS = Tol(rtol=2e-5, atol=2e-6)
#: float32 kernel gradient vs central differences of the float32 kernel
#: itself (spot check; step FD_EPS_F32 on a function of O(1)).
TOL_F32_FD = Tol(rtol=5e-3, atol=5e-4)
FD_EPS_F32 = 3e-3
#: onnxruntime's float32 GRU vs ours (two float32 implementations).
TOL_ORT = Tol(rtol=4e-5, atol=8e-6)
#: scalar path vs a SIMD path on identical inputs (different summation
#: order and FMA contraction only).
TOL_PATHS = Tol(rtol=1e-5, atol=2e-6)


def assert_close(got, want, tol: Tol, what: str = "", equal_nan: bool = False):
    """Elementwise |got - want| <= tol.atol * max(1, max|want|) + tol.rtol * |want|.

    The message names the worst element, its values and the max error.
    """
    got = np.asarray(got)
    want = np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != expected {want.shape}"
    g = got.astype(np.float64)
    w = want.astype(np.float64)
    if g.size == 0:
        return
    finite_w = w[np.isfinite(w)]
    scale = max(1.0, float(np.max(np.abs(finite_w)))) if finite_w.size else 1.0
    with np.errstate(invalid="ignore"):
        err = np.abs(g - w)
        bound = tol.atol * scale + tol.rtol * np.abs(w)
        ok = err <= bound
        ok |= (g == w)                        # equal infinities
        if equal_nan:
            ok |= np.isnan(g) & np.isnan(w)
    if not ok.all():
        bad = np.argwhere(~ok)
        i = tuple(bad[0])
        worst = np.nanmax(np.where(ok, 0.0, err)) if np.isfinite(err[~ok]).any() else np.nan
        raise AssertionError(
            f"{what}: {bad.shape[0]}/{g.size} elements out of tolerance {tol} "
            f"(scale {scale:.3g}); first at {i}: got {g[i]!r}, want {w[i]!r}; "
            f"max error {worst:.3g}")


# --------------------------------------------------------------------------
# Data helpers
# --------------------------------------------------------------------------

def f32(a):
    """A C-contiguous float32 copy."""
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32))


def i32(a):
    return np.ascontiguousarray(np.asarray(a, dtype=np.int32))


def randn(rng, *shape, scale=1.0):
    return f32(rng.standard_normal(shape) * scale)


def gru_weights(rng, I, H, scale=None):
    """float32 (W_ih, W_hh, b_ih, b_hh) drawn like torch's GRU init."""
    k = 1.0 / np.sqrt(H) if scale is None else scale
    u = lambda *s: f32(rng.uniform(-k, k, size=s))   # noqa: E731
    return u(3 * H, I), u(3 * H, H), u(3 * H), u(3 * H)


_PAGE = mmap.PAGESIZE
GUARD_PAGES_AVAILABLE = sys.platform.startswith(("linux", "darwin"))


def guarded(a, where="end"):
    """A copy of `a` placed against an inaccessible (PROT_NONE) page: its last
    byte ends a page (where="end") or its first byte starts one ("start"), so
    a SIMD over-read past either end faults instead of passing silently
    (onnxruntime MLAS's MatrixGuardBuffer).  Linux/macOS only."""
    a = np.ascontiguousarray(a)
    nbytes = a.nbytes
    npages = max(1, (nbytes + _PAGE - 1) // _PAGE)
    mm = mmap.mmap(-1, (npages + 2) * _PAGE)
    base = ctypes.addressof(ctypes.c_char.from_buffer(mm))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    for page in (base, base + (npages + 1) * _PAGE):
        if libc.mprotect(page, _PAGE, 0) != 0:
            raise OSError(ctypes.get_errno(), "mprotect failed")
    off = _PAGE + ((npages * _PAGE - nbytes) if where == "end" else 0)
    out = np.frombuffer(mm, dtype=a.dtype, count=a.size, offset=off).reshape(a.shape)
    out[...] = a
    return out


def _force_scalar_env() -> bool:
    return os.environ.get("DEEPREC_EDGE_FORCE_SCALAR", "") not in ("", "0")


FORCE_SCALAR = _force_scalar_env()


def _kernel_paths():
    if kernels is None:
        return ["scalar"]
    if FORCE_SCALAR:
        return ["scalar"]
    return list(kernels.supported_paths())


#: Paths every kernel test runs on.
PATHS = _kernel_paths()
#: SIMD paths compared against scalar in test_paths.py.
SIMD_PATHS = [p for p in PATHS if p != "scalar"]


def require_kernels():
    if kernels is None:
        pytest.fail(f"deeprec_edge.kernels is not importable: {KERNELS_IMPORT_ERROR!r}")
    return kernels


def pytest_configure(config):
    # hypothesis reports a failing example through mypy_extensions, which
    # warns; with filterwarnings = error that turned the report into an
    # INTERNALERROR
    config.addinivalue_line("filterwarnings",
                            "ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning")


# --------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------

@pytest.fixture
def rng(request):
    """Deterministic per test: seeded from the node id."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture(params=PATHS)
def path(request):
    """Run the test body on one kernel path (parametrized over all of them)."""
    K = require_kernels()
    with K.forced_path(request.param):
        assert K.active_path() == request.param
        yield request.param


@pytest.fixture
def K():
    """The binding module (fails, not skips, when it cannot be imported)."""
    return require_kernels()


@pytest.fixture(autouse=True)
def _path_restored():
    """Every test must leave the active kernel path as it found it."""
    if kernels is None:
        yield
        return
    before = kernels.active_path()
    yield
    assert kernels.active_path() == before, "test left a different kernel path active"


@pytest.fixture(scope="session")
def torch():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    return torch

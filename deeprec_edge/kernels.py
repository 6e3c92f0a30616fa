"""The C kernels of deeprec-edge, for Python.

A thin layer over the C99 core (``csrc/include/deeprec_edge.h``): each
function checks its arrays, allocates outputs and workspace with numpy, and
calls the C kernel once with the GIL released (so kernels run in parallel
from several threads).

Conventions (docs/kernels-python.md has the full API):

- Arrays must be ``numpy.float32`` (indices ``numpy.int32``, masks
  ``numpy.uint8`` or ``bool``; item tables and step weights may also be
  ``float16`` or ``int8`` with per-row scales), C-contiguous, aligned, in native byte order,
  with the documented shape.  Nothing is converted or copied silently: a
  wrong dtype, shape or layout raises ``ValueError`` naming the argument,
  what was expected and what was got, e.g. ``x: expected float32 array of
  shape (T, B, I) C-contiguous, got float64 array of shape (3, 4)
  C-contiguous``.  Use ``numpy.ascontiguousarray(a, dtype=numpy.float32)``
  to convert on purpose.
- Outputs are freshly allocated unless an output array is passed;
  accumulators (weight gradients, optimiser state) are updated in place.
- Errors reported by the C core are mapped in one place: an index or length
  out of range -> ``IndexError`` (naming the array and the first bad entry);
  an unsupported kernel path -> ``RuntimeError``; anything else ->
  ``ValueError``.  Messages contain the function name and the C status text.
- NaN/Inf are not scanned for; they propagate and never crash.

Kernel paths: ``"scalar"`` (portable reference), ``"avx2"`` (x86-64 AVX2 +
FMA), ``"avx512"`` (x86-64 AVX-512F), ``"neon"`` (aarch64).  The best
supported path is chosen at first use; ``DEEPREC_EDGE_FORCE_SCALAR=1`` in the
environment pins the scalar path, and :func:`set_path` / :func:`forced_path`
switch at run time.

Example
-------
>>> import numpy as np
>>> from deeprec_edge import kernels as K
>>> rng = np.random.default_rng(0)
>>> I, H = 8, 16
>>> W_ih = rng.standard_normal((3 * H, I), dtype=np.float32)
>>> W_hh = rng.standard_normal((3 * H, H), dtype=np.float32)
>>> b = np.zeros(3 * H, np.float32)
>>> stepper = K.GruStepper(W_ih, W_hh, b, b)
>>> h = np.zeros(H, np.float32)
>>> _ = stepper.step(rng.standard_normal(I, dtype=np.float32), h, out=h)
>>> with K.forced_path("scalar"):
...     K.active_path()
'scalar'
"""
from __future__ import annotations

import contextlib
from typing import Iterator

from ._core import (
    C_API_VERSION,
    GruStepper,
    PackedI8,
    active_path,
    adagrad_rows,
    adagrad_step,
    adam_rows,
    adam_step,
    clip_by_global_norm,
    dequantize_rows,
    global_norm,
    gru_backward,
    gru_forward,
    gru_step,
    head_backward,
    head_forward,
    pack_rows_i8,
    sampled_loss,
    score,
    score_topk,
    set_path,
    sgd_rows,
    sgd_step,
    sgemm,
    supported_paths,
)

__all__ = [
    "C_API_VERSION",
    # paths
    "active_path",
    "supported_paths",
    "set_path",
    "forced_path",
    # linear algebra
    "sgemm",
    # GRU
    "gru_forward",
    "gru_backward",
    "gru_step",
    "GruStepper",
    # head
    "head_forward",
    "head_backward",
    # losses
    "sampled_loss",
    # scoring
    "score",
    "score_topk",
    "dequantize_rows",
    "pack_rows_i8",
    "PackedI8",
    # optimisers
    "adagrad_step",
    "adam_step",
    "sgd_step",
    "global_norm",
    "clip_by_global_norm",
    "adagrad_rows",
    "adam_rows",
    "sgd_rows",
]


@contextlib.contextmanager
def forced_path(name: str) -> Iterator[str]:
    """Run a block on the kernel path `name`, then restore the previous path.

    Parameters
    ----------
    name : str
        ``"scalar"``, ``"avx2"``, ``"avx512"`` or ``"neon"``.

    Yields
    ------
    str
        `name`.

    Raises
    ------
    ValueError
        Unknown name (nothing is changed).
    RuntimeError
        This CPU or build cannot run that path (nothing is changed).

    Notes
    -----
    The path is process-wide: do not switch it while other threads are
    running kernels.  The previous path is restored even if the block raises.

    Examples
    --------
    >>> from deeprec_edge import kernels as K
    >>> with K.forced_path("scalar"):
    ...     pass
    """
    previous = active_path()
    set_path(name)
    try:
        yield name
    finally:
        set_path(previous)

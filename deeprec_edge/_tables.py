"""Item tables as the runtime holds them: float32 arrays or compressed
(:class:`deeprec_edge.quant.Compressed`: float16, int8/int4/int3 with per-row
scales), behind the few operations the runtime needs -- never inflating a
whole compressed table to float32:

- :func:`score_topk`: the fused scoring + top-k kernel on the stored rows
  (int8 tables packed once for it: :func:`scoring_args`);
- :func:`take`: a candidate subset, still in the table's storage;
- :func:`matmul_t`: ``U @ table.T`` for a block of user vectors, over
  compressed rows dequantised a bounded block at a time (evaluation, the
  batch scorer of :mod:`deeprec_edge._scoring`).
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from . import kernels as K
from .quant import Compressed

__all__ = ["kernel_args", "scoring_args", "score_topk", "take", "matmul_t"]

#: Rows of a compressed table dequantised at once by :func:`matmul_t`.
BLOCK_ROWS = 4096


def kernel_args(table: Any) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """``(stored rows, per-row scales or None)`` as the kernels take them."""
    if isinstance(table, Compressed):
        return table.data, table.scale
    return table, None


def scoring_args(table: Any) -> Tuple[Any, Optional[np.ndarray]]:
    """:func:`kernel_args` for scoring: an int8 table as its packed form
    (:meth:`deeprec_edge.quant.Compressed.packed`; the same scores, faster)."""
    if isinstance(table, Compressed) and table.data.dtype == np.int8:
        return table.packed(), table.scale
    return kernel_args(table)


def score_topk(table: Any, u: np.ndarray, k: int, bias: Optional[np.ndarray] = None,
               idx: Optional[np.ndarray] = None, exclude: Optional[np.ndarray] = None):
    """:func:`deeprec_edge.kernels.score_topk` on a table of any storage."""
    data, scale = scoring_args(table)
    return K.score_topk(data, u, k, bias=bias, idx=idx, exclude=exclude, scale=scale)


def take(table: Any, rows: np.ndarray) -> Any:
    """Rows of a table in its own storage (contiguous)."""
    if isinstance(table, Compressed):
        return table.take(rows)
    return np.ascontiguousarray(table[np.asarray(rows, np.intp)])


def matmul_t(U: np.ndarray, table: Any) -> np.ndarray:
    """``U @ table.T`` (float32 [n, N]): sgemm on a float32 table; on a
    compressed one, over blocks of :data:`BLOCK_ROWS` dequantised rows."""
    U = np.ascontiguousarray(U, np.float32)
    if not isinstance(table, Compressed):
        return K.sgemm(U, table, trans_b=True)
    N = table.shape[0]
    out = np.empty((U.shape[0], N), np.float32)
    for a in range(0, N, BLOCK_ROWS):
        b = min(a + BLOCK_ROWS, N)
        rows = K.dequantize_rows(table.data, idx=np.arange(a, b, dtype=np.int32),
                                 scale=table.scale)
        out[:, a:b] = K.sgemm(U, rows, trans_b=True)
    return out

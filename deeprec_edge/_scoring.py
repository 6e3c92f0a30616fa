"""Scores of a model for many events at once: ``scale * (U O^T + b) + w . phi``.

The batch counterpart of what :class:`deeprec_edge.Session` and
:func:`deeprec_edge.recommend` compute one user at a time; every evaluation
(fine-tuning's held-out check, the trainer's validation and calibration,
``deeprec-train evaluate``) scores through :func:`score_block` and ranks
with :func:`deeprec_edge.ranking.target_ranks`.
"""
from __future__ import annotations

from typing import Iterator, Optional, Tuple

import numpy as np

from ._tables import matmul_t
from .ranking import target_ranks
from .repeat import RepeatSpec, feature_dot

__all__ = ["Events", "score_block", "iter_score_blocks", "rank_events", "block_rows"]

#: sparse repeat cells of a set of events: (rows, cols, phi)
Events = Tuple[np.ndarray, np.ndarray, np.ndarray]


def block_rows(n_cols: int, max_elems: int = 1 << 21) -> int:
    """Rows scored at once: at most ``max_elems`` scores (8 MB of float32)."""
    return max(1, min(4096, max_elems // max(n_cols, 1)))


def score_block(params, spec: Optional[RepeatSpec], U: np.ndarray, a: int, b: int,
                rep: Optional[Events] = None, table: Optional[np.ndarray] = None,
                bias: Optional[np.ndarray] = None) -> np.ndarray:
    """float32 scores of the events ``a:b`` (rows of ``U``) over every item
    (or over ``table``/``bias``, a gathered subset of rows; then ``rep``'s
    columns must index that subset).  ``rep``: the events' repeat cells,
    rows numbered over all of ``U``."""
    O = params.out_table if table is None else table
    bb = params.b_out if bias is None else bias
    S = matmul_t(U[a:b], O)       # a compressed table: a block of rows at a time
    S += bb
    if spec is not None and spec.scale != 1.0:
        S *= np.float32(spec.scale)
    if spec is not None and rep is not None and rep[0].size:
        rows, cols, phi = rep
        lo, hi = np.searchsorted(rows, [a, b]) if _sorted(rows) else (None, None)
        if lo is None:
            sel = (rows >= a) & (rows < b)
            r, c, f = rows[sel], cols[sel], phi[sel]
        else:
            r, c, f = rows[lo:hi], cols[lo:hi], phi[lo:hi]
        if r.size:
            S[r - a, c] += feature_dot(f, spec.weights).astype(np.float32)
    return S


def _sorted(a: np.ndarray) -> bool:
    return a.size < 2 or bool(np.all(a[1:] >= a[:-1]))


def iter_score_blocks(params, spec, U, rep=None, max_elems: int = 1 << 21
                      ) -> Iterator[Tuple[int, int, np.ndarray]]:
    """``(a, b, scores)`` over the rows of ``U`` in blocks of bounded size."""
    n = U.shape[0]
    step = block_rows(params.n_items, max_elems)
    for a in range(0, n, step):
        b = min(a + step, n)
        yield a, b, score_block(params, spec, U, a, b, rep)


def rank_events(params, spec: Optional[RepeatSpec], U: np.ndarray, targets: np.ndarray,
                rep: Optional[Events] = None, mask: Optional[np.ndarray] = None
                ) -> Tuple[np.ndarray, np.ndarray]:
    """Optimistic and conservative ranks (1 = best) of ``targets`` over the
    whole catalogue, or over the items ``mask`` (bool [N] or [n, N])
    selects."""
    n = U.shape[0]
    opt = np.empty(n, np.int64)
    con = np.empty(n, np.int64)
    for a, b, S in iter_score_blocks(params, spec, U, rep):
        m = None if mask is None else (mask if mask.ndim == 1 else mask[a:b])
        opt[a:b], con[a:b] = target_ranks(S, targets[a:b], mask=m)
    return opt, con

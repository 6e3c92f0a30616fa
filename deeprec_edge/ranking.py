"""The one ranking path: ranks of next-click targets and the metrics of ranks.

Every evaluation in deeprec-edge -- fine-tuning's held-out check, the
trainer's validation during ``fit``, ``deeprec-train evaluate`` and
``evaluate-sessions`` -- ranks targets with :func:`target_ranks` and turns
ranks into metrics with :func:`recall_at_k` / :func:`mrr_at_k` /
:func:`ndcg_at_k`.  numpy only.

Ranks (DESIGN.md section 9)
---------------------------
The rank of the target among the competing items (1 = best):

- **optimistic**: ``1 + #{j : s_j > s_t}`` -- only a strictly greater score
  ranks above the target (GRU4Rec's convention, and the runtime's "lower
  item index first" rule for equal scores gives the target the benefit);
- **conservative**: ``#{j : s_j >= s_t}`` (the target included) -- ties
  count against the target.

A large gap between the two means saturated or broken scores.

Non-finite scores (NaN, +inf, -inf) rank **last**: such an item never ranks
above a finite target, and a target whose own score is not finite gets the
worst rank (the number of competing items) under both conventions -- so a
model whose scores blew up can never look good.  The target's score is read
from the same score row as everyone else's (never recomputed another way),
so equal scores compare equal.

A target that is not among the competing items (a negative target, or one
masked out) gets :data:`RANK_MISS`, a miss at every cut-off.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

__all__ = [
    "RANK_MISS",
    "target_ranks",
    "recall_at_k",
    "mrr_at_k",
    "ndcg_at_k",
    "METRICS",
    "metric_values",
]

#: Rank of a target that is not among the competing items (a miss at any k).
RANK_MISS = np.iinfo(np.int64).max


def _block_rows(n_cols: int, max_block_elems: int) -> int:
    return max(1, int(max_block_elems // max(1, n_cols)))


def target_ranks(scores: np.ndarray, targets: Any, *, mask: Optional[np.ndarray] = None,
                 max_block_elems: int = 1 << 22) -> Tuple[np.ndarray, np.ndarray]:
    """``(optimistic, conservative)`` ranks (int64, 1 = best) of
    ``scores[b, targets[b]]`` within each row ``b``.

    ``scores``: (B, N) float array, or (N,) with a scalar target.
    ``targets``: (B,) column indices; negative = the target is not among the
    columns (:data:`RANK_MISS`).  ``mask``: optional (B, N) or (N,) bool,
    the columns competing in each row (a masked-out target is a miss).
    Rows are processed in blocks of at most ``max_block_elems`` scores, so
    memory stays bounded whatever B is.
    """
    S = np.asarray(scores)
    if S.ndim == 1:
        S = S[None, :]
    if S.ndim != 2:
        raise ValueError(f"scores must be 1-D or 2-D, got shape {S.shape}")
    if S.dtype.kind != "f":
        S = S.astype(np.float64)
    t = np.atleast_1d(np.asarray(targets)).astype(np.int64)
    B, N = S.shape
    if t.shape != (B,):
        raise ValueError(f"targets must have shape ({B},), got {t.shape}")
    if B and t.max(initial=-1) >= N:
        raise IndexError(f"target index {int(t.max())} out of range for {N} items")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.ndim == 1:
            mask = mask[None, :]
        if mask.shape[1] != N or mask.shape[0] not in (1, B):
            raise ValueError(f"mask must have shape ({B}, {N}) or ({N},), got {mask.shape}")
    opt = np.empty(B, np.int64)
    con = np.empty(B, np.int64)
    step = _block_rows(N, max_block_elems)
    for a in range(0, B, step):
        b = min(a + step, B)
        blk = S[a:b]
        tb = t[a:b]
        rows = np.arange(b - a)
        present = tb >= 0
        st = np.full(b - a, -np.inf, blk.dtype)
        st[present] = blk[rows[present], tb[present]]
        finite_t = np.isfinite(st)
        stc = st[:, None]
        # comparisons with non-finite scores: NaN compares False; +inf of an
        # other item must not count, so compare on the finite cells only
        fin = np.isfinite(blk)
        gt = (blk > stc) & fin
        ge = (blk >= stc) & fin
        if mask is None:
            n_comp = np.full(b - a, N, np.int64)
            in_set = present
        else:
            mb = mask if mask.shape[0] == 1 else mask[a:b]
            gt &= mb
            ge &= mb
            n_comp = np.broadcast_to(np.count_nonzero(mb, axis=1), (b - a,)).astype(np.int64)
            in_set = present.copy()
            in_set[present] = (mb[0, tb[present]] if mb.shape[0] == 1
                               else mb[rows[present], tb[present]])
        o = 1 + np.count_nonzero(gt, axis=1).astype(np.int64)
        c = np.count_nonzero(ge, axis=1).astype(np.int64)
        bad = in_set & ~finite_t
        o[bad] = n_comp[bad]
        c[bad] = n_comp[bad]
        o[~in_set] = RANK_MISS
        c[~in_set] = RANK_MISS
        opt[a:b], con[a:b] = o, c
    return opt, con


# ---------------------------------------------------------------------------
# per-event metrics from ranks (one relevant item)
# ---------------------------------------------------------------------------

def _ranks(ranks: Any) -> np.ndarray:
    r = np.asarray(ranks)
    if r.dtype.kind == "f":       # float ranks: inf / NaN = not ranked (a miss)
        out = np.full(r.shape, RANK_MISS, np.int64)
        fin = np.isfinite(r) & (r < 2.0 ** 62)
        out[fin] = r[fin].astype(np.int64)
        return out
    return r.astype(np.int64)


def recall_at_k(ranks: Any, k: int) -> np.ndarray:
    """``1[rank <= k]`` per event (float64): the hit rate."""
    return (_ranks(ranks) <= k).astype(np.float64)


def mrr_at_k(ranks: Any, k: int) -> np.ndarray:
    """``1/rank`` if ``rank <= k`` else 0, per event (float64)."""
    r = _ranks(ranks)
    hit = r <= k
    out = np.zeros(r.shape, np.float64)
    out[hit] = 1.0 / r[hit]
    return out


def ndcg_at_k(ranks: Any, k: int) -> np.ndarray:
    """``1/log2(rank + 1)`` if ``rank <= k`` else 0, per event (the ideal DCG is 1)."""
    r = _ranks(ranks)
    hit = r <= k
    out = np.zeros(r.shape, np.float64)
    out[hit] = 1.0 / np.log2(r[hit] + 1.0)
    return out


#: metric name -> per-event function of (ranks, k); next-item MAP@k equals MRR@k
METRICS = {"recall": recall_at_k, "mrr": mrr_at_k, "ndcg": ndcg_at_k, "map": mrr_at_k}


def metric_values(ranks: Any, metric: str, k: int) -> np.ndarray:
    """Per-event values of ``metric`` (recall, mrr, ndcg, map) at ``k``."""
    try:
        fn = METRICS[metric]
    except KeyError:
        raise ValueError(f"unknown metric {metric!r}; choose from {sorted(METRICS)}") from None
    return fn(ranks, k)

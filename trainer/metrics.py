"""Ranking metrics for next-item evaluation (DESIGN.md §6, §9).

Ranks
-----
Ranks come from the runtime's one ranking path,
:func:`deeprec_edge.ranking.target_ranks` (1 = best): **optimistic**
``1 + #{j : s_j > s_target}`` (GRU4Rec's default) and **conservative**
``#{j : s_j >= s_target}`` (ties count against the target).  A large gap
between the two means saturated or broken scores.  Non-finite scores (NaN,
+-inf) rank last: never above a finite target, and a non-finite target gets
the worst rank (the number of competing items) under both conventions.  A
target outside the competing set (``targets[b] < 0`` or masked out) gets
:data:`RANK_MISS`, which every @k metric counts as a miss.  Ranks are
computed over row blocks of bounded size, and :class:`RankAccumulator`
keeps only ranks (8 bytes per event and convention) across batches, so
full-catalogue ranking of any number of events needs memory for one score
batch only.

Metrics per event from the rank ``r`` (one relevant item)
--------------------------------------------------------
- ``Recall@k = 1[r <= k]`` (hit rate; with one relevant item recall and
  hit rate coincide);
- ``MRR@k = 1/r if r <= k else 0``;
- ``NDCG@k = 1/log2(r + 1) if r <= k else 0`` (the ideal DCG is 1);
- ``MAP@k`` (next item): average precision of the top-k list with one
  relevant item is ``precision@r = 1/r`` if ``r <= k`` else 0, divided by
  ``min(k, 1) = 1`` -- so next-item MAP@k equals MRR@k.  It is reported
  under its own name for comparison with the two-stage (candidates +
  ranking) literature.

MAP@k for multi-item test sets
------------------------------
When a user's whole test set ``R`` (``m = |R|`` items) is relevant to one
ranking, ``AP@k = (1 / min(k, m)) * sum_{i <= k} P(i) * rel(i)`` where
``P(i)`` is the precision of the first ``i`` positions (the ``ml_metrics``
/ Kaggle convention); ``MAP@k`` averages AP@k over users.  Positions of the
relevant items follow the tie conventions: under *optimistic* a relevant
item is placed before every non-relevant item it ties with, under
*conservative* after them; relevant items among themselves take
consecutive positions, so precision never exceeds 1.
:func:`average_precision_at_k` computes this from scores,
:func:`average_precision_from_lists` from ranked top-k lists.

Averages and intervals
----------------------
:func:`summarize` averages each metric first within each user, then over
users (every user weighs the same; ``users=None`` makes each event its own
unit) and reports a 95% interval over the units: ``"normal"`` = mean +- z *
sd / sqrt(n) (sd with ddof 1, z = 1.96 for 95%; the central limit theorem
over users), or ``"bootstrap"`` = percentile interval of the mean over
``n_boot`` resamples of the units with replacement (seeded, deterministic).
With fewer than two units the interval is NaN.  The event-level (micro)
mean is reported beside it.
"""
from __future__ import annotations

from statistics import NormalDist
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from deeprec_edge.ranking import (METRICS, RANK_MISS, _ranks, metric_values, mrr_at_k, ndcg_at_k,
                                  recall_at_k, target_ranks)

__all__ = [
    "RANK_MISS",
    "METRICS",
    "ranks_from_scores",
    "recall_at_k",
    "mrr_at_k",
    "ndcg_at_k",
    "map_at_k",
    "metric_values",
    "average_precision_at_k",
    "average_precision_from_lists",
    "per_user_mean",
    "mean_ci",
    "summarize",
    "RankAccumulator",
]

_TIES = ("optimistic", "conservative", "both")


def ranks_from_scores(scores: np.ndarray, targets: Any, *, ties: str = "optimistic",
                      mask: Optional[np.ndarray] = None,
                      max_block_elems: int = 1 << 22) -> Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
    """Rank (1 = best, int64) of ``scores[b, targets[b]]`` within row b --
    :func:`deeprec_edge.ranking.target_ranks` (the one ranking path) with a
    choice of tie rule: ``"optimistic"``, ``"conservative"`` or ``"both"``
    (returns a pair)."""
    if ties not in _TIES:
        raise ValueError(f"ties must be one of {_TIES}, got {ties!r}")
    opt, con = target_ranks(scores, targets, mask=mask, max_block_elems=max_block_elems)
    if ties == "optimistic":
        return opt
    if ties == "conservative":
        return con
    return opt, con


def map_at_k(ranks: Any, k: int) -> np.ndarray:
    """Next-item average precision at k: ``1/rank`` if ``rank <= k`` (= MRR@k)."""
    return mrr_at_k(ranks, k)


# ---------------------------------------------------------------------------
# multi-item average precision
# ---------------------------------------------------------------------------

def _ap_from_positions(pos: np.ndarray, m: int, k: int) -> float:
    """pos: 1-based positions of the m relevant items, ascending."""
    if m == 0:
        return float("nan")
    j = np.arange(1, len(pos) + 1)
    hit = pos <= k
    return float(np.sum(j[hit] / pos[hit]) / min(k, m))


def average_precision_at_k(scores: np.ndarray, relevant: Sequence[Any], k: int, *,
                           ties: str = "optimistic") -> np.ndarray:
    """AP@k per row of ``scores`` (B, N) with the row's relevant item codes.

    Users with no relevant item get NaN (leave them out of the mean).  See
    the module docstring for the definition and the tie conventions."""
    if ties not in ("optimistic", "conservative"):
        raise ValueError(f"ties must be 'optimistic' or 'conservative', got {ties!r}")
    S = np.asarray(scores, dtype=np.float64)
    if S.ndim == 1:
        S = S[None, :]
        relevant = [relevant]
    if len(relevant) != S.shape[0]:
        raise ValueError(f"relevant has {len(relevant)} rows, scores {S.shape[0]}")
    N = S.shape[1]
    out = np.empty(S.shape[0], np.float64)
    for b in range(S.shape[0]):
        rel = np.unique(np.asarray(relevant[b], dtype=np.int64))
        m = len(rel)
        if m == 0:
            out[b] = np.nan
            continue
        if rel.min() < 0 or rel.max() >= N:
            raise IndexError(f"relevant item out of range [0, {N}) in row {b}")
        row = np.where(np.isnan(S[b]), -np.inf, S[b])
        s_rel = S[b, rel]
        is_rel = np.zeros(N, bool)
        is_rel[rel] = True
        others = np.sort(row[~is_rel])
        # relevant items in score order (NaN last), ties among them by code
        order = np.lexsort((rel, -np.where(np.isnan(s_rel), -np.inf, s_rel)))
        s_sorted = s_rel[order]
        if ties == "optimistic":
            above = len(others) - np.searchsorted(others, s_sorted, side="right")
        else:
            above = len(others) - np.searchsorted(others, s_sorted, side="left")
        above = np.where(np.isnan(s_sorted), len(others), above)
        pos = above + np.arange(1, m + 1)
        out[b] = _ap_from_positions(np.maximum.accumulate(pos), m, k)
    return out


def average_precision_from_lists(recommended: Any, relevant: Sequence[Any], k: int) -> np.ndarray:
    """AP@k of ranked lists (rows of item codes, best first, ``-1`` padding)
    against each row's relevant set; NaN for an empty relevant set."""
    rec = [np.asarray(r, dtype=np.int64) for r in recommended]
    if len(rec) != len(relevant):
        raise ValueError(f"recommended has {len(rec)} rows, relevant {len(relevant)}")
    out = np.empty(len(rec), np.float64)
    for b, (r, rel) in enumerate(zip(rec, relevant)):
        rel = np.unique(np.asarray(rel, dtype=np.int64))
        if len(rel) == 0:
            out[b] = np.nan
            continue
        top = r[:k]
        # an item listed twice counts once (its first position)
        _, first = np.unique(top, return_index=True)
        once = np.zeros(len(top), bool)
        once[first] = True
        hit = np.isin(top, rel) & once & (top >= 0)
        pos = np.flatnonzero(hit) + 1
        out[b] = _ap_from_positions(pos.astype(np.float64), len(rel), k)
    return out


# ---------------------------------------------------------------------------
# averaging and intervals
# ---------------------------------------------------------------------------

def per_user_mean(values: Any, users: Any) -> Tuple[np.ndarray, np.ndarray]:
    """(sorted distinct users, mean of `values` per user); NaN values ignored."""
    v = np.asarray(values, dtype=np.float64)
    u = np.asarray(users)
    if v.shape != u.shape:
        raise ValueError(f"values {v.shape} and users {u.shape} differ in shape")
    ok = ~np.isnan(v)
    uniq, inv = np.unique(u[ok], return_inverse=True)
    sums = np.bincount(inv, weights=v[ok], minlength=len(uniq))
    cnt = np.bincount(inv, minlength=len(uniq))
    return uniq, sums / np.maximum(cnt, 1)


def mean_ci(values: Any, *, method: str = "normal", level: float = 0.95, n_boot: int = 1000,
            seed: int = 0) -> Tuple[float, float, float]:
    """(mean, low, high) of `values` (NaN ignored) with a `level` interval:
    ``"normal"`` (mean +- z sd / sqrt(n)) or ``"bootstrap"`` (percentile,
    `n_boot` resamples, seeded)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    n = len(v)
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(v.mean())
    if n < 2:
        return mean, float("nan"), float("nan")
    if method == "normal":
        z = NormalDist().inv_cdf(0.5 + level / 2.0)
        half = z * float(v.std(ddof=1)) / float(np.sqrt(n))
        return mean, float(mean - half), float(mean + half)
    if method == "bootstrap":
        rng = np.random.default_rng(seed)
        means = np.empty(n_boot, np.float64)
        step = max(1, (1 << 22) // n)
        for a in range(0, n_boot, step):
            b = min(a + step, n_boot)
            idx = rng.integers(0, n, size=(b - a, n))
            means[a:b] = v[idx].mean(axis=1)
        lo, hi = np.quantile(means, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
        return mean, float(lo), float(hi)
    raise ValueError(f"method must be 'normal' or 'bootstrap', got {method!r}")


def summarize(ranks: Any, *, users: Any = None, ks: Sequence[int] = (5, 10, 20),
              metrics: Sequence[str] = ("recall", "mrr", "ndcg", "map"), ci: str = "normal",
              level: float = 0.95, n_boot: int = 1000, seed: int = 0) -> Dict[str, Any]:
    """Metric summary of per-event ranks.

    Returns ``{"n_events", "n_units", "unit", "<metric>@<k>": {"mean", "ci_low",
    "ci_high", "event_mean"}}`` where ``mean`` is the per-user average (unit
    = user; ``users=None``: unit = event) and ``[ci_low, ci_high]`` its
    `level` interval (``ci``: normal or bootstrap)."""
    r = _ranks(ranks)
    out: Dict[str, Any] = {"n_events": int(len(r))}
    if users is not None:
        u = np.asarray(users)
        if u.shape != r.shape:
            raise ValueError(f"users {u.shape} and ranks {r.shape} differ in shape")
        s = np.sort(u)
        out["n_units"] = int(np.count_nonzero(s[1:] != s[:-1]) + 1) if len(s) else 0
        out["unit"] = "user"
    else:
        out["n_units"] = int(len(r))
        out["unit"] = "event"
    for name in metrics:
        for k in ks:
            vals = metric_values(r, name, int(k))
            unit_vals = per_user_mean(vals, users)[1] if users is not None else vals
            mean, lo, hi = mean_ci(unit_vals, method=ci, level=level, n_boot=n_boot, seed=seed)
            out[f"{name}@{k}"] = {"mean": mean, "ci_low": lo, "ci_high": hi,
                                  "event_mean": float(vals.mean()) if len(vals) else float("nan")}
    return out


class RankAccumulator:
    """Collects ranks batch by batch (both tie conventions) and summarises them.

    ``add_scores`` ranks one batch of score rows (memory: that batch);
    ``add_ranks`` takes ranks computed elsewhere (e.g. by the C core's
    top-k).  Only ranks and user codes are kept.
    """

    def __init__(self) -> None:
        self._opt: List[np.ndarray] = []
        self._con: List[np.ndarray] = []
        self._users: List[np.ndarray] = []
        self._has_users: Optional[bool] = None

    def _check_users(self, users: Any, n: int) -> None:
        has = users is not None
        if self._has_users is None:
            self._has_users = has
        elif self._has_users != has:
            raise ValueError("give users for every batch or for none")
        if has:
            u = np.asarray(users, dtype=np.int64)
            if u.shape != (n,):
                raise ValueError(f"users must have shape ({n},), got {u.shape}")
            self._users.append(u)

    def add_scores(self, scores: np.ndarray, targets: Any, users: Any = None,
                   mask: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
        """Rank a batch; returns its (optimistic, conservative) ranks."""
        o, c = ranks_from_scores(scores, targets, ties="both", mask=mask)
        self._check_users(users, len(o))
        self._opt.append(o)
        self._con.append(c)
        return o, c

    def add_ranks(self, optimistic: Any, conservative: Any = None, users: Any = None) -> None:
        """Add events: their ranks under both tie rules (``conservative``
        None: the same) and, for per-user means, each event's user."""
        o = _ranks(optimistic).reshape(-1)
        c = o if conservative is None else _ranks(conservative).reshape(-1)
        if c.shape != o.shape:
            raise ValueError("optimistic and conservative ranks differ in length")
        if np.any(c < o):
            raise ValueError("conservative ranks must be >= optimistic ranks")
        self._check_users(users, len(o))
        self._opt.append(o)
        self._con.append(c)

    def __len__(self) -> int:
        return int(sum(len(o) for o in self._opt))

    @property
    def optimistic(self) -> np.ndarray:
        """Every event's rank with ties counted in the target's favour."""
        return np.concatenate(self._opt) if self._opt else np.empty(0, np.int64)

    @property
    def conservative(self) -> np.ndarray:
        """Every event's rank with ties counted against the target."""
        return np.concatenate(self._con) if self._con else np.empty(0, np.int64)

    @property
    def users(self) -> Optional[np.ndarray]:
        """Every event's user (None when events were added without users)."""
        if not self._has_users:
            return None
        return np.concatenate(self._users) if self._users else np.empty(0, np.int64)

    def summary(self, **kwargs: Any) -> Dict[str, Any]:
        """``{"optimistic": summarize(...), "conservative": summarize(...)}``;
        keyword arguments go to :func:`summarize`."""
        u = self.users
        return {"optimistic": summarize(self.optimistic, users=u, **kwargs),
                "conservative": summarize(self.conservative, users=u, **kwargs)}

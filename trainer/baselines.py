"""Non-GRU next-item baselines behind one interface.

Every method ranks the whole catalogue (item codes ``0..N-1`` of the training
log) for the click after a given position of one user's (or one session's)
click sequence::

    b = make_baseline("v-sknn").fit(train)          # train: an Interactions log
    S = b.score(seq, session_start, positions)      # (len(positions), N) float64

Row ``r`` of ``S`` predicts the click after ``seq[positions[r]]`` and depends
only on ``seq[:positions[r] + 1]`` (and ``session_start`` up to there) plus the
fitted training log; higher is better.

==============  ==============================================================
name            score of item ``j`` (``l`` = the last click, ``seq[p]``)
==============  ==============================================================
popularity      training support of ``j``
cooccurrence    number of training sessions holding both ``l`` and ``j``
                (``l`` itself included, so a repeat click is a hit)
item-knn        GRU4Rec's ItemKNN: similarity of ``j`` to ``l``
sknn            session-rec's ContextKNN (session-based kNN)
v-sknn          session-rec's VMContextKNN (vector-multiplication SKNN)
recency         the user's own items, recency-weighted
==============  ==============================================================

Ties and finite scores
----------------------
Every score is finite.  Items a method cannot separate are ordered by the
training popularity ``pop`` (``fit(..., popularity=)``, default the training
support), by adding ``res * 0.5 * pop_j / (max(pop) + 1)`` -- less than half
the method's resolution ``res`` -- to the method's own score:

- integer-valued scores (``cooccurrence``) have ``res = 1``, so this is exactly
  the tie-break of the co-occurrence baseline the evaluation used so far;
- real-valued scores (``item-knn``, ``sknn``, ``v-sknn``, ``recency``) use
  ``res = 2**-26`` times the row's largest absolute score (rounded up to a
  power of two): values closer than that count as equal and are ordered by
  popularity, every larger difference is kept.

So the optimistic and conservative ranks of a target differ only when items
have exactly equal popularity (and equal scores).  ``popularity`` is its own
tie-break.

Input conventions
-----------------
``seq``: integer item codes in time order; ``session_start``: bool per click,
True where a session starts (the first click always starts one);
``positions``: int indices into ``seq``, any order, repeats allowed.
Memory of one call: the ``(len(positions), N)`` float64 result; call in
blocks of positions for large catalogues.
"""
from __future__ import annotations

import inspect
import math
from typing import Any, Callable, Dict, Optional, Tuple, Type

import numpy as np
import scipy.sparse as sp

from .data import Interactions

__all__ = [
    "Baseline",
    "Popularity",
    "Cooccurrence",
    "ItemKNN",
    "SKNN",
    "VSKNN",
    "Recency",
    "BASELINES",
    "make_baseline",
]

#: Real-valued scores are resolved to this many bits below the row's largest
#: score; smaller differences are ties, ordered by popularity.
RESOLUTION_BITS = 26
#: Bound on the intermediate sparse entries of one block of rows (kNN methods).
_BLOCK_ENTRIES = 4_000_000
#: V-SKNN finds each neighbour's newest shared click from a sum of 4**(position -
#: length) while that stays a normal float64; longer sessions take an exact lookup.
_MAX_POW4_LENGTH = 500


# ---------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------

def _session_matrix(train: Interactions, counts: bool = False) -> sp.csr_matrix:
    """(sessions x items) float64 CSR in session order: 1 where the session
    holds the item (``counts=True``: the number of its clicks on the item)."""
    s = train.sessions
    n = len(s)
    units = np.cumsum(np.r_[True, s[1:] != s[:-1]]) - 1 if n else np.zeros(0, np.int64)
    n_units = int(units[-1]) + 1 if n else 0
    X = sp.csr_matrix((np.ones(n, np.float64), (units, train.items.astype(np.int64))),
                      shape=(n_units, train.n_items))
    X.sum_duplicates()
    if not counts:
        X.data[:] = 1.0
    X.sort_indices()
    return X


def _resolution(row_max: np.ndarray) -> np.ndarray:
    """``2**-RESOLUTION_BITS`` times the row maximum rounded up to a power of two
    (1 for rows without a positive score)."""
    res = np.ones(len(row_max))
    pos = row_max > 0
    if pos.any():
        e = np.ceil(np.log2(row_max[pos]))
        res[pos] = np.exp2(e - RESOLUTION_BITS)
    return res


def _dense_with_ties(primary: sp.spmatrix, half_tie: np.ndarray,
                     res: Optional[np.ndarray] = None) -> np.ndarray:
    """Dense ``primary + res[:, None] * half_tie[None, :]``; ``res=None``: the
    real-valued resolution of each row (:func:`_resolution` of its largest
    absolute score).  ``primary`` must hold no duplicate entries (sparse
    products and CSR matrices built from triplets have none)."""
    P = primary.tocsr()
    B = P.shape[0]
    rows = np.repeat(np.arange(B), np.diff(P.indptr))
    if res is None:
        m = np.zeros(B)
        np.maximum.at(m, rows, np.abs(P.data))
        res = _resolution(m)
    S = res[:, None] * half_tie[None, :]
    S[rows, P.indices] += P.data
    return S


def _group_rank(group: np.ndarray) -> np.ndarray:
    """Position of each element within its run of equal ``group`` values
    (``group`` sorted into runs)."""
    n = len(group)
    if n == 0:
        return np.zeros(0, np.int64)
    start = np.r_[True, group[1:] != group[:-1]]
    first = np.flatnonzero(start)
    return np.arange(n) - np.repeat(first, np.diff(np.r_[first, n]))


def _top_per_row(rows: np.ndarray, k: int, *keys: np.ndarray) -> np.ndarray:
    """Indices of the first ``k`` entries of each row when the entries of a row
    are sorted by ``keys`` (most significant first, each ascending: negate a
    key to prefer large values); rows in ascending order."""
    order = np.lexsort(tuple(reversed(keys)) + (rows,))
    return order[_group_rank(rows[order]) < k]


def _blocks(cost: np.ndarray, budget: int):
    """Consecutive index ranges whose summed cost stays within ``budget`` (>= 1 index)."""
    n = len(cost)
    cum = np.cumsum(cost, dtype=np.float64)
    a = 0
    while a < n:
        base = cum[a - 1] if a else 0.0
        b = max(int(np.searchsorted(cum, base + budget, side="right")), a + 1)
        yield a, min(b, n)
        a = b


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _check_float(name: str, value: Any, low: float, high: float = math.inf, *,
                 low_open: bool = False, high_open: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(v) or v < low or v > high \
            or (low_open and v == low) or (high_open and v == high):
        lo = "(" if low_open else "["
        hi = ")" if high_open or high == math.inf else "]"
        raise ValueError(f"{name} must be in {lo}{low}, {high}{hi}, got {value!r}")
    return v


def _choice(name: str, value: Any, allowed: Tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
    return value


# ---------------------------------------------------------------------------
# the interface
# ---------------------------------------------------------------------------

class Baseline:
    """A next-item method fitted on a training log; see the module docstring.

    Subclasses implement ``_fit(train)`` and ``_score(seq, starts, positions)``
    (inputs already checked) and set ``name``.  ``options`` holds the
    constructor's settings (for reports).
    """

    name: str = ""

    def __init__(self) -> None:
        self.options: Dict[str, Any] = {}
        self.n_items: Optional[int] = None
        self.popularity: Optional[np.ndarray] = None
        self._half_tie: Optional[np.ndarray] = None

    # -- fitting ------------------------------------------------------------
    def fit(self, train: Interactions, popularity: Optional[np.ndarray] = None) -> "Baseline":
        """Fit on the training log (its item codes ``0..N-1`` are the catalogue).

        ``popularity``: per item code, finite and >= 0 (default: the training
        support); ranks the ``popularity`` method and breaks every method's ties.
        """
        if not isinstance(train, Interactions):
            raise TypeError(f"train must be an Interactions log, got {type(train).__name__}")
        N = train.n_items
        if N == 0:
            raise ValueError("the training log has an empty item vocabulary")
        if popularity is None:
            pop = train.item_support().astype(np.float64)
        else:
            pop = np.asarray(popularity)
            if pop.dtype.kind not in "iuf" or pop.shape != (N,):
                raise ValueError(f"popularity must be a numeric array of shape ({N},) (one value "
                                 f"per item code), got dtype {pop.dtype} and shape {pop.shape}")
            pop = pop.astype(np.float64)
            if not np.all(np.isfinite(pop)) or np.any(pop < 0):
                raise ValueError("popularity must be finite and >= 0")
        self.n_items = N
        self.popularity = pop
        # exactly the co-occurrence baseline's historical tie-break term
        self._half_tie = 0.5 * pop / (pop.max() + 1.0)
        self._fit(train)
        return self

    def _fit(self, train: Interactions) -> None:
        pass

    # -- scoring ------------------------------------------------------------
    def score(self, seq: np.ndarray, session_start: np.ndarray,
              positions: np.ndarray) -> np.ndarray:
        """Scores ``(len(positions), N)`` float64 of the click after each
        position; row ``r`` uses only ``seq[:positions[r] + 1]``."""
        if self.n_items is None:
            raise RuntimeError(f"{type(self).__name__}: call fit(train) before score()")
        seq, starts, pos = self._check_query(seq, session_start, positions)
        if len(pos) == 0:
            return np.zeros((0, self.n_items))
        out = self._score(seq, starts, pos)
        assert out.shape == (len(pos), self.n_items) and out.dtype == np.float64
        return out

    def _check_query(self, seq: Any, session_start: Any, positions: Any
                     ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        N = self.n_items
        seq = np.asarray(seq)
        if seq.ndim != 1 or seq.dtype.kind not in "iu":
            raise ValueError(f"seq must be a 1-D integer array of item codes, got dtype {seq.dtype} "
                             f"and shape {seq.shape}")
        if len(seq) and (seq.min() < 0 or seq.max() >= N):
            bad = seq[(seq < 0) | (seq >= N)][0]
            raise ValueError(f"seq holds item code {bad}, outside the catalogue 0..{N - 1}")
        starts = np.asarray(session_start)
        if starts.shape != seq.shape:
            raise ValueError(f"session_start must have the shape of seq {seq.shape}, "
                             f"got {starts.shape}")
        if starts.dtype != bool:
            if starts.dtype.kind not in "iu" or (len(starts) and not np.isin(starts, (0, 1)).all()):
                raise ValueError(f"session_start must be booleans, got dtype {starts.dtype}")
            starts = starts.astype(bool)
        pos = np.asarray(positions)
        if pos.ndim != 1 or (pos.dtype.kind not in "iu" and len(pos)):
            raise ValueError(f"positions must be a 1-D integer array, got dtype {pos.dtype} "
                             f"and shape {pos.shape}")
        pos = pos.astype(np.int64)
        if len(pos) and (pos.min() < 0 or pos.max() >= len(seq)):
            raise ValueError(f"positions must index seq (0..{len(seq) - 1}), got values in "
                             f"[{pos.min()}, {pos.max()}]")
        return seq.astype(np.int64), starts, pos

    def _score(self, seq: np.ndarray, starts: np.ndarray, pos: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({opts})"


def _session_begin(starts: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Index of the first click of the session holding each position."""
    idx = np.where(starts, np.arange(len(starts)), 0)
    return np.maximum.accumulate(idx)[pos]


# ---------------------------------------------------------------------------
# popularity and co-occurrence
# ---------------------------------------------------------------------------

class Popularity(Baseline):
    """``score(j) = pop_j``: the training support of ``j`` (or the given
    ``popularity``), the same for every position.  GRU4Rec's ``Pop``
    (baselines.py) ranks the same way (``supp / (supp + 1)``)."""

    name = "popularity"

    def _score(self, seq, starts, pos):
        return np.repeat(self.popularity[None, :], len(pos), axis=0)


class Cooccurrence(Baseline):
    """``score(j) = |{training sessions s : l in s and j in s}|`` for the last
    click ``l`` -- including ``j = l`` (its own session count, the largest), so
    a repeat click is a hit -- plus the popularity tie-break (< 0.5).

    This is the evaluation's former "item-knn" with ``knn_score="count"``
    (``_Scorer`` in trainer/evaluate.py), under an honest name: a count of
    shared sessions, not a nearest-neighbour similarity.  Computed exactly per
    block of rows as ``X[:, l]^T X`` with the binary session x item matrix.
    """

    name = "cooccurrence"

    def _fit(self, train):
        self._X = _session_matrix(train)
        self._XT = self._X.T.tocsr()
        # entries of one row: the lengths of the item's sessions, plus the dense row
        self._cost = self._XT @ np.diff(self._X.indptr).astype(np.float64) + self.n_items

    def _score(self, seq, starts, pos):
        last = seq[pos]
        out = np.empty((len(pos), self.n_items))
        for a, b in _blocks(self._cost[last], _BLOCK_ENTRIES):
            counts = self._XT[last[a:b]] @ self._X
            out[a:b] = _dense_with_ties(counts, self._half_tie, np.ones(b - a))
        return out


# ---------------------------------------------------------------------------
# GRU4Rec's ItemKNN
# ---------------------------------------------------------------------------

class ItemKNN(Baseline):
    """GRU4Rec's item-kNN baseline (hidasib/GRU4Rec, ``baselines.py``, class
    ``ItemKNN``, methods ``fit`` and ``predict_next``), exactly:

    - ``C_ij = sum over the training clicks e on item i of 1[j in session(e)]``
      (GRU4Rec loops over the events of ``i``; an item clicked twice in a
      session counts that session twice);
    - ``supp_i`` = number of training clicks on ``i``;
    - ``sim_ij = C_ij / ((supp_i + lmbd)**alpha * (supp_j + lmbd)**(1 - alpha))``,
      ``sim_ii = 0`` (never the item itself); ``alpha = 0.5`` is cosine
      similarity, ``1`` the confidence of an association rule;
    - each item keeps its ``n_sims`` most similar items; the score of ``j``
      after the last click ``l`` is ``sim_lj`` if ``j`` is among them, else 0.

    Defaults are GRU4Rec's: ``n_sims=100, lmbd=20, alpha=0.5``.  Where
    GRU4Rec's ``argsort`` cuts ties at the ``n_sims`` boundary arbitrarily,
    this keeps the more popular item, then the lower code -- the order the
    tie-break gives them anyway.  (The issue text writes the normaliser as
    ``supp_i**alpha * supp_j**(1-alpha) + lmbd``; the source puts ``lmbd``
    inside both powers, as here.)

    The neighbour table is computed at ``fit`` in blocks of items, in memory
    bounded by about ``_BLOCK_ENTRIES`` co-occurrence entries plus
    ``N * n_sims`` neighbours.
    """

    name = "item-knn"

    def __init__(self, n_sims: int = 100, lmbd: float = 20.0, alpha: float = 0.5):
        super().__init__()
        self.n_sims = _check_int("n_sims", n_sims, 1)
        self.lmbd = _check_float("lmbd", lmbd, 0.0)
        self.alpha = _check_float("alpha", alpha, 0.0, 1.0)
        self.options = {"n_sims": self.n_sims, "lmbd": self.lmbd, "alpha": self.alpha}

    def _fit(self, train):
        N = self.n_items
        Xc = _session_matrix(train, counts=True)       # clicks per (session, item)
        Xb = _session_matrix(train)                     # 1 per (session, item)
        XcT = Xc.T.tocsr()
        supp = train.item_support().astype(np.float64)
        pa = np.power(supp + self.lmbd, self.alpha)
        pb = np.power(supp + self.lmbd, 1.0 - self.alpha)
        # entries of row i of C are bounded by the lengths of i's sessions
        sess_len = np.diff(Xb.indptr).astype(np.float64)
        cost = (Xb.T.tocsr() @ sess_len) + 1.0
        rows_out, cols_out, vals_out = [], [], []
        for a, b in _blocks(cost, _BLOCK_ENTRIES):
            C = (XcT[a:b] @ Xb).tocoo()
            i = C.row.astype(np.int64) + a
            j = C.col.astype(np.int64)
            keep = (i != j) & (C.data > 0)
            i, j, c = i[keep], j[keep], C.data[keep]
            norm = pa[i] * pb[j]
            norm[norm == 0] = 1.0
            sim = c / norm
            # by similarity, then popularity, then the lower code
            top = _top_per_row(i, self.n_sims, -sim, -self._half_tie[j], j)
            rows_out.append(i[top])
            cols_out.append(j[top])
            vals_out.append(sim[top])
        rows = np.concatenate(rows_out) if rows_out else np.zeros(0, np.int64)
        cols = np.concatenate(cols_out) if cols_out else np.zeros(0, np.int64)
        vals = np.concatenate(vals_out) if vals_out else np.zeros(0)
        self.similarities = sp.csr_matrix((vals, (rows, cols)), shape=(N, N))

    def _score(self, seq, starts, pos):
        return _dense_with_ties(self.similarities[seq[pos]], self._half_tie)


# ---------------------------------------------------------------------------
# session-based kNN (session-rec's ContextKNN and VMContextKNN)
# ---------------------------------------------------------------------------

def _expand(begin: np.ndarray, length: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For rows with clicks ``begin[r] .. begin[r] + length[r] - 1``: (row, click
    index, 1-based position within the row) of every click."""
    total = int(length.sum())
    row = np.repeat(np.arange(len(begin)), length)
    within = np.arange(total) - np.repeat(np.cumsum(length) - length, length)
    return row, np.repeat(begin, length) + within, within + 1


def _lookup(sorted_keys: np.ndarray, values: np.ndarray, keys: np.ndarray, missing: float
            ) -> np.ndarray:
    """``values`` at ``keys`` in ``sorted_keys`` (``missing`` where absent)."""
    out = np.full(len(keys), missing, dtype=np.float64)
    if len(sorted_keys) == 0 or len(keys) == 0:
        return out
    p = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    hit = sorted_keys[p] == keys
    out[hit] = values[p[hit]]
    return out


#: session-rec's position weights of the current session's clicks
#: (``VMContextKNN.same/div/linear/log/quadratic(i, length)``, i = 1-based position).
_POSITION_WEIGHTS: Dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "same": lambda i, n: np.ones(len(i)),
    "div": lambda i, n: i / n,
    "linear": lambda i, n: np.where(i <= 10, 1.0 - 0.1 * (n - i), 0.0),
    "log": lambda i, n: 1.0 / np.log10((n - i) + 1.7),
    "quadratic": lambda i, n: (i / n) ** 2,
}
#: session-rec's decay of a neighbour by the recency of the newest shared click
#: (``VMContextKNN.*_score(step)``, step = 1 for the last click).
_SCORE_DECAYS: Dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "same": lambda s: np.ones(len(s)),
    "div": lambda s: 1.0 / s,
    "linear": lambda s: np.where(s <= 100, 1.0 - 0.1 * s, 0.0),
    "log": lambda s: 1.0 / np.log10(s + 1.7),
    "quadratic": lambda s: 1.0 / (s * s),
}


class _SessionKNN(Baseline):
    """Shared machinery of :class:`SKNN` and :class:`VSKNN`.

    Training sessions are ranked by recency: the time of their last click,
    then their session number (later rows first on equal times).  An inverted
    index keeps, per item, its ``sample_size`` most recent sessions: the
    ``sample_size`` most recent sessions holding any item of the current
    session are always among them, so the sample is exact.  Per block of
    rows: ``A = Q T`` (current sessions x training sessions: shared items),
    the sample, similarities, the top ``k`` neighbours (ties: the more recent
    session) and the item scores ``W X`` -- all sparse products.
    """

    _SIMILARITIES: Tuple[str, ...] = ()

    def __init__(self, k: int, sample_size: int, sampling: str, similarity: str):
        super().__init__()
        self.k = _check_int("k", k, 1)
        self.sample_size = _check_int("sample_size", sample_size, 0)
        if sampling != "recent":
            raise ValueError(f"sampling must be 'recent' (session-rec's 'random' sampling is not "
                             f"reproducible and is not implemented); got {sampling!r}")
        self.sampling = sampling
        self.similarity = _choice("similarity", similarity, self._SIMILARITIES)
        self.options = {"k": self.k, "sample_size": self.sample_size, "sampling": sampling,
                        "similarity": self.similarity}

    def _fit(self, train):
        X = _session_matrix(train)
        n_sess = X.shape[0]
        off = train.session_offsets()
        last_time = train.times[off[1:] - 1] if n_sess else np.zeros(0)
        order = np.lexsort((np.arange(n_sess), last_time))     # oldest first
        self._X = X[order]                  # row = recency rank of the session
        self._X.sort_indices()
        self._n_sessions = n_sess
        self._sess_len = np.diff(self._X.indptr).astype(np.float64)   # distinct items
        T = self._X.T.tocsr()
        T.sort_indices()                    # each item's sessions, oldest first
        if self.sample_size:
            lens = np.diff(T.indptr)
            row = np.repeat(np.arange(T.shape[0]), lens)
            keep = (T.indptr[row + 1] - 1 - np.arange(T.nnz)) < self.sample_size
            T = sp.csr_matrix((T.data[keep], T.indices[keep],
                               np.r_[0, np.cumsum(np.minimum(lens, self.sample_size))]),
                              shape=T.shape)
        self._T = T
        self._extra_fit(train)

    def _extra_fit(self, train: Interactions) -> None:
        pass

    # per-method parts ------------------------------------------------------
    def _click_weights(self, lastpos: np.ndarray, length: np.ndarray) -> Optional[np.ndarray]:
        """Weight of each distinct current item (None: all 1)."""
        return None

    def _similarity(self, shared: np.ndarray, wshared: Optional[np.ndarray], n_cur: np.ndarray,
                    wnorm: np.ndarray, n_len: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _neighbour_weight(self, sim: np.ndarray, step: np.ndarray) -> np.ndarray:
        return sim

    def _item_factor(self) -> Optional[np.ndarray]:
        return None

    _needs_step = False

    # scoring ---------------------------------------------------------------
    def _score(self, seq, starts, pos):
        N = self.n_items
        begin = _session_begin(starts, pos)
        length = pos - begin + 1
        tlen = np.diff(self._T.indptr).astype(np.float64)
        cum = np.r_[0.0, np.cumsum(tlen[seq])]
        cost = cum[pos + 1] - cum[begin] + N
        out = np.empty((len(pos), N))
        for a, b in _blocks(cost, _BLOCK_ENTRIES):
            out[a:b] = self._score_block(seq, begin[a:b], length[a:b])
        return out

    def _score_block(self, seq, begin, length):
        N, S, B = self.n_items, self._n_sessions, len(begin)
        row, click, cpos = _expand(begin, length)
        items = seq[click]
        # distinct items of each current session, with the position of their last click
        key = row * N + items
        o = np.lexsort((cpos, key))
        ks = key[o]
        last = o[np.r_[ks[1:] != ks[:-1], True]] if len(ks) else o
        r_u, i_u, lp = row[last], items[last], cpos[last].astype(np.float64)
        cur_keys = key[last]                            # sorted
        n_cur = np.bincount(r_u, minlength=B).astype(np.float64)
        w = self._click_weights(lp, length[r_u].astype(np.float64))
        shared = wshared = newest = None
        wnorm = n_cur
        if w is not None:
            wnorm = np.bincount(r_u, weights=w * w, minlength=B)
        fast = w is not None and length.max() <= _MAX_POW4_LENGTH
        if w is None:                                   # shared items per training session
            Z = (sp.csr_matrix((np.ones(len(r_u)), (r_u, i_u)), shape=(B, N)) @ self._T).tocsr()
        elif fast:
            # one product, two sums per (row, session): real = the shared items' weights,
            # imaginary = sum of 4**(lastpos - length) over the shared items -- distinct
            # positions, so its binary exponent names the newest shared click exactly
            # (4**m <= sum < 4**m * 4/3).  Positive, so no relevant session is dropped.
            q = w + 1j * np.exp2(2.0 * (lp - length[r_u]))
            Z = (sp.csr_matrix((q, (r_u, i_u)), shape=(B, N)) @ self._T).tocsr()
        else:                                           # sessions too long for 4**-length
            Z = (sp.csr_matrix((np.ones(len(r_u)), (r_u, i_u)), shape=(B, N)) @ self._T).tocsr()
            Aw = (sp.csr_matrix((w, (r_u, i_u)), shape=(B, N)) @ self._T).tocsr()
            Aw.sort_indices()
            rows_w = np.repeat(np.arange(B), np.diff(Aw.indptr))
        Z.sort_indices()
        rows_z = np.repeat(np.arange(B), np.diff(Z.indptr))
        keep = slice(None)
        if self.sample_size:                            # the most recent sample_size sessions
            keep = (Z.indptr[rows_z + 1] - 1 - np.arange(Z.nnz)) < self.sample_size
        r_k, n_k, zk = rows_z[keep], Z.indices[keep].astype(np.int64), Z.data[keep]
        if w is None:
            shared = zk
        elif fast:
            wshared, newest = zk.real, zk.imag
        else:
            wshared = _lookup(rows_w * S + Aw.indices, Aw.data, r_k * S + n_k, 0.0)
        sim = self._similarity(shared, wshared, n_cur[r_k], wnorm[r_k], self._sess_len[n_k])
        pos_sim = sim > 0
        r_k, n_k, sim = r_k[pos_sim], n_k[pos_sim], sim[pos_sim]
        # the k most similar per row, ties to the more recent session: entries arrive
        # by row, sessions ascending, so a stable sort of the reversed arrays by
        # (row, -sim) keeps equal similarities newest first
        rev = np.arange(len(r_k) - 1, -1, -1)
        order = rev[np.lexsort((-sim[rev], r_k[rev]))]
        top = order[_group_rank(r_k[order]) < self.k]
        r_n, n_n, sim = r_k[top], n_k[top], sim[top]
        step = np.ones(len(r_n))
        if self._needs_step and len(r_n):
            # step = 1 + clicks after the newest click of the current session on an
            # item the neighbour holds
            if fast:
                exponent = np.frexp(newest[pos_sim][top])[1]
                step = 1.0 - ((exponent - 1) // 2)
            else:
                lens = np.diff(self._X.indptr)[n_n]
                pair, idx, _ = _expand(self._X.indptr[n_n], lens)
                at = _lookup(cur_keys, lp, r_n[pair] * N + self._X.indices[idx], 0.0)
                maxpos = np.maximum.reduceat(at, np.r_[0, np.cumsum(lens)[:-1]])
                step = length[r_n] - maxpos + 1.0
        W = sp.csr_matrix((self._neighbour_weight(sim, step), (r_n, n_n)), shape=(B, S))
        P = (W @ self._X).tocsr()
        factor = self._item_factor()
        if factor is not None:
            P.data *= factor[P.indices]
        return _dense_with_ties(P, self._half_tie)


class SKNN(_SessionKNN):
    """session-rec's session-based kNN (rn5l/session-rec,
    ``algorithms/knn/sknn.py``, class ``ContextKNN``: ``find_neighbors``,
    ``possible_neighbor_sessions``, ``score_items``).

    The current session ``s`` = the set of items clicked since the last
    session start, up to the position.  Candidates: the training sessions
    holding any item of ``s``; if there are more than ``sample_size``, the
    ``sample_size`` most recent (``sampling="recent"``, by the time of their
    last click).  Similarity of a candidate ``n`` (its set of items):
    ``cosine = |s & n| / sqrt(|s| |n|)`` or ``jaccard = |s & n| / |s | n|``;
    the ``k`` most similar with a positive similarity are the neighbours
    (ties: the more recent session).  ``score(j) = sum of sim(s, n) over
    neighbours n holding j`` (items of ``s`` included, as in session-rec).

    Defaults ``k=100, sample_size=500, similarity="cosine"``: session-rec's
    example configuration (``conf/example_next.yml``) and its tuned setting
    for the e-commerce log Diginetica (``conf/save/diginetica/window/
    window_digi_baselines.yml``); the class's own signature has no default
    ``k``.  Not implemented: ``remind`` and ``pop_boost`` (off by default),
    ``extend``, ``sampling="random"`` (not reproducible).  session-rec
    divides the scores by their maximum (``normalize``), which leaves the
    ranking unchanged and is omitted; its ``cosine`` is written
    ``li / sqrt(la) * sqrt(lb)``, which ranks neighbours and items like the
    cosine above (the factor ``|s|`` is common to one prediction).
    """

    name = "sknn"
    _SIMILARITIES = ("cosine", "jaccard")

    def __init__(self, k: int = 100, sample_size: int = 500, sampling: str = "recent",
                 similarity: str = "cosine"):
        super().__init__(k, sample_size, sampling, similarity)

    def _similarity(self, shared, wshared, n_cur, wnorm, n_len):
        if self.similarity == "cosine":
            return shared / (np.sqrt(n_cur) * np.sqrt(n_len))
        return shared / (n_cur + n_len - shared)


class VSKNN(_SessionKNN):
    """session-rec's vector-multiplication session kNN (rn5l/session-rec,
    ``algorithms/knn/vsknn.py``, class ``VMContextKNN``: ``calc_similarity``,
    ``vec``, ``cosine``, ``score_items``; Ludewig & Jannach 2018).

    The current session is its clicks since the last session start, up to
    the position (``length`` clicks, repeats included).  Each distinct item
    ``i`` gets the weight ``weighting(lastpos_i, length)`` of its last click
    (1-based position; session-rec overwrites earlier positions):
    ``same`` 1, ``div`` ``i/length``, ``linear`` ``1 - 0.1 (length - i)`` for
    ``i <= 10`` else 0, ``log`` ``1 / log10(length - i + 1.7)``, ``quadratic``
    ``(i/length)**2``.  Candidates and sampling as :class:`SKNN`.  Similarity
    of a candidate ``n``: ``vec`` = ``sum of w_i over i in s & n`` divided by
    the number of distinct items of ``s``, or ``cosine`` = the same sum over
    ``sqrt(sum of w_i**2) sqrt(|n|)``; the ``k`` most similar with a positive
    similarity are the neighbours (ties: the more recent session).  Score::

        score(j) = sum over neighbours n holding j of
                   sim(s, n) * (1 + idf_weighting * idf_j) * weighting_score(step_n)

    with ``idf_j = log(#training sessions / #training clicks on j)`` (the
    term is dropped when ``idf_weighting`` is 0) and ``step_n`` = 1 + the
    number of clicks after the newest click of ``s`` on an item of ``n``:
    ``weighting_score`` ``same`` 1, ``div`` ``1/step``, ``linear``
    ``1 - 0.1 step`` for ``step <= 100`` else 0, ``log``
    ``1 / log10(step + 1.7)``, ``quadratic`` ``1/step**2``.

    Defaults ``k=500, sample_size=5000, weighting="quadratic",
    weighting_score="div", idf_weighting=5, similarity="vec"``: session-rec's
    example configuration (``conf/example_next.yml``), identical to its tuned
    setting for the e-commerce log Diginetica (``conf/save/diginetica/window/
    window_digi_baselines.yml``); ``similarity="vec"`` is the class default
    (its older revision always used ``vec``).  Items of the current session
    are scored (``remind=True``, the class default).  Not implemented:
    ``dwelling_time``, ``last_n_days``, ``last_n_clicks``,
    ``weighting_time``, ``push_reminders``, ``add_reminders``,
    ``idf_weighting_session``, ``extend`` (all off by default) and
    ``sampling="random"``; the final division by the maximum score
    (``normalize``) leaves the ranking unchanged and is omitted.
    """

    name = "v-sknn"
    _SIMILARITIES = ("vec", "cosine")
    _needs_step = True

    def __init__(self, k: int = 500, sample_size: int = 5000, sampling: str = "recent",
                 similarity: str = "vec", weighting: str = "quadratic",
                 weighting_score: str = "div", idf_weighting: float = 5.0):
        super().__init__(k, sample_size, sampling, similarity)
        self.weighting = _choice("weighting", weighting, tuple(_POSITION_WEIGHTS))
        self.weighting_score = _choice("weighting_score", weighting_score, tuple(_SCORE_DECAYS))
        self.idf_weighting = _check_float("idf_weighting", idf_weighting, 0.0)
        self.options.update(weighting=weighting, weighting_score=weighting_score,
                            idf_weighting=self.idf_weighting)

    def _extra_fit(self, train):
        clicks = train.item_support().astype(np.float64)
        idf = np.zeros(self.n_items)
        seen = clicks > 0
        idf[seen] = np.log(self._n_sessions / clicks[seen])
        self.idf = idf
        self._factor = (1.0 + self.idf_weighting * idf) if self.idf_weighting else None

    def _click_weights(self, lastpos, length):
        return _POSITION_WEIGHTS[self.weighting](lastpos, length)

    def _similarity(self, shared, wshared, n_cur, wnorm, n_len):
        if self.similarity == "vec":
            return wshared / n_cur
        return wshared / (np.sqrt(wnorm) * np.sqrt(n_len))

    def _neighbour_weight(self, sim, step):
        return sim * _SCORE_DECAYS[self.weighting_score](step)

    def _item_factor(self):
        return self._factor


# ---------------------------------------------------------------------------
# the user's own items
# ---------------------------------------------------------------------------

class Recency(Baseline):
    """Repeat / recency baseline: the user's own items, the recent first.

    ``score(i) = sum over the user's clicks c on i up to the position p of
    decay**(p - c)`` (``p - c`` = the number of clicks after ``c`` up to the
    position; the click at ``p`` weighs 1), over the whole sequence -- session
    starts do not matter.  Items the user never clicked score 0 and rank below
    all of hers, by popularity.  ``decay`` in (0, 1), default 0.9: a click ten
    clicks ago weighs 0.35 of the last one, and two clicks on an item outweigh
    one click on another only if they are recent enough.

    Returned value (same order, no underflow on long histories): for a clicked
    item ``1 + p + log_{1/decay}(score(i))`` (>= 1), built click by click from
    the item's previous value; for the others the popularity tie-break alone.
    """

    name = "recency"

    def __init__(self, decay: float = 0.9):
        super().__init__()
        self.decay = _check_float("decay", decay, 0.0, 1.0, low_open=True, high_open=True)
        self.options = {"decay": self.decay}

    def _score(self, seq, starts, pos):
        N = self.n_items
        d = self.decay
        inv_log = 1.0 / math.log(1.0 / d)
        value = np.zeros(N)              # 1 + R_i at the item's last click so far
        last: Dict[int, int] = {}
        inner: Dict[int, float] = {}     # sum of decay**(last_i - c) over the item's clicks
        order = np.argsort(pos, kind="stable")
        out = np.empty((len(pos), N))
        k = 0
        items = seq[: int(pos.max()) + 1].tolist()
        for c, i in enumerate(items):
            prev = last.get(i)
            s = 1.0 if prev is None else 1.0 + inner[i] * d ** (c - prev)
            last[i], inner[i] = c, s
            value[i] = 1.0 + c + math.log(s) * inv_log
            while k < len(order) and pos[order[k]] == c:
                out[order[k]] = value
                k += 1
        # popularity below the resolution of each row
        res = _resolution(np.abs(out).max(axis=1))
        out += res[:, None] * self._half_tie[None, :]
        return out


#: The registry: report name -> class.
BASELINES: Dict[str, Type[Baseline]] = {
    cls.name: cls for cls in (Popularity, Cooccurrence, ItemKNN, SKNN, VSKNN, Recency)
}


def make_baseline(name: str, **options: Any) -> Baseline:
    """A baseline by its report name (a key of :data:`BASELINES`) with
    ``options`` for its constructor (e.g. ``make_baseline("v-sknn", k=100)``)."""
    try:
        cls = BASELINES[name]
    except KeyError:
        raise ValueError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES)}") from None
    params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise ValueError(f"{name}: unknown option(s) {', '.join(unknown)}; its options are "
                         f"{', '.join(params) if params else 'none'}")
    return cls(**options)

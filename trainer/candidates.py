"""Candidate generation: item-item collaborative filtering, embedding
neighbours, per-user candidate sets, their files and their recall.

- :func:`item_item_cf` -- cosine similarity on session (or user)
  co-occurrence.  With the binary unit-item matrix ``X`` (units = sessions
  or users), ``C = X^T X`` counts the units two items share and
  ``sim(i, j) = C_ij / (sqrt(C_ii C_jj) + shrink)``.  ``C`` is never built
  whole: item blocks ``C[a:b] = X^T[a:b] X`` are sized so that each holds at
  most ``max_block_nnz`` entries (an upper bound is known in advance), and
  only the top ``n_neighbors`` of each row are kept.
- :func:`embedding_neighbors` -- top-k by inner product or cosine in an item
  embedding space (float32), query blocks of bounded size, ``np.argpartition``.
- :func:`user_candidates` -- per user, the union of the CF neighbours of the
  user's recent items (recency-weighted) and the embedding neighbours of
  those items, fused by reciprocal rank, topped up with popular items.
- :class:`CandidateSets` with :meth:`~CandidateSets.to_npz` /
  :meth:`~CandidateSets.to_csv` (catalogue ids) and :func:`candidate_recall`.

Ties are broken by the lower item code everywhere (except inside
``np.argpartition``'s choice among items tied exactly at the k-th score).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple

import numpy as np
import scipy.sparse as sp

from .data import Interactions, _as_id_array, _Coder, _member, _sorted_unique

__all__ = [
    "ItemNeighbors",
    "CandidateSets",
    "unit_item_matrix",
    "item_item_cf",
    "embedding_neighbors",
    "recent_items",
    "user_candidates",
    "load_candidates_npz",
    "candidate_recall",
    "CANDIDATES_FORMAT",
]

#: ``format`` tag stored in candidate npz files.
from deeprec_edge.candidates import CANDIDATES_FORMAT  # one tag, shared with the device reader
from deeprec_edge.candidates import CANDIDATES_VERSION, read_candidates_npz
from deeprec_edge._atomic import atomic_write  # the one writer (fsync, mode, cleanup)


# ---------------------------------------------------------------------------
# neighbour lists
# ---------------------------------------------------------------------------

@dataclass
class ItemNeighbors:
    """Top-M lists: row q holds the best neighbours of query q, best first.

    ``indices`` (Q, M) int32 item codes, ``-1`` where a row has fewer than M;
    ``scores`` (Q, M) float32, ``-inf`` at the padding.
    """

    indices: np.ndarray
    scores: np.ndarray

    def counts(self) -> np.ndarray:
        """Valid neighbours per row."""
        return np.count_nonzero(self.indices >= 0, axis=1)

    def to_sparse(self, n_items: int) -> sp.csr_matrix:
        """(Q, n_items) CSR matrix of the scores (padding left out)."""
        valid = self.indices >= 0
        rows = np.broadcast_to(np.arange(self.indices.shape[0])[:, None], self.indices.shape)[valid]
        return sp.csr_matrix((self.scores[valid].astype(np.float64), (rows, self.indices[valid])),
                             shape=(self.indices.shape[0], n_items))


def _topk_sorted_entries(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, n_rows: int,
                         k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Top-k entries per row of a sparse (rows, cols, vals) list -> padded arrays.

    Entries must come in (row, col) order (CSR with sorted indices); ties in
    value then go to the lower column.  Vectorised: a stable argsort of the
    values, then one integer sort of ``row * n + value rank`` (about 3x faster
    than a three-key lexsort)."""
    idx = np.full((n_rows, k), -1, np.int32)
    sc = np.full((n_rows, k), -np.inf, np.float32)
    n = len(rows)
    if n == 0 or k == 0:
        return idx, sc
    by_value = np.argsort(-vals, kind="stable")
    rank = np.empty(n, np.int64)
    rank[by_value] = np.arange(n)
    key = np.sort(rows.astype(np.int64) * n + rank)
    r = key // n
    entry = by_value[key % n]
    counts = np.bincount(r, minlength=n_rows)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos = np.arange(n) - starts[r]
    keep = pos < k
    sel = entry[keep]
    idx[r[keep], pos[keep]] = cols[sel]
    sc[r[keep], pos[keep]] = vals[sel]
    return idx, sc


# ---------------------------------------------------------------------------
# item-item collaborative filtering
# ---------------------------------------------------------------------------

def unit_item_matrix(inter: Interactions, by: str = "session") -> sp.csr_matrix:
    """Binary (units x items) int32 CSR matrix; units are sessions (numbered in
    row order) or user codes (``by="user"``)."""
    if by == "session":
        s = inter.sessions
        units = np.cumsum(np.r_[True, s[1:] != s[:-1]]) - 1 if len(s) else np.empty(0, np.int64)
        n_units = int(units[-1]) + 1 if len(s) else 0
    elif by == "user":
        units = inter.users
        n_units = inter.n_users
    else:
        raise ValueError(f"by must be 'session' or 'user', got {by!r}")
    X = sp.csr_matrix((np.ones(len(units), np.int32), (units, inter.items.astype(np.int64))),
                      shape=(n_units, inter.n_items))
    X.sum_duplicates()
    X.data[:] = 1
    return X


def _row_blocks(cost: np.ndarray, budget: int) -> Iterator[Tuple[int, int]]:
    """Consecutive row ranges whose summed cost stays within budget (>= 1 row)."""
    n = len(cost)
    a = 0
    cum = np.cumsum(cost, dtype=np.float64)
    while a < n:
        base = cum[a - 1] if a else 0.0
        b = int(np.searchsorted(cum, base + budget, side="right"))
        b = max(b, a + 1)
        yield a, min(b, n)
        a = min(b, n)


def item_item_cf(inter: Interactions, n_neighbors: int = 100, *, by: str = "session",
                 shrink: float = 0.0, min_common: int = 1,
                 max_block_nnz: int = 5_000_000) -> ItemNeighbors:
    """Top `n_neighbors` cosine neighbours of every item on unit co-occurrence.

    ``by``: ``"session"`` or ``"user"``.  ``shrink`` damps pairs with little
    support (``C_ij / (sqrt(C_ii C_jj) + shrink)``); pairs sharing fewer than
    `min_common` units are ignored; an item is never its own neighbour.
    Memory: the matrix ``X`` plus one block of ``C`` with at most about
    `max_block_nnz` entries (bounded by ``sum over units u containing i of |u|``
    per row ``i``; a single row larger than the budget gets a block of its own).
    """
    X = unit_item_matrix(inter, by)
    N = inter.n_items
    XT = X.T.tocsr()
    item_units = np.diff(XT.indptr).astype(np.float64)       # C_ii
    norms = np.sqrt(item_units)
    unit_len = np.diff(X.indptr).astype(np.float64)
    bound = XT @ unit_len                                       # >= nnz of row i of C
    M = int(n_neighbors)
    idx = np.full((N, M), -1, np.int32)
    sc = np.full((N, M), -np.inf, np.float32)
    for a, b in _row_blocks(bound, max_block_nnz):
        C = (XT[a:b] @ X).tocsr()
        C.sort_indices()
        rows = np.repeat(np.arange(b - a), np.diff(C.indptr))
        cols = C.indices
        data = C.data.astype(np.float64)
        keep = (cols != rows + a) & (data >= min_common)
        rows, cols, data = rows[keep], cols[keep], data[keep]
        sim = data / (norms[rows + a] * norms[cols] + shrink)
        bi, bs = _topk_sorted_entries(rows, cols.astype(np.int64), sim, b - a, M)
        idx[a:b], sc[a:b] = bi, bs
    return ItemNeighbors(idx, sc)


# ---------------------------------------------------------------------------
# embedding neighbours
# ---------------------------------------------------------------------------

def _normalise_rows(A: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(A, axis=1, keepdims=True)
    return np.divide(A, n, out=np.zeros_like(A), where=n > 0)


def _block_rows(n_cols: int, max_block_elems: int, block_size: Optional[int]) -> int:
    if block_size is not None:
        return max(1, int(block_size))
    return max(1, int(max_block_elems // max(1, n_cols)))


def _dense_topk(S: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Top-k per row of a dense float32 block, best first, -inf entries dropped."""
    B, N = S.shape
    k_eff = min(k, N)
    idx = np.full((B, k), -1, np.int32)
    sc = np.full((B, k), -np.inf, np.float32)
    if k_eff == 0 or B == 0:
        return idx, sc
    if k_eff < N:
        part = np.argpartition(-S, k_eff - 1, axis=1)[:, :k_eff]
    else:
        part = np.broadcast_to(np.arange(N), (B, N)).copy()
    vals = np.take_along_axis(S, part, axis=1)
    order = np.lexsort((part, -vals), axis=-1)
    part = np.take_along_axis(part, order, axis=1)
    vals = np.take_along_axis(vals, order, axis=1)
    valid = np.isfinite(vals)
    idx[:, :k_eff] = np.where(valid, part, -1)
    sc[:, :k_eff] = np.where(valid, vals, -np.inf)
    return idx, sc


def embedding_neighbors(embeddings: np.ndarray, n_neighbors: int = 100, *, metric: str = "ip",
                        queries: Optional[np.ndarray] = None, exclude: Optional[sp.spmatrix] = None,
                        exclude_self: Optional[bool] = None, block_size: Optional[int] = None,
                        max_block_elems: int = 1 << 24) -> ItemNeighbors:
    """Nearest items of each query in an embedding space.

    ``embeddings`` (N, d) and ``queries`` (Q, d, default: the items
    themselves) are used as float32; ``metric``: ``"ip"`` (inner product,
    the model's own score without bias) or ``"cosine"``.  ``exclude`` is an
    optional (Q, N) sparse mask of items never returned for a query;
    ``exclude_self`` (default: when queries are the items) drops item q from
    row q.  Scores are computed ``block_size`` queries at a time (default:
    blocks of at most `max_block_elems` scores).
    """
    E = np.ascontiguousarray(embeddings, dtype=np.float32)
    if E.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (N, d), got shape {E.shape}")
    if not np.all(np.isfinite(E)):
        raise ValueError("embeddings contain NaN or Inf")
    if metric not in ("ip", "cosine"):
        raise ValueError(f"metric must be 'ip' or 'cosine', got {metric!r}")
    self_queries = queries is None
    Q = E if self_queries else np.ascontiguousarray(queries, dtype=np.float32)
    if Q.ndim != 2 or Q.shape[1] != E.shape[1]:
        raise ValueError(f"queries must be (Q, {E.shape[1]}), got shape {Q.shape}")
    if exclude_self is None:
        exclude_self = self_queries
    if metric == "cosine":
        E = _normalise_rows(E)
        Q = E if self_queries else _normalise_rows(Q)
    excl = None if exclude is None else sp.csr_matrix(exclude)
    if excl is not None and excl.shape != (Q.shape[0], E.shape[0]):
        raise ValueError(f"exclude must have shape {(Q.shape[0], E.shape[0])}, got {excl.shape}")
    M = int(n_neighbors)
    out_i = np.full((Q.shape[0], M), -1, np.int32)
    out_s = np.full((Q.shape[0], M), -np.inf, np.float32)
    step = _block_rows(E.shape[0], max_block_elems, block_size)
    # A copy of E.T: with self-queries, Q[:N] @ E.T would be one array times
    # its own transpose, which numpy hands to BLAS syrk, and the SVE syrk
    # kernel of numpy's OpenBLAS raises spurious divide-by-zero and overflow
    # flags (seen under qemu), i.e. RuntimeWarnings on finite inputs.
    Et = np.ascontiguousarray(E.T)
    for a in range(0, Q.shape[0], step):
        b = min(a + step, Q.shape[0])
        S = Q[a:b] @ Et
        if exclude_self:
            r = np.arange(b - a)
            S[r, r + a] = -np.inf
        if excl is not None:
            blk = excl[a:b].tocoo()
            S[blk.row, blk.col] = -np.inf
        out_i[a:b], out_s[a:b] = _dense_topk(S, M)
    return ItemNeighbors(out_i, out_s)


# ---------------------------------------------------------------------------
# per-user candidate sets
# ---------------------------------------------------------------------------

def recent_items(history: Interactions, n_recent: int = 10,
                 decay: float = 0.8) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The last `n_recent` distinct items of every user and their weights.

    Returns ``(users, items, weights)``: for each user the distinct items by
    their latest click, most recent first, weight ``decay ** age`` (age 0 =
    the latest distinct item)."""
    history = history.time_ordered()          # recency is by time, not by row
    u, i = history.users, history.items.astype(np.int64)
    n = len(u)
    if n == 0:
        e = np.empty(0, np.int64)
        return e, e, np.empty(0, np.float64)
    rev = np.arange(n - 1, -1, -1)
    key = u[rev] * history.n_items + i[rev]
    _, first = np.unique(key, return_index=True)
    sel = rev[first]
    sel = sel[np.lexsort((-sel, u[sel]))]
    us = u[sel]
    starts = np.r_[0, np.flatnonzero(us[1:] != us[:-1]) + 1]
    counts = np.diff(np.r_[starts, len(us)])
    age = np.arange(len(us)) - np.repeat(starts, counts)
    keep = age < n_recent
    return us[keep], i[sel[keep]], np.power(float(decay), age[keep]).astype(np.float64)


@dataclass
class CandidateSets:
    """Candidate items per user, best first (CSR layout).

    ``users`` (U,) int64 user codes; ``offsets`` (U+1,) int64; ``items``
    (nnz,) int32 item codes; ``scores`` (nnz,) float32; ``item_ids`` and
    ``user_ids`` map codes to catalogue ids.  User ``users[k]`` has
    ``items[offsets[k]:offsets[k+1]]``.
    """

    users: np.ndarray
    offsets: np.ndarray
    items: np.ndarray
    scores: np.ndarray
    item_ids: np.ndarray
    user_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.users)

    def sizes(self) -> np.ndarray:
        """Set size of every user (int64 [U], in ``users`` order)."""
        return np.diff(self.offsets)

    def row_of(self, user: int) -> int:
        """Row of a user code (``KeyError`` if the user has no set)."""
        k = int(np.searchsorted(self.users, user))
        if k >= len(self.users) or self.users[k] != user:
            raise KeyError(f"user code {user} has no candidate set")
        return k

    def for_user(self, user: int) -> np.ndarray:
        """Item codes of a user's set, best first."""
        k = self.row_of(user)
        return self.items[self.offsets[k]:self.offsets[k + 1]]

    def as_dict(self, catalogue_ids: bool = True) -> Dict[Any, np.ndarray]:
        """``{user: items}``, best first: catalogue ids (``catalogue_ids``) or
        user and item codes."""
        out = {}
        for k, u in enumerate(self.users):
            it = self.items[self.offsets[k]:self.offsets[k + 1]]
            if catalogue_ids:
                out[self.user_ids[u].item()] = self.item_ids[it]
            else:
                out[int(u)] = it
        return out

    def to_npz(self, path: Any, *, compressed: bool = True) -> None:
        """Write (atomically) an npz readable with ``allow_pickle=False``.

        Keys: ``format`` (str), ``version`` (int64), ``user_ids`` (U,),
        ``offsets`` (U+1,) int64, ``item_ids`` (nnz,), ``scores`` (nnz,)
        float32; ids are the catalogue's (int64 or unicode)."""
        arrays = {
            "format": np.array(CANDIDATES_FORMAT),
            "version": np.array(CANDIDATES_VERSION, dtype=np.int64),
            "user_ids": _plain(self.user_ids[self.users]),
            "offsets": self.offsets.astype(np.int64),
            "item_ids": _plain(self.item_ids[self.items]),
            "scores": self.scores.astype(np.float32),
        }
        atomic_write(path, lambda fh: (np.savez_compressed if compressed else np.savez)(fh, **arrays))

    def to_csv(self, path: Any, *, block_users: int = 100_000) -> None:
        """Write (atomically) ``user_id,item_id,rank,score`` rows (rank from 1),
        catalogue ids, a block of users at a time."""
        import pandas as pd

        def write(fh: Any) -> None:
            fh.write(b"user_id,item_id,rank,score\n")
            for a in range(0, len(self.users), block_users):
                b = min(a + block_users, len(self.users))
                lo, hi = self.offsets[a], self.offsets[b]
                sizes = np.diff(self.offsets[a:b + 1])
                rows = np.repeat(np.arange(a, b), sizes)
                rank = np.arange(hi - lo) - np.repeat(self.offsets[a:b] - lo, sizes) + 1
                frame = pd.DataFrame({"user_id": self.user_ids[self.users[rows]],
                                      "item_id": self.item_ids[self.items[lo:hi]],
                                      "rank": rank, "score": self.scores[lo:hi]})
                fh.write(frame.to_csv(index=False, header=False, float_format="%.6g",
                                      lineterminator="\n").encode("utf-8"))
        atomic_write(path, write)


def _plain(ids: np.ndarray) -> np.ndarray:
    """int64 or fixed-width unicode (never object: files load without pickle)."""
    arr = _as_id_array(ids)
    return arr if arr.dtype.kind in "iu" else arr.astype(str)


def load_candidates_npz(path: Any, item_ids: Any = None) -> CandidateSets:
    """Read a file written by :meth:`CandidateSets.to_npz`.

    With ``item_ids`` (e.g. the model's catalogue) items are coded on it and
    unknown ones dropped; else the vocabulary is the sorted ids in the file.
    User codes are the file's row order."""
    z = read_candidates_npz(path)        # the device's reader: bounded, checked
    if "scores" not in z:
        raise ValueError(f"{path}: not a candidates file: missing array(s) 'scores'")
    users, offsets, ids, scores = z["user_ids"], z["offsets"], z["item_ids"], z["scores"]
    if item_ids is None:
        vocab, codes = np.unique(ids, return_inverse=True)
    else:
        vocab = _as_id_array(item_ids)
        codes = _Coder(vocab).lookup(ids)
    keep = codes >= 0
    if not keep.all():
        row = np.repeat(np.arange(len(users)), np.diff(offsets))
        offsets = np.r_[0, np.cumsum(np.bincount(row[keep], minlength=len(users)))]
        codes, scores = codes[keep], scores[keep]
    return CandidateSets(np.arange(len(users), dtype=np.int64), offsets.astype(np.int64),
                         codes.astype(np.int32), scores.astype(np.float32), _as_id_array(vocab),
                         _as_id_array(users))


def _seen_keys(history: Interactions, n_items: int) -> np.ndarray:
    """Sorted distinct ``user * n_items + item`` of the history."""
    return _sorted_unique(history.users.astype(np.int64) * n_items + history.items.astype(np.int64))


def user_candidates(history: Interactions, n_candidates: int = 100, *,
                    cf: Optional[ItemNeighbors] = None, embeddings: Optional[np.ndarray] = None,
                    metric: str = "ip", users: Optional[Sequence[int]] = None, n_recent: int = 10,
                    recency_decay: float = 0.8, exclude_seen: bool = True,
                    popularity: Optional[np.ndarray] = None, fill_popular: bool = True,
                    weights: Tuple[float, float] = (1.0, 1.0), rrf_k: float = 60.0,
                    user_block: int = 4096) -> CandidateSets:
    """Candidate sets of (up to) `n_candidates` items per user.

    For each user, the recent distinct items ``r_0, r_1, ...`` (latest first,
    at most `n_recent`) get weights ``w_t = recency_decay ** t``.

    - CF (`cf`, from :func:`item_item_cf`): item j scores
      ``sum_t w_t * sim_cf(r_t, j)`` over the neighbour lists.
    - Embedding (`embeddings`, (N, d), e.g. the output table ``O``): the
      query ``sum_t w_t * e(r_t)`` (rows normalised first for ``cosine``);
      items score by ``metric`` against it -- for ``ip`` exactly
      ``sum_t w_t * <e(r_t), e(j)>``.
    - The two ranked lists (each cut at `n_candidates`) are fused by
      reciprocal rank, ``score(j) = sum_src weight_src / (rrf_k + rank_src(j))``
      (rank from 1), and the best `n_candidates` kept, ties to the lower code;
      with equal weights this interleaves the two lists.
    - Short sets are topped up with the most popular items (``popularity``,
      default the history's item support), score 0.

    ``exclude_seen`` drops every item of the user's history.  ``users``
    (codes) defaults to the users with history; users without history get
    popular items only.  Item codes are the history's.
    """
    N = history.n_items
    M = int(n_candidates)
    if cf is None and embeddings is None and not fill_popular:
        raise ValueError("give cf, embeddings or fill_popular=True")
    if cf is not None and cf.indices.shape[0] != N:
        raise ValueError(f"cf has {cf.indices.shape[0]} rows; the history has {N} items")
    E = None
    if embeddings is not None:
        E = np.ascontiguousarray(embeddings, dtype=np.float32)
        if E.ndim != 2 or E.shape[0] != N:
            raise ValueError(f"embeddings must be ({N}, d), got shape {E.shape}")
        if metric == "cosine":
            E = _normalise_rows(E)
        elif metric != "ip":
            raise ValueError(f"metric must be 'ip' or 'cosine', got {metric!r}")
    ulist = history.active_users() if users is None else _sorted_unique(np.asarray(users, np.int64))
    ru, ri, rw = recent_items(history, n_recent, recency_decay)
    seen = _seen_keys(history, N) if exclude_seen else np.empty(0, np.int64)
    S_cf = cf.to_sparse(N) if cf is not None else None
    pop = history.item_support() if popularity is None else np.asarray(popularity, np.float64)
    pop_order = np.lexsort((np.arange(N), -pop.astype(np.float64)))
    out_items, out_scores, sizes = [], [], []
    for a in range(0, len(ulist), user_block):
        ub = ulist[a:a + user_block]
        B = len(ub)
        # recent items of this block's users (ru is sorted by user)
        lo, hi = np.searchsorted(ru, [ub[0], ub[-1] + 1])
        bu, bi, bw = ru[lo:hi], ri[lo:hi], rw[lo:hi]
        m = _member(bu, ub)
        W = sp.csr_matrix((bw[m], (np.searchsorted(ub, bu[m]), bi[m])), shape=(B, N))
        # the block's seen items, as sorted keys and as (row, item)
        lo, hi = np.searchsorted(seen, [ub[0] * N, (ub[-1] + 1) * N])
        sk = seen[lo:hi]
        sk = sk[_member(sk // N, ub)]
        ranked = []                                  # (B, M) item lists per source, best first
        if S_cf is not None:
            Cs = (W @ S_cf).tocsr()
            Cs.sort_indices()
            C = Cs.tocoo()
            r, c, v = C.row.astype(np.int64), C.col.astype(np.int64), C.data
            ok = v > 0
            if exclude_seen and len(r):
                ok &= ~_member(ub[r] * N + c, sk)
            ranked.append((_topk_sorted_entries(r[ok], c[ok], v[ok], B, M)[0], weights[0]))
        if E is not None:
            Qm = np.asarray(W @ E, dtype=np.float32)
            has = np.asarray(W.getnnz(axis=1) > 0)
            excl = None
            if exclude_seen:
                srow = np.searchsorted(ub, sk // N)
                excl = sp.csr_matrix((np.ones(len(sk), np.int8), (srow, sk % N)), shape=(B, N))
            nb = embedding_neighbors(E, M, metric="ip", queries=Qm, exclude=excl, exclude_self=False)
            nb.indices[~has] = -1
            ranked.append((nb.indices, weights[1]))
        idx, sc = _fuse(ranked, B, N, M, rrf_k)
        valid = idx >= 0                             # valid entries form a prefix of each row
        cnt = valid.sum(axis=1)
        short = np.flatnonzero(cnt < M) if fill_popular else np.empty(0, np.int64)
        if len(short) == 0:
            out_items.append(idx[valid])
            out_scores.append(sc[valid])
            sizes.append(cnt)
            continue
        for k in range(B):                           # rows needing popular items, one by one
            got = idx[k, :cnt[k]]
            gs = sc[k, :cnt[k]]
            if cnt[k] < M:
                u = int(ub[k])
                excl_items = got
                if exclude_seen:
                    lo, hi = np.searchsorted(sk, [u * N, (u + 1) * N])
                    excl_items = np.concatenate([got, sk[lo:hi] - u * N])
                pool = pop_order[: M + len(excl_items)]
                extra = pool[~_member(pool, np.sort(excl_items))][: M - len(got)]
                got = np.concatenate([got, extra])
                gs = np.concatenate([gs, np.zeros(len(extra), np.float32)])
            out_items.append(got.astype(np.int32))
            out_scores.append(gs.astype(np.float32))
            sizes.append(np.array([len(got)]))
    offsets = np.r_[0, np.cumsum(np.concatenate(sizes) if sizes else [], dtype=np.int64)].astype(np.int64)
    items = np.concatenate(out_items).astype(np.int32) if out_items else np.empty(0, np.int32)
    scores = np.concatenate(out_scores).astype(np.float32) if out_scores else np.empty(0, np.float32)
    return CandidateSets(ulist.astype(np.int64), offsets, items, scores, history.item_ids,
                         history.user_ids)


def _fuse(ranked: list, B: int, N: int, M: int, rrf_k: float) -> Tuple[np.ndarray, np.ndarray]:
    """Reciprocal-rank fusion of ranked (B, M) lists -> top-M (indices, scores)."""
    if not ranked:
        return np.full((B, M), -1, np.int32), np.full((B, M), -np.inf, np.float32)
    rr, cc, vv = [], [], []
    for idx, weight in ranked:
        valid = idx >= 0
        r, pos = np.nonzero(valid)
        rr.append(r.astype(np.int64))
        cc.append(idx[valid].astype(np.int64))
        vv.append(weight / (rrf_k + pos + 1.0))
    if len(ranked) == 1:          # one source: its order is the fused order
        idx = np.full((B, M), -1, np.int32)
        sc = np.full((B, M), -np.inf, np.float32)
        valid = ranked[0][0] >= 0
        idx[valid] = ranked[0][0][valid]
        sc[valid] = vv[0]
        return idx, sc
    F = sp.csr_matrix((np.concatenate(vv), (np.concatenate(rr), np.concatenate(cc))), shape=(B, N))
    F.sum_duplicates()
    F.sort_indices()
    Fc = F.tocoo()
    return _topk_sorted_entries(Fc.row.astype(np.int64), Fc.col.astype(np.int64), Fc.data, B, M)


# ---------------------------------------------------------------------------
# candidate-set recall
# ---------------------------------------------------------------------------

def candidate_recall(cands: CandidateSets, test: Interactions) -> Dict[str, Any]:
    """How often a test next-item is inside the user's candidate set.

    Every test event counts as a next item of its user.  Items and users are
    matched by catalogue id when the vocabularies differ.  Returns
    ``recall`` (share of test events whose item is in the set; users without
    a set count as misses), ``user_recall`` (mean over test users of their
    share), ``n_events``, ``n_users``, ``n_users_without_set`` and
    ``mean_set_size``."""
    N = len(cands.item_ids)
    items = test.items.astype(np.int64)
    if not (len(test.item_ids) == N and np.array_equal(test.item_ids, cands.item_ids)):
        items = _Coder(cands.item_ids).lookup(test.item_ids)[items] if len(items) else items
    tu = test.users.astype(np.int64)
    if not (len(test.user_ids) == len(cands.user_ids) and np.array_equal(test.user_ids, cands.user_ids)):
        tu = _Coder(cands.user_ids).lookup(test.user_ids)[tu] if len(tu) else tu
    row = np.full(len(tu), -1, np.int64)
    ok = np.flatnonzero(tu >= 0)
    if len(ok) and len(cands.users):
        pos = np.minimum(np.searchsorted(cands.users, tu[ok]), len(cands.users) - 1)
        match = cands.users[pos] == tu[ok]
        row[ok[match]] = pos[match]
    crow = np.repeat(np.arange(len(cands.users), dtype=np.int64), cands.sizes())
    ckeys = np.sort(crow * (N + 1) + cands.items.astype(np.int64))
    tkeys = row * (N + 1) + items
    hit = (row >= 0) & (items >= 0) & _member(tkeys, ckeys)
    users_all = test.users.astype(np.int64)           # codes: bincount, no unique needed
    if len(hit):
        cnt = np.bincount(users_all)
        present = cnt > 0
        per_user = np.bincount(users_all, weights=hit)[present] / cnt[present]
        uniq = np.flatnonzero(present)
        no_set = len(_sorted_unique(users_all[row < 0]))
    else:
        uniq, per_user, no_set = np.empty(0), np.empty(0), 0
    return {
        "recall": float(hit.mean()) if len(hit) else float("nan"),
        "user_recall": float(per_user.mean()) if len(per_user) else float("nan"),
        "n_events": int(len(hit)),
        "n_users": int(len(uniq)),
        "n_users_without_set": int(no_set),
        "mean_set_size": float(cands.sizes().mean()) if len(cands) else 0.0,
    }

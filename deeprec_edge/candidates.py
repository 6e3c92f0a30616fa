"""Reading candidate sets on the device (numpy only).

Accepted files:

- the trainer's ``.npz`` (keys ``format`` = "deeprec-edge/candidates",
  ``version``, ``user_ids``, ``offsets``, ``item_ids``, ``scores``; CSR
  layout, loaded with ``allow_pickle=False``);
- a CSV with a header containing ``item_id`` and optionally ``user_id``
  (the trainer writes ``user_id,item_id,rank,score``);
- a plain list: one item id per line (an ``item_id`` header line is allowed).

A file holding several users needs ``user`` to pick one.  Every problem
with a file is a ValueError naming it (the npz is read within bounds,
headers before data: :func:`deeprec_edge._npz.read_npz`).

:func:`device_candidates` adds what the device derives from its own history
(the user's items and their neighbours in the model's output table) to the
cloud's set.
"""
from __future__ import annotations

import csv
import os
from typing import List, Optional

import numpy as np

from ._npz import Expect, read_npz

__all__ = ["read_candidates", "read_candidates_npz", "item_neighbors", "device_candidates",
           "returns_favoured", "model_ranking",
           "CANDIDATES_FORMAT", "CANDIDATES_VERSION"]

CANDIDATES_FORMAT = "deeprec-edge/candidates"
#: The newest candidate npz version this code reads.
CANDIDATES_VERSION = 1


#: The arrays of the trainer's candidate npz.
_NPZ_LAYOUT = {"format": Expect("U", 0, 256), "version": Expect("iu", 0, required=False),
               "user_ids": Expect("iuU", 1), "offsets": Expect("iu", 1),
               "item_ids": Expect("iuU", 1), "scores": Expect("f", 1, required=False)}


def _pick_user(users: List[str], user: Optional[str], path: str) -> Optional[str]:
    distinct = list(dict.fromkeys(users))
    if user is None:
        if len(distinct) > 1:
            raise ValueError(f"{path}: holds candidates of {len(distinct)} users; choose one "
                             f"(read_candidates(..., user={distinct[0]!r}) in Python, "
                             f"--user {distinct[0]} on the command line)")
        return distinct[0] if distinct else None
    if str(user).strip() not in distinct:
        raise ValueError(f"{path}: no candidates for user {user!r}")
    return str(user).strip()


def _typed(tokens: List[str], model) -> list:
    """Catalogue-typed ids: ints for an integer catalogue (non-integers are
    kept as strings and will simply be unknown)."""
    if model is not None and np.asarray(model.item_ids).dtype.kind in "iu":
        out = []
        for t in tokens:
            try:
                out.append(int(t))
            except ValueError:
                out.append(t)
        return out
    return tokens


def read_candidates_npz(path) -> dict:
    """The arrays of a candidate npz (``format``, ``version``, ``user_ids``,
    ``offsets`` as int64, ``item_ids``, ``scores`` if present), read within
    bounds and checked: the format tag, a version this code reads, CSR
    offsets consistent with ``item_ids`` (and ``scores``).  Every problem is
    a ValueError naming the file.  The trainer's reader uses it too."""
    path = os.fspath(path)

    def fail(msg: str) -> ValueError:
        return ValueError(f"{path}: not a candidates file: "
                          f"{'the file ' if msg.startswith('is ') else ''}{msg}")

    z = read_npz(path, _NPZ_LAYOUT, fail)
    tag = str(z["format"][()])
    if tag != CANDIDATES_FORMAT:
        raise fail(f"format tag {tag[:80]!r}, expected {CANDIDATES_FORMAT!r}")
    version = int(z["version"][()]) if "version" in z else 1
    if not 1 <= version <= CANDIDATES_VERSION:
        raise fail(f"version {version} (this deeprec-edge reads 1..{CANDIDATES_VERSION})")
    z["offsets"] = offsets = z["offsets"].astype(np.int64)
    n = z["item_ids"].shape[0]
    if offsets.shape != (z["user_ids"].shape[0] + 1,) or offsets[0] != 0 or offsets[-1] != n \
            or np.any(np.diff(offsets) < 0) or ("scores" in z and z["scores"].shape != (n,)):
        raise ValueError(f"{path}: inconsistent offsets/item_ids/scores lengths in the "
                         f"candidates file")
    return z


def read_candidates(path, model=None, user: Optional[str] = None) -> list:
    """Candidate item ids (catalogue ids, in file order) for one user."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(2, f"candidate file not found: {path}", path)
    if path.endswith(".npz"):
        z = read_candidates_npz(path)
        users = [str(u) for u in z["user_ids"].tolist()]
        offsets, ids = z["offsets"], z["item_ids"]
        u = _pick_user(users, user, path)
        k = users.index(u)
        return ids[offsets[k]:offsets[k + 1]].tolist()
    try:
        return _read_text(path, model, user)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not valid UTF-8 text ({e.reason})") from None
    except csv.Error as e:
        raise ValueError(f"{path}: malformed CSV ({e})") from None


def _read_text(path: str, model, user: Optional[str]) -> list:
    # utf-8-sig: a byte-order mark (Excel's "CSV UTF-8") is not part of the first name
    with open(path, newline="", encoding="utf-8-sig") as f:
        first = f.readline()
        f.seek(0)
        # the header as CSV (R's write.csv quotes every name)
        header = [c.strip().lower() for c in next(csv.reader([first]), [])]
        if "item_id" in header and len(header) > 1:
            reader = csv.reader(f)
            names = [c.strip().lower() for c in next(reader)]
            ic = names.index("item_id")
            uc = names.index("user_id") if "user_id" in names else None
            need = max(ic, -1 if uc is None else uc) + 1
            items, users = [], []
            for row in reader:
                if not row:
                    continue
                if len(row) < need:
                    raise ValueError(f"{path}, line {reader.line_num}: {len(row)} field(s), "
                                     f"the header names {len(names)}")
                items.append(row[ic].strip())
                if uc is not None:
                    users.append(row[uc].strip())
            if uc is not None:
                u = _pick_user(users, user, path)
                items = [i for i, v in zip(items, users) if v == u]
            return _typed(items, model)
        lines = [ln.strip() for ln in f if ln.strip()]
        if lines and lines[0].strip('"').lower() == "item_id":
            lines = lines[1:]
        return _typed(lines, model)


# --------------------------------------------------------------------------
# the device's own candidates
# --------------------------------------------------------------------------

def item_neighbors(model, items, k: int = 10) -> np.ndarray:
    """The ``k`` nearest items of each of ``items`` (dense indices) in the
    model's output table, by inner product ``O_i . O_j`` (the model's own
    score geometry; never the item itself; equal scores: the lower index
    first).  Returns int64 ``[len(items), k]`` (-1 where the catalogue has
    fewer).  One implementation for the device and the trainer's
    evaluation."""
    items = np.asarray(items, np.int64).reshape(-1)
    pre = getattr(model, "neighbors", None)
    if pre is not None:                       # a precomputed table (the evaluation's)
        return pre[items, :k]
    from ._tables import matmul_t
    O = model.out_table                 # float32, or a compressed table (rows on demand)
    N = O.shape[0]
    out = np.full((items.size, k), -1, np.int64)
    if items.size == 0 or k <= 0 or N <= 1:
        return out
    step = max(1, (1 << 22) // N)
    for a in range(0, items.size, step):
        q = np.ascontiguousarray(O[items[a:a + step]], np.float32)
        S = matmul_t(q, O)
        S[np.arange(q.shape[0]), items[a:a + step]] = -np.inf
        kk = min(k, N - 1)
        # stable: equal scores keep the lower index first
        order = np.argsort(-S, axis=1, kind="stable")[:, :kk]
        out[a:a + step, :kk] = order
    return out


def _dense_indices(a, name: str, n_items: int) -> np.ndarray:
    """``a`` as int64 dense indices, each in [0, n_items), or a ValueError
    naming the argument (catalogue ids map to indices with
    ``model.item_index``)."""
    x = np.asarray(a)
    if x.size == 0:
        return np.zeros(0, np.int64)
    if x.dtype.kind not in "iu":
        raise ValueError(f"{name}: expected integer item indices, got {x.dtype} "
                         f"(map catalogue ids with model.item_index)")
    x = x.astype(np.int64).reshape(-1)
    bad = (x < 0) | (x >= n_items)
    if bad.any():
        raise ValueError(f"{name}: index {int(x[bad][0])} is outside [0, {n_items - 1}] "
                         f"({int(bad.sum())} of {x.size} entries)")
    return x


def model_ranking(model, history_items, session_start=None, n: int = 500) -> np.ndarray:
    """The model's own ``n`` best items (dense indices, best first) for the
    user's state after ``history_items`` (dense indices, time order;
    ``session_start``: bool per click, or None for one session): the score
    :class:`~deeprec_edge.Session` ranks by, repeat component included, over
    the whole catalogue.  Equal scores: the lower index first; non-finite
    scores last.  An empty history gives an empty array.

    A device calls it once when a session begins (one full scoring) and
    passes it to :func:`device_candidates` as ``ranked``; each click then
    ranks only the candidate list."""
    from ._engine import user_vectors
    from ._tables import score_topk
    from .model import params_of
    from .repeat import feature_dot, history_features

    h = _dense_indices(history_items, "history_items", model.n_items)
    if h.size == 0 or n <= 0:
        return np.zeros(0, np.int64)
    starts = None if session_start is None else np.asarray(session_start, bool).reshape(-1)
    if starts is not None and starts.shape != h.shape:
        raise ValueError(f"session_start has {starts.size} entries for {h.size} clicks")
    p = params_of(model)
    pos = np.array([h.size - 1], np.int64)
    u = user_vectors(p, h, starts, pos, not model.carry_state)[0]
    # as Session ranks: scale * (O.u + b) + w.phi orders items as
    # O.u + b + w.phi / scale (scale > 0), so the repeat term joins the bias of
    # the user's items and the kernels' exact top-k (ties to the lower index,
    # non-finite scores last) does the rest
    bias = np.array(p.b_out, np.float32)
    spec = model.repeat
    if spec.active:
        _, cols, phi = history_features(h, starts, pos, spec.memory)
        bias[cols] += (feature_dot(phi, spec.weights) / spec.scale).astype(np.float32)
    idx, _ = score_topk(p.out_table, np.ascontiguousarray(u, np.float32),
                        min(int(n), model.n_items), bias=bias)
    return idx.astype(np.int64)


def returns_favoured(model) -> bool:
    """Whether the model's repeat component makes a return to an item the
    user clicked once, five clicks ago, at least as likely as any other item
    (``w . phi >= 0``).  False for a model without the component (it excludes
    clicked items) and for catalogues nobody returns to (MovieLens: ``seen``
    is strongly negative)."""
    if not getattr(model, "has_repeat", False):
        return False
    w = np.asarray(model.repeat.w, np.float64)
    phi = np.array([1.0, np.log(2.0), np.log(6.0), 0.0, 0.0])
    return bool(w @ phi >= 0.0)


def device_candidates(model, history_items, *, n: int = 500, memory: Optional[int] = 300,
                      n_recent: int = 10, n_neighbors: int = 40,
                      neighbors: Optional[np.ndarray] = None, ranked: Optional[np.ndarray] = None,
                      cloud: Optional[List] = None, fill: Optional[np.ndarray] = None,
                      exclude_seen: Optional[bool] = None) -> np.ndarray:
    """The candidate list a device builds from its own history (dense
    indices, at most ``n``, in this order):

    1. the user's distinct items, newest first (at most ``memory``), when the
       model says returns are likely (:func:`returns_favoured`);
    2. the ``n_neighbors`` neighbours of each of the ``n_recent`` newest
       items -- from ``neighbors`` (an int table ``[N, k]``, -1 padded, e.g.
       the cloud's item-item CF lists) or else the output-table neighbours
       (:func:`item_neighbors`);
    3. ``ranked``: the model's own ranking of the catalogue (dense indices,
       best first) for the user's state when the current session began --
       one full scoring per session (:func:`session_ranking`), after which
       every click ranks only the list;
    4. the cloud's set ``cloud`` (dense indices, best first);
    5. ``fill`` (e.g. the items by popularity) until ``n``.

    ``exclude_seen`` (default: when the model does *not* make returns likely,
    i.e. ``not returns_favoured(model)``) leaves the user's own items out of
    every part: they would take places that the model itself ranks low.

    Computed on the device: nothing leaves it.  Re-built as clicks arrive,
    the list follows the session (its neighbours change with every click)."""
    h = _dense_indices(history_items, "history_items", model.n_items)[::-1]
    _, first = np.unique(h, return_index=True)
    recent = h[np.sort(first)]
    favoured = returns_favoured(model)
    if exclude_seen is None:
        exclude_seen = not favoured
    parts = []
    if (memory is None or memory > 0) and favoured and not exclude_seen:
        parts.append(recent[:memory])             # None: every item of hers
    if n_recent > 0 and n_neighbors > 0 and recent.size:
        q = recent[:n_recent]
        if neighbors is not None:
            table = np.asarray(neighbors)
            if table.ndim != 2 or table.shape[0] != model.n_items:
                raise ValueError(f"neighbors: expected a [{model.n_items}, k] table of item "
                                 f"indices, got shape {table.shape}")
            nb = table[q, :n_neighbors].reshape(-1)
            nb = _dense_indices(nb[nb != -1], "neighbors", model.n_items)   # -1: padding
        else:
            nb = item_neighbors(model, q, n_neighbors).reshape(-1)
        parts.append(nb[nb >= 0].astype(np.int64))
    for name, src in (("ranked", ranked), ("cloud", cloud)):
        if src is not None:
            parts.append(_dense_indices(src, name, model.n_items))
    if fill is not None:
        room = n + int(sum(x.size for x in parts)) + (recent.size if exclude_seen else 0)
        parts.append(_dense_indices(np.asarray(fill).reshape(-1)[:room], "fill", model.n_items))
    if not parts:
        return np.zeros(0, np.int64)
    allc = np.concatenate(parts)
    _, first = np.unique(allc, return_index=True)
    allc = allc[np.sort(first)]
    if exclude_seen and recent.size:
        allc = allc[~np.isin(allc, recent)]
    return allc[:n]

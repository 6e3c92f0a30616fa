"""Repeat-aware scoring: what the user clicked before, and how recently.

On shopping logs a third to two thirds of clicks return to an item the user
clicked before; a next-item GRU alone ranks such items no better than any
other.  A model with a *repeat component* scores

    s_i = scale * (O_i . u + b_i) + w . phi_i        (phi_i = 0 for unseen items)

where ``phi_i`` are a handful of features of the user's own history,
computed over a bounded **repeat memory** (the ``memory`` most recently
clicked distinct items, least recently clicked evicted first):

=============  ================================================================
``seen``       1 for every item in the memory
``log_count``  log(1 + clicks on the item so far)
``log_age``    log(1 + clicks since the item's last click) -- 0 for the item
               just clicked
``is_last``    1 for the item just clicked
``in_session`` 1 if the item was clicked in the current session
=============  ================================================================

The memory persists across sessions (a session start resets the GRU state,
not what the user bought last month); clicks are counted from the start of
the history.  ``scale`` and ``w`` are learned by the trainer on clicks the
GRU did not train on (``deeprec_edge.trainer.calibrate``); a personal model
carries its own fine-tuned ``w``.  A model without the component (a
version-1 file) has ``scale = 1, w = 0``: plain ``O_i . u + b_i``.

One implementation serves every use: :class:`RepeatMemory` is updated one
click at a time (streaming :class:`~deeprec_edge.Session`) and
:func:`history_features` replays a whole history with it to give the sparse
features at many positions at once (evaluation, fine-tuning).  numpy only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "FEATURES",
    "DEFAULT_MEMORY",
    "RepeatSpec",
    "RepeatMemory",
    "history_features",
    "feature_dot",
    "add_repeat_scores",
]

#: Names of the repeat features, in the order of the weight vector ``w``.
FEATURES: Tuple[str, ...] = ("seen", "log_count", "log_age", "is_last", "in_session")
#: Default size of the repeat memory (distinct items).
DEFAULT_MEMORY = 500


@dataclass(frozen=True)
class RepeatSpec:
    """A model's repeat component: ``scale``, weights ``w`` (one per
    feature of :data:`FEATURES`) and the memory size."""

    scale: float = 1.0
    w: Tuple[float, ...] = (0.0,) * len(FEATURES)
    memory: int = DEFAULT_MEMORY

    @property
    def active(self) -> bool:
        """False for the plain model (``scale == 1`` and ``w == 0``)."""
        return self.scale != 1.0 or any(x != 0.0 for x in self.w)

    @property
    def weights(self) -> np.ndarray:
        return np.asarray(self.w, np.float32)


class RepeatMemory:
    """The user's recently clicked distinct items, with counts and ages.

    ``click(item, session_start)`` records a click; :meth:`features` gives
    the items in memory and their feature rows (float32 [m, F]).  At most
    ``capacity`` distinct items are kept; a new item evicts the one whose
    last click is oldest.  Items are dense catalogue indices.
    """

    def __init__(self, capacity: int = DEFAULT_MEMORY):
        if capacity < 1:
            raise ValueError(f"repeat memory capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.items = np.full(self.capacity, -1, np.int64)
        self.count = np.zeros(self.capacity, np.int64)
        self.last = np.full(self.capacity, -1, np.int64)      # click number of the last click
        self.session = np.full(self.capacity, -1, np.int64)   # session number of the last click
        self._slot: dict = {}
        self.n_clicks = 0       # clicks recorded
        self.n_sessions = 0     # sessions started
        self.size = 0

    def clear(self) -> None:
        """Forget everything (a new user)."""
        self.__init__(self.capacity)

    def click(self, item: int, session_start: bool = False) -> None:
        """Record a click on ``item``; ``session_start`` marks the first click
        of a session (the first click ever always starts one)."""
        item = int(item)
        if session_start or self.n_clicks == 0:
            self.n_sessions += 1
        s = self._slot.get(item)
        if s is None:
            if self.size < self.capacity:
                s = self.size
                self.size += 1
            else:
                s = int(np.argmin(self.last))
                del self._slot[int(self.items[s])]
                self.count[s] = 0
            self.items[s] = item
            self._slot[item] = s
        self.count[s] += 1
        self.last[s] = self.n_clicks
        self.session[s] = self.n_sessions
        self.n_clicks += 1

    def features(self) -> Tuple[np.ndarray, np.ndarray]:
        """``(items int64 [m], phi float32 [m, F])`` of the items in memory
        (slot order), after the clicks recorded so far."""
        m = self.size
        items = self.items[:m].copy()
        phi = np.empty((m, len(FEATURES)), np.float32)
        if m == 0:
            return items, phi
        age = (self.n_clicks - 1) - self.last[:m]
        phi[:, 0] = 1.0
        phi[:, 1] = np.log1p(self.count[:m])
        phi[:, 2] = np.log1p(age)
        phi[:, 3] = age == 0
        phi[:, 4] = self.session[:m] == self.n_sessions
        return items, phi

    def state(self) -> dict:
        """Arrays of the memory (for saving a session)."""
        m = self.size
        return {"items": self.items[:m].copy(), "count": self.count[:m].copy(),
                "last": self.last[:m].copy(), "session": self.session[:m].copy(),
                "clock": np.array([self.n_clicks, self.n_sessions], np.int64)}

    def load_state(self, d: dict, n_items: Optional[int] = None) -> None:
        """Restore :meth:`state` (validated: shapes, ranges, no duplicates)."""
        items = np.asarray(d["items"], np.int64).reshape(-1)
        m = items.shape[0]
        arrs = {k: np.asarray(d[k], np.int64).reshape(-1) for k in ("count", "last", "session")}
        clock = np.asarray(d["clock"], np.int64).reshape(-1)
        if any(a.shape[0] != m for a in arrs.values()) or clock.shape[0] != 2:
            raise ValueError("repeat memory state: arrays of different lengths")
        if m > self.capacity:
            raise ValueError(f"repeat memory state holds {m} items; capacity is {self.capacity}")
        if m and (items.min() < 0 or (n_items is not None and items.max() >= n_items)):
            raise ValueError("repeat memory state: item indices out of range")
        if np.unique(items).shape[0] != m:
            raise ValueError("repeat memory state: duplicate items")
        n_clicks, n_sessions = int(clock[0]), int(clock[1])
        if m and (arrs["count"].min() < 1 or arrs["last"].min() < 0
                  or arrs["last"].max() >= n_clicks or arrs["session"].max() > n_sessions):
            raise ValueError("repeat memory state: inconsistent counts or clocks")
        self.clear()
        self.items[:m], self.count[:m] = items, arrs["count"]
        self.last[:m], self.session[:m] = arrs["last"], arrs["session"]
        self.size, self.n_clicks, self.n_sessions = m, n_clicks, n_sessions
        self._slot = {int(i): s for s, i in enumerate(items.tolist())}


def history_features(items: Sequence[int], session_start: Optional[np.ndarray],
                     positions: Sequence[int], capacity: int = DEFAULT_MEMORY
                     ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Repeat features after each click in ``positions`` of one history.

    Replays ``items`` (dense indices, time order) through a
    :class:`RepeatMemory`; row ``r`` describes the memory right after click
    ``positions[r]``.  Returns sparse ``(rows int64, cols int64, phi
    float32 [nnz, F])``.  ``session_start`` (bool per click, or None: one
    session) marks session starts.
    """
    items = np.asarray(items, np.int64)
    pos = np.asarray(positions, np.int64)
    n = items.shape[0]
    if pos.size and (pos.min() < 0 or pos.max() >= n):
        raise IndexError(f"positions must be in [0, {n}), got [{pos.min()}, {pos.max()}]")
    ss = (np.zeros(n, bool) if session_start is None
          else np.asarray(session_start, bool).reshape(-1))
    order = np.argsort(pos, kind="stable")
    mem = RepeatMemory(capacity)
    rows, cols, phis = [], [], []
    nxt = 0
    it, st = items.tolist(), ss.tolist()
    for r in order.tolist():
        p = int(pos[r])
        while nxt <= p:
            mem.click(it[nxt], st[nxt])
            nxt += 1
        c, f = mem.features()
        rows.append(np.full(c.shape[0], r, np.int64))
        cols.append(c)
        phis.append(f)
    if not rows:
        return (np.zeros(0, np.int64), np.zeros(0, np.int64),
                np.zeros((0, len(FEATURES)), np.float32))
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(phis)


def feature_dot(phi: np.ndarray, w: Any) -> np.ndarray:
    """``phi @ w`` for repeat cells (``phi`` [n, F], ``w`` [F]) in ``phi``'s
    float dtype, one column at a time in a fixed order.  Not a BLAS call: a
    matrix-vector product this small has raised spurious "invalid value"
    floating-point warnings here on finite inputs (OpenBLAS, AVX-512), and
    its rounding would depend on the BLAS kernel."""
    phi = np.asarray(phi)
    dt = phi.dtype if phi.dtype.kind == "f" else np.dtype(np.float32)
    w = np.asarray(w, dt).reshape(-1)
    if phi.ndim != 2 or phi.shape[1] != w.shape[0]:
        raise ValueError(f"repeat features of shape {phi.shape} and {w.shape[0]} weights")
    out = np.zeros(phi.shape[0], dt)
    for j in range(w.shape[0]):
        out += phi[:, j] * w[j]
    return out


def add_repeat_scores(S: np.ndarray, rows: np.ndarray, cols: np.ndarray, phi: np.ndarray,
                      spec: RepeatSpec, row_offset: int = 0) -> np.ndarray:
    """``S <- scale * S + w . phi`` on the sparse cells (in place; ``S``
    holds ``O_i . u + b_i`` for a block of rows starting at ``row_offset``).
    Cells of rows outside the block are ignored."""
    if spec.scale != 1.0:
        S *= np.float32(spec.scale) if S.dtype == np.float32 else spec.scale
    if rows.size == 0:
        return S
    sel = (rows >= row_offset) & (rows < row_offset + S.shape[0])
    if not sel.all():
        rows, cols, phi = rows[sel], cols[sel], phi[sel]
    vals = feature_dot(phi, spec.weights)
    np.add.at(S, (rows - row_offset, cols), vals.astype(S.dtype))
    return S

"""Streaming sessions: one click at a time, recommendations in microseconds.

A :class:`Session` keeps every GRU layer's state for one user.  ``click``
advances all layers with the batch-1 step kernel and recomputes the user
vector in a single C call; ``recommend`` ranks the candidates (or the whole
catalogue) with the fused scoring + top-k kernel.  A session is safe to use
from several threads (one lock per session), and its state can be saved and
restored (``state_dict`` / ``load_state_dict``, or ``save`` / ``load`` to an
``.npz`` written atomically).
"""
from __future__ import annotations

import json
import math
import threading
from typing import Iterable, Optional, Sequence, Tuple

import numpy as np

from ._core import StreamCore
from . import _tables
from ._atomic import atomic_write
from .quant import Compressed
from .repeat import RepeatMemory, feature_dot
from ._npz import Expect, read_npz

__all__ = ["Session"]

_STATE_FORMAT = "deeprec-edge/session"


class Session:
    """Streaming next-item recommendations for one user.

    Parameters
    ----------
    model : deeprec_edge.model.Model
        A global or personal model.
    candidates : sequence of catalogue item ids, optional
        Rank only these items (default: the whole catalogue).  Unknown ids
        are ignored, and an id listed twice is one candidate (as in
        :func:`deeprec_edge.recommend`).
    exclude_clicked : bool, optional
        Never recommend an item already clicked in this session.  Default:
        True for a model without a repeat component; False for a model with
        one (:mod:`deeprec_edge.repeat`), which decides itself how likely the
        user is to return to an item.
    history : History, optional
        The user's past clicks (:func:`deeprec_edge.read_history` with the
        same model): they fill the repeat memory, the newest session's
        clicks set the GRU state (every click, for a model that carries its
        state across sessions), and every item of the history counts as
        clicked until the next session starts -- so ``recommend`` gives what
        :func:`deeprec_edge.recommend` gives on that history.
    weight_dtype : {"float32", "float16"}
        Storage of the model's float32 GRU weights for the per-click step.
        "float32" (default) follows the model exactly.  "float16" steps with an IEEE
        binary16 copy of every GRU weight matrix: half the bytes streamed per
        click (a two-layer H=100 model and 500 candidates then fit in a
        512 KB L2 cache), float32 arithmetic, and user vectors within about
        1e-3 of the float32 ones (scores and rankings may differ between
        near-tied items).  A compressed model file (float16 or int8/int4/int3
        matrices, :mod:`deeprec_edge.quant`) is used as stored either way:
        its item tables are scored and its GRU layers stepped in their own
        storage, never inflated to float32.

    The candidates' output rows are gathered once into a contiguous table
    (in the model's storage), so ``recommend`` streams them instead of
    picking rows out of the whole catalogue.

    Clicks carry an optional unix timestamp: a gap longer than the model's
    session gap starts a new session (every layer's state is reset), unless
    the model was trained with carried-over user state.

    A model with a repeat component keeps a **repeat memory** of the user's
    recently clicked items across sessions (a new session resets the GRU
    state, not what the user bought last month); those items always join
    the candidates, and scores are ``scale * (O_i . u + b_i) + w . phi_i``
    exactly as in :func:`deeprec_edge.recommend`.
    """

    def __init__(self, model, candidates: Optional[Iterable] = None,
                 exclude_clicked: Optional[bool] = None, weight_dtype: str = "float32",
                 history=None):
        from .model import params_of
        p = params_of(model)
        self.model = model
        self._params = p
        E, E_scale = _tables.kernel_args(model.E)
        O, O_scale = _tables.scoring_args(model.out_table)
        self._core = StreamCore(E, [_step_layer(layer) for layer in model.layers], p.W_p, p.b_p,
                                O, p.b_out, p.activation, weight_dtype=weight_dtype,
                                E_scale=E_scale, O_scale=O_scale)
        self._lock = threading.Lock()
        self._ids = np.asarray(model.item_ids)
        self._index = model.id_to_index
        self._clicked = np.zeros(self._ids.shape[0], np.uint8)
        self._history: list = []
        self._spec = model.repeat
        self._mem = RepeatMemory(self._spec.memory) if model.has_repeat else None
        self._new_session = True
        self.exclude_clicked = (not model.has_repeat) if exclude_clicked is None \
            else bool(exclude_clicked)
        if candidates is not None:
            from ._checks import check_item_ids
            check_item_ids(candidates, "candidates")
        self._cand = None if candidates is None else self._dense(candidates)
        self._cand_base = self._cand
        if self._cand is not None:
            self._gather()
        self.session_gap = model.session_gap_seconds
        self.carry_state = model.carry_state
        self._last_time: Optional[float] = None
        if history is not None:
            self._replay(history)

    def _gather(self) -> None:
        """Gather the candidates' output rows (``self._cand``, sorted) into
        the contiguous table ``recommend`` streams."""
        p = self._params
        if self._cand is not None:
            # the candidates' rows, gathered once, in item-index order (so
            # equal scores go to the lower item index, as everywhere else);
            # clicks are mirrored into a mask in that order
            c = self._cand.astype(np.intp)
            self._O_c, self._O_cs = _tables.scoring_args(_tables.take(p.out_table, c))
            self._b_c = np.ascontiguousarray(p.b_out[c])
            self._c_ids = (np.ascontiguousarray(self._ids[c])
                           if self._ids.dtype == np.int64 else None)
            self._core.set_candidates(self._O_c, self._b_c, self._c_ids, self._O_cs)
            self._c_clicked = np.zeros(c.shape[0], np.uint8)
            self._c_pos: dict = {}
            for j, i in enumerate(self._cand.tolist()):
                self._c_pos.setdefault(i, []).append(j)
            self._c_clicked[:] = self._clicked[c]

    def _replay(self, history) -> None:
        """Fill the repeat memory with every past click, step the GRU through
        the newest session's clicks (every click, for a model that carries
        its state across sessions) and count every item of the history as
        clicked: then ``recommend`` ranks as :func:`deeprec_edge.recommend`
        does on the same history.  Sessions are the history's own (its
        session column, else the model's gap rule), never re-cut here."""
        from .api import _history_items
        items = _history_items(self.model, history)
        if items.size == 0:
            return
        starts = np.asarray(history.session_starts(self.session_gap), bool).copy()
        starts[0] = True
        last = 0 if self.carry_state else int(np.flatnonzero(starts)[-1])
        with self._lock:
            if self._mem is not None:       # the earlier sessions: the memory only
                for i, st in zip(items[:last].tolist(), starts[:last].tolist()):
                    self._mem.click(i, st)
        for j in range(last, items.size):
            self._click_index(int(items[j]), None, start=bool(starts[j]))
        with self._lock:
            self._last_time = float(np.asarray(history.timestamps, np.float64)[-1])
            self._clicked[items] = 1
            if self._cand is not None:
                if self._mem is not None:
                    self._cand = self._with_memory()
                self._gather()

    def _with_memory(self) -> np.ndarray:
        """The session's candidates with the repeat memory's items, which
        always join them (sorted int32)."""
        return np.union1d(self._cand_base, self._mem.items[:self._mem.size]).astype(np.int32)

    # -- ids ------------------------------------------------------------
    def _dense(self, ids: Iterable) -> np.ndarray:
        """Dense indices of the known ids, sorted, each once (ids matched as
        :meth:`Model.item_index` matches them, like :func:`recommend`)."""
        ids = list(ids)
        if not ids:
            return np.zeros(0, np.int32)
        idx, unknown = self.model.item_index(ids)
        return np.unique(np.asarray(idx)[~np.asarray(unknown)]).astype(np.int32)

    def _lookup(self, item) -> int:
        try:
            return self._index[item]
        except (KeyError, TypeError):
            # numpy scalars, decimal strings for integer catalogues, integers for
            # string ones: as Model.item_index matches them
            idx, unknown = self.model.item_index(item)
            if idx.ndim == 0 and not bool(unknown):
                return int(idx)
            raise KeyError(f"unknown item id {item!r}: not in the model's catalogue") from None

    # -- streaming ------------------------------------------------------
    def click(self, item, timestamp: Optional[float] = None) -> None:
        """Record a click on catalogue item id ``item`` (at unix time
        ``timestamp``, optional).  Raises KeyError for an unknown id."""
        self._click_index(self._lookup(item), timestamp)

    def _click_index(self, i: int, timestamp: Optional[float],
                     start: Optional[bool] = None) -> None:
        """Record a click; ``start`` says whether it begins a session (None:
        by the gap rule from ``timestamp``)."""
        if timestamp is not None:
            timestamp = float(timestamp)
            if not math.isfinite(timestamp):
                # a NaN would compare False with every later gap: no session would end
                raise ValueError(f"click timestamp must be a finite unix time, got {timestamp}")
        with self._lock:
            if start is None:
                start = (timestamp is not None and self._last_time is not None
                         and timestamp - self._last_time > self.session_gap)
            if start:
                if not self.carry_state:       # the GRU starts afresh, as reset()
                    self._core.reset()
                    self._forget_clicks()
                    self._history.clear()
                self._new_session = True       # the repeat memory's session count, always
            if timestamp is not None:
                self._last_time = float(timestamp)
            self._core.click(i)
            self._clicked[i] = 1
            if self._mem is not None:
                known = i in self._mem._slot
                self._mem.click(i, self._new_session)
                if self._cand is not None and not known:
                    # the items in the repeat memory always join the candidates (in
                    # index order); a new item may also have evicted an old one
                    self._cand = self._with_memory()
                    self._gather()
            self._new_session = False
            if self._cand is not None:
                for j in self._c_pos.get(i, ()):
                    self._c_clicked[j] = 1
            self._history.append(i)

    def _forget_clicks(self) -> None:
        self._clicked[:] = 0
        if self._cand is not None:
            self._c_clicked[:] = 0

    def recommend(self, k: int = 20, candidates: Optional[Iterable] = None,
                  exclude_clicked: Optional[bool] = None) -> Tuple[np.ndarray, np.ndarray]:
        """The ``k`` best items now: ``(item ids, scores)``, best first.

        ``candidates`` overrides the session's candidate list for this call.
        """
        from ._checks import RANK_K, check_item_ids
        k = RANK_K.check(k, "k")
        if candidates is not None:
            check_item_ids(candidates, "candidates")
        excl = self.exclude_clicked if exclude_clicked is None else exclude_clicked
        if self._mem is not None:
            return self._recommend_repeat(k, candidates, excl)
        if candidates is None and self._cand is not None:
            # the session's own candidates: the gathered table
            with self._lock:
                out, scores = self._core.topk_candidates(k, self._c_clicked if excl else None)
            if self._c_ids is None:
                out = self._ids[self._cand[out]]
            return out, scores
        cand = self._cand if candidates is None else self._dense(candidates)
        with self._lock:
            idx, scores = self._core.topk(k, cand, self._clicked if excl else None)
        return self._ids[idx], scores

    def _recommend_repeat(self, k: int, candidates: Optional[Iterable],
                          excl: bool) -> Tuple[np.ndarray, np.ndarray]:
        """recommend() for a model with a repeat component: the user's items
        get ``w . phi / scale`` added to their bias (the same ranking as
        ``scale * (O.u + b) + w . phi``; scores reported on that scale)."""
        scale = np.float32(self._spec.scale)
        with self._lock:
            mi, phi = self._mem.features()
            add = feature_dot(phi, self._spec.weights) / scale
            if candidates is None and self._cand is not None:
                b_c = self._b_c.copy()
                for i, v in zip(mi.tolist(), add.tolist()):
                    for j in self._c_pos.get(i, ()):
                        b_c[j] += v
                out, scores = self._core.topk_candidates(k, self._c_clicked if excl else None,
                                                         b_c)
                if self._c_ids is None:
                    out = self._ids[self._cand[out]]
                return out, scores * scale
            u = self._core.user_vector
            clicked = self._clicked.copy() if excl else None
        bias = self._params.b_out.copy()
        bias[mi] += add.astype(np.float32)
        cand = None
        if candidates is not None:
            cand = np.union1d(self._dense(candidates), mi).astype(np.int32)
        idx, scores = _tables.score_topk(self._params.out_table,
                                         np.ascontiguousarray(u, np.float32), k, bias=bias,
                                         idx=cand, exclude=clicked)
        return self._ids[idx], scores * scale

    def reset(self, forget_history: bool = False) -> None:
        """Start a new session: zero every layer's state and forget this
        session's clicks.  The repeat memory (the user's items across
        sessions) is kept unless ``forget_history``."""
        with self._lock:
            self._core.reset()
            self._forget_clicks()
            self._history.clear()
            self._last_time = None
            self._new_session = True
            if forget_history and self._mem is not None:
                self._mem.clear()
                if self._cand_base is not None:
                    self._cand = self._cand_base
                    self._gather()

    @property
    def weight_dtype(self) -> str:
        """Storage of the GRU weights for the per-click step: "float32" or "float16"."""
        return self._core.weight_dtype

    @property
    def user_vector(self) -> np.ndarray:
        """The current user embedding u (float32 [d])."""
        with self._lock:
            return self._core.user_vector

    @property
    def clicks(self) -> int:
        """Number of clicks since the last reset."""
        return len(self._history)

    # -- persistence ----------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to resume: layer states, clicked items, last time."""
        with self._lock:
            d = {
                "state": self._core.get_state(),
                "clicked": np.asarray(self._history, np.int32),
                "last_time": np.float64(np.nan if self._last_time is None else self._last_time),
            }
            if self._mem is not None:
                d.update({f"memory.{k}": v for k, v in self._mem.state().items()})
            return d

    def load_state_dict(self, d: dict) -> None:
        """Restore a :meth:`state_dict` taken from a session of the same model."""
        # every check first, then the change: a state that fails leaves the session as it was
        clicked = np.asarray(d["clicked"]).reshape(-1)
        if clicked.size and (clicked.dtype.kind not in "iu" or clicked.min() < 0
                             or clicked.max() >= self._ids.shape[0]):
            raise ValueError("session state: clicked item indices out of range for this model")
        state = np.asarray(d["state"], np.float32).reshape(-1)
        n_state = int(self._core.get_state().shape[0])
        if state.shape[0] != n_state or not np.isfinite(state).all():
            raise ValueError(f"session state: 'state' must hold {n_state} finite numbers for "
                             f"this model, got {state.shape[0]}"
                             + ("" if state.shape[0] != n_state else " with non-finite values"))
        lt = float(np.asarray(d.get("last_time", np.nan), np.float64).reshape(-1)[0])
        if np.isinf(lt):
            raise ValueError(f"session state: last_time must be a finite unix time, got {lt}")
        mem = None
        if self._mem is not None:
            # a state without a memory (written by a model without one) starts empty:
            # the previous user's items must not stay
            mem = RepeatMemory(self._mem.capacity)
            if "memory.items" in d:
                mem.load_state({k[7:]: d[k] for k in d if k.startswith("memory.")},
                               n_items=self._ids.shape[0])
        with self._lock:
            self._core.set_state(state)
            if mem is not None:
                self._mem = mem
                if self._cand_base is not None:
                    self._cand = self._with_memory()
            self._forget_clicks()
            self._clicked[clicked.astype(np.int64)] = 1
            if self._cand is not None:
                self._gather()
            self._history = clicked.astype(np.int64).tolist()
            self._new_session = not self._history
            self._last_time = None if np.isnan(lt) else lt

    def _state_layout(self) -> dict:
        """The arrays of a state file of this session's model (for load)."""
        n_state = int(self._core.get_state().shape[0])
        out = {"meta": Expect("U", 0, 1 << 16), "state": Expect("f", 1, n_state),
               "clicked": Expect("iu", 1, 1 << 31), "last_time": Expect("f", 0)}
        if self._mem is not None:
            cap = self._mem.capacity
            for k in ("items", "count", "last", "session"):
                out[f"memory.{k}"] = Expect("iu", 1, cap, required=False)
            out["memory.clock"] = Expect("iu", 1, 2, required=False)
        return out

    def save(self, path) -> None:
        """Write the session state to ``path`` (.npz, atomically)."""
        sd = self.state_dict()
        meta = json.dumps({"format": _STATE_FORMAT, "version": 1,
                           "model_fingerprint": self.model.fingerprint()})

        def write(f):
            np.savez(f, meta=np.array(meta), **sd)

        atomic_write(path, write)

    def load(self, path) -> None:
        """Restore a state written by :meth:`save` for the same model.

        Raises ValueError saying what is wrong for an empty, truncated,
        corrupt or foreign file (read within bounds, headers before data:
        :func:`deeprec_edge._npz.read_npz`), FileNotFoundError when missing.
        """
        def fail(msg: str) -> ValueError:
            return ValueError(f"{path}: not a deeprec-edge session state: "
                              f"{'the file ' if msg.startswith('is ') else ''}{msg}")

        d = read_npz(path, self._state_layout(), fail)
        try:
            meta = json.loads(str(d.pop("meta")[()]))
        except (ValueError, RecursionError):    # not JSON, or nested beyond the decoder
            meta = None
        if not isinstance(meta, dict) or meta.get("format") != _STATE_FORMAT:
            raise ValueError(f"{path}: not a deeprec-edge session state (no "
                             f"{_STATE_FORMAT!r} record)")
        if meta.get("model_fingerprint") != self.model.fingerprint():
            raise ValueError(f"{path}: the session state belongs to a different model")
        self.load_state_dict(d)


def _step_layer(layer) -> tuple:
    """A GRU layer as the step kernels take it: its stored weights when
    W_ih and W_hh share a compressed dtype (int8/int4/int3 with their scales,
    float16), else float32 values (a mixed layer: a few hundred KB)."""
    W_ih, W_hh, b_ih, b_hh = layer
    if isinstance(W_ih, Compressed) and isinstance(W_hh, Compressed) and \
            W_ih.data.dtype == W_hh.data.dtype:
        if W_ih.scale is None and W_hh.scale is None:
            return (W_ih.data, W_hh.data, b_ih, b_hh)
        if W_ih.data.dtype == np.int8:
            return (W_ih.data, W_hh.data, b_ih, b_hh, W_ih.scale, W_hh.scale)
    from .quant import dequantize
    return (dequantize(W_ih), dequantize(W_hh), b_ih, b_hh)

"""Training engine shared by on-device fine-tuning and the cloud trainer.

Everything here is numpy plus the C kernels (:mod:`deeprec_edge.kernels`):

- :class:`Params` -- the model's arrays, float32, mutable in place;
- :func:`make_segments` -- cut a click sequence into windows (at session
  starts when states reset, and every ``window`` clicks);
- :func:`run_segments` -- exact forward of a stack of GRU layers over
  segments, batched in *waves* (the k-th window of every stream at once), so
  that a 100,000-click history never needs more than one window batch of
  activations in memory;
- :class:`NegativeSampler` -- negatives drawn proportionally to
  popularity^alpha, optionally mixed with a candidate set, with the log
  sampling probabilities for logQ correction;
- :class:`Trainer` -- truncated BPTT over shuffled windows with the sampled
  softmax (or BPR-max) loss, for the top ``n_trainable`` layers and the head
  (and, for the cloud trainer, embeddings and the output table); or, with
  ``TrainConfig.session_parallel``, GRU4Rec's session-parallel mini-batches
  (``batch_size`` sessions side by side, one click per step, states carried
  from step to step and reset at session starts, 1-step BPTT);
- :func:`distinct_loss` -- GRU4Rec's BPR-max (on ELU scores) and
  cross-entropy with logQ over the *distinct* items of a mini-batch's columns,
  duplicates folded in as counts (exactly GRU4Rec's loss, fewer columns).
  The cloud trainer uses it (numpy, float32); on-device fine-tuning keeps
  the C kernel ``sampled_loss``.

Truncated BPTT uses *epoch-start states*: at the start of an epoch one
forward pass (no gradients) computes each window's initial state for every
trainable layer; windows are then independent and can be shuffled and
batched freely.  A window's gradient stops at its start, as in any truncated
BPTT; the initial states lag the weights by at most one epoch.
"""
from __future__ import annotations

import heapq
import math
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence

import numpy as np

from . import kernels as K

__all__ = [
    "Params",
    "Segments",
    "make_segments",
    "next_targets",
    "run_segments",
    "NegativeSampler",
    "TrainConfig",
    "Trainer",
    "distinct_loss",
    "hidden_states",
    "user_vectors",
]

F32 = np.float32


# --------------------------------------------------------------------------
# parameters
# --------------------------------------------------------------------------


@dataclass
class Params:
    """The arrays of a GRU next-item model (float32, C-contiguous).

    ``layers[l] = [W_ih, W_hh, b_ih, b_hh]`` with PyTorch layout and gate
    order r, z, n.  ``O is None`` means tied embeddings (``O = E``).
    """

    E: np.ndarray
    layers: List[List[np.ndarray]]
    W_p: np.ndarray
    b_p: np.ndarray
    O: Optional[np.ndarray]
    b_out: np.ndarray
    activation: str = "tanh"

    @property
    def out_table(self) -> np.ndarray:
        """The output item table (``E`` when tied)."""
        return self.E if self.O is None else self.O

    @property
    def n_items(self) -> int:
        return int(self.E.shape[0])

    @property
    def hidden_sizes(self) -> List[int]:
        return [int(l[1].shape[1]) for l in self.layers]

    def copy(self) -> "Params":
        """A deep copy (fine-tuning never mutates the caller's model)."""
        return Params(
            self.E.copy(),
            [[a.copy() for a in layer] for layer in self.layers],
            self.W_p.copy(),
            self.b_p.copy(),
            None if self.O is None else self.O.copy(),
            self.b_out.copy(),
            self.activation,
        )


# --------------------------------------------------------------------------
# segments and targets
# --------------------------------------------------------------------------


@dataclass
class Segments:
    """Windows of a click sequence.

    ``start[s]``, ``length[s]``: the clicks ``start .. start+length-1``.
    ``prev[s]``: the segment whose final state is this one's initial state,
    or -1 for a zero initial state (a session start when states reset, or
    the beginning of the sequence).  Segments are in sequence order, so
    ``prev[s] < s``.
    """

    start: np.ndarray
    length: np.ndarray
    prev: np.ndarray

    def __len__(self) -> int:
        return int(self.start.shape[0])


def _reset_points(session_start: Optional[np.ndarray], reset_at_sessions: bool) -> np.ndarray:
    """Clicks where every layer's state starts from zero: 0, and each session
    start when states reset at sessions (int64, ascending)."""
    if session_start is None or not reset_at_sessions:
        return np.array([0], np.int64)
    starts = np.flatnonzero(np.asarray(session_start, bool)).astype(np.int64)
    if starts.size == 0 or starts[0] != 0:
        starts = np.concatenate([[0], starts])
    return starts


def make_segments(n: int, session_start: Optional[np.ndarray], window: int,
                  reset_at_sessions: bool = True) -> Segments:
    """Cut ``n`` clicks into windows of at most ``window`` clicks.

    With ``reset_at_sessions`` a window never spans a session start (the
    state resets there, so a new session begins from a zero state);
    otherwise the state is carried through the whole sequence.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if n == 0:
        e = np.zeros(0, np.int64)
        return Segments(e, e.copy(), e.copy())
    bounds = _reset_points(session_start, reset_at_sessions)
    ends = np.concatenate([bounds[1:], [n]])
    starts, lengths, prevs = [], [], []
    for b, e in zip(bounds.tolist(), ends.tolist()):
        s = b
        first = True
        while s < e:
            ln = min(window, e - s)
            starts.append(s)
            lengths.append(ln)
            prevs.append(-1 if first else len(starts) - 2)
            first = False
            s += ln
    return Segments(np.asarray(starts, np.int64), np.asarray(lengths, np.int64),
                    np.asarray(prevs, np.int64))


def next_targets(items: np.ndarray, session_start: Optional[np.ndarray],
                 reset_at_sessions: bool = True, limit: Optional[int] = None) -> np.ndarray:
    """Target of each click: the next click's item, or -1.

    A click has no target if it is the last one (or the last before
    ``limit``), or, when states reset at sessions, the last of its session.
    """
    n = items.shape[0]
    t = np.full(n, -1, np.int32)
    if n > 1:
        t[:-1] = items[1:]
        if reset_at_sessions and session_start is not None:
            ss = np.asarray(session_start, bool)
            t[:-1][ss[1:]] = -1
    if limit is not None and limit < n:
        t[max(limit - 1, 0):] = -1
    return t


def _waves(seg: Segments) -> List[np.ndarray]:
    """Group segments by depth (number of predecessors): each group's
    segments are independent given the previous groups' final states."""
    depth = np.zeros(len(seg), np.int64)
    prev = seg.prev
    for s in range(len(seg)):  # prev[s] < s, one pass suffices
        if prev[s] >= 0:
            depth[s] = depth[prev[s]] + 1
    order = np.argsort(depth, kind="stable")
    bounds = np.flatnonzero(np.diff(depth[order])) + 1
    return [g for g in np.split(order, bounds) if g.size]


def _batch_positions(seg: Segments, group: np.ndarray):
    """Time-major click positions of a batch of segments, sorted by length
    (descending, so the GRU kernels work on a prefix of active rows).
    Returns (group_sorted, T, lengths int32 [B], pos int64 [T, B] (-1 pads))."""
    order = np.argsort(-seg.length[group], kind="stable")
    g = group[order]
    lengths = seg.length[g].astype(np.int32)
    T = int(lengths.max()) if g.size else 0
    t = np.arange(T)[:, None]
    pos = seg.start[g][None, :] + t
    pos = np.where(t < lengths[None, :], pos, -1)
    return g, T, lengths, pos


def run_segments(params: Params, layer_ids: Sequence[int], inputs: Callable[[np.ndarray], np.ndarray],
                 seg: Segments, out: Optional[np.ndarray] = None, max_batch: int = 256,
                 keep_states: bool = False):
    """Exact forward (no gradients) of GRU layers ``layer_ids`` over segments.

    ``inputs(pos)`` returns the first layer's inputs for click positions
    ``pos`` (int64 [T, B], -1 for padding, whose rows may be anything
    finite) as float32 [T, B, I].  The last layer's outputs are written to
    ``out[pos]`` when ``out`` is given.  With ``keep_states`` returns a list
    (per layer) of float32 [n_segments, H] initial states of each segment.
    """
    nseg = len(seg)
    Hs = [int(params.layers[l][1].shape[1]) for l in layer_ids]
    h_end = [np.zeros((nseg, H), F32) for H in Hs]
    h_start = [np.zeros((nseg, H), F32) for H in Hs] if keep_states else None
    for wave in _waves(seg):
        for c in range(0, wave.size, max_batch):
            g, T, lengths, pos = _batch_positions(seg, wave[c:c + max_batch])
            x = inputs(pos)
            prev = seg.prev[g]
            has_prev = prev >= 0
            for j, l in enumerate(layer_ids):
                W_ih, W_hh, b_ih, b_hh = params.layers[l]
                h0 = np.zeros((g.size, Hs[j]), F32)
                if has_prev.any():
                    h0[has_prev] = h_end[j][prev[has_prev]]
                if keep_states:
                    h_start[j][g] = h0
                x, h_n, _ = K.gru_forward(x, W_ih, W_hh, b_ih, b_hh, h0=h0, lengths=lengths)
                h_end[j][g] = h_n
            if out is not None:
                valid = pos >= 0
                out[pos[valid]] = x[valid]
    return h_start


# --------------------------------------------------------------------------
# negatives
# --------------------------------------------------------------------------


class NegativeSampler:
    """Negatives drawn proportionally to ``popularity ** alpha``.

    With a candidate set, a share ``candidate_share`` of the probability
    mass goes uniformly to the candidates (device-side fine-tuning: the
    items the user will actually be ranked among).  ``logq(items)`` gives
    the log of each item's sampling probability for logQ correction.  A
    floor of 1e-3 of the uniform mass keeps every item's probability
    positive, so logQ stays finite for never-seen items.
    """

    def __init__(self, popularity: np.ndarray, alpha: float = 0.75,
                 candidates: Optional[np.ndarray] = None, candidate_share: float = 0.5,
                 rng: Optional[np.random.Generator] = None):
        pop = np.asarray(popularity, np.float64)
        n = pop.shape[0]
        if n == 0:
            raise ValueError("cannot sample negatives from an empty item table")
        w = np.power(np.maximum(pop, 0.0), alpha)
        s = w.sum()
        p = w / s if s > 0 else np.full(n, 1.0 / n)
        if candidates is not None and len(candidates) > 0:
            c = np.zeros(n)
            c[np.asarray(candidates, np.int64)] = 1.0
            p = (1.0 - candidate_share) * p + candidate_share * c / c.sum()
        p = (1.0 - 1e-3) * p + 1e-3 / n
        self.p = p
        self.cdf = np.cumsum(p)
        self.cdf /= self.cdf[-1]
        self._logp = np.log(p).astype(F32)
        self.rng = rng if rng is not None else np.random.default_rng(0)

    def sample(self, k: int) -> np.ndarray:
        """``k`` item indices (int32), with replacement."""
        u = self.rng.random(k)
        return np.minimum(np.searchsorted(self.cdf, u, side="right"), self.p.shape[0] - 1).astype(np.int32)

    def sample_many(self, k: int) -> np.ndarray:
        """``k`` item indices (int32) from the same distribution as
        :meth:`sample`, by Vose's alias method (O(1) per draw; the table is
        built on first use, O(n_items))."""
        if getattr(self, "_alias_prob", None) is None:
            self._build_alias()
        n = self.p.shape[0]
        idx = self.rng.integers(0, n, k)
        u = self.rng.random(k)
        return np.where(u < self._alias_prob[idx], idx, self._alias_idx[idx]).astype(np.int32)

    def _build_alias(self) -> None:
        n = self.p.shape[0]
        prob = (self.p * n).tolist()
        alias = list(range(n))
        small = [i for i, q in enumerate(prob) if q < 1.0]
        large = [i for i, q in enumerate(prob) if q >= 1.0]
        while small and large:
            s, l = small.pop(), large.pop()
            alias[s] = l
            prob[l] -= 1.0 - prob[s]
            (small if prob[l] < 1.0 else large).append(l)
        for i in small + large:  # leftovers are 1 up to rounding
            prob[i] = 1.0
        self._alias_prob = np.asarray(prob)
        self._alias_idx = np.asarray(alias, np.int64)

    def logq(self, items: np.ndarray) -> np.ndarray:
        """log sampling probability of each item (float32)."""
        return self._logp[items]


# --------------------------------------------------------------------------
# optimiser state
# --------------------------------------------------------------------------


class _Optimizer:
    """Adagrad / Adam / SGD over dense arrays and sparse table rows."""

    def __init__(self, kind: str, lr: float, momentum: float = 0.0, eps: float = 1e-6,
                 beta1: float = 0.9, beta2: float = 0.999):
        if kind not in ("adagrad", "adam", "sgd"):
            raise ValueError(f"optimizer must be 'adagrad', 'adam' or 'sgd', got {kind!r}")
        self.kind, self.lr, self.momentum, self.eps = kind, lr, momentum, eps
        self.beta1, self.beta2 = beta1, beta2
        self.state = {}
        self.step_no = 0

    def _slots(self, key, p):
        st = self.state.get(key)
        if st is None:
            if self.kind == "adam":
                st = (np.zeros_like(p), np.zeros_like(p))
            elif self.kind == "adagrad":
                n_slots = 2 if self.momentum > 0 else 1  # accumulator (+ momentum)
                st = tuple(np.zeros_like(p) for _ in range(n_slots))
            else:
                st = (np.zeros_like(p),) if self.momentum > 0 else ()
            self.state[key] = st
        return st

    def begin_step(self):
        self.step_no += 1

    def dense(self, key, p, g):
        st = self._slots(key, p)
        pf, gf = p.reshape(-1), g.reshape(-1)
        if self.kind == "adagrad":
            if self.momentum > 0:
                # mom = momentum * mom + adagrad_delta; p += mom, with the C kernels:
                # adagrad on mom adds the delta (and updates acc once), sgd takes
                # (1 - momentum) * old mom back out
                mf = st[1].reshape(-1)
                old = mf.copy()
                K.adagrad_step(mf, gf, st[0].reshape(-1), self.lr, self.eps)
                K.sgd_step(mf, old, 1.0 - self.momentum)
                p += st[1]
            else:
                K.adagrad_step(pf, gf, st[0].reshape(-1), self.lr, self.eps)
        elif self.kind == "adam":
            K.adam_step(pf, gf, st[0].reshape(-1), st[1].reshape(-1), self.step_no, self.lr,
                        self.beta1, self.beta2, 1e-8)
        else:
            K.sgd_step(pf, gf, self.lr, velocity=st[0].reshape(-1) if st else None,
                       momentum=self.momentum)

    def rows(self, key, table, rows, grad_rows):
        st = self._slots(key, table)
        if self.kind == "adagrad":
            if self.momentum > 0:
                # GRU4Rec's IndexedAdagradM on the touched rows (see dense())
                old = st[1][rows]
                K.adagrad_rows(st[1], st[0], rows, grad_rows, self.lr, self.eps)
                K.sgd_rows(st[1], rows, old, 1.0 - self.momentum)
                new = st[1][rows]
                np.negative(new, out=new)
                K.sgd_rows(table, rows, new, 1.0)
            else:
                K.adagrad_rows(table, st[0], rows, grad_rows, self.lr, self.eps)
        elif self.kind == "adam":
            K.adam_rows(table, st[0], st[1], rows, grad_rows, self.step_no, self.lr,
                        self.beta1, self.beta2, 1e-8)
        else:
            K.sgd_rows(table, rows, grad_rows, self.lr)


def _sum_rows(idx: np.ndarray, grads: np.ndarray):
    """Unique row ids and the summed gradient of each (sparse updates must
    list each row once)."""
    uniq, inv = np.unique(idx, return_inverse=True)
    out = np.zeros((uniq.size, grads.shape[1]), F32)
    np.add.at(out, inv, grads)
    return uniq.astype(np.int32), out


# --------------------------------------------------------------------------
# session-parallel mini-batches (GRU4Rec)
# --------------------------------------------------------------------------


@dataclass
class _Schedule:
    """GRU4Rec's session-parallel mini-batches, precomputed.

    Step ``s`` trains the events ``ptr[s]:ptr[s+1]``: event ``e`` feeds click
    ``pos[e]`` (its target is the next click) in slot ``slot[e]`` (slots are
    increasing within a step), and ``reset[e]`` says that click starts its
    stream (the slot's state is zeroed first).
    """

    ptr: np.ndarray
    pos: np.ndarray
    slot: np.ndarray
    reset: np.ndarray
    n_slots: int

    @property
    def n_steps(self) -> int:
        return int(self.ptr.shape[0] - 1)


def _session_schedule(targets: np.ndarray, session_start: Optional[np.ndarray],
                      reset_at_sessions: bool, batch_size: int,
                      rng: Optional[np.random.Generator] = None) -> _Schedule:
    """Streams (sessions, or the whole sequence when states are carried) go
    through ``batch_size`` slots in sequence order, one click per step, all
    slots in lockstep; when a stream ends, its slot takes the next stream
    (slots freed at the same step take them in slot order), and once no
    stream is left, finished slots drop out -- GRU4Rec's
    ``SessionDataIterator``.  A stream's trained clicks are those with a
    target, which :func:`next_targets` makes a prefix of the stream.  With
    ``rng`` the streams go in a random order instead."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = int(targets.shape[0])
    e64 = np.zeros(0, np.int64)
    if n == 0:
        return _Schedule(np.zeros(1, np.int64), e64, e64.copy(), np.zeros(0, bool), 0)
    starts = _reset_points(session_start, reset_at_sessions)
    has = targets >= 0
    cnt = np.add.reduceat(has.astype(np.int64), starts)
    keep = cnt > 0
    starts, cnt = starts[keep], cnt[keep]
    if rng is not None:
        perm = rng.permutation(starts.size)
        starts, cnt = starts[perm], cnt[perm]
    ns = int(starts.size)
    if ns == 0:
        return _Schedule(np.zeros(1, np.int64), e64, e64.copy(), np.zeros(0, bool), 0)
    n_slots = min(batch_size, ns)
    heap = [(0, b) for b in range(n_slots)]
    step0 = np.empty(ns, np.int64)
    slot = np.empty(ns, np.int64)
    for k, c in enumerate(cnt.tolist()):
        f, b = heapq.heappop(heap)
        step0[k] = f
        slot[k] = b
        heapq.heappush(heap, (f + c, b))
    total = int(cnt.sum())
    off = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    ev_step = np.repeat(step0, cnt) + off
    ev_slot = np.repeat(slot, cnt)
    ev_pos = np.repeat(starts, cnt) + off
    if not has[ev_pos].all():  # pragma: no cover - next_targets guarantees prefixes
        raise ValueError("targets of a stream must be a prefix of it")
    order = np.lexsort((ev_slot, ev_step))
    ev_step = ev_step[order]
    ptr = np.searchsorted(ev_step, np.arange(int(ev_step[-1]) + 2))
    return _Schedule(ptr.astype(np.int64), ev_pos[order], ev_slot[order], (off == 0)[order],
                     n_slots)


def _buf(ws: Optional[dict], name: str, shape, dtype=F32) -> np.ndarray:
    """A scratch array from ``ws`` (grown as needed, reused across calls:
    fresh arrays of a few hundred kB cost page faults on every step)."""
    if ws is None:
        return np.empty(shape, dtype)
    size = 1
    for d in shape:
        size *= int(d)
    a = ws.get(name)
    if a is None or a.size < size or a.dtype != dtype:
        a = ws[name] = np.empty(max(size, 1), dtype)
    return a[:size].reshape(shape)


def distinct_loss(Z: np.ndarray, tcol: np.ndarray, n_tgt: np.ndarray, n_neg: np.ndarray,
                  kind: str = "bpr-max", bpreg: float = 0.0, elu: float = 0.0,
                  logq_t: Optional[np.ndarray] = None, logq_n: Optional[np.ndarray] = None,
                  scale: float = 1.0, ws: Optional[dict] = None):
    """GRU4Rec's sampled losses over *distinct* columns with multiplicities.

    GRU4Rec scores every row against the columns [the batch's targets, the
    shared negatives], duplicates included; row ``b``'s own target column is
    its positive and every other column a negative (an in-batch duplicate of
    the target too).  Here each distinct item is one column ``j`` occurring
    ``n_tgt[j]`` times among the batch's targets and ``n_neg[j]`` times among
    the negatives; ``tcol[b]`` is row ``b``'s target column.  A softmax over
    duplicated columns equals one over distinct columns with log-counts added,
    so the loss and the gradient (summed over duplicates) are exactly
    GRU4Rec's, with fewer columns to score.  Columns with no occurrence
    (count 0) get zero weight and zero gradient.

    - ``"xe"``: softmax cross-entropy; with logQ the logit of an occurrence
      is ``Z - logq_t`` (as a batch target) or ``Z - logq_n`` (as a
      negative), GRU4Rec's ``logq * log(pop)`` and ``logq * alpha * log(pop)``.
    - ``"bpr-max"``: on ``o = ELU(Z, elu)`` (``elu=0``: ``o = Z``),
      ``-log(sum_j w_j sigmoid(o_t - o_j) + 1e-24) + bpreg * sum_j w_j o_j^2``
      with ``w`` the softmax of ``o`` over the row's negatives.

    Z float32 [B, U] (overwritten); returns ``(row_loss float32 [B], G float32
    [B, U])`` with ``G = scale * d loss / d Z``; G may live in ``ws`` (scratch
    buffers reused across calls) or in Z's memory.
    """
    Bn, U = Z.shape
    ar = np.arange(Bn)
    nt = n_tgt.astype(F32)
    nn_ = n_neg.astype(F32)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        if kind == "xe":
            if logq_t is None:
                logw = np.log(nt + nn_)
                pos_off = np.zeros(Bn, F32)
            else:
                logw = np.log(nt * np.exp(-logq_t) + nn_ * np.exp(-logq_n)).astype(F32)
                pos_off = -logq_t[tcol]
            zt = Z[ar, tcol] + pos_off
            A = Z
            A += logw
            m = A.max(1, keepdims=True)
            A -= m
            np.exp(A, out=A)
            ssum = A.sum(1)
            loss = (m[:, 0] + np.log(ssum)) - zt
            A *= (F32(scale) / ssum)[:, None]
            A[ar, tcol] -= F32(scale)
            return loss.astype(F32), A
        if kind != "bpr-max":
            raise ValueError(f"loss must be 'xe' or 'bpr-max', got {kind!r}")
        shape = (Bn, U)
        W = _buf(ws, "W", shape)
        Sg = _buf(ws, "S", shape)
        Q = _buf(ws, "Q", shape)
        dO = None
        if elu > 0:
            # o = ELU(Z) = max(Z, 0) + a (exp(min(Z, 0)) - 1);  do/dZ = 1 (Z > 0) or a exp(Z)
            a = F32(elu)
            dO = _buf(ws, "dO", shape)
            np.minimum(Z, F32(0), out=dO)
            np.exp(dO, out=dO)
            dO *= a
            np.maximum(Z, F32(0), out=Q)
            np.subtract(dO, a, out=Z)
            Z += Q
            gt = _buf(ws, "gt", shape, np.bool_)
            np.greater(Q, F32(0), out=gt)
            np.multiply(gt, F32(1) - a, out=Q)
            dO += Q
        O = Z
        c = nt + nn_
        np.add(O, np.log(c), out=W)
        ot = O[ar, tcol]
        W[ar, tcol] = ot + np.log(c[tcol] - 1)  # the row's own occurrence is no negative
        m = W.max(1, keepdims=True)
        m[~np.isfinite(m)] = 0
        W -= m
        np.exp(W, out=W)
        z = W.sum(1)
        z[z == 0] = 1  # no negative at all: zero weights, constant loss
        W *= (1 / z)[:, None]
        # s_j = sigmoid(o_t - o_j) = 1 / (1 + exp(o_j - o_t))
        np.subtract(O, ot[:, None], out=Sg)
        np.exp(Sg, out=Sg)
        Sg += F32(1)
        np.reciprocal(Sg, out=Sg)
        P = np.einsum("ij,ij->i", W, Sg)
        np.add(O, F32(2), out=Q)
        Q *= O                                        # o^2 + 2 o
        R = np.einsum("ij,ij->i", W, Q) - 2 * np.einsum("ij,ij->i", W, O)
        np.multiply(Sg, Sg, out=Sg)                   # s^2
        T = P - np.einsum("ij,ij->i", W, Sg)          # sum_j w_j s_j (1 - s_j)
        inv = 1 / (P + F32(1e-24))
        loss = -np.log(P + F32(1e-24)) + F32(bpreg) * R
        # d loss / d o_k = w_k [bpreg (o_k^2 + 2 o_k - R) - (s_k^2 - P) / P]
        #                = w_k [bpreg (o_k^2 + 2 o_k) - s_k^2 / P + 1 - bpreg R]
        Sg *= inv[:, None]
        if bpreg > 0:
            Q *= F32(bpreg)
            Q -= Sg
        else:
            np.negative(Sg, out=Q)
        Q += (1 - F32(bpreg) * R)[:, None]
        Q *= W
        G = Q
        G[ar, tcol] -= T * inv                        # the positive's own path
        if dO is not None:
            G *= dO
        if scale != 1.0:
            G *= F32(scale)
        return loss.astype(F32), G


# --------------------------------------------------------------------------
# trainer
# --------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """Hyperparameters of :class:`Trainer` (defaults: GRU4Rec-like)."""

    epochs: int = 5
    window: int = 20
    batch_size: int = 32
    n_negatives: int = 256
    alpha: float = 0.75
    loss: str = "xe"                 # "xe" (sampled softmax + logQ) or "bpr-max"
    logq: float = 1.0                # weight of the logQ correction (xe)
    bpreg: float = 1.0               # BPR-max score regulariser
    optimizer: str = "adagrad"
    lr: float = 0.05
    momentum: float = 0.0
    clip_norm: float = 0.0           # global-norm clipping (0: off)
    candidate_share: float = 0.5
    seed: int = 0
    train_embeddings: bool = False   # E and O/b rows (cloud trainer)
    dropout_in: float = 0.0          # dropout on the first layer's input (cloud trainer)
    dropout_hidden: float = 0.0      # dropout on the last layer's output (cloud trainer;
                                     # every layer's output with session_parallel)
    # GRU4Rec's session-parallel mini-batches: ``batch_size`` sessions run side
    # by side, one click per step, hidden states carried from step to step and
    # reset where a session starts (a finished session's slot takes the next
    # session in sequence order); gradients stop at the step's initial state.
    # ``window`` is ignored.  The loss is sum / batch_size over the step's rows.
    session_parallel: bool = False
    # cloud trainer (train_embeddings): the loss runs over the *distinct* items
    # of the columns (distinct_loss; GRU4Rec's loss exactly), and BPR-max can
    # score ELU(scores, elu) as GRU4Rec does (0: off)
    elu: float = 0.0
    shuffle_sessions: bool = False   # session_parallel: a new random session order every epoch
    carry_dropout: bool = True       # session_parallel: carry the dropped-out state (GRU4Rec)
    train_head: bool = True          # False: W_p, b_p frozen (identity head = GRU4Rec's h . O)
    # windowed training only (not session_parallel):
    train_gru: bool = True           # False: the trainable GRU layers stay frozen (only the
                                     # head trains; on-device fine-tuning of the head alone)
    l2_to_init: float = 0.0          # L2 pull towards the weights the Trainer started from
                                     # (the global model when fine-tuning): l2_to_init *
                                     # (w - w0) is added to the gradient of every trained
                                     # dense weight, before clipping; 0: off

class Trainer:
    """Truncated-BPTT training of the top ``n_trainable`` GRU layers + head.

    ``items`` are dense item indices in time order, ``session_start`` a bool
    array (or None), ``train_limit`` the number of leading clicks whose
    targets may be trained on (later clicks are held out).  Layers below the
    trainable ones are frozen: their outputs over the history are computed
    once here and reused every epoch.
    """

    def __init__(self, params: Params, items: np.ndarray, session_start: Optional[np.ndarray],
                 config: TrainConfig, n_trainable: int = 1, reset_at_sessions: bool = True,
                 popularity: Optional[np.ndarray] = None, candidates: Optional[np.ndarray] = None,
                 train_limit: Optional[int] = None):
        L = len(params.layers)
        if not 1 <= n_trainable <= L:
            raise ValueError(f"n_trainable must be in [1, {L}], got {n_trainable}")
        if config.train_embeddings and n_trainable != L:
            raise ValueError("training embeddings needs every layer trainable")
        if config.l2_to_init < 0:
            raise ValueError(f"l2_to_init must be >= 0, got {config.l2_to_init}")
        if config.session_parallel and (config.l2_to_init > 0 or not config.train_gru):
            raise ValueError("l2_to_init and train_gru=False need windowed training "
                             "(session_parallel=False)")
        if config.train_embeddings and not config.train_gru:
            raise ValueError("training embeddings needs the GRU layers trained (train_gru)")
        self.p = params
        self.cfg = config
        self.items = np.ascontiguousarray(items, np.int32)
        self.n = int(self.items.shape[0])
        self.session_start = session_start
        self.reset = reset_at_sessions
        self.first = L - n_trainable
        self.trainable = list(range(self.first, L))
        self.rng = np.random.default_rng(config.seed)
        pop = popularity if popularity is not None else np.ones(params.n_items)
        self.sampler = NegativeSampler(pop, config.alpha, candidates, config.candidate_share,
                                       rng=self.rng)
        self.targets = next_targets(self.items, session_start, reset_at_sessions, train_limit)
        self.seg = make_segments(self.n, session_start, config.window, reset_at_sessions)
        # keep only windows with at least one target
        self.opt = _Optimizer(config.optimizer, config.lr, config.momentum)
        self.popularity = np.asarray(pop, np.float64)
        self.sched = None
        self._ws = {}
        if config.session_parallel:
            self.sched = _session_schedule(self.targets, session_start, reset_at_sessions,
                                           config.batch_size)
        W_p = params.W_p
        self._identity_head = (not config.train_head and params.activation == "identity"
                               and W_p.shape[0] == W_p.shape[1]
                               and np.array_equal(W_p, np.eye(W_p.shape[0], dtype=F32))
                               and not params.b_p.any())
        # anchors of the L2 pull (copies of the starting weights; only when on)
        self._init = None
        if config.l2_to_init > 0:
            self._init = {"W_p": params.W_p.copy(), "b_p": params.b_p.copy()}
            for l in self.trainable:
                for name, a in zip(("W_ih", "W_hh", "b_ih", "b_hh"), params.layers[l]):
                    self._init[f"{name}{l}"] = a.copy()
        self.X = None
        if self.first > 0:
            # frozen lower layers: outputs over the whole history, once
            H = params.hidden_sizes[self.first - 1]
            self.X = np.zeros((self.n, H), F32)
            seg_exact = make_segments(self.n, session_start, 1024, reset_at_sessions)
            run_segments(params, list(range(self.first)), self._embed, seg_exact, out=self.X)

    # ---- inputs ----
    def _embed(self, pos: np.ndarray) -> np.ndarray:
        idx = np.where(pos >= 0, self.items[np.maximum(pos, 0)], 0)
        return self.p.E[idx]

    def _layer_input(self, pos: np.ndarray) -> np.ndarray:
        if self.X is None:
            return self._embed(pos)
        return self.X[np.maximum(pos, 0)]

    # ---- one epoch ----
    def epoch(self, progress: Optional[Callable[[int, int, float], None]] = None) -> float:
        """One pass over the training windows; returns the mean loss."""
        if self.sched is not None:
            return self._epoch_session_parallel(progress)
        cfg, p = self.cfg, self.p
        if (self.seg.prev < 0).all():
            # every window starts a session: every initial state is zero
            h_start = [np.zeros((len(self.seg), p.hidden_sizes[l]), F32) for l in self.trainable]
        else:
            h_start = run_segments(p, self.trainable, self._layer_input, self.seg,
                                   keep_states=True)
        has_t = np.zeros(len(self.seg), bool)
        tpos = np.flatnonzero(self.targets >= 0)
        if tpos.size:
            has_t[np.searchsorted(self.seg.start, tpos, side="right") - 1] = True
        order = np.flatnonzero(has_t)
        self.rng.shuffle(order)
        total, count = 0.0, 0
        nb = max(1, math.ceil(order.size / cfg.batch_size))
        for bi in range(0, order.size, cfg.batch_size):
            g = order[bi:bi + cfg.batch_size]
            loss, npos = self._step(g, h_start)
            total += loss * npos
            count += npos
            if progress is not None:
                progress(bi // cfg.batch_size + 1, nb, total / max(count, 1))
        return total / max(count, 1)

    # ---- session-parallel (GRU4Rec) ----
    def _epoch_session_parallel(self, progress) -> float:
        """One pass of session-parallel mini-batches (states start at zero)."""
        cfg, p = self.cfg, self.p
        if cfg.shuffle_sessions:
            self.sched = _session_schedule(self.targets, self.session_start, self.reset,
                                           cfg.batch_size, rng=self.rng)
        sc = self.sched
        h = [np.zeros((sc.n_slots, p.hidden_sizes[l]), F32) for l in self.trainable]
        n_steps = sc.n_steps
        S_n = cfg.n_negatives
        block = 64
        negs = None
        total, count = 0.0, 0
        ptr = sc.ptr.tolist()
        for st in range(n_steps):
            if S_n > 0 and st % block == 0:
                negs = self.sampler.sample_many(block * S_n).reshape(block, S_n)
            neg = negs[st % block] if S_n > 0 else np.zeros(0, np.int32)
            lo, hi = ptr[st], ptr[st + 1]
            total += self._sp_step(lo, hi, h, neg)
            count += hi - lo
            if progress is not None and ((st + 1) % 100 == 0 or st + 1 == n_steps):
                progress(st + 1, n_steps, total / max(count, 1))
        return total / max(count, 1)

    def _sp_step(self, lo: int, hi: int, h: List[np.ndarray], neg: np.ndarray) -> float:
        """One session-parallel step: forward one click per active slot,
        loss over the step's distinct items, backward through that step only
        (GRU4Rec's 1-step BPTT), updates.  Returns the summed row loss."""
        cfg, p, sc = self.cfg, self.p, self.sched
        n = hi - lo
        full = n == sc.n_slots
        slots = None if full else sc.slot[lo:hi]
        pos = sc.pos[lo:hi]
        reset = sc.reset[lo:hi]
        reset_rows = np.flatnonzero(reset) if reset.any() else None
        in_items = self.items[pos]
        tgt = self.targets[pos]
        emb = cfg.train_embeddings
        x = p.E[in_items] if self.X is None else self.X[pos]
        mask_in = self._dropout_mask(x.shape, cfg.dropout_in) if emb else None
        if mask_in is not None:
            x *= mask_in
        xs, ys, caches, h0s, masks = [], [], [], [], []
        for j, l in enumerate(self.trainable):
            W_ih, W_hh, b_ih, b_hh = p.layers[l]
            h0 = h[j] if full else h[j][slots]
            if reset_rows is not None:
                h0[reset_rows] = 0
            y, _, cache = K.gru_forward(x[None], W_ih, W_hh, b_ih, b_hh, h0=h0, keep_cache=True)
            out = state = y[0]
            m = self._dropout_mask(out.shape, cfg.dropout_hidden)
            if m is not None:
                out = out * m
                if cfg.carry_dropout:
                    state = out  # GRU4Rec carries the dropped-out state
            xs.append(x)
            ys.append(y)
            caches.append(cache)
            h0s.append(h0)
            masks.append(m)
            if full:
                h[j] = state
            else:
                h[j][slots] = state
            x = out
        hid = x
        u = hid if self._identity_head else K.head_forward(hid, p.W_p, p.b_p, p.activation)

        # distinct columns: batch targets, negatives (and, tied, the inputs' rows)
        tied_in = emb and p.O is None and self.X is None
        row_loss, G, uniq, inv, O_u = self._distinct_loss(
            u, tgt, neg, in_items if tied_in else None, 1.0 / cfg.batch_size)
        S_t = n + neg.size
        dU = K.sgemm(G, O_u)
        self.opt.begin_step()
        if self._identity_head:
            dh = dU
        elif cfg.train_head:
            dW_p = np.zeros_like(p.W_p)
            db_p = np.zeros_like(p.b_p)
            dh, _, _ = K.head_backward(hid, p.W_p, u, dU, p.activation, dW_p=dW_p, db_p=db_p)
            self.opt.dense("W_p", p.W_p, dW_p)
            self.opt.dense("b_p", p.b_p, db_p)
        else:
            dh, _, _ = K.head_backward(hid, p.W_p, u, dU, p.activation)
        for j in range(len(self.trainable) - 1, -1, -1):
            l = self.trainable[j]
            W_ih, W_hh, b_ih, b_hh = p.layers[l]
            dy = dh if masks[j] is None else dh * masks[j]
            need_dx = j > 0 or emb
            dx, _, dW_ih, dW_hh, db_ih, db_hh = K.gru_backward(
                xs[j][None], W_ih, W_hh, ys[j], caches[j], dy=dy[None], h0=h0s[j],
                need_dx=need_dx)
            self.opt.dense(f"W_ih{l}", W_ih, dW_ih)
            self.opt.dense(f"W_hh{l}", W_hh, dW_hh)
            self.opt.dense(f"b_ih{l}", b_ih, db_ih)
            self.opt.dense(f"b_hh{l}", b_hh, db_hh)
            dh = dx[0] if need_dx else None
        if emb:
            dO_u = K.sgemm(G, u, trans_a=True)
            db_u = G.sum(0, keepdims=True).T
            g_in = dh if mask_in is None else dh * mask_in
            rows = uniq.astype(np.int32)
            if tied_in:
                np.add.at(dO_u, inv[S_t:], g_in)
                self.opt.rows("E", p.E, rows, dO_u)
            else:
                r, gsum = _sum_rows(in_items, g_in)
                self.opt.rows("E", p.E, r, gsum)
                self.opt.rows("O", p.O, rows, dO_u)
            self.opt.rows("b_out", p.b_out.reshape(-1, 1), rows, np.ascontiguousarray(db_u))
        return float(row_loss.sum())

    def _distinct_loss(self, u: np.ndarray, tgt: np.ndarray, neg: np.ndarray,
                       extra: Optional[np.ndarray], scale: float):
        """Loss of rows ``u`` (targets ``tgt``) over the distinct items of
        [tgt, neg] (plus ``extra`` items, which get zero-weight columns so that
        one row set serves every sparse update).  Returns (row_loss, G =
        scale * dloss/dscores [rows, U], uniq items [U], inverse of
        [tgt, neg, extra] into uniq, O rows [U, d])."""
        cfg, p = self.cfg, self.p
        keys = np.concatenate([tgt, neg] if extra is None else [tgt, neg, extra])
        N = p.n_items
        if N <= 16 * keys.size:
            cnt = np.bincount(keys, minlength=N)
            uniq = np.flatnonzero(cnt)
            lut = np.empty(N, np.int64)
            lut[uniq] = np.arange(uniq.size)
            inv = lut[keys]
        else:
            uniq, inv = np.unique(keys, return_inverse=True)
        Uc = uniq.size
        n = tgt.size
        tcol = inv[:n]
        n_tgt = np.bincount(tcol, minlength=Uc)
        n_neg = np.bincount(inv[n:n + neg.size], minlength=Uc)
        O_u = p.out_table[uniq]
        Z = K.sgemm(u, O_u, trans_b=True)
        Z += p.b_out[uniq]
        logq_t = logq_n = None
        if cfg.loss == "xe" and cfg.logq > 0:
            lp = np.log(np.maximum(self.popularity[uniq], 1e-12)).astype(F32)
            logq_t = F32(cfg.logq) * lp
            logq_n = F32(cfg.logq * cfg.alpha) * lp
        row_loss, G = distinct_loss(Z, tcol, n_tgt, n_neg, cfg.loss, cfg.bpreg, cfg.elu,
                                    logq_t, logq_n, scale=scale, ws=self._ws)
        return row_loss, G, uniq, inv, O_u

    def _pull_to_init(self, dW_p: np.ndarray, db_p: np.ndarray, grads) -> None:
        """Add ``l2_to_init * (w - w0)`` to the gradients of the trained
        weights (in place): the gradient of ``l2_to_init / 2 * ||w - w0||^2``,
        which keeps a fine-tuned model near the model it started from."""
        lam, p, w0 = F32(self.cfg.l2_to_init), self.p, self._init
        pairs = []
        if self.cfg.train_head:
            pairs += [(dW_p, p.W_p, w0["W_p"]), (db_p, p.b_p, w0["b_p"])]
        for l, *gs in grads:
            for name, prm, gr in zip(("W_ih", "W_hh", "b_ih", "b_hh"), p.layers[l], gs):
                pairs.append((gr, prm, w0[f"{name}{l}"]))
        for gr, prm, a in pairs:
            gr += lam * (prm - a)

    def _dropout_mask(self, shape, rate: float) -> Optional[np.ndarray]:
        """Inverted-dropout mask (None when off)."""
        if rate <= 0:
            return None
        return (self.rng.random(shape) >= rate).astype(F32) / F32(1.0 - rate)

    def _step(self, group: np.ndarray, h_start) -> tuple:
        cfg, p = self.cfg, self.p
        g, T, lengths, pos = _batch_positions(self.seg, group)
        B = g.size
        x0 = self._layer_input(pos)
        mask_in = self._dropout_mask(x0.shape, cfg.dropout_in) if cfg.train_embeddings else None
        if mask_in is not None:
            x0 = x0 * mask_in
        xs, ys, caches, h0s = [x0], [], [], []
        x = x0
        for j, l in enumerate(self.trainable):
            W_ih, W_hh, b_ih, b_hh = p.layers[l]
            h0 = np.ascontiguousarray(h_start[j][g])
            # the backward cache only when the layer trains (head-only: none)
            y, _, cache = K.gru_forward(x, W_ih, W_hh, b_ih, b_hh, h0=h0, lengths=lengths,
                                        keep_cache=cfg.train_gru)
            h0s.append(h0)
            ys.append(y)
            caches.append(cache)
            x = y
            xs.append(y)
        tgt = np.where(pos >= 0, self.targets[np.maximum(pos, 0)], -1)
        tsel = np.flatnonzero(tgt.reshape(-1) >= 0)
        P = tsel.size
        if P == 0:
            return 0.0, 0
        H = ys[-1].shape[2]
        hid = ys[-1].reshape(-1, H)[tsel]
        mask = self._dropout_mask(hid.shape, cfg.dropout_hidden)
        if mask is not None:
            hid = hid * mask
        hid = np.ascontiguousarray(hid)
        u = K.head_forward(hid, p.W_p, p.b_p, p.activation)
        # columns: every target of the batch, then shared negatives
        t_items = tgt.reshape(-1)[tsel].astype(np.int32)
        if cfg.train_embeddings:
            # cloud trainer: GRU4Rec's loss over the distinct columns (numpy;
            # ELU option; several times faster than the C kernel's per-column
            # double-precision row pass at these sizes)
            negs = self.sampler.sample_many(cfg.n_negatives)
            valid = pos.reshape(-1) >= 0
            rows_in = self.items[pos.reshape(-1)[valid]]
            tied = p.O is None
            row_loss, G, cols, inv, O_s = self._distinct_loss(
                u, t_items, negs, rows_in if tied else None, 1.0 / P)
            loss = float(row_loss.mean())
            dU = K.sgemm(G, O_s)
            dO_s = K.sgemm(G, u, trans_a=True)
            db_s = G.sum(0, keepdims=True).T
            cols = cols.astype(np.int32)
        else:
            negs = self.sampler.sample(cfg.n_negatives)
            cols = np.concatenate([t_items, negs]).astype(np.int32)
            O_s = p.out_table[cols]
            b_s = p.b_out[cols]
            logq = None
            if cfg.loss == "xe" and cfg.logq > 0:
                logq = np.ascontiguousarray(self.sampler.logq(cols) * F32(cfg.logq))
            target_col = np.arange(P, dtype=np.int32)
            loss, _, dU, _, _ = K.sampled_loss(
                u, O_s, target_col, b_s=b_s, col_ids=cols, logq=logq, loss=cfg.loss,
                bpreg=cfg.bpreg)
        self.opt.begin_step()
        dW_p = np.zeros_like(p.W_p)
        db_p = np.zeros_like(p.b_p)
        if self._identity_head:
            dh = dU
        else:
            dh, _, _ = K.head_backward(hid, p.W_p, u, dU, p.activation, dW_p=dW_p, db_p=db_p)
        if mask is not None:
            dh *= mask
        dy = np.zeros((T * B, H), F32)
        dy[tsel] = dh
        dy = dy.reshape(T, B, H)
        grads = []
        for j in (range(len(self.trainable) - 1, -1, -1) if cfg.train_gru else ()):
            l = self.trainable[j]
            W_ih, W_hh, _, _ = p.layers[l]
            need_dx = j > 0 or cfg.train_embeddings
            dx, _, dW_ih, dW_hh, db_ih, db_hh = K.gru_backward(
                xs[j], W_ih, W_hh, ys[j], caches[j], dy=dy, h0=h0s[j], lengths=lengths,
                need_dx=need_dx)
            grads.append((l, dW_ih, dW_hh, db_ih, db_hh))
            dy = dx
        if self._init is not None:
            self._pull_to_init(dW_p, db_p, grads)
        dense = [dW_p, db_p] + [a for gr in grads for a in gr[1:]]
        if cfg.clip_norm > 0:
            K.clip_by_global_norm(dense, cfg.clip_norm)
        if cfg.train_head:
            self.opt.dense("W_p", p.W_p, dW_p)
            self.opt.dense("b_p", p.b_p, db_p)
        for l, dW_ih, dW_hh, db_ih, db_hh in grads:
            for name, prm, gr in zip(("W_ih", "W_hh", "b_ih", "b_hh"), p.layers[l],
                                     (dW_ih, dW_hh, db_ih, db_hh)):
                self.opt.dense(f"{name}{l}", prm, gr)
        if cfg.train_embeddings:
            # input embeddings: gradient of the first layer's input rows; the
            # distinct columns (cols, unique) already include them when tied
            if mask_in is not None:
                dy = dy * mask_in
            g_in = dy.reshape(T * B, -1)[valid]
            if tied:
                np.add.at(dO_s, inv[P + negs.size:], g_in)
                self.opt.rows("E", p.E, cols, dO_s)
            else:
                r, gsum = _sum_rows(rows_in, g_in)
                self.opt.rows("E", p.E, r, gsum)
                self.opt.rows("O", p.O, cols, dO_s)
            self.opt.rows("b_out", p.b_out.reshape(-1, 1), cols, np.ascontiguousarray(db_s))
        return float(loss), P


# --------------------------------------------------------------------------
# evaluation helpers
# --------------------------------------------------------------------------


class _RowsAt:
    """Write-only stand-in for an [n, H] output array that keeps only the
    rows at ``positions`` (so evaluating a few clicks of a long history
    does not hold activations for every click)."""

    def __init__(self, positions: np.ndarray, H: int):
        self.sorted, self.inverse = np.unique(np.asarray(positions, np.int64), return_inverse=True)
        self.data = np.zeros((self.sorted.size, H), F32)

    def __setitem__(self, pos: np.ndarray, rows: np.ndarray) -> None:
        i = np.searchsorted(self.sorted, pos)
        ok = i < self.sorted.size
        ok[ok] = self.sorted[i[ok]] == pos[ok]
        self.data[i[ok]] = rows[ok]

    def rows(self) -> np.ndarray:
        return np.ascontiguousarray(self.data[self.inverse])


def hidden_states(params: Params, items: np.ndarray, session_start: Optional[np.ndarray],
                  positions: np.ndarray, reset_at_sessions: bool = True) -> np.ndarray:
    """The last GRU layer's state after each click in ``positions`` (exact
    states over the whole sequence up to there, before the head).  float32
    [len(positions), H]."""
    items = np.ascontiguousarray(items, np.int32)
    n = items.shape[0]
    out = _RowsAt(positions, params.hidden_sizes[-1])
    seg = make_segments(n, session_start, 1024, reset_at_sessions)

    def embed(pos):
        return params.E[np.where(pos >= 0, items[np.maximum(pos, 0)], 0)]

    run_segments(params, list(range(len(params.layers))), embed, seg, out=out)
    return out.rows()


def user_vectors(params: Params, items: np.ndarray, session_start: Optional[np.ndarray],
                 positions: np.ndarray, reset_at_sessions: bool = True) -> np.ndarray:
    """User embeddings u after each click in ``positions`` (exact states over
    the whole sequence up to there).  float32 [len(positions), d]."""
    h = hidden_states(params, items, session_start, positions, reset_at_sessions)
    return K.head_forward(h, params.W_p, params.b_p, params.activation)

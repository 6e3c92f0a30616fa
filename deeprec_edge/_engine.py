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
  softmax (or BPR-max) loss of the C kernel, for the top ``n_trainable``
  layers and the head: what a device runs to fine-tune.

What only the cloud trainer uses -- GRU4Rec's session-parallel mini-batches,
its loss over distinct columns (BPR-max on ELU scores), dropout, embedding
and output-table updates -- is ``deeprec_edge.trainer.engine`` (a subclass
of :class:`Trainer` over the hooks ``_inputs``, ``_hidden``, ``_loss`` and
``_update_inputs``), installed with the trainer, not in the device package.

Truncated BPTT uses *epoch-start states*: at the start of an epoch one
forward pass (no gradients) computes each window's initial state for every
trainable layer; windows are then independent and can be shuffled and
batched freely.  A window's gradient stops at its start, as in any truncated
BPTT; the initial states lag the weights by at most one epoch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence

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

# --------------------------------------------------------------------------
# trainer
# --------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """Hyperparameters of :class:`Trainer` (defaults: GRU4Rec-like).  The
    cloud trainer's extra settings (embeddings, dropout, session-parallel
    mini-batches) are ``deeprec_edge.trainer.engine.CloudTrainConfig``."""

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
        if config.l2_to_init < 0:
            raise ValueError(f"l2_to_init must be >= 0, got {config.l2_to_init}")
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
        self.opt = self._make_optimizer()
        self.popularity = np.asarray(pop, np.float64)
        # what the cloud trainer (deeprec_edge.trainer.engine) changes
        self.sched = None                # session-parallel schedule
        self._train_head = True          # the head's W_p, b_p are trained
        self._identity_head = False      # u = h (GRU4Rec's head-less model)
        self._input_grad = False         # the first layer's input gradient is needed
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
    def epoch(self, progress: Optional[Callable[[int, int, float], None]] = None,
              after_step: Optional[Callable[[int, int], None]] = None) -> float:
        """One pass over the training windows; returns the mean loss.
        ``progress(i, n, mean loss)`` is told about progress now and then,
        ``after_step(i, n)`` is called after every update (i of n steps; the
        trainer's pruning keeps pruned weights at zero there)."""
        if self.sched is not None:   # the cloud trainer's session-parallel mode
            return self._epoch_session_parallel(progress, after_step)
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
            if after_step is not None:
                after_step(bi // cfg.batch_size + 1, nb)
            if progress is not None:
                progress(bi // cfg.batch_size + 1, nb, total / max(count, 1))
        return total / max(count, 1)

    def _pull_to_init(self, dW_p: np.ndarray, db_p: np.ndarray, grads) -> None:
        """Add ``l2_to_init * (w - w0)`` to the gradients of the trained
        weights (in place): the gradient of ``l2_to_init / 2 * ||w - w0||^2``,
        which keeps a fine-tuned model near the model it started from."""
        lam, p, w0 = F32(self.cfg.l2_to_init), self.p, self._init
        pairs = []
        if self._train_head:
            pairs += [(dW_p, p.W_p, w0["W_p"]), (db_p, p.b_p, w0["b_p"])]
        for l, *gs in grads:
            for name, prm, gr in zip(("W_ih", "W_hh", "b_ih", "b_hh"), p.layers[l], gs):
                pairs.append((gr, prm, w0[f"{name}{l}"]))
        for gr, prm, a in pairs:
            gr += lam * (prm - a)

    # ---- what the cloud trainer overrides (deeprec_edge.trainer.engine) ----
    def _make_optimizer(self) -> "_Optimizer":
        return _Optimizer(self.cfg.optimizer, self.cfg.lr, self.cfg.momentum)

    def _inputs(self, pos: np.ndarray) -> np.ndarray:
        """The first trainable layer's inputs at ``pos`` [T, B]."""
        return self._layer_input(pos)

    def _hidden(self, hid: np.ndarray):
        """The last layer's outputs before the head, and a mask to apply to
        their gradient (None)."""
        return hid, None

    def _loss(self, u: np.ndarray, t_items: np.ndarray, pos: np.ndarray):
        """Sampled softmax (or BPR-max) of the user vectors ``u`` over the
        batch's targets and shared negatives (the C kernel): ``(mean loss,
        dloss/du, state for _update_inputs)``."""
        cfg, p = self.cfg, self.p
        P = t_items.size
        negs = self.sampler.sample(cfg.n_negatives)
        cols = np.concatenate([t_items, negs]).astype(np.int32)
        O_s = p.out_table[cols]
        b_s = p.b_out[cols]
        logq = None
        if cfg.loss == "xe" and cfg.logq > 0:
            logq = np.ascontiguousarray(self.sampler.logq(cols) * F32(cfg.logq))
        loss, _, dU, _, _ = K.sampled_loss(u, O_s, np.arange(P, dtype=np.int32), b_s=b_s,
                                           col_ids=cols, logq=logq, loss=cfg.loss,
                                           bpreg=cfg.bpreg)
        return loss, dU, None

    def _update_inputs(self, dx: Optional[np.ndarray], state: Any) -> None:
        """Use the first layer's input gradient (the cloud trains embeddings)."""

    # ---- one mini-batch of windows ----
    def _step(self, group: np.ndarray, h_start) -> tuple:
        cfg, p = self.cfg, self.p
        g, T, lengths, pos = _batch_positions(self.seg, group)
        B = g.size
        x0 = self._inputs(pos)
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
        hid, mask = self._hidden(ys[-1].reshape(-1, H)[tsel])
        hid = np.ascontiguousarray(hid)
        u = K.head_forward(hid, p.W_p, p.b_p, p.activation)
        # columns: every target of the batch, then shared negatives
        loss, dU, state = self._loss(u, tgt.reshape(-1)[tsel].astype(np.int32), pos)
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
            need_dx = j > 0 or self._input_grad
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
        if self._train_head:
            self.opt.dense("W_p", p.W_p, dW_p)
            self.opt.dense("b_p", p.b_p, db_p)
        for l, dW_ih, dW_hh, db_ih, db_hh in grads:
            for name, prm, gr in zip(("W_ih", "W_hh", "b_ih", "b_hh"), p.layers[l],
                                     (dW_ih, dW_hh, db_ih, db_hh)):
                self.opt.dense(f"{name}{l}", prm, gr)
        self._update_inputs(dy if self._input_grad else None, state)
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

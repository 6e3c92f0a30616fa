"""The cloud trainer's engine: what training the global model needs beyond
the device's fine-tuning engine (:mod:`deeprec_edge._engine`), kept out of
the device package.

- :class:`CloudTrainConfig` -- :class:`~deeprec_edge._engine.TrainConfig`
  plus embeddings, dropout, GRU4Rec's session-parallel mode and ELU;
- :class:`CloudTrainer` -- the device :class:`~deeprec_edge._engine.Trainer`
  with every layer, the input embeddings and the output table trainable:
  windowed truncated BPTT, or GRU4Rec's session-parallel mini-batches
  (``batch_size`` sessions side by side, one click per step, states carried
  from step to step and reset at session starts, 1-step BPTT);
- :func:`distinct_loss` -- GRU4Rec's BPR-max (on ELU scores) and
  cross-entropy with logQ over the *distinct* items of a mini-batch's
  columns, duplicates folded in as counts (exactly GRU4Rec's loss, fewer
  columns; numpy, float32), where on-device fine-tuning keeps the C kernel
  ``sampled_loss``.

numpy plus the C kernels.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any, Callable, List, Optional

import numpy as np

from deeprec_edge import kernels as K
from deeprec_edge._engine import (F32, Params, TrainConfig, Trainer, _Optimizer,
                                  _reset_points)

__all__ = ["CloudTrainConfig", "CloudTrainer", "distinct_loss"]


@dataclass
class CloudTrainConfig(TrainConfig):
    """:class:`TrainConfig` plus what only the global model's training uses."""

    train_embeddings: bool = False   # E and O/b rows
    dropout_in: float = 0.0          # dropout on the first layer's input
    dropout_hidden: float = 0.0      # dropout on the last layer's output (every layer's
                                     # output with session_parallel)
    # GRU4Rec's session-parallel mini-batches: ``batch_size`` sessions run side
    # by side, one click per step, hidden states carried from step to step and
    # reset where a session starts (a finished session's slot takes the next
    # session in sequence order); gradients stop at the step's initial state.
    # ``window`` is ignored.  The loss is sum / batch_size over the step's rows.
    session_parallel: bool = False
    # with train_embeddings the loss runs over the *distinct* items of the
    # columns (distinct_loss; GRU4Rec's loss exactly), and BPR-max can score
    # ELU(scores, elu) as GRU4Rec does (0: off)
    elu: float = 0.0
    shuffle_sessions: bool = False   # session_parallel: a new random session order every epoch
    carry_dropout: bool = True       # session_parallel: carry the dropped-out state (GRU4Rec)
    train_head: bool = True          # False: W_p, b_p frozen (identity head = GRU4Rec's h . O)


class _CloudOptimizer(_Optimizer):
    """The device optimiser plus sparse row updates of the tables."""

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
# the trainer
# --------------------------------------------------------------------------


class CloudTrainer(Trainer):
    """:class:`~deeprec_edge._engine.Trainer` for the global model: the
    embeddings and output table trainable (``train_embeddings``, every layer
    trainable), dropout, a frozen identity head (``train_head=False``), and
    GRU4Rec's session-parallel mode (``session_parallel``).  ``config`` is a
    :class:`CloudTrainConfig` (a plain TrainConfig trains as the device does).
    """

    def __init__(self, params: Params, items: np.ndarray, session_start: Optional[np.ndarray],
                 config: TrainConfig, n_trainable: int = 1, **kw: Any):
        if not isinstance(config, CloudTrainConfig):
            config = CloudTrainConfig(**{k: getattr(config, k)
                                         for k in TrainConfig.__dataclass_fields__})
        L = len(params.layers)
        if config.train_embeddings and n_trainable != L:
            raise ValueError("training embeddings needs every layer trainable")
        if config.session_parallel and (config.l2_to_init > 0 or not config.train_gru):
            raise ValueError("l2_to_init and train_gru=False need windowed training "
                             "(session_parallel=False)")
        if config.train_embeddings and not config.train_gru:
            raise ValueError("training embeddings needs the GRU layers trained (train_gru)")
        super().__init__(params, items, session_start, config, n_trainable, **kw)
        self._ws = {}
        self._train_head = config.train_head
        self._input_grad = config.train_embeddings
        W_p = params.W_p
        self._identity_head = (not config.train_head and params.activation == "identity"
                               and W_p.shape[0] == W_p.shape[1]
                               and np.array_equal(W_p, np.eye(W_p.shape[0], dtype=F32))
                               and not params.b_p.any())
        if config.session_parallel:
            self.sched = _session_schedule(self.targets, session_start, self.reset,
                                           config.batch_size)

    def _make_optimizer(self) -> _CloudOptimizer:
        return _CloudOptimizer(self.cfg.optimizer, self.cfg.lr, self.cfg.momentum)

    # ---- the windowed step's hooks (deeprec_edge._engine.Trainer._step) ----
    def _inputs(self, pos: np.ndarray) -> np.ndarray:
        x0 = self._layer_input(pos)
        self._mask_in = (self._dropout_mask(x0.shape, self.cfg.dropout_in)
                         if self.cfg.train_embeddings else None)
        return x0 if self._mask_in is None else x0 * self._mask_in

    def _hidden(self, hid: np.ndarray):
        mask = self._dropout_mask(hid.shape, self.cfg.dropout_hidden)
        return (hid, None) if mask is None else (hid * mask, mask)

    def _loss(self, u: np.ndarray, t_items: np.ndarray, pos: np.ndarray):
        cfg, p = self.cfg, self.p
        if not cfg.train_embeddings:
            return super()._loss(u, t_items, pos)
        # GRU4Rec's loss over the distinct columns (numpy; ELU option; several
        # times faster than the C kernel's per-column double-precision row pass
        # at these sizes)
        P = t_items.size
        negs = self.sampler.sample_many(cfg.n_negatives)
        valid = pos.reshape(-1) >= 0
        rows_in = self.items[pos.reshape(-1)[valid]]
        tied = p.O is None
        row_loss, G, cols, inv, O_s = self._distinct_loss(
            u, t_items, negs, rows_in if tied else None, 1.0 / P)
        dU = K.sgemm(G, O_s)
        dO_s = K.sgemm(G, u, trans_a=True)
        db_s = G.sum(0, keepdims=True).T
        state = (valid, rows_in, tied, cols.astype(np.int32), inv, P + negs.size, dO_s, db_s)
        return float(row_loss.mean()), dU, state

    def _update_inputs(self, dy: Optional[np.ndarray], state: Any) -> None:
        if state is None:
            return
        p = self.p
        valid, rows_in, tied, cols, inv, n_cols, dO_s, db_s = state
        # input embeddings: gradient of the first layer's input rows; the
        # distinct columns (cols, unique) already include them when tied
        if self._mask_in is not None:
            dy = dy * self._mask_in
        g_in = dy.reshape(-1, dy.shape[-1])[valid]
        if tied:
            np.add.at(dO_s, inv[n_cols:], g_in)
            self.opt.rows("E", p.E, cols, dO_s)
        else:
            r, gsum = _sum_rows(rows_in, g_in)
            self.opt.rows("E", p.E, r, gsum)
            self.opt.rows("O", p.O, cols, dO_s)
        self.opt.rows("b_out", p.b_out.reshape(-1, 1), cols, np.ascontiguousarray(db_s))

    # ---- session-parallel (GRU4Rec) ----
    def _epoch_session_parallel(self, progress, after_step=None) -> float:
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
            if after_step is not None:
                after_step(st + 1, n_steps)
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

    def _dropout_mask(self, shape, rate: float) -> Optional[np.ndarray]:
        """Inverted-dropout mask (None when off)."""
        if rate <= 0:
            return None
        return (self.rng.random(shape) >= rate).astype(F32) / F32(1.0 - rate)

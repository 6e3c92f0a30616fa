"""Learning the repeat component (``deeprec_edge.repeat``) on held-out clicks.

The GRU is fitted first.  Its scores on clicks it did **not** train on are
then combined with the repeat features of each user's own history,

    s_i = scale * (O_i . u + b_i) + w . phi_i,

and ``scale`` and ``w`` are the maximum-likelihood values (full softmax over
the catalogue, a small L2 term ``l2/2 |w|^2`` so that a feature the data
push to infinity -- on MovieLens nobody rates a film twice, so ``seen``
wants ``-inf`` -- stays finite).  The problem is smooth and tiny (F + 1
numbers), solved exactly with the runtime's L-BFGS.

Held-out clicks matter: on its own training clicks the GRU is more confident
than it will be on new ones, which would make the repeat features look less
useful than they are.  :func:`deeprec_edge.trainer.evaluate.train_model`
therefore fits an inner model on the clicks before an inner cutoff and
calibrates on the clicks after it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from deeprec_edge import kernels as K
from deeprec_edge._engine import user_vectors
from deeprec_edge._lbfgs import minimize
from deeprec_edge.repeat import (DEFAULT_MEMORY, FEATURES, RepeatSpec, feature_dot,
                                  history_features)

__all__ = ["EventSet", "event_set", "fit_repeat", "score_spread", "transfer_scale"]


@dataclass
class EventSet:
    """Next-click events of many users, ready to score: user vectors ``U``
    (float32 [n, d]), ``targets`` (int64 [n]), sparse repeat cells
    ``rows, cols, phi`` (rows sorted) and the user of each event."""

    U: np.ndarray
    targets: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    phi: np.ndarray
    users: np.ndarray

    @property
    def n(self) -> int:
        return int(self.targets.shape[0])

    @property
    def rep(self):
        return self.rows, self.cols, self.phi


def event_set(params, sequences: Sequence[Tuple[np.ndarray, np.ndarray, np.ndarray]], *,
              reset_at_sessions: bool = True, memory: int = DEFAULT_MEMORY,
              users: Optional[Sequence[int]] = None) -> EventSet:
    """Events from ``(items, session_start, positions)`` per user: the target
    of position ``p`` is ``items[p + 1]``; the input is the whole history up
    to ``p``."""
    Us, ts, rows, cols, phis, us = [], [], [], [], [], []
    n0 = 0
    for k, (items, starts, pos) in enumerate(sequences):
        pos = np.asarray(pos, np.int64)
        if pos.size == 0:
            continue
        items = np.asarray(items, np.int32)
        Us.append(user_vectors(params, items, starts, pos, reset_at_sessions))
        ts.append(items[pos + 1].astype(np.int64))
        r, c, f = history_features(items, starts, pos, memory)
        rows.append(r + n0)
        cols.append(c)
        phis.append(f)
        us.append(np.full(pos.size, k if users is None else users[k], np.int64))
        n0 += pos.size
    if not Us:
        d = params.W_p.shape[0]
        z = np.zeros(0, np.int64)
        return EventSet(np.zeros((0, d), np.float32), z, z, z,
                        np.zeros((0, len(FEATURES)), np.float32), z)
    return EventSet(np.concatenate(Us), np.concatenate(ts), np.concatenate(rows),
                    np.concatenate(cols), np.concatenate(phis), np.concatenate(us))


def fit_repeat(params, ev: EventSet, *, l2: float = 1.0, memory: int = DEFAULT_MEMORY,
               max_iter: int = 60, max_events: int = 10_000, seed: int = 0,
               max_elems: int = 1 << 22) -> Tuple[RepeatSpec, dict]:
    """Maximum-likelihood ``scale`` and ``w`` on the events (see the module
    docstring): at most ``max_events`` of them (a seeded sample; F + 1
    numbers need no more).  Returns the spec and a record (log-likelihood
    per event before and after, optimiser status)."""
    n_all = ev.n
    if n_all > max_events:
        keep = np.sort(np.random.default_rng(seed).choice(n_all, size=max_events, replace=False))
        remap = np.full(n_all, -1, np.int64)
        remap[keep] = np.arange(keep.size)
        cell = remap[ev.rows] >= 0
        ev = EventSet(ev.U[keep], ev.targets[keep], remap[ev.rows[cell]], ev.cols[cell],
                      ev.phi[cell], ev.users[keep])
    n, N = ev.n, params.n_items
    Fn = len(FEATURES)
    if n == 0:
        return RepeatSpec(memory=memory), {"events": 0, "status": "no events"}
    step = max(1, max_elems // max(N, 1))
    blocks = []
    for a in range(0, n, step):
        b = min(a + step, n)
        lo, hi = np.searchsorted(ev.rows, [a, b])
        blocks.append((a, b, lo, hi))
    keep_scores = n * N <= (1 << 25)      # 128 MB of float32: keep, else recompute
    cache = {}

    def base(a, b):
        if a in cache:
            return cache[a]
        S = K.sgemm(np.ascontiguousarray(ev.U[a:b]), params.out_table, trans_b=True)
        S += params.b_out
        if keep_scores:
            cache[a] = S
        return S

    phi64 = ev.phi.astype(np.float64)

    def fun(x):
        # x = (log scale, w): the scale stays positive (a model whose GRU
        # scores carry no information gets a small scale, never a negative one)
        scale, w = float(np.exp(np.clip(x[0], -30.0, 30.0))), x[1:]
        f, g = 0.0, np.zeros(Fn + 1)
        rep_vals = feature_dot(ev.phi, w)          # in phi's float32
        for a, b, lo, hi in blocks:
            S0 = base(a, b)
            S = S0 * np.float32(scale)
            r, c = ev.rows[lo:hi] - a, ev.cols[lo:hi]
            S[r, c] += rep_vals[lo:hi]
            t = ev.targets[a:b]
            rr = np.arange(b - a)
            st = S[rr, t].astype(np.float64)
            m = S.max(1, keepdims=True)
            S -= m
            np.exp(S, out=S)                       # S is now exp(s - m)
            z = S.sum(1, dtype=np.float64)
            f += float((np.log(z) + m[:, 0] - st).sum())
            S *= (1.0 / z).astype(np.float32)[:, None]
            P = S                                  # softmax
            # d/d scale: sum_r (E_P[S0] - S0_t);  d/d w: sum_cells (P - y) phi
            g[0] += float(np.einsum("ij,ij->", P, S0, dtype=np.float64)
                          - S0[rr, t].sum(dtype=np.float64))
            Pc = P[r, c].astype(np.float64)
            yc = (c == t[r]).astype(np.float64)
            g[1:] += (Pc - yc) @ phi64[lo:hi]
        g[0] *= scale
        f += 0.5 * l2 * float(w @ w)
        g[1:] += l2 * w
        return f, g

    x0 = np.zeros(Fn + 1)
    f0, _ = fun(x0)
    spread = score_spread(params, ev, max_elems=max_elems)
    res = minimize(fun, x0, max_iter=max_iter)
    if res.status == "non-finite":
        return RepeatSpec(memory=memory), {"events": n, "status": f"kept the plain model "
                                                                   f"({res.status})"}
    scale = float(np.exp(np.clip(res.x[0], -30.0, 30.0)))
    spec = RepeatSpec(scale=scale, w=tuple(float(v) for v in res.x[1:]), memory=memory)
    return spec, {"events": n, "status": res.status, "iterations": res.iterations,
                  "nll_before": f0 / n, "nll_after": res.f / n, "score_spread": spread}


def score_spread(params, ev: EventSet, max_events: int = 2000,
                 max_elems: int = 1 << 22) -> float:
    """The mean over (at most ``max_events`` of) the events of the standard
    deviation of ``O_i . u + b_i`` over the items: the magnitude of a model's
    scores.  Models trained the same way on a little more data can differ in
    magnitude (BPR-max does not fix it), so a scale calibrated with one
    model carries to another as ``scale * spread_old / spread_new``
    (:func:`transfer_scale`)."""
    n = min(ev.n, max_events)
    if n == 0:
        return float("nan")
    N = params.n_items
    step = max(1, max_elems // max(N, 1))
    sds = []
    for a in range(0, n, step):
        b = min(a + step, n)
        S = K.sgemm(np.ascontiguousarray(ev.U[a:b]), params.out_table, trans_b=True)
        S += params.b_out
        sds.append(S.std(axis=1, dtype=np.float64))
    return float(np.concatenate(sds).mean())


def transfer_scale(spec: RepeatSpec, spread_from: float, spread_to: float) -> RepeatSpec:
    """``spec`` for a model whose scores have spread ``spread_to``, calibrated
    on one with ``spread_from``: the same logits for the same ranking of
    magnitudes (the weights ``w`` are in logit units and stay)."""
    if not (np.isfinite(spread_from) and np.isfinite(spread_to)) or spread_to <= 0:
        return spec
    return RepeatSpec(scale=spec.scale * spread_from / spread_to, w=spec.w, memory=spec.memory)

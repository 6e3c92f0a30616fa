"""Global model training (``deeprec-train fit``) with the C core for every layer.

The click log becomes one long sequence of dense item indices in
(session, time) order with a session-start flag per click.  Windows of
``window`` clicks never cross a session start (the hidden state of every
layer resets there, GRU4Rec's session-parallel convention), unless the model
carries user state across sessions, in which case states reset only where a
new *user* starts.  Training is the runtime's own engine
(:mod:`deeprec_edge._engine`) with every layer, the embeddings and the
output table trainable: sampled softmax with logQ correction or BPR-max,
negatives shared by the mini-batch and drawn proportionally to
support^alpha, Adagrad (GRU4Rec's default) or Adam, dropout, tied
embeddings.  Deterministic for a seed.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, List, Optional

import numpy as np

from deeprec_edge._engine import (Params, TrainConfig, Trainer, ranks_full, user_vectors)

__all__ = ["FitConfig", "init_params", "sequence_from_sessions", "fit", "evaluate_sequence"]


@dataclass
class FitConfig:
    """Model shape and training settings of the global model."""

    embedding: int = 0            # e; 0 = no separate input embedding: tied (e = d) if tied, else H
    hidden: List[int] = field(default_factory=lambda: [100])
    dim: int = 0                  # d; 0 = the last hidden size
    activation: str = "tanh"
    head: bool = True             # trainable head u = act(W_p h + b_p); False: u = h (GRU4Rec),
                                  # stored as W_p = I, b_p = 0, identity activation, never trained
    tied: bool = True             # GRU4Rec's constrained embedding: O = E
    carry_state: bool = False     # carry states across a user's sessions
    train: TrainConfig = field(default_factory=TrainConfig)
    init_scale: float = 1.0
    patience: int = 0             # early stopping on validation Recall@20 (0: off)


def _uniform(rng, shape, fan_in, fan_out, scale):
    a = scale * math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-a, a, size=shape).astype(np.float32)


def init_params(n_items: int, cfg: FitConfig, seed: int = 0) -> Params:
    """GRU4Rec-style initialisation: uniform +-sqrt(6 / (fan_in + fan_out))
    per gate block, zero biases."""
    rng = np.random.default_rng(seed)
    H_last = cfg.hidden[-1]
    d = cfg.dim or H_last
    e = d if cfg.tied else (cfg.embedding or H_last)
    E = _uniform(rng, (n_items, e), n_items, e, cfg.init_scale)
    layers = []
    inp = e
    for H in cfg.hidden:
        W_ih = np.concatenate([_uniform(rng, (H, inp), inp, H, cfg.init_scale) for _ in range(3)])
        W_hh = np.concatenate([_uniform(rng, (H, H), H, H, cfg.init_scale) for _ in range(3)])
        layers.append([np.ascontiguousarray(W_ih), np.ascontiguousarray(W_hh),
                       np.zeros(3 * H, np.float32), np.zeros(3 * H, np.float32)])
        inp = H
    if cfg.head:
        W_p = _uniform(rng, (d, H_last), H_last, d, cfg.init_scale)
        activation = cfg.activation
    else:
        if d != H_last:
            raise ValueError(f"head=False needs dim == hidden[-1] ({H_last}), got dim {d}")
        W_p = np.eye(d, dtype=np.float32)
        activation = "identity"
    b_p = np.zeros(d, np.float32)
    O = None if cfg.tied else _uniform(rng, (n_items, d), n_items, d, cfg.init_scale)
    return Params(E, layers, W_p, b_p, O, np.zeros(n_items, np.float32), activation)


def sequence_from_sessions(items: np.ndarray, sessions: np.ndarray, times: np.ndarray,
                           users: Optional[np.ndarray] = None, carry_state: bool = False):
    """Order clicks by (session or user, time) and flag where states reset.

    Returns ``(items int32, reset bool, order int64)``: ``reset[i]`` is True
    where a new session starts (or, with ``carry_state``, a new user).
    """
    key = users if (carry_state and users is not None) else sessions
    order = np.lexsort((np.arange(len(items)), times, key))
    k = np.asarray(key)[order]
    reset = np.ones(len(items), bool)
    if len(items) > 1:
        reset[1:] = k[1:] != k[:-1]
    return np.asarray(items, np.int32)[order], reset, order


def evaluate_sequence(params: Params, items: np.ndarray, reset: np.ndarray,
                      ks=(5, 10, 20), chunk: int = 512, eval_mask: Optional[np.ndarray] = None):
    """Next-item evaluation over a sequence (full ranking over all items).

    Every click whose next click is in the same session (no reset between)
    is an event, unless ``eval_mask`` (bool per click) restricts them.
    Returns a dict with recall/mrr at each k, optimistic and conservative
    ties (``recall@20``, ``mrr@20``, ``recall@20_cons`` ...) and ``events``.
    """
    n = len(items)
    pos = np.flatnonzero(~reset[1:]) if n > 1 else np.zeros(0, np.int64)
    if eval_mask is not None:
        pos = pos[eval_mask[pos]]
    if pos.size == 0:
        return {"events": 0}
    targets = items[pos + 1]
    U = user_vectors(params, items, reset, pos)
    opt, cons = ranks_full(params, U, targets, chunk)
    out = {"events": int(pos.size)}
    for k in ks:
        for name, r in (("", opt), ("_cons", cons)):
            hit = r < k
            out[f"recall@{k}{name}"] = float(hit.mean())
            out[f"mrr@{k}{name}"] = float(np.where(hit, 1.0 / (r + 1), 0.0).mean())
    return out


def fit(params: Params, items: np.ndarray, reset: np.ndarray, cfg: FitConfig,
        popularity: Optional[np.ndarray] = None,
        valid: Optional[tuple] = None, log: Callable[[str], None] = None,
        progress: bool = True) -> dict:
    """Train ``params`` in place on the sequence; returns a history dict.

    ``valid`` = (items, reset) of a validation sequence: Recall@20/MRR@20
    after each epoch, and early stopping with ``cfg.patience`` (the best
    epoch's weights are kept).
    """
    log = log or (lambda s: print(s, file=sys.stderr))
    tc = cfg.train
    tc.train_embeddings = True
    tc.train_head = cfg.head
    if popularity is None:
        popularity = np.bincount(items, minlength=params.n_items).astype(np.float64)
    trainer = Trainer(params, items, reset, tc, n_trainable=len(params.layers),
                      reset_at_sessions=True, popularity=popularity)
    history = {"epochs": [], "events": int(len(items))}
    best, best_state, bad = -1.0, None, 0
    bar = None
    for ep in range(tc.epochs):
        t0 = time.perf_counter()
        if progress:
            try:
                from tqdm import tqdm
                bar = tqdm(total=0, desc=f"epoch {ep + 1}/{tc.epochs}", unit="batch",
                           leave=False, file=sys.stderr, disable=not sys.stderr.isatty())
            except ImportError:  # pragma: no cover - tqdm is in the [trainer] extra
                bar = None

        def prog(i, nb, loss):
            if bar is not None:
                bar.total = nb
                bar.n = i
                bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
                bar.refresh()

        loss = trainer.epoch(prog if bar is not None else None)
        if bar is not None:
            bar.close()
        dt = time.perf_counter() - t0
        rec = {"epoch": ep + 1, "loss": loss, "seconds": dt, "events_per_s": len(items) / dt}
        if valid is not None:
            m = evaluate_sequence(params, valid[0], valid[1], ks=(20,))
            rec.update({k: m[k] for k in ("recall@20", "mrr@20") if k in m})
        history["epochs"].append(rec)
        msg = f"epoch {ep + 1}: loss {loss:.4f}, {dt:.1f} s ({len(items) / dt:,.0f} clicks/s)"
        if "recall@20" in rec:
            msg += f", valid Recall@20 {rec['recall@20']:.4f} MRR@20 {rec['mrr@20']:.4f}"
        log(msg)
        if valid is not None and cfg.patience > 0:
            score = rec.get("recall@20", 0.0)
            if score > best:
                best, bad = score, 0
                best_state = params.copy()
            else:
                bad += 1
                if bad >= cfg.patience:
                    log(f"early stop: no improvement for {bad} epochs (best Recall@20 {best:.4f})")
                    break
    if best_state is not None:
        params.E[...] = best_state.E
        for a, b in zip(params.layers, best_state.layers):
            for x, y in zip(a, b):
                x[...] = y
        params.W_p[...] = best_state.W_p
        params.b_p[...] = best_state.b_p
        if params.O is not None:
            params.O[...] = best_state.O
        params.b_out[...] = best_state.b_out
    return history

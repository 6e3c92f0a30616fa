"""Global model training (``deeprec-train fit``) with the C core for every layer.

The click log becomes one long sequence of dense item indices, one stream per
session (or per user with ``carry_state``), streams ordered by their first
click, with a reset flag where a stream starts (the hidden state of every
layer resets there).  Training is the runtime's own engine
(:mod:`deeprec_edge._engine`, extended by :mod:`deeprec_edge.trainer.engine`)
with every layer, the embeddings and the output table trainable, in one of two modes:

- ``train.session_parallel=True`` -- GRU4Rec's recipe: ``batch_size``
  sessions side by side, one click per step, hidden states carried from step
  to step (1-step BPTT) and reset at session starts, a finished session's
  slot taking the next one; BPR-max on ELU(scores) (``train.elu``) or
  cross-entropy with logQ; negatives shared by the mini-batch, drawn
  proportionally to support^alpha; momentum Adagrad; dropout on the input
  embedding and on every layer's output (which is also the carried state);
  ``head=False`` scores ``h . O_i + b_i`` directly as GRU4Rec does.
- ``train.session_parallel=False`` -- truncated BPTT over shuffled windows of
  ``window`` clicks with epoch-start states (the on-device engine's mode).

Adam is available as well; tied ("constrained") embeddings; deterministic
for a seed.  :func:`gru4rec_config` gives the settings chosen on the
YOOCHOOSE validation split.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Callable, List, Optional, Tuple

import numpy as np

from deeprec_edge._engine import Params, user_vectors

from .engine import CloudTrainConfig, CloudTrainer
from deeprec_edge._scoring import rank_events
from deeprec_edge.ranking import mrr_at_k, recall_at_k

__all__ = ["FitConfig", "gru4rec_config", "config_for", "init_params", "sequence_from_sessions",
           "fit", "evaluate_sequence"]


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
    train: CloudTrainConfig = field(default_factory=CloudTrainConfig)
    init_scale: float = 1.0
    patience: int = 0             # early stopping on validation Recall@20 (0: off)
    average_epochs: int = 0       # the result is the mean of the weights after each of the
                                  # last k epochs (0/1: the last epoch's weights)
    # -- the global model's repeat component and device recipe (trainer/pipeline.py) --
    repeat: bool = True           # learn the repeat component on held-out clicks
    repeat_memory: int = 500      # distinct items a device remembers for repeat scores
    inner_quantiles: Tuple[float, float] = (0.8, 0.9)  # inner cutoffs (time quantiles)
    min_inner_events: int = 200   # fewer events between the inner cutoffs: plain GRU
    simulate_users: int = 1000    # devices simulated to choose the recipe (0: default recipe)
    min_simulated_users: int = 20  # fewer: keep the default recipe
    recipe: Optional[dict] = None  # a fixed device recipe (skips the simulation)
    # -- gradual magnitude pruning with recovery (trainer/compress.py: AGP) --
    prune: float = 0.0            # final sparsity of every pruned matrix (0: off)
    prune_begin: float = 0.1      # share of training when pruning starts
    prune_end: float = 0.6        # share of training when it reaches `prune` (the rest recovers)
    prune_parts: Tuple[str, ...] = ("tables", "gru", "head")


def gru4rec_config(**overrides) -> FitConfig:
    """GRU4Rec's architecture and recipe with the settings chosen on
    YOOCHOOSE (rsc15 100k) ``train_tr`` -> ``train_valid`` (mean of 3 seeds):
    100 GRU units, tied embeddings, no head, session-parallel mini-batches of
    32, BPR-max on ELU(0.5) scores with bpreg 0.84, 2048 shared negatives
    drawn ~ support^0.2, Adagrad with momentum 0.49 at lr 0.04, dropout 0.6
    on the input embedding and 0.27 on the hidden state, 10 epochs, the
    weights averaged over the last 4 epochs.  ``overrides`` set FitConfig
    fields, or TrainConfig fields by name (e.g. ``epochs=5``)."""
    train = CloudTrainConfig(epochs=10, batch_size=32, n_negatives=2048, alpha=0.2,
                             loss="bpr-max", bpreg=0.84, elu=0.5, optimizer="adagrad", lr=0.04,
                             momentum=0.49, dropout_in=0.6, dropout_hidden=0.27,
                             session_parallel=True)
    cfg = FitConfig(hidden=[100], tied=True, head=False, train=train, average_epochs=4)
    fit_fields = {f.name for f in fields(FitConfig)}
    train_fields = {f.name for f in fields(CloudTrainConfig)}
    for k, v in overrides.items():
        if k in fit_fields:
            setattr(cfg, k, v)
        elif k in train_fields:
            setattr(cfg.train, k, v)
        else:
            raise TypeError(f"gru4rec_config: no FitConfig or TrainConfig field {k!r}")
    return cfg


def config_for(log_kind: str) -> FitConfig:
    """The best recipe measured for a kind of log: GRU4Rec's
    (:func:`gru4rec_config`) for session logs -- RSC15-100k test Recall@20 /
    MRR@20 0.7118 / 0.3795 against 0.672 / 0.337 for :class:`FitConfig`'s
    defaults -- and :class:`FitConfig`'s windowed sampled softmax for user
    logs (docs/trainer.md, "Fit defaults")."""
    if log_kind not in ("session", "user"):
        raise ValueError(f"log_kind must be 'session' or 'user', got {log_kind!r}")
    return gru4rec_config() if log_kind == "session" else FitConfig()


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
    """Order clicks into streams (sessions, or users with ``carry_state``),
    each in time order, the streams by their first click's time (GRU4Rec's
    ``session_order='time'``; ties by stream key), and flag where states reset.

    Returns ``(items int32, reset bool, order int64)``: ``reset[i]`` is True
    where a new session starts (or, with ``carry_state``, a new user).
    """
    key = np.asarray(users if (carry_state and users is not None) else sessions)
    times = np.asarray(times)
    n = len(items)
    order = np.lexsort((np.arange(n), times, key))
    k = key[order]
    reset = np.ones(n, bool)
    if n > 1:
        reset[1:] = k[1:] != k[:-1]
        # streams by the time of their first click (stable: ties keep key order)
        starts = np.flatnonzero(reset)
        lengths = np.diff(np.append(starts, n))
        by_time = np.argsort(times[order][starts], kind="stable")
        first = np.repeat(starts[by_time], lengths[by_time])
        offset = np.arange(n) - np.repeat(np.cumsum(lengths[by_time]) - lengths[by_time],
                                          lengths[by_time])
        order = order[first + offset]
        reset = np.zeros(n, bool)
        reset[np.cumsum(lengths[by_time]) - lengths[by_time]] = True
    return np.asarray(items, np.int32)[order], reset, order


def evaluate_sequence(params: Params, items: np.ndarray, reset: np.ndarray,
                      ks=(5, 10, 20), eval_mask: Optional[np.ndarray] = None):
    """Next-item evaluation over a sequence (full ranking over all items).

    Every click whose next click is in the same session (no reset between)
    is an event, unless ``eval_mask`` (bool per click) restricts them.
    Ranks come from the one ranking path (:mod:`deeprec_edge.ranking`).
    Returns a dict with recall/mrr at each k, optimistic and conservative
    ties (``recall@20``, ``mrr@20``, ``recall@20_cons`` ...) and ``events``.
    """
    n = len(items)
    pos = np.flatnonzero(~reset[1:]) if n > 1 else np.zeros(0, np.int64)
    if eval_mask is not None:
        pos = pos[eval_mask[pos]]
    if pos.size == 0:
        return {"events": 0}
    targets = items[pos + 1].astype(np.int64)
    U = user_vectors(params, items, reset, pos)
    opt, cons = rank_events(params, None, U, targets)
    out = {"events": int(pos.size)}
    for k in ks:
        for name, r in (("", opt), ("_cons", cons)):
            out[f"recall@{k}{name}"] = float(recall_at_k(r, k).mean())
            out[f"mrr@{k}{name}"] = float(mrr_at_k(r, k).mean())
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
    if not isinstance(tc, CloudTrainConfig):   # a device TrainConfig: the cloud's defaults
        tc = cfg.train = CloudTrainConfig(**asdict(tc))
    tc.train_embeddings = True
    tc.train_head = cfg.head
    if popularity is None:
        popularity = np.bincount(items, minlength=params.n_items).astype(np.float64)
    trainer = CloudTrainer(params, items, reset, tc, n_trainable=len(params.layers),
                      reset_at_sessions=True, popularity=popularity)
    history = {"epochs": [], "events": int(len(items))}
    pruner = None
    if cfg.prune > 0:
        from .compress import Pruner
        parts = tuple(p for p in cfg.prune_parts if p != "head" or cfg.head)
        pruner = Pruner(params, cfg.prune, cfg.prune_begin, cfg.prune_end, parts)
        log(f"pruning {', '.join(parts)} to {cfg.prune:.0%} (AGP between "
            f"{cfg.prune_begin:.0%} and {cfg.prune_end:.0%} of training, then recovery)")
    best, best_state, bad = -1.0, None, 0
    avg, n_avg = None, 0
    bar = None
    for ep in range(tc.epochs):
        t0, c0 = time.perf_counter(), time.process_time()
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

        after = None
        if pruner is not None:
            def after(i, n, ep=ep):
                # masks recomputed ten times an epoch while the sparsity grows; the
                # small matrices re-masked after every step, the tables every 50
                if i % max(1, n // 10) == 0 or i == 1:
                    pruner.update((ep + i / n) / tc.epochs)
                pruner.apply(pruner.dense_names if i % 50 else None)

        loss = trainer.epoch(prog if bar is not None else None, after)
        if pruner is not None:
            pruner.apply()
        if bar is not None:
            bar.close()
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        rec = {"epoch": ep + 1, "loss": loss, "seconds": dt, "cpu_seconds": dc,
               "events_per_s": len(items) / dt}
        if valid is not None:
            m = evaluate_sequence(params, valid[0], valid[1], ks=(20,))
            rec.update({k: m[k] for k in ("recall@20", "mrr@20") if k in m})
        history["epochs"].append(rec)
        if cfg.average_epochs > 1 and ep >= tc.epochs - cfg.average_epochs:
            if avg is None:
                avg = [a.astype(np.float64) for a in _arrays(params)]
            else:
                for a, x in zip(avg, _arrays(params)):
                    a += x
            n_avg += 1
        msg = (f"epoch {ep + 1}: loss {loss:.4f}, {dt:.1f} s, cpu {dc:.1f} s "
               f"({len(items) / dt:,.0f} clicks/s)")
        if pruner is not None:
            rec["sparsity"] = pruner.sparsity
            msg += f", sparsity {pruner.sparsity:.0%}"
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
        for x, y in zip(_arrays(params), _arrays(best_state)):
            x[...] = y
    elif avg is not None and n_avg > 1:
        for x, a in zip(_arrays(params), avg):
            x[...] = a / n_avg
        history["averaged_epochs"] = n_avg
        log(f"weights averaged over the last {n_avg} epochs")
    if pruner is not None:
        pruner.update(1.0)
        pruner.apply()
        history["sparsity"] = pruner.sparsity
    return history


def _arrays(p: Params) -> List[np.ndarray]:
    """Every trainable array of a model, in a fixed order."""
    out = [p.E] + [a for layer in p.layers for a in layer] + [p.W_p, p.b_p, p.b_out]
    return out + ([p.O] if p.O is not None else [])

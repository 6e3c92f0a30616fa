"""Private, on-device fine-tuning of the last GRU layer and the dense head.

``finetune(model, history)`` trains a personal copy of the model on the
user's own clicks.  Frozen: the input embeddings, GRU layers 1..L-1, the
output table and bias.  Trainable: GRU layer L and the head.  Because the
lower layers are frozen, their outputs over the history are computed once
and reused every epoch (:class:`deeprec_edge._engine.Trainer`); the history
is cut into windows (never across a session start when states reset) and
trained with truncated BPTT, several windows per batch, sampled softmax with
logQ correction over the batch's targets and negatives drawn proportionally
to popularity^alpha from the model and uniformly from the candidate set when
one is given.  Deterministic for a seed.

The newest ``holdout`` share of the clicks is held out: Recall@20 on those
next-click events is reported before and after, and drives early stopping.
Nothing is written anywhere: the caller decides where the personal model
goes (:func:`deeprec_edge.model.save_model` writes atomically).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from . import _engine
from ._engine import Params, TrainConfig, Trainer

__all__ = ["FinetuneResult", "finetune", "evaluate_history"]


@dataclass
class FinetuneResult:
    """What :func:`finetune` returns.

    ``model`` is the personal model (same format as the global one, plus
    fine-tuning metadata); ``summary`` a dict: clicks_read, clicks_used,
    clicks_skipped_unknown, clicks_older_than_model, windows, epochs_run,
    loss_first_epoch, loss_last_epoch, recall20_before, recall20_after,
    mrr20_before, mrr20_after, heldout_events, seconds, best_epoch.
    """

    model: object
    summary: dict = field(default_factory=dict)


def evaluate_history(params: Params, items: np.ndarray, session_start: Optional[np.ndarray],
                     positions: np.ndarray, reset_at_sessions: bool = True,
                     candidates: Optional[np.ndarray] = None, k: int = 20) -> dict:
    """Next-click Recall@k and MRR@k at ``positions`` (the target of
    position p is ``items[p + 1]``), ranking all items or only the
    candidate set (targets outside the set count as misses)."""
    if positions.size == 0:
        return {"events": 0, "recall": float("nan"), "mrr": float("nan")}
    U = _engine.user_vectors(params, items, session_start, positions, reset_at_sessions)
    targets = items[positions + 1]
    if candidates is None:
        ranks, _ = _engine.ranks_full(params, U, targets)
    else:
        cand = np.asarray(candidates, np.int64)
        S = U @ params.out_table[cand].T + params.b_out[cand][None, :]
        inset = np.zeros(params.n_items, bool)
        inset[cand] = True
        tscore = (U * params.out_table[targets]).sum(1) + params.b_out[targets]
        ranks = (S > tscore[:, None]).sum(1)
        ranks = np.where(inset[targets], ranks, np.iinfo(np.int64).max)
    hit = ranks < k
    rr = np.where(hit, 1.0 / (np.minimum(ranks, 1 << 40) + 1.0), 0.0)
    return {"events": int(positions.size), "recall": float(hit.mean()), "mrr": float(rr.mean())}


def _heldout_positions(targets_all: np.ndarray, n_train: int) -> np.ndarray:
    pos = np.flatnonzero(targets_all >= 0)
    return pos[pos + 1 >= n_train]


def finetune_params(base: Params, items: np.ndarray, session_start: Optional[np.ndarray], *,
                    reset_at_sessions: bool = True, popularity: Optional[np.ndarray] = None,
                    candidates: Optional[np.ndarray] = None, epochs: int = 5, seed: int = 0,
                    window: int = 20, batch_size: int = 16, n_negatives: int = 256,
                    alpha: float = 0.75, lr: float = 0.05, optimizer: str = "adagrad",
                    holdout: float = 0.1, early_stopping: bool = True,
                    l2_to_global: float = 0.0, train_gru: bool = True,
                    progress: Optional[Callable[[str], None]] = None) -> tuple:
    """Fine-tune a copy of ``base`` on one click sequence (dense indices).

    ``l2_to_global`` adds ``l2_to_global / 2 * ||w - w_global||^2`` over the
    trained weights to the loss (a pull towards ``base``; 0: off);
    ``train_gru=False`` trains the head only (the last GRU layer stays the
    global one).  Returns ``(personal Params, summary dict)``.  ``base`` is
    not modified.
    """
    from ._checks import check_finetune_args  # ranges: deeprec_edge/_checks.py
    check_finetune_args(locals())
    t0 = time.perf_counter()
    items = np.ascontiguousarray(items, np.int32)
    n = int(items.shape[0])
    if n < 2:
        raise ValueError(f"fine-tuning needs at least 2 clicks of known items, got {n}")
    n_hold = int(round(n * holdout)) if holdout > 0 and n >= 10 else 0
    n_train = n - n_hold
    targets_all = _engine.next_targets(items, session_start, reset_at_sessions)
    held = _heldout_positions(targets_all, n_train) if n_hold else np.zeros(0, np.int64)
    cfg = TrainConfig(epochs=epochs, window=window, batch_size=batch_size,
                      n_negatives=n_negatives, alpha=alpha, lr=lr, optimizer=optimizer,
                      seed=seed, loss="xe", candidate_share=0.5,
                      l2_to_init=l2_to_global, train_gru=train_gru)
    params = base.copy()
    trainer = Trainer(params, items, session_start, cfg, n_trainable=1,
                      reset_at_sessions=reset_at_sessions, popularity=popularity,
                      candidates=candidates, train_limit=n_train)
    n_train_events = int((trainer.targets >= 0).sum())
    if n_train_events == 0:
        raise ValueError("the history has no next-click pair to learn from "
                         "(every session has a single click)")
    before = evaluate_history(base, items, session_start, held, reset_at_sessions, candidates)
    # Early stopping on the held-out clicks; epoch 0 is the global model, so
    # a fine-tune that never beats it leaves the personal model equal to it.
    best_score, best, best_epoch, bad = before["recall"], _trainable_copy(base), 0, 0
    losses = []
    say = progress or (lambda s: None)
    for ep in range(epochs):
        te = time.perf_counter()
        loss = trainer.epoch()
        losses.append(loss)
        msg = f"epoch {ep + 1}/{epochs}: loss {loss:.4f} ({time.perf_counter() - te:.2f} s)"
        if held.size:
            m = evaluate_history(params, items, session_start, held, reset_at_sessions, candidates)
            msg += f", held-out Recall@20 {m['recall']:.3f}"
            if m["recall"] > best_score:
                best_score, best_epoch, bad = m["recall"], ep + 1, 0
                best = _trainable_copy(params)
            else:
                bad += 1
        say(msg)
        if held.size and early_stopping and bad >= 2:
            say(f"early stop: held-out Recall@20 has not improved for {bad} epochs")
            break
    if held.size and early_stopping:
        _restore_trainable(params, best)
    else:
        best_epoch = len(losses)
    after = evaluate_history(params, items, session_start, held, reset_at_sessions, candidates)
    summary = {
        "clicks_used": n,
        "train_events": n_train_events,
        "windows": len(trainer.seg),
        "epochs_run": len(losses),
        "best_epoch": best_epoch,
        "loss_first_epoch": losses[0] if losses else float("nan"),
        "loss_last_epoch": losses[-1] if losses else float("nan"),
        "heldout_events": int(held.size),
        "recall20_before": before["recall"],
        "recall20_after": after["recall"],
        "mrr20_before": before["mrr"],
        "mrr20_after": after["mrr"],
        "seconds": time.perf_counter() - t0,
    }
    return params, summary


def _trainable_copy(p: Params):
    return ([a.copy() for a in p.layers[-1]], p.W_p.copy(), p.b_p.copy())


def _restore_trainable(p: Params, saved) -> None:
    layer, W_p, b_p = saved
    for dst, src in zip(p.layers[-1], layer):
        dst[...] = src
    p.W_p[...] = W_p
    p.b_p[...] = b_p

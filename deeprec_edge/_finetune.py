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

import math
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from . import _engine
from ._engine import Params, TrainConfig, Trainer
from ._scoring import rank_events
from .ranking import mrr_at_k, recall_at_k
from .repeat import FEATURES, RepeatSpec, history_features

__all__ = ["FinetuneResult", "finetune", "evaluate_history"]


@dataclass
class FinetuneResult:
    """What :func:`finetune` returns.

    ``model`` is the personal model (same format as the global one, plus
    fine-tuning metadata); ``summary`` a dict: clicks_read, clicks_used (the
    new clicks learned from), clicks_left_new (new clicks the next
    fine-tune will learn from), clicks_skipped_unknown,
    clicks_older_than_model, windows, epochs_run,
    loss_first_epoch, loss_last_epoch, recall20_before, recall20_after,
    mrr20_before, mrr20_after, heldout_events, seconds, best_epoch.
    """

    model: object
    summary: dict = field(default_factory=dict)


def evaluate_history(params: Params, items: np.ndarray, session_start: Optional[np.ndarray],
                     positions: np.ndarray, reset_at_sessions: bool = True,
                     candidates: Optional[np.ndarray] = None, k: int = 20,
                     repeat: Optional[RepeatSpec] = None) -> dict:
    """Next-click Recall@k and MRR@k at ``positions`` (the target of
    position p is ``items[p + 1]``), ranking all items or only the
    candidate set (targets outside the set count as misses), through the one
    ranking path (:mod:`deeprec_edge.ranking`: optimistic ranks, non-finite
    scores rank last).  ``repeat``: the model's repeat component."""
    positions = np.asarray(positions, np.int64)
    if positions.size == 0:
        return {"events": 0, "recall": float("nan"), "mrr": float("nan")}
    U = _engine.user_vectors(params, items, session_start, positions, reset_at_sessions)
    targets = np.asarray(items, np.int64)[positions + 1]
    rep = None
    if repeat is not None and repeat.active:
        rep = history_features(items, session_start, positions, repeat.memory)
    mask = None
    if candidates is not None:
        mask = np.zeros(params.n_items, bool)
        mask[np.asarray(candidates, np.int64)] = True
    ranks, _ = rank_events(params, repeat, U, targets, rep, mask)
    return {"events": int(positions.size), "recall": float(recall_at_k(ranks, k).mean()),
            "mrr": float(mrr_at_k(ranks, k).mean())}


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
                    repeat: Optional[RepeatSpec] = None, first_target: int = 0,
                    progress: Optional[Callable[[str], None]] = None) -> tuple:
    """Fine-tune a copy of ``base`` on one click sequence (dense indices).

    Only next clicks at or after position ``first_target`` are learned from
    (and held out); the clicks before it are context, read for the states
    (continual fine-tuning: the clicks a personal model already learned).

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
    first_target = int(first_target)
    if not 0 <= first_target < n:
        raise ValueError(f"first_target must be in [0, {n}), got {first_target}")
    n_new = n - first_target
    n_hold = int(round(n_new * holdout)) if holdout > 0 and n_new >= 10 else 0
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
    if first_target > 1:
        trainer.targets[:first_target - 1] = -1     # next clicks already learned from
    n_train_events = int((trainer.targets >= 0).sum())
    if n_train_events == 0:
        raise ValueError("the history has no next-click pair to learn from "
                         "(every session has a single click)")
    before = evaluate_history(base, items, session_start, held, reset_at_sessions, candidates,
                              repeat=repeat)
    # Early stopping on the held-out clicks; epoch 0 is the global model, so
    # a fine-tune that never beats it leaves the personal model equal to it.
    best_score, best, best_epoch, bad = before["recall"], _trainable_copy(base), 0, 0
    losses = []
    say = progress or (lambda s: None)
    diverged = None
    for ep in range(epochs):
        te = time.perf_counter()
        loss = trainer.epoch()
        losses.append(loss)
        msg = f"epoch {ep + 1}/{epochs}: loss {loss:.4f} ({time.perf_counter() - te:.2f} s)"
        if not math.isfinite(loss) or not _finite_trainable(params):
            diverged = (f"epoch {ep + 1} diverged (loss {loss}"
                        f"{'' if _finite_trainable(params) else ', non-finite weights'})")
            say(msg + f"; {diverged}: keeping the global model")
            break
        if held.size:
            m = evaluate_history(params, items, session_start, held, reset_at_sessions, candidates,
                                 repeat=repeat)
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
    if diverged is not None:
        _restore_trainable(params, _trainable_copy(base))
        best_epoch = 0
    elif held.size and early_stopping:
        _restore_trainable(params, best)
    else:
        best_epoch = len(losses)
    after = evaluate_history(params, items, session_start, held, reset_at_sessions, candidates,
                             repeat=repeat)
    summary = {
        "clicks_used": n,
        "train_events": n_train_events,
        "windows": len(trainer.seg),
        "epochs_run": len(losses),
        "best_epoch": best_epoch,
        "loss_first_epoch": losses[0] if losses else float("nan"),
        "loss_last_epoch": losses[-1] if losses else float("nan"),
        "heldout_events": int(held.size),
        "heldout_first_target": int(n_train),   # the held-out next clicks: index >= this
        "recall20_before": before["recall"],
        "recall20_after": after["recall"],
        "mrr20_before": before["mrr"],
        "mrr20_after": after["mrr"],
        "seconds": time.perf_counter() - t0,
        "kept_global": diverged,
    }
    return params, summary


def _finite_trainable(p: Params) -> bool:
    return all(bool(np.isfinite(a).all()) for a in list(p.layers[-1]) + [p.W_p, p.b_p])


def _trainable_copy(p: Params):
    return ([a.copy() for a in p.layers[-1]], p.W_p.copy(), p.b_p.copy())


def _restore_trainable(p: Params, saved) -> None:
    layer, W_p, b_p = saved
    for dst, src in zip(p.layers[-1], layer):
        dst[...] = src
    p.W_p[...] = W_p
    p.b_p[...] = b_p


# --------------------------------------------------------------------------
# parameter-efficient personal parts (the recipe's offset / bias / repeat / head)
# --------------------------------------------------------------------------

@dataclass
class PersonalParts:
    """What :func:`fit_parts` gives: the personal ``params`` (head bias with
    the offset, head matrix, output bias with the personal biases applied),
    the personal repeat component, the items whose output bias changed, and
    a summary."""

    params: Params
    repeat: RepeatSpec
    bias_index: Optional[np.ndarray]
    summary: dict
    #: the parts fitted without the held-out events (the per-user check), or None
    check: Optional["PersonalParts"] = None


def _apply(base: Params, spec: RepeatSpec, fit, bias_items: np.ndarray,
           summary: dict) -> PersonalParts:
    """The personal model's parameters: ``base`` with the fitted parts."""
    p = base.copy()
    if fit.delta is not None:
        p.b_p += fit.delta
    if fit.W_p is not None:
        p.W_p[...] = fit.W_p
    bias_index = None
    if fit.beta is not None:
        p.b_out[bias_items] += fit.beta
        bias_index = bias_items
    new_spec = spec
    if fit.w is not None:
        new_spec = RepeatSpec(scale=spec.scale, w=tuple(float(x) for x in fit.w),
                              memory=spec.memory)
    return PersonalParts(p, new_spec, bias_index, summary)


def event_positions(items: np.ndarray, session_start: Optional[np.ndarray],
                    reset_at_sessions: bool = True, first_target: int = 0) -> np.ndarray:
    """Input positions of the next-click events of a history: ``p`` such that
    click ``p + 1`` continues the session of click ``p`` (every consecutive
    pair when states carry over sessions) and ``p + 1 >= first_target``."""
    t = _engine.next_targets(np.asarray(items, np.int32), session_start, reset_at_sessions)
    pos = np.flatnonzero(t >= 0)
    return pos[pos + 1 >= first_target]


def _columns(n_items: int, targets: np.ndarray, bias_items: np.ndarray,
             popularity: Optional[np.ndarray], n_negatives: int, alpha: float, seed: int):
    """Scored columns for a large catalogue: targets, the user's items and
    ``n_negatives`` items drawn ~ popularity^alpha (with logQ on the drawn
    ones only; the others are certain)."""
    rng = np.random.default_rng(seed)
    pop = np.ones(n_items) if popularity is None else np.asarray(popularity, np.float64)
    q = np.maximum(pop, 0.0) ** alpha
    q = q / q.sum() if q.sum() > 0 else np.full(n_items, 1.0 / n_items)
    drawn = np.unique(rng.choice(n_items, size=min(n_negatives, n_items), p=q))
    certain = np.union1d(targets, bias_items)
    cols = np.union1d(certain, drawn).astype(np.int64)
    logq = np.zeros(cols.size, np.float32)
    only_drawn = ~np.isin(cols, certain)
    # expected number of draws of the item: n_negatives * q_i
    logq[only_drawn] = np.log(np.maximum(n_negatives * q[cols[only_drawn]], 1e-30))
    return cols, logq


def _widen_bias(x: Optional[np.ndarray], parts, base: Params, sub: np.ndarray,
                full: np.ndarray) -> Optional[np.ndarray]:
    """A packed solution over the personal biases of ``sub`` (sorted item
    indices) as one over ``full`` (a sorted superset; the others start at
    0): the check's fit warm-starts the final one."""
    from ._personal import PARTS
    if x is None or "bias" not in parts:
        return x
    d, h = base.W_p.shape
    sizes = {"offset": d, "bias": sub.size, "repeat": len(FEATURES), "head": d * h}
    out, a = [], 0
    for part in (q for q in PARTS if q in parts):
        seg = x[a:a + sizes[part]]
        a += sizes[part]
        if part == "bias":
            wide = np.zeros(full.size, seg.dtype)
            wide[np.searchsorted(full, sub)] = seg
            seg = wide
        out.append(seg)
    return np.concatenate(out)


def fit_parts(base: Params, spec: RepeatSpec, items: np.ndarray,
              session_start: Optional[np.ndarray], recipe, *, reset_at_sessions: bool = True,
              first_target: int = 0, popularity: Optional[np.ndarray] = None, seed: int = 0,
              full_softmax_limit: int = 8192, n_negatives: int = 2048, alpha: float = 0.75,
              repeat_component: Optional[bool] = None, end_target: Optional[int] = None,
              progress: Optional[Callable[[str], None]] = None) -> PersonalParts:
    """Fit the recipe's parameter-efficient parts (offset, bias, repeat,
    head) on one history (:mod:`deeprec_edge._personal`).

    Events are the history's next-click pairs whose target is at or after
    ``first_target`` and before ``end_target`` (None: the end; the newest
    ``recipe.max_events`` of them); their inputs read the whole history.  With ``recipe.holdout`` the newest events are
    held out first: if the parts fitted on the rest do not lower their loss,
    the user keeps ``base`` (``summary["kept_global"]`` says why).  A
    non-finite objective also keeps ``base``.  ``repeat_component``: whether
    the model has a repeat component whose weights the ``repeat`` part may
    tune (default: ``spec.active``; a model may carry a zeroed one).
    ``base`` is not modified."""
    from ._personal import PersonalData, fit_personal, personal_loss

    say = progress or (lambda s: None)
    t0 = time.perf_counter()
    items = np.ascontiguousarray(items, np.int32)
    parts = [p for p in recipe.parts if p != "gru"]
    has_rep = spec.active if repeat_component is None else bool(repeat_component)
    if not has_rep and "repeat" in parts:
        parts.remove("repeat")           # a model without the component has no weights to tune
    pos = event_positions(items, session_start, reset_at_sessions, first_target)
    if end_target is not None:
        pos = pos[pos + 1 < end_target]
    pos = pos[-recipe.max_events:]
    summary = {"parts": parts, "events": int(pos.size), "kept_global": None,
               "heldout_events": 0}
    keep = PersonalParts(base, spec, None, summary)
    if not parts or pos.size == 0:
        summary["kept_global"] = ("no personal parts in the recipe" if not parts
                                  else "no next-click event to learn from")
        summary["seconds"] = time.perf_counter() - t0
        return keep
    H = _engine.hidden_states(base, items, session_start, pos, reset_at_sessions)
    rows, cols, phi = history_features(items, session_start, pos, spec.memory)
    targets = items[pos + 1].astype(np.int64)
    bias_items = np.unique(items[: int(pos[-1]) + 2]).astype(np.int64)
    columns = logq = None
    if base.n_items > full_softmax_limit:
        columns, logq = _columns(base.n_items, targets, bias_items, popularity, n_negatives,
                                 alpha, seed)
    data = PersonalData(H, targets, rows, cols, phi, bias_items, columns, logq)
    l2 = {p: recipe.l2 for p in parts}
    n = data.n
    weights = None
    if recipe.half_life > 0:
        weights = 0.5 ** ((n - 1 - np.arange(n)) / recipe.half_life)
    n_hold = 0
    if recipe.holdout > 0 and n >= 2 * recipe.min_holdout:
        n_hold = max(recipe.min_holdout, int(round(recipe.holdout * n)))
    x0 = None
    check = None
    if n_hold:
        train, held = data.subset(np.arange(n - n_hold)), data.subset(np.arange(n - n_hold, n))
        # the check's fit knows only the clicks up to its last target: no personal bias
        # (nor a certain column) for an item the held-out events alone click
        train_bias = np.unique(items[: int(pos[n - n_hold - 1]) + 2]).astype(np.int64)
        train.bias_items = held.bias_items = train_bias   # the held-out loss: the same biases
        if columns is not None:
            train.columns, train.logq = _columns(base.n_items, train.targets, train_bias,
                                                 popularity, n_negatives, alpha, seed)
        wt = None if weights is None else weights[n_hold:]   # the same ages, shifted
        fit = fit_personal(train, base, spec, parts, l2, max_iter=recipe.max_iter, weights=wt)
        before = float(personal_loss(held, base, spec).mean())
        after = float(personal_loss(held, base, spec, fit).mean()) \
            if fit.info.get("status") != "non-finite" else float("nan")
        summary.update(heldout_events=n_hold, heldout_loss_before=before,
                       heldout_loss_after=after)
        say(f"held-out check on the newest {n_hold} events: loss {before:.4f} (global) -> "
            f"{after:.4f} (personal)")
        if not after < before:
            summary["kept_global"] = (f"the personal parts did not lower the loss of the newest "
                                      f"{n_hold} events ({after:.4f} vs {before:.4f})")
            summary["seconds"] = time.perf_counter() - t0
            return keep
        x0 = _widen_bias(fit.info.get("x"), parts, base, train_bias, bias_items)
        check = _apply(base, spec, fit, train_bias, {})
    fit = fit_personal(data, base, spec, parts, l2, max_iter=recipe.max_iter, x0=x0,
                       weights=weights)
    vals = [v for v in (fit.delta, fit.beta, fit.w, fit.W_p) if v is not None]
    if fit.info.get("status") == "non-finite" or not all(np.isfinite(v).all() for v in vals) \
            or not np.isfinite(fit.loss):
        summary["kept_global"] = "the fit diverged (non-finite loss or weights)"
        summary["seconds"] = time.perf_counter() - t0
        return keep
    summary.update(loss=fit.loss / n, iterations=fit.info.get("iterations"),
                   status=fit.info.get("status"), seconds=time.perf_counter() - t0)
    say(f"personal parts {'+'.join(parts)} on {n} events: loss {fit.loss / n:.4f} "
        f"({fit.info.get('iterations')} L-BFGS iterations)")
    out = _apply(base, spec, fit, bias_items, summary)
    out.check = check
    return out

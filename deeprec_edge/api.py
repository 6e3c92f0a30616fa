"""The runtime's Python API: fine-tune, embed, recommend.

>>> from deeprec_edge import load_model, read_history, finetune, recommend
>>> model = load_model("weights.npz")                       # doctest: +SKIP
>>> hist = read_history("history.csv", model=model)          # doctest: +SKIP
>>> res = finetune(model, hist)                              # doctest: +SKIP
>>> ids, scores = recommend(res.model, hist, k=20)           # doctest: +SKIP
"""
from __future__ import annotations

from typing import Callable, Iterable, Optional, Sequence, Tuple

import numpy as np

from . import _engine, _tables
from ._checks import check_item_ids, quoted
from ._finetune import (FinetuneResult, evaluate_history, event_positions, finetune_params,
                        fit_parts)
from .model import make_personal, params_of
from .recipe import FinetuneRecipe
from .repeat import feature_dot, history_features

__all__ = ["finetune", "recommend", "user_embedding"]


def _session_starts(model, hist) -> np.ndarray:
    return hist.session_starts(model.session_gap_seconds)


def _reset(model) -> bool:
    return not model.carry_state


def _dense_candidates(model, candidates) -> Optional[np.ndarray]:
    if candidates is None:
        return None
    idx, unknown = model.item_index(list(candidates))
    idx = np.unique(np.asarray(idx)[~np.asarray(unknown)]).astype(np.int32)
    return idx


def _history_items(model, history) -> np.ndarray:
    """The history's dense item indices (int64), checked against ``model``:
    a history read without a model, or with one of another catalogue, is a
    clear error rather than a TypeError or IndexError deep inside."""
    items = getattr(history, "items", None)
    if items is None:
        raise ValueError("the history was read without a model (it holds item ids, not "
                         "catalogue positions): read it with read_history(path, model=model)")
    items = np.asarray(items, np.int64).reshape(-1)
    if items.size and (items.min() < 0 or items.max() >= model.n_items):
        raise ValueError(f"the history's item positions reach {int(items.max())} but the "
                         f"model's catalogue has {model.n_items:,} items: it was read with "
                         f"another model; read it with read_history(path, model=model)")
    return items


def _unknown_note(model, history) -> str:
    """What the history lost to items outside the catalogue (a sliced
    model's typical problem) and to clicks dated in the future, for error
    messages; '' when nothing."""
    n_future = int(getattr(history, "n_future", 0) or 0)
    future = (f"; {n_future:,} click(s) dated in the future were skipped (is the device clock "
              f"right?)" if n_future else "")
    n_unknown = int(getattr(history, "n_unknown", 0) or 0)
    if not n_unknown:
        return future
    n_read = int(getattr(history, "n_rows", 0) or 0)
    ex = ", ".join(quoted(str(x)) for x in (getattr(history, "unknown_examples", None) or [])[:3])
    sliced = (model.config.get("sliced_from") or {}).get("n_items")
    what = (f"this sliced model keeps {model.n_items:,} of {sliced:,} items" if sliced
            else f"the model's catalogue has {model.n_items:,} items")
    return (f"; {n_unknown:,} of the history's {n_read:,} clicks are on items outside the "
            f"catalogue ({what}{'; e.g. ' + ex if ex else ''}) and were skipped -- a slice "
            f"for fine-tuning devices keeps the items they click (deeprec-train export "
            f"--inputs){future}")


def _clicks_already_learned(personal: dict, ts: np.ndarray) -> int:
    """How many of the history's clicks (timestamps ``ts``) a personal
    model's record says were learned from: those dated before its
    ``last_timestamp``, and of those dated exactly then, the first
    ``last_timestamp_clicks`` (a file without the key: all of them)."""
    last = personal.get("last_timestamp")
    if last is None:
        return 0
    last = float(last)
    ties = int((ts == last).sum())
    k = personal.get("last_timestamp_clicks")
    return int((ts < last).sum()) + (ties if k is None else min(int(k), ties))


def _learned_through(personal: dict, ts: np.ndarray, n_old: int, n_learned: int) -> dict:
    """The record's ``last_timestamp`` / ``last_timestamp_clicks`` after a
    fine-tune that learned from the first ``n_learned`` clicks of the
    time-sorted ``ts``, of which the first ``n_old`` were learned before
    (unchanged when it learned nothing new)."""
    if n_learned <= n_old:
        keep = {"last_timestamp": personal.get("last_timestamp")}
        if personal.get("last_timestamp_clicks") is not None:
            keep["last_timestamp_clicks"] = int(personal["last_timestamp_clicks"])
        return keep
    last = float(ts[n_learned - 1])
    return {"last_timestamp": last,
            "last_timestamp_clicks": int((ts[:n_learned] == last).sum())}


def finetune(model, history, *, candidates: Optional[Iterable] = None,
             recipe: Optional[FinetuneRecipe] = None, parts: Optional[Sequence[str]] = None,
             l2: Optional[float] = None, max_events: Optional[int] = None, seed: int = 0,
             epochs: int = 5, window: int = 20,
             batch_size: int = 16, n_negatives: int = 256, alpha: float = 0.75,
             lr: float = 0.05, optimizer: str = "adagrad", holdout: Optional[float] = None,
             early_stopping: bool = True, l2_to_global: float = 0.0, train_gru: bool = True,
             progress: Optional[Callable[[str], None]] = None) -> FinetuneResult:
    """Fine-tune a personal model on the user's click history.

    What is personal is the model file's **recipe** (:attr:`Model.recipe`,
    chosen by the trainer by simulating devices; see
    :mod:`deeprec_edge.recipe`): by default a user offset of the head,
    personal biases of the user's own items and personal repeat weights,
    fitted exactly (L-BFGS) under a prior centred on the global model; the
    part ``gru`` also trains the last GRU layer and the head by truncated
    BPTT first (DeepRec's original fine-tuning).  The newest events are
    held out to check, per user, that the personal model helps; when it does
    not, or when training diverges, the global model is kept and the summary
    says why (``summary["kept_global"]``).

    Parameters
    ----------
    model : Model
        The global model, or a personal model to fine-tune further
        (continual): then only the clicks no earlier fine-tuning learned from
        are learned from (older ones are still read as context; the record's
        ``last_timestamp`` and ``last_timestamp_clicks`` say where learning
        stopped, so a new click dated like the last learned one is new; after
        a fine-tune that kept the model, or the ``gru`` part's held-out newest
        clicks, they are new again), the prior is
        centred on the personal model, and the result still records the
        fingerprint of the original global model.
    history : History
        From :func:`deeprec_edge.read_history` (unknown items already
        skipped and counted).
    candidates : catalogue item ids, optional
        The user's candidate set: the ``gru`` part draws half of its
        negatives from it, and the held-out Recall@20 ranks within it.
    recipe : FinetuneRecipe, optional
        Default: the model's.  ``parts``, ``l2`` and ``max_events`` override
        its fields; ``holdout`` its held-out share.
    seed : int
        Seed of every random choice (deterministic for a seed).
    epochs, window, batch_size, n_negatives, alpha, lr, optimizer, early_stopping, l2_to_global, train_gru
        Settings of the ``gru`` part (see ``deeprec-edge finetune --help``);
        ``train_gru=False`` trains the head only there.
    progress : callable(str), optional
        Receives progress lines.

    Returns
    -------
    FinetuneResult
        ``.model`` (personal model, not yet saved) and ``.summary``.
    """
    from ._checks import check_finetune_args  # ranges: deeprec_edge/_checks.py
    check_finetune_args(locals())
    rc = model.recipe if recipe is None else recipe
    changes = {}
    if parts is not None:
        changes["parts"] = tuple(check_item_ids(parts, "parts"))
    if l2 is not None:
        changes["l2"] = l2
    if holdout is not None:
        changes["holdout"] = holdout
    if max_events is not None:
        changes["max_events"] = max_events
    if changes:
        rc = rc.with_(**changes)
    say = progress or (lambda s: None)
    personal = getattr(model, "personal", None) or {}
    # time order, stably (read_history's already): what "learned up to the n-th click"
    # and "the newest clicks" mean below; a History built by hand may be in any order
    history = history.time_sorted()
    ts = np.asarray(history.timestamps, np.float64)
    items = _history_items(model, history).astype(np.int32)
    sess = _session_starts(model, history)
    n_old = _clicks_already_learned(personal, ts)
    n_new = items.size - n_old
    if items.size < 2 or n_new < 1:
        if n_old:
            raise ValueError(f"no new clicks to fine-tune on: {n_old} clicks are not newer than "
                             f"the personal model's last fine-tuning "
                             f"(timestamp {personal['last_timestamp']})")
        raise ValueError(f"fine-tuning needs at least 2 clicks of known items, got "
                         f"{items.size}{_unknown_note(model, history)}")
    # the first n_old clicks were learned from; they stay as context (of the clicks dated
    # last_timestamp, the learned ones come first: the sort is stable)
    first_target = int(n_old)
    base = params_of(model)
    spec = model.repeat
    if candidates is not None:
        check_item_ids(candidates, "candidates")
    cand = _dense_candidates(model, candidates)
    summary: dict = {"recipe": rc.to_dict(), "clicks_read": int(history.n_rows),
                     "clicks_skipped_unknown": int(history.n_unknown),
                     "clicks_older_than_model": n_old, "clicks_used": int(n_new)}
    params = base
    gru_epochs = 0
    # the next-click events learned from: the newest max_events of those after first_target
    events = event_positions(items, sess, _reset(model), first_target)
    pos = events[-rc.max_events:]
    if "gru" in rc.parts:
        # the whole history, the older clicks as context (the states the model will
        # score with), the events in pos as what is learned (as for the other parts)
        gru_first = int(pos[0]) + 1 if events.size > pos.size else first_target
        if items.size - first_target >= 2:
            say(f"training the last GRU layer{'' if train_gru else ' (head only)'} and the head")
            try:
                params, gsum = finetune_params(
                    base, items, sess, first_target=gru_first,
                    reset_at_sessions=_reset(model),
                    popularity=model.popularity, candidates=cand, epochs=epochs, seed=seed,
                    window=window, batch_size=batch_size, n_negatives=n_negatives,
                    alpha=alpha, lr=lr, optimizer=optimizer, holdout=rc.holdout,
                    early_stopping=early_stopping, l2_to_global=l2_to_global,
                    train_gru=train_gru, repeat=spec, progress=progress)
            except ValueError as e:   # e.g. no next-click pair left: say what the slice lost
                raise ValueError(f"{e}{_unknown_note(model, history)}") from None
            summary["gru"] = gsum
            gru_epochs = int(gsum["best_epoch"])
            for k in ("epochs_run", "best_epoch", "loss_first_epoch", "loss_last_epoch",
                      "windows"):
                summary[k] = gsum[k]
    # after a gru part that trained, the other parts learn the same clicks: not its
    # held-out newest ones, which stay new for the next fine-tune (each part learns
    # every click once)
    parts_end = int(summary["gru"]["heldout_first_target"]) if gru_epochs > 0 else None
    parts_res = fit_parts(params, spec, items, sess, rc, reset_at_sessions=_reset(model),
                          first_target=first_target, end_target=parts_end,
                          popularity=model.popularity, seed=seed,
                          repeat_component=model.has_repeat, progress=progress)
    summary["personal_parts"] = parts_res.summary
    kept = parts_res.summary.get("kept_global")
    if gru_epochs == 0 and "gru" in summary and kept is not None:
        # the gru part ran and kept the global weights too: say why, not only the other parts'
        why = summary["gru"].get("kept_global") or (
            "the gru part's held-out check kept epoch 0 (training did not improve the "
            "newest clicks)")
        kept = why if not set(rc.parts) - {"gru"} else f"{why}; {kept}"
    summary["kept_global"] = kept if gru_epochs == 0 else None
    # a fine-tune that kept the model learned nothing from these clicks: they stay
    # "new" for the next one (with more clicks the check may let the parts through)
    learned = summary["kept_global"] is None
    # the clicks learned from: the leading n_learned of the time-sorted history.  The gru
    # part never trains on its held-out tail (early stopping reads it), nor then do the
    # other parts: that tail stays new, so the next fine-tune learns from it
    n_learned = (items.size if parts_end is None else parts_end) if learned else n_old
    summary["clicks_used"] = n_learned - n_old
    summary["clicks_left_new"] = int(n_new) - summary["clicks_used"]   # the next one learns them
    # the held-out events (the newest): Recall@20 / MRR@20 of the model fine-tuning started
    # from and of the personal model fitted without them
    if gru_epochs > 0:
        # the gru part's held-out clicks: no part learned from them (parts_end), so the
        # personal model itself is measured
        held, chk = pos[pos + 1 >= parts_end], parts_res
    else:
        # the parts' own check: the newest events, and the parts fitted without them
        n_hold = int(parts_res.summary.get("heldout_events") or 0)
        held = pos[pos.size - n_hold:] if n_hold else pos[:0]
        chk = parts_res.check or parts_res
    # "before" is the model fine-tuning started from (not the gru part's result)
    before = evaluate_history(base, items, sess, held, _reset(model), cand, repeat=spec)
    after = evaluate_history(chk.params, items, sess, held, _reset(model), cand,
                             repeat=chk.repeat)
    summary.update(heldout_events=int(held.size), recall20_before=before["recall"],
                   recall20_after=after["recall"], mrr20_before=before["mrr"],
                   mrr20_after=after["mrr"], epochs=gru_epochs)
    if not held.size and summary.get("gru", {}).get("heldout_events"):
        # only the gru part ran a held-out check: report its numbers
        g = summary["gru"]
        summary.update({k: g[k] for k in ("heldout_events", "recall20_before", "recall20_after",
                                          "mrr20_before", "mrr20_after")})
    bias_index = bias = None
    if parts_res.bias_index is not None:
        old_idx = model.personal_bias_index
        bias_index = parts_res.bias_index if old_idx is None else np.union1d(old_idx,
                                                                             parts_res.bias_index)
        bias = parts_res.params.b_out[bias_index]
    p = parts_res.params
    personal_model = make_personal(
        model, p, clicks_used=summary["clicks_used"],
        **_learned_through(personal, ts, n_old, n_learned),
        seed=int(seed),
        epochs=gru_epochs, bias_index=bias_index, bias=bias,
        repeat_w=parts_res.repeat.weights if model.has_repeat else None,
        parts=list(rc.parts), kept_global=summary["kept_global"])
    return FinetuneResult(personal_model, summary)


def user_embedding(model, history=None) -> np.ndarray:
    """The user embedding u after the latest click of ``history`` (float32
    [d]); with no history, the embedding of a fresh session."""
    p = params_of(model)
    items = None if history is None else _history_items(model, history).astype(np.int32)
    if items is None or items.size == 0:
        h = np.zeros((1, p.hidden_sizes[-1]), np.float32)
        from . import kernels as K
        return K.head_forward(h, p.W_p, p.b_p, p.activation)[0]
    sess = _session_starts(model, history)
    U = _engine.user_vectors(p, items, sess, np.array([items.size - 1]), _reset(model))
    return U[0]


def recommend(model, history=None, k: int = 20, candidates: Optional[Iterable] = None,
              exclude_clicked: Optional[bool] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Top-``k`` items for the user after the latest click of ``history``.

    Ranks ``candidates`` (catalogue ids; unknown ids ignored) or the whole
    catalogue with the fused scoring + top-k kernel: ``O_i . u + b_i``, or
    for a model with a repeat component ``scale * (O_i . u + b_i) + w .
    phi_i`` (:mod:`deeprec_edge.repeat`; the user's own items then always
    join the candidates).  ``exclude_clicked`` drops every item of the
    history; default: True for a model without a repeat component, False
    for one with it (the model scores returns itself).  Returns ``(item ids,
    scores)``, best first; ties go to the lower item index.
    """
    from . import kernels as K
    from ._checks import RANK_K
    k = RANK_K.check(k, "k")
    if candidates is not None:
        check_item_ids(candidates, "candidates")
    p = params_of(model)
    spec = model.repeat
    u = np.ascontiguousarray(user_embedding(model, history), np.float32)
    has_hist = history is not None and _history_items(model, history).size > 0
    if exclude_clicked is None:
        exclude_clicked = not model.has_repeat
    excl = None
    if exclude_clicked and has_hist:
        excl = np.zeros(p.n_items, np.uint8)
        excl[np.asarray(history.items, np.int64)] = 1
    cand = _dense_candidates(model, candidates)
    bias = p.b_out
    if model.has_repeat:
        bias = (np.float32(spec.scale) * p.b_out).astype(np.float32)
        u = np.ascontiguousarray(np.float32(spec.scale) * u)
        if has_hist:
            items = np.asarray(history.items, np.int64)
            _, c, phi = history_features(items, _session_starts(model, history),
                                         [items.size - 1], spec.memory)
            bias[c] += feature_dot(phi, spec.weights).astype(np.float32)
            if cand is not None:
                cand = np.union1d(cand, c).astype(np.int32)
    idx, scores = _tables.score_topk(p.out_table, u, k, bias=bias, idx=cand, exclude=excl)
    return np.asarray(model.item_ids)[idx], scores

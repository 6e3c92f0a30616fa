"""The runtime's Python API: fine-tune, embed, recommend.

>>> from deeprec_edge import load_model, read_history, finetune, recommend
>>> model = load_model("weights.npz")                       # doctest: +SKIP
>>> hist = read_history("history.csv", model=model)          # doctest: +SKIP
>>> res = finetune(model, hist)                              # doctest: +SKIP
>>> ids, scores = recommend(res.model, hist, k=20)           # doctest: +SKIP
"""
from __future__ import annotations

from typing import Callable, Iterable, Optional, Tuple

import numpy as np

from . import _engine
from ._finetune import FinetuneResult, finetune_params
from .model import make_personal, params_of

__all__ = ["finetune", "recommend", "user_embedding"]


def _session_starts(model, hist) -> np.ndarray:
    return hist.session_starts(model.session_gap_seconds)


def _reset(model) -> bool:
    return not model.carry_state


def _dense_candidates(model, candidates) -> Optional[np.ndarray]:
    if candidates is None:
        return None
    idx, unknown = model.item_index(np.asarray(list(candidates)))
    idx = np.unique(np.asarray(idx)[~np.asarray(unknown)]).astype(np.int32)
    return idx


def finetune(model, history, *, candidates: Optional[Iterable] = None, epochs: int = 5,
             seed: int = 0, window: int = 20, batch_size: int = 16, n_negatives: int = 256,
             alpha: float = 0.75, lr: float = 0.05, optimizer: str = "adagrad",
             holdout: float = 0.1, early_stopping: bool = True, l2_to_global: float = 0.0,
             train_gru: bool = True,
             progress: Optional[Callable[[str], None]] = None) -> FinetuneResult:
    """Fine-tune a personal model on the user's click history.

    Parameters
    ----------
    model : Model
        The global model, or a personal model to fine-tune further
        (continual): then only clicks newer than its last fine-tuning
        timestamp are used, and the new personal model still records the
        fingerprint of the original global model.
    history : History
        From :func:`deeprec_edge.read_history` (unknown items already
        skipped and counted).
    candidates : catalogue item ids, optional
        The user's candidate set: half of the negatives are drawn from it,
        and held-out Recall@20 ranks within it.
    epochs, seed, window, batch_size, n_negatives, alpha, lr, optimizer
        Training settings (see ``deeprec-edge finetune --help``).
    holdout : float
        Share of the newest clicks held out for evaluation and early
        stopping (0 disables both).
    early_stopping : bool
        Keep the best held-out epoch (the global model if none is better).
    l2_to_global : float
        Strength of an L2 pull of the trained weights towards the global
        model's: ``l2_to_global / 2 * ||w - w_global||^2`` is added to the
        loss (0, the default: off).  Lets a personal model move only as far
        as the user's clicks justify.
    train_gru : bool
        Fine-tune the last GRU layer too (default); False trains the head
        ``W_p, b_p`` only.
    progress : callable(str), optional
        Receives one line per epoch.

    Returns
    -------
    FinetuneResult
        ``.model`` (personal model, not yet saved) and ``.summary``.
    """
    from ._checks import check_finetune_args  # ranges: deeprec_edge/_checks.py
    check_finetune_args(locals())
    personal = getattr(model, "personal", None) or {}
    ts = np.asarray(history.timestamps, np.float64)
    items = np.asarray(history.items, np.int32)
    sess = _session_starts(model, history)
    n_old = 0
    if personal.get("last_timestamp") is not None:
        keep = ts > float(personal["last_timestamp"])
        n_old = int((~keep).sum())
        if n_old:
            items, ts = items[keep], ts[keep]
            sess = sess[keep]
            if sess.size:
                sess[0] = True
    if items.size < 2:
        if n_old:
            raise ValueError(f"no new clicks to fine-tune on: {n_old} clicks are not newer than "
                             f"the personal model's last fine-tuning "
                             f"(timestamp {personal['last_timestamp']})")
        raise ValueError(f"fine-tuning needs at least 2 clicks of known items, got {items.size}")
    base = params_of(model)
    cand = _dense_candidates(model, candidates)
    params, summary = finetune_params(
        base, items, sess, reset_at_sessions=_reset(model), popularity=model.popularity,
        candidates=cand, epochs=epochs, seed=seed, window=window, batch_size=batch_size,
        n_negatives=n_negatives, alpha=alpha, lr=lr, optimizer=optimizer, holdout=holdout,
        early_stopping=early_stopping, l2_to_global=l2_to_global, train_gru=train_gru,
        progress=progress)
    summary.update({
        "clicks_read": int(history.n_rows),
        "clicks_skipped_unknown": int(history.n_unknown),
        "clicks_older_than_model": n_old,
    })
    personal_model = make_personal(model, params, clicks_used=int(items.size),
                                   last_timestamp=float(ts.max()), seed=int(seed),
                                   epochs=int(summary["best_epoch"]))
    return FinetuneResult(personal_model, summary)


def user_embedding(model, history=None) -> np.ndarray:
    """The user embedding u after the latest click of ``history`` (float32
    [d]); with no history, the embedding of a fresh session."""
    p = params_of(model)
    if history is None or len(history.items) == 0:
        h = np.zeros((1, p.hidden_sizes[-1]), np.float32)
        from . import kernels as K
        return K.head_forward(h, p.W_p, p.b_p, p.activation)[0]
    items = np.asarray(history.items, np.int32)
    sess = _session_starts(model, history)
    U = _engine.user_vectors(p, items, sess, np.array([items.size - 1]), _reset(model))
    return U[0]


def recommend(model, history=None, k: int = 20, candidates: Optional[Iterable] = None,
              exclude_clicked: bool = True) -> Tuple[np.ndarray, np.ndarray]:
    """Top-``k`` items for the user after the latest click of ``history``.

    Ranks ``candidates`` (catalogue ids; unknown ids ignored) or the whole
    catalogue by ``O_i . u + b_i`` with the fused scoring + top-k kernel;
    items clicked in the history are excluded unless ``exclude_clicked`` is
    False.  Returns ``(item ids, scores)``, best first; ties go to the
    lower item index.
    """
    from . import kernels as K
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    p = params_of(model)
    u = np.ascontiguousarray(user_embedding(model, history), np.float32)
    excl = None
    if exclude_clicked and history is not None and len(history.items):
        excl = np.zeros(p.n_items, np.uint8)
        excl[np.asarray(history.items, np.int64)] = 1
    cand = _dense_candidates(model, candidates)
    idx, scores = K.score_topk(p.out_table, u, k, bias=p.b_out, idx=cand, exclude=excl)
    return np.asarray(model.item_ids)[idx], scores

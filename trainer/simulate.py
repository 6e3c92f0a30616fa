"""Choosing the device's fine-tuning recipe by simulating devices.

The trainer cannot see what devices will see after the cutoff, but it can
replay the same situation inside its own training period: a model fitted on
the clicks before an inner cutoff plays the global model; users who clicked
after it play devices, each fine-tuning with a candidate recipe on its own
history up to a second inner cutoff (the runtime's own
:func:`deeprec_edge.finetune`, nothing re-implemented) and being scored on its
clicks after that.  The recipe whose personal models beat the global one by
the most -- the mean per-user paired difference of (Recall@20 + MRR@20) / 2 --
is written into the model file as the device's default; when no recipe
beats the global model on average, the recipe is "keep the global model"
(``parts = ()``).

The candidate recipes (:data:`DEFAULT_GRID`) span the personal parts
(:mod:`deeprec_edge._personal`) and the strength of the prior.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from deeprec_edge._engine import user_vectors
from deeprec_edge._scoring import rank_events
from deeprec_edge.api import finetune as runtime_finetune
from deeprec_edge.history import History
from deeprec_edge.model import Model, params_of
from deeprec_edge.ranking import mrr_at_k, recall_at_k
from deeprec_edge.recipe import FinetuneRecipe
from deeprec_edge.repeat import history_features

__all__ = ["DEFAULT_GRID", "SimUser", "simulate_recipes", "choose_recipe"]

#: Candidate recipes, the first one being "keep the global model".
DEFAULT_GRID: Tuple[FinetuneRecipe, ...] = (
    FinetuneRecipe(parts=()),
    FinetuneRecipe(parts=("bias",), l2=10.0),
    FinetuneRecipe(parts=("offset", "bias", "repeat"), l2=3.0),
    FinetuneRecipe(parts=("offset", "bias", "repeat"), l2=10.0),
    FinetuneRecipe(parts=("offset", "bias", "repeat"), l2=10.0, holdout=0.0),
    FinetuneRecipe(parts=("offset", "bias", "repeat"), l2=10.0, half_life=100.0),
    # the head matrix too (d x H numbers under the same prior)
    FinetuneRecipe(parts=("offset", "bias", "repeat", "head"), l2=10.0),
    FinetuneRecipe(parts=("offset", "bias", "repeat", "head"), l2=10.0, holdout=0.0),
    FinetuneRecipe(parts=("offset", "bias", "repeat", "head"), l2=30.0, holdout=0.0),
    FinetuneRecipe(parts=("gru",)),      # DeepRec's own: the last GRU layer and the head
)


@dataclass
class SimUser:
    """One simulated device: its clicks (dense items, unix times, session
    codes), how many of them are its history (``n_hist``), and the input
    positions of its test events (after the history)."""

    user: int
    items: np.ndarray
    times: np.ndarray
    sessions: np.ndarray
    n_hist: int
    test_positions: np.ndarray

    def starts(self) -> np.ndarray:
        s = np.ones(self.sessions.shape[0], bool)
        s[1:] = self.sessions[1:] != self.sessions[:-1]
        return s

    def history(self, model: Model) -> History:
        h = slice(0, self.n_hist)
        items = self.items[h].astype(np.int32)
        return History(items=items, item_ids=np.asarray(model.item_ids)[items],
                       timestamps=self.times[h].astype(np.float64),
                       session_ids=self.sessions[h].astype(str), n_rows=int(self.n_hist),
                       source=f"user {self.user}")


def _user_scores(model: Model, su: SimUser, params=None, repeat=None,
                 k: int = 20) -> Tuple[float, float]:
    p = params_of(model) if params is None else params
    spec = model.repeat if repeat is None else repeat
    starts = su.starts()
    pos = su.test_positions
    U = user_vectors(p, su.items, starts, pos, not model.carry_state)
    rep = history_features(su.items, starts, pos, spec.memory) if spec.active else None
    opt, _ = rank_events(p, spec, U, su.items[pos + 1].astype(np.int64), rep)
    return float(recall_at_k(opt, k).mean()), float(mrr_at_k(opt, k).mean())


def _personal_scores(model: Model, su: SimUser, rc: FinetuneRecipe, seed: int,
                     fallback: np.ndarray) -> np.ndarray:
    try:
        res = runtime_finetune(model, su.history(model), recipe=rc, seed=seed)
    except ValueError:                        # nothing to learn: the global model
        return fallback
    return np.array(_user_scores(res.model, su))


def simulate_recipes(model: Model, users: Sequence[SimUser],
                     grid: Sequence[FinetuneRecipe] = DEFAULT_GRID, *, seed: int = 0,
                     workers: int = 0,
                     log: Optional[Callable[[str], None]] = None) -> List[Dict[str, object]]:
    """For each recipe: per-user Recall@20 and MRR@20 of the fine-tuned
    personal models on the users' test events, and the paired difference to
    ``model`` (the recipe with ``parts=()``).  Users are fine-tuned on
    ``workers`` threads (0: one per CPU, at most 8; the kernels release the
    GIL); the result does not depend on it.  Returns one record per
    recipe."""
    say = log or (lambda s: None)
    n_workers = workers or min(8, os.cpu_count() or 1)
    base = np.array([_user_scores(model, su) for su in users]).reshape(-1, 2)
    out = []
    for rc in grid:
        if not rc.parts:
            vals = base
        elif n_workers > 1 and len(users) > 1:
            with ThreadPoolExecutor(n_workers) as ex:
                vals = np.array(list(ex.map(
                    lambda j: _personal_scores(model, users[j], rc, seed, base[j]),
                    range(len(users))))).reshape(-1, 2)
        else:
            vals = np.array([_personal_scores(model, su, rc, seed, base[j])
                             for j, su in enumerate(users)]).reshape(-1, 2)
        d = (vals - base).mean(1)
        sd = float(d.std(ddof=1)) if d.size > 1 else float("nan")
        rec = {"recipe": rc.to_dict(), "recall@20": float(vals[:, 0].mean()),
               "mrr@20": float(vals[:, 1].mean()), "gain": float(d.mean()),
               "gain_se": sd / np.sqrt(d.size) if d.size > 1 else float("nan"),
               "users_better": int((d > 0).sum()), "users_worse": int((d < 0).sum())}
        say(f"recipe {rc.label()}: Recall@20 "
            f"{rec['recall@20']:.4f}, MRR@20 {rec['mrr@20']:.4f}, gain {rec['gain']:+.4f} "
            f"({rec['users_better']} users better, {rec['users_worse']} worse)")
        out.append(rec)
    return out


def choose_recipe(records: Sequence[Dict[str, object]]) -> FinetuneRecipe:
    """The recipe with the largest mean gain; "keep the global model" when
    no recipe's gain is positive."""
    best = max(records, key=lambda r: r["gain"])
    if not best["gain"] > 0:
        return FinetuneRecipe(parts=())
    return FinetuneRecipe.from_dict(best["recipe"])

"""Evaluation: the DeepRec protocol (``deeprec-train evaluate``) and GRU4Rec's
session protocol (``deeprec-train evaluate-sessions``).

DeepRec protocol (DESIGN.md section 6), :func:`evaluate_deeprec`
------------------------------------------------------------------
Visible stages, each a function:

1. :func:`split_protocol` -- two global time cutoffs.  Before the first
   (``quantile``, default the 0.8 time quantile): what the cloud trains on;
   the catalogue is its items after support filtering.  Between the two
   (``test_quantile``, default halfway to the end): clicks that only the
   devices see.  After the second: the test part.  Every user with at least
   one test event and at least ``min_finetune_clicks`` clicks between the
   cutoffs is evaluated; the counts each filter removed are reported (and
   named in the error when nobody is left).  No model ever trains on a click
   later than a test click.  ``split="share"`` keeps the older per-user split
   (each user's first ``finetune_share`` of post-cutoff clicks fine-tunes;
   the centralized model trains on those shares too, so it can see clicks
   later than other users' test clicks).
2. :func:`fit_models` -- ``global``: the trainer's pipeline
   (:func:`deeprec_edge.trainer.pipeline.train_model`: GRU, repeat component,
   device recipe) on the clicks before the first cutoff; ``centralized``: the
   same pipeline on every click a server could have seen before the test part
   (all users).
3. :func:`build_candidates` -- per user, the cloud's set (item-item CF on the
   training log and neighbours in the global model's output space, from the
   user's clicks before the first cutoff: the cloud sees nothing later), and
   per test event the device's own part (the items in the user's repeat
   memory, newest first, and the output-table neighbours of the newest ones);
   ``n_candidates`` items in all.  Recall is reported per source.
4. :func:`finetune_users` -- ``personal``: per user, the global model
   fine-tuned on the device's history (every click before the test part)
   **through the runtime's own** :func:`deeprec_edge.finetune` with the
   recipe the trainer wrote into the model (``FinetuneSettings`` override it).
5. :func:`score_users` -- every test event ranks the whole catalogue and the
   event's candidate set; the input is the user's whole preceding history.
   Global, centralized and personal models read the same history with the
   same architecture (GRU + repeat component): only which parameters were
   trained on which clicks differs.  Non-GRU baselines
   (:mod:`deeprec_edge.trainer.baselines`) are fitted on the cloud's
   training log.
6. :func:`build_report` -- Recall/MRR/NDCG/MAP at 5, 10, 20 with both tie
   rules, each user's events averaged first, then users, with 95% intervals
   (bootstrap under 100 users by default); paired per-user differences
   personal - global, personal - centralized and personal - the best non-GRU
   method; the same by kind of test event (:func:`event_breakdown`: returns
   vs items new to the user, targets whose popularity rose between the
   cutoffs vs the rest); warnings for small samples.

``validation=True`` never reads the test part: the clicks after the second
cutoff are removed first and the same protocol runs on what is left.  Tune
there, then run once on the test part.

Session protocol (GRU4Rec), :func:`evaluate_sessions`
-----------------------------------------------------
A prepared train file and test file of sessions: test clicks on items not in
train are removed, then test sessions shorter than 2; every click whose next
click is in the same session is an event; full ranking over all training
items; the session baselines and the GRU model; event-level means (GRU4Rec's
convention) with 95% intervals over events.

The report (a JSON-compatible dict, keys in ``docs/trainer.md``) renders as
markdown with :func:`markdown_report` and as a plot with :func:`plot_report`
(when matplotlib is installed).
"""
from __future__ import annotations

import copy
import datetime as _dt
from concurrent.futures import ThreadPoolExecutor
import json
import math
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from deeprec_edge import __version__ as _VERSION
from deeprec_edge._engine import user_vectors
from deeprec_edge._scoring import block_rows, score_block
from deeprec_edge.api import finetune as runtime_finetune
from deeprec_edge.cli import json_safe
from deeprec_edge.history import History
from deeprec_edge.model import Model, params_of
from deeprec_edge.ranking import target_ranks
from deeprec_edge.recipe import RECIPE_PARTS, FinetuneRecipe
from deeprec_edge.repeat import history_features

from .baselines import BASELINES, make_baseline
from deeprec_edge.candidates import device_candidates, model_ranking, returns_favoured

from .candidates import item_item_cf, user_candidates
from .data import Interactions, filter_sessions, filter_support, remap_items, time_cutoff
from .fit import FitConfig
from .metrics import RankAccumulator, mean_ci, metric_values, per_user_mean
from .pipeline import train_model

__all__ = [
    "REPORT_FORMAT",
    "REPORT_VERSION",
    "GRU_METHODS",
    "BASELINE_METHODS",
    "DEEPREC_METHODS",
    "SESSION_METHODS",
    "FinetuneSettings",
    "DeepRecSettings",
    "EvalUser",
    "ProtocolSplit",
    "split_protocol",
    "fit_models",
    "build_candidates",
    "finetune_users",
    "score_users",
    "build_report",
    "event_breakdown",
    "rising_items",
    "first_clicks",
    "repeat_targets",
    "train_model",
    "evaluate_deeprec",
    "evaluate_sessions",
    "markdown_report",
    "plot_report",
    "write_json",
]

#: ``report`` tag of every evaluation report.
REPORT_FORMAT = "deeprec-edge/evaluation"
#: Version of the report's key layout (2: time-consistent protocol, baselines
#: by name, candidate recall per source, population counts, warnings).
REPORT_VERSION = 2
#: The GRU models of the DeepRec protocol.
GRU_METHODS = ("global", "centralized", "personal")
#: The non-GRU baselines (:mod:`deeprec_edge.trainer.baselines`).
BASELINE_METHODS = tuple(BASELINES)
DEEPREC_METHODS = BASELINE_METHODS + GRU_METHODS
SESSION_METHODS = tuple(m for m in BASELINE_METHODS if m != "recency") + ("recency", "gru")
#: The cutoff every report is read at (the headline, the best non-GRU method, the breakdown).
HEADLINE_K = 20


def report_ks(ks: Sequence[int]) -> Tuple[int, ...]:
    """The cutoffs a report computes: ``ks`` and always :data:`HEADLINE_K`."""
    return tuple(sorted({int(k) for k in ks} | {HEADLINE_K}))


def _table_metrics(ks: Sequence[int]) -> Tuple[str, ...]:
    """The markdown table's columns: Recall and MRR at every k, NDCG and MAP at 20."""
    return (tuple(f"recall@{k}" for k in ks) + tuple(f"mrr@{k}" for k in ks)
            + (f"ndcg@{HEADLINE_K}", f"map@{HEADLINE_K}"))
#: Under this many users the intervals are bootstrap percentile intervals by default.
BOOTSTRAP_BELOW_USERS = 100
#: Under these sample sizes the report warns that intervals are wide.
WARN_USERS, WARN_EVENTS = 30, 200

#: A target is "rising" when its click rate in the devices-only clicks is at
#: least this many times its rate before the cutoff (the report's breakdown).
RISING_RATE = 2.0
#: The breakdown's kinds of test event, each with its complement (report order).
EVENT_KINDS = {"repeat": "new", "rising": "not_rising"}

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# settings
# --------------------------------------------------------------------------

@dataclass
class FinetuneSettings:
    """Overrides of the personal models' fine-tuning; ``None`` = the recipe
    the trainer wrote into the global model (``deeprec-edge finetune`` with
    no flags)."""

    parts: Optional[Tuple[str, ...]] = None   #: personal parts (recipe parts)
    l2: Optional[float] = None                #: prior strength
    holdout: Optional[float] = None           #: per-user held-out check share (0: off)
    max_events: Optional[int] = None          #: newest events used
    # settings of the "gru" part (the last GRU layer by truncated BPTT)
    epochs: Optional[int] = None
    lr: Optional[float] = None
    window: Optional[int] = None
    batch_size: Optional[int] = None
    n_negatives: Optional[int] = None
    alpha: Optional[float] = None
    optimizer: Optional[str] = None
    l2_to_global: Optional[float] = None
    train_gru: Optional[bool] = None
    use_candidates: bool = False     #: the "gru" part draws half its negatives from the set

    def recipe(self, base: FinetuneRecipe) -> FinetuneRecipe:
        """``base`` with the overrides applied."""
        ch = {k: getattr(self, k) for k in ("parts", "l2", "holdout", "max_events")
              if getattr(self, k) is not None}
        if "parts" in ch:
            ch["parts"] = tuple(ch["parts"])
        return base.with_(**ch) if ch else base

    def gru_kwargs(self) -> Dict[str, Any]:
        return {k: getattr(self, k) for k in ("epochs", "lr", "window", "batch_size",
                                              "n_negatives", "alpha", "optimizer",
                                              "l2_to_global", "train_gru")
                if getattr(self, k) is not None}


@dataclass
class DeepRecSettings:
    """Settings of :func:`evaluate_deeprec` (see the module docstring)."""

    quantile: float = 0.8
    cutoff: Any = None                   #: unix seconds or a date; overrides ``quantile``
    test_quantile: Optional[float] = None  #: second cutoff; None: halfway from ``quantile`` to 1
    test_cutoff: Any = None              #: a date; overrides ``test_quantile``
    split: str = "time"                  #: "time" (second global cutoff) or "share" (per user)
    finetune_share: float = 0.5          #: split="share": each user's fine-tuning share
    min_finetune_clicks: int = 1         #: device clicks between the cutoffs, at least
    min_test_events: int = 1             #: test events per user, at least
    min_item_support: int = 2
    min_session_length: int = 1
    methods: Tuple[str, ...] = DEEPREC_METHODS
    ks: Tuple[int, ...] = (5, 10, 20)
    n_candidates: int = 500
    cf_neighbors: int = 100
    candidate_neighbors: int = 40        #: device part: CF neighbours per recent item
    candidate_recent: int = 10           #: device part: newest distinct items whose neighbours join
    candidate_memory: int = 300          #: device part: the user's items (when returns are likely)
    candidate_ranked: int = 500          #: device part: the model's best items when the session began
    exclude_seen: bool = False
    session_starts: bool = False
    max_users: Optional[int] = None
    validation: bool = False
    ci: str = "auto"                     #: "auto", "normal" or "bootstrap"
    seed: int = 0
    baseline_options: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)


def _check_settings(st: DeepRecSettings) -> None:
    unknown = [m for m in st.methods if m not in DEEPREC_METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose among {list(DEEPREC_METHODS)}")
    if not 0.0 < st.quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {st.quantile}")
    if st.test_quantile is not None and st.cutoff is None \
            and not st.quantile < st.test_quantile < 1.0:
        raise ValueError(f"test_quantile must be in (quantile={st.quantile}, 1), got "
                         f"{st.test_quantile}")
    if st.test_quantile is not None and not 0.0 < st.test_quantile < 1.0:
        # with a cutoff date the split checks that its quantile falls after the date
        raise ValueError(f"test_quantile must be in (0, 1), got {st.test_quantile}")
    if st.split not in ("time", "share"):
        raise ValueError(f"split must be 'time' or 'share', got {st.split!r}")
    if not 0.0 < st.finetune_share < 1.0:
        raise ValueError(f"finetune_share must be in (0, 1), got {st.finetune_share}")
    if st.ci not in ("auto", "normal", "bootstrap"):
        raise ValueError(f"ci must be 'auto', 'normal' or 'bootstrap', got {st.ci!r}")
    for name in ("min_finetune_clicks", "min_test_events", "min_item_support",
                 "min_session_length", "n_candidates", "cf_neighbors",
                 "candidate_neighbors", "candidate_recent", "candidate_memory",
                 "candidate_ranked"):
        v = getattr(st, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name in (
                "min_finetune_clicks", "candidate_neighbors", "candidate_recent",
                "candidate_memory", "candidate_ranked") else 1):
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if st.max_users is not None and (not isinstance(st.max_users, int) or st.max_users < 1):
        raise ValueError(f"max_users must be a positive integer, got {st.max_users!r}")
    if st.finetune.parts is not None:
        bad = [p for p in st.finetune.parts if p not in RECIPE_PARTS]
        if bad:
            raise ValueError(f"unknown fine-tuning part(s) {bad}; choose among "
                             f"{list(RECIPE_PARTS)}")


# --------------------------------------------------------------------------
# 1. the split
# --------------------------------------------------------------------------

@dataclass
class EvalUser:
    """One evaluated user: her clicks on catalogue items in time order
    (``items`` dense codes, ``times``, ``sessions`` codes), the first
    ``n_pre`` before the first cutoff, the first ``n_hist`` before the test
    part (the device's history when it fine-tunes), and the input positions
    of her test events (the target of position ``p`` is ``items[p + 1]``)."""

    user: int
    items: np.ndarray
    times: np.ndarray
    sessions: np.ndarray
    n_pre: int
    n_hist: int
    test_pos: np.ndarray

    def starts(self) -> np.ndarray:
        s = np.ones(self.sessions.shape[0], bool)
        s[1:] = self.sessions[1:] != self.sessions[:-1]
        return s

    @property
    def targets(self) -> np.ndarray:
        return self.items[self.test_pos + 1].astype(np.int64)


@dataclass
class ProtocolSplit:
    """What :func:`split_protocol` decides: cutoffs, the cloud's training
    log (``train``, catalogue codes), the centralized model's log
    (``central``), the evaluated users and the population counts."""

    cutoff: float
    test_cutoff: Optional[float]
    train: Interactions
    central: Interactions
    catalogue: np.ndarray
    users: List[EvalUser]
    population: Dict[str, int]
    data: Dict[str, Any]


def _iso(t: Optional[float]) -> Optional[str]:
    if t is None:
        return None
    return _dt.datetime.fromtimestamp(float(t), _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _when(v: Any) -> float:
    from .data import _to_seconds
    return _to_seconds(v)


def split_protocol(inter: Interactions, st: DeepRecSettings,
                   model: Optional[Model] = None) -> ProtocolSplit:
    """Stage 1 (see the module docstring)."""
    if inter.user_kind != "user":
        raise ValueError("the DeepRec protocol needs a log with users (this one is a session log: "
                         "each session is its own unit); use evaluate-sessions for session data")
    if len(inter) == 0:
        raise ValueError("the log is empty")
    t = inter.times
    cutoff = _when(st.cutoff) if st.cutoff is not None else time_cutoff(t, st.quantile)
    test_cutoff = None
    if st.split == "time":
        if st.test_cutoff is not None:
            test_cutoff = _when(st.test_cutoff)
        else:
            q2 = st.test_quantile if st.test_quantile is not None else (1.0 + st.quantile) / 2
            if st.cutoff is not None and st.test_quantile is None:
                # a date and no second quantile: the second cutoff halves what follows it
                after = t[t >= cutoff]
                test_cutoff = float(np.quantile(after, 0.5)) if after.size else cutoff
            else:
                test_cutoff = time_cutoff(t, q2)
        if not test_cutoff > cutoff:
            raise ValueError(f"the test cutoff {_iso(test_cutoff)} is not after the cutoff "
                             f"{_iso(cutoff)}; choose other quantiles or dates")
    if st.validation:
        # tuning mode: the test part is never read; the protocol runs on what precedes it
        end = test_cutoff if test_cutoff is not None else cutoff
        inter = inter.subset(inter.times < end)
        t = inter.times
        st2 = copy.copy(st)
        st2.validation, st2.cutoff, st2.test_cutoff = False, None, None
        if len(inter) == 0:
            raise ValueError("validation: no clicks before the test part")
        out = split_protocol(inter, st2, model)
        out.data["validation"] = True
        return out
    pre_mask = t < cutoff
    pre = inter.subset(pre_mask)
    if len(pre) == 0 or pre_mask.all():
        raise ValueError(f"the cutoff {_iso(cutoff)} leaves {int(pre_mask.sum())} clicks before "
                         f"and {int((~pre_mask).sum())} after it; choose another quantile or date")
    if model is None:
        train = filter_support(pre, min_item_support=st.min_item_support,
                               min_session_length=st.min_session_length, compact=True)
        catalogue = train.item_ids
    else:
        catalogue = model.item_ids
        train = filter_support(remap_items(pre, catalogue), min_item_support=st.min_item_support,
                               min_session_length=st.min_session_length, compact=False)
    if len(train) == 0:
        raise ValueError(f"no pre-cutoff clicks left after support filtering (--min-item-support "
                         f"{st.min_item_support}, --min-session-length {st.min_session_length} "
                         f"remove all {len(pre):,} of them)")
    k = remap_items(inter, catalogue)
    n_unknown = len(inter) - len(k)
    # the protocol reads each user's clicks in time order (her first n_pre are before the
    # cutoff, ...)
    k = k.time_ordered()
    end = test_cutoff if test_cutoff is not None else np.inf
    uo = k.user_offsets()
    # what a server that saw every device's clicks would train on: every click before the
    # test part (the share split: the cloud's clicks and each user's device share)
    in_central = k.times < end if st.split == "time" else k.times < cutoff
    pop = {"users_in_log": int(len(inter.user_offsets()) - 1),
           "users_with_catalogue_clicks": int(len(uo) - 1)}
    no_test = few_ft = 0
    users: List[EvalUser] = []
    it, tm, ss, us = k.items, k.times, k.sessions, k.users
    for a, b in zip(uo[:-1].tolist(), uo[1:].tolist()):
        times = tm[a:b]
        sess = ss[a:b]
        n_pre = int(np.searchsorted(times, cutoff, side="left"))
        if st.split == "time":
            n_hist = int(np.searchsorted(times, end, side="left"))
        else:
            n_post = (b - a) - n_pre
            n_ft = min(max(int(round(n_post * st.finetune_share)), 0), max(n_post - 1, 0))
            n_hist = n_pre + n_ft
            in_central[a + n_pre:a + n_hist] = True
        starts = np.ones(b - a, bool)
        starts[1:] = sess[1:] != sess[:-1]
        tgt = np.arange(max(n_hist, 1), b - a)
        if not st.session_starts:
            tgt = tgt[~starts[tgt]]
        if tgt.size < st.min_test_events:
            no_test += 1
            continue
        if n_hist - n_pre < st.min_finetune_clicks or n_hist < 1:
            few_ft += 1
            continue
        users.append(EvalUser(int(us[a]), it[a:b].astype(np.int32), times, sess, n_pre, n_hist,
                              (tgt - 1).astype(np.int64)))
    central = filter_sessions(k.subset(in_central), st.min_session_length)
    pop["without_test_events"] = no_test
    pop["too_few_device_clicks"] = few_ft
    sampled_out = 0
    if st.max_users is not None and len(users) > st.max_users:
        rng = np.random.default_rng(st.seed)
        keep = np.sort(rng.choice(len(users), size=st.max_users, replace=False))
        sampled_out = len(users) - st.max_users
        users = [users[i] for i in keep]
    pop["not_sampled"] = sampled_out
    pop["evaluated"] = len(users)
    if not users:
        raise ValueError(
            f"no user qualifies for evaluation: of {pop['users_in_log']:,} users, "
            f"{pop['users_in_log'] - pop['users_with_catalogue_clicks']:,} have no click on the "
            f"{len(catalogue):,} catalogue items (--min-item-support {st.min_item_support}, "
            f"--min-session-length {st.min_session_length}), {no_test:,} have fewer than "
            f"{st.min_test_events} test event(s) after {_iso(end if st.split == 'time' else cutoff)}"
            f"{'' if st.session_starts else ' within a session (--session-starts counts session starts)'}, "
            f"and {few_ft:,} have fewer than {st.min_finetune_clicks} device click(s) between the "
            f"cutoffs (--min-finetune-clicks); try lower values or other cutoffs")
    data = {"source": inter.info.get("source"), "format": inter.info.get("format"),
            "events": len(inter), "cutoff": cutoff, "cutoff_iso": _iso(cutoff),
            "test_cutoff": test_cutoff, "test_cutoff_iso": _iso(test_cutoff),
            "quantile": None if st.cutoff is not None else st.quantile,
            "split": st.split, "pre_cutoff_events": len(pre), "train_events": len(train),
            "catalogue_items": len(catalogue), "unknown_item_events": int(n_unknown),
            "centralized_events": len(central),
            "validation": False}
    return ProtocolSplit(cutoff, test_cutoff, train, central, catalogue, users, pop, data)


# --------------------------------------------------------------------------
# 2. models
# --------------------------------------------------------------------------

def fit_models(sp: ProtocolSplit, methods: Sequence[str], fit_config: Optional[FitConfig], *,
               model: Optional[Model] = None, session_gap: Optional[float] = 3600.0,
               log: Optional[Log] = None, progress: bool = True
               ) -> Tuple[Dict[str, Model], Dict[str, Any], Dict[str, float]]:
    """Stage 2: ``{"global": ..., "centralized": ...}`` (the global model is
    always fitted: candidates and personal models start from it), their fit
    records and timings."""
    say = log or _stderr
    fcfg = copy.deepcopy(fit_config) if fit_config is not None else FitConfig()
    models: Dict[str, Model] = {}
    fitted: Dict[str, Any] = {}
    timing: Dict[str, float] = {}
    if model is None:
        say(f"global model: {len(sp.train):,} clicks before the cutoff "
            f"({len(sp.catalogue):,} items)")
        t0 = time.perf_counter()
        models["global"], hist = train_model(
            sp.train, fcfg, session_gap=session_gap, log=say, progress=progress,
            trained_on={"protocol": "deeprec", "part": "pre-cutoff", "cutoff": sp.cutoff,
                        **sp.train.summary()})
        timing["fit_global_seconds"] = time.perf_counter() - t0
        fitted["global"] = _fit_summary(hist, len(sp.train))
    else:
        models["global"] = model
    if "centralized" in methods:
        say(f"centralized model: {len(sp.central):,} clicks before the test part (every user)")
        t0 = time.perf_counter()
        ccfg = copy.deepcopy(fcfg)
        ccfg.simulate_users = 0          # its recipe is never used: only the repeat component
        models["centralized"], hist = train_model(
            sp.central, ccfg, session_gap=session_gap, log=say, progress=progress,
            trained_on={"protocol": "deeprec", "part": "centralized",
                        "end": sp.test_cutoff or sp.cutoff, **sp.central.summary()})
        timing["fit_centralized_seconds"] = time.perf_counter() - t0
        fitted["centralized"] = _fit_summary(hist, len(sp.central))
    return models, fitted, timing


def _fit_summary(hist: Dict[str, Any], events: int) -> Dict[str, Any]:
    return {"events": events, "seconds": hist.get("seconds"),
            "events_per_s": hist.get("events_per_s"), "epochs": hist.get("epochs"),
            "calibration": hist.get("calibration"),
            "recipe_selection": hist.get("recipe_selection"),
            "inner_seconds": hist.get("inner_seconds")}


# --------------------------------------------------------------------------
# 3. candidates
# --------------------------------------------------------------------------

@dataclass
class Candidates:
    """The cloud's part: its set per user (item codes, best first), its
    item-item CF neighbour lists (``neighbors``, what it ships to devices
    with the model) and the items by popularity; the device's part is the
    runtime's own :func:`deeprec_edge.candidates.device_candidates` applied
    to the user's clicks so far, with the global model's own ranking for
    her state when the session began
    (:func:`deeprec_edge.candidates.model_ranking`, ``ranked`` items; 0:
    none)."""

    model: Model
    cloud: Dict[int, np.ndarray]
    neighbors: np.ndarray
    popular: np.ndarray
    n: int
    n_recent: int
    n_neighbors: int
    memory: int
    ranked: int = 0
    # the last session's ranking, (user, first click) -> items: events are
    # scored user by user, in time order
    _last: Tuple[Optional[Tuple[int, int]], Optional[np.ndarray]] = field(
        default=(None, None), repr=False)

    def session_ranking(self, eu: EvalUser, p: int) -> Optional[np.ndarray]:
        """The model's ``ranked`` best items for the user's state after the
        last click before the session of position ``p`` (None: no such
        click, or ``ranked`` 0).  One full scoring per session (the last
        one is kept)."""
        if self.ranked <= 0:
            return None
        starts = eu.starts()
        s = int(np.flatnonzero(starts[: p + 1])[-1])       # the session's first click
        if s == 0:
            return None
        key = (eu.user, s)
        if self._last[0] != key:
            self._last = (key, model_ranking(self.model, eu.items[:s], starts[:s], self.ranked))
        return self._last[1]

    def for_event(self, eu: EvalUser, p: int, device: bool = True,
                  cloud: bool = True) -> np.ndarray:
        """The candidate list at input position ``p`` (item codes, in the
        order they were added, at most ``n``)."""
        return device_candidates(self.model, eu.items[: p + 1], n=self.n,
                                 memory=self.memory if device else 0,
                                 n_recent=self.n_recent if device else 0,
                                 n_neighbors=self.n_neighbors, neighbors=self.neighbors,
                                 ranked=self.session_ranking(eu, p) if device else None,
                                 cloud=self.cloud.get(eu.user) if cloud else None,
                                 fill=self.popular if cloud else None)


def build_candidates(sp: ProtocolSplit, gmodel: Model, st: DeepRecSettings) -> Candidates:
    """Stage 3 (see the module docstring)."""
    users = [eu.user for eu in sp.users]
    pre = sp.train                 # the cloud sees each user's clicks before the cutoff only
    cf = item_item_cf(pre, max(st.cf_neighbors, st.candidate_neighbors), by="session")
    from deeprec_edge.quant import dequantize          # the cloud may inflate a compressed table
    cands = user_candidates(pre, st.n_candidates, cf=cf, embeddings=dequantize(gmodel.out_table),
                            users=np.asarray(users, np.int64),
                            popularity=pre.item_support().astype(np.float64),
                            exclude_seen=False)
    cloud = {int(u): cands.for_user(int(u)) for u in cands.users}
    sup = pre.item_support()
    popular = np.lexsort((np.arange(sup.size), -sup)).astype(np.int64)
    return Candidates(gmodel, cloud, cf.indices.astype(np.int64), popular, st.n_candidates,
                      st.candidate_recent, st.candidate_neighbors, st.candidate_memory,
                      st.candidate_ranked)


# --------------------------------------------------------------------------
# 4. personal models
# --------------------------------------------------------------------------

def finetune_users(sp: ProtocolSplit, gmodel: Model, st: DeepRecSettings,
                   cands: Optional[Candidates] = None, *, log: Optional[Log] = None,
                   progress: bool = True) -> Tuple[Dict[int, Model], Dict[str, Any]]:
    """Stage 4: each user's personal model, fine-tuned on the device's
    history (clicks before the test part) through the runtime's
    :func:`deeprec_edge.finetune` with the model's recipe (plus
    :class:`FinetuneSettings` overrides).  A user whose history gives
    nothing to learn keeps the global model.  Returns (user -> model,
    aggregate record)."""
    recipe = st.finetune.recipe(gmodel.recipe)
    kw = st.finetune.gru_kwargs()
    out: Dict[int, Model] = {}
    sums: List[Dict[str, Any]] = []
    failed = 0
    t0 = time.perf_counter()

    def one(eu: EvalUser):
        h = slice(0, eu.n_hist)
        items = eu.items[h]
        hist = History(items=items, item_ids=np.asarray(gmodel.item_ids)[items],
                       timestamps=eu.times[h].astype(np.float64),
                       session_ids=eu.sessions[h].astype(str), n_rows=int(eu.n_hist),
                       source=f"user {eu.user}")
        cand = None
        if st.finetune.use_candidates and cands is not None:
            cand = np.asarray(gmodel.item_ids)[cands.cloud.get(eu.user, np.zeros(0, np.int32))]
        try:
            return runtime_finetune(gmodel, hist, recipe=recipe, candidates=cand, seed=st.seed,
                                    **kw)
        except ValueError:
            return None                  # e.g. fewer than 2 clicks: the global model

    # users are independent and the kernels release the GIL: fine-tune on a thread pool
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as ex:
        results = ex.map(one, sp.users)
        for eu, res in _progress_iter(zip(sp.users, results), len(sp.users), "fine-tuning",
                                      progress):
            if res is None:
                failed += 1
                continue
            out[eu.user] = res.model
            sums.append(res.summary)
    agg: Dict[str, Any] = {"recipe": recipe.to_dict(), "gru_settings": kw,
                           "users": len(sums), "failed": failed,
                           "seconds": time.perf_counter() - t0}
    if sums:
        kept = [s.get("kept_global") for s in sums]
        agg["kept_global_users"] = int(sum(k is not None for k in kept))
        reasons: Dict[str, int] = {}
        for k in kept:
            if k is not None:      # one key per kind of reason: the counts in it vary
                key = re.sub(r"\d+(\.\d+)?", "N", k.split(" (")[0])
                reasons[key] = reasons.get(key, 0) + 1
        agg["kept_global_reasons"] = reasons
        ev = np.array([s.get("personal_parts", {}).get("events", 0) for s in sums], float)
        agg["mean_events"] = float(ev.mean())
        agg["mean_seconds"] = float(np.mean([s.get("personal_parts", {}).get("seconds", 0.0)
                                             or 0.0 for s in sums]))
    return out, agg


# --------------------------------------------------------------------------
# 5. scoring
# --------------------------------------------------------------------------

def _progress_iter(it, total: int, desc: str, progress: bool):
    if not progress or not sys.stderr.isatty():
        return it
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is in the [trainer] extra
        return it
    return tqdm(it, total=total, desc=desc, unit="user", leave=False, file=sys.stderr)


@dataclass
class Scores:
    """Rank accumulators of stage 5: ``acc[method][setting]`` (setting
    "full" or "candidates"), candidate hits per source, event counts."""

    acc: Dict[str, Dict[str, RankAccumulator]]
    hits: Dict[str, List[np.ndarray]]
    set_sizes: List[int]
    n_events: int
    kinds: Dict[str, List[np.ndarray]] = field(default_factory=dict)


def rising_items(pre_support: np.ndarray, between_support: np.ndarray,
                 ratio: float = RISING_RATE) -> Optional[np.ndarray]:
    """Bool [N]: items whose click rate among the devices-only clicks
    (``between_support``, per item: the clicks between the cutoffs, which the
    centralized model saw and the cloud did not) is at least ``ratio`` times
    their rate among the cloud's clicks (``pre_support``), among items with
    such clicks at all; a rate is a share of its part's clicks.  ``None``
    when either part has no clicks."""
    pre = np.asarray(pre_support, np.float64)
    between = np.asarray(between_support, np.float64)
    if pre.shape != between.shape:
        raise ValueError(f"supports of {pre.shape} and {between.shape} items")
    n_pre, n_between = pre.sum(), between.sum()
    if n_between <= 0 or n_pre <= 0:
        return None
    return (between > 0) & ((between / n_between) >= ratio * (pre / n_pre))


def first_clicks(items: np.ndarray, n_items: int) -> np.ndarray:
    """Per item code below ``n_items``: the position of its first click in
    ``items`` (int64 max for items never clicked)."""
    items = np.asarray(items, np.int64)
    first = np.full(n_items, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(first, items, np.arange(items.size))
    return first


def repeat_targets(items: np.ndarray, pos: np.ndarray,
                   first: Optional[np.ndarray] = None) -> np.ndarray:
    """Bool per input position ``p``: is the target ``items[p + 1]`` among
    ``items[:p + 1]`` (a return to an item the user clicked before).
    ``first``: :func:`first_clicks` of ``items``, when already at hand."""
    items = np.asarray(items, np.int64)
    pos = np.asarray(pos, np.int64)
    if first is None:
        first = first_clicks(items, int(items.max()) + 1 if items.size else 0)
    return first[items[pos + 1]] <= pos


def score_users(sp: ProtocolSplit, models: Dict[str, Model], personal: Dict[int, Model],
                st: DeepRecSettings, cands: Candidates, *, log: Optional[Log] = None,
                progress: bool = True) -> Scores:
    """Stage 5 (see the module docstring)."""
    methods = tuple(st.methods)
    N = len(sp.catalogue)
    pop = sp.train.item_support().astype(np.float64)
    baselines = {}
    for m in methods:
        if m in BASELINES:
            baselines[m] = make_baseline(m, **st.baseline_options.get(m, {})).fit(sp.train, pop)
    acc = {m: {"full": RankAccumulator(), "candidates": RankAccumulator()} for m in methods}
    hits: Dict[str, List[np.ndarray]] = {"cloud": [], "device": [], "union": []}
    sizes: List[int] = []
    n_events = 0
    gmodel = models["global"]
    between = sp.central.subset(sp.central.times >= sp.cutoff)
    rising = rising_items(sp.train.item_support(), between.item_support())
    kinds: Dict[str, List[np.ndarray]] = {"repeat": []}
    if rising is not None:
        kinds["rising"] = []
    step = block_rows(N)
    for eu in _progress_iter(sp.users, len(sp.users), "scoring", progress):
        pos = eu.test_pos
        B = pos.size
        targets = eu.targets
        starts = eu.starts()
        n_events += B
        uvec = np.full(B, eu.user, np.int64)
        # candidate sets per event, as a (B, N) mask; recall per source
        cmask = np.zeros((B, N), bool)
        hc = np.zeros(B, bool)
        hd = np.zeros(B, bool)
        for r, p in enumerate(pos.tolist()):
            c = cands.for_event(eu, p)
            cmask[r, c] = True
            sizes.append(int(c.size))
            # each part as the device uses it (the user's items left out of both when
            # the model does not favour returns): the union is never below a part
            # that fits in the set
            dev = cands.for_event(eu, p, cloud=False)
            hd[r] = targets[r] in set(dev.tolist())
            hc[r] = targets[r] in set(cands.for_event(eu, p, device=False).tolist())
        hits["cloud"].append(hc)
        hits["device"].append(hd)
        hits["union"].append(cmask[np.arange(B), targets])
        first = first_clicks(eu.items, N)
        kinds["repeat"].append(repeat_targets(eu.items, pos, first))
        if rising is not None:
            kinds["rising"].append(rising[targets])
        views = {}
        for m in methods:
            if m in baselines:
                continue
            mdl = personal.get(eu.user, gmodel) if m == "personal" else models[m]
            p = params_of(mdl)
            spec = mdl.repeat
            U = user_vectors(p, eu.items, starts, pos, not mdl.carry_state)
            rep = history_features(eu.items, starts, pos, spec.memory) if spec.active else None
            views[m] = (p, spec, U, rep)
        for a in range(0, B, step):
            b = min(a + step, B)
            fm = None
            cm = cmask[a:b]
            if st.exclude_seen:
                fm = first[None, :] >= (pos[a:b, None] + 1)
                cm = cm & fm
            for m in methods:
                if m in baselines:
                    S = baselines[m].score(eu.items, starts, pos[a:b])
                else:
                    p, spec, U, rep = views[m]
                    S = score_block(p, spec, U, a, b, rep)
                o, c = target_ranks(S, targets[a:b], mask=fm)
                acc[m]["full"].add_ranks(o, c, users=uvec[a:b])
                o, c = target_ranks(S, targets[a:b], mask=cm)
                acc[m]["candidates"].add_ranks(o, c, users=uvec[a:b])
    return Scores(acc, hits, sizes, n_events, kinds)


# --------------------------------------------------------------------------
# 6. the report
# --------------------------------------------------------------------------

def _ci_method(st_ci: str, n_users: int) -> str:
    if st_ci != "auto":
        return st_ci
    return "bootstrap" if n_users < BOOTSTRAP_BELOW_USERS else "normal"


def _summaries(acc: RankAccumulator, ks, ci: str, seed: int) -> Dict[str, Any]:
    if len(acc) == 0:
        return {}
    return acc.summary(ks=tuple(ks), ci=ci, seed=seed)


def _paired(a: RankAccumulator, b: RankAccumulator, ks, ci: str, seed: int) -> Dict[str, Any]:
    """Per-user paired differences a - b (optimistic ties)."""
    if len(a) == 0 or len(b) == 0:
        return {}
    out: Dict[str, Any] = {}
    ua, ub = a.users, b.users
    for metric in ("recall", "mrr", "ndcg"):
        for k in ks:
            users_a, va = per_user_mean(metric_values(a.optimistic, metric, k), ua)
            users_b, vb = per_user_mean(metric_values(b.optimistic, metric, k), ub)
            common, ia, ib = np.intersect1d(users_a, users_b, return_indices=True)
            d = va[ia] - vb[ib]
            mean, lo, hi = mean_ci(d, method=ci, seed=seed)
            out[f"{metric}@{k}"] = {"mean": mean, "ci_low": lo, "ci_high": hi,
                                    "n_users": int(len(d)),
                                    "users_better": int((d > 0).sum()),
                                    "users_worse": int((d < 0).sum())}
    return out


def _report_head(protocol: str) -> Dict[str, Any]:
    return {"report": REPORT_FORMAT, "version": REPORT_VERSION, "protocol": protocol,
            "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
            "deeprec_edge_version": _VERSION}


def _best_baseline(results: Dict[str, Any], setting: str = "full") -> Optional[str]:
    """The non-GRU method with the highest Recall@20 (MRR@20 breaks ties)."""
    best, key = None, None
    for m, r in results.items():
        if m not in BASELINES:
            continue
        opt = ((r.get(setting) or {}).get("optimistic") or {})
        rec = (opt.get("recall@20") or {}).get("mean")
        mrr = (opt.get("mrr@20") or {}).get("mean")
        if rec is None:
            continue
        k = (rec, mrr or 0.0)
        if key is None or k > key:
            best, key = m, k
    return best


def candidate_recall(hits: Dict[str, List[np.ndarray]], ci: str = "normal",
                     seed: int = 0) -> Dict[str, Any]:
    """Candidate recall per source from ``hits[source]`` (one bool array per
    user: is each test event's target in that source's set).  Like every
    metric of the report, each user's events are averaged first, then users
    (``recall_<source>``, and ``recall`` = the union's, with ``recall_ci``);
    ``*_events`` are shares of all test events."""
    out: Dict[str, Any] = {}
    for src, hl in hits.items():
        h = np.concatenate(hl) if hl else np.zeros(0, bool)
        per_user = [float(x.mean()) for x in hl if x.size]
        out[f"recall_{src}"] = float(np.mean(per_user)) if per_user else None
        out[f"recall_{src}_events"] = float(h.mean()) if h.size else None
        if src == "union" and per_user:
            _, lo, hi = mean_ci(per_user, method=ci, seed=seed)
            out["recall_ci"] = [lo, hi]
    out["recall"] = out.get("recall_union")
    out["recall_events"] = out.get("recall_union_events")
    return out


def _subset(acc: RankAccumulator, keep: np.ndarray) -> RankAccumulator:
    """The events of ``acc`` that ``keep`` selects (same order)."""
    out = RankAccumulator()
    if keep.any():
        u = acc.users
        out.add_ranks(acc.optimistic[keep], acc.conservative[keep],
                      users=None if u is None else u[keep])
    return out


def event_breakdown(scores: Scores, methods: Sequence[str], ci: str, seed: int,
                    best: Optional[str] = None) -> Dict[str, Any]:
    """Full-ranking Recall@20 / MRR@20 of the GRU methods (and ``best``)
    by kind of test event: ``repeat`` (the target is an item the user
    clicked before) and ``new``; ``rising`` (the target's click rate among
    the devices-only clicks is at least :data:`RISING_RATE` times its rate
    before the cutoff: a change only the centralized model saw) and
    ``not_rising``.  Per kind: events, their share, users with such events,
    per-user means and the paired differences personal - global and
    personal - centralized over those users; ``ci`` is the report's
    setting (``"auto"``: bootstrap under :data:`BOOTSTRAP_BELOW_USERS`
    users of the kind), ``ci_used`` what was used."""
    out: Dict[str, Any] = {}
    shown = [m for m in GRU_METHODS + ((best,) if best else ()) if m in methods]
    n_all = scores.n_events
    for kind, parts in scores.kinds.items():
        flag = np.concatenate(parts) if parts else np.zeros(0, bool)
        for name, keep in ((kind, flag), (EVENT_KINDS[kind], ~flag)):
            sub = {m: _subset(scores.acc[m]["full"], keep) for m in shown}
            n_users = (int(np.unique(sub[shown[0]].users).size)
                       if shown and len(sub[shown[0]]) else 0)
            ci_k = _ci_method(ci, n_users)
            rec: Dict[str, Any] = {"events": int(keep.sum()),
                                   "share": float(keep.sum() / n_all) if n_all else None,
                                   "users": n_users, "ci_used": ci_k, "methods": {}}
            for m in shown:
                summ = _summaries(sub[m], (20,), ci_k, seed)
                rec["methods"][m] = {key: summ["optimistic"][key]
                                     for key in ("recall@20", "mrr@20")} if summ else {}
            if "personal" in shown:
                for b in ("global", "centralized"):
                    if b in shown:
                        pr = _paired(sub["personal"], sub[b], (20,), ci_k, seed)
                        rec[f"personal-{b}"] = {key: pr[key] for key in ("recall@20", "mrr@20")
                                                } if pr else {}
            out[name] = rec
    return out


def build_report(sp: ProtocolSplit, st: DeepRecSettings, scores: Scores,
                 fitted: Dict[str, Any], ft_record: Dict[str, Any], models: Dict[str, Model],
                 timing: Dict[str, float], fcfg: FitConfig) -> Dict[str, Any]:
    """Stage 6 (see the module docstring)."""
    ks = report_ks(st.ks)
    n_users = len(sp.users)
    ci = _ci_method(st.ci, n_users)
    methods = tuple(st.methods)
    results = {m: {s: _summaries(scores.acc[m][s], ks, ci, st.seed)
                   for s in ("full", "candidates")} for m in methods}
    best = _best_baseline(results)
    comparisons: Dict[str, Any] = {}
    if "personal" in methods:
        for other in ("global", "centralized") + ((best,) if best else ()):
            if other in methods:
                comparisons[f"personal-{other}"] = {
                    s: _paired(scores.acc["personal"][s], scores.acc[other][s], ks, ci, st.seed)
                    for s in ("full", "candidates")}
    cand_rec: Dict[str, Any] = {"n_candidates": st.n_candidates,
                                "cloud": "CF + output-embedding neighbours of the user's "
                                         "clicks before the cutoff, then popular items (as "
                                         "the device uses them: without her items when "
                                         "those are left out)",
                                "device": f"the user's items (newest first, at most "
                                          f"{st.candidate_memory}, when the model makes "
                                          f"returns likely: {returns_favoured(models['global'])}"
                                          f"; otherwise her items are left out of the set), "
                                          f"the cloud's {st.candidate_neighbors} CF "
                                          f"neighbours of each of her {st.candidate_recent} "
                                          f"newest items and the global model's "
                                          f"{st.candidate_ranked} best items for her state "
                                          f"when the session began",
                                "mean_set_size": float(np.mean(scores.set_sizes))
                                if scores.set_sizes else 0.0}
    cand_rec.update(candidate_recall(scores.hits, ci, st.seed))
    warnings: List[str] = []
    if n_users < WARN_USERS or scores.n_events < WARN_EVENTS:
        warnings.append(f"small sample: {n_users} users, {scores.n_events} test events "
                        f"(under {WARN_USERS} users or {WARN_EVENTS} events the intervals are "
                        f"wide and differences are rarely significant)")
    data = dict(sp.data, evaluated_users=n_users, test_events=int(scores.n_events),
                population=sp.population,
                users_without_pre_cutoff_history=int(sum(eu.n_pre == 0 for eu in sp.users)),
                device_history_clicks_median=float(np.median([eu.n_hist for eu in sp.users])),
                device_new_clicks_median=float(np.median([eu.n_hist - eu.n_pre
                                                          for eu in sp.users])))
    gm = models.get("global")
    report = _report_head("deeprec")
    settings = json.loads(json.dumps(asdict(st), default=str))
    settings["ks"] = list(ks)                     # what was computed (20 always)
    settings["ci_used"] = ci
    report.update({
        "data": data,
        "settings": settings,
        "fit_config": json.loads(json.dumps(asdict(fcfg), default=str)),
        "candidates": cand_rec,
        "methods": results,
        "best_non_gru": best,
        "comparisons": comparisons,
        "breakdown": event_breakdown(scores, methods, st.ci, st.seed, best),
        "finetune": ft_record,
        "global_model": None if gm is None else {
            "repeat": gm.describe().get("repeat"), "recipe": gm.recipe.to_dict(),
            "recipe_selection": gm.config.get("recipe_selection")},
        "models": fitted,
        "warnings": warnings,
        "timing": timing,
    })
    return report


def evaluate_deeprec(inter: Interactions, settings: Optional[DeepRecSettings] = None,
                     fit_config: Optional[FitConfig] = None, *, model: Optional[Model] = None,
                     session_gap: Optional[float] = 3600.0, log: Optional[Log] = None,
                     progress: bool = True) -> Dict[str, Any]:
    """Run the DeepRec protocol on a user-level log (see the module
    docstring); returns the report dict.

    ``inter`` should already be sessionized (readers do it with
    ``session_gap``).  ``model``: evaluate this global model instead of
    fitting one (its catalogue is used; ``centralized`` is still fitted with
    ``fit_config``).  ``session_gap`` is recorded in fitted models.
    """
    st = settings or DeepRecSettings()
    _check_settings(st)
    say = log or _stderr
    fcfg = copy.deepcopy(fit_config) if fit_config is not None else FitConfig()
    t_start = time.perf_counter()
    sp = split_protocol(inter, st, model)
    say(f"protocol: cutoff {sp.data['cutoff_iso']}, test part from "
        f"{sp.data['test_cutoff_iso'] or '(per-user share)'}; {len(sp.users):,} users evaluated "
        f"({', '.join(f'{k} {v:,}' for k, v in sp.population.items())})")
    models, fitted, timing = fit_models(sp, st.methods, fcfg, model=model,
                                        session_gap=session_gap, log=say, progress=progress)
    t0 = time.perf_counter()
    cands = build_candidates(sp, models["global"], st)
    timing["candidates_seconds"] = time.perf_counter() - t0
    personal: Dict[int, Model] = {}
    ft_record: Dict[str, Any] = {}
    if "personal" in st.methods:
        personal, ft_record = finetune_users(sp, models["global"], st, cands, log=say,
                                             progress=progress)
        timing["finetune_seconds"] = ft_record.get("seconds", 0.0)
    t0 = time.perf_counter()
    scores = score_users(sp, models, personal, st, cands, log=say, progress=progress)
    timing["scoring_seconds"] = time.perf_counter() - t0
    timing["total_seconds"] = time.perf_counter() - t_start
    report = build_report(sp, st, scores, fitted, ft_record, models, timing, fcfg)
    for w in report["warnings"]:
        say(f"warning: {w}")
    return report


# --------------------------------------------------------------------------
# the session protocol
# --------------------------------------------------------------------------

def evaluate_sessions(train: Interactions, test: Interactions,
                      fit_config: Optional[FitConfig] = None, *,
                      methods: Sequence[str] = SESSION_METHODS, model: Optional[Model] = None,
                      ks: Sequence[int] = (5, 10, 20),
                      baseline_options: Optional[Dict[str, Dict[str, Any]]] = None,
                      ci: str = "normal", seed: int = 0, session_gap: Optional[float] = 3600.0,
                      log: Optional[Log] = None, progress: bool = True) -> Dict[str, Any]:
    """GRU4Rec's session protocol on a prepared train/test pair (see the
    module docstring); returns the report dict.  ``model``: evaluate this
    model instead of fitting one (its catalogue replaces train's)."""
    say = log or _stderr
    unknown = [m for m in methods if m not in SESSION_METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose among {list(SESSION_METHODS)}")
    fcfg = copy.deepcopy(fit_config) if fit_config is not None else FitConfig()
    timing: Dict[str, float] = {}
    t_start = time.perf_counter()
    n_test_raw = len(test)
    tr = train.compact_items() if model is None else remap_items(train, model.item_ids)
    catalogue = tr.item_ids
    te = remap_items(test, catalogue)
    n_unknown = int(test.info.get("n_unknown_items", 0)) + n_test_raw - len(te)
    n_before = len(te)
    te = filter_sessions(te, 2)
    N = len(catalogue)
    fitted: Dict[str, Any] = {}
    gmodel = model
    if "gru" in methods and gmodel is None:
        say(f"fitting the model on {len(tr):,} training clicks ({N:,} items)")
        t0 = time.perf_counter()
        gmodel, hist = train_model(tr, fcfg, session_gap=session_gap, log=say, progress=progress,
                                   trained_on={"protocol": "sessions", **tr.summary()})
        timing["fit_seconds"] = time.perf_counter() - t0
        fitted["gru"] = _fit_summary(hist, len(tr))
    pop = tr.item_support().astype(np.float64)
    t0 = time.perf_counter()
    opts = baseline_options or {}
    baselines = {m: make_baseline(m, **opts.get(m, {})).fit(tr, pop)
                 for m in methods if m in BASELINES}
    timing["baseline_fit_seconds"] = time.perf_counter() - t0
    # every test session is one unit: the sequence of all sessions with starts
    items = te.items.astype(np.int32)
    s = te.sessions
    starts = np.ones(len(items), bool)
    starts[1:] = s[1:] != s[:-1]
    pos = np.flatnonzero(~starts[1:]) if len(items) > 1 else np.zeros(0, np.int64)
    targets = items[pos + 1].astype(np.int64)
    acc = {m: RankAccumulator() for m in methods}
    t0 = time.perf_counter()
    view = None
    if "gru" in methods:
        p = params_of(gmodel)
        spec = gmodel.repeat
        # each test session is its own anonymous user: the GRU state starts fresh at
        # every session even for a model that carries a user's state across sessions
        U = user_vectors(p, items, starts, pos, True)
        rep = None
        if spec.active:     # each session is its own user: its memory starts empty
            rep = _per_session_features(items, starts, pos, spec.memory)
        view = (p, spec, U, rep)
    off = np.flatnonzero(starts)
    sess_of_pos = np.searchsorted(off, pos, side="right") - 1
    step = block_rows(N)
    for a in range(0, len(pos), step):
        b = min(a + step, len(pos))
        for m in methods:
            if m == "gru":
                S = score_block(view[0], view[1], view[2], a, b, view[3])
            else:
                S = _baseline_block(baselines[m], items, starts, pos[a:b], sess_of_pos[a:b], off)
            o, c = target_ranks(S, targets[a:b])
            acc[m].add_ranks(o, c)
    timing["scoring_seconds"] = time.perf_counter() - t0
    timing["total_seconds"] = time.perf_counter() - t_start
    ks = report_ks(ks)
    report = _report_head("sessions")
    results = {m: {"full": _summaries(acc[m], ks, ci, seed)} for m in methods}
    report.update({
        "data": {"train_source": train.info.get("source"), "test_source": test.info.get("source"),
                 "train_events": len(tr), "train_sessions": tr.n_sessions,
                 "catalogue_items": N,
                 "test_events_read": n_test_raw + int(test.info.get("n_unknown_items", 0)),
                 "test_unknown_item_events": int(n_unknown),
                 "test_short_session_events": int(n_before - len(te)),
                 "test_events": len(te), "test_sessions": te.n_sessions,
                 "events_evaluated": int(len(pos))},
        "settings": {"methods": list(methods), "ks": list(ks),
                     "baseline_options": opts, "ci": ci, "seed": seed, "unit": "event"},
        "fit_config": json.loads(json.dumps(asdict(fcfg), default=str)) if model is None else None,
        "methods": results,
        "best_non_gru": _best_baseline(results),
        "gru_model": None if gmodel is None else {"repeat": gmodel.describe().get("repeat")},
        "models": fitted,
        "warnings": [],
        "timing": timing,
    })
    return report


def _per_session_features(items, starts, pos, memory):
    """Repeat cells of session-protocol events: every session starts with an
    empty memory (sessions are anonymous)."""
    off = np.r_[np.flatnonzero(starts), len(items)]
    rows, cols, phis = [], [], []
    sess = np.searchsorted(off, pos, side="right") - 1
    bounds = np.r_[0, np.flatnonzero(np.diff(sess)) + 1, len(pos)]
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        if a == b:
            continue
        k = int(sess[a])
        lo, hi = int(off[k]), int(off[k + 1])
        r, c, f = history_features(items[lo:hi], starts[lo:hi], pos[a:b] - lo, memory)
        rows.append(r + a)
        cols.append(c)
        phis.append(f)
    if not rows:
        return (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 5), np.float32))
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(phis)


def _baseline_block(bl, items, starts, pos, sess, off) -> np.ndarray:
    """A baseline's scores for session-protocol events: each session is
    scored on its own clicks only (sessions are anonymous)."""
    out = np.empty((pos.size, bl.n_items))
    bounds = np.r_[0, np.flatnonzero(np.diff(sess)) + 1, pos.size]
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        if a == b:
            continue
        k = int(sess[a])
        lo, hi = int(off[k]), int(off[k + 1]) if k + 1 < off.size else items.size
        out[a:b] = bl.score(items[lo:hi], starts[lo:hi], pos[a:b] - lo)
    return out


# --------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------

#: JSON-safe copy: NaN/inf -> None, numpy scalars and arrays -> Python (one definition)
_clean = json_safe


def write_json(report: Dict[str, Any], path: str) -> None:
    """Write the report as JSON (NaN as null), atomically."""
    from deeprec_edge._atomic import atomic_write
    text = json.dumps(_clean(report), indent=2, sort_keys=False, allow_nan=False)
    atomic_write(path, lambda f: f.write((text + "\n").encode("utf-8")))


def _fmt(v: Optional[float], nd: int = 4) -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{nd}f}"


def _cell(m: Optional[Dict[str, Any]], with_ci: bool) -> str:
    if not m:
        return "–"
    s = _fmt(m.get("mean"))
    lo, hi = m.get("ci_low"), m.get("ci_high")
    if with_ci and lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi):
        s += f" ± {(hi - lo) / 2:.4f}"
    return s


def _table(report: Dict[str, Any], setting: str) -> List[str]:
    cols = _table_metrics(report.get("settings", {}).get("ks") or (5, 10, 20))
    head = ["method"] + [m.replace("recall", "Recall").replace("mrr", "MRR")
                         .replace("ndcg", "NDCG").replace("map", "MAP") for m in cols]
    head += ["Recall@20 cons.", "MRR@20 cons."]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, res in report["methods"].items():
        r = res.get(setting) or {}
        opt, con = r.get("optimistic") or {}, r.get("conservative") or {}
        row = [name] + [_cell(opt.get(k), k.endswith("@20") and k[:3] in ("rec", "mrr"))
                        for k in cols]
        row += [_cell(con.get("recall@20"), False), _cell(con.get("mrr@20"), False)]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _breakdown_table(bd: Dict[str, Any], split: str = "time") -> List[str]:
    """The report's ``breakdown`` as a markdown table (Recall@20)."""
    if not bd:
        return []
    where = "between the cutoffs" if split == "time" else "in the devices' shares"
    labels = {"repeat": "repeat (an item she clicked before)", "new": "new to her",
              "rising": f"rising (rate {where} ≥ {RISING_RATE:g}× before)",
              "not_rising": f"not rising (< {RISING_RATE:g}×)"}
    ms = [m for m in next(iter(bd.values()))["methods"]]
    diffs = [k for k in ("personal-global", "personal-centralized")
             if any(k in r for r in bd.values())]
    head = (["test events", "share", "users"] + ms
            + [k.replace("-", " − ", 1) for k in diffs])
    out = ["", "Recall@20 by kind of test event (full ranking; per-user means over the users "
               "with such events; differences paired, 95% intervals):", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for kind, r in bd.items():
        row = [labels.get(kind, kind), _fmt(r.get("share"), 3), f"{r.get('users', 0):,}"]
        row += [_fmt(((r["methods"].get(m) or {}).get("recall@20") or {}).get("mean"))
                for m in ms]
        for k in diffs:
            v = (r.get(k) or {}).get("recall@20")
            row.append(f"{v['mean']:+.4f} [{_fmt(v['ci_low'])}, {_fmt(v['ci_high'])}]"
                       if v else "")
        out.append("| " + " | ".join(row) + " |")
    return out


def markdown_report(report: Dict[str, Any]) -> str:
    """The report's tables as markdown (means; ``±`` = half the 95% interval
    for Recall@20 and MRR@20; the last two columns use conservative ties)."""
    d = report["data"]
    out: List[str] = []
    for w in report.get("warnings") or []:
        out.append(f"**Warning:** {w}")
        out.append("")
    if report["protocol"] == "deeprec":
        s = report["settings"]
        what = "validation (the test part removed; the protocol on what precedes it)" \
            if d.get("validation") else "test"
        if d.get("split") == "share":
            when = f"each user's first {s['finetune_share']:.0%} of post-cutoff clicks on the device"
        else:
            when = f"clicks from {d['cutoff_iso']} to {d['test_cutoff_iso']} on the devices only"
        out.append(f"DeepRec protocol: cloud training before {d['cutoff_iso']}; {when}; "
                   f"{d['evaluated_users']:,} users, {d['test_events']:,} {what} events; "
                   f"{d['catalogue_items']:,} items; per-user means; 95% intervals "
                   f"({s.get('ci_used', s.get('ci'))}).")
        out.append("")
        out.append("Full-catalogue ranking:")
        out.append("")
        out += _table(report, "full")
        out.append("")
        c = report.get("candidates", {})
        out.append(f"Within candidate sets (at most {c.get('n_candidates')} items, mean "
                   f"{c.get('mean_set_size', 0):.0f}; candidate recall, per-user mean, "
                   f"{_fmt(c.get('recall'), 3)}: cloud part {_fmt(c.get('recall_cloud'), 3)}, "
                   f"device part {_fmt(c.get('recall_device'), 3)}; over all test events "
                   f"{_fmt(c.get('recall_events'), 3)}):")
        out.append("")
        out += _table(report, "candidates")
        if report.get("best_non_gru"):
            out.append("")
            out.append(f"Best non-GRU method (Recall@20, full ranking): {report['best_non_gru']}.")
        for name, comp in report.get("comparisons", {}).items():
            full = comp.get("full", {})
            parts = []
            for k in ("recall@20", "mrr@20"):
                v = full.get(k)
                if v:
                    parts.append(f"{k.replace('recall', 'Recall').replace('mrr', 'MRR')} "
                                 f"{v['mean']:+.4f} [{_fmt(v['ci_low'])}, {_fmt(v['ci_high'])}] "
                                 f"({v['users_better']} users better, {v['users_worse']} worse)")
            if parts:
                out.append("")
                out.append(f"Paired per-user difference {name.replace('-', ' − ', 1)} "
                           f"(full ranking): " + "; ".join(parts) + ".")
        out += _breakdown_table(report.get("breakdown") or {}, d.get("split", "time"))
    else:
        out.append(f"Session protocol: {d['train_events']:,} training clicks, "
                   f"{d['catalogue_items']:,} items ranked, {d['events_evaluated']:,} test "
                   f"events in {d['test_sessions']:,} sessions; event means.")
        out.append("")
        out += _table(report, "full")
        if report.get("best_non_gru"):
            out.append("")
            out.append(f"Best non-GRU method (Recall@20): {report['best_non_gru']}.")
    return "\n".join(out) + "\n"


def plot_report(report: Dict[str, Any], path: str) -> bool:
    """Bar chart of Recall@20 and MRR@20 per method (optimistic ties) with 95%
    intervals: one row per ranking (DeepRec: full catalogue and candidate sets;
    sessions: full), one column per metric, the same y scale down a column.

    Returns False (and writes nothing) when matplotlib is not installed; raises
    ValueError (writing nothing) when ``report`` is not an evaluation report
    with at least one Recall@20/MRR@20 value, or ``path``'s extension is not a
    format matplotlib writes (no extension: PNG, written to ``path`` as given).
    The file is written atomically (a temporary file, then renamed)."""
    if not isinstance(report, dict) or not isinstance(report.get("methods"), dict):
        raise ValueError("plot_report: not an evaluation report (no 'methods' mapping)")
    protocol = report.get("protocol")
    if protocol not in ("deeprec", "sessions"):
        raise ValueError(f"plot_report: unknown protocol {protocol!r} (deeprec or sessions)")
    names = list(report["methods"])
    if not names:
        raise ValueError("plot_report: the report has no methods")
    settings = ["full", "candidates"] if protocol == "deeprec" else ["full"]
    metrics = (("recall@20", "Recall@20"), ("mrr@20", "MRR@20"))

    def _num(x: Any) -> Optional[float]:
        try:
            x = float(x)
        except (TypeError, ValueError):
            return None
        return x if math.isfinite(x) else None

    # (setting, metric) -> per method (mean, ci_low, ci_high), None where missing
    values: Dict[Tuple[str, str], List[Tuple[Optional[float], Optional[float], Optional[float]]]] = {}
    for s in settings:
        for metric, _ in metrics:
            row = []
            for n in names:
                res = report["methods"][n]
                m = (((res.get(s) if isinstance(res, dict) else None) or {})
                     .get("optimistic") or {}).get(metric) or {}
                row.append((_num(m.get("mean")), _num(m.get("ci_low")), _num(m.get("ci_high"))))
            values[s, metric] = row
    if all(v[0] is None for row in values.values() for v in row):
        raise ValueError("plot_report: the report has no Recall@20 or MRR@20 values to plot")

    try:
        from matplotlib.figure import Figure
    except ImportError:
        return False

    fig = Figure(figsize=(max(8.0, 1.9 * len(names) + 2.0), 3.4 * len(settings) + 0.9),
                 layout="constrained")
    supported = fig.canvas.get_supported_filetypes()
    ext = os.path.splitext(str(path))[1].lower().lstrip(".")
    fmt = ext or "png"
    if fmt not in supported:
        raise ValueError(f"plot_report: cannot write {path!r}: unknown image format {ext!r} "
                         f"(use one of {', '.join(sorted(supported))})")

    d = report.get("data") or {}

    def _count(key: str) -> str:
        v = d.get(key)
        return f"{v:,}" if isinstance(v, (int, np.integer)) else "?"

    titles = {"full": "full catalogue", "candidates": "within candidate sets"}
    if protocol == "deeprec":
        nc = (report.get("candidates") or {}).get("n_candidates")
        if nc:
            titles["candidates"] = f"within candidate sets ({nc} items)"
        head = (f"DeepRec protocol: {_count('evaluated_users')} users, "
                f"{_count('test_events')} test events, {_count('catalogue_items')} items; "
                "per-user means")
        if d.get("validation"):
            head += " (validation split)"
    else:
        head = (f"Session protocol: {_count('events_evaluated')} test events, "
                f"{_count('catalogue_items')} items; event means")
    fig.suptitle(head + "; bars: 95% interval; optimistic ties", fontsize=10)

    axes = np.atleast_2d(fig.subplots(len(settings), len(metrics), sharey="col", squeeze=False))
    colors = [f"C{i % 10}" for i in range(len(names))]
    x = np.arange(len(names))
    for j, (metric, label) in enumerate(metrics):
        top = 0.0
        for s in settings:
            for mean, lo, hi in values[s, metric]:
                top = max([top] + [v for v in (mean, hi) if v is not None])
        for i, s in enumerate(settings):
            ax = axes[i, j]
            row = values[s, metric]
            means = [v[0] if v[0] is not None else 0.0 for v in row]
            # error bars: zero-length where the interval is missing (e.g. < 2 units)
            err_lo = [max(0.0, v[0] - v[1]) if v[0] is not None and v[1] is not None else 0.0
                      for v in row]
            err_hi = [max(0.0, v[2] - v[0]) if v[0] is not None and v[2] is not None else 0.0
                      for v in row]
            ax.bar(x, means, color=colors, yerr=[err_lo, err_hi], capsize=4,
                   error_kw={"elinewidth": 1.2, "ecolor": "black"})
            for k, (mean, lo, hi) in enumerate(row):
                if mean is None:
                    ax.text(k, 0.0, "n/a", ha="center", va="bottom", fontsize=8, color="0.4")
                else:
                    y = mean + err_hi[k]
                    ax.text(k, y + 0.01 * (top or 1.0), f"{mean:.3f}", ha="center",
                            va="bottom", fontsize=8)
            ax.set_xticks(x, names, rotation=20, ha="right", rotation_mode="anchor")
            ax.set_ylabel(label)
            ax.set_title(f"{label}, {titles[s]}", fontsize=10)
            ax.set_ylim(0.0, (top or 1.0) * 1.15)
            ax.grid(axis="y", alpha=0.3)
            ax.set_axisbelow(True)

    from deeprec_edge._atomic import atomic_write
    atomic_write(str(path), lambda f: fig.savefig(f, format=fmt, dpi=120))
    return True

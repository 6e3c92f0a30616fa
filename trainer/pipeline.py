"""The global model, start to finish: GRU fit, repeat component, device recipe.

:func:`train_model` is what ``deeprec-train fit`` runs and what every model of
``deeprec-train evaluate`` (global, centralized) is built with:

1. **Inner split** (``FitConfig.inner_quantiles``, default 0.8 and 0.9 of the
   training log's click times).  A GRU fitted on the clicks before the first
   inner cutoff plays the global model of a smaller world.
2. **Repeat component** (``FitConfig.repeat``): its ``scale`` and weights are
   learned on the next-click events between the two inner cutoffs -- clicks
   the inner GRU never trained on (:mod:`deeprec_edge.trainer.calibrate`).
3. **Device recipe** (user logs, ``FitConfig.simulate_users``): users with
   a click between the inner cutoffs and one after the second play devices
   (:func:`simulated_devices`); each
   candidate recipe fine-tunes their personal models on their clicks before
   it and is scored on their clicks after it; the best recipe becomes the
   model's default (:mod:`deeprec_edge.trainer.simulate`).
4. **Final fit** on the whole training log, with the component and recipe of
   steps 2-3 written into the model file, and a record of how they were
   chosen in ``config["repeat"]["calibration"]`` and
   ``config["recipe_selection"]``.

Nothing here looks past the end of the log it is given: an evaluation gives
it only the clicks before its cutoff.  Logs too small for an inner split
(fewer than ``min_inner_events`` events after the first inner cutoff) get
the plain GRU and the default recipe, and the record says so.
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from deeprec_edge._scoring import rank_events
from deeprec_edge.model import Model, model_from_params
from deeprec_edge.ranking import mrr_at_k, recall_at_k
from deeprec_edge.recipe import FinetuneRecipe
from deeprec_edge.repeat import RepeatSpec

from .calibrate import event_set, fit_repeat, score_spread, transfer_scale
from .data import Interactions
from .fit import FitConfig, fit, init_params, sequence_from_sessions
from .simulate import DEFAULT_GRID, SimUser, choose_recipe, simulate_recipes

__all__ = ["train_model", "fit_gru", "NO_GAP_SECONDS"]

#: ``session_gap_seconds`` written for a model trained without a gap rule
#: (``session_gap=None``): about 31,700 years, a gap no history reaches.
NO_GAP_SECONDS = 1e12

Log = Callable[[str], None]


def _fit_record(cfg: FitConfig) -> Dict[str, Any]:
    return json.loads(json.dumps(asdict(cfg), default=str))


def fit_gru(inter: Interactions, cfg: FitConfig, *, valid: Optional[Interactions] = None,
            log: Optional[Log] = None, progress: bool = True):
    """Fit the GRU part on ``inter`` (its item vocabulary is the catalogue).
    Returns ``(Params, history dict)``."""
    if len(inter) == 0:
        raise ValueError("no training clicks left after preprocessing")
    items, reset, _ = sequence_from_sessions(inter.items, inter.sessions, inter.times,
                                             inter.users, cfg.carry_state)
    pop = inter.item_support().astype(np.float64)
    vseq = None
    if valid is not None and len(valid):
        vi, vr, _ = sequence_from_sessions(valid.items, valid.sessions, valid.times,
                                           valid.users, cfg.carry_state)
        vseq = (vi, vr)
    params = init_params(inter.n_items, cfg, seed=cfg.train.seed)
    t0 = time.perf_counter()
    hist = fit(params, items, reset, copy.deepcopy(cfg), popularity=pop, valid=vseq, log=log,
               progress=progress)
    dt = time.perf_counter() - t0
    n_ep = max(len(hist.get("epochs", [])), 1)
    hist["seconds"] = dt
    hist["events_per_s"] = len(items) * n_ep / dt if dt > 0 else float("nan")
    return params, hist


def _streams(inter: Interactions) -> List[Tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per user (or session, for a session log): (code, items, session
    starts, times, session codes), rows in time order -- as a device reads
    the user's history (stable by time; a log's rows are in session order,
    which differs where its explicit sessions overlap in time)."""
    inter = inter.time_ordered()
    off = inter.user_offsets()
    out = []
    it, tm, ss, us = inter.items, inter.times, inter.sessions, inter.users
    for a, b in zip(off[:-1].tolist(), off[1:].tolist()):
        s = ss[a:b]
        st = np.ones(b - a, bool)
        st[1:] = s[1:] != s[:-1]
        out.append((int(us[a]), it[a:b].astype(np.int32), st, tm[a:b], s))
    return out


def _events_between(starts: np.ndarray, times: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Input positions p whose target click p+1 continues its session and
    has a time in [lo, hi)."""
    n = starts.shape[0]
    if n < 2:
        return np.zeros(0, np.int64)
    tgt = np.arange(1, n)
    ok = ~starts[1:] & (times[1:] >= lo) & (times[1:] < hi)
    return (tgt[ok] - 1).astype(np.int64)


def simulated_devices(streams, ca: float, cb: float) -> List[SimUser]:
    """The users of ``streams`` (as :func:`_streams` gives them) that play
    devices in the recipe simulation: a device fine-tunes when it has clicks
    the global model never saw, so a user needs at least one click between the
    inner cutoffs ``[ca, cb)`` (as ``deeprec-train evaluate`` needs one device
    click between its cutoffs), at least two clicks before ``cb`` (her history)
    and a test event after ``cb``."""
    sims = []
    for (u, it, st, tm, ss) in streams:
        n_hist = int(np.searchsorted(tm, cb, side="left"))
        n_new = n_hist - int(np.searchsorted(tm, ca, side="left"))
        if n_hist < 2 or n_new < 1:
            continue
        tp = _events_between(st, tm, cb, np.inf)
        tp = tp[tp >= n_hist - 1]
        if tp.size:
            sims.append(SimUser(u, it, tm, ss, n_hist, tp))
    return sims


def _ranking_values(params, spec, ev) -> np.ndarray:
    """(Recall@20 + MRR@20) / 2 of every event."""
    opt, _ = rank_events(params, spec, ev.U, ev.targets, ev.rep if spec is not None else None)
    return (recall_at_k(opt, 20) + mrr_at_k(opt, 20)) / 2


def train_model(inter: Interactions, cfg: FitConfig, *, valid: Optional[Interactions] = None,
                session_gap: Optional[float] = 3600.0, trained_on: Any = None,
                log: Optional[Log] = None, progress: bool = True) -> Tuple[Model, Dict[str, Any]]:
    """The global model of ``inter`` (see the module docstring): the fitted
    GRU with its repeat component and device recipe.  ``cfg`` is copied,
    never modified.  Returns ``(model, history)``; ``history`` holds the
    final fit's record (``seconds``, ``events_per_s``, ``epochs``) and
    ``calibration`` / ``recipe_selection`` records."""
    say = log or (lambda s: None)
    cfg = copy.deepcopy(cfg)
    if len(inter) == 0:
        raise ValueError("no training clicks left after preprocessing")
    spec = None
    recipe: Optional[FinetuneRecipe] = None
    if cfg.recipe is not None:
        recipe = FinetuneRecipe.from_dict(cfg.recipe)
    calib: Dict[str, Any] = {}
    selection: Dict[str, Any] = {}
    t_inner = time.perf_counter()
    simulate = cfg.simulate_users > 0 and recipe is None and inter.user_kind == "user"
    if cfg.repeat or simulate:
        spec, calib, selection, recipe = _inner(inter, cfg, simulate, recipe, say, progress)
    inner_seconds = time.perf_counter() - t_inner
    say(f"fitting the model on {len(inter):,} clicks ({inter.n_items:,} items)")
    params, hist = fit_gru(inter, cfg, valid=valid, log=log, progress=progress)
    if spec is not None and spec.active and calib.get("score_spread"):
        # the final model's scores may have another magnitude than the inner model's:
        # carry the calibrated scale over by the ratio of the spreads, on the same events
        streams = _streams(inter)
        ca, cb = calib["inner_cutoffs"]
        ev = event_set(params, [(it, st, _events_between(st, tm, ca, cb)[:50])
                                for _, it, st, tm, _ in streams],
                       reset_at_sessions=not cfg.carry_state, memory=cfg.repeat_memory)
        spread = score_spread(params, ev)
        spec = transfer_scale(spec, calib["score_spread"], spread)
        calib["final_score_spread"] = spread
        calib["final_scale"] = spec.scale
    # no gap rule (one session per user, or the log's own sessions only): a gap no
    # history reaches, so devices do not cut sessions the model never saw cut
    gap = NO_GAP_SECONDS if session_gap is None else float(session_gap)
    config = {
        "loss": cfg.train.loss, "alpha": cfg.train.alpha, "carry_state": bool(cfg.carry_state),
        "session_gap_seconds": gap, "fit": _fit_record(cfg),
        "trained_on": trained_on if trained_on is not None else inter.summary(),
    }
    if spec is not None:
        config["repeat"] = {"calibration": calib}
    if selection:
        config["recipe_selection"] = selection
    pop = inter.item_support().astype(np.float64)
    model = model_from_params(params, inter.item_ids, pop, config=config, repeat=spec,
                              recipe=recipe)
    hist["calibration"] = calib
    hist["recipe_selection"] = selection
    hist["inner_seconds"] = inner_seconds
    return model, hist


def _inner(inter: Interactions, cfg: FitConfig, simulate: bool,
           recipe: Optional[FinetuneRecipe], say: Log, progress: bool):
    """Steps 1-3 of the module docstring.  Returns (spec or None,
    calibration record, selection record, recipe or None)."""
    qa, qb = cfg.inner_quantiles
    t = inter.times
    ca, cb = float(np.quantile(t, qa)), float(np.quantile(t, qb))
    streams = _streams(inter)
    cal_pos = [_events_between(st, tm, ca, cb) for _, _, st, tm, _ in streams]
    n_cal = int(sum(p.size for p in cal_pos))
    calib: Dict[str, Any] = {"inner_quantiles": [qa, qb], "inner_cutoffs": [ca, cb],
                             "events": n_cal}
    if n_cal < cfg.min_inner_events:
        calib["status"] = (f"skipped: {n_cal} events between the inner cutoffs (fewer than "
                           f"{cfg.min_inner_events}); plain GRU scores")
        say(f"repeat component and recipe: {calib['status']}")
        return None, calib, {"status": "skipped: too few events for an inner split"}, recipe
    inner = inter.subset(inter.times < ca)
    say(f"inner model on the {len(inner):,} clicks before the inner cutoff "
        f"(time quantile {qa}) for calibration and device simulation")
    iparams, _ = fit_gru(inner, cfg, log=say, progress=progress)
    reset = not cfg.carry_state
    spec = None
    if cfg.repeat:
        ev = event_set(iparams, [(it, st, p) for (_, it, st, _, _), p in zip(streams, cal_pos)],
                       reset_at_sessions=reset, memory=cfg.repeat_memory)
        spec, rec = fit_repeat(iparams, ev, memory=cfg.repeat_memory)
        calib.update(rec)
        calib["scale"], calib["w"] = spec.scale, list(spec.w)
        if rec.get("nll_after") is not None:
            say(f"repeat component on {ev.n:,} held-out events: scale {spec.scale:.3f}, "
                f"w {np.round(spec.w, 3).tolist()} (log-loss {rec['nll_before']:.4f} -> "
                f"{rec['nll_after']:.4f})")
        # the likelihood is not the ranking: keep the component only if it ranks the
        # held-out next clicks significantly better ((Recall@20 + MRR@20)/2 per event,
        # the paired difference's 95% interval above zero)
        if spec.active and ev.n:
            plain, with_rep = (_ranking_values(iparams, sp_, ev) for sp_ in (None, spec))
            d = with_rep - plain
            lo = float(d.mean() - 1.96 * d.std(ddof=1) / np.sqrt(d.size)) if d.size > 1 else -1.0
            calib["heldout_recall_mrr_plain"] = float(plain.mean())
            calib["heldout_recall_mrr"] = float(with_rep.mean())
            calib["heldout_gain_ci_low"] = lo
            say(f"held-out (Recall@20 + MRR@20)/2: {plain.mean():.4f} plain, "
                f"{with_rep.mean():.4f} with the repeat component (gain interval from "
                f"{lo:+.4f})")
            if not lo > 0:
                # the global model scores without it (w = 0, scale 1), but the component
                # stays in the file: a device may still learn its own repeat weights
                calib["status"] = ("zeroed: it did not rank the held-out clicks "
                                   "significantly better")
                say(f"repeat component {calib['status']}")
                spec = RepeatSpec(memory=cfg.repeat_memory)
    selection: Dict[str, Any] = {}
    if simulate:
        sims = simulated_devices(streams, ca, cb)
        if len(sims) > cfg.simulate_users:
            rng = np.random.default_rng(cfg.train.seed)
            pick = np.sort(rng.choice(len(sims), size=cfg.simulate_users, replace=False))
            sims = [sims[i] for i in pick]
        selection = {"users": len(sims), "inner_cutoffs": [ca, cb]}
        if len(sims) < cfg.min_simulated_users:
            selection["status"] = (f"skipped: {len(sims)} users with a click between the inner "
                                   f"cutoffs and one after them (fewer than "
                                   f"{cfg.min_simulated_users})")
            say(f"device recipe: {selection['status']}; the default recipe is kept")
        else:
            say(f"choosing the device recipe on {len(sims)} simulated devices")
            pop = inner.item_support().astype(np.float64)
            imodel = model_from_params(iparams, inter.item_ids, pop,
                                       config={"carry_state": bool(cfg.carry_state)},
                                       repeat=spec)
            records = simulate_recipes(imodel, sims, DEFAULT_GRID, seed=cfg.train.seed, log=say)
            recipe = choose_recipe(records)
            selection.update(status="chosen", candidates=records, chosen=recipe.to_dict())
            say(f"device recipe: {recipe.label()}")
    return spec, calib, selection, recipe

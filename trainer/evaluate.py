"""Evaluation: the DeepRec protocol (``deeprec-train evaluate``) and GRU4Rec's
session protocol (``deeprec-train evaluate-sessions``).

DeepRec protocol (DESIGN.md section 6), :func:`evaluate_deeprec`
------------------------------------------------------------------
1. The log (users with sessions by time gap) is cut at a time cutoff (the
   ``quantile`` of all click times, default 0.8, or a given date).  Before
   it: what the cloud may train on.  The catalogue is the items of the
   pre-cutoff log after support filtering (``min_item_support``,
   ``min_session_length``); post-cutoff clicks on other items are dropped
   (a device skips unknown items too) and counted.
2. Users with at least ``min_post_clicks`` post-cutoff clicks are evaluated.
   The first ``finetune_share`` of each one's post-cutoff clicks fine-tunes
   the personal model, the rest is the test part.
3. Test events: every test click whose previous click is in the same
   session (``session_starts=True`` adds session starts).  The input is the
   user's whole preceding history: pre-cutoff clicks, fine-tuning clicks and
   the test clicks before it (the hidden state resets at session starts
   unless the model carries state).
4. Methods, all ranking the same catalogue:

   - ``popularity``: pre-cutoff item support;
   - ``item-knn``: the last click's cosine neighbours on pre-cutoff session
     co-occurrence (``knn_neighbors`` per item), other items after them by
     popularity;
   - ``global``: the GRU model fitted on the pre-cutoff log;
   - ``centralized``: the same fit (same settings and seed) on everything a
     server could have seen: the pre-cutoff log plus every evaluated
     user's fine-tuning clicks;
   - ``personal``: per user, the global model fine-tuned on the user's
     fine-tuning clicks **through the runtime's own code path**
     (:func:`deeprec_edge.api.finetune`, with a :class:`deeprec_edge.History`
     holding those clicks and their sessions); settings default to the
     runtime's defaults.

5. Ranking over the full catalogue and within each user's candidate set
   (:func:`deeprec_edge.trainer.candidates.user_candidates`: item-item CF on
   the pre-cutoff log fused with neighbours in the global model's output
   embedding space, ``n_candidates`` items; built from the user's history up
   to the test part -- ``candidate_history="all"`` -- or from the pre-cutoff
   clicks only -- ``"pre"``, the cloud-only view).  A target outside the set
   is a miss.
6. Metrics Recall/MRR/NDCG/MAP at 5, 10, 20 with both tie rules; each user's
   events are averaged first, then users, with 95% intervals
   (:func:`deeprec_edge.trainer.metrics.summarize`); paired per-user
   differences personal - global and personal - centralized with intervals.

``validation=True`` never touches the test part: the fine-tuning clicks are
split again by ``finetune_share`` (first part fine-tunes, the rest is
scored).  Tune fine-tuning settings there, then run once on the test part.

Session protocol (GRU4Rec), :func:`evaluate_sessions`
-----------------------------------------------------
A prepared train file and test file of sessions: test clicks on items not in
train are removed, then test sessions shorter than 2; every click whose next
click is in the same session is an event; full ranking over all training
items; methods popularity, item-kNN and the GRU model; event-level means
(GRU4Rec's convention) with 95% intervals over events.

The report (a JSON-compatible dict, keys in ``docs/trainer.md``) renders as
markdown with :func:`markdown_report` and as a plot with :func:`plot_report`
(when matplotlib is installed).
"""
from __future__ import annotations

import copy
import datetime as _dt
import inspect
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from deeprec_edge import __version__ as _VERSION
from deeprec_edge._engine import user_vectors
from deeprec_edge.api import finetune as runtime_finetune
from deeprec_edge.history import History
from deeprec_edge.model import Model, model_from_params, params_of

from .candidates import item_item_cf, unit_item_matrix, user_candidates
from .data import (Interactions, filter_sessions, filter_support, remap_items, split_by_time)
from .fit import FitConfig, fit, init_params, sequence_from_sessions
from .metrics import (RankAccumulator, mean_ci, metric_values, per_user_mean, ranks_from_scores)

__all__ = [
    "REPORT_FORMAT",
    "REPORT_VERSION",
    "DEEPREC_METHODS",
    "SESSION_METHODS",
    "FinetuneSettings",
    "DeepRecSettings",
    "runtime_finetune_defaults",
    "train_model",
    "evaluate_deeprec",
    "evaluate_sessions",
    "markdown_report",
    "plot_report",
    "write_json",
]

#: ``report`` tag of every evaluation report.
REPORT_FORMAT = "deeprec-edge/evaluation"
#: Version of the report's key layout (grows when a key changes meaning).
REPORT_VERSION = 1
DEEPREC_METHODS = ("popularity", "item-knn", "global", "centralized", "personal")
SESSION_METHODS = ("popularity", "item-knn", "gru")
_MODEL_METHODS = ("global", "centralized", "personal", "gru")
_TABLE_METRICS = ("recall@5", "recall@10", "recall@20", "mrr@5", "mrr@10", "mrr@20",
                  "ndcg@20", "map@20")

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# settings
# --------------------------------------------------------------------------

_FT_KEYS = ("epochs", "lr", "window", "batch_size", "n_negatives", "alpha", "optimizer",
            "holdout", "early_stopping", "l2_to_global", "train_gru")


def runtime_finetune_defaults() -> Dict[str, Any]:
    """The defaults of :func:`deeprec_edge.api.finetune` (the device's own),
    read from its signature so the evaluation follows the runtime."""
    sig = inspect.signature(runtime_finetune)
    return {k: sig.parameters[k].default for k in _FT_KEYS if k in sig.parameters}


@dataclass
class FinetuneSettings:
    """Fine-tuning settings of the personal models; ``None`` = the runtime's
    default (:func:`runtime_finetune_defaults`)."""

    epochs: Optional[int] = None
    lr: Optional[float] = None
    window: Optional[int] = None
    batch_size: Optional[int] = None
    n_negatives: Optional[int] = None
    alpha: Optional[float] = None
    optimizer: Optional[str] = None
    holdout: Optional[float] = None
    early_stopping: Optional[bool] = None
    l2_to_global: Optional[float] = None  #: L2 pull of the trained weights towards the global's
    train_gru: Optional[bool] = None      #: False: fine-tune the head only
    use_candidates: bool = False     #: draw half the negatives from the user's candidate set

    def resolved(self) -> Dict[str, Any]:
        out = runtime_finetune_defaults()
        for k in _FT_KEYS:
            v = getattr(self, k)
            if v is not None:
                out[k] = v
        return out


@dataclass
class DeepRecSettings:
    """Settings of :func:`evaluate_deeprec` (see the module docstring)."""

    quantile: float = 0.8
    cutoff: Any = None                   #: unix seconds or a date; overrides ``quantile``
    min_post_clicks: int = 20
    finetune_share: float = 0.5
    min_item_support: int = 5
    min_session_length: int = 2
    methods: Tuple[str, ...] = DEEPREC_METHODS
    ks: Tuple[int, ...] = (5, 10, 20)
    n_candidates: int = 100
    candidate_history: str = "all"       #: "all" (pre-cutoff + fine-tuning clicks) or "pre"
    candidate_keep_seen: bool = False    #: allow items of the user's history in the sets
    cf_neighbors: int = 100
    knn_neighbors: int = 100
    knn_score: str = "count"             #: item-kNN score: "count" (co-occurrence) or "cosine"
    exclude_seen: bool = False
    session_starts: bool = False
    max_users: Optional[int] = None
    validation: bool = False
    ci: str = "normal"
    seed: int = 0
    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)


# --------------------------------------------------------------------------
# training a model on an Interactions log
# --------------------------------------------------------------------------

def _fit_record(cfg: FitConfig) -> Dict[str, Any]:
    d = asdict(cfg)
    return json.loads(json.dumps(d, default=str))


def train_model(inter: Interactions, cfg: FitConfig, *, valid: Optional[Interactions] = None,
                session_gap: Optional[float] = 3600.0, trained_on: Any = None,
                log: Optional[Log] = None, progress: bool = True) -> Tuple[Model, Dict[str, Any]]:
    """Fit a global model on ``inter`` (its item vocabulary is the catalogue)
    with :func:`deeprec_edge.trainer.fit.fit` and build the model file's
    :class:`~deeprec_edge.model.Model` (popularity = item support in
    ``inter``).  ``cfg`` is copied, never modified.  Returns ``(model,
    history)``; ``history["seconds"]`` and ``history["events_per_s"]`` give
    the fit's wall time and throughput."""
    log = log or _stderr
    cfg = copy.deepcopy(cfg)
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
    hist = fit(params, items, reset, cfg, popularity=pop, valid=vseq, log=log, progress=progress)
    dt = time.perf_counter() - t0
    n_ep = max(len(hist.get("epochs", [])), 1)
    hist["seconds"] = dt
    hist["events_per_s"] = len(items) * n_ep / dt if dt > 0 else float("nan")
    gap = 3600.0 if session_gap is None else float(session_gap)
    config = {
        "loss": cfg.train.loss, "alpha": cfg.train.alpha, "carry_state": bool(cfg.carry_state),
        "session_gap_seconds": gap, "fit": _fit_record(cfg),
        "trained_on": trained_on if trained_on is not None else inter.summary(),
    }
    model = model_from_params(params, inter.item_ids, pop, config=config)
    return model, hist


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

class _Scorer:
    """Scores of a baseline for a batch of events (rows) over all items.

    ``popularity``: training support.  ``item-knn`` with ``knn_score="count"``:
    the number of training sessions holding both the last click and the item
    (exact, computed per batch from the binary session x item matrix), which
    includes the last click itself (its own session count, the largest) -- a
    repeat click is a hit; with ``"cosine"``: the top ``knn_neighbors`` cosine
    neighbours of the last click (never itself).  Items tied on co-occurrence
    (e.g. all items never seen with it) are ordered by popularity, so the two
    tie rules differ only for exactly equal supports.
    """

    def __init__(self, kind: str, *, popularity: np.ndarray, train: Optional[Interactions] = None,
                 knn_score: str = "count", knn_neighbors: int = 100):
        self.kind = kind
        self.pop = np.asarray(popularity, np.float64)
        N = self.pop.shape[0]
        if kind == "popularity":
            return
        if knn_score not in ("count", "cosine"):
            raise ValueError(f"knn_score must be 'count' or 'cosine', got {knn_score!r}")
        self.score = knn_score
        # popularity tie-break in [0, 0.5): below one shared session
        self.tie = 0.5 * self.pop / (self.pop.max() + 1.0) if N else self.pop
        if knn_score == "count":
            X = unit_item_matrix(train, "session")
            self.X = X.astype(np.float64)
            self.XT = self.X.T.tocsr()
        else:
            self.knn = item_item_cf(train, knn_neighbors, by="session").to_sparse(N)

    def baseline(self, last_items: np.ndarray) -> np.ndarray:
        B = last_items.shape[0]
        if self.kind == "popularity":
            return np.repeat(self.pop[None, :], B, axis=0)
        if self.score == "count":
            S = (self.XT[last_items] @ self.X).toarray()
            S += self.tie[None, :]
            return S
        # cosine neighbours in (0, 1] stay above every other item (in [-1, -0.5))
        S = np.repeat((self.tie - 1.0)[None, :], B, axis=0)
        rows = self.knn[last_items].tocoo()
        S[rows.row, rows.col] = rows.data
        return S


def _rows_per_block(n_items: int, max_elems: int = 1 << 22) -> int:
    """Events scored at once: at most ``max_elems`` scores (32 MB as float64)."""
    return max(1, min(4096, max_elems // max(n_items, 1)))


def _session_starts(sessions: np.ndarray) -> np.ndarray:
    s = np.ones(len(sessions), bool)
    if len(sessions) > 1:
        s[1:] = sessions[1:] != sessions[:-1]
    return s


def _concat(parts: Sequence[Interactions], item_ids, user_ids, user_kind: str,
            sort: bool = True) -> Interactions:
    frames = [p.df for p in parts if len(p)]
    if frames:
        df = pd.concat(frames, ignore_index=True)
    else:
        df = pd.DataFrame({c: np.zeros(0, t) for c, t in Interactions.DTYPES.items()})
    return Interactions(df, item_ids, user_ids, user_kind=user_kind, sort=sort, validate=True)


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


def _iso(t: float) -> str:
    return _dt.datetime.fromtimestamp(float(t), _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _progress_iter(it, total: int, desc: str, progress: bool):
    if not progress or not sys.stderr.isatty():
        return it
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is in the [trainer] extra
        return it
    return tqdm(it, total=total, desc=desc, unit="user", leave=False, file=sys.stderr)


def _report_head(protocol: str) -> Dict[str, Any]:
    return {"report": REPORT_FORMAT, "version": REPORT_VERSION, "protocol": protocol,
            "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
            "deeprec_edge_version": _VERSION}


# --------------------------------------------------------------------------
# the DeepRec protocol
# --------------------------------------------------------------------------

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
    fcfg = copy.deepcopy(fit_config) if fit_config is not None else FitConfig()
    log = log or _stderr
    methods = tuple(st.methods)
    unknown = [m for m in methods if m not in DEEPREC_METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose among {list(DEEPREC_METHODS)}")
    if not 0.0 < st.finetune_share < 1.0:
        raise ValueError(f"finetune_share must be in (0, 1), got {st.finetune_share}")
    if st.candidate_history not in ("all", "pre"):
        raise ValueError(f"candidate_history must be 'all' or 'pre', got {st.candidate_history!r}")
    if inter.user_kind != "user":
        raise ValueError("the DeepRec protocol needs a log with users (this one is a session log: "
                         "each session is its own unit); use evaluate-sessions for session data")
    timing: Dict[str, float] = {}
    t_start = time.perf_counter()

    # 1. split and catalogue
    pre, post, cutoff = split_by_time(inter, st.quantile, cutoff=st.cutoff)
    if len(pre) == 0 or len(post) == 0:
        raise ValueError(f"the cutoff {_iso(cutoff)} leaves {len(pre)} clicks before and "
                         f"{len(post)} after it; choose another quantile or date")
    if model is None:
        train = filter_support(pre, min_item_support=st.min_item_support,
                               min_session_length=st.min_session_length, compact=True)
        catalogue = train.item_ids
    else:
        catalogue = model.item_ids
        train = filter_support(remap_items(pre, catalogue), min_item_support=st.min_item_support,
                               min_session_length=st.min_session_length, compact=False)
    if len(train) == 0:
        raise ValueError("no pre-cutoff clicks left after support filtering")
    N = len(catalogue)
    pre_k = remap_items(pre, catalogue)
    post_k = remap_items(post, catalogue)
    n_post_unknown = len(post) - len(post_k)

    # 2. evaluated users
    uo = post_k.user_offsets()
    pu = post_k.users[uo[:-1]] if len(post_k) else np.zeros(0, np.int64)
    counts = np.diff(uo)
    elig = np.flatnonzero(counts >= st.min_post_clicks)
    if st.max_users is not None and len(elig) > st.max_users:
        rng = np.random.default_rng(st.seed)
        elig = np.sort(rng.choice(elig, size=st.max_users, replace=False))
    if len(elig) == 0:
        raise ValueError(f"no user has at least {st.min_post_clicks} post-cutoff clicks on "
                         f"catalogue items (lower --min-post-clicks or the quantile)")
    po = inter.n_users
    pre_lo = np.zeros(po, np.int64)
    pre_hi = np.zeros(po, np.int64)
    if len(pre_k):
        puo = pre_k.user_offsets()
        pre_users = pre_k.users[puo[:-1]]
        pre_lo[pre_users], pre_hi[pre_users] = puo[:-1], puo[1:]

    users: List[Dict[str, Any]] = []
    ft_rows, test_rows = [], []
    for k in elig:
        a, b = int(uo[k]), int(uo[k + 1])
        n = b - a
        n_ft = min(max(int(round(n * st.finetune_share)), 2), n - 1)
        ft = np.arange(a, a + n_ft)
        te = np.arange(a + n_ft, b)
        if st.validation:                       # never look at the real test part
            m = len(ft)
            n2 = min(max(int(round(m * st.finetune_share)), 2), m - 1)
            ft, te = ft[:n2], ft[n2:]
        ft_rows.append(ft)
        test_rows.append(te)
        users.append({"user": int(pu[k]), "ft": ft, "test": te})
    ft_all = np.concatenate(ft_rows)
    ft_log = post_k.subset(ft_all)

    # 3. models
    fitted: Dict[str, Dict[str, Any]] = {}
    gmodel = model                      # always needed: candidates use its output table
    if gmodel is None:
        log(f"fitting the global model on {len(train):,} pre-cutoff clicks ({N:,} items)")
        t0 = time.perf_counter()
        gmodel, ghist = train_model(train, fcfg, session_gap=session_gap, log=log,
                                    progress=progress,
                                    trained_on={"protocol": "deeprec", "part": "pre-cutoff",
                                                "cutoff": cutoff, **train.summary()})
        timing["fit_global_seconds"] = time.perf_counter() - t0
        fitted["global"] = {"fit": ghist, "events": len(train)}
    cmodel = None
    if "centralized" in methods:
        central = _concat([train, ft_log], catalogue, inter.user_ids, inter.user_kind)
        log(f"fitting the centralized model on {len(central):,} clicks "
            f"(pre-cutoff + {len(ft_log):,} fine-tuning clicks)")
        t0 = time.perf_counter()
        cmodel, chist = train_model(central, fcfg, session_gap=session_gap, log=log,
                                    progress=progress,
                                    trained_on={"protocol": "deeprec", "part": "centralized",
                                                "cutoff": cutoff, **central.summary()})
        timing["fit_centralized_seconds"] = time.perf_counter() - t0
        fitted["centralized"] = {"fit": chist, "events": len(central)}
    gparams = params_of(gmodel)
    cparams = params_of(cmodel) if cmodel is not None else None
    reset = not gmodel.carry_state

    # 4. candidates and item-kNN
    t0 = time.perf_counter()
    pop = train.item_support().astype(np.float64)
    cf = item_item_cf(train, st.cf_neighbors, by="session")
    eu = np.array([u["user"] for u in users], np.int64)
    pre_sel = np.concatenate([np.arange(pre_lo[u], pre_hi[u]) for u in eu]) if len(eu) else \
        np.zeros(0, np.int64)
    parts = [pre_k.subset(pre_sel)]
    if st.candidate_history == "all":
        parts.append(ft_log)
    chist_log = _concat(parts, catalogue, inter.user_ids, inter.user_kind)
    cands = user_candidates(chist_log, st.n_candidates, cf=cf, embeddings=gmodel.out_table,
                            users=eu, popularity=pop, exclude_seen=not st.candidate_keep_seen)
    timing["candidates_seconds"] = time.perf_counter() - t0
    cand_of = {int(u): cands.for_user(int(u)) for u in cands.users}

    # 5. per-user scoring
    settings_ft = st.finetune.resolved()
    acc = {m: {"full": RankAccumulator(), "candidates": RankAccumulator()} for m in methods}
    ft_summaries: List[Dict[str, Any]] = []
    n_ft_failed = 0
    n_events = 0
    in_set_hits = []
    scorers = {"popularity": _Scorer("popularity", popularity=pop)}
    if "item-knn" in methods:
        scorers["item-knn"] = _Scorer("item-knn", popularity=pop, train=train,
                                      knn_score=st.knn_score, knn_neighbors=st.knn_neighbors)
    t_ft = 0.0
    t_score = time.perf_counter()
    for rec in _progress_iter(users, len(users), "users", progress):
        u = rec["user"]
        pa, pb = int(pre_lo[u]), int(pre_hi[u])
        seq = np.concatenate([pre_k.items[pa:pb], post_k.items[rec["ft"]],
                              post_k.items[rec["test"]]]).astype(np.int32)
        sess = np.concatenate([pre_k.sessions[pa:pb], post_k.sessions[rec["ft"]],
                               post_k.sessions[rec["test"]]])
        starts = _session_starts(sess)
        t_first = (pb - pa) + len(rec["ft"])
        tpos = np.arange(t_first, len(seq))
        if not st.session_starts:
            tpos = tpos[~starts[tpos]]
        if tpos.size == 0:
            continue
        inputs = tpos - 1
        targets = seq[tpos].astype(np.int64)
        B = tpos.size
        n_events += B
        uvec = np.full(B, u, np.int64)
        cset = cand_of.get(u, np.zeros(0, np.int32))
        cmask_row = np.zeros(N, bool)
        cmask_row[cset] = True
        in_set_hits.append(cmask_row[targets])
        first = None
        if st.exclude_seen:            # position of each item's first click in the sequence
            first = np.full(N, np.iinfo(np.int64).max, np.int64)
            np.minimum.at(first, seq.astype(np.int64), np.arange(len(seq)))

        personal_params = None
        if "personal" in methods:
            ft_items = post_k.items[rec["ft"]].astype(np.int32)
            hist = History(items=ft_items, item_ids=catalogue[ft_items],
                           timestamps=post_k.times[rec["ft"]].astype(np.float64),
                           session_ids=post_k.sessions[rec["ft"]].astype(str),
                           n_rows=len(ft_items), source=f"user {inter.user_ids[u]}")
            t0 = time.perf_counter()
            try:
                res = runtime_finetune(
                    gmodel, hist,
                    candidates=catalogue[cset] if st.finetune.use_candidates else None,
                    seed=st.seed, **settings_ft)
                personal_params = params_of(res.model)
                ft_summaries.append(res.summary)
            except ValueError:
                # e.g. no next-click pair inside a session: the device keeps the global model
                n_ft_failed += 1
                personal_params = gparams
            t_ft += time.perf_counter() - t0

        Us = {}
        for m, pp in (("global", gparams), ("centralized", cparams), ("personal", personal_params)):
            if m in methods:
                Us[m] = (user_vectors(pp, seq, starts, inputs, reset), pp)
        last = seq[inputs].astype(np.int64)
        step = _rows_per_block(N)
        for a in range(0, B, step):
            b = min(a + step, B)
            if first is None:
                fm = None
                cm = np.broadcast_to(cmask_row[None, :], (b - a, N))
            else:                      # competing: items not clicked before the event
                fm = first[None, :] >= tpos[a:b, None]
                cm = fm & cmask_row[None, :]
            for m in methods:
                if m in Us:
                    U, pp = Us[m]
                    S = U[a:b] @ pp.out_table.T
                    S += pp.b_out[None, :]
                else:
                    S = scorers[m].baseline(last[a:b])
                o, c = ranks_from_scores(S, targets[a:b], ties="both", mask=fm)
                acc[m]["full"].add_ranks(o, c, users=uvec[a:b])
                o, c = ranks_from_scores(S, targets[a:b], ties="both", mask=cm)
                acc[m]["candidates"].add_ranks(o, c, users=uvec[a:b])
    timing["finetune_seconds"] = t_ft
    timing["scoring_seconds"] = time.perf_counter() - t_score - t_ft
    timing["total_seconds"] = time.perf_counter() - t_start

    # 6. report
    ks = tuple(int(k) for k in st.ks)
    results = {m: {s: _summaries(acc[m][s], ks, st.ci, st.seed) for s in ("full", "candidates")}
               for m in methods}
    comparisons: Dict[str, Any] = {}
    for other in ("global", "centralized"):
        if "personal" in methods and other in methods:
            comparisons[f"personal-{other}"] = {
                s: _paired(acc["personal"][s], acc[other][s], ks, st.ci, st.seed)
                for s in ("full", "candidates")}
    hits = np.concatenate(in_set_hits) if in_set_hits else np.zeros(0, bool)
    n_test_users = len([h for h in in_set_hits if h.size])
    user_hit = np.array([h.mean() for h in in_set_hits if h.size]) if n_test_users else np.zeros(0)
    ft_agg: Dict[str, Any] = {"settings": settings_ft, "use_candidates": st.finetune.use_candidates,
                              "users": len(ft_summaries), "failed": n_ft_failed}
    if ft_summaries:
        def mean_of(key):
            v = np.array([s[key] for s in ft_summaries if s.get(key) is not None], np.float64)
            v = v[~np.isnan(v)]
            return float(v.mean()) if v.size else None
        ft_agg.update({
            "mean_clicks": mean_of("clicks_used"), "mean_epochs_run": mean_of("epochs_run"),
            "mean_best_epoch": mean_of("best_epoch"), "mean_seconds": mean_of("seconds"),
            "kept_global_share": float(np.mean([s["best_epoch"] == 0 for s in ft_summaries])),
            "heldout_recall20_before": mean_of("recall20_before"),
            "heldout_recall20_after": mean_of("recall20_after"),
        })
    report = _report_head("deeprec")
    report.update({
        "data": {
            "source": inter.info.get("source"), "format": inter.info.get("format"),
            "events": len(inter), "users": int(len(inter.user_offsets()) - 1),
            "cutoff": cutoff, "cutoff_iso": _iso(cutoff),
            "quantile": None if st.cutoff is not None else st.quantile,
            "pre_cutoff_events": len(pre), "train_events": len(train),
            "catalogue_items": N, "post_cutoff_events": len(post),
            "post_cutoff_unknown_item_events": int(n_post_unknown),
            "evaluated_users": len(users), "finetune_events": int(len(ft_all)),
            "test_events": int(n_events),
            "users_without_pre_cutoff_history": int(sum(pre_hi[u["user"]] == pre_lo[u["user"]]
                                                         for u in users)),
            "validation": st.validation,
        },
        "settings": json.loads(json.dumps(asdict(st), default=str)),
        "fit_config": _fit_record(fcfg),
        "candidates": {"n_candidates": st.n_candidates, "history": st.candidate_history,
                       "keep_seen": st.candidate_keep_seen,
                       "cf_neighbors": st.cf_neighbors,
                       "mean_set_size": float(cands.sizes().mean()) if len(cands) else 0.0,
                       "recall": float(hits.mean()) if hits.size else None,
                       "user_recall": float(user_hit.mean()) if user_hit.size else None},
        "methods": results,
        "comparisons": comparisons,
        "finetune": ft_agg,
        "models": fitted,
        "timing": timing,
    })
    return report


# --------------------------------------------------------------------------
# the session protocol
# --------------------------------------------------------------------------

def evaluate_sessions(train: Interactions, test: Interactions,
                      fit_config: Optional[FitConfig] = None, *,
                      methods: Sequence[str] = SESSION_METHODS, model: Optional[Model] = None,
                      ks: Sequence[int] = (5, 10, 20), knn_neighbors: int = 100,
                      knn_score: str = "count",
                      ci: str = "normal", seed: int = 0, session_gap: Optional[float] = 3600.0,
                      batch: Optional[int] = None, log: Optional[Log] = None,
                      progress: bool = True) -> Dict[str, Any]:
    """GRU4Rec's session protocol on a prepared train/test pair (see the
    module docstring); returns the report dict.  ``model``: evaluate this
    model instead of fitting one (its catalogue replaces train's)."""
    log = log or _stderr
    unknown = [m for m in methods if m not in SESSION_METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose among {list(SESSION_METHODS)}")
    fcfg = copy.deepcopy(fit_config) if fit_config is not None else FitConfig()
    timing: Dict[str, float] = {}
    t_start = time.perf_counter()
    n_test_raw = len(test)
    if model is None:
        tr = train.compact_items()
    else:
        tr = remap_items(train, model.item_ids)
    catalogue = tr.item_ids
    te = remap_items(test, catalogue)
    n_unknown = int(test.info.get("n_unknown_items", 0)) + n_test_raw - len(te)
    n_before = len(te)
    te = filter_sessions(te, 2)
    N = len(catalogue)
    fitted: Dict[str, Any] = {}
    gmodel = model
    if "gru" in methods and gmodel is None:
        log(f"fitting the model on {len(tr):,} training clicks ({N:,} items)")
        t0 = time.perf_counter()
        gmodel, hist = train_model(tr, fcfg, session_gap=session_gap, log=log, progress=progress,
                                   trained_on={"protocol": "sessions", **tr.summary()})
        timing["fit_seconds"] = time.perf_counter() - t0
        fitted["gru"] = {"fit": hist, "events": len(tr)}
    pop = tr.item_support().astype(np.float64)
    t0 = time.perf_counter()
    scorers = {}
    if "popularity" in methods:
        scorers["popularity"] = _Scorer("popularity", popularity=pop)
    if "item-knn" in methods:
        scorers["item-knn"] = _Scorer("item-knn", popularity=pop, train=tr, knn_score=knn_score,
                                      knn_neighbors=knn_neighbors)
    timing["knn_seconds"] = time.perf_counter() - t0

    items, reset, _ = sequence_from_sessions(te.items, te.sessions, te.times)
    pos = np.flatnonzero(~reset[1:]) if len(items) > 1 else np.zeros(0, np.int64)
    targets = items[pos + 1].astype(np.int64)
    acc = {m: RankAccumulator() for m in methods}
    t0 = time.perf_counter()
    U = None
    if "gru" in methods:
        p = params_of(gmodel)
        U = user_vectors(p, items, reset, pos, not gmodel.carry_state)
    batch = batch or _rows_per_block(N)
    for a in range(0, len(pos), batch):
        b = min(a + batch, len(pos))
        for m in methods:
            if m == "gru":
                S = U[a:b] @ p.out_table.T
                S += p.b_out[None, :]
            else:
                S = scorers[m].baseline(items[pos[a:b]].astype(np.int64))
            o, c = ranks_from_scores(S, targets[a:b], ties="both")
            acc[m].add_ranks(o, c)
    timing["scoring_seconds"] = time.perf_counter() - t0
    timing["total_seconds"] = time.perf_counter() - t_start
    ks = tuple(int(k) for k in ks)
    report = _report_head("sessions")
    report.update({
        "data": {"train_source": train.info.get("source"), "test_source": test.info.get("source"),
                 "train_events": len(tr), "train_sessions": tr.n_sessions,
                 "catalogue_items": N,
                 "test_events_read": n_test_raw + int(test.info.get("n_unknown_items", 0)),
                 "test_unknown_item_events": int(n_unknown),
                 "test_short_session_events": int(n_before - len(te)),
                 "test_events": len(te), "test_sessions": te.n_sessions,
                 "events_evaluated": int(len(pos))},
        "settings": {"methods": list(methods), "ks": list(ks), "knn_neighbors": knn_neighbors,
                     "knn_score": knn_score,
                     "ci": ci, "seed": seed, "unit": "event"},
        "fit_config": _fit_record(fcfg) if model is None else None,
        "methods": {m: {"full": _summaries(acc[m], ks, ci, seed)} for m in methods},
        "models": fitted,
        "timing": timing,
    })
    return report


# --------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------

def _clean(o: Any) -> Any:
    """JSON-safe copy: NaN/inf -> None, numpy scalars and arrays -> Python."""
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, np.ndarray):
        return _clean(o.tolist())
    if isinstance(o, np.generic):
        return _clean(o.item())
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    return o


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
    head = ["method"] + [m.replace("recall", "Recall").replace("mrr", "MRR")
                         .replace("ndcg", "NDCG").replace("map", "MAP") for m in _TABLE_METRICS]
    head += ["Recall@20 cons.", "MRR@20 cons."]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, res in report["methods"].items():
        r = res.get(setting) or {}
        opt, con = r.get("optimistic") or {}, r.get("conservative") or {}
        row = [name] + [_cell(opt.get(k), k.endswith("@20") and k[:3] in ("rec", "mrr"))
                        for k in _TABLE_METRICS]
        row += [_cell(con.get("recall@20"), False), _cell(con.get("mrr@20"), False)]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def markdown_report(report: Dict[str, Any]) -> str:
    """The report's tables as markdown (means; ``±`` = half the 95% interval
    for Recall@20 and MRR@20; the last two columns use conservative ties)."""
    d = report["data"]
    out: List[str] = []
    if report["protocol"] == "deeprec":
        s = report["settings"]
        what = "validation (fine-tuning clicks split again; test part unused)" \
            if d.get("validation") else "test part"
        out.append(f"DeepRec protocol: cutoff {d['cutoff_iso']}"
                   + (f" (quantile {d['quantile']})" if d.get("quantile") is not None else "")
                   + f"; {d['evaluated_users']} users with >= {s['min_post_clicks']} post-cutoff "
                   f"clicks; first {s['finetune_share']:.0%} fine-tunes, {d['test_events']:,} "
                   f"{what} events; {d['catalogue_items']:,} items; per-user means.")
        out.append("")
        out.append("Full-catalogue ranking:")
        out.append("")
        out += _table(report, "full")
        out.append("")
        c = report.get("candidates", {})
        out.append(f"Within candidate sets ({c.get('n_candidates')} items, CF + embedding "
                   f"neighbours, from the {'pre-cutoff' if c.get('history') == 'pre' else 'pre-test'}"
                   f" history; candidate recall {_fmt(c.get('recall'), 3)}):")
        out.append("")
        out += _table(report, "candidates")
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
                out.append(f"Paired per-user difference {name.replace('-', ' − ')} "
                           f"(full ranking): " + "; ".join(parts) + ".")
    else:
        out.append(f"Session protocol: {d['train_events']:,} training clicks, "
                   f"{d['catalogue_items']:,} items ranked, {d['events_evaluated']:,} test "
                   f"events in {d['test_sessions']:,} sessions; event means.")
        out.append("")
        out += _table(report, "full")
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

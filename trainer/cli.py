"""The ``deeprec-train`` command: the cloud side of deeprec-edge.

Subcommands (``deeprec-train COMMAND --help`` for every flag):

- ``fit``: train the global GRU model on a click log and write ``weights.npz``;
- ``candidates``: per-user candidate sets (item-item CF + embedding
  neighbours) as npz and/or CSV, with their recall;
- ``export``: re-export a model file, or slice it to a list of items;
- ``evaluate``: the DeepRec protocol on a user log (popularity, item-kNN,
  global, centralized and personal models);
- ``evaluate-sessions``: GRU4Rec's session protocol on a train/test pair;
- ``demo-data``: rebuild the runtime's embedded demo model and history.

This module imports only the standard library at import time, so the
command exists without the trainer extra and then says how to install it
(``pip install "deeprec-edge[trainer]"``).  User errors exit with status 2
and one line on stderr; progress goes to stderr; tables go to stdout.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional

__all__ = ["main", "build_parser", "INSTALL_HINT"]

INSTALL_HINT = 'pip install "deeprec-edge[trainer]"'
_EXTRA_MODULES = ("pandas", "scipy", "tqdm")
#: Method names of ``deeprec-train evaluate`` (the baselines, then the GRU models).
DEEPREC_METHOD_NAMES = ("popularity", "cooccurrence", "item-knn", "sknn", "v-sknn", "recency",
                        "global", "centralized", "personal")
SESSION_METHOD_NAMES = ("popularity", "cooccurrence", "item-knn", "sknn", "v-sknn", "recency",
                        "gru")
FORMATS = ("csv", "movielens", "yoochoose", "session-tsv", "diginetica", "otto", "tianchi",
           "online-retail", "tmall")


from deeprec_edge.cli import UserError, _check_writable, json_text  # noqa: E402  (one definition of each)
from deeprec_edge import _checks as C  # noqa: E402  (one range per setting, both commands)
from .compress import PRESETS  # noqa: E402  (numpy only)


def _err(msg: str) -> None:
    print(f"deeprec-train: error: {msg}", file=sys.stderr)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _check_extra() -> None:
    import importlib.util
    missing = [m for m in _EXTRA_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"deeprec-train needs the trainer extra, which is not installed "
                        f"(missing: {', '.join(missing)}); install it with: {INSTALL_HINT}")


# --------------------------------------------------------------------------
# reading logs
# --------------------------------------------------------------------------

def _guess_format(path: str) -> str:
    from .data import guess_format_from_header
    by_header = guess_format_from_header(path)     # online-retail, tmall: by their header line
    if by_header is not None:
        return by_header
    name = os.path.basename(path).lower()
    for suffix in (".gz", ".bz2", ".xz", ".zip"):
        if name.endswith(suffix) and not name.endswith(".jsonl" + suffix):
            name = name[: -len(suffix)]
    if name == "u.data" or name.startswith("ratings.") or name.startswith("ml-"):
        return "movielens"
    if name.endswith(".jsonl") or name.endswith(".jsonl.gz"):
        return "otto"
    if name.startswith("yoochoose-clicks") and name.endswith(".dat"):
        return "yoochoose"
    if name.startswith("userbehavior"):
        return "tianchi"
    if "item-views" in name or "train-purchases" in name:
        return "diginetica"
    if name.endswith(".txt") or name.endswith(".tsv"):
        try:
            with open(path, "r", encoding="utf-8", errors="replace") as f:
                head = f.readline()
            if "SessionId" in head.split("\t"):
                return "session-tsv"
        except OSError:
            pass
    if name.endswith(".csv"):
        return "csv"
    raise UserError(f"cannot tell the format of {path}; give --format "
                    f"({', '.join(FORMATS)})")


def _reader_kwargs(a, fmt: str) -> Dict[str, Any]:
    kw: Dict[str, Any] = {"on_missing": a.on_missing}
    gap = None if a.no_session_gap else a.session_gap
    if fmt == "csv":
        # columns not given are detected from the header (data.detect_columns)
        kw.update(item_col=a.item_col, time_col=a.time_col, user_col=a.user_col,
                  session_col=a.session_col, sep=_sep(a.sep or ","), header=not a.no_header,
                  time_unit=a.time_unit, session_gap=gap)
        if a.names:
            kw["names"] = [n.strip() for n in a.names.split(",")]
    elif fmt == "session-tsv":
        kw.update(session_col=a.session_col or "SessionId", item_col=a.item_col or "ItemId",
                  time_col=a.time_col or "Time", sep=_sep(a.sep or "\t"),
                  time_unit="s" if a.time_unit == "auto" else a.time_unit)
    elif fmt == "movielens":
        kw.update(min_rating=a.min_rating, session_gap=gap)
    elif fmt == "yoochoose":
        pass
    elif fmt == "diginetica":
        kw.update(users=a.diginetica_users, session_gap=gap)
    elif fmt == "otto":
        kw.update(event_types=tuple(t.strip() for t in a.event_types.split(",")),
                  as_sessions=a.otto_sessions, session_gap=gap)
    elif fmt == "tianchi":
        kw.update(behaviors=tuple(t.strip() for t in a.behaviors.split(",")), session_gap=gap)
    elif fmt == "online-retail":
        kw.update(session_gap=gap)
    elif fmt == "tmall":
        kw.update(action_types=tuple(t.strip() for t in a.action_types.split(",")),
                  year=a.year, session_gap=gap)
    return kw


def _read_summary(inter) -> str:
    """What was skipped while reading (for the read summary line)."""
    info = inter.info
    parts = []
    n = int(info.get("n_missing_values", 0))
    if n:
        detail = (f" ({int(info['n_no_customer']):,} without CustomerID)"
                  if info.get("n_no_customer") else "")
        parts.append(f"{n:,} rows with a missing value{detail}")
    n = int(info.get("n_events_skipped", 0))
    if n:
        why = info.get("events_skipped_reason")
        parts.append(f"{n:,} filtered out" + (f" ({why})" if why else ""))
    n = int(info.get("n_unknown_items", 0))
    if n:
        parts.append(f"{n:,} on unknown items")
    out = f"; skipped {', '.join(parts)}" if parts else ""
    detected = info.get("columns_detected")
    if detected:
        cols = info.get("columns", {})
        out += "; columns " + ", ".join(f"{r}={cols[r]}" for r in ("user", "session", "item", "time")
                                         if r in cols) + " (detected from the header)"
    return out


def _when(s: Optional[str]) -> Any:
    """A cutoff given on the command line: unix seconds or a date/datetime text."""
    if s is None:
        return None
    try:
        return float(s)
    except ValueError:
        return s


def _sep(s: str) -> str:
    return {"\\t": "\t", "tab": "\t", "comma": ",", "semicolon": ";"}.get(s, s)


def _read(a, path: str, item_vocab=None):
    from .data import read_interactions
    if not os.path.exists(path):
        raise UserError(f"{path}: no such file")
    fmt = a.format if a.format != "auto" else _guess_format(path)
    kw = _reader_kwargs(a, fmt)
    if item_vocab is not None:
        kw["item_vocab"] = item_vocab
    t0 = time.perf_counter()
    try:
        inter = read_interactions(path, fmt, **kw)
    except UnicodeDecodeError as e:
        # e.g. a model file given as the log: the reader's message names no file
        raise UserError(f"{path}: not {fmt} text ({e.encoding} cannot decode byte "
                        f"{e.object[e.start:e.start + 1]!r} at position {e.start}); is this "
                        f"the click log?") from None
    inter.info.setdefault("source", path)
    inter.info["source"] = path
    inter.info.setdefault("format", fmt)
    dt = time.perf_counter() - t0
    if not a.quiet:
        _say(f"read {path} ({fmt}): {inter.n_events:,} clicks, {inter.n_items:,} items, "
             f"{inter.n_users:,} {inter.user_kind}s in {dt:.1f} s{_read_summary(inter)}")
    return inter


def _preprocess(a, inter, *, filter_items: bool = True):
    from .data import filter_support, remove_consecutive_repeats
    if a.remove_repeats:
        inter = remove_consecutive_repeats(inter)
    if filter_items and (a.min_item_support > 1 or a.min_session_length > 1
                         or a.min_user_events > 1):
        inter = filter_support(inter, min_item_support=a.min_item_support,
                               min_session_length=a.min_session_length,
                               min_user_events=a.min_user_events)
    if len(inter) == 0:
        raise UserError("no clicks left after preprocessing (lower --min-item-support / "
                        "--min-session-length)")
    return inter


def _reader_args(p, *, default_format: str = "auto", min_item_support: int = 5,
                 min_session_length: int = 2, user_filter: bool = True) -> None:
    g = p.add_argument_group("reading the log")
    g.add_argument("--format", choices=("auto",) + FORMATS, default=default_format,
                   help=f"log format (default {default_format}"
                        + ("" if default_format == "auto" else "; auto") + ": guessed from the "
                        "header line: the UCI Online Retail header -> online-retail, the Tmall "
                        "user_log_format1 header -> tmall; else from the file name: "
                        "u.data/ratings.* -> movielens, *.jsonl -> otto, "
                        "yoochoose-clicks*.dat -> yoochoose, UserBehavior* -> tianchi, "
                        "a .txt/.tsv with a SessionId header -> session-tsv, *.csv -> csv)")
    g.add_argument("--user-col", help="csv: user id column (default: detected from the header: "
                   "user_id, userId, user, customer_id, CustomerID, visitorid, ...)")
    g.add_argument("--item-col", help="csv/session-tsv: item id column (csv default: detected: "
                   "item_id, itemId, item, movieId, product_id, StockCode, aid, ...; "
                   "session-tsv: ItemId)")
    g.add_argument("--time-col", help="csv/session-tsv: timestamp column (csv default: detected: "
                   "timestamp, time, date, datetime, ts, InvoiceDate, ...; session-tsv: Time)")
    g.add_argument("--session-col", help="csv/session-tsv: session id column (csv default: "
                   "detected: session_id, sessionId, SessionId, session; session-tsv: SessionId)")
    g.add_argument("--sep", help="csv/session-tsv: field separator (',' / tab; 'tab' and "
                   "'\\t' mean a tab)")
    g.add_argument("--no-header", action="store_true", help="csv: the file has no header; "
                   "name the columns with --names")
    g.add_argument("--names", help="csv: comma-separated column names of a file without header")
    g.add_argument("--time-unit", default="auto", choices=("auto", "iso", "s", "ms", "us", "ns"),
                   help="csv/session-tsv: timestamp unit (default auto: ISO text or numbers "
                        "by magnitude; session-tsv: s)")
    g.add_argument("--min-rating", type=C.Float(), help="movielens: keep ratings >= this")
    g.add_argument("--event-types", default="clicks",
                   help="otto: comma-separated event types kept (clicks,carts,orders; "
                        "default clicks)")
    g.add_argument("--otto-sessions", action="store_true",
                   help="otto: keep each OTTO session as a session (default: as a user with "
                        "sessions by time gap)")
    g.add_argument("--behaviors", default="pv",
                   help="tianchi: comma-separated behaviours that count as clicks "
                        "(pv,buy,cart,fav; default pv)")
    g.add_argument("--diginetica-users", action="store_true",
                   help="diginetica: users as the unit (rows without userId dropped)")
    g.add_argument("--action-types", default="click",
                   help="tmall: comma-separated action types kept (click,cart,purchase,favourite "
                        "or 0-3; default click)")
    g.add_argument("--year", type=C.Int(1970, 2200), default=2014,
                   help="tmall: the year of the MMDD day stamps (default 2014)")
    g.add_argument("--on-missing", choices=("skip", "error"), default="skip",
                   help="a row with an empty used field: skip it and count it in the read "
                        "summary (default), or stop with an error naming the line")
    g = p.add_argument_group("preprocessing")
    g.add_argument("--session-gap", type=C.Float(0, lo_open=True), default=3600.0,
                   help="seconds: a longer gap between a user's clicks starts a new session "
                        "(default 3600); also stored in the model file")
    g.add_argument("--no-session-gap", action="store_true",
                   help="one session per user (no time-gap rule); the model file then tells "
                        "devices not to cut sessions either (session_gap_seconds 1e12)")
    g.add_argument("--remove-repeats", action="store_true",
                   help="drop a click on the same item as the previous click of the session")
    g.add_argument("--min-item-support", type=C.Int(1, 2 ** 31 - 1), default=min_item_support,
                   help=f"drop items with fewer clicks, iteratively (default {min_item_support})")
    g.add_argument("--min-session-length", type=C.Int(1, 2 ** 31 - 1), default=min_session_length,
                   help=f"drop shorter sessions, iteratively (default {min_session_length})")
    if user_filter:     # evaluate filters users by its protocol's own counts instead
        g.add_argument("--min-user-events", type=C.Int(0, 2 ** 31 - 1), default=0,
                       help="drop users with fewer clicks, iteratively (default 0: off)")


# --------------------------------------------------------------------------
# the model / training flags
# --------------------------------------------------------------------------

_FIT_FLAGS = {  # flag dest -> (FitConfig path)
    "hidden": "hidden", "embedding": "embedding", "dim": "dim", "activation": "activation",
    "head": "head", "tied": "tied", "carry_state": "carry_state", "init_scale": "init_scale",
    "patience": "patience",
    "epochs": "train.epochs", "batch_size": "train.batch_size", "window": "train.window",
    "negatives": "train.n_negatives", "alpha": "train.alpha", "loss": "train.loss",
    "logq": "train.logq", "bpreg": "train.bpreg", "optimizer": "train.optimizer",
    "lr": "train.lr", "momentum": "train.momentum", "clip_norm": "train.clip_norm",
    "dropout_in": "train.dropout_in", "dropout_hidden": "train.dropout_hidden",
    "session_parallel": "train.session_parallel", "elu": "train.elu", "seed": "train.seed",
    "prune": "prune", "prune_begin": "prune_begin", "prune_end": "prune_end",
}


def _model_args(p) -> None:
    g = p.add_argument_group("model and training (defaults: the trainer's FitConfig / "
                             "TrainConfig)")
    B = argparse.BooleanOptionalAction
    g.add_argument("--hidden", help="GRU hidden sizes, bottom first, comma-separated "
                   "(e.g. 100 or 128,64)")
    g.add_argument("--embedding", type=C.Int(1, 65536), help="input embedding size e (untied models)")
    g.add_argument("--dim", type=C.Int(0, 65536), help="user/output embedding size d (0: last hidden size)")
    g.add_argument("--activation", choices=("tanh", "identity"), help="head activation")
    g.add_argument("--head", action=B, default=None,
                   help="trainable dense head (--no-head: u = h, GRU4Rec)")
    g.add_argument("--tied", action=B, default=None, help="tie the output table to E")
    g.add_argument("--carry-state", action=B, default=None,
                   help="carry hidden states across a user's sessions")
    g.add_argument("--epochs", type=C.EPOCHS, help="training epochs")
    g.add_argument("--batch-size", type=C.BATCH_SIZE, help="mini-batch size")
    g.add_argument("--window", type=C.WINDOW, help="BPTT window (clicks)")
    g.add_argument("--negatives", type=C.NEGATIVES, help="shared negatives per mini-batch")
    g.add_argument("--alpha", type=C.ALPHA, help="negatives drawn proportionally to support^alpha")
    g.add_argument("--loss", choices=("xe", "bpr-max"), help="sampled softmax + logQ, or BPR-max")
    g.add_argument("--logq", type=C.Float(0), help="weight of the logQ correction (xe)")
    g.add_argument("--bpreg", type=C.Float(0), help="BPR-max score regularisation")
    g.add_argument("--optimizer", choices=("adagrad", "adam", "sgd"), help="optimiser")
    g.add_argument("--lr", type=C.LEARNING_RATE, help="learning rate")
    g.add_argument("--momentum", type=C.Float(0, 1, hi_open=True), help="momentum (adagrad)")
    g.add_argument("--clip-norm", type=C.Float(0), help="global gradient-norm clipping (0: off)")
    g.add_argument("--dropout-in", type=C.Float(0, 1, hi_open=True), help="dropout on the first layer's input")
    g.add_argument("--dropout-hidden", type=C.Float(0, 1, hi_open=True), help="dropout on the last layer's output")
    g.add_argument("--session-parallel", action=B, default=None,
                   help="GRU4Rec's session-parallel mini-batches")
    g.add_argument("--elu", type=C.Float(0), help="BPR-max on ELU(scores) (session-parallel only)")
    g.add_argument("--init-scale", type=C.Float(0, lo_open=True), help="scale of the uniform initialisation")
    g.add_argument("--prune", type=C.Float(0, 1, hi_open=True), metavar="FRACTION",
                   help="prune every weight matrix to this sparsity while training (magnitude, "
                        "AGP schedule, then recovery epochs; GRU/head: smallest of the matrix, "
                        "item tables: of each row); the model file stores them sparse")
    g.add_argument("--prune-begin", type=C.Float(0, 1, hi_open=True), metavar="SHARE",
                   help="share of training when pruning starts (default 0.1)")
    g.add_argument("--prune-end", type=C.Float(0, 1, lo_open=True), metavar="SHARE",
                   help="share of training when the sparsity is reached (default 0.6; the rest "
                        "is recovery)")
    g.add_argument("--patience", type=C.Int(0, 10_000), help="early stopping on validation Recall@20 "
                   "(epochs without improvement; 0: off)")
    g.add_argument("--seed", type=C.SEED, default=0, help="random seed (default 0)")
    g.add_argument("--preset", choices=("auto", "default", "gru4rec"), default="auto",
                   help="starting configuration, which other flags override: 'gru4rec' = "
                        "GRU4Rec's recipe with the settings chosen on RSC15 train_tr -> "
                        "train_valid (deeprec_edge.trainer.fit.gru4rec_config); 'default' = "
                        "windowed sampled softmax (FitConfig()); 'auto' (default): gru4rec for "
                        "session logs, default for user logs (the better of the two measured "
                        "on each kind, docs/trainer.md)")
    g.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="any other FitConfig field, e.g. --set train.momentum=0.1 "
                        "(repeatable; values parsed as JSON when possible)")


def _assign(cfg, path: str, value: Any) -> None:
    obj = cfg
    parts = path.split(".")
    for name in parts[:-1]:
        obj = getattr(obj, name)
    name = parts[-1]
    fields = {f.name for f in dataclasses.fields(obj)}
    if name not in fields:
        raise UserError(f"--set {path}: no such field (choose among "
                        f"{', '.join(sorted(fields))})")
    setattr(obj, name, value)


def _fit_config(a, log_kind: str = "user"):
    """The FitConfig of the flags.  ``--preset auto`` (the default) starts from
    the best recipe measured for the log's kind (``trainer.fit.config_for``):
    GRU4Rec's for session logs, the windowed sampled-softmax recipe for user
    logs."""
    from .fit import FitConfig, config_for, gru4rec_config
    preset = getattr(a, "preset", "auto")
    cfg = (gru4rec_config() if preset == "gru4rec" else FitConfig() if preset == "default"
           else config_for(log_kind))
    for dest, path in _FIT_FLAGS.items():
        v = getattr(a, dest, None)
        if v is None:
            continue
        if dest == "hidden":
            try:
                v = [int(x) for x in str(v).split(",") if x.strip()]
            except ValueError:
                raise UserError(f"--hidden must be comma-separated integers, got {a.hidden!r}")
            if not v or min(v) < 1:
                raise UserError(f"--hidden must be positive sizes, got {a.hidden!r}")
        _assign(cfg, path, v)
    for item in a.set:
        if "=" not in item:
            raise UserError(f"--set needs FIELD=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        try:
            val = json.loads(v)
        except ValueError:
            val = v
        _assign(cfg, k.strip(), val)
    return cfg


# --------------------------------------------------------------------------
# fit
# --------------------------------------------------------------------------

def _cmd_fit(a) -> int:
    from deeprec_edge.model import save_model
    from .data import filter_sessions, remap_items, split_by_time
    from .evaluate import train_model

    _check_outputs({"-o": a.output, "--report": a.report},
                   {"the log LOG": a.log, "the --valid log": a.valid})
    _fit_config(a)                                # the flags' errors before any reading
    inter = _read(a, a.log)
    cfg = _fit_config(a, inter.user_kind)
    if a.before is not None or a.before_quantile is not None:
        inter = split_by_time(inter, a.before_quantile or 0.8, cutoff=_when(a.before)).train
        if not a.quiet:
            _say(f"kept the {len(inter):,} clicks before the cutoff")
    inter = _preprocess(a, inter)
    valid = None
    if a.valid and a.valid_split:
        raise UserError("give --valid or --valid-split, not both")
    if a.valid_split:
        if not 0.0 < a.valid_split < 1.0:
            raise UserError(f"--valid-split must be in (0, 1), got {a.valid_split}")
        tr, va, _ = split_by_time(inter, 1.0 - a.valid_split, unit="session")
        inter = tr.compact_items()
        valid = va
    elif a.valid:
        valid = _read(a, a.valid)
    if valid is not None:
        valid = filter_sessions(remap_items(valid, inter.item_ids), 2)
        if not a.quiet:
            _say(f"validation: {len(valid):,} clicks in {valid.n_sessions:,} sessions")
    if cfg.patience and valid is None:
        raise UserError("--patience needs --valid or --valid-split")
    gap = None if a.no_session_gap else a.session_gap
    model, hist = train_model(inter, cfg, valid=valid, session_gap=gap,
                              trained_on={"source": a.log, **inter.summary()},
                              log=_say if not a.quiet else (lambda s: None),
                              progress=not a.quiet)
    save_model(model, a.output, compressed=a.compressed)
    eps = [e.get("events_per_s") for e in hist.get("epochs", []) if e.get("events_per_s")]
    summary = {"output": a.output, "items": model.n_items, "clicks": len(inter),
               "epochs": len(hist.get("epochs", [])), "seconds": round(hist["seconds"], 2),
               "clicks_per_s": round(float(sum(eps) / len(eps)), 1) if eps else None,
               "fingerprint": model.fingerprint()}
    last = (hist.get("epochs") or [{}])[-1]
    if "recall@20" in last:
        summary["valid_recall@20"] = last["recall@20"]
        summary["valid_mrr@20"] = last.get("mrr@20")
    if a.report:
        from .evaluate import write_json
        write_json({"summary": summary, "fit": hist, "config": model.config}, a.report)
    print(json_text(summary) if a.json else
          f"wrote {a.output}: {model.n_items:,} items, {summary['epochs']} epochs on "
          f"{len(inter):,} clicks in {hist['seconds']:.1f} s "
          f"({summary['clicks_per_s'] or 0:,.0f} clicks/s)")
    return 0


# --------------------------------------------------------------------------
# candidates
# --------------------------------------------------------------------------

def _candidate_sets(a, hist, model):
    from .candidates import item_item_cf, user_candidates
    cf = None if a.no_cf else item_item_cf(hist, a.cf_neighbors, by=a.by, shrink=a.shrink)
    emb = None
    if model is not None and not a.no_embedding:
        from deeprec_edge.quant import dequantize
        emb = dequantize(model.out_table)     # the cloud side: float32 values of any storage
    if cf is None and emb is None:
        raise UserError("nothing to build candidates from: CF is off (--no-cf) and there is "
                        "no --model for embedding neighbours")
    pop = model.popularity if model is not None else None
    return user_candidates(hist, a.n, cf=cf, embeddings=emb, metric=a.metric,
                           n_recent=a.n_recent, recency_decay=a.decay,
                           exclude_seen=not a.keep_seen, popularity=pop)


def _cmd_candidates(a) -> int:
    from deeprec_edge.model import load_model
    from .candidates import candidate_recall
    from .data import filter_support, remap_items, split_by_time

    if not a.output and not a.csv:
        raise UserError("give -o FILE.npz and/or --csv FILE.csv")
    _check_outputs({"-o": a.output, "--csv": a.csv, "--report": a.report},
                   {"the log LOG": a.log, "the --model file": a.model, "the --test log": a.test})
    model = load_model(a.model) if a.model else None

    def prepare(log):
        if model is None:
            return _preprocess(a, log)
        log = _preprocess(a, remap_items(log, model.item_ids), filter_items=False)
        if a.min_item_support > 1 or a.min_session_length > 1:
            log = filter_support(log, min_item_support=a.min_item_support,
                                 min_session_length=a.min_session_length, compact=False)
        return log

    raw = _read(a, a.log)
    inter = prepare(raw)
    report: Dict[str, Any] = {"log": a.log, "users": None, "items": inter.n_items}
    sessions_only = inter.user_kind != "user"
    if sessions_only and (a.test or a.eval_quantile):
        # sets are per session there, and the later clicks are other (new) sessions: a
        # recall would count sets that cannot exist, not how good they are
        report["recall_skipped"] = ("a session log: its units are sessions, and the clicks "
                                    "after the cutoff (or in --test) are new sessions with no "
                                    "set; measure candidate recall on a user-level log")
    if a.test and not sessions_only:
        test = _read(a, a.test, item_vocab=inter.item_ids)
        cands = _candidate_sets(a, inter, model)
        rec = candidate_recall(cands, test)
        report["recall"] = dict(rec, measured_on=a.test)
    else:
        cands = None
        if a.eval_quantile and not sessions_only:
            _, post, cut = split_by_time(inter, a.eval_quantile)
            # the sets are built as the cloud would have built them at the cutoff: from the
            # clicks before it, filtered alone (later clicks must not keep a rare item)
            pre = prepare(raw.subset(raw.times < cut))
            c_pre = _candidate_sets(a, pre, model)
            rec = candidate_recall(c_pre, post)
            report["recall"] = dict(rec, measured_on=f"clicks after the {a.eval_quantile} time "
                                                    f"quantile, sets built before it")
        cands = _candidate_sets(a, inter, model)
    report["users"] = len(cands)
    report["mean_set_size"] = float(cands.sizes().mean()) if len(cands) else 0.0
    if a.output:
        cands.to_npz(a.output)
    if a.csv:
        cands.to_csv(a.csv)
    if a.report:
        from .evaluate import write_json
        write_json(report, a.report)
    lines = [f"candidate sets for {len(cands):,} users, {report['mean_set_size']:.1f} items on "
             f"average" + "".join(f"; wrote {p}" for p in (a.output, a.csv) if p)]
    if "recall_skipped" in report:
        lines.append(f"candidate recall not measured: {report['recall_skipped']}")
    if "recall" in report:
        r = report["recall"]
        lines.append(f"candidate recall: {r['recall']:.4f} of {r['n_events']:,} next clicks "
                     f"(per-user mean {r['user_recall']:.4f}; {r['n_users_without_set']} users "
                     f"without a set) -- {r['measured_on']}")
    print(json_text(report, default=float) if a.json else "\n".join(lines))
    return 0


# --------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------

def _cmd_export(a) -> int:
    from .export import export_model, read_item_list
    if not a.output and not a.onnx:
        raise UserError("give -o OUTPUT (a model file) and/or --onnx OUT.onnx")
    inputs_named = {"the model MODEL": a.model,
                    **{f"the --items file {p}": p for p in (a.items or [])},
                    **{f"the --inputs file {p}": p for p in (a.inputs or [])}}
    _check_outputs({"-o": a.output, "--onnx": a.onnx}, inputs_named)
    if not a.output:
        return _write_onnx(a.model, a.onnx, a.json)
    items = inputs = None
    if a.items:
        items = []
        for path in a.items:
            items += read_item_list(path)
    if a.inputs:
        inputs = []
        for path in a.inputs:
            inputs += read_item_list(path)
    try:
        info = export_model(a.model, a.output, items=items, top_popular=a.top_popular,
                            compressed=a.compressed, dtype=a.dtype, prune=a.prune,
                            compress=a.compress, inputs=inputs)
    except ValueError as e:
        raise UserError(str(e)) from None
    if a.json:
        print(json_text(info))
    else:
        what = (f"sliced to {info['items']:,} of {info['source_items']:,} items"
                if info["sliced"] else f"{info['items']:,} items")
        kinds = sorted(set(info["storage"].values()))
        msg = (f"wrote {info['output']} ({what}, {info['bytes']:,} bytes"
               f"{', deflated' if info['deflated'] else ''}; matrices {', '.join(kinds)}"
               f"{'; pruned %.0f%%' % (100 * info['prune']) if info['prune'] else ''})")
        if info["unknown"]:
            msg += (f"; {info['unknown']} requested ids not in the catalogue (e.g. "
                    f"{', '.join(info['unknown_examples'])})")
        if info["sliced"] and info["inputs_given"]:
            msg += (f"; {info['input_items_kept']:,} of them only as inputs (items the "
                    f"devices click)")
            if info["inputs_unknown"]:
                msg += (f"; {info['inputs_unknown']:,} --inputs clicks on items not in the "
                        f"catalogue")
        print(msg)
        if info["sliced"] and not info["inputs_given"]:
            print(f"note: a device that clicks an item outside these {info['items']:,} loses "
                  f"that click (its input row is not in the slice; fine-tuning needs clicks "
                  f"on kept items): keep the items its users click with --inputs "
                  f"(their histories, or the training log)")
        if not info["deflated"] and any(st.startswith("int3") for st in info["storage"].values()):
            print("note: int3 is stored like int4 (two values a byte), so this undeflated file "
                  "is no smaller; its saving is in a deflated file: add --compressed")
    if a.onnx:
        return _write_onnx(a.output, a.onnx, a.json)
    return 0


def _write_onnx(model_path: str, out: str, as_json: bool) -> int:
    from deeprec_edge.model import load_model
    from .onnx_export import export_onnx
    info = export_onnx(load_model(model_path), out)
    if as_json:
        print(json_text(info))
    else:
        print(f"wrote {info['session']} (session graph, {info['session_bytes']:,} bytes) and "
              f"{info['step']} (step graph, {info['step_bytes']:,} bytes), ONNX opset "
              f"{info['opset']}")
    return 0


# --------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------

def _methods(s: str, allowed) -> tuple:
    ms = tuple(m.strip() for m in s.split(",") if m.strip())
    bad = [m for m in ms if m not in allowed]
    if bad:
        raise UserError(f"unknown method(s) {', '.join(bad)}; choose among {', '.join(allowed)}")
    return ms


def _ks(s: str) -> tuple:
    try:
        ks = tuple(sorted({int(x) for x in s.split(",") if x.strip()}))
    except ValueError:
        raise UserError(f"--ks must be comma-separated integers, got {s!r}")
    if not ks or ks[0] < 1:
        raise UserError(f"--ks must be positive, got {s!r}")
    return ks


def _not_an_input(output, inputs) -> None:
    """Refuse an output that is one of the command's inputs (also through
    links): a user error, nothing read or written."""
    try:
        C.check_output_not_input(output, inputs)
    except ValueError as e:
        raise UserError(str(e)) from None


def _same_path(a: str, b: str) -> bool:
    """``a`` and ``b`` name one file: the same file on disk (links too) or,
    for paths that do not exist yet, the same resolved path."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return os.path.realpath(a) == os.path.realpath(b)


def _check_outputs(outputs: Dict[str, Optional[str]], inputs: Dict[str, Optional[str]]) -> None:
    """Before any reading: no output is an input, no two outputs are one
    file (the second write would replace the first), and every output can
    be written (a missing directory fails now, not after the run)."""
    for flag, p in outputs.items():
        if p == "":
            raise UserError(f"{flag}: the file name is empty")
    given = [(flag, p) for flag, p in outputs.items() if p]
    for i, (flag, p) in enumerate(given):
        _not_an_input(p, inputs)
        for flag2, p2 in given[:i]:
            if _same_path(p, p2):
                raise UserError(f"{flag2} and {flag} both name {p}: give each output its own "
                                f"file")
        _check_writable(p)


def _check_output_paths(a) -> None:
    """Before any work: every output path writable, and the plot's image
    format one matplotlib writes (so a typo does not cost a whole run)."""
    ins = {"the log": getattr(a, "log", None), "the --model file": getattr(a, "model", None),
           "TRAIN": getattr(a, "train", None), "TEST": getattr(a, "test", None)}
    _check_outputs({"--report": a.json_report, "--markdown": a.markdown, "--plot": a.plot}, ins)
    if a.plot:
        try:
            from matplotlib.backend_bases import FigureCanvasBase
        except ImportError:
            return                                 # said (and skipped) after the run
        ext = os.path.splitext(a.plot)[1].lower().lstrip(".") or "png"
        formats = FigureCanvasBase.get_supported_filetypes()
        if ext not in formats:
            raise UserError(f"--plot {a.plot}: unknown image format {ext!r} "
                            f"(use one of {', '.join(sorted(formats))})")


def _outputs(a, report) -> None:
    from .evaluate import markdown_report, plot_report, write_json
    report["command"] = ["deeprec-train"] + list(a._argv)
    md = markdown_report(report)
    if a.json_report:
        write_json(report, a.json_report)
    if a.markdown:
        from deeprec_edge._atomic import atomic_write
        atomic_write(a.markdown, lambda f: f.write(md.encode("utf-8")))
    if a.plot:
        if not plot_report(report, a.plot):
            _say("matplotlib is not installed: no plot written (pip install matplotlib)")
    if a.json:
        print(json_text(report))
    else:
        print(md, end="")


def _output_args(p) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--report", dest="json_report", metavar="FILE",
                   help="write the full report as JSON (keys in docs/trainer.md)")
    g.add_argument("--json", action="store_true",
                   help="print the full report as JSON on stdout instead of the tables")
    g.add_argument("--markdown", metavar="FILE", help="also write the markdown tables here")
    g.add_argument("--plot", metavar="FILE.png",
                   help="bar chart of Recall@20/MRR@20 with intervals (needs matplotlib)")
    g.add_argument("--ks", default="5,10,20",
                   help="cutoffs k (default 5,10,20; 20 is always added: the report is read "
                        "at Recall@20 / MRR@20)")
    g.add_argument("--ci", choices=("auto", "normal", "bootstrap"), default="auto",
                   help="95%% interval over users (sessions protocol: events): normal "
                        "approximation or bootstrap percentile; auto (default): bootstrap under "
                        "100 users, else normal")


def _cmd_evaluate(a) -> int:
    from deeprec_edge.model import load_model
    from .evaluate import DEEPREC_METHODS, DeepRecSettings, FinetuneSettings, evaluate_deeprec

    _check_output_paths(a)
    cfg = _fit_config(a, "user")                  # the DeepRec protocol: a user log
    parts = None
    if a.ft_parts is not None:
        parts = tuple(x.strip() for x in a.ft_parts.split(",") if x.strip() and x.strip() != "none")
    ft = FinetuneSettings(parts=parts, l2=a.ft_l2, holdout=a.ft_holdout,
                          max_events=a.ft_max_events, epochs=a.ft_epochs, lr=a.ft_lr,
                          window=a.ft_window, batch_size=a.ft_batch_size,
                          n_negatives=a.ft_negatives, alpha=a.ft_alpha,
                          optimizer=a.ft_optimizer, l2_to_global=a.ft_l2_global,
                          train_gru=False if a.ft_head_only else None,
                          use_candidates=a.ft_candidates)
    st = DeepRecSettings(
        quantile=a.quantile, cutoff=_when(a.cutoff), test_quantile=a.test_quantile,
        test_cutoff=_when(a.test_cutoff), split=a.split, finetune_share=a.finetune_share,
        min_finetune_clicks=a.min_finetune_clicks, min_test_events=a.min_test_events,
        min_item_support=a.min_item_support, min_session_length=a.min_session_length,
        methods=_methods(a.methods, DEEPREC_METHODS), ks=_ks(a.ks),
        n_candidates=a.candidates, cf_neighbors=a.cf_neighbors,
        candidate_neighbors=a.candidate_neighbors, candidate_recent=a.candidate_recent,
        candidate_memory=a.candidate_memory, candidate_ranked=a.candidate_ranked,
        exclude_seen=a.exclude_seen, session_starts=a.session_starts, max_users=a.max_users,
        validation=a.validation, ci=a.ci, seed=a.seed, finetune=ft)
    model = load_model(a.model) if a.model else None
    inter = _read(a, a.log)
    from .data import remove_consecutive_repeats
    if a.remove_repeats:
        inter = remove_consecutive_repeats(inter)
    report = evaluate_deeprec(inter, st, cfg, model=model,
                              session_gap=None if a.no_session_gap else a.session_gap,
                              log=_say if not a.quiet else (lambda s: None),
                              progress=not a.quiet)
    _outputs(a, report)
    return 0


def _cmd_evaluate_sessions(a) -> int:
    from deeprec_edge.model import load_model
    from .evaluate import SESSION_METHODS, evaluate_sessions

    _check_output_paths(a)
    _fit_config(a)
    model = load_model(a.model) if a.model else None
    train = _preprocess(a, _read(a, a.train))
    cfg = _fit_config(a, train.user_kind)
    test = _read(a, a.test, item_vocab=train.item_ids)
    if a.remove_repeats:
        from .data import remove_consecutive_repeats
        test = remove_consecutive_repeats(test)
    report = evaluate_sessions(train, test, cfg, methods=_methods(a.methods, SESSION_METHODS),
                               model=model, ks=_ks(a.ks),
                               ci="normal" if a.ci == "auto" else a.ci, seed=a.seed,
                               session_gap=None if a.no_session_gap else a.session_gap,
                               log=_say if not a.quiet else (lambda s: None),
                               progress=not a.quiet)
    _outputs(a, report)
    return 0


# --------------------------------------------------------------------------
# demo-data
# --------------------------------------------------------------------------

def _cmd_demo_data(a) -> int:
    from .demo import build_demo
    out = a.output
    if out is None:
        out = os.path.join("deeprec_edge", "data")
        if not os.path.isdir("deeprec_edge"):
            raise UserError("run from the repository root (no ./deeprec_edge here) or give -o DIR")
    os.makedirs(out, exist_ok=True)
    build_demo(out, seed=a.seed, log=_say if not a.quiet else (lambda s: None))
    return 0


# --------------------------------------------------------------------------
# parser
# --------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="deeprec-train",
        description="Cloud side of deeprec-edge: train the global GRU model on consented "
                    "click logs, build candidate sets, export model files, and evaluate "
                    "(the DeepRec protocol and GRU4Rec's session protocol). Needs the "
                    f"trainer extra: {INSTALL_HINT}.")
    try:
        from deeprec_edge import __version__ as v
    except Exception:  # pragma: no cover - the runtime's compiled part is missing
        v = "?"
    p.add_argument("--version", action="version", version=f"deeprec-train {v}")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")
    sub.required = True

    f = sub.add_parser("fit", help="train the global model and write weights.npz",
                       description="Read a click log, preprocess it (sessions, support "
                                   "filtering) and train the global GRU model with the C core; "
                                   "write the runtime's model file.")
    f.add_argument("log", help="click log")
    f.add_argument("-o", "--output", required=True, help="model file to write (weights.npz)")
    f.add_argument("--valid", help="validation log (same format; mapped onto the training items)")
    f.add_argument("--valid-split", type=C.Float(0, 1, lo_open=True, hi_open=True),
                   help="hold out the newest share of sessions (by their last click) for "
                        "validation, e.g. 0.1")
    f.add_argument("--before", help="train only on clicks before this date/unix time "
                   "(the DeepRec cutoff)")
    f.add_argument("--before-quantile", type=C.Float(0, 1, lo_open=True, hi_open=True),
                   help="train only on clicks before this time quantile (e.g. 0.8)")
    f.add_argument("--compressed", action="store_true", help="deflate the npz")
    f.add_argument("--report", help="write the fit history (losses, clicks/s, validation) as JSON")
    f.add_argument("--json", action="store_true", help="print the summary as JSON")
    f.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    _reader_args(f)
    _model_args(f)
    f.set_defaults(func=_cmd_fit)

    c = sub.add_parser("candidates", help="per-user candidate sets (CF + embedding neighbours)",
                       description="Candidate sets per user: the union (reciprocal-rank fusion) "
                                   "of item-item CF on session co-occurrence and nearest "
                                   "neighbours of the user's recent items in the model's "
                                   "output-embedding space; topped up with popular items.")
    c.add_argument("log", help="click log the sets are built from")
    c.add_argument("--model", help="model file: its catalogue and output embeddings "
                   "(without it: CF only, on the log's own items)")
    c.add_argument("-o", "--output", help="write the sets as npz")
    c.add_argument("--csv", help="write the sets as CSV user_id,item_id,rank,score")
    c.add_argument("-n", type=C.Int(1, 1_000_000), default=100, help="items per user (default 100)")
    c.add_argument("--cf-neighbors", type=C.Int(1, 100_000), default=100, help="CF neighbours per item "
                   "(default 100)")
    c.add_argument("--by", choices=("session", "user"), default="session",
                   help="co-occurrence unit of CF (default session)")
    c.add_argument("--shrink", type=C.Float(0), default=0.0, help="CF cosine shrinkage (default 0)")
    c.add_argument("--no-cf", action="store_true", help="embedding neighbours only")
    c.add_argument("--no-embedding", action="store_true", help="CF only")
    c.add_argument("--metric", choices=("ip", "cosine"), default="ip",
                   help="embedding similarity (default ip, the model's own score)")
    c.add_argument("--n-recent", type=C.Int(1, 100_000), default=10, help="recent distinct items per user "
                   "(default 10)")
    c.add_argument("--decay", type=C.Float(0, 1, lo_open=True), default=0.8, help="recency weight decay (default 0.8)")
    c.add_argument("--keep-seen", action="store_true",
                   help="allow items the user already clicked")
    c.add_argument("--test", help="measure candidate recall on this log's clicks")
    c.add_argument("--eval-quantile", type=C.Float(0, 1, hi_open=True), default=0.8,
                   help="without --test: measure recall by building sets on the clicks before "
                        "this time quantile and checking the clicks after it (default 0.8; "
                        "0 = skip); the written sets use the whole log")
    c.add_argument("--report", help="write the summary as JSON")
    c.add_argument("--json", action="store_true", help="print the summary as JSON")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    _reader_args(c)
    c.set_defaults(func=_cmd_candidates)

    e = sub.add_parser("export", help="compress, prune or slice a model file for devices",
                       description="Load and validate MODEL and write it in the same format, "
                                   "optionally sliced to the listed items (rows of E, O, b, "
                                   "popularity, item_ids; GRU and head unchanged), pruned "
                                   "(one-shot magnitude) and compressed (float16, int8, int4 or "
                                   "int3 with per-row scales; docs/model-format.md).")
    e.add_argument("model", help="model file (.npz)")
    e.add_argument("-o", "--output", help="model file to write")
    e.add_argument("--onnx", metavar="OUT.onnx",
                   help="also (or only) write the inference graph as ONNX (opset 18): OUT.onnx "
                        "maps a session's items (int64 dense indices) to every item's score, "
                        "OUT.step.onnx one click with the state in and out (docs/onnx.md); of "
                        "the model written with -o when given")
    e.add_argument("--items", action="append", metavar="FILE",
                   help="keep only these items: one id per line, a CSV with an item_id column "
                        "(e.g. candidates CSV), or an npz with item_ids (candidates npz); "
                        "repeatable (union)")
    e.add_argument("--top-popular", type=C.Int(0, 2 ** 31 - 1), default=0,
                   help="also keep the N most popular items")
    e.add_argument("--inputs", action="append", metavar="FILE",
                   help="with a slice: also keep the items the devices click (a history CSV, "
                        "the training log as CSV with an item_id column, or an item list), so "
                        "their histories still read and fine-tune; repeatable")
    e.add_argument("--dtype", metavar="DTYPE",
                   help="storage of the weight matrices: float32, float16, int8, int4 or int3 "
                        "(per-row scales), for all of them or per group, e.g. "
                        "tables=int3,gru=int4,bias=float16 (groups: tables = E and O, gru, "
                        "head; bias = every bias vector, float32 or float16)")
    e.add_argument("--prune", type=C.Float(0, 1, hi_open=True), default=0.0, metavar="FRACTION",
                   help="zero this share of the smallest weights of every matrix (GRU and head: "
                        "of the matrix; item tables: of each row), one-shot; fit --prune "
                        "prunes gradually with recovery training instead")
    e.add_argument("--compress", choices=sorted(PRESETS),
                   help="a preset: 'max' = the smallest setting within 1%% of the float32 "
                        "model's Recall@20 in the README's table: tables=int3,gru=int4,"
                        "head=int4,bias=float16, deflated (--dtype overrides the groups it names, "
                        "--prune its pruning)")
    e.add_argument("--compressed", action="store_true", help="deflate the npz")
    e.add_argument("--json", action="store_true", help="print the summary as JSON")
    e.set_defaults(func=_cmd_export)

    v = sub.add_parser("evaluate", help="the DeepRec protocol on a user log",
                       description="Two global time cutoffs: the cloud trains on the clicks "
                                   "before the first; clicks between the two are seen by the "
                                   "devices only (each user's personal model fine-tunes on her "
                                   "whole history before the second, through the runtime's "
                                   "finetune); clicks after the second are the test part (next "
                                   "item, whole preceding history as input). Methods: the "
                                   "non-GRU baselines, the global model, a centralized model "
                                   "(trained on every click before the test part) and the "
                                   "personal models; paired per-user differences with "
                                   "intervals.")
    v.add_argument("log", help="click log with users")
    v.add_argument("--model", help="evaluate this global model instead of fitting one")
    v.add_argument("--quantile", type=C.Float(0, 1, lo_open=True, hi_open=True), default=0.8,
                   help="first cutoff: this time quantile of all clicks (default 0.8)")
    v.add_argument("--cutoff", help="first cutoff as a date or unix time (overrides --quantile)")
    v.add_argument("--test-quantile", type=C.Float(0, 1, lo_open=True, hi_open=True),
                   help="second cutoff (start of the test part): this time quantile of all "
                        "clicks (default: halfway from --quantile to 1, i.e. 0.9; with a "
                        "--cutoff date: the median of the clicks after it)")
    v.add_argument("--test-cutoff", help="second cutoff as a date or unix time")
    v.add_argument("--split", choices=("time", "share"), default="time",
                   help="time: the second global cutoff (default; no model trains on a click "
                        "later than a test click); share: each user's first "
                        "--finetune-share of post-cutoff clicks is on the device (and in the "
                        "centralized model's training log)")
    v.add_argument("--finetune-share", type=C.Float(0, 1, lo_open=True, hi_open=True), default=0.5,
                   help="--split share: share of each user's post-cutoff clicks on the device "
                        "(default 0.5)")
    v.add_argument("--min-finetune-clicks", type=C.Int(0, 2 ** 31 - 1), default=1,
                   help="users need this many clicks between the cutoffs (default 1)")
    v.add_argument("--min-test-events", type=C.Int(1, 2 ** 31 - 1), default=1,
                   help="users need this many test events (default 1)")
    v.add_argument("--methods", default=",".join(DEEPREC_METHOD_NAMES),
                   help="comma-separated methods (default all: "
                        + ", ".join(DEEPREC_METHOD_NAMES) + ")")
    v.add_argument("--candidates", type=C.Int(1, 1_000_000), default=500,
                   help="candidate set size: the device's part (the user's items when "
                        "returns are likely, the cloud's CF neighbours of her newest ones, the "
                        "model's ranking when her session began) then the cloud's set (CF + "
                        "embedding neighbours of her pre-cutoff clicks), then popular items; "
                        "default 500")
    v.add_argument("--cf-neighbors", type=C.Int(1, 100_000), default=100, help="CF neighbours per item for "
                   "the cloud's candidates (default 100)")
    v.add_argument("--candidate-neighbors", type=C.Int(0, 100_000), default=40,
                   help="device part: the cloud's CF neighbours of each recent item (default 40)")
    v.add_argument("--candidate-recent", type=C.Int(0, 100_000), default=10,
                   help="device part: the newest distinct items whose neighbours join "
                        "(default 10)")
    v.add_argument("--candidate-memory", type=C.Int(0, 1_000_000), default=300,
                   help="device part: at most this many of the user's own items, newest first, "
                        "when the model makes returns likely (default 300)")
    v.add_argument("--candidate-ranked", type=C.Int(0, 1_000_000), default=500,
                   help="device part: the global model's best items for the user's state when "
                        "the session began, one full scoring per session (default 500; 0: none)")
    v.add_argument("--exclude-seen", action="store_true",
                   help="never rank items the user already clicked")
    v.add_argument("--session-starts", action="store_true",
                   help="also predict the first click of a session")
    v.add_argument("--max-users", type=C.Int(1, 2 ** 31 - 1), help="evaluate a random sample of this many users")
    v.add_argument("--validation", action="store_true",
                   help="tuning mode: the test part is removed and the same protocol runs on "
                        "the clicks before it")
    g = v.add_argument_group("fine-tuning of the personal models (default: the recipe the "
                             "trainer wrote into the global model, as deeprec-edge finetune)")
    g.add_argument("--ft-parts", help="personal parts, comma-separated: offset, bias, repeat, "
                   "head, gru ('none': keep the global model)")
    g.add_argument("--ft-l2", type=C.L2_PULL, metavar="LAMBDA",
                   help="strength of the prior towards the global model")
    g.add_argument("--ft-holdout", type=C.HOLDOUT, help="per-user check: share of the newest "
                   "events held out (0: no check)")
    g.add_argument("--ft-max-events", type=C.MAX_EVENTS, help="newest events a device learns "
                   "from")
    g.add_argument("--ft-epochs", type=C.EPOCHS, help="gru part: maximum epochs")
    g.add_argument("--ft-lr", type=C.LEARNING_RATE, help="gru part: learning rate")
    g.add_argument("--ft-window", type=C.WINDOW, help="gru part: BPTT window (clicks)")
    g.add_argument("--ft-batch-size", type=C.BATCH_SIZE, help="gru part: windows per batch")
    g.add_argument("--ft-negatives", type=C.NEGATIVES,
                   help="gru part: shared negatives per batch")
    g.add_argument("--ft-alpha", type=C.ALPHA, help="gru part: popularity exponent of negatives")
    g.add_argument("--ft-optimizer", choices=list(C.OPTIMIZERS), help="gru part: optimiser")
    g.add_argument("--ft-l2-global", type=C.L2_PULL, metavar="LAMBDA",
                   help="gru part: L2 pull of the fine-tuned weights towards the global model's")
    g.add_argument("--ft-head-only", action="store_true",
                   help="gru part: train the head only (the last GRU layer stays the global "
                        "one), as deeprec-edge finetune --head-only")
    g.add_argument("--ft-candidates", action="store_true",
                   help="gru part: draw half the negatives from the user's candidate set")
    v.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    _reader_args(v, min_item_support=2, min_session_length=1, user_filter=False)
    _model_args(v)
    _output_args(v)
    v.set_defaults(func=_cmd_evaluate)

    s = sub.add_parser("evaluate-sessions", help="GRU4Rec's session protocol (train file, test file)",
                       description="Fit on TRAIN (or use --model), then rank every next click "
                                   "of TEST's sessions against all training items. Test clicks "
                                   "on items not in TRAIN are removed, then sessions shorter "
                                   "than 2.")
    s.add_argument("train", help="training sessions (default format session-tsv)")
    s.add_argument("test", help="test sessions (same format)")
    s.add_argument("--model", help="evaluate this model instead of fitting one")
    s.add_argument("--methods", default=",".join(SESSION_METHOD_NAMES),
                   help="comma-separated methods (default all: "
                        + ", ".join(SESSION_METHOD_NAMES) + ")")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    _reader_args(s, default_format="session-tsv", min_item_support=1, min_session_length=1)
    _model_args(s)
    _output_args(s)
    s.set_defaults(func=_cmd_evaluate_sessions)

    d = sub.add_parser("demo-data", help="rebuild the runtime's embedded demo model and history",
                       description="Train the small demo model on synthetic data with planted "
                                   "personal sequences and write demo_model.npz and "
                                   "demo_history.csv (trainer/demo.py).")
    d.add_argument("-o", "--output", help="directory (default ./deeprec_edge/data, run from the "
                   "repository root)")
    d.add_argument("--seed", type=C.SEED, default=0, help="random seed (default 0)")
    d.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    d.set_defaults(func=_cmd_demo_data)
    return C.show_ranges(p)   # every numeric option's --help names its range


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``deeprec-train``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    a = parser.parse_args(argv)
    a._argv = argv
    try:
        _check_extra()
        return a.func(a)
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except (UserError, ValueError, KeyError, OSError) as e:
        msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        if isinstance(e, OSError) and getattr(e, "filename", None) and str(e.filename) not in msg:
            msg = f"{e.filename}: {msg}"
        _err(msg)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

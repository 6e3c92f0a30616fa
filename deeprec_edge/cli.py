"""The ``deeprec-edge`` command (also ``python -m deeprec_edge``).

Subcommands: ``finetune``, ``recommend``, ``info``, ``demo``.  User errors
(bad files, unknown ids, unwritable paths) exit with status 2 and one line
on stderr, never a traceback.  Progress goes to stderr, and only when it is
a terminal (``--quiet`` silences it); results go to stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import List, Optional

import numpy as np

__all__ = ["main"]


class UserError(Exception):
    """An error caused by the input, reported as one line."""


def _err(msg: str) -> None:
    print(f"deeprec-edge: error: {msg}", file=sys.stderr)


class _Progress:
    def __init__(self, quiet: bool):
        self.on = not quiet and sys.stderr.isatty()

    def __call__(self, msg: str) -> None:
        if self.on:
            print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# finetune
# --------------------------------------------------------------------------


def _cmd_finetune(a) -> int:
    from .api import finetune
    from .model import load_model, save_model
    from .history import read_history

    model = load_model(a.weights)
    out = a.output or _default_output(a.weights)
    _check_writable(out)
    hist = read_history(a.history, model=model, item_col=a.item_col, time_col=a.time_col,
                        session_col=a.session_col)
    cands = _read_candidates(a.candidates, model, a.user) if a.candidates else None
    prog = _Progress(a.quiet)
    res = finetune(model, hist, candidates=cands, epochs=a.epochs, seed=a.seed,
                   window=a.window, batch_size=a.batch_size, n_negatives=a.negatives,
                   lr=a.lr, optimizer=a.optimizer, holdout=a.holdout,
                   early_stopping=not a.no_early_stopping, l2_to_global=a.l2_global,
                   train_gru=not a.head_only, progress=prog)
    save_model(res.model, out)
    s = res.summary
    lines = [
        f"personal model written to {out}",
        f"clicks: {s['clicks_read']} read, {s['clicks_used']} used, "
        f"{s['clicks_skipped_unknown']} skipped (unknown items), "
        f"{s['clicks_older_than_model']} older than the model",
        f"loss (sampled softmax): first epoch {s['loss_first_epoch']:.4f}, "
        f"last epoch {s['loss_last_epoch']:.4f}",
    ]
    if s["heldout_events"]:
        lines.append(f"held-out newest clicks ({s['heldout_events']} events): Recall@20 "
                     f"{s['recall20_before']:.3f} -> {s['recall20_after']:.3f}, MRR@20 "
                     f"{s['mrr20_before']:.3f} -> {s['mrr20_after']:.3f} "
                     f"(kept epoch {s['best_epoch']})")
    lines.append(f"time: {s['seconds']:.2f} s")
    if a.format == "json":
        print(json.dumps({"output": out, **s}, indent=2, default=float))
    else:
        print("\n".join(lines))
    return 0


def _default_output(weights: str) -> str:
    base = os.path.basename(weights)
    stem = base[:-4] if base.endswith(".npz") else base
    return os.path.join(os.path.dirname(weights) or ".", f"{stem}.personal.npz")


def _check_writable(path: str) -> None:
    d = os.path.dirname(os.path.abspath(path)) or "."
    if not os.path.isdir(d):
        raise UserError(f"cannot write {path}: directory {d} does not exist")
    if not os.access(d, os.W_OK):
        raise UserError(f"cannot write {path}: directory {d} is not writable")
    if os.path.isdir(path):
        raise UserError(f"cannot write {path}: it is a directory")


def _read_candidates(path: str, model, user: Optional[str] = None):
    from .candidates import read_candidates
    return read_candidates(path, model, user=user)


# --------------------------------------------------------------------------
# recommend
# --------------------------------------------------------------------------


def _cmd_recommend(a) -> int:
    from .api import recommend
    from .model import load_model
    from .history import read_history

    model = load_model(a.model)
    hist = None
    if a.history:
        hist = read_history(a.history, model=model, item_col=a.item_col, time_col=a.time_col,
                            session_col=a.session_col)
    cands = _read_candidates(a.candidates, model, a.user) if a.candidates else None
    ids, scores = recommend(model, hist, k=a.k, candidates=cands,
                            exclude_clicked=not a.include_clicked)
    _print_table(ids, scores, a.format)
    return 0


def _print_table(ids, scores, fmt: str) -> None:
    rows = [(int(r) + 1, (x.item() if isinstance(x, np.generic) else x), float(s))
            for r, (x, s) in enumerate(zip(ids, scores))]
    if fmt == "json":
        print(json.dumps([{"rank": r, "item_id": i, "score": s} for r, i, s in rows], indent=2))
    elif fmt == "csv":
        print("rank,item_id,score")
        for r, i, s in rows:
            print(f"{r},{i},{s:.6g}")
    else:
        w = max([len(str(i)) for _, i, _ in rows] + [7])
        print(f"{'rank':>4}  {'item_id':<{w}}  {'score':>9}")
        for r, i, s in rows:
            print(f"{r:>4}  {str(i):<{w}}  {s:>9.4f}")


# --------------------------------------------------------------------------
# info
# --------------------------------------------------------------------------


def _cmd_info(a) -> int:
    from .model import load_model
    m = load_model(a.model)
    info = m.describe()
    if a.format == "json":
        print(json.dumps(info, indent=2, default=str))
    else:
        for k, v in info.items():
            print(f"{k:>22}: {v}")
    return 0


# --------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------


def _cmd_demo(a) -> int:
    from .demo import run_demo
    return run_demo(quiet=a.quiet, k=a.k, seed=a.seed, output=a.output)


# --------------------------------------------------------------------------
# parser
# --------------------------------------------------------------------------


def _history_args(p) -> None:
    p.add_argument("--item-col", help="history column with item ids (default: auto-detect "
                   "item_id/item/itemId/aid)")
    p.add_argument("--time-col", help="history column with timestamps (default: auto-detect "
                   "timestamp/time/ts); ISO-8601 or unix seconds/milliseconds")
    p.add_argument("--session-col", help="history column with session ids (default: "
                   "auto-detect session_id/session; else sessions by time gap)")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    p = argparse.ArgumentParser(
        prog="deeprec-edge",
        description="On-device sequential recommender: fine-tune a GRU next-item model on "
                    "private clicks and rank items. Nothing leaves this machine.")
    p.add_argument("--version", action="version", version=f"deeprec-edge {__version__}")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")
    sub.required = True

    f = sub.add_parser("finetune", help="fine-tune a personal model on a click history",
                       description="Fine-tune the last GRU layer and the head of WEIGHTS on "
                                   "the clicks in HISTORY (CSV with a header: item id, "
                                   "timestamp, optional session id). WEIGHTS may be a personal "
                                   "model: then only clicks newer than its last timestamp "
                                   "are used (continual fine-tuning).")
    f.add_argument("weights", help="global or personal model (.npz)")
    f.add_argument("history", help="click history CSV")
    f.add_argument("-o", "--output", help="where to write the personal model "
                   "(default: WEIGHTS with .personal.npz); written atomically")
    f.add_argument("--candidates", help="candidate file (CSV user_id,item_id[,...] or .npz "
                   "from the trainer, or one item id per line): negatives are also drawn "
                   "from it and held-out Recall@20 ranks within it")
    f.add_argument("--user", help="user id to select in a multi-user candidate file")
    f.add_argument("--epochs", type=int, default=5, help="maximum epochs (default 5)")
    f.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    f.add_argument("--window", type=int, default=20, help="BPTT window in clicks (default 20)")
    f.add_argument("--batch-size", type=int, default=16, help="windows per batch (default 16)")
    f.add_argument("--negatives", type=int, default=256, help="shared negatives per batch "
                   "(default 256)")
    f.add_argument("--lr", type=float, default=0.05, help="learning rate (default 0.05)")
    f.add_argument("--optimizer", choices=["adagrad", "adam", "sgd"], default="adagrad",
                   help="optimiser (default adagrad)")
    f.add_argument("--holdout", type=float, default=0.1, help="share of the newest clicks "
                   "held out for evaluation and early stopping (default 0.1; 0 = none)")
    f.add_argument("--no-early-stopping", action="store_true",
                   help="train all epochs instead of keeping the best held-out epoch")
    f.add_argument("--l2-global", type=float, default=0.0, metavar="LAMBDA",
                   help="pull the fine-tuned weights towards the global model's: "
                        "LAMBDA/2 * ||w - w_global||^2 is added to the loss (default 0: off)")
    f.add_argument("--head-only", action="store_true",
                   help="fine-tune the head only (the last GRU layer stays the global one)")
    f.add_argument("--format", choices=["text", "json"], default="text",
                   help="summary format (default text)")
    f.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    _history_args(f)
    f.set_defaults(func=_cmd_finetune)

    r = sub.add_parser("recommend", help="rank items for a user",
                       description="Rank candidates (or the whole catalogue) for the user "
                                   "embedding after the latest click of HISTORY.")
    r.add_argument("model", help="global or personal model (.npz)")
    r.add_argument("--history", help="click history CSV (default: a fresh session with no clicks)")
    r.add_argument("--candidates", help="candidate file (see finetune --help)")
    r.add_argument("--user", help="user id to select in a multi-user candidate file")
    r.add_argument("-k", type=int, default=20, help="number of items (default 20)")
    r.add_argument("--include-clicked", action="store_true",
                   help="allow items already clicked in the history")
    r.add_argument("--format", choices=["table", "csv", "json"], default="table",
                   help="output format (default table)")
    _history_args(r)
    r.set_defaults(func=_cmd_recommend)

    i = sub.add_parser("info", help="describe a model file",
                       description="Validate a model file and print its configuration.")
    i.add_argument("model", help="model file (.npz)")
    i.add_argument("--format", choices=["text", "json"], default="text")
    i.set_defaults(func=_cmd_info)

    d = sub.add_parser("demo", help="fine-tune the embedded demo model on a sample history",
                       description="Runs the whole on-device flow on the small model and "
                                   "sample history shipped inside the package: "
                                   "recommendations before, fine-tuning, recommendations "
                                   "after. Takes a few seconds.")
    d.add_argument("-k", type=int, default=10, help="recommendations to show (default 10)")
    d.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    d.add_argument("-o", "--output", help="also write the personal model here")
    d.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    d.set_defaults(func=_cmd_demo)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``deeprec-edge`` command; returns the exit status."""
    parser = build_parser()
    a = parser.parse_args(argv)
    try:
        return a.func(a)
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except (UserError, ValueError, KeyError, OSError) as e:
        msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        if isinstance(e, OSError) and e.filename and str(e.filename) not in msg:
            msg = f"{e.filename}: {msg}"
        _err(msg)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The ``deeprec-edge`` command (also ``python -m deeprec_edge``).

Subcommands: ``finetune``, ``recommend``, ``info``, ``demo``.  User errors
(bad files, unknown ids, unwritable paths, numbers out of range) exit with
status 2 and one line on stderr, never a traceback.  Progress goes to
stderr, and only when it is a terminal (``--quiet`` silences it); results go
to stdout, as text or, with ``--json``, as JSON.  When stdout is closed
early (``deeprec-edge ... | head -1``) the command stops quietly with the
status of a process killed by SIGPIPE (141), as other Unix tools do.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import signal
import sys
from typing import List, Optional

import numpy as np

from . import _checks as C


def json_safe(o):
    """A copy of ``o`` that JSON can hold strictly: NaN and infinities ->
    ``null`` (``json.dumps`` writes them as ``NaN``, which JSON parsers
    reject), numpy scalars and arrays -> Python values, keys -> strings."""
    if isinstance(o, dict):
        return {str(k): json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [json_safe(v) for v in o]
    if isinstance(o, np.ndarray):
        return json_safe(o.tolist())
    if isinstance(o, np.generic):
        return json_safe(o.item())
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    return o


def json_text(o, default=None) -> str:
    """``o`` as strict JSON text for stdout (:func:`json_safe`; ``default``
    as in :func:`json.dumps` for other objects)."""
    return json.dumps(json_safe(o), indent=2, allow_nan=False, default=default)

__all__ = ["main"]


class UserError(Exception):
    """An error caused by the input, reported as one line."""


def _err(msg: str) -> None:
    print(f"deeprec-edge: error: {msg}", file=sys.stderr)


def _note(msg: str) -> None:
    print(f"deeprec-edge: note: {msg}", file=sys.stderr)


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

    if a.output == "":
        raise UserError("-o/--output: the file name is empty")
    out = a.output or _default_output(a.weights)
    C.check_output_not_input(out, {"the model WEIGHTS": a.weights,
                                   "the history HISTORY": a.history,
                                   "the global model --base": a.base,
                                   "the --candidates file": a.candidates})
    _check_writable(out)
    settings = dict(epochs=a.epochs, seed=a.seed, window=a.window, batch_size=a.batch_size,
                    n_negatives=a.negatives, alpha=a.alpha, lr=a.lr, optimizer=a.optimizer,
                    holdout=a.holdout, early_stopping=not a.no_early_stopping,
                    l2_to_global=a.l2_global, train_gru=not a.head_only, l2=a.l2)
    C.check_finetune_args(settings, names=_FINETUNE_OPTIONS)   # combined limits, by option
    if a.parts is not None:
        from .recipe import RECIPE_PARTS
        parts = tuple(x.strip() for x in a.parts.split(",") if x.strip() and x.strip() != "none")
        bad = [x for x in parts if x not in RECIPE_PARTS]
        if bad:
            raise UserError(f"--parts: unknown part(s) {', '.join(bad)}; choose among "
                            f"{', '.join(RECIPE_PARTS)} (or 'none')")
        settings["parts"] = parts
    if a.max_events is not None:
        settings["max_events"] = a.max_events
    base = load_model(a.base) if a.base else None
    model = load_model(a.weights, base=base)
    if a.head_only:     # adds the gru part to the recipe given, or to the model file's
        parts = settings["parts"] if "parts" in settings else model.recipe.parts
        settings["parts"] = tuple(parts) + (() if "gru" in parts else ("gru",))
    delta_of = None
    if a.delta:
        delta_of = base if base is not None else model
        if delta_of.is_personal:
            raise UserError("--delta: WEIGHTS is a personal model; give its global model with "
                            "--base (a delta is written against the global model)")
        # the personal model will descend from WEIGHTS' global model: check before the work
        want = (model.personal or {}).get("base_fingerprint") or model.fingerprint()
        if delta_of.fingerprint() != want:
            raise UserError(f"--delta --base {a.base}: WEIGHTS descends from the global model "
                            f"{want[:12]}..., not from this base "
                            f"({delta_of.fingerprint()[:12]}...); give WEIGHTS' own global "
                            f"model as --base")
    hist = read_history(a.history, model=model, item_col=a.item_col, time_col=a.time_col,
                        session_col=a.session_col)
    cands = _read_candidates(a.candidates, model, a.user) if a.candidates else None
    prog = _Progress(a.quiet)
    res = finetune(model, hist, candidates=cands, progress=prog, **settings)
    save_model(res.model, out, delta_of=delta_of)
    s = dict(res.summary, clicks_skipped_future=int(hist.n_future))
    rc = s["recipe"]
    pp = s.get("personal_parts") or {}
    lines = [
        f"personal model written to {out}",
        f"clicks: {s['clicks_read']} read, {s['clicks_used']} used, "
        + (f"{s['clicks_left_new']} left new for the next fine-tune, "
           if s.get("clicks_left_new") else "")
        + f"{s['clicks_skipped_unknown']} skipped (unknown items), "
        + (f"{s['clicks_skipped_future']} skipped (dated in the future), "
           if s["clicks_skipped_future"] else "")
        + f"{s['clicks_older_than_model']} older than the model",
        f"recipe: {'+'.join(rc['parts']) or 'none (keep the global model)'}"
        + (f", prior strength {rc['l2']:g}" if rc["parts"] else "")
        + (" (from the model file)" if a.parts is None and a.l2 is None and not a.head_only
           else " (as given)"),
    ]
    if "loss_first_epoch" in s:
        lines.append(f"gru part (sampled softmax): first epoch {s['loss_first_epoch']:.4f}, "
                     f"last epoch {s['loss_last_epoch']:.4f} (kept epoch {s['best_epoch']})")
    if pp.get("parts") and pp.get("loss") is not None:     # the parts were fitted
        lines.append(f"personal parts {'+'.join(pp['parts'])}: {pp['events']} events, "
                     f"loss {pp['loss']:.4f}")
    if s["heldout_events"]:
        lines.append(f"held-out newest clicks ({s['heldout_events']} events): Recall@20 "
                     f"{s['recall20_before']:.3f} -> {s['recall20_after']:.3f}, MRR@20 "
                     f"{s['mrr20_before']:.3f} -> {s['mrr20_after']:.3f}")
    if s.get("kept_global"):
        lines.append(f"kept the global model: {s['kept_global']}")
    lines.append(f"time: {pp.get('seconds', 0.0) + s.get('gru', {}).get('seconds', 0.0):.2f} s")
    if a.json:
        print(json_text({"output": out, **s}, default=float))
    else:
        print("\n".join(lines))
    return 0


#: finetune's Python arguments -> the options that set them (for messages).
_FINETUNE_OPTIONS = {"epochs": "--epochs", "seed": "--seed", "window": "--window",
                     "batch_size": "--batch-size", "n_negatives": "--negatives",
                     "alpha": "--alpha", "lr": "--lr", "optimizer": "--optimizer",
                     "holdout": "--holdout", "l2_to_global": "--l2-global", "l2": "--l2"}


def _default_output(weights: str) -> str:
    base = os.path.basename(weights)
    stem = base[:-4] if base.endswith(".npz") else base
    return os.path.join(os.path.dirname(weights) or ".", f"{stem}.personal.npz")


def _check_writable(path: str) -> None:
    """Fail at once, before long work, if the output cannot be written: a
    missing or read-only directory, a directory, a device, FIFO or socket,
    a dangling link (the checks of the atomic writer), or a directory that
    takes no new file (a temporary file is created and removed there:
    _atomic.probe_target)."""
    from ._atomic import probe_target
    probe_target(path)


def _read_candidates(path: str, model, user: Optional[str] = None):
    """The candidate ids of ``path`` for ``user``; a set with no id in the
    model's catalogue is an error (ranking it would print nothing, and
    fine-tuning's held-out check would score 0 before and after)."""
    from .candidates import read_candidates
    ids = read_candidates(path, model, user=user)
    _, unknown = model.item_index(ids)
    if unknown.all():
        ex = ", ".join(C.quoted(x) for x in ids[:3])
        raise UserError(f"{path}: " + (f"none of its {len(ids):,} candidate ids is in the "
                                       f"model's catalogue (e.g. {ex})" if ids else
                                       "holds no candidate ids")
                        + (f" for user {user}" if user is not None else ""))
    return ids


# --------------------------------------------------------------------------
# recommend
# --------------------------------------------------------------------------


def _cmd_recommend(a) -> int:
    from .api import recommend
    from .model import load_model
    from .history import read_history

    model = load_model(a.model, base=load_model(a.base) if a.base else None)
    hist = None
    if a.history:
        hist = read_history(a.history, model=model, item_col=a.item_col, time_col=a.time_col,
                            session_col=a.session_col)
        ex = ", ".join(C.quoted(x) for x in hist.unknown_examples[:3])
        why = [f"{n:,} {what}" for n, what in
               ((hist.n_unknown, f"on items outside the model's catalogue, e.g. {ex}"),
                (hist.n_future, "dated in the future")) if n]
        if why:   # on stderr: stdout stays the ranking (--csv, --json)
            _note(f"{a.history}: {hist.n_unknown + hist.n_future:,} of {hist.n_rows:,} clicks "
                  f"skipped ({'; '.join(why)})")
    cands = _read_candidates(a.candidates, model, a.user) if a.candidates else None
    ids, scores = recommend(model, hist, k=a.k, candidates=cands,
                            exclude_clicked=False if (a.include_clicked or model.has_repeat)
                            else None)
    _print_table(ids, scores, "json" if a.json else "csv" if a.csv else "table")
    return 0


def _print_table(ids, scores, fmt: str) -> None:
    rows = [(int(r) + 1, (x.item() if isinstance(x, np.generic) else x), float(s))
            for r, (x, s) in enumerate(zip(ids, scores))]
    if fmt == "json":
        print(json_text([{"rank": r, "item_id": i, "score": s} for r, i, s in rows]))
    elif fmt == "csv":      # quoted where needed: string ids may hold commas or quotes
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(("rank", "item_id", "score"))
        w.writerows((r, i, f"{s:.6g}") for r, i, s in rows)
    else:
        w = max([len(str(i)) for _, i, _ in rows] + [7])
        print(f"{'rank':>4}  {'item_id':<{w}}  {'score':>9}")
        for r, i, s in rows:
            print(f"{r:>4}  {str(i):<{w}}  {s:>9.4f}")


# --------------------------------------------------------------------------
# info
# --------------------------------------------------------------------------


def _file_members(path: str) -> list:
    """(name, dtype, shape, bytes, bytes in the zip) of every array of a
    validated model file, in file order (read from the .npy headers)."""
    import zipfile
    out = []
    with zipfile.ZipFile(path) as z:
        for i in z.infolist():
            with z.open(i) as f:
                version = np.lib.format.read_magic(f)
                shape, _, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0(f))
            out.append((i.filename[:-4], dtype, shape, i.file_size, i.compress_size))
    return out


def _cmd_info(a) -> int:
    from .model import load_model
    m = load_model(a.model, base=load_model(a.base) if a.base else None)
    info = m.describe()
    members = _file_members(a.model)
    if any(name == "delta" for name, *_ in members):
        info["delta_of"] = m.personal["base_fingerprint"]
    info["file_bytes"] = os.path.getsize(a.model)
    info["deflated"] = any(c < b for *_, b, c in members)
    info["array_bytes"] = {name: b for name, _, _, b, _ in members
                           if name not in ("format", "version", "config", "personal")}
    if a.json:
        print(json_text(info, default=str))
        return 0
    info.pop("array_bytes")
    storage = info.pop("storage")
    deflated = info.pop("deflated")
    for k, v in info.items():
        if k == "file_bytes":
            v = f"{v:,}" + (" (a deflated npz)" if deflated else "")
        print(f"{k:>22}: {v}")
    print(f"{'arrays':>22}: storage or dtype, shape, bytes (in the zip)")
    for name, dtype, shape, nb, zb in members:
        if name in ("format", "version", "config", "personal"):
            continue
        kind = storage.get(name) or ("text" if dtype.kind == "U" else dtype.name)
        zipped = f" ({zb:,})" if deflated else ""
        print(f"{'':>22}  {name:<20} {kind:<15} {str(shape):<14} {nb:>11,}{zipped}")
    return 0


# --------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------


def _cmd_demo(a) -> int:
    from .demo import NEXT_STEPS, demo_paths, run_demo, write_demo_files
    if a.files is not None:
        paths = write_demo_files(a.files)
        print(f"wrote {', '.join(paths)} (the demo's global model, one user's clicks and a "
              f"candidate set for her: the catalogue's most popular items)."
              f"\nNext:\n  {NEXT_STEPS.split(chr(10), 1)[1].strip()}")
        return 0
    if a.output:
        model_path, history_path = demo_paths()
        C.check_output_not_input(a.output, {"the packaged demo model": model_path,
                                            "the packaged demo history": history_path})
        _check_writable(a.output)
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
                       description="Fit the personal parts of WEIGHTS on the clicks in "
                                   "HISTORY (CSV with a header: item id, timestamp, optional "
                                   "session id), with the recipe the trainer wrote into the "
                                   "model file (see 'deeprec-edge info WEIGHTS'): a user offset "
                                   "of the head, personal biases of the user's items, personal "
                                   "repeat weights, the head, and/or the last GRU layer "
                                   "(--parts). The newest clicks are held out to check that "
                                   "the personal model helps; otherwise the global model is "
                                   "kept. WEIGHTS may be a personal model: then only clicks "
                                   "no earlier fine-tuning learned from are learned from "
                                   "(continual fine-tuning).")
    f.add_argument("weights", help="global or personal model (.npz), or a personal delta "
                                   "(with --base)")
    f.add_argument("history", help="click history CSV")
    f.add_argument("-o", "--output", help="where to write the personal model "
                   "(default: WEIGHTS with .personal.npz); written atomically")
    f.add_argument("--base", metavar="WEIGHTS",
                   help="the global model: needed to read WEIGHTS when it is a personal delta, "
                        "and the model --delta is written against")
    f.add_argument("--delta", action="store_true",
                   help="write only what differs from the global model (WEIGHTS, or --base), "
                        "plus its fingerprint: a personal delta of a few KB for backup and sync; "
                        "read it back with --base")
    f.add_argument("--candidates", help="candidate file (CSV user_id,item_id[,...] or .npz "
                   "from the trainer, or one item id per line): negatives are also drawn "
                   "from it and held-out Recall@20 ranks within it")
    f.add_argument("--user", help="user id to select in a multi-user candidate file")
    f.add_argument("--parts", help="personal parts, comma-separated: offset, bias, repeat, head, "
                   "gru ('none': keep the global model); default: the model's recipe")
    f.add_argument("--l2", type=C.L2_PULL, metavar="LAMBDA",
                   help="strength of the prior towards the global model (default: the "
                        "model's recipe)")
    f.add_argument("--max-events", type=C.MAX_EVENTS,
                   help="the newest next-click events the personal parts (the gru part "
                        "too) learn from (default: the model's recipe)")
    f.add_argument("--epochs", type=C.EPOCHS, default=5,
                   help="gru part: maximum epochs (default 5)")
    f.add_argument("--seed", type=C.SEED, default=0, help="random seed (default 0)")
    f.add_argument("--window", type=C.WINDOW, default=20,
                   help="BPTT window in clicks (default 20)")
    f.add_argument("--batch-size", type=C.BATCH_SIZE, default=16,
                   help="windows per batch (default 16)")
    f.add_argument("--negatives", type=C.NEGATIVES, default=256,
                   help="shared negatives per batch (default 256)")
    f.add_argument("--alpha", type=C.ALPHA, default=0.75,
                   help="negatives are drawn proportionally to popularity^ALPHA "
                        "(default 0.75; 0: uniform)")
    f.add_argument("--lr", type=C.LEARNING_RATE, default=0.05,
                   help="learning rate (default 0.05)")
    f.add_argument("--optimizer", choices=list(C.OPTIMIZERS), default="adagrad",
                   help="optimiser (default adagrad)")
    f.add_argument("--holdout", type=C.HOLDOUT, help="share of the newest clicks held out to "
                   "check the personal model (and for the gru part's early stopping) "
                   "(default: the model's recipe; 0 = no check)")
    f.add_argument("--no-early-stopping", action="store_true",
                   help="train all epochs instead of keeping the best held-out epoch")
    f.add_argument("--l2-global", type=C.L2_PULL, default=0.0, metavar="LAMBDA",
                   help="pull the fine-tuned weights towards the global model's: "
                        "LAMBDA/2 * ||w - w_global||^2 is added to the loss "
                        "(default 0: off)")
    f.add_argument("--head-only", action="store_true",
                   help="gru part: train the head only (the last GRU layer stays the global "
                        "one); adds the gru part to the recipe")
    f.add_argument("--json", action="store_true",
                   help="print the summary as JSON on stdout instead of text")
    f.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    _history_args(f)
    f.set_defaults(func=_cmd_finetune, parser_=f)

    r = sub.add_parser("recommend", help="rank items for a user",
                       description="Rank candidates (or the whole catalogue) for the user "
                                   "embedding after the latest click of HISTORY.")
    r.add_argument("model", help="global or personal model (.npz), or a personal delta (with "
                                 "--base)")
    r.add_argument("--base", metavar="WEIGHTS",
                   help="the global model a personal delta was fine-tuned from")
    r.add_argument("--history", help="click history CSV (default: a fresh session with no clicks)")
    r.add_argument("--candidates", help="candidate file (see finetune --help)")
    r.add_argument("--user", help="user id to select in a multi-user candidate file")
    r.add_argument("-k", type=C.TOP_K, default=20, help="number of items (default 20)")
    r.add_argument("--include-clicked", action="store_true",
                   help="allow items already clicked in the history (always, for a model with "
                        "a repeat component: it scores returns itself)")
    fmt = r.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true",
                     help="print the ranking as JSON on stdout instead of a table")
    fmt.add_argument("--csv", action="store_true",
                     help="print the ranking as CSV (rank,item_id,score) instead of a table")
    _history_args(r)
    r.set_defaults(func=_cmd_recommend, parser_=r)

    i = sub.add_parser("info", help="describe a model file",
                       description="Validate a model file and print its configuration.")
    i.add_argument("model", help="model file (.npz)")
    i.add_argument("--base", metavar="WEIGHTS",
                   help="the global model of a personal delta")
    i.add_argument("--json", action="store_true",
                   help="print the description as JSON on stdout instead of text")
    i.set_defaults(func=_cmd_info, parser_=i)

    d = sub.add_parser("demo", help="fine-tune the embedded demo model on a sample history",
                       description="Runs the whole on-device flow on the small model and "
                                   "sample history shipped inside the package: "
                                   "recommendations before, fine-tuning, recommendations "
                                   "after. Takes well under a second.")
    d.add_argument("-k", type=C.TOP_K, default=10, help="recommendations to show (default 10)")
    d.add_argument("--seed", type=C.SEED, default=0, help="random seed (default 0)")
    d.add_argument("-o", "--output", help="also write the personal model here")
    d.add_argument("--files", metavar="DIR", help="instead, write the demo's model, history "
                   "and a candidate set to DIR as weights.npz, history.csv and cands.csv, to "
                   "try finetune and recommend on them (existing files are not overwritten)")
    d.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    d.set_defaults(func=_cmd_demo, parser_=d)
    return C.show_ranges(p)   # every numeric option's --help names its range


#: Exit status of a command whose reader went away (128 + SIGPIPE, what a
#: shell reports for a process killed by SIGPIPE, e.g. ``yes | head -1``).
EXIT_BROKEN_PIPE = 128 + getattr(signal, "SIGPIPE", 13)


def _stdout_gone() -> int:
    """stdout's reader went away: stop quietly.  Python would print "Broken
    pipe" and a traceback, and complain again when it flushes stdout at exit;
    point stdout at /dev/null so that last flush has nowhere to fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass
    return EXIT_BROKEN_PIPE


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``deeprec-edge`` command; returns the exit status."""
    parser = build_parser()
    a, extra = parser.parse_known_args(argv)
    if extra:
        # the sub-command's own usage, and where a stray file name belongs
        sub = getattr(a, "parser_", parser)
        hint = ""
        if getattr(a, "func", None) is _cmd_recommend and not extra[0].startswith("-"):
            hint = (f"; recommend takes one positional argument, the model: give the history "
                    f"as --history {extra[0]}")
        sub.error(f"unrecognized arguments: {' '.join(extra)}{hint}")
    try:
        code = a.func(a)
        sys.stdout.flush()   # a closed pipe shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        return _stdout_gone()
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

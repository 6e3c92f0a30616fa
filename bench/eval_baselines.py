"""Recall@20 / MRR@20 and wall time of the non-GRU baselines on a real log,
on pre-test data only.

    python bench/eval_baselines.py LOG [--format auto] [--cutoffs 0.7 0.8]
    python bench/eval_baselines.py --sessions TRAIN TEST        # GRU4Rec's protocol

User logs (the DeepRec protocol's shape, without touching its test period):
clicks at or after the ``--cutoffs`` second quantile of all click times are
dropped before anything else (that is where a DeepRec test period lies).
The cloud's training log is the clicks before the first quantile after the
trainer's default support filter (items with >= 5 clicks, sessions with >= 2,
iteratively); its items are the catalogue.  Every click in the window between
the two quantiles whose previous click is in the same session is an event;
its input is the user's whole preceding history (pre-window clicks and the
window's earlier clicks, on catalogue items), as in ``deeprec-train
evaluate``.  Metrics: per-user means (each user weighs the same) with 95%
normal intervals over users, event means, and the conservative tie rule.

``--sessions``: session-rec / GRU4Rec prepared files (``read_session_tsv``),
GRU4Rec's convention (test items not in train removed, then sessions shorter
than 2); every click with a next click in its session is an event; event means.

Prints a markdown table (method, R@20, MRR@20, conservative R@20 / MRR@20,
fit and score seconds) and the machine; ``--json PATH`` writes the numbers.
Single-threaded BLAS (set before numpy loads).  Needs the trainer extra.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402

from deeprec_edge.trainer.baselines import BASELINES, make_baseline  # noqa: E402
from deeprec_edge.trainer.data import (filter_support, read_interactions, read_session_tsv,  # noqa: E402
                                       remap_items, session_split_convention, time_cutoff)
from deeprec_edge.trainer.metrics import RankAccumulator, ranks_from_scores  # noqa: E402

BLOCK = 512   # events scored per call


def _machine() -> str:
    """lscpu's model name and thread count, the OS and Python."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        fields = dict(ln.split(":", 1) for ln in out.splitlines() if ":" in ln)
        model = fields.get("Model name", "?").strip()
        flags = fields.get("Flags", "").split()
        simd = [f for f in ("avx2", "fma", "avx512f", "asimd") if f in flags]
        if simd:
            model += f" [{' '.join(simd)}]"
    except OSError:
        model = "?"
    return (f"{model} ({os.cpu_count()} logical CPUs), {platform.system()} {platform.machine()}, "
            f"Python {platform.python_version()}, numpy {np.__version__}")


def _run(methods, train, events):
    """Fit each method on ``train`` and rank the targets of ``events``:
    (user or None, seq, session_start, input positions, targets) tuples."""
    results = {}
    for name in methods:
        t0 = time.perf_counter()
        b = make_baseline(name).fit(train)
        t_fit = time.perf_counter() - t0
        acc = RankAccumulator()
        t0 = time.perf_counter()
        for u, seq, starts, pos, tgt in events:
            for a in range(0, len(pos), BLOCK):
                S = b.score(seq, starts, pos[a:a + BLOCK])
                o, c = ranks_from_scores(S, tgt[a:a + BLOCK], ties="both")
                acc.add_ranks(o, c, users=None if u is None else np.full(len(o), u))
        results[name] = {"summary": acc.summary(ks=(20,), metrics=("recall", "mrr")),
                         "fit_seconds": t_fit, "score_seconds": time.perf_counter() - t0}
    return results


def _user_events(inter, c1, c2, catalogue):
    """Per user: (seq, session_start, positions, targets) of the window's events."""
    log = remap_items(inter.subset(inter.times < c2), catalogue)
    off = log.user_offsets()
    out = []
    for k in range(len(off) - 1):
        a, b = int(off[k]), int(off[k + 1])
        t = log.times[a:b]
        s = log.sessions[a:b]
        seq = log.items[a:b].astype(np.int64)
        starts = np.r_[True, s[1:] != s[:-1]]
        tgt = np.flatnonzero((t >= c1) & ~starts)
        if len(tgt):
            out.append((int(log.users[a]), seq, starts, tgt - 1, seq[tgt]))
    return out


def evaluate_users(path, fmt, q1, q2, methods, log=print):
    inter = read_interactions(path, fmt) if fmt != "auto" else _read_auto(path)
    c1, c2 = time_cutoff(inter.times, q1), time_cutoff(inter.times, q2)
    train = filter_support(inter.subset(inter.times < c1), min_item_support=5, min_session_length=2)
    events = _user_events(inter, c1, c2, train.item_ids)
    n_ev = sum(len(e[3]) for e in events)
    head = (f"{os.path.basename(path)}: {len(inter):,} clicks read; train = clicks before the "
            f"{q1} quantile after support filtering: {len(train):,} clicks, {train.n_items:,} items, "
            f"{train.n_sessions:,} sessions; evaluated: {n_ev:,} events of {len(events):,} users in "
            f"[q{q1}, q{q2}); clicks after q{q2} unread")
    log(head)
    return head, _run(methods, train, events)


def _read_auto(path):
    from deeprec_edge.trainer.cli import _guess_format
    return read_interactions(path, _guess_format(path))


def evaluate_session_files(train_path, test_path, methods, log=print):
    tr, te = session_split_convention(read_session_tsv(train_path), read_session_tsv(test_path))
    seq = te.items.astype(np.int64)
    s = te.sessions
    starts = np.r_[True, s[1:] != s[:-1]]
    pos = np.flatnonzero(~starts[1:]) if len(seq) > 1 else np.zeros(0, np.int64)
    tgt = seq[pos + 1]
    head = (f"{os.path.basename(train_path)} -> {os.path.basename(test_path)}: {len(tr):,} training "
            f"clicks, {tr.n_items:,} items, {tr.n_sessions:,} sessions; {len(pos):,} test events")
    log(head)
    return head, _run(methods, tr, [(None, seq, starts, pos, tgt)])


def table(results) -> str:
    lines = ["| method | Recall@20 | MRR@20 | Recall@20 cons. | MRR@20 cons. | fit s | score s |",
             "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        o, c = r["summary"]["optimistic"], r["summary"]["conservative"]

        def cell(m):
            half = (m["ci_high"] - m["ci_low"]) / 2 if np.isfinite(m["ci_low"]) else float("nan")
            return f"{m['mean']:.4f} ± {half:.4f}"
        lines.append(f"| {name} | {cell(o['recall@20'])} | {cell(o['mrr@20'])} | "
                     f"{c['recall@20']['mean']:.4f} | {c['mrr@20']['mean']:.4f} | "
                     f"{r['fit_seconds']:.2f} | {r['score_seconds']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("log", nargs="?", help="a user log (any deeprec-train format)")
    p.add_argument("--format", default="auto")
    p.add_argument("--cutoffs", nargs=2, type=float, default=(0.7, 0.8), metavar=("Q1", "Q2"))
    p.add_argument("--sessions", nargs=2, metavar=("TRAIN", "TEST"),
                   help="GRU4Rec's session protocol on a prepared train/test pair")
    p.add_argument("--methods", default=",".join(BASELINES))
    p.add_argument("--json", help="write the numbers here")
    a = p.parse_args(argv)
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    paths = a.sessions or [a.log]
    missing = [x for x in paths if not x or not os.path.exists(x)]
    if missing:
        print(f"skipped: {missing} not found (give the path of a shared dataset)", file=sys.stderr)
        return 0
    if a.sessions:
        head, res = evaluate_session_files(a.sessions[0], a.sessions[1], methods)
    else:
        q1, q2 = a.cutoffs
        if not 0 < q1 < q2 < 1:
            p.error("--cutoffs needs 0 < Q1 < Q2 < 1")
        head, res = evaluate_users(a.log, a.format, q1, q2, methods)
    print(table(res))
    print(f"\nmachine: {_machine()}; one process, single-threaded BLAS")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"data": head, "machine": _machine(), "results": res}, f, indent=1, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())

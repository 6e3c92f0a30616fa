"""Bytes versus accuracy of every model-file variant on a real log: the
README's compression table.

    python bench/eval_compress.py --sessions TRAIN TEST -o DIR      # GRU4Rec's protocol
    python bench/eval_compress.py LOG --format online-retail -o DIR # a user log, time split

Trains the float32 global model (``--preset``, default gru4rec: GRU4Rec's
recipe), and the same model with gradual pruning during training (``fit
--prune`` 0.5/0.7/0.9: AGP + recovery), then writes every variant with
``deeprec-train export`` (float16, int8, int4, int3, one-shot pruning without
recovery, a slice, the combinations and ``--compress max``) and measures
for each: the file's bytes, its gzip -9 bytes, and Recall@20 / MRR@20 of
next-click prediction over the test sessions, every catalogue item ranked
(``deeprec-train evaluate-sessions --model FILE``: the runtime's own
scorer on the stored matrices).  A sliced model ranks only its items: test
events lost with the slice (targets outside it) count as misses, so its
numbers stay comparable.

Data: ``--sessions TRAIN TEST`` are GRU4Rec/session-rec prepared files;
a user log is split by time like ``bench/eval_baselines.py`` (train =
clicks before the ``--cutoffs`` first quantile, support-filtered; test =
the sessions of the window up to the second quantile).  Prints a markdown
table with the command of every row and the machine; ``--json`` writes the
numbers.  Needs the trainer extra; skips (exit 0) when a file is missing.
"""
from __future__ import annotations

import argparse
import copy
import gzip
import json
import os
import sys
import time

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402

from deeprec_edge.model import load_model, save_model  # noqa: E402
from deeprec_edge.trainer.data import (filter_sessions, filter_support, read_interactions,  # noqa: E402
                                       read_session_tsv, remap_items, session_split_convention,
                                       time_cutoff)
from deeprec_edge.trainer.evaluate import evaluate_sessions  # noqa: E402
from deeprec_edge.trainer.export import export_model  # noqa: E402
from deeprec_edge.trainer.fit import FitConfig, gru4rec_config  # noqa: E402
from deeprec_edge.trainer.pipeline import train_model  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from eval_baselines import _machine  # noqa: E402

PRUNES = (0.5, 0.6, 0.7, 0.9)


def load_data(a):
    """(train, test) Interactions on train's catalogue, and a description."""
    if a.sessions:
        tr, te = session_split_convention(read_session_tsv(a.sessions[0]),
                                          read_session_tsv(a.sessions[1]))
        return tr, te, (f"{os.path.basename(a.sessions[0])} -> "
                        f"{os.path.basename(a.sessions[1])}")
    inter = read_interactions(a.log, a.format)
    q1, q2 = a.cutoffs
    c1, c2 = time_cutoff(inter.times, q1), time_cutoff(inter.times, q2)
    tr = filter_support(inter.subset(inter.times < c1), min_item_support=5, min_session_length=2)
    te = filter_sessions(remap_items(inter.subset((inter.times >= c1) & (inter.times < c2)),
                                     tr.item_ids), 2)
    return tr, te, (f"{os.path.basename(a.log)}: train = clicks before the {q1} time quantile "
                    f"(support-filtered), test = sessions in [q{q1}, q{q2})")


def fit_config(a, prune: float = 0.0) -> FitConfig:
    cfg = gru4rec_config() if a.preset == "gru4rec" else FitConfig()
    cfg = copy.deepcopy(cfg)
    cfg.repeat, cfg.simulate_users = False, 0     # the plain GRU: what compression changes
    cfg.train.seed = a.seed
    if a.epochs:
        cfg.train.epochs = a.epochs
    cfg.prune = prune
    return cfg


def score(model_path, tr, te, n_events_full=None):
    """Recall@20, MRR@20 (optimistic; a lost event counts as a miss) and
    the events evaluated."""
    rep = evaluate_sessions(tr, te, methods=("gru",), model=load_model(model_path), ks=(20,),
                            log=lambda s: None, progress=False)
    s = rep["methods"]["gru"]["full"]["optimistic"]
    n = rep["data"]["events_evaluated"]
    share = 1.0 if n_events_full is None else n / n_events_full
    return s["recall@20"]["mean"] * share, s["mrr@20"]["mean"] * share, n


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("log", nargs="?")
    p.add_argument("--format", default="auto")
    p.add_argument("--cutoffs", nargs=2, type=float, default=(0.7, 0.8))
    p.add_argument("--sessions", nargs=2, metavar=("TRAIN", "TEST"))
    p.add_argument("-o", "--out", required=True, help="directory for the model files")
    p.add_argument("--preset", choices=("gru4rec", "default"), default="gru4rec")
    p.add_argument("--epochs", type=int, help="override the preset's epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default=None, help="dataset name in the table")
    p.add_argument("--json")
    a = p.parse_args(argv)
    paths = a.sessions or [a.log]
    if any(not x or not os.path.exists(x) for x in paths):
        print(f"skipped: {paths} not found (give the path of a shared dataset)", file=sys.stderr)
        return 0
    os.makedirs(a.out, exist_ok=True)
    tr, te, desc = load_data(a)
    say = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    say(f"{desc}: {len(tr):,} training clicks, {tr.n_items:,} items; {len(te):,} test clicks")
    src = a.sessions[0] if a.sessions else a.log
    name = a.name or os.path.basename(os.path.dirname(os.path.abspath(src)))
    fits = {}
    for prune in (0.0,) + PRUNES:
        path = os.path.join(a.out, "float32.npz" if not prune else f"fit-prune{prune}.npz")
        if not os.path.exists(path):
            t0 = time.perf_counter()
            model, _ = train_model(tr, fit_config(a, prune), log=say, progress=False)
            save_model(model, path)
            say(f"fitted {path} in {time.perf_counter() - t0:.0f} s")
        fits[prune] = path
    base = fits[0.0]
    variants = []   # (label, path, command, export kwargs or None)

    def add(label, source, cmd_args, **kw):
        slug = "".join(c if c.isalnum() or c in "-." else "_" for c in label).strip("_")
        out = os.path.join(a.out, slug + ".npz")
        variants.append((label, out, source, cmd_args, kw))

    add("float32", base, None)
    add("float16", base, "--dtype float16", dtype="float16")
    add("int8", base, "--dtype int8", dtype="int8")
    add("int4", base, "--dtype int4", dtype="int4")
    add("int3", base, "--dtype int3", dtype="int3")
    add("tables int4, gru/head int8", base, "--dtype tables=int4,gru=int8,head=int8",
        dtype="tables=int4,gru=int8,head=int8")
    for pr in PRUNES:
        add(f"pruned {pr:.0%} (one-shot)", base, f"--prune {pr}", prune=pr)
        add(f"pruned {pr:.0%} (recovery)", fits[pr], None)
        add(f"pruned {pr:.0%} (recovery), int8", fits[pr], "--dtype int8", dtype="int8")
        add(f"pruned {pr:.0%} (recovery), --compress max", fits[pr], "--compress max",
            compress="max")
    n_half = tr.n_items // 2
    add(f"sliced to the {n_half:,} most popular items", base, f"--top-popular {n_half}",
        top_popular=n_half)
    add("--compress max", base, "--compress max", compress="max")
    rows = []
    n_full = None
    for label, out, source, cmd_args, kw in variants:
        if cmd_args is None and source != out:
            out = source
        else:
            export_model(source, out, **kw)
        data = open(out, "rb").read()
        rec, mrr, n = score(out, tr, te, n_full)
        if n_full is None:
            n_full = n
        fit_cmd = ("deeprec-train fit TRAIN --preset gru4rec -o float32.npz" if source == base else
                   f"deeprec-train fit TRAIN --preset gru4rec --prune {source.split('prune')[1][:-4]}"
                   f" -o {os.path.basename(source)}")
        cmd = fit_cmd + (f" && deeprec-train export {os.path.basename(source)} -o "
                         f"{os.path.basename(out)} {cmd_args}" if cmd_args else "")
        rows.append({"variant": label, "bytes": len(data),
                     "gzip_bytes": len(gzip.compress(data, 9)), "recall@20": rec,
                     "mrr@20": mrr, "events": n, "command": cmd, "file": out})
        say(f"{label}: {len(data):,} bytes, Recall@20 {rec:.4f}, MRR@20 {mrr:.4f}")
    f32 = rows[0]
    print(f"\n{name} ({desc}; {n_full:,} test events, all {tr.n_items:,} items ranked)\n")
    print("| variant | bytes | x fewer | gzip'd | x fewer | Recall@20 | MRR@20 | command |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['bytes']:,} | {f32['bytes'] / r['bytes']:.1f} | "
              f"{r['gzip_bytes']:,} | {f32['gzip_bytes'] / r['gzip_bytes']:.1f} | "
              f"{r['recall@20']:.4f} | {r['mrr@20']:.4f} | `{r['command']}` |")
    print(f"\nmachine: {_machine()}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"dataset": name, "data": desc, "machine": _machine(), "rows": rows}, f,
                      indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

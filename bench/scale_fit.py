"""How large a log one machine trains on: ``deeprec-train fit`` on a generated log.

Generates a click log with the trainer's own generator
(``deeprec_edge.trainer.synthetic.make_synthetic``: sessions of about 6
clicks, about 8 sessions per user, so about 48 clicks per user), writes it
as a CSV ``user_id,item_id,time`` in a temporary folder, then measures, each
in a fresh process under GNU time (``/usr/bin/time -v``):

1. the baseline: reading and preprocessing that CSV exactly as
   ``deeprec-train fit`` does (the CLI's own reader and support filter, same
   flags), and nothing else;
2. the real command: ``deeprec-train fit LOG.csv --format csv --user-col
   user_id --item-col item_id --time-col time --epochs 1 -o weights.npz
   --report fit.json -q`` -- default settings otherwise (one GRU layer of
   100 units, tied embeddings, sampled softmax, window 20, batch 32).

It prints one markdown table row per run (``--header`` adds the header) in
the columns of docs/trainer.md, "How far one machine goes":

- clicks / items: what the fit trained on (after the default support
  filter); the generated log's size is printed too;
- one epoch, CPU / wall: the epoch's process CPU seconds and wall seconds
  from the fit report (``--report``: ``cpu_seconds``, ``seconds``; without
  ``cpu_seconds``, the fit command's user + system seconds minus the
  baseline's); ``fit_cpu_s`` in ``--json`` is always the latter (building
  the model, the epochs, saving it);
- clicks per CPU-second: trained clicks / the epoch's CPU seconds;
- peak RSS: the fit command's "Maximum resident set size"; in parentheses
  the baseline's peak (reading and filtering alone) and the memory the
  baseline still holds once the log is read and filtered (resident set
  after a ``gc.collect()``: interpreter, libraries and the coded log).  The
  fit's own working memory is at most the command's peak minus the latter.

Examples::

    nice -n 10 python bench/scale_fit.py --header                  # 5 M clicks, 20 k items
    nice -n 10 python bench/scale_fit.py --items 200000            # 5 M clicks, 200 k items
    python bench/scale_fit.py --clicks 20000 --items 500 --header  # a few seconds
    python bench/scale_fit.py --json                               # one JSON object per run

The log is generated in a child process too, so the generator's memory
(about 215 bytes per click) never counts.  ``--keep DIR`` keeps the CSV,
model and reports there (and reuses a CSV already there with the same
parameters).  BLAS/OpenMP thread pools are limited to ``--threads 1`` (the C
core is single-threaded).  On a shared machine CPU seconds are the figure to
trust; the load average before and after is printed.  The children import
whatever ``deeprec_edge`` this interpreter imports (``--json`` records its
folder, version and kernel path); to measure one commit while the tree
changes, install it elsewhere and point ``PYTHONPATH`` there::

    mkdir -p /tmp/src && git archive HEAD | tar -x -C /tmp/src
    pip install --no-deps --target /tmp/site /tmp/src
    PYTHONPATH=/tmp/site nice -n 10 python bench/scale_fit.py

``/usr/bin/time`` is GNU time (Debian/Ubuntu: ``apt-get install -y time``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.abspath(__file__)
TIME_BIN = "/usr/bin/time"
CLICKS_PER_USER = 48.0       #: make_synthetic's defaults: 8 sessions of 6 clicks (in expectation)
READER = ["--format", "csv", "--user-col", "user_id", "--item-col", "item_id",
          "--time-col", "time"]
MB = 1024 * 1024

_GNU = {
    "maxrss_kb": re.compile(r"Maximum resident set size \(kbytes\):\s*(\d+)"),
    "user_s": re.compile(r"User time \(seconds\):\s*([\d.]+)"),
    "sys_s": re.compile(r"System time \(seconds\):\s*([\d.]+)"),
    "wall": re.compile(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\):\s*(\S+)"),
}


# --------------------------------------------------------------------------
# children
# --------------------------------------------------------------------------

def generate(path: str, clicks: int, items: int, clusters: int, seed: int) -> dict:
    """Write a make_synthetic log of at least ``clicks`` clicks to ``path``.

    Draws 2% more users than ``clicks / 48`` and keeps the first users (whole
    users, whole sessions) until ``clicks`` is reached, so the log has at
    least ``clicks`` clicks and fewer than one user's clicks more."""
    import time

    import numpy as np

    from deeprec_edge.trainer.synthetic import make_synthetic

    t0 = time.perf_counter()
    users = int(math.ceil(1.02 * clicks / CLICKS_PER_USER)) + 10
    inter, _ = make_synthetic(n_users=users, n_items=items, n_clusters=clusters, seed=seed)
    frame = inter.to_frame()[["user_id", "item_id", "time"]]
    del inter
    # rows are grouped by user; keep whole users until the target is reached
    uid = frame["user_id"].to_numpy()
    first = np.r_[True, uid[1:] != uid[:-1]]
    ends = np.r_[np.flatnonzero(first)[1:], len(uid)]     # end row of each user's block
    k = int(np.searchsorted(ends, clicks))                  # first user whose end >= clicks
    if k >= len(ends):
        raise SystemExit(f"generated only {len(uid):,} clicks; raise CLICKS_PER_USER's margin")
    n = int(ends[k])
    frame = frame.iloc[:n]
    tmp = path + ".part"
    frame.to_csv(tmp, index=False, float_format="%.3f")
    os.replace(tmp, path)
    return {"clicks": n, "users": k + 1, "items_generated": items,
            "items_clicked": int(frame["item_id"].nunique()), "clusters": clusters,
            "seed": seed, "seconds": round(time.perf_counter() - t0, 1),
            "csv_bytes": os.path.getsize(path)}


def read_only(path: str, extra: list) -> dict:
    """Read and preprocess ``path`` as ``deeprec-train fit`` does, nothing else."""
    import gc
    import resource

    from deeprec_edge.trainer import cli

    a = cli.build_parser().parse_args(["fit", path, *READER, *extra, "-q", "-o",
                                       os.devnull])
    inter = cli._preprocess(a, cli._read(a, path))
    gc.collect()
    with open("/proc/self/statm") as f:                  # resident pages now
        held_kb = int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
    import deeprec_edge
    from deeprec_edge import kernels

    return {"clicks": len(inter), "items": int(inter.summary()["items"]),
            "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "held_kb": held_kb, "deeprec_edge": os.path.dirname(deeprec_edge.__file__),
            "version": deeprec_edge.__version__, "kernel_path": kernels.active_path()}


# --------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------

def _wall_seconds(s: str) -> float:
    return sum(float(p) * 60 ** i for i, p in enumerate(reversed(s.split(":"))))


def time_v(cmd: list, env: dict, cwd: str) -> tuple:
    """Run ``cmd`` under ``/usr/bin/time -v``: (measures, stdout)."""
    r = subprocess.run([TIME_BIN, "-v", *cmd], capture_output=True, text=True, env=env, cwd=cwd)
    got = {k: rx.search(r.stderr) for k, rx in _GNU.items()}
    if r.returncode != 0 or not all(got.values()):
        raise SystemExit(f"{' '.join(cmd)} failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
    m = {"maxrss_kb": int(got["maxrss_kb"].group(1)),
         "cpu_s": float(got["user_s"].group(1)) + float(got["sys_s"].group(1)),
         "wall_s": _wall_seconds(got["wall"].group(1))}
    return m, r.stdout


def _fit_command() -> list:
    """The installed ``deeprec-train`` next to this interpreter, else its module."""
    exe = os.path.join(os.path.dirname(sys.executable), "deeprec-train")
    if os.access(exe, os.X_OK):
        return [exe]
    found = shutil.which("deeprec-train")
    return [found] if found else [sys.executable, "-m", "deeprec_edge.trainer.cli"]


def _env(threads: int) -> dict:
    env = dict(os.environ)
    for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
              "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
        env[v] = str(threads)
    return env


def measure(a) -> dict:
    env = _env(a.threads)
    own = a.keep is None
    d = tempfile.mkdtemp(prefix="deeprec_scale_fit_") if own else a.keep
    os.makedirs(d, exist_ok=True)
    try:
        tag = f"synthetic_c{a.clicks}_i{a.items}_k{a.clusters}_s{a.seed}"
        csv = os.path.join(d, tag + ".csv")
        meta = os.path.join(d, tag + ".json")
        if os.path.exists(csv) and os.path.exists(meta):
            with open(meta, encoding="utf-8") as f:
                gen = json.load(f)
        else:
            out = subprocess.run([sys.executable, HERE, "--_generate", csv, "--clicks",
                                  str(a.clicks), "--items", str(a.items), "--clusters",
                                  str(a.clusters), "--seed", str(a.seed)],
                                 check=True, env=env, capture_output=True, text=True).stdout
            gen = json.loads(out)
            with open(meta, "w", encoding="utf-8") as f:
                json.dump(gen, f)
        load_before = os.getloadavg()
        base, out = time_v([sys.executable, HERE, "--_read-only", csv, "--", *a.fit_args],
                           env, d)
        base.update(json.loads(out))
        weights, report = os.path.join(d, "weights.npz"), os.path.join(d, "fit.json")
        cmd = [*_fit_command(), "fit", csv, *READER, "--epochs", str(a.epochs),
               *a.fit_args, "-o", weights, "--report", report, "-q"]
        fit, _ = time_v(cmd, env, d)
        load_after = os.getloadavg()
        with open(report, encoding="utf-8") as f:
            rep = json.load(f)
        s = rep["summary"]
        epochs = rep["fit"].get("epochs") or []
        ne = max(1, len(epochs))
        epoch_wall = sum(float(e["seconds"]) for e in epochs) / ne
        fit_cpu = max(fit["cpu_s"] - base["cpu_s"], 1e-9)
        # the fit report's own CPU seconds per epoch (process time), when it has them;
        # else the command's CPU minus the baseline's
        if epochs and all(e.get("cpu_seconds") for e in epochs):
            epoch_cpu = sum(float(e["cpu_seconds"]) for e in epochs) / ne
        else:
            epoch_cpu = fit_cpu / ne
        shown = ["deeprec-train", "fit", "LOG.csv", *READER, "--epochs", str(a.epochs),
                 *a.fit_args, "-o", "weights.npz", "--report", "fit.json", "-q"]
        return {
            "generated": gen,
            "trained_clicks": int(s["clicks"]), "trained_items": int(s["items"]),
            "epochs": len(epochs),
            "fit_cpu_s": round(fit_cpu, 1),
            "epoch_cpu_s": round(epoch_cpu, 1),
            "epoch_wall_s": round(epoch_wall, 1),
            "clicks_per_cpu_s": round(s["clicks"] / max(epoch_cpu, 1e-9)),
            "clicks_per_wall_s_reported": s.get("clicks_per_s"),
            "command": {"cpu_s": round(fit["cpu_s"], 1), "wall_s": round(fit["wall_s"], 1),
                        "maxrss_mb": round(fit["maxrss_kb"] * 1024 / MB)},
            "baseline_read_preprocess": {"cpu_s": round(base["cpu_s"], 1),
                                         "wall_s": round(base["wall_s"], 1),
                                         "maxrss_mb": round(base["maxrss_kb"] * 1024 / MB),
                                         "held_mb": round(base["held_kb"] * 1024 / MB),
                                         "clicks": base["clicks"], "items": base["items"]},
            "package": {k: base[k] for k in ("deeprec_edge", "version", "kernel_path")},
            # the fit's peak above the memory held once the log is read and filtered
            # (an upper bound on what the fit itself needs when reading sets the peak)
            "fit_above_held_mb": round((fit["maxrss_kb"] - base["held_kb"]) * 1024 / MB),
            "load_avg_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
            "threads": a.threads, "nice": os.nice(0),
            "fit_command": " ".join(shown),
        }
    finally:
        if own:
            shutil.rmtree(d, ignore_errors=True)


HEADER = ("| log | clicks | items | one epoch: CPU / wall | clicks per CPU-second "
          "| peak RSS: `fit` (reading + filtering alone; held after them) |\n"
          "|---|---|---|---|---|---|")


def _size(n: float) -> str:
    if n >= 1e6:
        return f"{n / 1e6:.2f} M"
    if n >= 1e3:
        return f"{n / 1e3:.0f} k" if n >= 1e4 else f"{n / 1e3:.1f} k"
    return str(int(n))


def markdown_row(r: dict) -> str:
    g = r["generated"]
    sp = lambda n: f"{n:,}".replace(",", " ")                          # noqa: E731
    log = f"`make_synthetic({sp(g['users'])} users, {sp(g['items_generated'])} items)`"
    return (f"| {log} | {_size(r['trained_clicks'])} | {_size(r['trained_items'])} "
            f"| {r['epoch_cpu_s']:.1f} s / {r['epoch_wall_s']:.1f} s "
            f"| {_size(r['clicks_per_cpu_s'])} "
            f"| {r['command']['maxrss_mb']:,} MB ({r['baseline_read_preprocess']['maxrss_mb']:,} MB; "
            f"{r['baseline_read_preprocess']['held_mb']:,} MB) |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description="Measure `deeprec-train fit` (one epoch, default settings) on a generated "
                    "log of CLICKS clicks: clicks, items, CPU and wall seconds, clicks per "
                    "CPU-second, peak RSS.  Prints a markdown table row.",
        epilog="Anything after `--` is passed to `deeprec-train fit` (and to the baseline "
               "read), e.g. `-- --hidden 128`.  Run heavy measurements one at a time, "
               "e.g. `nice -n 10 python bench/scale_fit.py --header`.")
    p.add_argument("--clicks", type=int, default=5_000_000,
                   help="clicks in the generated log (at least this many; default 5000000)")
    p.add_argument("--items", type=int, default=20_000, help="catalogue size (default 20000)")
    p.add_argument("--clusters", type=int, default=6,
                   help="make_synthetic's item clusters (default 6, its default)")
    p.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    p.add_argument("--epochs", type=int, default=1, help="epochs to fit (default 1)")
    p.add_argument("--threads", type=int, default=1,
                   help="BLAS/OpenMP threads of the children (default 1)")
    p.add_argument("--keep", metavar="DIR", help="keep (and reuse) the log, model and report here")
    p.add_argument("--header", action="store_true", help="print the table header first")
    p.add_argument("--json", action="store_true", help="print everything measured as JSON")
    p.add_argument("--from-json", nargs="+", metavar="FILE",
                   help="measure nothing: print the table rows of saved --json outputs")
    p.add_argument("--_generate", metavar="CSV", help=argparse.SUPPRESS)
    p.add_argument("--_read-only", dest="_read_only", metavar="CSV", help=argparse.SUPPRESS)
    argv = list(sys.argv[1:] if argv is None else argv)
    fit_args = []
    if "--" in argv:
        i = argv.index("--")
        argv, fit_args = argv[:i], argv[i + 1:]
    a = p.parse_args(argv)
    a.fit_args = fit_args
    if a._generate:
        print(json.dumps(generate(a._generate, a.clicks, a.items, a.clusters, a.seed)))
        return 0
    if a._read_only:
        print(json.dumps(read_only(a._read_only, a.fit_args)))
        return 0
    if a.clicks < 100 or a.items < 2 * a.clusters or a.epochs < 1 or a.threads < 1:
        p.error("need --clicks >= 100, --items >= 2 x --clusters, --epochs >= 1, --threads >= 1")
    if not os.access(TIME_BIN, os.X_OK):
        p.error(f"{TIME_BIN} (GNU time) is needed: apt-get install -y time")
    if a.from_json:
        if a.header:
            print(HEADER)
        for path in a.from_json:
            with open(path, encoding="utf-8") as f:
                print(markdown_row(json.load(f)))
        return 0
    r = measure(a)
    if a.json:
        print(json.dumps(r, indent=2))
        return 0
    if a.header:
        print(HEADER)
    print(markdown_row(r))
    details(r)
    return 0


def details(r: dict) -> None:
    """What the table row leaves out, on stderr."""
    g, b = r["generated"], r["baseline_read_preprocess"]
    print(f"\ngenerated {g['clicks']:,} clicks ({g['users']:,} users, {g['items_clicked']:,} of "
          f"{g['items_generated']:,} items clicked, {g['csv_bytes'] / MB:.0f} MB CSV) in "
          f"{g['seconds']} s; baseline read + preprocess: {b['cpu_s']} s CPU, "
          f"{b['wall_s']} s wall, peak RSS {b['maxrss_mb']} MB, held after {b['held_mb']} MB; "
          f"the fit command: {r['command']['cpu_s']} s CPU, {r['command']['wall_s']} s wall "
          f"({r['fit_cpu_s']} s CPU more than the baseline); reported "
          f"{r['clicks_per_wall_s_reported'] or 0:,.0f} clicks per wall-second; load average "
          f"{r['load_avg_before_after'][0]} -> {r['load_avg_before_after'][1]}; "
          f"threads {r['threads']}, nice {r['nice']}; {r['package']['deeprec_edge']} "
          f"({r['package']['version']}, kernel path {r['package']['kernel_path']})\n"
          f"command: {r['fit_command']}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())

"""Peak memory of fine-tuning a 100,000-click history on the device.

Builds a device-sized global model (20,000 items, e = d = 64, two GRU layers
of H = 100 -- ``DEEPREC_BENCH_HIDDEN=100`` for one --, tied embeddings, tanh
head; random weights: memory and time do not depend on their values) and
one user's 100,000-click history from the synthetic world with personal
drift (``deeprec_edge.trainer.demo.make_world``; sessions of 3-9 clicks,
> 2 h apart), writes them as ``weights.npz`` and ``history.csv``, then
measures with GNU time, each in a fresh process:

- the real command: ``python -m deeprec_edge finetune weights.npz history.csv
  -o personal.npz --quiet --json`` (defaults: 5 epochs, newest 10 %
  held out for Recall@20 and early stopping);
- the baseline: ``python -c "import numpy"``.

The issue's goal: the fine-tune's peak RSS ("Maximum resident set size"
of ``/usr/bin/time -v``) stays under the baseline's plus 100 MB::

    python bench/memory_100k.py                 # ~30 s; prints a table
    python bench/memory_100k.py --json          # one JSON object instead
    python bench/memory_100k.py --clicks 200000 --keep /tmp/m100k

``/usr/bin/time`` is GNU time (Debian/Ubuntu: ``apt-get install -y time``).
The inputs are built in a child process, so nothing measured here carries
the builder's memory.

Also used by ``bench/test_bench_runtime.py``:

- ``make_problem`` / ``save_problem`` build the benchmark's model and
  history (``save_problem`` writes the ``.npz`` that
  ``bench/torch_finetune.py`` and ``--problem`` read);
- ``python bench/memory_100k.py --problem PROBLEM.npz [--epochs 5]`` runs
  deeprec-edge's fine-tune (``finetune_params``, holdout 0, no early
  stopping) on such a file in this fresh process and prints one JSON line
  with ``getrusage`` peak RSS (``maxrss_kb``; ``maxrss_kb_before`` after the
  imports and loading the problem), the time and the loss of each epoch --
  the 10,000-click memory comparison against the PyTorch peer.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))

#: The benchmark's device-sized model.  ``DEEPREC_BENCH_HIDDEN=100`` (comma-
#: separated sizes) runs everything with other GRU layers, e.g. one layer.
N_ITEMS = 20_000
HIDDEN = tuple(int(h) for h in os.environ.get("DEEPREC_BENCH_HIDDEN", "100,100").split(","))
DIM = 64
ID_OFFSET = 1000             #: catalogue ids are ID_OFFSET + dense index
SESSION_GAP = 3600.0         #: seconds; the model's session rule
MB = 1024 * 1024


# --------------------------------------------------------------------------
# the model and the history
# --------------------------------------------------------------------------

def make_problem(n_clicks: int, n_items: int = N_ITEMS, hidden=HIDDEN, dim: int = DIM,
                 seed: int = 0) -> SimpleNamespace:
    """``params`` (engine Params: random GRU4Rec-style init, tied), ``items``
    (int32 dense indices, time order), ``session_start`` (bool),
    ``popularity`` (float64 counts of a global log of 5,000 sessions) and
    ``timestamps`` (unix seconds: clicks 20-120 s apart, sessions > 2 h, the
    newest on 2023-11-14)."""
    from deeprec_edge.trainer.demo import make_world
    from deeprec_edge.trainer.fit import FitConfig, init_params

    world = make_world(n_items=n_items, n_clusters=max(1, n_items // 400), seed=seed)
    g_items, _ = world.global_log(5000)
    items, starts = world.user_log(n_clicks, rho=0.6)
    pop = np.bincount(g_items, minlength=n_items).astype(np.float64)
    params = init_params(n_items, FitConfig(hidden=list(hidden), dim=dim, tied=True), seed)
    rng = np.random.default_rng([seed, 7])
    gaps = np.where(starts, 7200.0 + rng.exponential(36000.0, starts.size),
                    rng.uniform(20.0, 120.0, starts.size))
    gaps[0] = 0.0
    # ending at 2023-11-14: 100k clicks span years, and clicks dated after the
    # reader's clock (+ a day) are skipped as wrongly dated
    t = np.cumsum(gaps)
    ts = np.floor(1_700_000_000.0 - (t[-1] - t))
    return SimpleNamespace(params=params, items=items, session_start=starts, popularity=pop,
                           timestamps=ts)


def save_problem(path: str, prob: SimpleNamespace) -> None:
    """The problem as a plain .npz (read by ``torch_finetune.load_problem``
    and ``load_problem`` here)."""
    p = prob.params
    arrays = {"E": p.E, "O": np.zeros((0, 0), np.float32) if p.O is None else p.O,
              "b_out": p.b_out, "W_p": p.W_p, "b_p": p.b_p,
              "activation": np.array(p.activation), "n_layers": np.array(len(p.layers)),
              "items": prob.items, "session_start": prob.session_start,
              "popularity": prob.popularity}
    for l, layer in enumerate(p.layers):
        for k, a in zip(("W_ih", "W_hh", "b_ih", "b_hh"), layer):
            arrays[f"layer{l}_{k}"] = a
    np.savez(path, **arrays)


def load_problem(path: str):
    """(engine Params, items, session_start, popularity) of a problem file."""
    from deeprec_edge._engine import Params

    with np.load(path, allow_pickle=False) as z:
        O = z["O"]
        params = Params(z["E"], [[z[f"layer{l}_{k}"] for k in ("W_ih", "W_hh", "b_ih", "b_hh")]
                                 for l in range(int(z["n_layers"]))],
                        z["W_p"], z["b_p"], None if O.size == 0 else O, z["b_out"],
                        str(z["activation"]))
        return params, z["items"], z["session_start"], z["popularity"]


def write_cli_inputs(out_dir: str, prob: SimpleNamespace):
    """``weights.npz`` (model file) and ``history.csv`` (item_id,timestamp)."""
    from deeprec_edge.model import model_from_params, save_model

    n = prob.params.n_items
    model = model_from_params(prob.params, np.arange(n, dtype=np.int64) + ID_OFFSET,
                              prob.popularity,
                              config={"trained_on": "random init (bench/memory_100k.py)",
                                      "session_gap_seconds": SESSION_GAP,
                                      "carry_state": False})
    weights = os.path.join(out_dir, "weights.npz")
    save_model(model, weights)
    history = os.path.join(out_dir, "history.csv")
    with open(history, "w", encoding="utf-8") as f:
        f.write("item_id,timestamp\n")
        f.writelines(f"{i + ID_OFFSET},{int(t)}\n"
                     for i, t in zip(prob.items.tolist(), prob.timestamps.tolist()))
    return weights, history


# --------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------

TIME_BIN = "/usr/bin/time"
_MAXRSS = re.compile(r"Maximum resident set size \(kbytes\):\s*(\d+)")
_WALL = re.compile(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\):\s*(\S+)")


def gnu_time_available() -> bool:
    if not os.access(TIME_BIN, os.X_OK):
        return False
    r = subprocess.run([TIME_BIN, "-v", "true"], capture_output=True, text=True)
    return r.returncode == 0 and _MAXRSS.search(r.stderr) is not None


def time_v(cmd, env=None, cwd=None):
    """Run ``cmd`` under ``/usr/bin/time -v``: (maxrss_kb, wall_s, stdout).
    Raises RuntimeError with the command's stderr if it fails."""
    r = subprocess.run([TIME_BIN, "-v", *cmd], capture_output=True, text=True, env=env, cwd=cwd)
    m = _MAXRSS.search(r.stderr)
    if r.returncode != 0 or m is None:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
    wall = float("nan")
    w = _WALL.search(r.stderr)
    if w:
        parts = [float(x) for x in w.group(1).split(":")]
        wall = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
    return int(m.group(1)), wall, r.stdout


def _one_thread_env():
    env = dict(os.environ)
    for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[v] = "1"
    return env


def measure_100k(n_clicks: int = 100_000, work_dir=None, epochs: int = 5, repeats: int = 3):
    """Build the inputs (child process), then measure the CLI fine-tune and
    ``import numpy`` under GNU time.  Returns a dict (sizes in kB)."""
    env = _one_thread_env()
    own = work_dir is None
    d = tempfile.mkdtemp(prefix="deeprec_m100k_") if own else work_dir
    os.makedirs(d, exist_ok=True)
    try:
        weights, history = os.path.join(d, "weights.npz"), os.path.join(d, "history.csv")
        if not (os.path.exists(weights) and os.path.exists(history)):
            subprocess.run([sys.executable, os.path.abspath(__file__), "--build-only",
                            "--clicks", str(n_clicks), "--keep", d], check=True, env=env)
        out = os.path.join(d, "personal.npz")
        ft_rss, ft_wall, stdout = time_v(
            [sys.executable, "-m", "deeprec_edge", "finetune", weights, history, "-o", out,
             "--epochs", str(epochs), "--quiet", "--json"], env=env, cwd=d)
        summary = json.loads(stdout)
        base = sorted(time_v([sys.executable, "-c", "import numpy"], env=env, cwd=d)[0]
                      for _ in range(repeats))
        base_rss = base[len(base) // 2]
        return {
            "clicks": n_clicks,
            "command": f"{TIME_BIN} -v python -m deeprec_edge finetune weights.npz history.csv "
                       f"-o personal.npz --epochs {epochs} --quiet --json",
            "finetune_maxrss_kb": ft_rss,
            "finetune_wall_s": ft_wall,
            "numpy_import_maxrss_kb": base_rss,
            "limit_kb": base_rss + 100 * 1024,
            "over_baseline_kb": ft_rss - base_rss,
            "weights_bytes": os.path.getsize(weights),
            "history_bytes": os.path.getsize(history),
            "summary": summary,
        }
    finally:
        if own:
            shutil.rmtree(d, ignore_errors=True)


def run_problem(path: str, epochs: int, seed: int = 0) -> dict:
    """deeprec-edge's fine-tune of a problem file in this process."""
    from deeprec_edge._finetune import finetune_params

    params, items, sess, pop = load_problem(path)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    msgs = []
    t0 = time.perf_counter()
    _, summary = finetune_params(params, items, sess, popularity=pop, epochs=epochs, seed=seed,
                                 holdout=0.0, early_stopping=False, progress=msgs.append)
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    losses = [float(re.search(r"loss (\S+)", m).group(1)) for m in msgs]
    return {"impl": "ours", "maxrss_kb": peak, "maxrss_kb_before": before, "seconds": dt,
            "losses": losses, "loss_first_epoch": summary["loss_first_epoch"],
            "loss_last_epoch": summary["loss_last_epoch"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clicks", type=int, default=100_000, help="history length (default 100,000)")
    ap.add_argument("--epochs", type=int, default=5, help="fine-tuning epochs (default 5)")
    ap.add_argument("--keep", metavar="DIR",
                    help="build/keep the inputs in DIR (reused if present)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--problem", metavar="NPZ", help="fine-tune this problem file here and print "
                    "getrusage peak RSS as JSON (see the module docstring)")
    ap.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.problem:
        print(json.dumps(run_problem(a.problem, a.epochs)))
        return 0
    if a.build_only:
        os.makedirs(a.keep, exist_ok=True)
        write_cli_inputs(a.keep, make_problem(a.clicks))
        return 0
    if not gnu_time_available():
        print(f"memory_100k.py: GNU time not found at {TIME_BIN} "
              f"(Debian/Ubuntu: apt-get install -y time)", file=sys.stderr)
        return 2
    r = measure_100k(a.clicks, a.keep, a.epochs)
    if a.json:
        print(json.dumps(r))
        return 0
    s = r["summary"]
    met = r["finetune_maxrss_kb"] < r["limit_kb"]
    print(f"history: {r['clicks']:,} clicks ({r['history_bytes'] / MB:.1f} MB CSV); "
          f"model: {r['weights_bytes'] / MB:.1f} MB")
    print(f"fine-tune: {s['epochs_run']} epochs, {s['windows']:,} windows, loss "
          f"{s['loss_first_epoch']:.4f} -> {s['loss_last_epoch']:.4f}, "
          f"{r['finetune_wall_s']:.1f} s")
    print(f"peak RSS, fine-tune:      {r['finetune_maxrss_kb'] / 1024:8.1f} MB   ({r['command']})")
    print(f"peak RSS, import numpy:   {r['numpy_import_maxrss_kb'] / 1024:8.1f} MB   "
          f"({TIME_BIN} -v python -c 'import numpy', median of 3)")
    print(f"fine-tune - numpy import: {r['over_baseline_kb'] / 1024:8.1f} MB   "
          f"(goal < 100 MB: {'met' if met else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

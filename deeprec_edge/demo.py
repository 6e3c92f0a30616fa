"""``deeprec-edge demo``: the whole on-device flow on embedded data.

The package ships a small global model (``data/demo_model.npz``) and one
user's click history (``data/demo_history.csv``), both made by the trainer
from a synthetic log with planted structure whose users drift to a new
taste after the training cutoff (``deeprec-train demo-data`` regenerates
them; see docs/model-format.md).  The demo ranks items with the global
model, fine-tunes a personal model on the history, and ranks again.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from typing import Optional

import numpy as np

__all__ = ["demo_paths", "run_demo", "write_demo_files", "NEXT_STEPS", "DEMO_CANDIDATES"]

#: What to run after the demo, on files you can have now.
NEXT_STEPS = ("deeprec-edge demo --files .   (writes the demo's weights.npz, history.csv "
              "and cands.csv here)\n  deeprec-edge finetune weights.npz history.csv -o me.npz\n"
              "  deeprec-edge recommend me.npz --history history.csv -k 20\n"
              "Your own: weights.npz is a global model from the cloud side (deeprec-train fit), "
              "history.csv your clicks (item_id,timestamp[,session_id]).")


def demo_paths():
    """Paths of the embedded demo model and history."""
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
    return os.path.join(here, "demo_model.npz"), os.path.join(here, "demo_history.csv")


def _fmt_items(ids, scores) -> str:
    return ", ".join(f"{i}" for i in np.asarray(ids).tolist())


def run_demo(quiet: bool = False, k: int = 10, seed: int = 0, output: Optional[str] = None,
             out=None) -> int:
    """Run the demo, printing to ``out`` (default stdout); returns 0."""
    from . import finetune, load_model, read_history, recommend, save_model
    from . import kernels

    out = out or sys.stdout
    show = not quiet and sys.stderr.isatty()
    say = (lambda s: print(s, file=sys.stderr, flush=True)) if show else (lambda s: None)
    model_path, hist_path = demo_paths()
    t0 = time.perf_counter()
    model = load_model(model_path)
    hist = read_history(hist_path, model=model)
    p = print
    p(f"deeprec-edge demo (kernel path: {kernels.active_path()})", file=out)
    p(f"global model: {model.n_items} items, {model.n_layers} GRU layer(s) of "
      f"{model.hidden_size} units, user vectors of {model.dim} -- "
      f"{model.config.get('trained_on', 'synthetic data')}", file=out)
    p(f"history: {len(hist)} clicks in {int(hist.session_starts(model.session_gap_seconds).sum())} "
      f"sessions (read from {os.path.basename(hist_path)}; it never leaves this machine)", file=out)
    ids0, _ = recommend(model, hist, k=k)
    p(f"\nbefore fine-tuning, top {k}: {_fmt_items(ids0, None)}", file=out)
    res = finetune(model, hist, seed=seed, epochs=8, progress=say)
    s = res.summary
    ids1, _ = recommend(res.model, hist, k=k)
    p(f"after fine-tuning,  top {k}: {_fmt_items(ids1, None)}", file=out)
    changed = len(set(np.asarray(ids1).tolist()) - set(np.asarray(ids0).tolist()))
    p(f"\n{changed} of the top {k} changed.", file=out)
    parts = s["recipe"]["parts"]
    p(f"recipe (chosen by the trainer, in the model file): {'+'.join(parts) or 'none'}",
      file=out)
    if "gru" in s:
        g = s["gru"]
        p(f"fine-tuned the last GRU layer and the head on {g['train_events']} next-click events "
          f"in {g['seconds']:.2f} s; sampled-softmax loss {g['loss_first_epoch']:.3f} (epoch 1) "
          f"-> {g['loss_last_epoch']:.3f} (epoch {g['epochs_run']})", file=out)
    pp = s.get("personal_parts") or {}
    if pp.get("parts") and pp.get("events"):
        p(f"fitted the personal parts {'+'.join(pp['parts'])} on {pp['events']} events in "
          f"{pp.get('seconds', 0.0):.2f} s", file=out)
    if s.get("kept_global"):
        p(f"kept the global model: {s['kept_global']}", file=out)
    if s["heldout_events"]:
        p(f"held-out newest clicks ({s['heldout_events']} events): Recall@20 "
          f"{s['recall20_before']:.3f} (global) -> {s['recall20_after']:.3f} (personal), "
          f"MRR@20 {s['mrr20_before']:.3f} -> {s['mrr20_after']:.3f}", file=out)
    if output:
        save_model(res.model, output)
        p(f"personal model written to {output}", file=out)
    p(f"done in {time.perf_counter() - t0:.2f} s. Next:\n  {NEXT_STEPS}", file=out)
    return 0


#: Items in the candidate file ``write_demo_files`` writes.
DEMO_CANDIDATES = 100


def write_demo_files(directory: str) -> list:
    """Copy the demo's model and history into ``directory`` as
    ``weights.npz`` and ``history.csv``, with ``cands.csv``: a candidate set
    for the demo user, one item id per line (:func:`deeprec_edge.candidates.read_candidates`
    reads it) -- the catalogue's :data:`DEMO_CANDIDATES` most popular items,
    what the trainer's ``deeprec-train candidates`` falls back to for a user
    it knows nothing about.  Written atomically; an existing file of any of
    these names is never overwritten (ValueError).  Returns the paths."""
    from ._atomic import atomic_write
    from .model import load_model
    names = ("weights.npz", "history.csv", "cands.csv")
    dst = [os.path.join(directory, n) for n in names]
    if not os.path.isdir(directory):
        raise ValueError(f"{directory} is not a directory")
    for d in dst:
        if os.path.lexists(d):
            raise ValueError(f"{d} exists: remove it or choose another directory")
    model_path, history_path = demo_paths()
    model = load_model(model_path)
    pop = np.asarray(model.popularity, np.float64)
    top = np.lexsort((np.arange(pop.size), -pop))[:DEMO_CANDIDATES]   # ties: lower index
    cands = "".join(f"{i}\n" for i in np.asarray(model.item_ids)[top].tolist()).encode()
    contents = []
    for src in (model_path, history_path):
        with open(src, "rb") as f:
            contents.append(f.read())
    contents.append(cands)
    for d, data in zip(dst, contents):
        atomic_write(d, lambda fh, data=data: fh.write(data))
    return dst

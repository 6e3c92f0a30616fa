"""Synthetic data with *personal* sequential drift, and the embedded demo.

Generative process (numpy only, deterministic for a seed):

- ``n_items`` items in ``n_clusters`` equal clusters; every item has three
  planted successors in its cluster.  A global session starts at a random
  item and follows them (probability 0.9 per click, else a uniform item of
  the cluster): this is everything the cloud sees before the cutoff.
- After the cutoff a user lives in one cluster and has a *personal*
  successor map (a random permutation of that cluster): with probability
  ``rho`` the next click is the personal successor, else the global rule.
  The global model cannot know the personal map; a personal model
  fine-tuned on the user's first clicks can learn it, so its next-click
  Recall@20 on the user's later clicks should beat the global model's.

``build_demo`` trains the small global model of ``deeprec-edge demo`` on
this data with :func:`deeprec_edge.trainer.fit.fit`, chooses its device
recipe by simulating devices of the same world
(:mod:`deeprec_edge.trainer.simulate`: users whose first clicks fine-tune and
whose later clicks score) and writes it with one user's history into the
package (``deeprec-train demo-data``).
"""
from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

__all__ = ["DriftWorld", "make_world", "build_demo", "ID_OFFSET"]

#: Catalogue ids are ``ID_OFFSET + index``, so an id/index mix-up shows.
ID_OFFSET = 1000


@dataclass
class DriftWorld:
    """The planted structure (see the module docstring)."""

    n_items: int
    cluster: np.ndarray        #: (N,) cluster of each item
    successors: np.ndarray     #: (N, 3) planted global successors
    rng: np.random.Generator

    def _session(self, start: int, length: int, personal: Optional[np.ndarray],
                 rho: float) -> List[int]:
        s = [int(start)]
        for _ in range(length - 1):
            i = s[-1]
            u = self.rng.random()
            if personal is not None and u < rho:
                s.append(int(personal[i]))
            elif self.rng.random() < 0.9:
                s.append(int(self.rng.choice(self.successors[i])))
            else:
                s.append(int(self.rng.choice(np.flatnonzero(self.cluster == self.cluster[i]))))
        return s

    def global_log(self, n_sessions: int) -> Tuple[np.ndarray, np.ndarray]:
        """Pre-cutoff sessions of the whole population: (items, session_start)."""
        items: List[int] = []
        starts: List[bool] = []
        for _ in range(n_sessions):
            s = self._session(self.rng.integers(self.n_items), int(self.rng.integers(3, 10)),
                              None, 0.0)
            items += s
            starts += [True] + [False] * (len(s) - 1)
        return np.asarray(items, np.int32), np.asarray(starts)

    def user_log(self, n_clicks: int, rho: float = 0.6) -> Tuple[np.ndarray, np.ndarray]:
        """One user's post-cutoff clicks: (items, session_start)."""
        c = self.rng.integers(self.cluster.max() + 1)
        members = np.flatnonzero(self.cluster == c)
        personal = np.arange(self.n_items)
        personal[members] = self.rng.permutation(members)
        items: List[int] = []
        starts: List[bool] = []
        while len(items) < n_clicks:
            s = self._session(self.rng.choice(members), int(self.rng.integers(3, 10)),
                              personal, rho)
            items += s
            starts += [True] + [False] * (len(s) - 1)
        return np.asarray(items[:n_clicks], np.int32), np.asarray(starts[:n_clicks])


def make_world(n_items: int = 300, n_clusters: int = 5, seed: int = 0) -> DriftWorld:
    """A world of ``n_items`` items in ``n_clusters`` clusters."""
    rng = np.random.default_rng(seed)
    cluster = np.repeat(np.arange(n_clusters), n_items // n_clusters)
    cluster = np.concatenate([cluster, np.full(n_items - cluster.size, n_clusters - 1)])
    succ = np.stack([rng.choice(np.flatnonzero(cluster == cluster[i]), 3, replace=False)
                     for i in range(n_items)])
    return DriftWorld(n_items, cluster, succ, rng)


def _timestamps(starts: np.ndarray, t0: float, rng) -> np.ndarray:
    """Clicks ~1 min apart within a session, sessions > 2 h apart."""
    gaps = np.where(starts, 7200.0 + rng.exponential(36000.0, starts.size),
                    rng.uniform(20.0, 120.0, starts.size))
    gaps[0] = 0.0
    return t0 + np.cumsum(gaps)


def build_demo(out_dir: str, seed: int = 0, log=print) -> Tuple[str, str]:
    """Train the demo's global model and write it with a sample history.

    Returns the paths of ``demo_model.npz`` and ``demo_history.csv``.
    """
    from deeprec_edge._atomic import atomic_write
    from deeprec_edge.model import compress_model, model_from_params, save_model
    from .fit import FitConfig, fit, init_params

    world = make_world(seed=seed)
    items, starts = world.global_log(4000)
    cfg = FitConfig(hidden=[32], tied=True)
    cfg.train.epochs = 8
    cfg.train.n_negatives = 128
    cfg.train.lr = 0.1
    cfg.train.seed = seed
    params = init_params(world.n_items, cfg, seed)
    fit(params, items, starts, cfg, progress=False, log=log)
    pop = np.bincount(items, minlength=world.n_items).astype(np.float64)
    ids = np.arange(world.n_items, dtype=np.int64) + ID_OFFSET
    config = {
        "trained_on": f"synthetic log with planted sequences (deeprec_edge.trainer.demo, seed {seed})",
        "loss": cfg.train.loss, "alpha": cfg.train.alpha,
        "session_gap_seconds": 3600.0, "carry_state": False}
    model = model_from_params(params, ids, pop, config=config)
    # the device recipe: simulated devices of the same world (first 160 clicks on the
    # device, the next 80 scored), the first four candidates of trainer/simulate.py plus
    # the gru part
    from deeprec_edge.recipe import FinetuneRecipe
    from .simulate import DEFAULT_GRID, SimUser, choose_recipe, simulate_recipes
    sims = []
    for u in range(24):
        ui, us = world.user_log(240, rho=0.6)
        t = _timestamps(us, 1_690_000_000.0, world.rng)
        sims.append(SimUser(u, ui, t, np.cumsum(us), 160,
                            np.flatnonzero(~us[161:]) + 160))
    grid = DEFAULT_GRID[:4] + (FinetuneRecipe(parts=("gru",)),)
    records = simulate_recipes(model, sims, grid, seed=seed, log=log)
    recipe = choose_recipe(records)
    config["recipe_selection"] = {"status": "chosen", "users": len(sims),
                                  "candidates": records, "chosen": recipe.to_dict()}
    model = model_from_params(params, ids, pop, config=config, recipe=recipe)
    # every weight matrix stored as float16 (format version 2): the wheel's
    # largest data file halved; the demo's recipe fine-tunes the GRU layer and
    # head in float32 from these values, and the device reads the table as stored
    model = compress_model(model, {"tables": "float16", "gru": "float16", "head": "float16"})
    os.makedirs(out_dir, exist_ok=True)
    mpath = os.path.join(out_dir, "demo_model.npz")
    save_model(model, mpath, compressed=True)
    u_items, u_starts = world.user_log(240, rho=0.6)
    ts = _timestamps(u_starts, 1_700_000_000.0, world.rng)
    hpath = os.path.join(out_dir, "demo_history.csv")
    rows = ["item_id,timestamp"] + [
        f"{i + ID_OFFSET},"
        f"{_dt.datetime.fromtimestamp(t, _dt.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')}"
        for i, t in zip(u_items.tolist(), ts.tolist())]
    atomic_write(hpath, lambda f: f.write(("\n".join(rows) + "\n").encode("utf-8")))
    log(f"wrote {mpath} ({os.path.getsize(mpath)} bytes) and {hpath} "
        f"({os.path.getsize(hpath)} bytes)")
    return mpath, hpath

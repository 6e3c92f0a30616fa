"""The global model's pipeline (trainer/pipeline.py): the repeat component is
learned on clicks the inner model never saw and kept only when it ranks
them better, the device recipe is chosen by simulated devices and written
into the file, small logs and session logs take the documented shortcuts."""
from __future__ import annotations

import numpy as np
import pytest

from deeprec_edge.model import load_model, save_model
from deeprec_edge.recipe import FinetuneRecipe
from deeprec_edge.trainer.data import Interactions
from deeprec_edge.trainer.fit import FitConfig, config_for, gru4rec_config
from deeprec_edge.trainer.pipeline import train_model
from deeprec_edge.trainer.simulate import DEFAULT_GRID
from deeprec_edge.trainer.synthetic import make_shoppers, make_synthetic


def _cfg(**kw) -> FitConfig:
    cfg = FitConfig(hidden=[16])
    cfg.train.epochs = 2
    cfg.train.n_negatives = 32
    cfg.train.lr = 0.1
    cfg.min_inner_events = 50
    cfg.min_simulated_users = 5
    cfg.simulate_users = 30
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


@pytest.mark.heavy
def test_returning_users_get_a_repeat_component_and_a_chosen_recipe(tmp_path):
    inter, _ = make_shoppers(n_users=80, clicks_per_user=80, repeat_rates=(0.5, 0.9), seed=1)
    m, hist = train_model(inter, _cfg(), progress=False, log=lambda s: None)
    cal = hist["calibration"]
    assert m.has_repeat and m.repeat.active
    assert cal["nll_after"] < cal["nll_before"]
    assert cal["heldout_recall_mrr"] > cal["heldout_recall_mrr_plain"] and cal["heldout_gain_ci_low"] > 0
    assert m.repeat.w[0] > 0                          # these users return: "seen" is a plus
    sel = m.config["recipe_selection"]
    assert sel["status"] == "chosen" and len(sel["candidates"]) == len(DEFAULT_GRID)
    assert m.recipe.to_dict() == sel["chosen"]
    best = max(sel["candidates"], key=lambda r: r["gain"])
    assert (m.recipe.parts == ()) == (not best["gain"] > 0)
    # all of it survives the file
    save_model(m, tmp_path / "m.npz")
    back = load_model(tmp_path / "m.npz")
    assert back.recipe == m.recipe and back.repeat == m.repeat


def test_nobody_returns_the_component_excludes_seen_items():
    # every user clicks distinct items (as on MovieLens): "seen" is strongly negative
    rng = np.random.default_rng(0)
    us, its, ts = [], [], []
    for u in range(80):
        items = rng.permutation(120)[:40]
        t = 1.6e9 + np.cumsum(np.where(np.arange(40) % 5 == 0, 7200.0, 60.0)) + u * 10
        us += [u] * 40
        its += items.tolist()
        ts += t.tolist()
    inter = Interactions.from_arrays(us, its, ts, session_gap=3600.0)
    m, hist = train_model(inter, _cfg(simulate_users=0), progress=False, log=lambda s: None)
    assert m.has_repeat and m.repeat.w[0] < -1.0


def test_small_logs_and_session_logs_take_the_documented_shortcuts():
    tiny, _ = make_synthetic(n_users=5, n_items=30, n_clusters=2, sessions_per_user=2, seed=2)
    m, hist = train_model(tiny, _cfg(min_inner_events=10_000), progress=False,
                          log=lambda s: None)
    assert not m.has_repeat and hist["calibration"]["status"].startswith("skipped")
    assert m.recipe == FinetuneRecipe()               # the default recipe
    # a session log: a repeat component may be learned, but no devices are simulated
    sess, _ = make_synthetic(n_users=60, n_items=40, n_clusters=2, seed=3)
    sess = Interactions(sess.df.assign(user=sess.df["session"]), sess.item_ids,
                        user_kind="session")
    m, hist = train_model(sess, _cfg(), progress=False, log=lambda s: None)
    assert hist["recipe_selection"] == {} and "recipe_selection" not in m.config
    # a fixed recipe skips the simulation and is written as given
    fixed = {"parts": ["bias"], "l2": 4.0}
    inter, _ = make_shoppers(n_users=40, clicks_per_user=60, seed=4)
    m, _ = train_model(inter, _cfg(recipe=fixed), progress=False, log=lambda s: None)
    assert m.recipe.parts == ("bias",) and m.recipe.l2 == 4.0


def test_fit_defaults_by_log_kind():
    assert config_for("session") == gru4rec_config()
    assert config_for("user") == FitConfig()


def test_device_streams_are_in_time_order_when_sessions_overlap():
    """The recipe simulation and the calibration read each user's clicks as a
    device does: in time order. With explicit sessions that overlap (two
    tabs) the log's rows are in session order, and the simulated devices'
    histories (cut with a binary search at the inner cutoff) held clicks
    after it and missed some before it."""
    from deeprec_edge.trainer.pipeline import _streams
    from helpers_logs import overlapping_sessions
    inter = overlapping_sessions(20, 4)
    cb = float(np.quantile(inter.times, 0.6))
    streams = _streams(inter)
    assert sum(len(s[1]) for s in streams) == len(inter)
    for u, it, st, tm, ss in streams:
        assert np.all(np.diff(tm) >= 0)
        n_hist = int(np.searchsorted(tm, cb, side="left"))
        assert (tm[:n_hist] < cb).all() and (tm[n_hist:] >= cb).all()
        # session starts where the session code changes, in this order
        assert st.tolist() == [True] + (ss[1:] != ss[:-1]).tolist()
        rows = inter.users == u
        assert sorted(zip(tm.tolist(), it.tolist())) == \
            sorted(zip(inter.times[rows].tolist(), inter.items[rows].tolist()))


def test_simulated_devices_are_users_with_new_clicks():
    """A device fine-tunes on clicks the global model never saw: a simulated
    device needs a click between the inner cutoffs (as evaluate's devices
    need one between theirs), two clicks of history and a test event after
    the second cutoff. A user whose history the inner model saw in full used
    to play a device too."""
    from deeprec_edge.trainer.pipeline import _streams, simulated_devices
    ca, cb = 1000.0, 2000.0
    rows = {0: [100, 200, 2100, 2200],            # nothing new between the cutoffs
            1: [100, 200, 1500, 2100, 2200],       # one new click: a device
            2: [1500, 2100, 2200],                 # one click of history
            3: [100, 1200, 1300],                  # no test event after cb
            4: [1100, 1200, 1300, 2100, 2200]}     # all history new: a device
    us, its, ts = [], [], []
    for u, t in rows.items():
        us += [u] * len(t)
        its += [(u + j) % 5 for j in range(len(t))]
        ts += t
    inter = Interactions.from_arrays(us, its, [float(x) for x in ts], session_gap=1e9)
    sims = simulated_devices(_streams(inter), ca, cb)
    assert [s.user for s in sims] == [1, 4]
    one = sims[0]
    assert one.n_hist == 3 and one.test_positions.tolist() == [2, 3]

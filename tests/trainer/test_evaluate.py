"""The evaluation protocols (trainer/evaluate.py).

DeepRec protocol: a planted population whose right personal answer is known
(users who start to return to their items after the cutoff; nobody did
before, so no global model can know who), the promise that no model trains
on a click later than a test click, the validation mode that never reads
the test part, determinism, the population counts, small samples, and the
report's documented keys.  Session protocol: the planted Markov chain.
Small generated data only."""
from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest

from deeprec_edge.trainer import evaluate as EV
from deeprec_edge.trainer.data import Interactions, filter_sessions, remap_items, split_by_time
from deeprec_edge.trainer.fit import FitConfig
from deeprec_edge.recipe import FinetuneRecipe
from deeprec_edge.trainer.synthetic import make_shoppers, make_synthetic

#: top-level keys of a DeepRec report (docs/trainer.md, "Report keys")
DEEPREC_KEYS = {"report", "version", "protocol", "created", "deeprec_edge_version", "data",
                "settings", "fit_config", "candidates", "methods", "best_non_gru",
                "comparisons", "breakdown", "finetune", "global_model", "models", "warnings",
                "timing"}
DEEPREC_DATA_KEYS = {"source", "format", "events", "cutoff", "cutoff_iso", "test_cutoff",
                     "test_cutoff_iso", "quantile", "split", "pre_cutoff_events",
                     "train_events", "catalogue_items", "unknown_item_events",
                     "centralized_events", "validation", "evaluated_users", "test_events",
                     "population", "users_without_pre_cutoff_history",
                     "device_history_clicks_median", "device_new_clicks_median"}
SESSION_KEYS = {"report", "version", "protocol", "created", "deeprec_edge_version", "data",
                "settings", "fit_config", "methods", "best_non_gru", "gru_model", "models",
                "warnings", "timing"}
METRIC_KEYS = {f"{m}@{k}" for m in ("recall", "mrr", "ndcg", "map") for k in (5, 10, 20)}
SUMMARY_KEYS = {"n_events", "n_units", "unit"} | METRIC_KEYS


def small_fit(hidden=24, epochs=3, lr=0.1, seed=0, simulate=True) -> FitConfig:
    cfg = FitConfig(hidden=[hidden])
    cfg.train.epochs = epochs
    cfg.train.lr = lr
    cfg.train.n_negatives = 64
    cfg.train.seed = seed
    cfg.min_inner_events = 50
    cfg.min_simulated_users = 10
    cfg.simulate_users = 80 if simulate else 0
    return cfg


def mean(report, method, metric, setting="full", ties="optimistic"):
    return report["methods"][method][setting][ties][metric]["mean"]


@pytest.fixture(scope="module")
def shoppers():
    return make_shoppers(n_users=160, clicks_per_user=120, repeat_rates=(0.0, 0.8),
                         repeat_from_cutoff=True, drift_share=0.0, cutoff_quantile=0.6, seed=0)


@pytest.fixture(scope="module")
def shop_report(shoppers):
    inter, truth = shoppers
    st = EV.DeepRecSettings(cutoff=truth.cutoff, n_candidates=60)
    st.finetune.parts = ("offset", "bias", "repeat")      # the part the planted answer needs
    st.finetune.holdout = 0.0
    return EV.evaluate_deeprec(inter, st, small_fit(), progress=False, log=lambda s: None)


@pytest.mark.heavy
def test_personal_learns_who_started_to_return(shop_report, shoppers):
    r = shop_report
    inter, truth = shoppers
    comp = r["comparisons"]["personal-global"]["full"]
    # in development (seed 0): MRR@20 +0.030 [+0.016, ...] (75 users better, 49 worse),
    # Recall@20 +0.006 (33 better, 23 worse; most targets are in everyone's top 20)
    assert comp["mrr@20"]["mean"] > 0.01 and comp["mrr@20"]["ci_low"] > 0
    assert comp["mrr@20"]["users_better"] > 1.3 * comp["mrr@20"]["users_worse"]
    assert comp["recall@20"]["mean"] > -0.002
    assert r["finetune"]["users"] == r["data"]["evaluated_users"]


@pytest.mark.heavy
def test_personal_repeat_weights_follow_the_planted_rates(shoppers):
    # the right personal answer: a user who started to return gets a larger
    # "seen" weight than one who did not
    # (the change of a typical seen item's repeat score, personal - global)
    inter, truth = shoppers
    st = EV.DeepRecSettings(cutoff=truth.cutoff, n_candidates=30)
    sp = EV.split_protocol(inter, st)
    models, _, _ = EV.fit_models(sp, ("global",), small_fit(simulate=False), log=lambda s: None,
                                 progress=False)
    g = models["global"]
    g.config["finetune"] = FinetuneRecipe(parts=("repeat",), l2=3.0, holdout=0.0,
                                          half_life=20.0).to_dict()
    personal, _ = EV.finetune_users(sp, g, st, progress=False)
    phi = np.array([1.0, np.log(2.0), np.log(4.0), 0.0, 0.0])   # seen once, 3 clicks ago
    eff = {u: (np.asarray(m.repeat.w) - np.asarray(g.repeat.w)) @ phi
           for u, m in personal.items()}
    rate = truth.repeat_rate[np.asarray(inter.user_ids)[list(eff)] - 1000]
    hi = np.array([e for e, r in zip(eff.values(), rate) if r > 0.5])
    lo = np.array([e for e, r in zip(eff.values(), rate) if r < 0.5])
    assert len(hi) > 10 and len(lo) > 10
    assert np.median(hi) > 0.1 and np.median(hi) > np.median(lo) + 0.1
    # in development: 0.79 of (returner, explorer) pairs ordered right (recent clicks weigh
    # more with half_life 20; 0.67 with every click weighing the same)
    assert np.mean(hi[:, None] > lo[None, :]) > 0.7


def test_protocol_never_trains_on_a_click_later_than_a_test_click(shoppers):
    inter, truth = shoppers
    st = EV.DeepRecSettings(cutoff=truth.cutoff)
    sp = EV.split_protocol(inter, st)
    first_test = min(float(eu.times[eu.test_pos[0] + 1]) for eu in sp.users)
    # the cloud trains before the first cutoff, the centralized model before the test part
    assert sp.train.times.max() < sp.cutoff <= sp.test_cutoff <= first_test
    assert sp.central.times.max() < sp.test_cutoff <= first_test
    for eu in sp.users:
        # the device history ends before the test part; every target is in it
        assert eu.times[eu.n_hist - 1] < sp.test_cutoff
        assert (eu.times[eu.test_pos + 1] >= sp.test_cutoff).all()
        assert eu.n_hist - eu.n_pre >= st.min_finetune_clicks
    # the centralized log is every catalogue click before the test part, no more, no less
    k = remap_items(inter, sp.catalogue)
    want = filter_sessions(k.subset(k.times < sp.test_cutoff), st.min_session_length)
    assert len(sp.central) == len(want)
    np.testing.assert_array_equal(np.sort(sp.central.times), np.sort(want.times))
    # the per-user share split, on request, keeps its semantics
    sh = EV.split_protocol(inter, EV.DeepRecSettings(cutoff=truth.cutoff, split="share"))
    assert sh.test_cutoff is None and len(sh.users) > 0
    # ... and its centralized model trains on every device's fine-tune share as well as the
    # cloud's clicks (not on the cloud's alone, which would make it the global model again)
    post = {}
    for eu in sh.users:
        post[eu.user] = (eu.times[eu.n_pre:eu.n_hist], eu.times[eu.n_hist:])
    cu, ct = sh.central.users, sh.central.times
    assert (ct >= sh.cutoff).sum() >= sum(len(a) for a, _ in post.values()) > 0
    for u, (ft, test) in post.items():
        mine = ct[cu == u]
        assert np.isin(ft, mine).all()
        assert not np.isin(test[test > ft.max(initial=-np.inf)], mine).any()


@pytest.mark.heavy
def test_report_keys_and_consistency(shop_report):
    r = shop_report
    assert set(r) == DEEPREC_KEYS
    assert r["report"] == EV.REPORT_FORMAT and r["protocol"] == "deeprec"
    assert set(r["data"]) == DEEPREC_DATA_KEYS
    n = r["data"]["evaluated_users"]
    assert r["data"]["population"]["evaluated"] == n
    assert set(r["methods"]) == set(EV.DEEPREC_METHODS)
    for m in EV.DEEPREC_METHODS:
        for setting in ("full", "candidates"):
            for ties in ("optimistic", "conservative"):
                s = r["methods"][m][setting][ties]
                assert set(s) == SUMMARY_KEYS
                assert s["unit"] == "user" and s["n_units"] == n     # one user count
                assert s["n_events"] == r["data"]["test_events"]
                for k in METRIC_KEYS:
                    v = s[k]
                    assert v["ci_low"] <= v["mean"] <= v["ci_high"]
            opt = r["methods"][m][setting]["optimistic"]
            con = r["methods"][m][setting]["conservative"]
            assert con["recall@20"]["mean"] <= opt["recall@20"]["mean"]
            assert opt["map@20"]["mean"] == pytest.approx(opt["mrr@20"]["mean"])
            assert opt["recall@5"]["mean"] <= opt["recall@10"]["mean"] <= opt["recall@20"]["mean"]
        hit = r["methods"][m]["candidates"]["optimistic"]["recall@20"]["event_mean"]
        assert hit <= r["candidates"]["recall_events"] + 1e-9
    assert r["best_non_gru"] in EV.BASELINE_METHODS
    assert set(r["comparisons"]) == {"personal-global", "personal-centralized",
                                     f"personal-{r['best_non_gru']}"}
    c = r["candidates"]
    assert c["recall"] >= max(c["recall_cloud"], c["recall_device"]) - 1e-12
    assert c["recall_events"] >= max(c["recall_cloud_events"], c["recall_device_events"]) - 1e-12
    assert c["recall_ci"][0] <= c["recall"] <= c["recall_ci"][1]
    assert c["mean_set_size"] <= 60
    assert r["settings"]["ci_used"] == ("bootstrap" if n < 100 else "normal")
    json.dumps(EV._clean(r), allow_nan=False)
    md = EV.markdown_report(r)
    for m in EV.DEEPREC_METHODS:
        assert f"| {m} |" in md
    assert "Paired per-user difference personal − global" in md
    assert f"Best non-GRU method (Recall@20, full ranking): {r['best_non_gru']}" in md


def synthetic_log():
    inter, _ = make_synthetic(n_users=40, n_items=60, n_clusters=3, drift=0.5,
                              sessions_per_user=6, seed=2)
    return inter


def test_deterministic_for_a_seed():
    inter = synthetic_log()
    st = EV.DeepRecSettings(n_candidates=20, seed=3,
                            methods=("popularity", "recency", "global", "personal"))
    a = EV.evaluate_deeprec(inter, st, small_fit(epochs=2, seed=3), progress=False,
                            log=lambda s: None)
    b = EV.evaluate_deeprec(inter, st, small_fit(epochs=2, seed=3), progress=False,
                            log=lambda s: None)
    assert json.dumps(EV._clean(a["methods"])) == json.dumps(EV._clean(b["methods"]))
    assert a["comparisons"] == b["comparisons"] and a["data"] == b["data"]


def test_validation_mode_never_reads_the_test_part():
    inter = synthetic_log()
    st = EV.DeepRecSettings(n_candidates=20, validation=True,
                            methods=("popularity", "cooccurrence", "global", "personal"))
    cfg = small_fit(epochs=1, simulate=False)
    a = EV.evaluate_deeprec(inter, st, cfg, progress=False, log=lambda s: None)
    # scramble every click of the test part (after the second cutoff)
    test_cut = float(np.quantile(inter.times, 0.9))
    df = inter.df.copy()
    rows = np.flatnonzero(inter.times >= test_cut)
    assert rows.size > 0
    rng = np.random.default_rng(0)
    df.loc[rows, "item"] = rng.permutation(df.loc[rows, "item"].to_numpy())
    b = EV.evaluate_deeprec(Interactions(df, inter.item_ids, inter.user_ids), st, cfg,
                            progress=False, log=lambda s: None)
    assert json.dumps(EV._clean(a["methods"])) == json.dumps(EV._clean(b["methods"]))
    assert a["data"]["validation"] is True


def test_users_and_methods_checks():
    inter = synthetic_log()
    with pytest.raises(ValueError, match="unknown method"):
        EV.evaluate_deeprec(inter, EV.DeepRecSettings(methods=("global", "oracle")))
    # nobody qualifies: the message counts what each filter removed
    with pytest.raises(ValueError, match=r"no user qualifies.*fewer than 1000 device click"):
        EV.evaluate_deeprec(inter, EV.DeepRecSettings(min_finetune_clicks=1000),
                            small_fit(epochs=1), progress=False, log=lambda s: None)
    with pytest.raises(ValueError, match="test_quantile must be in"):
        EV.evaluate_deeprec(inter, EV.DeepRecSettings(test_quantile=0.5))
    sess = Interactions.from_arrays([0, 0, 1, 1], [0, 1, 0, 1], [0, 1, 2, 3],
                                    user_kind="session")
    with pytest.raises(ValueError, match="evaluate-sessions"):
        EV.evaluate_deeprec(sess)


def test_small_samples_are_said_plainly():
    inter = synthetic_log()
    st = EV.DeepRecSettings(n_candidates=20, max_users=8,
                            methods=("popularity", "global", "personal"))
    r = EV.evaluate_deeprec(inter, st, small_fit(epochs=1, simulate=False), progress=False,
                            log=lambda s: None)
    assert r["data"]["evaluated_users"] == 8
    assert r["data"]["population"]["not_sampled"] > 0
    assert r["settings"]["ci_used"] == "bootstrap"
    assert r["warnings"] and "small sample" in r["warnings"][0]
    assert "**Warning:** small sample" in EV.markdown_report(r)


def test_session_protocol():
    inter, _ = make_synthetic(n_users=80, n_items=60, n_clusters=3, p_jump=0.05, seed=4)
    tr, te, _ = split_by_time(inter, 0.8, unit="session")
    r = EV.evaluate_sessions(tr, te, small_fit(epochs=3, simulate=False), progress=False,
                             log=lambda s: None)
    assert set(r) == SESSION_KEYS and r["protocol"] == "sessions"
    d = r["data"]
    assert d["catalogue_items"] == int((tr.item_support() > 0).sum())
    assert d["events_evaluated"] == d["test_events"] - d["test_sessions"]
    for m in EV.SESSION_METHODS:
        s = r["methods"][m]["full"]["optimistic"]
        assert set(s) == SUMMARY_KEYS and s["unit"] == "event"
        assert s["n_events"] == d["events_evaluated"]
    # the planted Markov chain: the GRU and the kNN methods beat popularity clearly
    pop = mean(r, "popularity", "recall@5")
    for m in ("gru", "item-knn", "cooccurrence", "v-sknn"):
        assert mean(r, m, "recall@5") > pop + 0.1, m
    md = EV.markdown_report(r)
    assert "| gru |" in md and "Session protocol" in md and r["best_non_gru"]


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.mark.heavy
def test_plot_writes_a_png(tmp_path, shop_report):
    try:
        import matplotlib.image as mpl_image  # noqa: F401
    except ImportError:
        pytest.skip('matplotlib not installed (pip install "deeprec-edge[trainer]")')
    path = tmp_path / "p.png"
    assert EV.plot_report(shop_report, str(path)) is True
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    assert len(data) > 20_000                      # four labelled panels, not an empty canvas
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.png"]     # no temporary file left
    with pytest.raises(ValueError, match="image format"):
        EV.plot_report(shop_report, str(tmp_path / "p.xyz"))
    assert not (tmp_path / "p.xyz").exists()


@pytest.mark.heavy
def test_plot_without_matplotlib(tmp_path, shop_report, monkeypatch):
    for name in ("matplotlib", "matplotlib.figure"):
        monkeypatch.setitem(sys.modules, name, None)
    path = tmp_path / "p.png"
    assert EV.plot_report(shop_report, str(path)) is False
    assert not path.exists()


@pytest.mark.parametrize("report, match", [
    ({}, "not an evaluation report"),
    ([], "not an evaluation report"),
    ({"protocol": "deeprec", "methods": {}}, "no methods"),
    ({"protocol": "other", "methods": {"global": {}}}, "unknown protocol"),
    ({"protocol": "deeprec", "methods": {"global": {"full": {}}}}, "no Recall@20 or MRR@20"),
])
def test_plot_rejects_bad_reports(tmp_path, report, match):
    path = tmp_path / "p.png"
    with pytest.raises(ValueError, match=match):
        EV.plot_report(report, str(path))
    assert list(tmp_path.iterdir()) == []


def test_clean_and_write_json(tmp_path):
    rep = {"a": float("nan"), "b": np.float32(1.5), "c": [np.int64(2), math.inf], "d": np.arange(2)}
    EV.write_json(rep, str(tmp_path / "r.json"))
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": None, "b": 1.5, "c": [2, None],
                                                             "d": [0, 1]}


def test_candidate_recall_averages_each_users_events_first():
    hits = {"cloud": [np.array([True, False, False, False]), np.array([False])],
            "device": [np.array([False, True, True, True]), np.array([True])],
            "union": [np.array([True, True, True, True]), np.array([True])]}
    hits["union"][0][3] = False
    r = EV.candidate_recall(hits)
    assert r["recall_cloud"] == pytest.approx((0.25 + 0.0) / 2)
    assert r["recall_cloud_events"] == pytest.approx(1 / 5)
    assert r["recall"] == r["recall_union"] == pytest.approx((0.75 + 1.0) / 2)
    assert r["recall_events"] == pytest.approx(4 / 5)
    assert r["recall_ci"][0] <= r["recall"] <= r["recall_ci"][1]
    assert EV.candidate_recall({"union": []})["recall"] is None


def test_the_devices_model_ranking_is_the_one_from_before_the_session():
    """Candidates.session_ranking: the model's ranking for the state after the
    last click before the event's session -- never a click of the session
    itself (those are not known when the session begins)."""
    from helpers_model import random_model
    from deeprec_edge.candidates import model_ranking

    m = random_model(n_items=30, e=6, hidden=6, seed=2)
    items = np.array([1, 2, 3, 4, 5, 6, 7, 8], np.int32)
    sessions = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    eu = EV.EvalUser(user=0, items=items, times=np.arange(8.0), sessions=sessions, n_pre=3,
                     n_hist=5, test_pos=np.array([5, 6]))
    c = EV.Candidates(m, {}, -np.ones((30, 1), np.int64), np.arange(30), n=30, n_recent=0,
                      n_neighbors=0, memory=0, ranked=12)
    starts = eu.starts()
    for p, s in ((3, 3), (4, 3), (5, 3), (6, 6), (7, 6)):
        np.testing.assert_array_equal(c.session_ranking(eu, p),
                                      model_ranking(m, items[:s], starts[:s], 12))
    assert c.session_ranking(eu, 1) is None              # the first session: nothing before
    c0 = EV.Candidates(m, {}, -np.ones((30, 1), np.int64), np.arange(30), n=30, n_recent=0,
                       n_neighbors=0, memory=0, ranked=0)
    assert c0.session_ranking(eu, 5) is None


def test_repeat_targets_and_rising_items_against_brute_force():
    rng = np.random.default_rng(3)
    items = rng.integers(0, 12, size=200)
    pos = np.sort(rng.choice(199, size=80, replace=False))
    want = [items[p + 1] in set(items[:p + 1].tolist()) for p in pos]
    np.testing.assert_array_equal(EV.repeat_targets(items, pos), want)
    # item 0: 10 of 100 cloud clicks, 10 of 20 device clicks: 5x its rate, rising;
    # item 1: 60 of 100, 6 of 20: half its rate; item 2: 30 of 100, 4 of 20 (0.67x);
    # item 3: none before, none between -> not rising
    pre = np.array([10, 60, 30, 0])
    between = np.array([10, 6, 4, 0])
    np.testing.assert_array_equal(EV.rising_items(pre, between), [True, False, False, False])
    np.testing.assert_array_equal(EV.rising_items(pre, between, ratio=0.6),
                                  [True, False, True, False])
    assert EV.rising_items(pre, np.zeros(4)) is None
    with pytest.raises(ValueError, match="supports"):
        EV.rising_items(pre, between[:3])


def test_breakdown_is_the_per_user_mean_within_each_kind():
    # ranks of three methods for 3 users' events, and which events are repeats:
    # the breakdown must equal a direct per-user mean over the selected events
    rng = np.random.default_rng(4)
    users = np.repeat([7, 8, 9], [5, 3, 6])
    flags = rng.random(users.size) < 0.5
    flags[:2] = [True, False]
    acc = {}
    ranks = {}
    for m in ("global", "centralized", "personal"):
        r = rng.integers(1, 40, size=users.size)
        ranks[m] = r
        a = EV.RankAccumulator()
        a.add_ranks(r[:8], r[:8], users=users[:8])      # batches as score_users adds them
        a.add_ranks(r[8:], r[8:], users=users[8:])
        acc[m] = {"full": a}
    sc = EV.Scores(acc, {}, [], users.size, {"repeat": [flags[:5], flags[5:8], flags[8:]]})
    bd = EV.event_breakdown(sc, ("global", "centralized", "personal"), "normal", 0)
    assert set(bd) == {"repeat", "new"}

    def per_user(m, keep, metric):
        vals = []
        for u in np.unique(users[keep]):
            r = ranks[m][keep & (users == u)]
            vals.append(np.mean(r <= 20) if metric == "recall" else np.mean((r <= 20) / r))
        return np.mean(vals), len(vals)

    for kind, keep in (("repeat", flags), ("new", ~flags)):
        assert bd[kind]["events"] == keep.sum()
        assert bd[kind]["share"] == pytest.approx(keep.mean())
        for m in ("global", "centralized", "personal"):
            for metric in ("recall", "mrr"):
                want, n_u = per_user(m, keep, metric)
                assert bd[kind]["methods"][m][f"{metric}@20"]["mean"] == pytest.approx(want)
                assert bd[kind]["users"] == n_u
        d = bd[kind]["personal-global"]["recall@20"]["mean"]
        assert d == pytest.approx(per_user("personal", keep, "recall")[0]
                                  - per_user("global", keep, "recall")[0])


@pytest.mark.heavy
def test_breakdown_finds_the_planted_gain_on_repeats(shop_report):
    # planted: users start to return to their items after the cutoff (nobody did
    # before); the personal models learn who -- the gain is on repeat targets
    bd = shop_report["breakdown"]
    n = shop_report["data"]["test_events"]
    assert bd["repeat"]["events"] + bd["new"]["events"] == n
    assert {"rising", "not_rising"} <= set(bd)
    assert bd["rising"]["events"] + bd["not_rising"]["events"] == n
    rep = bd["repeat"]["personal-global"]["recall@20"]
    assert rep["ci_low"] > 0
    assert rep["mean"] > bd["new"]["personal-global"]["recall@20"]["mean"]
    md = EV.markdown_report(shop_report)
    assert "Recall@20 by kind of test event" in md and "| repeat (an item" in md


def test_sessions_that_overlap_in_time_are_read_in_time_order():
    # explicit sessions that interleave (two tabs): rows come in session order, so a
    # user's times go down and up; the protocol must still cut by time
    from helpers_logs import overlapping_sessions
    inter = overlapping_sessions(40, 6)
    sp = EV.split_protocol(inter, EV.DeepRecSettings(quantile=0.5))
    assert sp.central.times.max() < sp.test_cutoff
    k = remap_items(inter, sp.catalogue)
    assert len(sp.central) == int((k.times < sp.test_cutoff).sum())
    assert len(sp.users) > 0
    for eu in sp.users:
        assert np.all(np.diff(eu.times) >= 0)
        assert (eu.times[:eu.n_pre] < sp.cutoff).all() and (eu.times[eu.n_pre:] >= sp.cutoff).all()
        assert (eu.times[:eu.n_hist] < sp.test_cutoff).all()
        assert (eu.times[eu.test_pos + 1] >= sp.test_cutoff).all()


def test_score_users_kinds_follow_the_ranks_event_by_event():
    # validation mode, sampled users, session starts, a baseline: the kind flags of
    # score_users equal a brute-force reading of each event, in the ranks' order
    inter, _ = make_shoppers(n_users=80, clicks_per_user=60, repeat_rates=(0.0, 0.8),
                             repeat_from_cutoff=True, drift_share=0.0, cutoff_quantile=0.6,
                             seed=1)
    st = EV.DeepRecSettings(quantile=0.5, validation=True, max_users=25, session_starts=True,
                            methods=("popularity", "global", "personal"), n_candidates=30)
    sp = EV.split_protocol(inter, st)
    models, _, _ = EV.fit_models(sp, st.methods, small_fit(simulate=False),
                                 log=lambda s: None, progress=False)
    cands = EV.build_candidates(sp, models["global"], st)
    personal, _ = EV.finetune_users(sp, models["global"], st, cands, progress=False)
    sc = EV.score_users(sp, models, personal, st, cands, progress=False)
    users, rep, tgt = [], [], []
    for eu in sp.users:
        for p in eu.test_pos:
            users.append(eu.user)
            tgt.append(eu.items[p + 1])
            rep.append(eu.items[p + 1] in set(eu.items[:p + 1].tolist()))
    pre = np.bincount(sp.train.items, minlength=len(sp.catalogue)).astype(float)
    cen = sp.central
    bet = np.bincount(cen.items[cen.times >= sp.cutoff], minlength=len(sp.catalogue))
    bet = bet.astype(float)
    ris = [bet[t] > 0 and bet[t] / bet.sum() >= 2 * pre[t] / pre.sum() for t in tgt]
    assert 0 < sum(ris) < len(ris) and 0 < sum(rep) < len(rep)
    for m in st.methods:
        np.testing.assert_array_equal(sc.acc[m]["full"].users, users)
    np.testing.assert_array_equal(np.concatenate(sc.kinds["repeat"]), rep)
    np.testing.assert_array_equal(np.concatenate(sc.kinds["rising"]), ris)


def test_breakdown_chooses_its_interval_per_kind():
    # 120 users in all, but only 5 with repeat events: "auto" bootstraps that kind
    users = np.repeat(np.arange(120), 2)
    flags = np.zeros(users.size, bool)
    flags[:10] = True
    acc = {}
    for m in ("global", "personal"):
        a = EV.RankAccumulator()
        a.add_ranks(np.arange(users.size) % 30 + 1, users=users)
        acc[m] = {"full": a}
    sc = EV.Scores(acc, {}, [], users.size, {"repeat": [flags]})
    bd = EV.event_breakdown(sc, ("global", "personal"), "auto", 0)
    assert bd["repeat"]["users"] == 5 and bd["repeat"]["ci_used"] == "bootstrap"
    assert bd["new"]["users"] == 115 and bd["new"]["ci_used"] == "normal"


def test_a_test_quantile_is_honoured_after_a_cutoff_date(shoppers):
    """--cutoff DATE --test-quantile Q: the test part starts at the Q time
    quantile of all clicks (it was the median after the date whatever Q
    said); a Q before the date is an error; no Q keeps the median."""
    inter, truth = shoppers
    t = inter.times
    for q in (0.8, 0.95):
        sp = EV.split_protocol(inter, EV.DeepRecSettings(cutoff=truth.cutoff, test_quantile=q))
        assert sp.test_cutoff == pytest.approx(float(np.quantile(t, q)))
    sp = EV.split_protocol(inter, EV.DeepRecSettings(cutoff=truth.cutoff))
    assert sp.test_cutoff == pytest.approx(float(np.quantile(t[t >= truth.cutoff], 0.5)))
    with pytest.raises(ValueError, match="is not after the cutoff"):
        EV.split_protocol(inter, EV.DeepRecSettings(cutoff=truth.cutoff, test_quantile=0.1))


def test_reports_always_hold_the_headline_cutoff():
    """ks without 20 still give Recall@20 / MRR@20 (the best non-GRU method
    and the tables are read there), and the table shows the ks asked for."""
    assert EV.report_ks((1, 50)) == (1, 20, 50)
    assert EV.report_ks((5, 10, 20)) == (5, 10, 20)
    head = EV._table({"settings": {"ks": [1, 20, 50]}, "methods": {}}, "full")[0]
    assert "Recall@1 | Recall@20 | Recall@50 | MRR@1 | MRR@20 | MRR@50 | NDCG@20" in head


def test_the_cloud_part_s_recall_is_the_part_the_device_uses():
    """A model that does not favour returns leaves the user's own items out of
    every part of the candidate set. The cloud part's recall was measured on
    the cloud's raw set, so on a log of repeats it counted the user's own
    items and came out above the union's (1.0 vs 0.37 on a synthetic
    MovieLens log). With a set as large as the catalogue nothing is cut, so
    every cloud-part hit is a union hit and no excluded item is a hit."""
    from deeprec_edge.candidates import returns_favoured
    from deeprec_edge.model import model_from_params
    from deeprec_edge.trainer.fit import init_params
    inter, _ = make_shoppers(n_users=30, clicks_per_user=60, repeat_rates=(0.8, 0.8), seed=3)
    st = EV.DeepRecSettings(methods=("global",))
    sp = EV.split_protocol(inter, st)
    N = len(sp.catalogue)
    st.n_candidates = N
    model = model_from_params(init_params(N, FitConfig(hidden=[8])), sp.catalogue,
                              sp.train.item_support().astype(np.float64))
    assert not returns_favoured(model)                  # no repeat component
    cands = EV.build_candidates(sp, model, st)
    sc = EV.score_users(sp, {"global": model}, {}, st, cands, progress=False)
    cloud, union = (np.concatenate(sc.hits[k]) for k in ("cloud", "union"))
    repeat = np.concatenate([EV.repeat_targets(eu.items, eu.test_pos,
                                               EV.first_clicks(eu.items, N))
                             for eu in sp.users])
    assert repeat.mean() > 0.3                          # the planted returns
    assert not (cloud & repeat).any()                   # left out, so not a hit
    assert not (cloud & ~union).any()
    rec = EV.candidate_recall(sc.hits)
    assert rec["recall_cloud"] <= rec["recall_union"]

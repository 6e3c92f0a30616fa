"""The synthetic generator and its oracle (trainer/synthetic.py)."""
import numpy as np
import pandas as pd
import pytest

from deeprec_edge.trainer import data as D
from deeprec_edge.trainer.metrics import recall_at_k
from deeprec_edge.trainer.synthetic import make_synthetic


def test_deterministic_for_a_seed():
    a, oa = make_synthetic(n_users=50, seed=3)
    b, ob = make_synthetic(n_users=50, seed=3)
    c, _ = make_synthetic(n_users=50, seed=4)
    pd.testing.assert_frame_equal(a.df, b.df)
    assert np.array_equal(oa.successors, ob.successors) and np.array_equal(oa.user_pref, ob.user_pref)
    assert not (len(a) == len(c) and np.array_equal(a.items, c.items))


def test_structure_times_and_ids():
    inter, orc = make_synthetic(n_users=80, n_items=120, n_clusters=4, seed=0)
    inter.validate()
    assert inter.item_ids.tolist() == list(range(1000, 1120))      # ids differ from codes
    assert inter.user_ids.tolist() == list(range(1000, 1080))
    # the time-gap rule recovers the generated sessions exactly
    assert np.array_equal(D.sessionize(inter, 3600).sessions, inter.sessions)
    off = inter.session_offsets()
    assert np.all(np.diff(off) >= 2)
    assert np.all(np.diff(inter.times)[np.diff(inter.sessions) == 0] <= 1800)
    # the planted matrices
    T = orc.transition_matrix()
    np.testing.assert_allclose(T.sum(1), 1.0)
    assert np.all(orc.item_cluster[orc.successors] == orc.item_cluster[:, None])
    np.testing.assert_allclose(np.bincount(orc.item_cluster, weights=orc.item_probs), 1.0)
    P = orc.next_item_probs([0, 1, 2], [-1, 5, 7], inter.times[:3])
    np.testing.assert_allclose(P.sum(1), 1.0)
    # the drift cutoff is the split's cutoff
    assert D.split_by_time(inter, 0.8).cutoff == orc.cutoff_time
    # sessions spread over the whole span: most users click on both sides of the cutoff
    assert len(np.unique(D.split_by_time(inter).test.users)) > 0.7 * 80


def test_transitions_follow_the_planted_matrix():
    inter, orc = make_synthetic(n_users=300, n_items=60, n_clusters=3, p_jump=0.0, p_noise=0.2,
                                session_length=12, seed=5)
    u, prev, t, y = orc.events(inter)
    counts = np.zeros((60, 60))
    np.add.at(counts, (prev, y), 1)
    rows = counts.sum(1) >= 200
    emp = counts[rows] / counts[rows].sum(1, keepdims=True)
    T = orc.transition_matrix()[rows]
    tv = 0.5 * np.abs(emp - T).sum(1)
    assert rows.sum() > 10 and tv.max() < 0.15


def test_deterministic_chain_has_oracle_recall_one():
    inter, orc = make_synthetic(n_users=30, n_items=40, n_clusters=2, n_successors=1, p_noise=0.0,
                                p_jump=0.0, seed=1)
    assert orc.expected_recall(inter, k=1) == pytest.approx(1.0)
    ranks, _ = orc.ranks(inter)
    assert np.all(ranks == 1)


def test_oracle_recall_is_what_the_generator_implies():
    inter, orc = make_synthetic(n_users=400, n_items=400, n_clusters=8, seed=11)
    expected = orc.expected_recall(inter, k=20)
    ranks, users = orc.ranks(inter)
    hits = recall_at_k(ranks, 20)
    se = np.sqrt(expected * (1 - expected) / len(hits))
    assert 0.3 < expected < 0.98
    assert abs(hits.mean() - expected) < 4 * se
    # knowing the user is worth something; the previous item is worth more than popularity
    pop = orc.expected_recall(inter, k=20, which="population")
    assert pop < expected
    top20_popular = np.argsort(-inter.item_support())[:20]
    _, _, _, y = orc.events(inter)
    assert np.isin(y, top20_popular).mean() < expected - 0.2


def test_drift_moves_users_toward_their_drift_cluster():
    inter, orc = make_synthetic(n_users=300, n_items=240, n_clusters=6, p_jump=0.5, drift=0.7,
                                seed=2)
    assert np.all(orc.drift_cluster >= 0)
    assert np.all(orc.drift_cluster != orc.user_pref.argmax(1))
    tr, te, cut = D.split_by_time(inter, 0.8)
    share = []
    for part in (tr, te):
        in_drift = orc.item_cluster[part.items] == orc.drift_cluster[part.users]
        share.append(in_drift.mean())
    assert share[1] > share[0] + 0.25
    # after the cutoff, a model of pre-cutoff behaviour loses oracle recall
    actual = orc.expected_recall(te, 20, include_session_starts=True)
    before = orc.expected_recall(te, 20, include_session_starts=True, which="before")
    assert actual > before + 0.03
    no_drift, o2 = make_synthetic(n_users=50, seed=2)
    assert np.all(o2.drift_cluster == -1) and np.array_equal(o2.user_pref, o2.user_pref_after)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="successors"):
        make_synthetic(n_items=10, n_clusters=5, n_successors=3)
    with pytest.raises(ValueError):
        make_synthetic(p_jump=1.5)

"""Item-item CF, embedding neighbours, candidate sets and their files (trainer/candidates.py)."""
import math

import numpy as np
import pandas as pd
import pytest

from deeprec_edge.trainer import candidates as C
from deeprec_edge.trainer.data import Interactions


def log_of_sessions(sessions, item_ids=None, n_items=None):
    """One user per session, clicks one second apart."""
    users, items, times = [], [], []
    for s, its in enumerate(sessions):
        users += [s] * len(its)
        items += list(its)
        times += list(range(len(its)))
    return Interactions.from_arrays(users, items, times, item_ids=item_ids, n_items=n_items)


def brute_cosine(inter, by="session"):
    X = C.unit_item_matrix(inter, by).toarray().astype(float)
    co = X.T @ X
    n = np.sqrt(np.diag(co))
    with np.errstate(divide="ignore", invalid="ignore"):
        sim = co / np.outer(n, n)
    np.fill_diagonal(sim, 0)
    return np.nan_to_num(sim)


def test_cosine_by_hand():
    # sessions {0,1}, {0,1}, {0,2}: C01 = 2, n0 = 3, n1 = 2 -> 2/sqrt(6); C02 = 1, n2 = 1 -> 1/sqrt(3)
    inter = log_of_sessions([[0, 1], [1, 0], [0, 2]])
    nb = C.item_item_cf(inter, 5)
    assert nb.indices[0].tolist() == [1, 2, -1, -1, -1]
    assert nb.scores[0, :2].tolist() == pytest.approx([2 / math.sqrt(6), 1 / math.sqrt(3)], rel=1e-6)
    assert nb.indices[2].tolist()[:1] == [0] and nb.counts().tolist() == [2, 1, 1]
    assert np.all(nb.indices != np.arange(3)[:, None])          # never its own neighbour
    # ties go to the lower item code, whatever the file order
    for sessions in ([[0, 1], [0, 2]], [[2, 0], [1, 0]]):
        assert C.item_item_cf(log_of_sessions(sessions), 2).indices[0].tolist() == [1, 2]
    shrunk = C.item_item_cf(inter, 5, shrink=10.0)
    assert shrunk.scores[0, 0] == pytest.approx(2 / (math.sqrt(6) + 10), rel=1e-6)
    assert C.item_item_cf(inter, 5, min_common=2).counts().tolist() == [1, 1, 0]


def test_cf_matches_brute_force_and_block_size_does_not_matter():
    rng = np.random.default_rng(0)
    sessions = [rng.choice(40, size=rng.integers(1, 7), replace=True) for _ in range(300)]
    inter = log_of_sessions(sessions, n_items=41)                # item 40 never clicked
    sim = brute_cosine(inter)
    big = C.item_item_cf(inter, 10)
    small = C.item_item_cf(inter, 10, max_block_nnz=5)
    assert np.array_equal(big.indices, small.indices)
    assert np.array_equal(big.scores, small.scores)
    for i in range(41):
        valid = big.indices[i] >= 0
        np.testing.assert_allclose(big.scores[i, valid], sim[i, big.indices[i, valid]], rtol=1e-6)
        expect = np.sort(sim[i][sim[i] > 0])[::-1][:10]
        np.testing.assert_allclose(big.scores[i, valid], expect, rtol=1e-6)
    assert big.counts()[40] == 0
    by_user = C.item_item_cf(inter, 10, by="user")              # one user per session here
    assert np.array_equal(by_user.indices, big.indices)
    with pytest.raises(ValueError, match="by"):
        C.item_item_cf(inter, 10, by="day")


def test_cf_recovers_planted_co_occurrence_clusters():
    rng = np.random.default_rng(1)
    n_items, k = 120, 4
    cluster = rng.permutation(np.arange(n_items) % k)
    members = [np.flatnonzero(cluster == c) for c in range(k)]
    sessions = []
    for _ in range(2000):
        c = rng.integers(k)
        s = list(rng.choice(members[c], size=rng.integers(2, 6), replace=False))
        if rng.random() < 0.1:                               # a little cross-cluster noise
            s.append(rng.integers(n_items))
        sessions.append(s)
    nb = C.item_item_cf(log_of_sessions(sessions, n_items=n_items), 10)
    same = cluster[nb.indices] == cluster[:, None]
    assert same.mean() > 0.97


def test_embedding_neighbors_vs_brute_force():
    rng = np.random.default_rng(2)
    E = rng.normal(size=(70, 8)).astype(np.float32)
    nb = C.embedding_neighbors(E, 5, block_size=16)
    S = E @ np.ascontiguousarray(E.T)  # not E @ E.T (BLAS syrk): see embedding_neighbors
    np.fill_diagonal(S, -np.inf)
    assert np.array_equal(nb.indices, np.argsort(-S, axis=1, kind="stable")[:, :5])
    cos = C.embedding_neighbors(E, 5, metric="cosine")
    En = E / np.linalg.norm(E, axis=1, keepdims=True)
    Sc = En @ np.ascontiguousarray(En.T)
    np.fill_diagonal(Sc, -np.inf)
    assert np.array_equal(cos.indices, np.argsort(-Sc, axis=1, kind="stable")[:, :5])
    q = rng.normal(size=(3, 8)).astype(np.float32)
    excl = np.zeros((3, 70), bool)
    best = np.argmax(q @ E.T, axis=1)
    excl[np.arange(3), best] = True
    got = C.embedding_neighbors(E, 70, queries=q, exclude=excl)
    assert not np.any(got.indices[:, :69] == best[:, None]) and np.all(got.indices[:, 69] == -1)
    with pytest.raises(ValueError, match="NaN"):
        C.embedding_neighbors(np.full((3, 2), np.nan), 2)


def test_recent_items_weights():
    inter = Interactions.from_arrays([0, 0, 0, 0, 1], [5, 6, 5, 7, 2], [0, 1, 2, 3, 0], n_items=8)
    u, i, w = C.recent_items(inter, n_recent=2, decay=0.5)
    assert u.tolist() == [0, 0, 1] and i.tolist() == [7, 5, 2] and w.tolist() == [1.0, 0.5, 1.0]


def two_cluster_setup():
    """Items 0-4 co-occur, items 5-9 co-occur; item 10 is only popular."""
    sessions = [[0, 1, 2], [1, 2, 3], [3, 4, 0], [5, 6, 7], [6, 7, 8], [8, 9, 5]] + [[10, 11]] * 5
    train = log_of_sessions(sessions, item_ids=np.arange(12) + 100)
    # a user who saw items 0 then 6 (6 most recent) and a user without history
    users = [0, 0, 1]
    hist = Interactions.from_arrays(users[:2], [0, 6], [0.0, 1.0], item_ids=train.item_ids,
                                    user_ids=["alice", "bob"])
    return train, hist


def test_user_candidates_recency_union_and_fill():
    train, hist = two_cluster_setup()
    cf = C.item_item_cf(train, 4)
    cs = C.user_candidates(hist, 6, cf=cf, users=[0, 1], n_recent=2, recency_decay=0.5,
                           popularity=train.item_support())
    assert cs.sizes().tolist() == [6, 6]
    alice = cs.for_user(0).tolist()
    assert 0 not in alice and 6 not in alice                         # seen items excluded
    assert set(alice[:2]) <= {5, 7, 8}                               # neighbours of the latest item first
    bob = cs.for_user(1).tolist()
    assert bob[:2] == [10, 11]                                       # cold user: popular items
    assert np.all(cs.scores[cs.offsets[1]:] == 0)
    # seen items come back with exclude_seen=False when they neighbour other recent items
    h2 = Interactions.from_arrays([0, 0], [0, 1], [0.0, 1.0], item_ids=train.item_ids)
    incl = C.user_candidates(h2, 5, cf=cf, exclude_seen=False).for_user(0).tolist()
    excl = C.user_candidates(h2, 4, cf=cf, exclude_seen=True).for_user(0).tolist()
    assert {0, 1} <= set(incl) and not {0, 1} & set(excl)
    # embeddings: two orthogonal directions for the clusters; the popular pair elsewhere
    E = np.zeros((12, 3), np.float32)
    E[:5, 0] = 1
    E[5:10, 1] = 1
    E[10:, 2] = 1
    only_emb = C.user_candidates(hist, 4, embeddings=E, users=[0], fill_popular=False)
    assert set(only_emb.for_user(0).tolist()) <= set(range(1, 10)) - {6}
    both = C.user_candidates(hist, 6, cf=cf, embeddings=E, users=[0], weights=(1.0, 1.0))
    got = both.for_user(0).tolist()
    assert len(got) == len(set(got)) == 6 and 0 not in got and 6 not in got
    assert np.all(np.diff(both.scores) <= 0)
    with pytest.raises(ValueError, match="rows"):
        C.user_candidates(hist, 4, cf=C.ItemNeighbors(np.zeros((3, 1), np.int32), np.zeros((3, 1), np.float32)))


def test_candidate_files_round_trip(tmp_path):
    train, hist = two_cluster_setup()
    cs = C.user_candidates(hist, 3, cf=C.item_item_cf(train, 4), users=[0, 1],
                           popularity=train.item_support())
    p = tmp_path / "cands.npz"
    cs.to_npz(p)
    with np.load(p, allow_pickle=False) as z:
        assert str(z["format"]) == C.CANDIDATES_FORMAT and z["user_ids"].tolist() == ["alice", "bob"]
        assert z["offsets"].tolist() == [0, 3, 6] and z["item_ids"].dtype == np.int64
        assert z["item_ids"].tolist() == (train.item_ids[cs.items]).tolist()
    back = C.load_candidates_npz(p, item_ids=train.item_ids)
    assert np.array_equal(back.items, cs.items) and np.array_equal(back.offsets, cs.offsets)
    assert back.user_ids.tolist() == ["alice", "bob"]
    assert {k: v.tolist() for k, v in back.as_dict().items()} == {k: v.tolist() for k, v in cs.as_dict().items()}
    q = tmp_path / "cands.csv"
    cs.to_csv(q, block_users=1)
    df = pd.read_csv(q)
    assert list(df.columns) == ["user_id", "item_id", "rank", "score"]
    assert df["rank"].tolist() == [1, 2, 3, 1, 2, 3]
    assert df.user_id.tolist() == ["alice"] * 3 + ["bob"] * 3
    assert df.item_id.tolist() == train.item_ids[cs.items].tolist()
    bad = tmp_path / "bad.npz"
    np.savez(bad, format=np.array("other"))
    with pytest.raises(ValueError, match="candidates"):
        C.load_candidates_npz(bad)


def test_candidate_recall_by_hand():
    item_ids = np.arange(5) + 10
    cs = C.CandidateSets(users=np.array([0, 1]), offsets=np.array([0, 2, 3]),
                         items=np.array([1, 2, 4], np.int32), scores=np.ones(3, np.float32),
                         item_ids=item_ids, user_ids=np.array([0, 1, 2]))
    test = Interactions.from_arrays([0, 0, 0, 1, 2], [1, 3, 2, 0, 4], [0, 1, 2, 0, 0], item_ids=item_ids)
    r = C.candidate_recall(cs, test)
    assert r["recall"] == pytest.approx(2 / 5)
    assert r["user_recall"] == pytest.approx((2 / 3 + 0 + 0) / 3)
    assert r["n_users"] == 3 and r["n_users_without_set"] == 1 and r["n_events"] == 5
    # a test log on another (catalogue-compatible) vocabulary is matched by id
    other = Interactions.from_arrays([0, 0], [0, 1], [0, 1], item_ids=[11, 13], user_ids=[0])
    assert C.candidate_recall(cs, other)["recall"] == pytest.approx(0.5)


def test_recent_items_are_the_newest_by_time_when_sessions_overlap():
    """Rows in session order whose sessions overlap in time: the most recent
    item is the one clicked last, not the one on the last row."""
    inter = Interactions.from_arrays([0, 0, 0], [1, 2, 3], [0.0, 300.0, 100.0],
                                     sessions=[0, 0, 1], n_items=4, session_gap=None)
    assert inter.times.tolist() == [0.0, 300.0, 100.0]      # the log's row order
    u, i, w = C.recent_items(inter, n_recent=3, decay=0.5)
    assert i.tolist() == [2, 3, 1] and w.tolist() == [1.0, 0.5, 0.25]

"""Ranks, tie conventions and metrics against hand-computed values (trainer/metrics.py)."""
import math

import numpy as np
import pytest

from deeprec_edge.trainer import metrics as M
from deeprec_edge.trainer.metrics import RANK_MISS


def test_ranks_with_ties_by_hand():
    s = np.array([[0.5, 0.9, 0.5, 0.1],
                  [0.5, 0.9, 0.5, 0.1],
                  [0.5, 0.9, 0.5, 0.1],
                  [1.0, 1.0, 1.0, 1.0]])
    t = [0, 1, 3, 2]
    opt, con = M.ranks_from_scores(s, t, ties="both")
    # target 0 (0.5): one strictly greater (0.9) -> 2; ties with item 2 count against -> 3
    assert opt.tolist() == [2, 1, 4, 1]
    assert con.tolist() == [3, 1, 4, 4]
    assert M.ranks_from_scores(s, t).tolist() == opt.tolist()
    assert M.ranks_from_scores(s, t, ties="conservative").tolist() == con.tolist()
    assert M.ranks_from_scores(s[0], 2, ties="both")[1].tolist() == [3]


def test_nan_mask_and_missing_targets():
    s = np.array([[np.nan, 0.2, 0.3],
                  [0.1, np.nan, 0.3],
                  [0.1, 0.2, 0.3],
                  [0.1, 0.2, 0.3]])
    opt, con = M.ranks_from_scores(s, [1, 1, -1, 0], ties="both")
    assert opt.tolist() == [2, 3, RANK_MISS, 3]    # NaN never above; NaN target ranks last
    assert con.tolist() == [2, 3, RANK_MISS, 3]
    mask = np.array([[1, 1, 0], [1, 1, 1], [1, 1, 1], [0, 1, 1]], bool)
    opt, con = M.ranks_from_scores(s, [1, 0, 2, 0], ties="both", mask=mask)
    assert opt.tolist() == [1, 2, 1, RANK_MISS]     # masked-out item 2 no longer competes
    with pytest.raises(IndexError):
        M.ranks_from_scores(s, [3, 0, 0, 0])
    with pytest.raises(ValueError, match="ties"):
        M.ranks_from_scores(s, [0, 0, 0, 0], ties="random")


def test_blockwise_equals_one_block():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 20, size=(257, 90)).astype(np.float32)   # many ties
    t = rng.integers(0, 90, size=257)
    a = M.ranks_from_scores(s, t, ties="both")
    b = M.ranks_from_scores(s, t, ties="both", max_block_elems=100)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    # brute force
    st = s[np.arange(257), t][:, None]
    assert np.array_equal(a[0], 1 + (s > st).sum(1))
    assert np.array_equal(a[1], (s >= st).sum(1))


def test_metrics_by_hand():
    r = np.array([1, 2, 5, 21, RANK_MISS])
    assert M.recall_at_k(r, 20).tolist() == [1, 1, 1, 0, 0]
    assert M.recall_at_k(r, 1).tolist() == [1, 0, 0, 0, 0]
    assert M.mrr_at_k(r, 20).tolist() == pytest.approx([1, 0.5, 0.2, 0, 0])
    assert M.ndcg_at_k(r, 20).tolist() == pytest.approx([1, 1 / math.log2(3), 1 / math.log2(6), 0, 0])
    assert M.map_at_k(r, 5).tolist() == pytest.approx([1, 0.5, 0.2, 0, 0])
    assert M.metric_values(r, "mrr", 2).tolist() == pytest.approx([1, 0.5, 0, 0, 0])
    assert M.recall_at_k(np.array([1.0, np.inf]), 5).tolist() == [1, 0]
    with pytest.raises(ValueError, match="unknown metric"):
        M.metric_values(r, "auc", 5)


def test_multi_item_average_precision_by_hand():
    # ranking a > b > c > d; relevant {a, c}: AP@3 = (1/1 + 2/3) / 2
    s = np.array([0.9, 0.8, 0.7, 0.1])
    assert M.average_precision_at_k(s, [0, 2], 3)[0] == pytest.approx((1 + 2 / 3) / 2)
    assert M.average_precision_at_k(s, [0, 2], 1)[0] == pytest.approx(1.0)        # / min(k, m) = 1
    assert M.average_precision_at_k(s, [3], 3)[0] == 0.0
    lists = [[0, 1, 2, 3], [1, 1, 3, -1]]
    got = M.average_precision_from_lists(lists, [[0, 2], [3, 9]], 3)
    assert got.tolist() == pytest.approx([(1 + 2 / 3) / 2, (1 / 3) / 2])
    # ties: relevant item 2 ties with non-relevant item 1
    t = np.array([[0.9, 0.5, 0.5, 0.1]])
    opt = M.average_precision_at_k(t, [[0, 2]], 3, ties="optimistic")[0]
    con = M.average_precision_at_k(t, [[0, 2]], 3, ties="conservative")[0]
    assert opt == pytest.approx(1.0) and con == pytest.approx((1 + 2 / 3) / 2)
    # two tied relevant items on top: precision never exceeds 1
    assert M.average_precision_at_k(np.array([1.0, 1.0, 0.0]), [0, 1], 2)[0] == pytest.approx(1.0)
    assert np.isnan(M.average_precision_at_k(s, [], 3)[0])


def test_per_user_means_and_intervals():
    users = np.array([7, 7, 7, 3])
    vals = np.array([1.0, 0.0, 0.0, 1.0])
    u, m = M.per_user_mean(vals, users)
    assert u.tolist() == [3, 7] and m.tolist() == pytest.approx([1.0, 1 / 3])
    x = np.array([0.0, 1.0, 1.0, 0.0, 1.0])
    mean, lo, hi = M.mean_ci(x)
    half = 1.959963984540054 * x.std(ddof=1) / math.sqrt(5)
    assert (mean, lo, hi) == pytest.approx((0.6, 0.6 - half, 0.6 + half))
    b1 = M.mean_ci(x, method="bootstrap", n_boot=500, seed=3)
    b2 = M.mean_ci(x, method="bootstrap", n_boot=500, seed=3)
    assert b1 == b2 and b1[1] <= 0.6 <= b1[2]
    assert np.isnan(M.mean_ci([1.0])[1])


def test_summarize_user_vs_event_average():
    ranks = np.array([1, 30, 30, 2])
    users = np.array([0, 0, 0, 1])
    s = M.summarize(ranks, users=users, ks=(20,), metrics=("recall", "mrr"))
    assert s["n_events"] == 4 and s["n_units"] == 2 and s["unit"] == "user"
    assert s["recall@20"]["mean"] == pytest.approx((1 / 3 + 1) / 2)
    assert s["recall@20"]["event_mean"] == pytest.approx(0.5)
    assert s["mrr@20"]["mean"] == pytest.approx((1 / 3 + 0.5) / 2)
    e = M.summarize(ranks, ks=(5,), metrics=("ndcg",))
    assert e["unit"] == "event" and set(e) == {"n_events", "n_units", "unit", "ndcg@5"}


def test_accumulator_batches_equal_one_pass():
    rng = np.random.default_rng(1)
    s = rng.normal(size=(100, 50))
    s[:, 7] = s[:, 8]                                   # some ties
    t = rng.integers(0, 50, 100)
    u = rng.integers(0, 10, 100)
    acc = M.RankAccumulator()
    for a in range(0, 100, 32):
        acc.add_scores(s[a:a + 32], t[a:a + 32], users=u[a:a + 32])
    one = M.ranks_from_scores(s, t, ties="both")
    assert len(acc) == 100
    assert np.array_equal(acc.optimistic, one[0]) and np.array_equal(acc.conservative, one[1])
    summ = acc.summary(ks=(10,))
    assert summ["optimistic"]["recall@10"]["mean"] >= summ["conservative"]["recall@10"]["mean"]
    acc2 = M.RankAccumulator()
    acc2.add_ranks(one[0], one[1], users=u)
    assert acc2.summary(ks=(10,)) == summ
    with pytest.raises(ValueError, match="users"):
        acc2.add_ranks(one[0])
    with pytest.raises(ValueError, match="conservative"):
        M.RankAccumulator().add_ranks([3], [2])

"""The device's own candidates (deeprec_edge.candidates): output-table
neighbours against a float64 brute force (ties to the lower index, never the
item itself), and the order of device_candidates."""
from __future__ import annotations

import numpy as np
import pytest

from deeprec_edge.candidates import device_candidates, item_neighbors, returns_favoured
from deeprec_edge.model import model_from_params, params_of
from deeprec_edge.repeat import RepeatSpec

from helpers_model import random_model


def test_item_neighbors_match_brute_force_with_ties():
    m = random_model(n_items=60, e=8, hidden=8, tied=True, seed=3)
    m.E[10] = m.E[11]              # two identical rows: a tie for every query
    items = np.array([0, 10, 11, 59, 0])
    got = item_neighbors(m, items, 7)
    O = m.out_table.astype(np.float64)
    for r, i in enumerate(items):
        s = O @ O[i]
        s[i] = -np.inf
        ref = sorted(range(60), key=lambda j: (-s[j], j))[:7]
        # float32 products can reorder items closer than rounding: compare scores
        np.testing.assert_allclose(s[got[r]], s[ref], rtol=1e-5, atol=1e-5)
        assert i not in got[r]
    # the tie: 10 and 11 are each other's nearest... and 10 comes before 11 elsewhere
    row = list(got[0])
    if 10 in row and 11 in row:
        assert row.index(10) < row.index(11)
    assert item_neighbors(m, [], 3).shape == (0, 3)


def _with_repeat(w):
    base = random_model(n_items=50, e=8, hidden=8, tied=True, seed=4)
    return model_from_params(params_of(base), base.item_ids, base.popularity,
                             repeat=RepeatSpec(scale=1.0, w=w, memory=20))


def test_device_candidates_order_and_size():
    m = _with_repeat((1.0, 0.2, -0.1, 0.0, 0.0))         # returns likely
    assert returns_favoured(m)
    hist = [5, 7, 5, 9, 3]
    c = device_candidates(m, hist, n=12, n_recent=2, n_neighbors=3, memory=10,
                          cloud=[40, 41, 3, 42])
    # the user's items newest first, then neighbours of the 2 newest, then the cloud's
    assert list(c[:4]) == [3, 9, 5, 7]
    nb = item_neighbors(m, [3, 9], 3).reshape(-1)
    expect = [3, 9, 5, 7] + [x for x in dict.fromkeys(nb) if x not in (3, 9, 5, 7)]
    expect += [x for x in (40, 41, 42) if x not in expect]
    assert list(c) == expect[:12]
    assert len(set(c.tolist())) == len(c)
    assert len(device_candidates(m, hist, n=3)) == 3
    # a neighbour table (e.g. the cloud's CF lists) instead of the output table, and a fill
    table = -np.ones((50, 2), np.int64)
    table[3] = [11, 12]
    table[9] = [12, 13]
    c = device_candidates(m, hist, n=9, n_recent=2, n_neighbors=2, neighbors=table,
                          fill=np.arange(50))
    assert list(c) == [3, 9, 5, 7, 11, 12, 13, 0, 1]


def test_the_users_items_join_only_when_the_model_expects_returns():
    nobody_returns = _with_repeat((-3.0, -1.0, -1.0, -1.0, -1.0))   # as on MovieLens
    assert not returns_favoured(nobody_returns)
    assert not returns_favoured(random_model())                      # no repeat component
    c = device_candidates(nobody_returns, [5, 7, 9], n=5, n_recent=0, cloud=[1, 2])
    assert list(c) == [1, 2]
    assert list(device_candidates(nobody_returns, [], cloud=[1, 2])) == [1, 2]


def test_neighbours_on_a_compressed_table_are_those_of_its_values():
    from deeprec_edge.model import compress_model
    from deeprec_edge.quant import dequantize
    m = random_model(n_items=60, e=8, hidden=8, tied=False, seed=6)
    c = compress_model(m, {"O": "int8"})
    inflated = m.copy()
    inflated.O = np.ascontiguousarray(dequantize(c.O), np.float32)
    items = np.arange(60)
    np.testing.assert_array_equal(item_neighbors(c, items, 5), item_neighbors(inflated, items, 5))


def test_model_ranking_is_the_models_own_order_against_a_float64_reference():
    """model_ranking: the n best items of scale * (O.u + b) + w.phi (the
    float64 reference of test_session_repeat), equal scores by index."""
    from test_session_repeat import GAP, _model, _stream, reference_scores
    from deeprec_edge.candidates import model_ranking

    rng = np.random.default_rng(5)
    model = _model(layers=(10, 6))
    items, times = _stream(rng, 40)
    starts = np.r_[True, np.diff(times) > GAP]
    for j in (0, 7, 23, 39):
        ref = reference_scores(model, items[:j + 1], times[:j + 1])
        got = model_ranking(model, items[:j + 1], starts[:j + 1], n=15)
        assert got.shape == (15,) and len(set(got.tolist())) == 15
        # the scores of the items returned are the reference's 15 best, in order
        np.testing.assert_allclose(ref[got], np.sort(ref)[::-1][:15], rtol=2e-4, atol=2e-4)
    assert model_ranking(model, [], n=5).size == 0
    assert model_ranking(model, items, starts, n=10_000).size == model.n_items
    with pytest.raises(ValueError, match="session_start"):
        model_ranking(model, items, starts[:3])


def test_model_ranking_ties_go_to_the_lower_index_and_nan_scores_last():
    from deeprec_edge.candidates import model_ranking
    m = random_model(n_items=30, e=6, hidden=6, tied=False, seed=8)
    m.O[[4, 9, 17]] = m.O[20]                 # four items with the same score
    m.output_bias[[4, 9, 17]] = m.output_bias[20]
    full = model_ranking(m, [1, 2], n=30)
    pos = [list(full).index(i) for i in (4, 9, 17, 20)]
    assert pos == sorted(pos) and pos[-1] - pos[0] == 3     # together, by index
    # cut through the tied group: the lower indices are kept
    k = pos[0] + 2
    assert list(model_ranking(m, [1, 2], n=k)[-2:]) == [4, 9]
    m.O[7] = np.nan
    assert model_ranking(m, [1, 2], n=30)[-1] == 7


def test_the_users_items_are_left_out_when_returns_are_unlikely():
    nobody_returns = _with_repeat((-3.0, -1.0, -1.0, -1.0, -1.0))
    returns = _with_repeat((1.0, 0.2, -0.1, 0.0, 0.0))
    hist = [5, 7, 9]
    table = -np.ones((50, 3), np.int64)
    table[9] = [7, 11, 12]                    # a neighbour she already clicked
    kw = dict(n=8, n_recent=1, n_neighbors=3, neighbors=table, ranked=[5, 13, 14],
              cloud=[7, 15], fill=np.arange(50))
    c = device_candidates(nobody_returns, hist, **kw)
    assert list(c) == [11, 12, 13, 14, 15, 0, 1, 2]   # 5, 7, 9 nowhere, the set still full
    # the same model told to keep them; and a model that expects returns keeps them
    assert list(device_candidates(nobody_returns, hist, exclude_seen=False, **kw)) == \
        [7, 11, 12, 5, 13, 14, 15, 0]
    assert list(device_candidates(returns, hist, **kw)[:3]) == [9, 7, 5]
    assert 5 not in device_candidates(returns, hist, exclude_seen=True, **kw)


def test_model_ranking_on_a_compressed_model_is_that_of_its_values():
    from deeprec_edge.candidates import model_ranking
    from deeprec_edge.model import compress_model
    from deeprec_edge.quant import dequantize
    m = random_model(n_items=60, e=8, hidden=8, tied=False, seed=6)
    c = compress_model(m, {"O": "int8", "E": "int4"})
    inflated = m.copy()
    inflated.O = np.ascontiguousarray(dequantize(c.O), np.float32)
    inflated.E = np.ascontiguousarray(dequantize(c.E), np.float32)
    for h in ([1, 2, 3], [59, 0, 59, 7]):
        a, b = model_ranking(c, h, n=20), model_ranking(inflated, h, n=20)
        # the same items; float32 products of close scores may swap neighbours
        assert set(a[:15].tolist()) <= set(b.tolist())


def test_indices_outside_the_catalogue_are_refused_by_name():
    from deeprec_edge.candidates import model_ranking
    m = _with_repeat((1.0, 0.2, -0.1, 0.0, 0.0))               # 50 items
    with pytest.raises(ValueError, match=r"cloud: index 50 is outside \[0, 49\]"):
        device_candidates(m, [1, 2], cloud=[3, 50])
    with pytest.raises(ValueError, match="ranked: index -1"):
        device_candidates(m, [1, 2], ranked=[-1, 4])
    with pytest.raises(ValueError, match="fill: expected integer item indices"):
        device_candidates(m, [1, 2], fill=np.array([0.5]))
    with pytest.raises(ValueError, match="history_items: index 99"):
        device_candidates(m, [1, 99])
    with pytest.raises(ValueError, match="history_items: index 77"):
        model_ranking(m, [77])
    assert device_candidates(m, np.array([], np.float64), n=3, fill=np.arange(50)).size == 3
    table = -np.ones((50, 2), np.int64)
    table[2] = [4, 99]                                           # a neighbour beyond 49
    with pytest.raises(ValueError, match="neighbors: index 99"):
        device_candidates(m, [1, 2], neighbors=table, n_recent=2, n_neighbors=2)
    with pytest.raises(ValueError, match=r"neighbors: expected a \[50, k\] table"):
        device_candidates(m, [1, 2], neighbors=table[:10])


def test_memory_none_keeps_every_item_of_hers():
    """memory=None means no limit (it meant none of her items)."""
    m = _with_repeat((1.0, 0.2, -0.1, 0.0, 0.0))
    hist = [5, 7, 5, 9, 3]
    c = device_candidates(m, hist, n=4, memory=None, n_recent=0)
    assert list(c) == [3, 9, 5, 7]

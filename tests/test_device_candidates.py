"""The device's own candidates (deeprec_edge.candidates): output-table
neighbours against a float64 brute force (ties to the lower index, never the
item itself), and the order of device_candidates."""
from __future__ import annotations

import numpy as np

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

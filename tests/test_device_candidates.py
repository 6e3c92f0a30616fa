"""The device's own candidates (deeprec_edge.candidates): output-table
neighbours against a float64 brute force (ties to the lower index, never the
item itself), and the order of device_candidates."""
from __future__ import annotations

import numpy as np

from deeprec_edge.candidates import device_candidates, item_neighbors

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


def test_device_candidates_order_and_size():
    m = random_model(n_items=50, e=8, hidden=8, tied=True, seed=4)
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
    assert list(device_candidates(m, [], cloud=[1, 2])) == [1, 2]

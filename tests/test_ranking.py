"""The one ranking path (deeprec_edge.ranking) against a plain-Python
reference written from the definition, under ties, NaN/inf and masks; and
every evaluation using it (fine-tuning's held-out check, the trainer's
validation) agreeing with it."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from deeprec_edge.ranking import RANK_MISS, mrr_at_k, ndcg_at_k, recall_at_k, target_ranks


def reference_ranks(S, t, mask=None):
    """Definition, one element at a time: non-finite scores rank last."""
    opt, con = [], []
    for b, row in enumerate(S):
        comp = [j for j in range(len(row)) if mask is None or mask[b][j]]
        if t[b] < 0 or t[b] not in comp:
            opt.append(RANK_MISS)
            con.append(RANK_MISS)
            continue
        st_ = float(row[t[b]])
        if not math.isfinite(st_):
            opt.append(len(comp))
            con.append(len(comp))
            continue
        fin = [float(row[j]) for j in comp if math.isfinite(float(row[j]))]
        opt.append(1 + sum(1 for v in fin if v > st_))
        con.append(sum(1 for v in fin if v >= st_))
    return np.array(opt, np.int64), np.array(con, np.int64)


# scores drawn from a small set of values so that ties are common
_vals = st.sampled_from([0.0, 1.0, -1.0, 0.5, 2.0, np.nan, np.inf, -np.inf, 1e30, -1e-30])


@st.composite
def cases(draw):
    B = draw(st.integers(1, 6))
    N = draw(st.integers(1, 9))
    S = draw(hnp.arrays(np.float64, (B, N), elements=_vals))
    t = np.array(draw(st.lists(st.integers(-1, N - 1), min_size=B, max_size=B)))
    mask = None
    if draw(st.booleans()):
        mask = draw(hnp.arrays(np.bool_, (B, N)))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    return S.astype(dtype), t, mask


@settings(max_examples=400, deadline=None)
@given(cases())
def test_ranks_match_the_definition(case):
    S, t, mask = case
    o, c = target_ranks(S, t, mask=mask)
    ro, rc = reference_ranks(S, t, mask)
    np.testing.assert_array_equal(o, ro)
    np.testing.assert_array_equal(c, rc)
    ok = o != RANK_MISS
    assert (c[ok] >= o[ok]).all()


@settings(max_examples=50, deadline=None)
@given(cases(), st.integers(1, 40))
def test_blocking_does_not_change_ranks(case, block):
    S, t, mask = case
    a = target_ranks(S, t, mask=mask)
    b = target_ranks(S, t, mask=mask, max_block_elems=block)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_nan_target_is_last_not_first():
    # the bug the issue names: a NaN target used to count as rank 0 (a hit)
    S = np.array([[np.nan, 1.0, 2.0, 3.0]])
    o, c = target_ranks(S, [0])
    assert o[0] == 4 and c[0] == 4
    assert recall_at_k(o, 3)[0] == 0.0
    # an all-NaN row (a diverged model) is a miss at every k < N
    S = np.full((3, 50), np.nan, np.float32)
    o, _ = target_ranks(S, [0, 1, 2])
    assert (o == 50).all() and recall_at_k(o, 20).sum() == 0


def test_inf_scores_rank_last():
    S = np.array([[np.inf, 0.0, -np.inf, 1.0]])
    o, c = target_ranks(S, [1])
    assert (o[0], c[0]) == (2, 2)          # only the finite 1.0 ranks above
    o, c = target_ranks(S, [0])
    assert (o[0], c[0]) == (4, 4)          # an infinite target is last


def test_ties_optimistic_and_conservative():
    S = np.array([[1.0, 1.0, 1.0, 0.0]])
    o, c = target_ranks(S, [1])
    assert (o[0], c[0]) == (1, 3)


def test_mask_one_row_broadcasts_and_masked_target_misses():
    S = np.array([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]])
    m = np.array([True, False, True])
    o, _ = target_ranks(S, [2, 1], mask=m)
    assert o[0] == 2 and o[1] == RANK_MISS


def test_bad_arguments():
    with pytest.raises(ValueError, match="targets must have shape"):
        target_ranks(np.zeros((2, 3)), [0])
    with pytest.raises(IndexError, match="out of range"):
        target_ranks(np.zeros((1, 3)), [3])
    with pytest.raises(ValueError, match="mask must have shape"):
        target_ranks(np.zeros((2, 3)), [0, 1], mask=np.ones((2, 2), bool))


def test_metrics_from_ranks():
    r = np.array([1, 2, 20, 21, RANK_MISS])
    np.testing.assert_array_equal(recall_at_k(r, 20), [1, 1, 1, 0, 0])
    np.testing.assert_allclose(mrr_at_k(r, 20), [1, 0.5, 0.05, 0, 0])
    np.testing.assert_allclose(ndcg_at_k(r, 20), [1, 1 / np.log2(3), 1 / np.log2(21), 0, 0])

"""Candidate scoring and fused top-k.

Exact ranks are tested on integer data (every score exact in float32, so
float64 argsort is the exact answer); random float data are tested through
order statistics, which are stable under the float32 rounding of scores.
Rule (header): higher score first, equal scores -> lower row first, NaN last.
"""
import numpy as np
import pytest

import reference as ref
from conftest import EDGE_SIZES, TOL_F32_DOT, assert_close, f32, i32, randn

# (N, D): each edge size appears as N and as D.
CASES = [(n, d) for n, d in zip(EDGE_SIZES, EDGE_SIZES[::-1])] + [(1000, 64), (257, 256)]


def _int_problem(rng, N, D, lo=-4, hi=5, bias_spread=1000):
    O = f32(rng.integers(lo, hi, size=(N, D)))
    u = f32(rng.integers(lo, hi, size=D))
    bias = f32(rng.integers(-bias_spread, bias_spread + 1, size=N))
    return O, u, bias


def _tie_free_bias(rng, N):
    """Distinct binary fractions in [0, 1): with integer dot products below
    2**14 every score is exact in float32 and no two are equal."""
    assert N <= 1024
    return f32(rng.permutation(N) * 2.0 ** -10)


def _check_topk_exact(K, O, u, k, bias=None, idx=None, exclude=None, what=""):
    top_idx, top_score = K.score_topk(O, u, k, bias=bias, idx=idx, exclude=exclude)
    want_idx, want_score = ref.score_topk(O, u, k, bias, idx, exclude)
    assert top_idx.dtype == np.int32 and top_score.dtype == np.float32
    np.testing.assert_array_equal(top_idx, want_idx, err_msg=f"{what} ids")
    np.testing.assert_array_equal(top_score, f32(want_score), err_msg=f"{what} scores")
    return top_idx, top_score


@pytest.mark.parametrize("N,D", CASES)
def test_score_matches_reference(path, rng, K, N, D):
    O, u, bias = randn(rng, N, D, scale=1 / np.sqrt(D)), randn(rng, D), randn(rng, N)
    assert_close(K.score(O, u, bias=bias), ref.score(O, u, bias), TOL_F32_DOT, "score")
    assert_close(K.score(O, u), ref.score(O, u), TOL_F32_DOT, "score without bias")
    idx = i32(rng.integers(0, N, size=max(1, N // 2 + 1)))   # any order, repeats allowed
    s = K.score(O, u, bias=bias, idx=idx)
    assert s.shape == idx.shape and s.dtype == np.float32
    assert_close(s, ref.score(O, u, bias, idx), TOL_F32_DOT, "score with idx")


@pytest.mark.parametrize("N,D", CASES)
def test_topk_exact_ids_tie_free(path, rng, K, N, D):
    O, u, _ = _int_problem(rng, N, D)
    bias = _tie_free_bias(rng, N)
    s = ref.score(O, u, bias)
    assert len(np.unique(s)) == N
    for k in sorted({1, 3, 8, 17, N // 2, N}):
        if k < 1:
            continue
        top_idx, top_score = _check_topk_exact(K, O, u, k, bias=bias, what=f"k={k}")
        np.testing.assert_array_equal(top_idx, np.argsort(-s, kind="stable")[:k])


@pytest.mark.parametrize("N,D", [(17, 5), (64, 8), (1000, 33)])
def test_topk_random_data_order_statistics(path, rng, K, N, D):
    O, u, bias = randn(rng, N, D, scale=1 / np.sqrt(D)), randn(rng, D), randn(rng, N)
    k = min(N, 20)
    top_idx, top_score = K.score_topk(O, u, k, bias=bias)
    s = ref.score(O, u, bias)
    assert len(set(top_idx.tolist())) == k, "ids must be distinct"
    assert np.all(np.diff(top_score) <= 0), "scores must be non-increasing"
    # the i-th best score is stable under rounding: compare order statistics
    assert_close(top_score, np.sort(s)[::-1][:k], TOL_F32_DOT, "order statistics")
    assert_close(top_score, s[top_idx], TOL_F32_DOT, "returned score of returned id")


@pytest.mark.parametrize("N,D", [(9, 3), (33, 4), (300, 7)])
def test_topk_ties_lower_row_first(path, rng, K, N, D):
    # very few distinct scores: lots of exact ties
    O, u, bias = _int_problem(rng, N, D, lo=-1, hi=2, bias_spread=1)
    s = ref.score(O, u, bias)
    assert len(np.unique(s)) < N, "the data must contain ties"
    for k in (1, 5, N):
        _check_topk_exact(K, O, u, k, bias=bias, what=f"ties k={k}")
    # all scores equal: rows in order
    top_idx, _ = K.score_topk(np.zeros((N, D), np.float32), u, N)
    np.testing.assert_array_equal(top_idx, np.arange(N))


def test_topk_ties_use_row_number_not_idx_position(path, rng, K):
    N, D = 50, 3
    O, u, bias = _int_problem(rng, N, D, lo=-1, hi=2, bias_spread=0)
    idx = i32(rng.permutation(N)[:30])     # candidate list in arbitrary order
    for k in (1, 7, 30, 40):
        _check_topk_exact(K, O, u, k, bias=bias, idx=idx, what=f"idx ties k={k}")


def test_identical_rows_tie_by_row_on_random_floats(path, rng, K):
    """Identical rows of random floats (not small integers, whose sums are
    exact in any order): every path must give them the same score bits, so
    "equal scores: lower row first" holds wherever the rows sit (the audit's
    case: the last n % 4 rows once took another kernel on AVX-512)."""
    for _ in range(200):
        N, D = int(rng.integers(1, 40)), int(rng.integers(1, 70))
        O = np.ascontiguousarray(np.tile(randn(rng, 1, D), (N, 1)))
        u, b = randn(rng, D), f32(np.full(N, rng.standard_normal()))
        top_idx, top_score = K.score_topk(O, u, N, bias=b)
        np.testing.assert_array_equal(top_idx, np.arange(N), err_msg=f"N={N} D={D}")
        assert (top_score == top_score[0]).all()
        rows = i32(rng.permutation(N))
        top_idx, _ = K.score_topk(O, u, N, bias=b, idx=rows)
        np.testing.assert_array_equal(top_idx, np.arange(N), err_msg=f"idx N={N} D={D}")


def test_row_scores_same_bits_wherever_the_row_sits(path, rng, K):
    """A row scored through a candidate list (any position, any list length,
    so any n mod 4/8/16 tail) or from a table offset has exactly its
    full-table score, and top-k over candidates returns those bits."""
    for N, D in [(37, 9), (18, 16), (40, 33), (65, 64), (23, 100), (9, 1)]:
        O, u, b = randn(rng, N, D), randn(rng, D), randn(rng, N)
        full = K.score(O, u, bias=b)
        for n in range(1, N + 1):
            idx = i32(rng.integers(0, N, n))
            np.testing.assert_array_equal(K.score(O, u, bias=b, idx=idx), full[idx],
                                          err_msg=f"N={N} D={D} n={n}")
            ti, ts = K.score_topk(O, u, n, bias=b, idx=idx)
            np.testing.assert_array_equal(ts, full[ti], err_msg=f"top-k N={N} D={D} n={n}")
        for off in range(N):
            np.testing.assert_array_equal(K.score(O[off:], u, bias=b[off:]), full[off:],
                                          err_msg=f"offset {off} N={N} D={D}")


def test_signed_zeros_tie(path, K):
    O = np.zeros((4, 1), np.float32)
    bias = f32([0.0, -0.0, 0.0, -0.0])
    u = f32([1.0])
    top_idx, _ = K.score_topk(O, u, 4, bias=bias)
    np.testing.assert_array_equal(top_idx, [0, 1, 2, 3])


def test_k_larger_than_n_and_zero(path, rng, K):
    N, D = 13, 5
    O, u, bias = _int_problem(rng, N, D)
    top_idx, top_score = _check_topk_exact(K, O, u, N + 7, bias=bias, what="k > N")
    assert top_idx.shape == (N,)
    top_idx, top_score = K.score_topk(O, u, 0, bias=bias)
    assert top_idx.shape == (0,) and top_score.shape == (0,)
    idx = i32([4, 9, 2])
    top_idx, _ = _check_topk_exact(K, O, u, 10, bias=bias, idx=idx, what="k > n")
    assert top_idx.shape == (3,)


def test_empty_candidate_list(path, rng, K):
    O, u, bias = _int_problem(rng, 8, 4)
    top_idx, top_score = K.score_topk(O, u, 5, bias=bias, idx=np.zeros(0, np.int32))
    assert top_idx.shape == (0,) and top_score.shape == (0,)
    assert K.score(O, u, idx=np.zeros(0, np.int32)).shape == (0,)
    top_idx, _ = K.score_topk(np.zeros((0, 4), np.float32), u, 5)
    assert top_idx.shape == (0,)


@pytest.mark.parametrize("mask_dtype", [np.uint8, np.bool_])
def test_exclude_mask(path, rng, K, mask_dtype):
    N, D = 65, 9
    O, u, _ = _int_problem(rng, N, D)
    bias = _tie_free_bias(rng, N)
    exclude = (rng.random(N) < 0.4).astype(mask_dtype)
    n_ok = int(np.sum(exclude == 0))
    for k in (1, 10, n_ok, N):
        top_idx, _ = _check_topk_exact(K, O, u, k, bias=bias, exclude=exclude,
                                       what=f"exclude k={k}")
        assert top_idx.shape == (min(k, n_ok),)
        assert not np.any(exclude[top_idx])
    # exclude combined with an idx list (row numbers index the mask)
    idx = i32(rng.permutation(N)[:20])
    _check_topk_exact(K, O, u, 15, bias=bias, idx=idx, exclude=exclude, what="idx+exclude")
    # everything excluded
    top_idx, _ = K.score_topk(O, u, 5, bias=bias, exclude=np.ones(N, mask_dtype))
    assert top_idx.shape == (0,)


def test_nan_scores_rank_last(path, rng, K):
    N, D = 20, 4
    O, u, _ = _int_problem(rng, N, D)
    bias = _tie_free_bias(rng, N)
    nan_rows = [0, 3, 11, 19]
    bias[nan_rows] = np.nan
    bias[5], bias[7] = -np.inf, np.inf
    n_fin = N - len(nan_rows)
    # NaN never displaces a number (not even -inf)
    top_idx, top_score = _check_topk_exact(K, O, u, n_fin, bias=bias, what="NaN excluded by k")
    assert top_idx[0] == 7 and top_idx[-1] == 5
    assert not np.any(np.isnan(top_score))
    # with k = N the NaN rows come last
    top_idx, top_score = K.score_topk(O, u, N, bias=bias)
    assert set(top_idx[n_fin:].tolist()) == set(nan_rows)
    assert np.all(np.isnan(top_score[n_fin:]))
    np.testing.assert_array_equal(top_idx[:n_fin], ref.score_topk(O, u, n_fin, bias)[0])
    # all NaN: still n_out = min(k, eligible)
    top_idx, top_score = K.score_topk(O, u, 3, bias=np.full(N, np.nan, np.float32))
    assert top_idx.shape == (3,) and np.all(np.isnan(top_score))
    assert len(set(top_idx.tolist())) == 3


def test_nan_in_u_never_crashes(path, rng, K):
    O, u, bias = _int_problem(rng, 33, 8)
    u[2] = np.nan
    top_idx, top_score = K.score_topk(O, u, 5, bias=bias)
    assert top_idx.shape == (5,) and np.all((top_idx >= 0) & (top_idx < 33))


def test_index_out_of_range_raises(path, rng, K):
    O, u, bias = _int_problem(rng, 10, 3)
    for bad in ([0, 10], [-1], [3, 2**31 - 1]):
        with pytest.raises(IndexError):
            K.score(O, u, bias=bias, idx=i32(bad))
        with pytest.raises(IndexError):
            K.score_topk(O, u, 3, bias=bias, idx=i32(bad))

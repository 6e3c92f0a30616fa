"""SGEMM: C = alpha op(A) op(B) + beta C vs a float64 reference."""
import numpy as np
import pytest

import reference as ref
from conftest import EDGE_SIZES, TOL_F32_DOT, assert_close, randn

# (M, N, Kd): each edge size appears in every role; N crosses the 16-wide
# packed panels, M the micro-tile rows; plus a few larger blocked shapes.
S = EDGE_SIZES
CASES = ([(S[i], S[(i + 5) % len(S)], S[(i + 11) % len(S)]) for i in range(len(S))]
         + [(64, 64, 256), (100, 129, 300), (3, 257, 17), (257, 3, 65)])
TRANS = [(False, False), (True, False), (False, True), (True, True)]


def _operands(rng, M, N, K, trans_a, trans_b):
    A = randn(rng, *((K, M) if trans_a else (M, K)))
    B = randn(rng, *((N, K) if trans_b else (K, N)))
    return A, B


@pytest.mark.parametrize("M,N,Kd", CASES)
def test_sgemm_matches_reference(path, rng, K, M, N, Kd):
    for ta, tb in TRANS:
        A, B = _operands(rng, M, N, Kd, ta, tb)
        C = K.sgemm(A, B, trans_a=ta, trans_b=tb)
        assert C.shape == (M, N) and C.dtype == np.float32
        assert_close(C, ref.sgemm(A, B, ta, tb), TOL_F32_DOT, f"sgemm ta={ta} tb={tb}")


@pytest.mark.parametrize("ta,tb", TRANS)
@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (-0.5, 2.0), (0.25, -1.0), (0.0, 0.5)])
def test_sgemm_alpha_beta(path, rng, K, ta, tb, alpha, beta):
    M, N, Kd = 9, 17, 33
    A, B = _operands(rng, M, N, Kd, ta, tb)
    C0 = randn(rng, M, N)
    C = C0.copy()
    out = K.sgemm(A, B, trans_a=ta, trans_b=tb, alpha=alpha, beta=beta, C=C)
    assert out is C, "the given C is updated in place and returned"
    assert_close(C, ref.sgemm(A, B, ta, tb, alpha, beta, C0), TOL_F32_DOT, "alpha/beta")


@pytest.mark.parametrize("M,N,Kd", [(5, 7, 3), (16, 33, 9), (1, 65, 64)])
def test_sgemm_beta_zero_does_not_read_C(path, rng, K, M, N, Kd):
    A, B = _operands(rng, M, N, Kd, False, False)
    C = np.full((M, N), np.nan, np.float32)
    K.sgemm(A, B, alpha=2.0, beta=0.0, C=C)
    assert np.all(np.isfinite(C)), "beta == 0 must overwrite C without reading it"
    assert_close(C, ref.sgemm(A, B, alpha=2.0), TOL_F32_DOT, "beta = 0")


def test_sgemm_degenerate_sizes(path, rng, K):
    # K = 0: C = beta * C
    A, B = np.zeros((4, 0), np.float32), np.zeros((0, 6), np.float32)
    C0 = randn(rng, 4, 6)
    C = C0.copy()
    K.sgemm(A, B, beta=0.5, C=C)
    assert_close(C, 0.5 * np.float64(C0), TOL_F32_DOT, "K = 0")
    C = K.sgemm(A, B)
    assert np.all(C == 0.0)
    # M = 0 or N = 0: empty result
    assert K.sgemm(np.zeros((0, 3), np.float32), randn(rng, 3, 5)).shape == (0, 5)
    assert K.sgemm(randn(rng, 4, 3), np.zeros((3, 0), np.float32)).shape == (4, 0)


def test_sgemm_shape_mismatch_raises(K, rng):
    with pytest.raises(ValueError):
        K.sgemm(randn(rng, 4, 3), randn(rng, 5, 6))
    with pytest.raises(ValueError):
        K.sgemm(randn(rng, 4, 3).astype(np.float64), randn(rng, 3, 6))

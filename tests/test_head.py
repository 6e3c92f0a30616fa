"""Dense head u = act(W_p h + b_p): forward and backward vs float64 reference."""
import numpy as np
import pytest

import reference as ref
from conftest import (FD_EPS_F32, TOL_F32_DOT, TOL_F32_FD, TOL_F32_GRAD, TOL_F64, TOL_FD64,
                      assert_close, f32, randn)

# (N, H, D): every edge size appears as H and as D.
CASES = [
    (1, 1, 1), (3, 3, 4), (5, 4, 3), (2, 5, 7), (7, 7, 5), (4, 8, 9), (9, 9, 8),
    (3, 15, 16), (16, 16, 15), (5, 17, 17), (2, 31, 33), (4, 32, 31), (3, 33, 32),
    (2, 63, 64), (3, 64, 65), (2, 65, 63), (4, 128, 64), (2, 256, 33),
]
ACTS = ("tanh", "identity")


def _problem(rng, N, H, D):
    return randn(rng, N, H), randn(rng, D, H, scale=1 / np.sqrt(H)), randn(rng, D, scale=0.1)


@pytest.mark.parametrize("act", ACTS)
def test_reference_head_gradients_vs_finite_differences(rng, act):
    h, W_p, b_p = [np.float64(a) for a in _problem(rng, 3, 5, 4)]
    du = rng.standard_normal((3, 4))
    dh, dW, db = ref.head_backward(h, W_p, b_p, du, act)
    f = lambda h_, W_, b_: float(np.sum(du * ref.head_forward(h_, W_, b_, act)))  # noqa: E731
    assert_close(dh, ref.numerical_grad(lambda v: f(v, W_p, b_p), h), TOL_FD64, "dh")
    assert_close(dW, ref.numerical_grad(lambda v: f(h, v, b_p), W_p), TOL_FD64, "dW_p")
    assert_close(db, ref.numerical_grad(lambda v: f(h, W_p, v), b_p), TOL_FD64, "db_p")


def test_reference_head_vs_torch(rng, torch):
    h, W_p, b_p = [np.float64(a) for a in _problem(rng, 4, 6, 5)]
    du = rng.standard_normal((4, 5))
    ht, Wt, bt = (torch.tensor(a, requires_grad=True) for a in (h, W_p, b_p))
    u = torch.tanh(torch.nn.functional.linear(ht, Wt, bt))
    (u * torch.from_numpy(du)).sum().backward()
    assert_close(ref.head_forward(h, W_p, b_p), u.detach().numpy(), TOL_F64, "u")
    for got, t, name in zip(ref.head_backward(h, W_p, b_p, du), (ht, Wt, bt), ("dh", "dW", "db")):
        assert_close(got, t.grad.numpy(), TOL_F64, name)


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("N,H,D", CASES)
def test_head_forward_backward(path, rng, K, N, H, D, act):
    h, W_p, b_p = _problem(rng, N, H, D)
    u = K.head_forward(h, W_p, b_p, activation=act)
    assert u.dtype == np.float32 and u.shape == (N, D)
    assert_close(u, ref.head_forward(h, W_p, b_p, act), TOL_F32_DOT, "u")
    du = randn(rng, N, D)
    dh, dW, db = K.head_backward(h, W_p, u, du, activation=act)
    want = ref.head_backward(h, W_p, b_p, du, act)
    for got, w, name in zip((dh, dW, db), want, ("dh", "dW_p", "db_p")):
        assert_close(got, w, TOL_F32_GRAD, name)


def test_head_default_bias_and_activation(path, rng, K):
    h, W_p, _ = _problem(rng, 5, 9, 7)
    u = K.head_forward(h, W_p)                 # b_p None (zeros), tanh
    assert_close(u, ref.head_forward(h, W_p, None, "tanh"), TOL_F32_DOT, "u default")


def test_head_backward_accumulates_and_skips_dh(path, rng, K):
    N, H, D = 6, 17, 9
    h, W_p, b_p = _problem(rng, N, H, D)
    u = K.head_forward(h, W_p, b_p)
    du = randn(rng, N, D)
    dW0, db0 = randn(rng, D, H), randn(rng, D)
    dW, db = dW0.copy(), db0.copy()
    dh, dW_out, db_out = K.head_backward(h, W_p, u, du, dW_p=dW, db_p=db, need_dh=False)
    assert dh is None
    assert dW_out is dW and db_out is db
    _, dW_r, db_r = ref.head_backward(h, W_p, b_p, du)
    assert_close(dW, dW0 + dW_r, TOL_F32_GRAD, "dW_p accumulated")
    assert_close(db, db0 + db_r, TOL_F32_GRAD, "db_p accumulated")


@pytest.mark.parametrize("act", ACTS)
def test_head_kernel_gradient_vs_kernel_finite_differences(path, rng, K, act):
    N, H, D = 4, 33, 17
    h, W_p, b_p = _problem(rng, N, H, D)
    du = rng.standard_normal((N, D))
    u = K.head_forward(h, W_p, b_p, activation=act)
    dh, dW, db = K.head_backward(h, W_p, u, f32(du), activation=act)
    vs = [rng.standard_normal(a.shape) for a in (h, W_p, b_p)]

    def L(sign):
        q = [f32(a + sign * FD_EPS_F32 * v) for a, v in zip((h, W_p, b_p), vs)]
        return float(np.sum(du * K.head_forward(*q, activation=act))), q
    Lp, qp = L(+1)
    Lm, qm = L(-1)
    an = sum(float(np.sum(np.float64(g) * (np.float64(a) - np.float64(b))))
             for g, a, b in zip((dh, dW, db), qp, qm))
    assert_close(Lp - Lm, an, TOL_F32_FD, "head gradient vs finite differences")


def test_head_empty_batch(path, rng, K):
    h = np.zeros((0, 5), np.float32)
    W_p = randn(rng, 3, 5)
    u = K.head_forward(h, W_p)
    assert u.shape == (0, 3)
    dh, dW, db = K.head_backward(h, W_p, u, np.zeros((0, 3), np.float32))
    assert dh.shape == (0, 5) and np.all(dW == 0) and np.all(db == 0)

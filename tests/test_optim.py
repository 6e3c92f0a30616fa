"""Optimiser steps, global-norm clipping and sparse row updates.

Hyperparameters reach the C core as float32, so the float64 references get
the float32-rounded values (``h32``); the comparison then measures only the
kernels' arithmetic.  torch.optim (float64) is a second oracle for Adam and
SGD; torch's Adagrad puts eps outside the sqrt, ours inside (header), so
Adagrad is compared with the reference only.
"""
import numpy as np
import pytest

import reference as ref
from conftest import (EDGE_SIZES, TOL_F32_ELEM, TOL_F32_OPT, TOL_F64, assert_close, f32, i32,
                      randn)

SIZES = EDGE_SIZES + (1000,)
STEPS = 4


def h32(v):
    """A hyperparameter as the kernel sees it (rounded to float32)."""
    return float(np.float32(v))


@pytest.mark.parametrize("n", SIZES)
def test_adagrad_matches_reference(path, rng, K, n):
    lr, eps = 0.1, 1e-6
    p, acc = randn(rng, n), f32(rng.uniform(0, 1, n))
    p_r, acc_r = np.float64(p), np.float64(acc)
    for _ in range(STEPS):
        g = randn(rng, n)
        assert K.adagrad_step(p, g, acc, lr, eps) is None
        p_r, acc_r = ref.adagrad_step(p_r, g, acc_r, h32(lr), h32(eps))
    assert_close(p, p_r, TOL_F32_OPT, "param")
    assert_close(acc, acc_r, TOL_F32_OPT, "accum")


def test_adagrad_eps_inside_sqrt(path, rng, K):
    """With a large eps the two placements differ by far more than rounding."""
    n, lr, eps = 17, 0.5, 1.0
    p, acc, g = randn(rng, n), np.zeros(n, np.float32), randn(rng, n, scale=0.1)
    p0 = p.copy()
    K.adagrad_step(p, g, acc, lr, eps=eps)
    inside = np.float64(p0) - lr * np.float64(g) / np.sqrt(np.float64(g) ** 2 + eps)
    outside = np.float64(p0) - lr * np.float64(g) / (np.abs(np.float64(g)) + eps)
    assert_close(p, inside, TOL_F32_ELEM, "adagrad eps placement")
    assert np.max(np.abs(inside - outside)) > 1e-3


def test_adagrad_default_eps(path, rng, K):
    p, acc, g = randn(rng, 9), np.zeros(9, np.float32), randn(rng, 9)
    p_r, acc_r = ref.adagrad_step(p, g, acc, 0.1, h32(1e-6))
    K.adagrad_step(p, g, acc, 0.1)
    assert_close(p, p_r, TOL_F32_ELEM, "param")


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_adam_matches_reference(path, rng, K, n, wd):
    lr, b1, b2, eps = 0.05, 0.9, 0.999, 1e-8
    p = randn(rng, n)
    m, v = np.zeros(n, np.float32), np.zeros(n, np.float32)
    p_r, m_r, v_r = np.float64(p), np.zeros(n), np.zeros(n)
    for step in range(1, STEPS + 1):
        g = randn(rng, n)
        assert K.adam_step(p, g, m, v, step, lr, b1, b2, eps, weight_decay=wd) is None
        p_r, m_r, v_r = ref.adam_step(p_r, g, m_r, v_r, step, h32(lr), h32(b1), h32(b2),
                                      h32(eps), h32(wd))
    assert_close(p, p_r, TOL_F32_OPT, "param")
    assert_close(m, m_r, TOL_F32_OPT, "m")
    assert_close(v, v_r, TOL_F32_OPT, "v")


@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_adam_matches_torch(path, rng, K, torch, wd):
    n, lr, b1, b2, eps = 33, 0.01, 0.8, 0.99, 1e-6
    p = randn(rng, n)
    m, v = np.zeros(n, np.float32), np.zeros(n, np.float32)
    pt = torch.tensor(np.float64(p), requires_grad=True)
    opt = torch.optim.Adam([pt], lr=h32(lr), betas=(h32(b1), h32(b2)), eps=h32(eps),
                           weight_decay=h32(wd))
    for step in range(1, 8):
        g = randn(rng, n)
        K.adam_step(p, g, m, v, step, lr, b1, b2, eps, weight_decay=wd)
        pt.grad = torch.from_numpy(np.float64(g))
        opt.step()
    assert_close(p, pt.detach().numpy(), TOL_F32_OPT, "Adam param vs torch.optim.Adam")
    st = opt.state[pt]
    assert_close(m, st["exp_avg"].numpy(), TOL_F32_OPT, "m vs torch exp_avg")
    assert_close(v, st["exp_avg_sq"].numpy(), TOL_F32_OPT, "v vs torch exp_avg_sq")


def test_reference_adam_and_sgd_vs_torch(rng, torch):
    """The float64 references themselves agree with torch.optim to 1e-10."""
    n = 7
    for kind in ("adam", "sgd", "nesterov"):
        p = rng.standard_normal(n)
        pt = torch.tensor(p.copy(), requires_grad=True)
        if kind == "adam":
            opt = torch.optim.Adam([pt], lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)
            m, v = np.zeros(n), np.zeros(n)
        else:
            opt = torch.optim.SGD([pt], lr=0.1, momentum=0.9, nesterov=(kind == "nesterov"))
            vel = np.zeros(n)
        for step in range(1, 6):
            g = rng.standard_normal(n)
            pt.grad = torch.from_numpy(g.copy())
            opt.step()
            if kind == "adam":
                p, m, v = ref.adam_step(p, g, m, v, step, 0.01, 0.8, 0.99, 1e-6, 0.1)
            else:
                p, vel = ref.sgd_step(p, g, 0.1, vel, 0.9, kind == "nesterov")
        assert_close(p, pt.detach().numpy(), TOL_F64, f"reference {kind} vs torch")


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_sgd_matches_reference(path, rng, K, n, momentum, nesterov):
    lr = 0.1
    p = randn(rng, n)
    vel = np.zeros(n, np.float32) if momentum else None
    p_r, vel_r = np.float64(p), (np.zeros(n) if momentum else None)
    for _ in range(STEPS):
        g = randn(rng, n)
        assert K.sgd_step(p, g, lr, velocity=vel, momentum=momentum, nesterov=nesterov) is None
        p_r, vel_r = ref.sgd_step(p_r, g, h32(lr), vel_r, h32(momentum), nesterov)
    assert_close(p, p_r, TOL_F32_OPT, "param")
    if momentum:
        assert_close(vel, vel_r, TOL_F32_OPT, "velocity")


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_matches_torch(path, rng, K, torch, nesterov):
    n, lr, mom = 65, 0.05, 0.7
    p, vel = randn(rng, n), np.zeros(n, np.float32)
    pt = torch.tensor(np.float64(p), requires_grad=True)
    opt = torch.optim.SGD([pt], lr=h32(lr), momentum=h32(mom), nesterov=nesterov)
    for _ in range(6):
        g = randn(rng, n)
        K.sgd_step(p, g, lr, velocity=vel, momentum=mom, nesterov=nesterov)
        pt.grad = torch.from_numpy(np.float64(g))
        opt.step()
    assert_close(p, pt.detach().numpy(), TOL_F32_OPT, "SGD param vs torch.optim.SGD")
    assert_close(vel, opt.state[pt]["momentum_buffer"].numpy(), TOL_F32_OPT, "momentum buffer")


def test_sgd_momentum_without_velocity_rejected(K, rng):
    p, g = randn(rng, 5), randn(rng, 5)
    with pytest.raises(ValueError):
        K.sgd_step(p, g, 0.1, momentum=0.9)


def test_optimisers_keep_shape_of_2d_params(path, rng, K):
    p = randn(rng, 7, 9)
    g = randn(rng, 7, 9)
    m, v = np.zeros_like(p), np.zeros_like(p)
    p_r, _, _ = ref.adam_step(p, g, m, v, 1, 0.01, h32(0.9), h32(0.999), h32(1e-8))
    K.adam_step(p, g, m, v, 1, 0.01)
    assert_close(p, p_r, TOL_F32_ELEM, "2-D param")


# --------------------------------------------------------------------------
# Global norm and clipping
# --------------------------------------------------------------------------

def _grads(rng, scale=1.0):
    return [randn(rng, *s, scale=scale) for s in [(7,), (3, 5), (33,), (1,), (16, 17)]]


def test_global_norm(path, rng, K):
    gs = _grads(rng)
    assert_close(K.global_norm(gs), ref.global_norm(gs), TOL_F64, "global_norm")
    assert K.global_norm([]) == 0.0
    assert K.global_norm([np.zeros(0, np.float32)]) == 0.0
    # accumulated in double: 1e6 elements of 1e-3 would lose digits in float32
    big = [np.full(1_000_003, 1e-3, np.float32)]
    assert_close(K.global_norm(big), ref.global_norm(big), TOL_F64, "norm of many small")


@pytest.mark.parametrize("max_norm", [0.5, 3.0, 1e3])
def test_clip_by_global_norm(path, rng, K, max_norm):
    gs = _grads(rng)
    before = [g.copy() for g in gs]
    want, norm_r = ref.clip_by_global_norm(gs, h32(max_norm))
    norm = K.clip_by_global_norm(gs, max_norm)
    assert_close(norm, norm_r, TOL_F64, "norm before clipping")
    for i, (g, w) in enumerate(zip(gs, want)):
        assert_close(g, w, TOL_F32_ELEM, f"grads[{i}]")
    if norm_r <= max_norm:
        for g, b in zip(gs, before):
            np.testing.assert_array_equal(g, b)   # untouched, not rescaled by 1
    else:
        assert_close(K.global_norm(gs), h32(max_norm), TOL_F32_ELEM, "norm after clipping")


def test_clip_matches_torch(path, rng, K, torch):
    gs = _grads(rng, scale=3.0)
    params = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in gs]
    for p, g in zip(params, gs):
        p.grad = torch.from_numpy(np.float64(g))
    norm_t = torch.nn.utils.clip_grad_norm_(params, max_norm=2.0)
    norm = K.clip_by_global_norm(gs, 2.0)
    assert_close(norm, float(norm_t), TOL_F64, "norm vs torch")
    # torch divides by (norm + 1e-6): a relative difference of 1e-6 / norm
    for i, (g, p) in enumerate(zip(gs, params)):
        assert_close(g, p.grad.numpy(), TOL_F32_ELEM, f"clipped grads[{i}] vs torch")


# --------------------------------------------------------------------------
# Sparse row updates
# --------------------------------------------------------------------------

ROW_CASES = [(5, 1), (9, 3), (17, 8), (33, 15), (20, 17), (64, 33), (40, 65)]


def _rows_problem(rng, n_rows, D, dup):
    table = randn(rng, n_rows, D)
    n = max(1, n_rows // 3)
    rows = rng.choice(n_rows, size=n, replace=False)
    if dup:
        rows = np.concatenate([rows, rows[:1]])           # listed twice: applied twice
    rows = i32(rows)
    return table, rows, randn(rng, rows.size, D)


@pytest.mark.parametrize("n_rows,D", ROW_CASES)
@pytest.mark.parametrize("dup", [False, True])
def test_adagrad_rows(path, rng, K, n_rows, D, dup):
    table, rows, g = _rows_problem(rng, n_rows, D, dup)
    acc = f32(rng.uniform(0, 1, (n_rows, D)))
    t_r, a_r = ref.adagrad_rows(table, acc, rows, g, 0.1, h32(1e-6))
    untouched = np.setdiff1d(np.arange(n_rows), rows)
    t_before = table.copy()
    K.adagrad_rows(table, acc, rows, g, 0.1)
    assert_close(table, t_r, TOL_F32_OPT, "table")
    assert_close(acc, a_r, TOL_F32_OPT, "accum")
    np.testing.assert_array_equal(table[untouched], t_before[untouched])


@pytest.mark.parametrize("n_rows,D", ROW_CASES)
@pytest.mark.parametrize("dup", [False, True])
def test_adam_rows(path, rng, K, n_rows, D, dup):
    table, rows, g = _rows_problem(rng, n_rows, D, dup)
    m = randn(rng, n_rows, D, scale=0.1)
    v = f32(rng.uniform(0, 0.1, (n_rows, D)))
    step = 5
    t_r, m_r, v_r = ref.adam_rows(table, m, v, rows, g, step, 0.01, h32(0.9), h32(0.999),
                                  h32(1e-8))
    untouched = np.setdiff1d(np.arange(n_rows), rows)
    before = [a[untouched].copy() for a in (table, m, v)]
    K.adam_rows(table, m, v, rows, g, step, 0.01)
    assert_close(table, t_r, TOL_F32_OPT, "table")
    assert_close(m, m_r, TOL_F32_OPT, "m")
    assert_close(v, v_r, TOL_F32_OPT, "v")
    for a, b in zip((table, m, v), before):
        np.testing.assert_array_equal(a[untouched], b)   # lazy: other rows keep their state


@pytest.mark.parametrize("n_rows,D", ROW_CASES)
@pytest.mark.parametrize("dup", [False, True])
def test_sgd_rows(path, rng, K, n_rows, D, dup):
    table, rows, g = _rows_problem(rng, n_rows, D, dup)
    t_r = ref.sgd_rows(table, rows, g, h32(0.3))
    K.sgd_rows(table, rows, g, 0.3)
    assert_close(table, t_r, TOL_F32_ELEM, "table")


def test_rows_empty_list(path, rng, K):
    table = randn(rng, 6, 4)
    before = table.copy()
    K.sgd_rows(table, np.zeros(0, np.int32), np.zeros((0, 4), np.float32), 0.1)
    np.testing.assert_array_equal(table, before)


@pytest.mark.parametrize("bad", [-1, 6, 2**31 - 1])
def test_rows_out_of_range_update_nothing(path, rng, K, bad):
    n_rows, D = 6, 5
    table, acc = randn(rng, n_rows, D), f32(rng.uniform(0, 1, (n_rows, D)))
    m, v = np.zeros((n_rows, D), np.float32), np.zeros((n_rows, D), np.float32)
    rows = i32([0, 2, bad])          # valid rows first: nothing may be applied
    g = randn(rng, 3, D)
    snap = [a.copy() for a in (table, acc, m, v)]
    with pytest.raises(IndexError):
        K.sgd_rows(table, rows, g, 0.1)
    with pytest.raises(IndexError):
        K.adagrad_rows(table, acc, rows, g, 0.1)
    with pytest.raises(IndexError):
        K.adam_rows(table, m, v, rows, g, 1, 0.1)
    for a, b in zip((table, acc, m, v), snap):
        np.testing.assert_array_equal(a, b)

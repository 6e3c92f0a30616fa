"""Kernel paths: dispatch API, the force-scalar switch, and every kernel run
on the scalar path and on each supported SIMD path with identical inputs.

The scalar path is the readable specification; a SIMD path may differ only
by summation order and FMA contraction, so the comparison is direct and
tight (TOL_PATHS), at sizes on both sides of every vector width.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import (EDGE_SIZES, FORCE_SCALAR, GUARD_PAGES_AVAILABLE, PATHS, SIMD_PATHS,
                      TOL_PATHS, assert_close, f32, guarded, gru_weights, i32, randn)

KNOWN_PATHS = ("scalar", "avx2", "avx512", "neon")


@pytest.fixture(params=SIMD_PATHS or [pytest.param(None, marks=pytest.mark.skip(
    reason="no SIMD path supported here (or DEEPREC_EDGE_FORCE_SCALAR set)"))])
def simd(request):
    return request.param


def both(K, simd, fn):
    """fn() on the scalar path, then on `simd`; fn must build its own inputs'
    copies (in-place kernels)."""
    with K.forced_path("scalar"):
        a = fn()
    with K.forced_path(simd):
        b = fn()
    return a, b


def compare(a, b, what, tol=TOL_PATHS):
    if isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for i, (x, y) in enumerate(zip(a, b)):
            compare(x, y, f"{what}[{i}]", tol)
    elif a is None:
        assert b is None, what
    else:
        assert_close(b, a, tol, f"{what}: SIMD vs scalar")


# --------------------------------------------------------------------------
# Dispatch API
# --------------------------------------------------------------------------

def test_path_api(K):
    sup = K.supported_paths()
    assert "scalar" in sup
    assert K.active_path() in sup
    assert set(sup) <= set(KNOWN_PATHS)
    if FORCE_SCALAR:
        assert K.active_path() == "scalar", "DEEPREC_EDGE_FORCE_SCALAR must pin the scalar path"
    with pytest.raises(ValueError):
        K.set_path("sse9")
    for name in KNOWN_PATHS:
        if name not in sup:
            with pytest.raises(RuntimeError):
                K.set_path(name)


def test_forced_path_restores_on_exception(K):
    before = K.active_path()
    with pytest.raises(ZeroDivisionError):
        with K.forced_path("scalar"):
            assert K.active_path() == "scalar"
            1 / 0
    assert K.active_path() == before


@pytest.mark.parametrize("value,expect_scalar", [("1", True), ("0", False), ("", False)])
def test_force_scalar_environment_variable(value, expect_scalar, K):
    env = dict(os.environ, DEEPREC_EDGE_FORCE_SCALAR=value)
    out = subprocess.run(
        [sys.executable, "-c",
         "from deeprec_edge import kernels as K; print(K.active_path(), *K.supported_paths())"],
        env=env, capture_output=True, text=True, check=True, cwd="/" if os.name != "nt" else None)
    active, *supported = out.stdout.split()
    if expect_scalar:
        assert active == "scalar"
    else:
        # the best path: not scalar whenever a SIMD path is available
        assert active in supported
        assert (active != "scalar") == (len(supported) > 1)


def test_paths_fixture_covers_supported(K):
    if FORCE_SCALAR:
        assert PATHS == ["scalar"]
    else:
        assert PATHS == list(K.supported_paths())


# --------------------------------------------------------------------------
# Every kernel: scalar vs SIMD
# --------------------------------------------------------------------------

GEMM_SHAPES = [(m, n, k) for m, n, k in zip(EDGE_SIZES, EDGE_SIZES[3:] + EDGE_SIZES[:3],
                                             EDGE_SIZES[7:] + EDGE_SIZES[:7])]


@pytest.mark.parametrize("M,N,Kd", GEMM_SHAPES + [(100, 129, 300)])
def test_sgemm(simd, rng, K, M, N, Kd):
    for ta in (False, True):
        for tb in (False, True):
            A = randn(rng, *((Kd, M) if ta else (M, Kd)))
            B = randn(rng, *((N, Kd) if tb else (Kd, N)))
            C0 = randn(rng, M, N)
            a, b = both(K, simd, lambda: K.sgemm(A, B, ta, tb, alpha=0.75, beta=-0.5,
                                                 C=C0.copy()))
            compare(a, b, f"sgemm {M}x{N}x{Kd} ta={ta} tb={tb}")


GRU_SHAPES = [(3, 2, 1, 1), (4, 3, 5, 3), (3, 5, 7, 9), (5, 3, 17, 15), (3, 4, 9, 31),
              (2, 3, 33, 33), (3, 2, 65, 63), (2, 3, 31, 65), (2, 2, 64, 128), (2, 2, 17, 256),
              (30, 3, 9, 17)]


@pytest.mark.parametrize("T,B,I,H", GRU_SHAPES)
def test_gru_forward_backward(simd, rng, K, T, B, I, H):
    x = randn(rng, T, B, I)
    W_ih, W_hh, b_ih, b_hh = gru_weights(rng, I, H)
    h0 = randn(rng, B, H, scale=0.5)
    lengths = rng.integers(0, T + 1, size=B)
    lengths[0] = T
    lengths = i32(lengths)
    dy, dh_n = randn(rng, T, B, H), randn(rng, B, H)
    acc0 = [randn(rng, 3 * H, I), randn(rng, 3 * H, H), randn(rng, 3 * H), randn(rng, 3 * H)]

    def run():
        y, h_n, cache = K.gru_forward(x, W_ih, W_hh, b_ih, b_hh, h0=h0, lengths=lengths,
                                      keep_cache=True)
        acc = [a.copy() for a in acc0]
        grads = K.gru_backward(x, W_ih, W_hh, y, cache, dy=dy, dh_n=dh_n, h0=h0,
                               lengths=lengths, dW_ih=acc[0], dW_hh=acc[1], db_ih=acc[2],
                               db_hh=acc[3])
        y2, h2, _ = K.gru_forward(x, W_ih, W_hh, b_ih, b_hh)   # defaults
        return (y, h_n) + tuple(grads) + (y2, h2)
    a, b = both(K, simd, run)
    names = ["y", "h_n", "dx", "dh0", "dW_ih", "dW_hh", "db_ih", "db_hh", "y (defaults)",
             "h_n (defaults)"]
    for n_, x_, y_ in zip(names, a, b):
        compare(x_, y_, f"gru {n_} T={T} B={B} I={I} H={H}")


@pytest.mark.parametrize("I,H", [(1, 1), (3, 5), (9, 7), (17, 16), (31, 33), (64, 65), (8, 256)])
def test_gru_step(simd, rng, K, I, H):
    W = gru_weights(rng, I, H)
    x, h = randn(rng, I), randn(rng, H)
    a, b = both(K, simd, lambda: (K.gru_step(x, h, *W), K.GruStepper(*W).step(x, h)))
    compare(a, b, f"gru_step I={I} H={H}")


@pytest.mark.parametrize("I,H", [(1, 1), (3, 5), (8, 7), (9, 8), (17, 16), (31, 33), (64, 100),
                                 (100, 100), (8, 256)])
def test_gru_step_float16_weights(simd, rng, K, I, H):
    W_ih, W_hh, b_ih, b_hh = gru_weights(rng, I, H)
    W = (W_ih.astype(np.float16), W_hh.astype(np.float16), b_ih, b_hh)
    x, h = randn(rng, I), randn(rng, H)
    a, b = both(K, simd, lambda: (K.gru_step(x, h, *W), K.GruStepper(*W).step(x, h)))
    compare(a, b, f"gru_step float16 weights I={I} H={H}")


@pytest.mark.parametrize("N,H,D", [(1, 1, 1), (3, 5, 7), (4, 9, 8), (5, 17, 15), (2, 33, 31),
                                   (3, 64, 65), (7, 65, 64), (2, 256, 33)])
@pytest.mark.parametrize("act", ["tanh", "identity"])
def test_head(simd, rng, K, N, H, D, act):
    h, W_p, b_p = randn(rng, N, H), randn(rng, D, H, scale=1 / np.sqrt(H)), randn(rng, D)
    du = randn(rng, N, D)

    def run():
        u = K.head_forward(h, W_p, b_p, activation=act)
        return (u,) + tuple(K.head_backward(h, W_p, u, du, activation=act))
    a, b = both(K, simd, run)
    compare(a, b, f"head N={N} H={H} D={D} {act}")


@pytest.mark.parametrize("B,S,D", [(1, 2, 1), (3, 5, 4), (7, 9, 8), (8, 17, 15), (5, 33, 16),
                                   (16, 63, 17), (9, 65, 33), (31, 64, 65), (4, 16, 256)])
@pytest.mark.parametrize("loss", ["xe", "bpr-max"])
def test_sampled_loss(simd, rng, K, B, S, D, loss):
    U, O_s = randn(rng, B, D), randn(rng, S, D, scale=1 / np.sqrt(D))
    target = i32(np.where(rng.random(B) < 0.2, -1, np.arange(B) % S))
    col_ids = i32(np.arange(S))
    if S > 3:
        col_ids[S - 1] = col_ids[0]
    b_s, lq = randn(rng, S, scale=0.1), f32(np.log(rng.uniform(1e-3, 0.1, S)))
    a, b = both(K, simd, lambda: K.sampled_loss(U, O_s, target, b_s=b_s, col_ids=col_ids,
                                                logq=lq, loss=loss, bpreg=0.5))
    compare(a, b, f"sampled_loss {loss} B={B} S={S} D={D}")


@pytest.mark.parametrize("N,D", [(n, d) for n, d in zip(EDGE_SIZES, EDGE_SIZES[::-1])]
                         + [(1000, 64), (300, 256)])
def test_score_and_topk(simd, rng, K, N, D):
    O, u, bias = randn(rng, N, D, scale=1 / np.sqrt(D)), randn(rng, D), randn(rng, N)
    idx = i32(rng.permutation(N)[:max(1, N // 2)])
    a, b = both(K, simd, lambda: (K.score(O, u, bias=bias), K.score(O, u, idx=idx)))
    compare(a, b, f"score N={N} D={D}")
    # ranking: exact on integer data (every score exact on every path)
    Oi, ui = f32(rng.integers(-3, 4, (N, D))), f32(rng.integers(-3, 4, D))
    bi = f32(rng.integers(-2, 3, N))
    excl = (rng.random(N) < 0.3).astype(np.uint8)
    for k in (1, 10, N):
        (ia, sa), (ib, sb) = both(K, simd, lambda: K.score_topk(Oi, ui, k, bias=bi,
                                                               exclude=excl))
        np.testing.assert_array_equal(ib, ia, err_msg=f"topk ids N={N} D={D} k={k}")
        np.testing.assert_array_equal(sb, sa, err_msg=f"topk scores N={N} D={D} k={k}")
    # random data: scores of the k best agree to rounding
    (ia, sa), (ib, sb) = both(K, simd, lambda: K.score_topk(O, u, 10, bias=bias))
    compare(sa, sb, f"topk scores (random) N={N} D={D}")


@pytest.mark.parametrize("n", EDGE_SIZES + (1000,))
def test_optimisers(simd, rng, K, n):
    p0, g, acc0 = randn(rng, n), randn(rng, n), f32(rng.uniform(0, 1, n))
    m0, v0 = randn(rng, n, scale=0.1), f32(rng.uniform(0, 0.1, n))

    def run():
        p, acc, m, v, vel = p0.copy(), acc0.copy(), m0.copy(), v0.copy(), m0.copy()
        out = []
        K.adagrad_step(p, g, acc, 0.1)
        out += [p.copy(), acc.copy()]
        K.adam_step(p, g, m, v, 3, 0.01, weight_decay=0.01)
        out += [p.copy(), m.copy(), v.copy()]
        K.sgd_step(p, g, 0.1, velocity=vel, momentum=0.9, nesterov=True)
        out += [p.copy(), vel.copy()]
        grads = [p.copy(), g.copy()]
        norm = K.clip_by_global_norm(grads, 0.5)
        out += grads + [np.float64(norm), np.float64(K.global_norm([g, acc]))]
        return out
    a, b = both(K, simd, run)
    compare(a, b, f"optimisers n={n}")


@pytest.mark.parametrize("n_rows,D", [(5, 1), (9, 3), (17, 8), (33, 15), (20, 17), (64, 33),
                                      (40, 65)])
def test_row_updates(simd, rng, K, n_rows, D):
    t0 = randn(rng, n_rows, D)
    acc0, m0 = f32(rng.uniform(0, 1, (n_rows, D))), randn(rng, n_rows, D, scale=0.1)
    v0 = f32(rng.uniform(0, 0.1, (n_rows, D)))
    rows = i32(rng.choice(n_rows, size=max(1, n_rows // 2), replace=False))
    g = randn(rng, rows.size, D)

    def run():
        t, acc, m, v = t0.copy(), acc0.copy(), m0.copy(), v0.copy()
        K.adagrad_rows(t, acc, rows, g, 0.1)
        K.adam_rows(t, m, v, rows, g, 4, 0.01)
        K.sgd_rows(t, rows, g, 0.2)
        return t, acc, m, v
    a, b = both(K, simd, run)
    compare(a, b, f"row updates n_rows={n_rows} D={D}")


# --------------------------------------------------------------------------
# No over-read: inputs against inaccessible pages, on every path
# --------------------------------------------------------------------------

@pytest.mark.skipif(not GUARD_PAGES_AVAILABLE, reason="guard pages need mmap/mprotect")
@pytest.mark.parametrize("where", ["end", "start"])
@pytest.mark.parametrize("n", [1, 3, 7, 9, 15, 17, 33, 65])
def test_no_over_read_past_array_ends(path, rng, K, where, n):
    """Every kernel on inputs whose first/last byte touches a PROT_NONE page
    (a stray SIMD load faults).  Results must equal the same path's results
    on ordinary arrays (correctness itself is tested against the references
    elsewhere)."""
    G = lambda a: guarded(a, where)   # noqa: E731
    T, B, I, H = 2, 3, n, n
    x = randn(rng, T, B, I)
    W = gru_weights(rng, I, H)
    h0 = randn(rng, B, H)
    lengths = i32([2, 0, 1])
    dy, dh_n = randn(rng, T, B, H), randn(rng, B, H)
    O, u, bias = randn(rng, 2 * n + 1, n), randn(rng, n), randn(rng, 2 * n + 1)
    idx = i32(rng.permutation(2 * n + 1)[:n])
    excl = (rng.random(2 * n + 1) < 0.3).astype(np.uint8)
    S = n + 2
    U, O_s = randn(rng, 4, n), randn(rng, S, n)
    target, col_ids = i32([0, 1, -1, 2]), i32(np.arange(S))
    b_s, lq = randn(rng, S), f32(np.log(rng.uniform(0.01, 0.1, S)))

    def run(w):
        out = []
        y, h_n, cache = K.gru_forward(w(x), *map(w, W), h0=w(h0), lengths=w(lengths),
                                      keep_cache=True)
        out += [y, h_n]
        out += K.gru_backward(w(x), w(W[0]), w(W[1]), w(y), w(cache), dy=w(dy), dh_n=w(dh_n),
                              h0=w(h0), lengths=w(lengths))
        out.append(K.gru_step(w(x[0, 0]), w(h0[0]), *map(w, W)))
        out.append(K.sgemm(w(O), w(O), trans_b=True))
        out.append(K.sgemm(w(O), w(O), trans_a=True))
        uh = K.head_forward(w(h0), w(O[:n]), w(bias[:n]))
        out += [uh, *K.head_backward(w(h0), w(O[:n]), w(uh), w(dh_n[:, :n]))]
        for loss in ("xe", "bpr-max"):
            out += list(K.sampled_loss(w(U), w(O_s), w(target), b_s=w(b_s), col_ids=w(col_ids),
                                       logq=w(lq), loss=loss, bpreg=0.5))
        out.append(K.score(w(O), w(u), bias=w(bias), idx=w(idx)))
        out += list(K.score_topk(w(O), w(u), 5, bias=w(bias), idx=w(idx), exclude=w(excl)))
        p, acc, m, v = w(u.copy()), w(np.abs(u)), w(np.zeros(n, np.float32)), \
            w(np.zeros(n, np.float32))
        K.adagrad_step(p, w(u), acc, 0.1)
        K.adam_step(p, w(u), m, v, 1, 0.1)
        K.sgd_step(p, w(u), 0.1, velocity=m, momentum=0.5, nesterov=True)
        out += [np.array(p), np.array(acc), np.array(m), np.array(v),
                np.float32(K.global_norm([w(u), w(bias)]))]
        tab, tacc = w(O.copy()), w(np.abs(O))
        tm, tv = w(np.zeros_like(O)), w(np.zeros_like(O))
        rows = w(i32([0, 2 * n]))
        K.adagrad_rows(tab, tacc, rows, w(O[:2]), 0.1)
        K.adam_rows(tab, tm, tv, rows, w(O[:2]), 1, 0.1)
        K.sgd_rows(tab, rows, w(O[:2]), 0.1)
        out += [np.array(tab), np.array(tacc), np.array(tm), np.array(tv)]
        return [np.array(o) if o is not None else None for o in out]

    plain = run(lambda a: a)
    fenced = run(G)
    for i, (a, b) in enumerate(zip(plain, fenced)):
        if a is None:
            assert b is None
        else:
            np.testing.assert_array_equal(b, a, err_msg=f"output {i} differs on guarded inputs")

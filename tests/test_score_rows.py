"""Compressed row tables in the kernels: score + top-k over float16 and int8
rows with per-row scales, row dequantisation, and the int8 GRU step.

References are float64 numpy on the dequantised values (``q * scale``).
The top-k must be exact on the scores the kernel computes (the same tie
rule as float32 tables: higher first, then lower row, NaN last), a row must
score the same bits wherever it sits on every path, and every SIMD path
must agree with the scalar specification within float32 summation-order
error.
"""
from __future__ import annotations

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import reference as ref  # noqa: E402
from conftest import EDGE_SIZES, PATHS, SIMD_PATHS, TOL_F32_GRU, assert_close  # noqa: E402
from deeprec_edge import kernels as K  # noqa: E402

DTYPES = ("int8", "float16")


def _table(rng, N, D, dtype, small=False):
    """(stored table, scales float32 [N], float64 values q * scale)."""
    if dtype == "int8":
        q = rng.integers(-2 if small else -127, 3 if small else 128, size=(N, D)).astype(np.int8)
    else:
        v = rng.integers(-2, 3, size=(N, D)) if small else rng.standard_normal((N, D))
        q = v.astype(np.float16)
    s = (2.0 ** rng.integers(-2, 2, size=N) if small
         else rng.uniform(0.002, 0.02, size=N)).astype(np.float32)
    return q, s, q.astype(np.float64) * s.astype(np.float64)[:, None]


def _rank(scores, rows):
    """Higher first, equal: lower row first, NaN last (float64 keys)."""
    s = np.asarray(scores, np.float64)
    nan = np.isnan(s)
    return np.lexsort((rows, np.where(nan, 0.0, -s), nan))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,D", [(n, d) for n, d in zip(EDGE_SIZES, EDGE_SIZES[::-1])]
                         + [(1000, 64), (300, 100)])
def test_scores_match_float64_on_every_path(path, rng, dtype, N, D):
    q, s, val = _table(rng, N, D, dtype)
    u = rng.standard_normal(D).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    want = val @ u.astype(np.float64) + b
    mag = np.abs(val) @ np.abs(u.astype(np.float64)) + np.abs(b)
    got = K.score(q, u, bias=b, scale=s).astype(np.float64)
    assert (np.abs(got - want) <= (D + 5) * 2 ** -23 * mag + 1e-30).all()
    idx = rng.integers(0, N, size=min(N, 37)).astype(np.int32)
    np.testing.assert_array_equal(K.score(q, u, bias=b, scale=s, idx=idx), got[idx])


@pytest.mark.parametrize("dtype", DTYPES)
def test_topk_exact_and_tie_rule_on_exact_data(path, rng, dtype):
    """Small integers and power-of-two scales: every score exact in float32,
    so the float64 ranking (with its many ties and NaN biases) is the answer
    bit for bit -- and the same as the float32 table of the same values."""
    N, D = 700, 19
    q, s, val = _table(rng, N, D, dtype, small=True)
    u = rng.integers(-2, 3, size=D).astype(np.float32)
    b = (0.5 * rng.integers(-2, 3, size=N)).astype(np.float32)
    b[::7] = np.nan
    excl = (rng.random(N) < 0.2).astype(np.uint8)
    full = val @ u.astype(np.float64) + b
    for k in (0, 1, 5, 20, 64, 65, 300, N + 5):
        for idx in (None, rng.permutation(N)[:400].astype(np.int32)):
            rows = np.arange(N) if idx is None else idx
            ok = excl[rows] == 0
            order = _rank(full[rows][ok], rows[ok])[:k]
            ti, ts = K.score_topk(q, u, k, bias=b, idx=idx, exclude=excl, scale=s)
            np.testing.assert_array_equal(ti, rows[ok][order])
            np.testing.assert_array_equal(ts, full[rows][ok][order].astype(np.float32))
            f32 = val.astype(np.float32)
            ti2, ts2 = K.score_topk(f32, u, k, bias=b, idx=idx, exclude=excl)
            np.testing.assert_array_equal(ti, ti2)
            np.testing.assert_array_equal(ts, ts2)


@st.composite
def compressed_problem(draw):
    N = draw(st.integers(1, 80))
    D = draw(st.integers(0, 130))
    dtype = draw(st.sampled_from(DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    q, s, _ = _table(rng, N, D, dtype, small=draw(st.booleans()))
    if draw(st.booleans()):                       # duplicate rows: exact ties
        r = draw(st.integers(0, N - 1))
        q[r], s[r] = q[0], s[0]
    u = rng.standard_normal(D).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32) if draw(st.booleans()) else None
    scale = s if draw(st.booleans()) or dtype == "int8" else None
    idx = np.asarray(draw(st.lists(st.integers(0, N - 1), max_size=70)), np.int32)
    return q, u, bias, scale, idx, draw(st.integers(0, N + 3))


@pytest.mark.parametrize("p", PATHS)
@settings(max_examples=120)
@given(prob=compressed_problem())
def test_every_path_scores_a_compressed_row_the_same_wherever_it_sits(p, prob):
    """Full table, candidate list (any position or length), table offset and
    top-k: one set of score bits per path, and the exact tie rule over it."""
    q, u, bias, scale, idx, k = prob
    N = q.shape[0]
    with K.forced_path(p):
        full = K.score(q, u, bias=bias, scale=scale)
        np.testing.assert_array_equal(K.score(q, u, bias=bias, scale=scale, idx=idx), full[idx])
        off = N // 3
        tail = K.score(q[off:], u, bias=None if bias is None else bias[off:],
                       scale=None if scale is None else scale[off:])
        np.testing.assert_array_equal(tail, full[off:])
        ti, ts = K.score_topk(q, u, k, bias=bias, scale=scale)
        want = _rank(full, np.arange(N))[:k]
        np.testing.assert_array_equal(ti, want)
        np.testing.assert_array_equal(ts, full[want])
        if idx.size:
            ti, ts = K.score_topk(q, u, k, bias=bias, scale=scale, idx=idx)
            np.testing.assert_array_equal(ts, full[ti])
            np.testing.assert_array_equal(_rank(ts, ti), np.arange(len(ti)))


@pytest.mark.skipif(not SIMD_PATHS, reason="no SIMD path here (or DEEPREC_EDGE_FORCE_SCALAR)")
@pytest.mark.parametrize("simd", SIMD_PATHS)
@settings(max_examples=100)
@given(prob=compressed_problem())
def test_simd_compressed_scores_match_scalar(simd, prob):
    q, u, bias, scale, _, _ = prob
    with K.forced_path("scalar"):
        a = K.score(q, u, bias=bias, scale=scale).astype(np.float64)
    with K.forced_path(simd):
        b = K.score(q, u, bias=bias, scale=scale).astype(np.float64)
    s = np.ones(q.shape[0]) if scale is None else scale.astype(np.float64)
    mag = (np.abs(q.astype(np.float64)) @ np.abs(u.astype(np.float64))) * s
    if bias is not None:
        mag += np.abs(bias)
    assert (np.abs(a - b) <= 2 * (q.shape[1] + 5) * 2 ** -23 * (mag + 1e-30)).all()


@pytest.mark.parametrize("dtype", DTYPES + ("float32",))
def test_dequantize_rows_is_one_rounding_of_q_times_scale(rng, dtype):
    N, D = 50, 33
    q = (rng.integers(-127, 128, size=(N, D)).astype(np.int8) if dtype == "int8"
         else rng.standard_normal((N, D)).astype(dtype))
    s = rng.uniform(0.001, 0.1, size=N).astype(np.float32)
    idx = rng.integers(0, N, size=70).astype(np.int32)
    want = q.astype(np.float32)[idx] * s[idx, None]        # one float32 multiply
    np.testing.assert_array_equal(K.dequantize_rows(q, idx=idx, scale=s), want)
    np.testing.assert_array_equal(K.dequantize_rows(q), q.astype(np.float32))


def _quantise_rows(W):
    s = (np.abs(W).max(axis=1, initial=0.0) / 127.0).astype(np.float32)
    s[s == 0] = 1.0
    q = np.clip(np.rint(W / s[:, None]), -127, 127).astype(np.int8)
    return q, s


@pytest.mark.parametrize("I,H", [(5, 1), (1, 7), (17, 33), (64, 100), (128, 256), (0, 9)])
def test_int8_gru_step_matches_float64_on_dequantised_weights(path, rng, I, H):
    Wi, Wh = (rng.uniform(-0.3, 0.3, (3 * H, c)).astype(np.float32) for c in (I, H))
    (qi, si), (qh, sh) = _quantise_rows(Wi), _quantise_rows(Wh)
    bi, bh = (rng.uniform(-0.3, 0.3, 3 * H).astype(np.float32) for _ in range(2))
    x = rng.standard_normal(I).astype(np.float32)
    h = rng.uniform(-1, 1, H).astype(np.float32)
    want = ref.gru_step(x, h, qi.astype(np.float64) * si[:, None],
                        qh.astype(np.float64) * sh[:, None], bi, bh)
    got = K.gru_step(x, h, qi, qh, bi, bh, s_ih=si, s_hh=sh)
    assert_close(got, want, TOL_F32_GRU, "int8 step vs float64")
    st_ = K.GruStepper(qi, qh, bi, bh, s_ih=si, s_hh=sh)
    assert st_.weight_dtype == np.int8
    np.testing.assert_array_equal(st_.step(x, h), got)
    out = h.copy()
    st_.step(x, out, out=out)                        # in place
    np.testing.assert_array_equal(out, got)


def test_compressed_arguments_are_checked(rng):
    q = rng.integers(-5, 5, size=(6, 4)).astype(np.int8)
    u = np.ones(4, np.float32)
    with pytest.raises(ValueError, match="O: expected float32, float16 or int8"):
        K.score(q.astype(np.int16), u)
    with pytest.raises(ValueError, match=r"scale: expected float32 array of shape \(N,\)"):
        K.score(q, u, scale=np.ones(5, np.float32))
    with pytest.raises(ValueError, match="scale"):
        K.score_topk(q, u, 2, scale=np.ones(6, np.float64))
    with pytest.raises(IndexError, match=r"idx\[1\] = 6"):
        K.score_topk(q, u, 2, idx=np.array([0, 6], np.int32))
    with pytest.raises(IndexError, match=r"idx\[0\] = -1"):
        K.dequantize_rows(q, idx=np.array([-1], np.int32))
    W = np.zeros((6, 3), np.int8)
    b = np.zeros(6, np.float32)
    x, h = np.zeros(3, np.float32), np.zeros(2, np.float32)
    with pytest.raises(ValueError, match="both float16 or both int8"):
        K.gru_step(x, h, W, np.zeros((6, 2), np.float32), b, b)
    with pytest.raises(ValueError, match="s_ih: per-row scales go with int8 weights"):
        K.gru_step(x, h, W.astype(np.float32), np.zeros((6, 2), np.float32), b, b,
                   s_ih=np.ones(6, np.float32))
    with pytest.raises(ValueError, match=r"s_hh: expected float32 array of shape \(3H,\)"):
        K.GruStepper(W, np.zeros((6, 2), np.int8), b, b, s_hh=np.ones(5, np.float32))

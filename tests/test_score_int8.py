"""int8 tables scored exactly in integers, and their packed form.

The reference is the specification written out in numpy (float64 and
int64): u in fixed point ``U = rint(u * 2^s)`` with ``max|U|`` in
``[2^21, 2^22]``, ``I = q @ U`` exactly, ``score = float32(I * (scale *
2^-s)) + bias``.  Every path must give those bits -- on the row-major table
and on :func:`deeprec_edge.kernels.pack_rows_i8`'s packed one, in a full
table, a candidate list and the top-k -- and stay within the fixed-point
bound of the float64 scores of the dequantised values.
"""
from __future__ import annotations

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from conftest import PATHS  # noqa: E402
from deeprec_edge import kernels as K  # noqa: E402
from deeprec_edge.quant import Compressed  # noqa: E402


def spec_scores(q, u, scale=None, bias=None):
    """The documented int8 score, independently of the library."""
    N, D = q.shape
    u = np.asarray(u, np.float32)
    if not np.isfinite(u).all():
        return np.full(N, np.nan, np.float32)
    m = float(np.abs(u).max(initial=0.0))
    x = int(np.frexp(m)[1]) if m > 0 else 0
    sh = 22 - x if m > 0 else 0
    U = np.rint(np.ldexp(u.astype(np.float64), sh)).astype(np.int64)
    assert m == 0 or 2 ** 21 <= np.abs(U).max() <= 2 ** 22
    I = q.astype(np.int64) @ U                                     # exact
    s = np.ones(N, np.float32) if scale is None else np.asarray(scale, np.float32)
    t = s.astype(np.float64) * np.ldexp(1.0, -sh)                  # exact
    y = (I.astype(np.float64) * t).astype(np.float32)
    b = np.zeros(N, np.float32) if bias is None else np.asarray(bias, np.float32)
    return y + b


def packed_reference(q):
    """The packed layout written out: blocks of 16 rows, 4 columns a group,
    each byte q + 128 (padding: q = 0)."""
    N, D = q.shape
    Np, G = -(-N // 16) * 16, -(-D // 4)
    full = np.zeros((Np, 4 * G), np.int16)
    full[:N, :D] = q
    b = (full + 128).astype(np.uint8).reshape(Np // 16, 16, G, 4)
    return b.transpose(0, 2, 1, 3).reshape(-1)


@st.composite
def int8_problem(draw):
    N = draw(st.integers(1, 70))
    D = draw(st.integers(0, 90))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    lo, hi = draw(st.sampled_from([(-128, 127), (-127, 127), (-2, 2)]))
    q = rng.integers(lo, hi + 1, size=(N, D)).astype(np.int8)
    if N > 1 and draw(st.booleans()):
        q[N - 1] = q[0]                                   # exact ties
    kind = draw(st.sampled_from(["normal", "wide", "small-int", "zero"]))
    if kind == "normal":
        u = rng.standard_normal(D)
    elif kind == "wide":                                  # components of very different sizes
        u = rng.standard_normal(D) * 10.0 ** rng.integers(-30, 30, size=D)
    elif kind == "small-int":
        u = rng.integers(-2, 3, size=D)
    else:
        u = np.zeros(D)
    u = u.astype(np.float32)
    scale = rng.uniform(0.001, 0.05, N).astype(np.float32) if draw(st.booleans()) else None
    bias = rng.standard_normal(N).astype(np.float32) if draw(st.booleans()) else None
    idx = np.asarray(draw(st.lists(st.integers(0, N - 1), max_size=60)), np.int32)
    return q, u, scale, bias, idx, draw(st.integers(0, N + 2))


@pytest.mark.parametrize("p", PATHS)
@settings(max_examples=150, deadline=None)
@given(prob=int8_problem())
def test_every_path_gives_the_specification_bits(p, prob):
    q, u, scale, bias, idx, k = prob
    want = spec_scores(q, u, scale, bias)
    P = K.pack_rows_i8(q)
    with K.forced_path(p):
        for table in (q, P):
            got = K.score(table, u, bias=bias, scale=scale)
            np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(K.score(table, u, bias=bias, scale=scale, idx=idx),
                                          want[idx])
            ti, ts = K.score_topk(table, u, k, bias=bias, scale=scale)
            order = np.lexsort((np.arange(len(want)), -want.astype(np.float64)))[:k]
            np.testing.assert_array_equal(ti, order)
            np.testing.assert_array_equal(ts, want[order])


@settings(max_examples=100, deadline=None)
@given(prob=int8_problem())
def test_within_the_fixed_point_bound_of_float64(prob):
    """The only approximation is u's rounding (half a unit of 2^-s, at most
    2^-23 max|u| per component), then the float32 roundings."""
    q, u, scale, bias, _, _ = prob
    s = np.ones(q.shape[0]) if scale is None else scale.astype(np.float64)
    b = 0.0 if bias is None else bias.astype(np.float64)
    exact = (q.astype(np.float64) @ u.astype(np.float64)) * s + b
    got = K.score(q, u, bias=bias, scale=scale).astype(np.float64)
    m = float(np.abs(u.astype(np.float64)).max(initial=0.0))
    bound = (2.0 ** -23 * m * np.abs(q.astype(np.float64)).sum(axis=1) * s
             + 2.0 ** -23 * (np.abs(exact) + np.abs(b)) + 1e-300)
    assert (np.abs(got - exact) <= bound).all()


def test_large_rows_use_the_same_specification(rng):
    """Rows longer than 1024 columns take the portable exact path: the same
    specification, the same bits."""
    q = rng.integers(-127, 128, size=(37, 1030)).astype(np.int8)
    u = rng.standard_normal(1030).astype(np.float32)
    s = rng.uniform(0.001, 0.01, 37).astype(np.float32)
    want = spec_scores(q, u, s)
    for p in PATHS:
        with K.forced_path(p):
            np.testing.assert_array_equal(K.score(q, u, scale=s), want)
            np.testing.assert_array_equal(K.score(K.pack_rows_i8(q), u, scale=s), want)


def test_a_non_finite_user_vector_scores_nan(rng):
    q = rng.integers(-5, 6, size=(20, 8)).astype(np.int8)
    for bad in (np.nan, np.inf, -np.inf):
        u = rng.standard_normal(8).astype(np.float32)
        u[3] = bad
        for p in PATHS:
            with K.forced_path(p):
                assert np.isnan(K.score(q, u, bias=np.ones(20, np.float32))).all()
                ti, ts = K.score_topk(K.pack_rows_i8(q), u, 5)
                np.testing.assert_array_equal(ti, np.arange(5))       # NaN: by row
                assert np.isnan(ts).all()


@pytest.mark.parametrize("N,D", [(1, 1), (15, 3), (16, 4), (17, 5), (100, 64), (33, 0), (0, 7)])
def test_packed_layout_and_dequantisation(rng, N, D):
    q = rng.integers(-128, 128, size=(N, D)).astype(np.int8)
    P = K.pack_rows_i8(q)
    assert P.shape == (N, D) and isinstance(P, K.PackedI8)
    np.testing.assert_array_equal(P.data, packed_reference(q))
    assert P.nbytes == P.data.nbytes == -(-N // 16) * 16 * -(-D // 4) * 4
    assert not P.data.flags.writeable
    if N:
        s = rng.uniform(0.01, 0.1, N).astype(np.float32)
        idx = rng.integers(0, N, size=2 * N).astype(np.int32)
        np.testing.assert_array_equal(K.dequantize_rows(P, idx=idx, scale=s),
                                      K.dequantize_rows(q, idx=idx, scale=s))


def test_packed_tables_are_checked(rng):
    q = rng.integers(-5, 6, size=(20, 8)).astype(np.int8)
    P = K.pack_rows_i8(q)
    u = np.zeros(8, np.float32)
    with pytest.raises(ValueError, match=r"^q: expected int8"):
        K.pack_rows_i8(q.astype(np.int16))
    with pytest.raises(ValueError, match=r"^q: expected int8"):
        K.pack_rows_i8(q[:, ::2])
    with pytest.raises(ValueError, match=r"^u: expected float32"):
        K.score(P, np.zeros(7, np.float32))
    with pytest.raises(ValueError, match=r"^scale: expected"):
        K.score(P, u, scale=np.ones(19, np.float32))
    with pytest.raises(IndexError, match="idx"):
        K.score_topk(P, u, 3, idx=np.array([0, 20], np.int32))
    with pytest.raises(AttributeError):
        P.n_rows = 3
    with pytest.raises(TypeError, match="made by pack_rows_i8"):
        K.PackedI8()
    empty = K.PackedI8.__new__(K.PackedI8)               # not through its constructor
    with pytest.raises(ValueError, match="^O: an empty PackedI8"):
        K.score(empty, np.zeros(0, np.float32))


def test_compressed_tables_pack_once_and_score_alike(rng):
    q = rng.integers(-127, 128, size=(50, 16)).astype(np.int8)
    s = rng.uniform(0.01, 0.1, 50).astype(np.float32)
    t = Compressed(q, s, "int8")
    assert t.packed() is t.packed()
    np.testing.assert_array_equal(t.packed().data, packed_reference(q))
    with pytest.raises(ValueError, match="int8 only"):
        Compressed(q.astype(np.float16), None, "float16").packed()

"""Properties checked with hypothesis where they beat hand-picked examples:
the SIMD paths against the scalar specification, and the file readers
(model file, click history) on generated inputs.

Deterministic (the "deeprec-edge" profile in conftest.py derandomizes and
writes no example database); ``HYPOTHESIS_PROFILE=long pytest
tests/test_properties.py`` runs many more examples.
"""
from __future__ import annotations

import datetime as dt
import io
import json
import os
import zipfile

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import deeprec_edge as de  # noqa: E402
from conftest import PATHS, SIMD_PATHS, TOL_PATHS, assert_close  # noqa: E402
from deeprec_edge import kernels as K  # noqa: E402
from deeprec_edge.history import HistoryError, read_history  # noqa: E402
from deeprec_edge.model import ModelFormatError, load_model, save_model  # noqa: E402
from helpers_model import random_model  # noqa: E402


def _arrays(draw, shape, kind):
    """float32 data: 'normal' values, 'small' integers (exact sums, many
    ties) or 'spread' magnitudes (cancellation)."""
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    if kind == "small":
        return rng.integers(-2, 3, size=shape).astype(np.float32)
    a = rng.standard_normal(shape)
    if kind == "spread":
        a *= 10.0 ** rng.integers(-3, 4, size=shape)
    return a.astype(np.float32)


@st.composite
def scoring_problem(draw):
    N = draw(st.integers(1, 90))
    D = draw(st.integers(0, 130))
    kind = draw(st.sampled_from(["normal", "small", "spread"]))
    O = _arrays(draw, (N, D), kind)
    if draw(st.booleans()):                       # duplicate rows: exact ties
        O[draw(st.integers(0, N - 1))] = O[0]
    u = _arrays(draw, (D,), kind)
    bias = _arrays(draw, (N,), kind) if draw(st.booleans()) else None
    idx = np.asarray(draw(st.lists(st.integers(0, N - 1), min_size=0, max_size=70)), np.int32)
    k = draw(st.integers(0, N + 3))
    return O, u, bias, idx, k


def _rank_order(scores, rows):
    """Higher score first, equal scores: lower row first (scores finite)."""
    return np.lexsort((rows, -scores.astype(np.float64)))


# --------------------------------------------------------------------------
# SIMD paths vs the scalar specification
# --------------------------------------------------------------------------


@pytest.mark.parametrize("p", PATHS)
@settings(max_examples=150)
@given(prob=scoring_problem())
def test_every_path_scores_a_row_the_same_wherever_it_sits(p, prob):
    """Full table, candidate list (any position, any length) and top-k: one
    set of score bits per path, and the tie rule over them."""
    O, u, bias, idx, k = prob
    with K.forced_path(p):
        full = K.score(O, u, bias=bias)
        np.testing.assert_array_equal(K.score(O, u, bias=bias, idx=idx), full[idx])
        ti, ts = K.score_topk(O, u, k, bias=bias)
        want = _rank_order(full, np.arange(O.shape[0]))[:k]
        np.testing.assert_array_equal(ti, want)
        np.testing.assert_array_equal(ts, full[want])
        if idx.size:
            ti, ts = K.score_topk(O, u, k, bias=bias, idx=idx)
            np.testing.assert_array_equal(ts, full[ti])
            rows = np.unique(idx)             # a row listed twice may come back twice
            assert set(ti.tolist()) <= set(rows.tolist())
            order = _rank_order(ts, ti)
            np.testing.assert_array_equal(order, np.arange(len(ti)))


@pytest.mark.skipif(not SIMD_PATHS, reason="no SIMD path here (or DEEPREC_EDGE_FORCE_SCALAR)")
@pytest.mark.parametrize("simd", SIMD_PATHS)
@settings(max_examples=100)
@given(prob=scoring_problem())
def test_simd_scores_match_scalar(simd, prob):
    O, u, bias, _, _ = prob
    with K.forced_path("scalar"):
        a = K.score(O, u, bias=bias).astype(np.float64)
    with K.forced_path(simd):
        b = K.score(O, u, bias=bias).astype(np.float64)
    # the bound scales with sum |O_ik u_k| + |b_i|: summation order only
    mag = np.abs(O.astype(np.float64)) @ np.abs(u.astype(np.float64))
    if bias is not None:
        mag += np.abs(bias)
    assert (np.abs(a - b) <= 4e-7 * (O.shape[1] + 2) * (mag + 1e-30)).all()


@st.composite
def gemm_problem(draw):
    M, N, Kd = (draw(st.integers(0, 70)) for _ in range(3))
    ta, tb = draw(st.booleans()), draw(st.booleans())
    A = _arrays(draw, (Kd, M) if ta else (M, Kd), "normal")
    B = _arrays(draw, (N, Kd) if tb else (Kd, N), "normal")
    C = _arrays(draw, (M, N), "normal")
    alpha = draw(st.sampled_from([1.0, -0.5, 2.0]))
    beta = draw(st.sampled_from([0.0, 1.0, -0.25]))
    return A, B, C, ta, tb, alpha, beta


@pytest.mark.skipif(not SIMD_PATHS, reason="no SIMD path here (or DEEPREC_EDGE_FORCE_SCALAR)")
@pytest.mark.parametrize("simd", SIMD_PATHS)
@settings(max_examples=80)
@given(prob=gemm_problem())
def test_simd_sgemm_matches_scalar(simd, prob):
    A, B, C, ta, tb, alpha, beta = prob
    out = []
    for p in ("scalar", simd):
        with K.forced_path(p):
            out.append(K.sgemm(A, B, ta, tb, alpha=alpha, beta=beta, C=C.copy()))
    assert_close(out[1], out[0], TOL_PATHS, f"sgemm {A.shape}x{B.shape} ta={ta} tb={tb}")


@pytest.mark.skipif(not SIMD_PATHS, reason="no SIMD path here (or DEEPREC_EDGE_FORCE_SCALAR)")
@pytest.mark.parametrize("simd", SIMD_PATHS)
@settings(max_examples=80)
@given(I=st.integers(1, 70), H=st.integers(1, 70), half=st.booleans(),
       seed=st.integers(0, 2 ** 32 - 1))
def test_simd_gru_step_matches_scalar(simd, I, H, half, seed):
    rng = np.random.default_rng(seed)
    k = 1 / np.sqrt(H)
    W_ih, W_hh = (rng.uniform(-k, k, s).astype(np.float32) for s in ((3 * H, I), (3 * H, H)))
    b_ih, b_hh = (rng.uniform(-k, k, 3 * H).astype(np.float32) for _ in range(2))
    if half:
        W_ih, W_hh = W_ih.astype(np.float16), W_hh.astype(np.float16)
    x = rng.standard_normal(I).astype(np.float32)
    h = rng.uniform(-1, 1, H).astype(np.float32)
    out = []
    for p in ("scalar", simd):
        with K.forced_path(p):
            out.append(K.gru_step(x, h, W_ih, W_hh, b_ih, b_hh))
    assert_close(out[1], out[0], TOL_PATHS, f"gru_step I={I} H={H} half={half}")


# --------------------------------------------------------------------------
# the model file
# --------------------------------------------------------------------------

id_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                  min_size=1, max_size=12)


@st.composite
def models(draw):
    tied = draw(st.booleans())
    e = draw(st.integers(1, 12))
    hidden = draw(st.lists(st.integers(1, 12), min_size=1, max_size=3))
    n = draw(st.integers(1, 25))
    m = random_model(n_items=n, e=e, hidden=hidden, d=e if tied else draw(st.integers(1, 12)),
                     tied=tied, activation=draw(st.sampled_from(["tanh", "identity"])),
                     carry_state=draw(st.booleans()), seed=draw(st.integers(0, 1000)))
    if draw(st.booleans()):
        ids = draw(st.lists(id_text, min_size=n, max_size=n, unique=True))
        m.item_ids = np.array(ids, dtype=str)
    elif draw(st.booleans()):
        ids = draw(st.lists(st.integers(-2 ** 63, 2 ** 63 - 1), min_size=n, max_size=n,
                            unique=True))
        m.item_ids = np.array(ids, dtype=np.int64)
    return m


@settings(max_examples=60)
@given(m=models(), compressed=st.booleans())
def test_model_file_round_trip(tmp_path_factory, m, compressed):
    p = tmp_path_factory.mktemp("rt") / "m.npz"
    save_model(m, p, compressed=compressed)
    m2 = load_model(p)
    assert m2.fingerprint() == m.fingerprint()
    assert m2.item_ids.tolist() == m.item_ids.tolist()


@pytest.fixture(scope="module")
def model_bytes():
    buf = io.BytesIO()
    m = random_model(n_items=12, e=4, hidden=[5, 3], d=4, seed=3)
    np.savez(buf, **m.to_arrays())
    return buf.getvalue(), m.fingerprint()


@settings(max_examples=300)
@given(data=st.data())
def test_model_file_damage_is_caught_or_harmless(tmp_path_factory, model_bytes, data):
    """Any flipped bytes, truncation or insertion: the file loads as the
    same model (the bytes were ones the format ignores, e.g. zip
    timestamps) or fails with ModelFormatError -- no other exception, no
    other model."""
    raw, fp = model_bytes
    b = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "truncate", "insert", "zero"]))
        pos = data.draw(st.integers(0, max(len(b) - 1, 0)))
        if op == "flip" and b:
            b[pos] ^= data.draw(st.integers(1, 255))
        elif op == "truncate":
            del b[pos:]
        elif op == "insert":
            b[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        elif b:
            b[pos:pos + 8] = bytes(len(b[pos:pos + 8]))
    p = tmp_path_factory.mktemp("dmg") / "m.npz"
    p.write_bytes(bytes(b))
    try:
        m = load_model(p)
    except ModelFormatError:
        return
    assert m.fingerprint() == fp


# --------------------------------------------------------------------------
# the click history
# --------------------------------------------------------------------------

T_MIN, T_MAX = 946684800, 1700000000          # 2000 .. 2023, seconds (not in the future)


@st.composite
def histories(draw):
    n = draw(st.integers(1, 40))
    items = draw(st.lists(st.integers(0, 999), min_size=n, max_size=n))
    times = draw(st.lists(st.integers(T_MIN, T_MAX), min_size=n, max_size=n))
    fmt = draw(st.sampled_from(["s", "ms", "iso-z", "iso-offset", "iso-space"]))
    delim = draw(st.sampled_from([",", "\t", ";"]))
    order = draw(st.permutations(["item_id", "timestamp", "note"]))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    bom = draw(st.booleans())
    notes = draw(st.lists(st.text(st.characters(blacklist_categories=("Cs", "Cc")),
                                  max_size=6), min_size=n, max_size=n))
    return items, times, fmt, delim, order, newline, bom, notes


def _stamp(t, fmt):
    d = dt.datetime.fromtimestamp(t, dt.timezone.utc)
    if fmt == "s":
        return str(t)
    if fmt == "ms":
        return str(t * 1000)
    if fmt == "iso-z":
        return d.strftime("%Y-%m-%dT%H:%M:%SZ")
    if fmt == "iso-space":
        return d.strftime("%Y-%m-%d %H:%M:%S")            # no zone: UTC
    off = dt.timezone(dt.timedelta(hours=5, minutes=30))
    return d.astimezone(off).isoformat()


@settings(max_examples=120)
@given(h=histories())
def test_history_reads_back_what_was_written(h):
    items, times, fmt, delim, order, newline, bom, notes = h
    assume(not (fmt == "ms" and min(times) * 1000 < 1e11))
    import csv
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=delim, lineterminator=newline)
    w.writerow(order)
    for i, t, note in zip(items, times, notes):
        row = {"item_id": str(i), "timestamp": _stamp(t, fmt), "note": note}
        w.writerow([row[c] for c in order])
    data = ("\ufeff" if bom else "") + buf.getvalue()
    hist = read_history(io.BytesIO(data.encode("utf-8")))
    want = np.argsort(np.asarray(times, np.float64), kind="stable")
    np.testing.assert_array_equal(hist.item_ids, np.asarray(items, np.int64)[want])
    np.testing.assert_array_equal(hist.timestamps, np.asarray(times, np.float64)[want])
    assert hist.n_rows == len(items) and hist.n_future == 0


@settings(max_examples=300)
@given(data=st.binary(max_size=300), prefix=st.sampled_from([b"", b"item_id,timestamp\n"]))
def test_history_reader_on_any_bytes(data, prefix):
    """Any bytes: a History or a HistoryError, nothing else."""
    try:
        read_history(io.BytesIO(prefix + data))
    except HistoryError:
        pass

"""The repeat component (deeprec_edge.repeat): the memory and its features
against a plain-Python reference written from the definition, replay
equivalence (batch features == streaming memory), bounded memory, and the
scores it adds."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deeprec_edge.repeat import (FEATURES, RepeatMemory, RepeatSpec, add_repeat_scores,
                                 history_features)


def reference_features(items, starts, p, capacity):
    """Features after click p, from the definition: the `capacity` distinct
    items with the most recent last clicks; count, clicks since the last
    click, is-last, clicked in the current session."""
    last, count, sess_of_last = {}, {}, {}
    session = 0
    for j in range(p + 1):
        if j == 0 or starts[j]:
            session += 1
        i = int(items[j])
        # an evicted item forgets its count
        if i not in last and len(last) == capacity:
            oldest = min(last, key=lambda k: last[k])
            for d in (last, count, sess_of_last):
                del d[oldest]
        last[i] = j
        count[i] = count.get(i, 0) + 1
        sess_of_last[i] = session
    out = {}
    for i in last:
        age = p - last[i]
        out[i] = [1.0, math.log1p(count[i]), math.log1p(age), float(age == 0),
                  float(sess_of_last[i] == session)]
    return out


@st.composite
def histories(draw):
    n = draw(st.integers(1, 40))
    items = draw(st.lists(st.integers(0, 7), min_size=n, max_size=n))
    starts = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    cap = draw(st.integers(1, 9))
    pos = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=6))
    return np.array(items), np.array(starts), np.array(pos), cap


@settings(max_examples=300, deadline=None)
@given(histories())
def test_features_match_the_definition(h):
    items, starts, pos, cap = h
    rows, cols, phi = history_features(items, starts, pos, cap)
    assert phi.shape == (rows.size, len(FEATURES)) and phi.dtype == np.float32
    for r, p in enumerate(pos.tolist()):
        ref = reference_features(items, starts, p, cap)
        sel = rows == r
        got = {int(c): f for c, f in zip(cols[sel], phi[sel])}
        assert set(got) == set(ref)
        assert len(got) <= cap
        for i, f in ref.items():
            np.testing.assert_allclose(got[i], f, rtol=1e-6)


def test_streaming_memory_equals_replay_and_state_round_trip():
    rng = np.random.default_rng(0)
    items = rng.integers(0, 30, 200)
    starts = rng.random(200) < 0.1
    mem = RepeatMemory(12)
    for j in range(200):
        mem.click(items[j], bool(starts[j]))
    c1, f1 = mem.features()
    r, c2, f2 = history_features(items, starts, [199], 12)
    o1, o2 = np.argsort(c1), np.argsort(c2)
    np.testing.assert_array_equal(c1[o1], c2[o2])
    np.testing.assert_array_equal(f1[o1], f2[o2])
    # state -> a fresh memory -> same features and same future
    m2 = RepeatMemory(12)
    m2.load_state(mem.state(), n_items=30)
    for m in (mem, m2):
        m.click(5, False)
    a, b = mem.features(), m2.features()
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_memory_is_bounded_on_a_long_history():
    mem = RepeatMemory(50)
    for j in range(100_000):
        mem.click(j % 5000, j % 7 == 0)
    items, phi = mem.features()
    assert items.size == 50 and mem.size == 50
    # the 50 most recent distinct items are kept
    assert set(items.tolist()) == set(range(5000 - 50, 5000))


@pytest.mark.parametrize("bad", [
    {"items": [1, 1], "count": [1, 1], "last": [0, 1], "session": [1, 1], "clock": [2, 1]},
    {"items": [1], "count": [0], "last": [0], "session": [1], "clock": [1, 1]},
    {"items": [99], "count": [1], "last": [0], "session": [1], "clock": [1, 1]},
    {"items": [1], "count": [1], "last": [5], "session": [1], "clock": [1, 1]},
    {"items": [1, 2], "count": [1], "last": [0], "session": [1], "clock": [1, 1]},
])
def test_bad_memory_state_is_refused(bad):
    with pytest.raises(ValueError, match="repeat memory state"):
        RepeatMemory(10).load_state(bad, n_items=10)


def test_add_repeat_scores_matches_a_dense_reference():
    rng = np.random.default_rng(1)
    S = rng.standard_normal((3, 6)).astype(np.float32)
    rows = np.array([0, 0, 2])
    cols = np.array([1, 4, 4])
    phi = rng.standard_normal((3, len(FEATURES))).astype(np.float32)
    spec = RepeatSpec(scale=0.7, w=tuple(rng.standard_normal(len(FEATURES)).tolist()))
    ref = 0.7 * S.astype(np.float64)
    for r, c, f in zip(rows, cols, phi):
        ref[r, c] += float(f.astype(np.float64) @ np.asarray(spec.w))
    got = add_repeat_scores(S.copy(), rows, cols, phi, spec)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    assert not RepeatSpec().active and spec.active


def test_feature_dot_is_the_float64_product_without_blas():
    from deeprec_edge.repeat import feature_dot
    rng = np.random.default_rng(7)
    for n in (0, 1, 5, 333):
        phi = rng.standard_normal((n, len(FEATURES))).astype(np.float32)
        w = rng.standard_normal(len(FEATURES)).astype(np.float32)
        got = feature_dot(phi, w)
        assert got.dtype == np.float32 and got.shape == (n,)
        ref = phi.astype(np.float64) @ w.astype(np.float64)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
        # float64 features stay float64 (the reference paths)
        got64 = feature_dot(phi.astype(np.float64), w)
        assert got64.dtype == np.float64
        np.testing.assert_allclose(got64, phi.astype(np.float64) @ w.astype(np.float32), rtol=1e-12)
    with pytest.raises(ValueError, match="weights"):
        feature_dot(np.zeros((3, 4), np.float32), np.zeros(5))

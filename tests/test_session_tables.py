"""Streaming sessions: the gathered candidate table and float16 GRU weights.

``Session(model, candidates=...)`` ranks its candidates from a contiguous
copy of their output rows; ``Session(..., weight_dtype="float16")`` steps
with binary16 copies of the GRU weights.  Both are checked against a
float64 numpy replay of the model (with the weights rounded to float16 where
the session rounds them), never against the session's own earlier output.
"""
from __future__ import annotations

import numpy as np
import pytest

import reference as ref
from helpers_model import random_model

import deeprec_edge as de


def replay(model, clicks, half=False):
    """float64 user vector after each click (item ids), the model's GRU
    weights rounded to float16 first when ``half``."""
    rnd = (lambda a: a.astype(np.float16).astype(np.float64)) if half else \
        (lambda a: a.astype(np.float64))
    layers = [(rnd(L.W_ih), rnd(L.W_hh), L.b_ih, L.b_hh) for L in model.layers]
    h = [np.zeros(L[1].shape[1]) for L in layers]
    out = []
    for item in clicks:
        x = model.E[model.id_to_index[item]]
        for l, layer in enumerate(layers):
            h[l] = ref.gru_step(x, h[l], *layer)
            x = h[l]
        out.append(ref.head_forward(x[None], model.W_p, model.b_p, model.activation)[0])
    return out


def check_topk(model, u64, cand_ids, clicked, ids, scores, k, what):
    """ids/scores: the k best candidates (clicked excluded) of float64 scores."""
    O = model.out_table.astype(np.float64)
    b = model.output_bias.astype(np.float64)
    elig = [c for c in dict.fromkeys(cand_ids) if c not in clicked]
    s64 = {c: float(O[model.id_to_index[c]] @ u64 + b[model.id_to_index[c]]) for c in elig}
    want = sorted(s64.values(), reverse=True)[:k]
    got = [s64[i] for i in ids]            # KeyError: a clicked or non-candidate item
    assert len(ids) == min(k, len(elig)), what
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=what)
    np.testing.assert_allclose(np.asarray(scores, np.float64), got, rtol=1e-5, atol=1e-5,
                               err_msg=what)


@pytest.mark.parametrize("string_ids", [False, True])
@pytest.mark.parametrize("weight_dtype", ["float32", "float16"])
def test_session_candidates_against_float64_replay(string_ids, weight_dtype):
    model = random_model(n_items=60, e=12, hidden=[16, 20], d=9, string_ids=string_ids, seed=3)
    rng = np.random.default_rng(5)
    ids = list(model.item_ids.tolist())
    cand = [ids[i] for i in rng.choice(60, 25, replace=False)]
    clicks = [cand[i] for i in rng.integers(0, 25, 12)] + [ids[i] for i in rng.integers(0, 60, 6)]
    s = de.Session(model, candidates=cand, weight_dtype=weight_dtype)
    us = replay(model, clicks, half=weight_dtype == "float16")
    seen = set()
    for c, (item, u64) in enumerate(zip(clicks, us)):
        s.click(item)
        seen.add(item)
        np.testing.assert_allclose(s.user_vector, u64, rtol=1e-5, atol=2e-5)
        out, scores = s.recommend(7)
        assert out.dtype == model.item_ids.dtype
        check_topk(model, u64, cand, seen, out.tolist(), scores, 7, f"click {c}")
        # the per-call candidate list (rows picked from the whole table) agrees
        out2, scores2 = s.recommend(7, candidates=cand)
        assert out2.tolist() == out.tolist()
        np.testing.assert_array_equal(scores2, scores)


def test_float16_session_differs_from_float32_only_by_rounding():
    model = random_model(n_items=40, e=16, hidden=[32, 32], d=16, seed=1)
    clicks = list(model.item_ids[[3, 7, 7, 1, 30, 12]])
    a, b = de.Session(model), de.Session(model, weight_dtype="float16")
    for item in clicks:
        a.click(item)
        b.click(item)
    diff = np.max(np.abs(a.user_vector - b.user_vector))
    assert 0 < diff < 5e-3, diff


def test_candidate_table_exclusion_duplicates_reset_and_restore(tmp_path):
    model = random_model(n_items=30, seed=2)
    ids = model.item_ids.tolist()
    cand = [ids[4], ids[9], ids[4], ids[17], ids[22], 999_999]     # a duplicate and an unknown id
    s = de.Session(model, candidates=cand)
    s.click(ids[4])
    out, _ = s.recommend(10)
    assert ids[4] not in out.tolist()                               # both copies excluded
    assert sorted(out.tolist()) == sorted([ids[9], ids[17], ids[22]])
    out, _ = s.recommend(10, exclude_clicked=False)
    assert out.tolist().count(ids[4]) == 1 and len(out) == 4        # listed twice, one candidate
    s.save(tmp_path / "state.npz")
    u_saved = s.user_vector
    s.reset()
    assert ids[4] in s.recommend(10)[0].tolist()
    r = de.Session(model, candidates=cand)
    r.load(tmp_path / "state.npz")
    assert ids[4] not in r.recommend(10)[0].tolist()
    np.testing.assert_array_equal(r.user_vector, u_saved)
    # a timestamp gap longer than the session rule forgets the clicks too
    t = de.Session(model, candidates=cand)
    t.click(ids[4], timestamp=0.0)
    t.click(ids[9], timestamp=10 * model.session_gap_seconds)
    assert ids[4] in t.recommend(10)[0].tolist() and ids[9] not in t.recommend(10)[0].tolist()
    assert s.recommend(0)[0].shape == (0,)


def test_weight_dtype_is_validated():
    model = random_model(n_items=10, seed=0)
    with pytest.raises(ValueError, match="weight_dtype: expected 'float32' or 'float16'"):
        de.Session(model, weight_dtype="int8")


@pytest.mark.parametrize("storage", ["float32", "int8"])
def test_held_candidate_table_ranks_as_topk_table(rng, storage):
    """StreamCore.set_candidates + topk_candidates (the session's streaming
    call) give topk_table's results, with the held or a replaced bias; bad
    per-call arguments are refused as topk_table refuses them."""
    from deeprec_edge.model import compress_model
    model = random_model(n_items=40, e=6, hidden=8, d=5, seed=2)
    if storage == "int8":
        model = compress_model(model, {"tables": "int8", "gru": "int8", "head": "int8"})
    s = de.Session(model, candidates=model.item_ids[3:33].tolist())
    core = s._core
    for i in model.item_ids[:4]:
        core.click(s._lookup(i))
    args = (s._O_c, s._b_c, s._c_ids, s._O_cs)
    excl = (rng.random(30) < 0.3).astype(np.uint8)
    b2 = rng.standard_normal(30).astype(np.float32)
    core.set_candidates(*args)
    for k in (0, 1, 7, 30, 40):
        want = core.topk_table(k, s._O_c, s._b_c, excl, s._c_ids, s._O_cs)
        got = core.topk_candidates(k, excl)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        want = core.topk_table(k, s._O_c, b2, None, s._c_ids, s._O_cs)
        got = core.topk_candidates(k, None, b2)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    with pytest.raises(ValueError, match=r"^b_c: expected float32 array of shape \(n=30,\)"):
        core.topk_candidates(3, None, b2[:29].copy())
    with pytest.raises(ValueError, match="^exclude: expected"):
        core.topk_candidates(3, np.zeros(29, np.uint8))
    with pytest.raises(ValueError, match="^k: expected k >= 0"):
        core.topk_candidates(-1)
    with pytest.raises(ValueError, match=r"^ids: expected int64"):
        core.set_candidates(s._O_c, s._b_c, np.arange(30, dtype=np.int32), s._O_cs)
    core.set_candidates(None)
    with pytest.raises(ValueError, match="no candidate table"):
        core.topk_candidates(3)


def test_topk_table_rejects_bad_arrays():
    """StreamCore.topk_table checks every array before the C call."""
    model = random_model(n_items=12, e=4, hidden=6, d=5, seed=4)
    s = de.Session(model, candidates=model.item_ids[:6].tolist())
    core, O_c, b_c = s._core, s._O_c, s._b_c
    ok = core.topk_table(3, O_c, b_c, np.zeros(6, np.uint8), np.arange(6, dtype=np.int64))
    assert len(ok[0]) == 3
    bad = [
        (dict(O_c=O_c[:, :4].copy()),
         r"^O_c: expected float32, float16 or int8 array of shape \(n, d\) = \(n, 5\)"),
        (dict(O_c=O_c.astype(np.float64)), "^O_c: expected float32, float16 or int8"),
        (dict(O_c=np.asfortranarray(np.zeros((5, 5), np.float32))), "^O_c: expected float32"),
        (dict(b_c=b_c[:5].copy()), r"^b_c: expected float32 array of shape \(n=6,\)"),
        (dict(exclude=np.zeros(5, np.uint8)), "^exclude: expected"),
        (dict(exclude=np.zeros(6, np.float32)), "^exclude: expected uint8 or bool"),
        (dict(ids=np.arange(6, dtype=np.int32)), "^ids: expected int64"),
        (dict(ids=np.arange(7)), "^ids: expected int64"),
        (dict(k=-1), "^k: expected k >= 0"),
    ]
    for change, msg in bad:
        kw = dict(k=3, O_c=O_c, b_c=b_c, exclude=None, ids=None)
        kw.update(change)
        with pytest.raises(ValueError, match=msg):
            core.topk_table(kw["k"], kw["O_c"], kw["b_c"], kw["exclude"], kw["ids"])
    empty = core.topk_table(5, np.zeros((0, 5), np.float32))
    assert empty[0].shape == (0,) and empty[1].shape == (0,)
    none = de.Session(model, candidates=[999_999])        # no known candidate at all
    none.click(model.item_ids[0])
    ids, scores = none.recommend(5)
    assert ids.shape == (0,) and scores.shape == (0,)


def test_candidate_table_ties_go_to_the_lower_item_index():
    """Equal scores: the lower item index first, whatever the order of the
    candidate list (as recommend(candidates=...) and the full ranking do)."""
    model = random_model(n_items=30, hidden=[12, 10], seed=1)
    model.O[5] = model.O[2]
    model.output_bias[5] = model.output_bias[2]
    ids = model.item_ids.tolist()
    for cand in ([ids[5], ids[2], ids[7], ids[5]], [ids[7], ids[5], ids[2]]):
        s = de.Session(model, candidates=cand)
        s.click(ids[3])
        table, _ = s.recommend(5)
        listed, _ = s.recommend(5, candidates=cand)
        assert table.tolist() == listed.tolist()
        assert table.tolist().index(ids[2]) < table.tolist().index(ids[5])


def test_a_session_gap_forgets_the_clicks_like_reset(tmp_path):
    model = random_model(n_items=20, seed=6)
    ids = model.item_ids.tolist()
    s = de.Session(model, candidates=ids[:8])
    s.click(ids[1], timestamp=0.0)
    s.click(ids[2], timestamp=2 * model.session_gap_seconds)      # a new session
    assert s.clicks == 1
    s.save(tmp_path / "s.npz")
    r = de.Session(model, candidates=ids[:8])
    r.load(tmp_path / "s.npz")
    assert r.recommend(8)[0].tolist() == s.recommend(8)[0].tolist()
    assert ids[1] in r.recommend(8)[0].tolist() and ids[2] not in r.recommend(8)[0].tolist()


def test_float16_session_refuses_weights_beyond_float16():
    model = random_model(n_items=10, seed=0)
    model.layers[0].W_hh[0, 0] = 70000.0
    with pytest.raises(ValueError, match=r"layers\[0\].W_hh: a weight of magnitude >= 65520"):
        de.Session(model, weight_dtype="float16")
    de.Session(model)                                             # float32 is fine


@pytest.mark.parametrize("string_ids", [False, True])
def test_duplicate_candidates_are_one_candidate_everywhere(string_ids):
    """One rule for candidate lists: an id listed twice is one candidate in
    Session (its own list and a per-call list) as in de.recommend, and
    recommend(k) never returns an item twice."""
    model = random_model(n_items=30, e=8, hidden=[12], d=8, string_ids=string_ids, seed=7)
    ids = list(model.item_ids.tolist())
    cand = [ids[3], ids[3], ids[17], ids[17], ids[17], ids[9], "unknown-id"]
    distinct = {ids[3], ids[17], ids[9]}
    want_ids, want_scores = de.recommend(model, None, k=10, candidates=cand)
    assert set(want_ids.tolist()) == distinct and len(want_ids) == 3
    for s in (de.Session(model, candidates=cand), de.Session(model)):
        got_ids, got_scores = s.recommend(10, candidates=cand)
        assert got_ids.tolist() == want_ids.tolist()
        np.testing.assert_allclose(got_scores, want_scores, rtol=1e-6, atol=1e-6)
    s = de.Session(model, candidates=cand)
    got_ids, got_scores = s.recommend(4)
    assert got_ids.tolist() == want_ids.tolist()
    # clicking an item listed twice removes it (not one copy of it) from the ranking
    s.click(ids[17])
    assert ids[17] not in s.recommend(4)[0].tolist()
    assert len(s.recommend(4)[0]) == 2


def test_session_load_errors_are_value_errors_saying_what(tmp_path):
    """Session.load on an empty, truncated, foreign or wrong file: a
    ValueError naming the file and the problem (not BadZipFile, EOFError or
    AttributeError), and the session is left as it was."""
    model = random_model(n_items=20, seed=1)
    s = de.Session(model)
    s.click(model.item_ids[3])
    good = tmp_path / "state.npz"
    s.save(good)
    u = s.user_vector
    data = good.read_bytes()
    cases = {
        "empty": (b"", "is empty"),
        "truncated": (data[:len(data) // 2], "truncated or corrupt"),
        "text": (b"hello, world\n", "is not an npz"),
        "model": (None, "missing array(s)"),
        "other npz": (None, "missing array(s) 'clicked', 'last_time', 'meta', 'state'"),
        "json list": (None, "no 'deeprec-edge/session' record"),
        "deep json": (None, "no 'deeprec-edge/session' record"),   # RecursionError inside
        "wrong size": (None, "array 'state' has 999 elements"),
    }
    for name, (content, expect) in cases.items():
        p = tmp_path / f"{name}.npz"
        if name == "model":
            de.save_model(model, p)
        elif name == "other npz":
            np.savez(p, a=np.zeros(3))
        elif name == "json list":
            np.savez(p, meta=np.array("[1, 2]"), state=np.zeros(12, np.float32),
                     clicked=np.zeros(0, np.int32), last_time=np.float64(0))
        elif name == "deep json":
            np.savez(p, meta=np.array("[" * 100_000 + "]" * 100_000),
                     state=np.zeros(12, np.float32), clicked=np.zeros(0, np.int32),
                     last_time=np.float64(0))
        elif name == "wrong size":
            np.savez(p, meta=np.array("{}"), state=np.zeros(999, np.float32),
                     clicked=np.zeros(0, np.int32), last_time=np.float64(0))
        else:
            p.write_bytes(content)
        with pytest.raises(ValueError) as e:
            s.load(p)
        msg = str(e.value)
        assert msg.startswith(f"{p}: not a deeprec-edge session state") and expect in msg, msg
        assert type(e.value) is ValueError
        np.testing.assert_array_equal(s.user_vector, u)
    with pytest.raises(FileNotFoundError):
        s.load(tmp_path / "missing.npz")
    other = random_model(n_items=20, seed=2)
    with pytest.raises(ValueError, match="belongs to a different model"):
        de.Session(other).load(good)

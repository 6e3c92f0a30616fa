"""A model with a repeat component scores the same everywhere: the streaming
Session, recommend() and the batch scoring of evaluations agree with an
independent float64 reference (GRU steps, head, scale * (O.u + b) + w.phi
with the features written from their definition)."""
from __future__ import annotations

import numpy as np
import pytest

import reference as R
from deeprec_edge import Session, recommend
from deeprec_edge._engine import user_vectors
from deeprec_edge._scoring import score_block
from deeprec_edge.history import History
from deeprec_edge.model import model_from_params, params_of
from deeprec_edge.repeat import RepeatSpec, history_features

from helpers_model import random_model
from test_repeat import reference_features

SPEC = RepeatSpec(scale=0.7, w=(1.5, 0.5, -0.3, -1.0, -2.0), memory=6)
GAP = 3600.0


def _model(seed=0, layers=(12,)):
    base = random_model(n_items=40, e=8, hidden=list(layers), seed=seed)
    return model_from_params(params_of(base), base.item_ids, base.popularity,
                             config={"session_gap_seconds": GAP}, repeat=SPEC)


def _stream(rng, n=60):
    items = rng.integers(0, 12, n)            # a small range: many repeats
    gaps = np.where(rng.random(n) < 0.15, 2 * GAP, 30.0)
    gaps[0] = 0.0
    return items, 1.7e9 + np.cumsum(gaps)


def reference_scores(model, items, times):
    """float64 scores after the last click: GRU over the current session
    (states reset at a gap), head, scale * (O.u + b) + w . phi."""
    p = params_of(model)
    starts = np.r_[True, np.diff(times) > GAP]
    first = int(np.flatnonzero(starts)[-1])
    hs = [np.zeros(int(l.W_hh.shape[1])) for l in model.layers]
    for i in items[first:]:
        x = R._f64(p.E[int(i)])
        for j, l in enumerate(model.layers):
            hs[j] = R.gru_step(x, hs[j], *l)
            x = hs[j]
    u = R.head_forward(x[None], model.W_p, model.b_p, model.activation)[0]
    s = SPEC.scale * (R._f64(p.out_table) @ u + R._f64(p.b_out))
    for i, f in reference_features(items, starts, len(items) - 1, SPEC.memory).items():
        s[i] += np.dot(f, SPEC.w)
    return s


def _check_top(ids_idx, scores, ref, k):
    order = np.argsort(-ref, kind="stable")
    np.testing.assert_allclose(scores, ref[ids_idx], rtol=2e-4, atol=2e-4)
    # the k-th best score of the reference matches (ties may swap close items)
    np.testing.assert_allclose(np.sort(scores)[::-1], ref[order[:k]], rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("layers", [(12,), (10, 6)])
def test_session_recommend_and_batch_agree_with_the_reference(layers):
    rng = np.random.default_rng(len(layers))
    model = _model(layers=layers)
    ids = np.asarray(model.item_ids)
    items, times = _stream(rng)
    s = Session(model)
    assert s.exclude_clicked is False           # the model decides about returns
    for j in range(items.size):
        s.click(ids[items[j]], timestamp=times[j])
        if j % 7 and j != items.size - 1:
            continue
        ref = reference_scores(model, items[:j + 1], times[:j + 1])
        out, sc = s.recommend(10)
        _check_top(model.item_index(out)[0], sc, ref, 10)
        # recommend() on the same history
        h = History(items=items[:j + 1].astype(np.int32), item_ids=ids[items[:j + 1]],
                    timestamps=times[:j + 1], session_ids=None, n_rows=j + 1)
        out2, sc2 = recommend(model, h, k=10)
        _check_top(model.item_index(out2)[0], sc2, ref, 10)
        # the batch path of the evaluations
        p = params_of(model)
        starts = h.session_starts(GAP)
        U = user_vectors(p, items[:j + 1].astype(np.int32), starts, np.array([j]))
        rep = history_features(items[:j + 1], starts, [j], SPEC.memory)
        S = score_block(p, SPEC, U, 0, 1, rep)[0]
        np.testing.assert_allclose(S, ref, rtol=2e-4, atol=2e-4)


def test_candidates_include_the_users_items_and_state_round_trips(tmp_path):
    rng = np.random.default_rng(5)
    model = _model()
    ids = np.asarray(model.item_ids)
    items, times = _stream(rng, 40)
    cloud = ids[[30, 31, 32, 33]]                # items never clicked in the stream
    s = Session(model, candidates=cloud)
    for j in range(items.size):
        s.click(ids[items[j]], timestamp=times[j])
    out, sc = s.recommend(50)
    got = set(model.item_index(out)[0].tolist())
    mem = set(reference_features(items, np.r_[True, np.diff(times) > GAP], items.size - 1,
                                 SPEC.memory))
    assert got == mem | {30, 31, 32, 33}
    ref = reference_scores(model, items, times)
    np.testing.assert_allclose(sc, ref[model.item_index(out)[0]], rtol=2e-4, atol=2e-4)
    # save / load: the memory comes back, and the next click scores the same
    s.save(tmp_path / "s.npz")
    s2 = Session(model, candidates=cloud)
    s2.load(tmp_path / "s.npz")
    for x in (s, s2):
        x.click(ids[3], timestamp=times[-1] + 10)
    a, b = s.recommend(20), s2.recommend(20)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    # a new session keeps the memory; forget_history clears it
    s.reset()
    assert len(s.recommend(50)[0]) > 4
    s.reset(forget_history=True)
    assert set(model.item_index(s.recommend(50)[0])[0].tolist()) == {30, 31, 32, 33}


def test_history_replay_equals_clicking():
    rng = np.random.default_rng(7)
    model = _model()
    ids = np.asarray(model.item_ids)
    items, times = _stream(rng, 50)
    h = History(items=items.astype(np.int32), item_ids=ids[items], timestamps=times,
                session_ids=None, n_rows=items.size)
    a = Session(model, history=h)
    b = Session(model)
    for j in range(items.size):
        b.click(ids[items[j]], timestamp=times[j])
    ra, rb = a.recommend(15), b.recommend(15)
    np.testing.assert_array_equal(ra[0], rb[0])
    np.testing.assert_allclose(ra[1], rb[1], rtol=1e-6)


def test_a_failed_load_leaves_the_session_as_it_was(tmp_path):
    """A state file that fails a check (here: the GRU state of another model
    size) changes nothing -- not the repeat memory, not the candidates -- and
    a state without a memory does not keep the previous user's items."""
    rng = np.random.default_rng(2)
    model = _model()
    ids = np.asarray(model.item_ids)
    items, times = _stream(rng, 30)
    s = Session(model, candidates=ids[[30, 31]])
    for j in range(items.size):
        s.click(ids[items[j]], timestamp=times[j])
    before = s.recommend(40)
    mem_before = s._mem.state()
    bad = s.state_dict()
    bad["state"] = bad["state"][:5]
    bad["memory.items"] = np.array([33, 34, 35])
    bad["memory.count"] = np.array([1, 1, 1])
    bad["memory.last"] = np.array([0, 1, 2])
    bad["memory.session"] = np.array([1, 1, 1])
    bad["memory.clock"] = np.array([3, 1])
    with pytest.raises(ValueError, match="'state' must hold"):
        s.load_state_dict(bad)
    after = s.recommend(40)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])
    for k, v in s._mem.state().items():
        np.testing.assert_array_equal(v, mem_before[k])
    other = Session(model).state_dict()          # a fresh user: no memory arrays
    other = {k: v for k, v in other.items() if not k.startswith("memory.")}
    s.load_state_dict(other)
    assert s._mem.size == 0
    assert set(model.item_index(s.recommend(40)[0])[0].tolist()) == {30, 31}


def test_ids_match_as_in_recommend_and_timestamps_must_be_finite():
    """Decimal-string ids of an integer catalogue are the same items for a
    Session as for recommend(); a NaN timestamp is refused (it would compare
    False with every later gap, so no session would ever end)."""
    model = _model()
    ids = np.asarray(model.item_ids)
    as_text = [str(i) for i in ids[:10]]
    s = Session(model, candidates=as_text)
    got, _ = s.recommend(10)
    ref, _ = recommend(model, None, k=10, candidates=as_text)
    assert len(got) == 10
    np.testing.assert_array_equal(np.sort(got), np.sort(ref))
    s.click(as_text[3], timestamp=1.7e9)
    assert s.clicks == 1
    with pytest.raises(KeyError, match="unknown item id"):
        s.click("nope")
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="finite unix time"):
            s.click(ids[1], timestamp=bad)
    assert s.clicks == 1
    s.click(ids[1], timestamp=1.7e9 + 2 * GAP)      # a gap after a refused NaN still resets
    assert s.clicks == 1


def _history(model, items, times, session_ids=None):
    ids = np.asarray(model.item_ids)
    return History(items=np.asarray(items, np.int32), item_ids=ids[items],
                   timestamps=np.asarray(times, np.float64), session_ids=session_ids,
                   n_rows=len(items))


def _same_ranking(model, h, k=20, **kw):
    a = recommend(model, h, k=k, **kw)
    b = Session(model, history=h, **kw).recommend(k)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_allclose(a[1], b[1], rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("carry", [False, True])
def test_session_and_recommend_agree_on_a_multi_session_history(carry):
    """Session(history=h) ranks as recommend(model, h): a model that carries
    its state across sessions still counts sessions for the repeat memory
    (in_session was 1 for every item ever clicked), and a plain model
    excludes every item of the history in both."""
    rng = np.random.default_rng(11)
    base = random_model(n_items=40, e=8, hidden=[12], seed=4)
    items, times = _stream(rng, 50)
    for spec in (SPEC, None):
        model = model_from_params(params_of(base), base.item_ids, base.popularity,
                                  config={"session_gap_seconds": GAP, "carry_state": carry},
                                  repeat=spec)
        h = _history(model, items, times)
        assert h.session_starts(GAP).sum() > 3
        _same_ranking(model, h)
        _same_ranking(model, h, candidates=np.asarray(model.item_ids)[::2])
    # clicking one at a time gives the same scores as the batch path too
    model = model_from_params(params_of(base), base.item_ids, base.popularity,
                              config={"session_gap_seconds": GAP, "carry_state": carry},
                              repeat=SPEC)
    s = Session(model)
    for j in range(items.size):
        s.click(model.item_ids[items[j]], timestamp=times[j])
    got = s.recommend(40)
    ref = reference_scores(model, items, times) if not carry else None
    want = recommend(model, _history(model, items, times), k=40)
    np.testing.assert_array_equal(got[0], want[0])
    if ref is not None:
        np.testing.assert_allclose(got[1], ref[model.item_index(got[0])[0]], rtol=2e-4,
                                   atol=2e-4)


def test_a_history_with_session_ids_is_not_recut_by_time():
    """Sessions given by a session column stand even across a gap longer
    than the model's: the replay cut the newest session at the gap."""
    model = _model()
    items = [1, 2, 3, 4, 5]
    times = [0.0, 10.0, 100.0, 100.0 + 2 * GAP, 100.0 + 2 * GAP + 5]
    h = _history(model, items, times, session_ids=np.array(["a", "a", "b", "b", "b"]))
    assert h.session_starts(GAP).tolist() == [True, False, True, False, False]
    s = Session(model, history=h)
    assert s.clicks == 3
    _same_ranking(model, h)


def test_a_history_read_without_the_model_is_a_clear_error():
    model = _model()
    h = History(items=None, item_ids=np.asarray(model.item_ids)[:3],
                timestamps=np.arange(3.0), session_ids=None, n_rows=3)
    with pytest.raises(ValueError, match=r"read_history\(path, model=model\)"):
        Session(model, history=h)

"""Calibration of the repeat component (trainer/calibrate.py): on events drawn
from a known model (planted scale and weights) maximum likelihood recovers
them; a feature that never fires to the target is pushed down but stays
finite."""
from __future__ import annotations

import numpy as np
import pytest

from deeprec_edge._engine import Params, user_vectors
from deeprec_edge.repeat import FEATURES, RepeatSpec, history_features
from deeprec_edge.trainer.calibrate import EventSet, event_set, fit_repeat


def _params(rng, N=40, d=8, H=8):
    f = lambda *s: (0.6 * rng.standard_normal(s)).astype(np.float32)  # noqa: E731
    layer = [f(3 * H, d), f(3 * H, H), f(3 * H), f(3 * H)]
    return Params(f(N, d), [layer], f(d, H), f(d), None, f(N), "tanh")


def _planted_events(rng, p, spec, n_users=300, length=30):
    """Users whose every next click is drawn from the model's own softmax
    (GRU scores + the planted repeat component), so maximum likelihood must
    recover ``spec``."""
    N = p.n_items
    seqs = []
    for _ in range(n_users):
        items = [int(rng.integers(N))]
        starts = [True]
        for j in range(1, length):
            st_ = bool(rng.random() < 0.15)
            pos = np.array([j - 1])
            arr = np.array(items, np.int32)
            U = user_vectors(p, arr, np.array(starts), pos, True)
            s = spec.scale * (U[0].astype(np.float64) @ p.out_table.T.astype(np.float64) + p.b_out)
            _, c, f = history_features(arr, np.array(starts), pos, spec.memory)
            s[c] += f.astype(np.float64) @ np.asarray(spec.w)
            pr = np.exp(s - s.max())
            items.append(int(rng.choice(N, p=pr / pr.sum())))
            starts.append(st_)
        seqs.append((np.array(items, np.int32), np.array(starts)))
    ev = [(it, st_, np.flatnonzero(~st_[1:])) for it, st_ in seqs]
    return event_set(p, ev, memory=spec.memory)


@pytest.mark.heavy
def test_planted_weights_are_recovered():
    rng = np.random.default_rng(0)
    p = _params(rng)
    truth = RepeatSpec(scale=0.7, w=(1.5, 0.4, -0.5, -1.0, -2.0), memory=50)
    ev = _planted_events(rng, p, truth)
    spec, rec = fit_repeat(p, ev, l2=1e-3, memory=50)
    assert rec["status"] in ("converged", "max-iterations", "line-search")
    assert rec["nll_after"] < rec["nll_before"]
    assert abs(spec.scale - truth.scale) < 0.15
    np.testing.assert_allclose(spec.w, truth.w, atol=0.45)
    # the plain model fitted on the same events is worse than the recovered one
    assert spec.active


def test_feature_never_firing_is_pushed_down_but_finite():
    # targets are never items the user clicked before (as on MovieLens)
    rng = np.random.default_rng(1)
    p = _params(rng)
    seqs = []
    for _ in range(120):
        it = rng.permutation(p.n_items)[:15].astype(np.int32)
        st_ = np.zeros(15, bool)
        st_[0] = True
        seqs.append((it, st_, np.arange(14)))
    ev = event_set(p, seqs, memory=50)
    spec, rec = fit_repeat(p, ev, l2=1.0, memory=50)
    w = np.asarray(spec.w)
    assert np.all(np.isfinite(w)) and spec.scale > 0
    # the score of a seen item (seen + log_count + log_age + in_session) is strongly negative
    seen_again = w[0] + w[1] * np.log(2) + w[2] * np.log(3) + w[4]
    assert seen_again < -2.0


def test_subsampling_keeps_cells_aligned():
    rng = np.random.default_rng(2)
    p = _params(rng)
    truth = RepeatSpec(scale=1.0, w=(2.0, 0.0, 0.0, 0.0, 0.0), memory=50)
    ev = _planted_events(rng, p, truth, n_users=120, length=20)
    a, _ = fit_repeat(p, ev, l2=1e-3, memory=50, max_events=ev.n)
    b, _ = fit_repeat(p, ev, l2=1e-3, memory=50, max_events=ev.n // 2, seed=3)
    assert abs(a.w[0] - 2.0) < 0.6 and abs(b.w[0] - 2.0) < 0.8
    empty = EventSet(np.zeros((0, 8), np.float32), *(np.zeros(0, np.int64),) * 3,
                     np.zeros((0, len(FEATURES)), np.float32), np.zeros(0, np.int64))
    spec, rec = fit_repeat(p, EventSet(empty.U, empty.targets, empty.rows, empty.cols,
                                       empty.phi, empty.users))
    assert not spec.active and rec["events"] == 0


def test_scale_transfers_by_the_spread_of_the_scores():
    # the same model with every score doubled: the transferred scale halves, so
    # scale * score (the logits the repeat weights were calibrated against) is unchanged
    from deeprec_edge.trainer.calibrate import score_spread, transfer_scale
    rng = np.random.default_rng(4)
    p = _params(rng)
    seqs = [(rng.integers(0, p.n_items, 12).astype(np.int32), np.r_[True, np.zeros(11, bool)],
             np.arange(11)) for _ in range(20)]
    ev = event_set(p, seqs, memory=50)
    p2 = Params(p.E * 1.0, p.layers, p.W_p, p.b_p, (p.E * 2.0).astype(np.float32),
                p.b_out * 2, p.activation)
    s1, s2 = score_spread(p, ev), score_spread(p2, ev)
    assert s2 == pytest.approx(2 * s1, rel=1e-5)
    spec = RepeatSpec(scale=0.8, w=(1.0, 0.0, 0.0, 0.0, 0.0), memory=50)
    t = transfer_scale(spec, s1, s2)
    assert t.scale == pytest.approx(0.4, rel=1e-5) and t.w == spec.w
    assert transfer_scale(spec, s1, float("nan")) == spec

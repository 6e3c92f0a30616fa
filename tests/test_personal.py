"""The device's parameter-efficient personal parts (deeprec_edge._personal)
and their optimiser (deeprec_edge._lbfgs): the objective against an
independent float64 reference, its gradient against finite differences,
the prior, sampled columns with logQ, and L-BFGS on problems with known
minima."""
from __future__ import annotations

import numpy as np
import pytest

from deeprec_edge._engine import Params
from deeprec_edge._lbfgs import minimize
from deeprec_edge._personal import PARTS, PersonalData, _Problem, fit_personal, personal_loss
from deeprec_edge.repeat import FEATURES, RepeatSpec, history_features

N, D, H, F = 23, 6, 5, len(FEATURES)


def _params(rng, activation="tanh"):
    f = lambda *s: (0.5 * rng.standard_normal(s)).astype(np.float32)  # noqa: E731
    layer = [f(3 * H, D), f(3 * H, H), f(3 * H), f(3 * H)]
    return Params(f(N, D), [layer], f(D, H), f(D), f(N, D), f(N), activation)


def _data(rng, n=17, columns=None, logq=None):
    items = rng.integers(0, N, 40)
    starts = rng.random(40) < 0.2
    pos = np.sort(rng.choice(39, size=n, replace=False))
    rows, cols, phi = history_features(items, starts, pos, 8)
    Hs = rng.standard_normal((n, H)).astype(np.float32)
    bias_items = np.unique(items[:pos[-1] + 2]).astype(np.int64)
    return PersonalData(Hs, items[pos + 1].astype(np.int64), rows, cols, phi, bias_items,
                        columns, logq)


def reference_loss(x, prob_parts, p, spec, d, l2):
    """The objective in float64, written from the module docstring."""
    v, a = {}, 0
    sizes = {"offset": D, "bias": d.bias_items.size, "repeat": F, "head": D * H}
    for part in PARTS:
        if part in prob_parts:
            v[part] = x[a:a + sizes[part]]
            a += sizes[part]
    W = v["head"].reshape(D, H) if "head" in v else p.W_p.astype(np.float64)
    z = d.H.astype(np.float64) @ W.T + p.b_p + v.get("offset", 0.0)
    u = np.tanh(z) if p.activation == "tanh" else z
    cols = np.arange(N) if d.columns is None else d.columns
    b = p.b_out.astype(np.float64).copy()
    if "bias" in v:
        b[d.bias_items] += v["bias"]
    S = spec.scale * (u @ p.out_table.astype(np.float64)[cols].T + b[cols])
    w = v.get("repeat", np.asarray(spec.w))
    pos = {c: j for j, c in enumerate(cols.tolist())}
    for r, c, f in zip(d.rows, d.cols, d.phi.astype(np.float64)):
        if int(c) in pos:
            S[r, pos[int(c)]] += f @ w
    if d.logq is not None:
        S -= d.logq
    t = np.array([pos[int(x)] for x in d.targets])
    m = S.max(1)
    loss = np.sum(np.log(np.exp(S - m[:, None]).sum(1)) + m - S[np.arange(len(t)), t])
    for part, val in v.items():
        c0 = {"repeat": np.asarray(spec.w), "head": p.W_p.astype(np.float64).reshape(-1)}.get(part, 0.0)
        loss += 0.5 * l2[part] * np.sum((val.reshape(-1) - c0) ** 2)
    return loss


@pytest.mark.parametrize("parts", [("offset",), ("bias",), ("repeat",), ("head",),
                                   ("offset", "bias", "repeat", "head")])
@pytest.mark.parametrize("activation", ["tanh", "identity"])
def test_objective_and_gradient(parts, activation):
    rng = np.random.default_rng(len(parts) * 7 + (activation == "tanh"))
    p = _params(rng, activation)
    spec = RepeatSpec(scale=0.8, w=tuple(rng.standard_normal(F).tolist()))
    d = _data(rng)
    l2 = {k: 0.7 for k in PARTS}
    prob = _Problem(d, p, spec, parts, l2)
    x = prob.x0() + 0.3 * rng.standard_normal(prob.n_theta)
    f, g = prob(x)
    ref = reference_loss(x, prob.parts, p, spec, d, l2)
    assert f == pytest.approx(ref, rel=1e-4)
    eps = 1e-4
    fd = np.array([(reference_loss(x + eps * e, prob.parts, p, spec, d, l2)
                    - reference_loss(x - eps * e, prob.parts, p, spec, d, l2)) / (2 * eps)
                   for e in np.eye(x.size)])
    np.testing.assert_allclose(g, fd, rtol=2e-3, atol=2e-3)


def test_sampled_columns_with_logq_match_the_reference():
    rng = np.random.default_rng(3)
    p = _params(rng)
    spec = RepeatSpec(scale=1.2, w=tuple(rng.standard_normal(F).tolist()))
    d0 = _data(rng)
    cols = np.union1d(np.union1d(d0.targets, d0.bias_items), [0, 1, 2]).astype(np.int64)
    logq = np.where(np.isin(cols, np.union1d(d0.targets, d0.bias_items)), 0.0,
                    np.log(0.3)).astype(np.float32)
    d = PersonalData(d0.H, d0.targets, d0.rows, d0.cols, d0.phi, d0.bias_items, cols, logq)
    l2 = {k: 1.0 for k in PARTS}
    prob = _Problem(d, p, spec, ("offset", "bias", "repeat"), l2)
    x = prob.x0() + 0.1 * rng.standard_normal(prob.n_theta)
    assert prob(x)[0] == pytest.approx(reference_loss(x, prob.parts, p, spec, d, l2), rel=1e-4)


def test_fit_lowers_the_loss_and_the_prior_holds():
    rng = np.random.default_rng(5)
    p = _params(rng)
    spec = RepeatSpec(scale=1.0, w=tuple(rng.standard_normal(F).tolist()))
    d = _data(rng, n=30)
    before = personal_loss(d, p, spec).sum()
    fit = fit_personal(d, p, spec, ("offset", "bias", "repeat"), {k: 0.1 for k in PARTS},
                       max_iter=60)
    assert fit.info["status"] in ("converged", "max-iterations", "line-search")
    after = personal_loss(d, p, spec, fit).sum()
    assert after < before - 1.0
    # a very strong prior keeps every part at the global values
    firm = fit_personal(d, p, spec, ("offset", "bias", "repeat"), {k: 1e7 for k in PARTS})
    assert np.abs(firm.delta).max() < 1e-4 and np.abs(firm.beta).max() < 1e-4
    np.testing.assert_allclose(firm.w, spec.w, atol=1e-4)


def test_unknown_part_and_target_outside_columns():
    rng = np.random.default_rng(0)
    p = _params(rng)
    d = _data(rng)
    with pytest.raises(ValueError, match="unknown personal part"):
        fit_personal(d, p, RepeatSpec(), ("gru",), {})
    bad = PersonalData(d.H, d.targets, d.rows, d.cols, d.phi, d.bias_items,
                       np.array([0], np.int64), np.zeros(1, np.float32))
    with pytest.raises(ValueError, match="among the scored columns"):
        fit_personal(bad, p, RepeatSpec(), ("offset",), {})


# --------------------------------------------------------------------------
# L-BFGS
# --------------------------------------------------------------------------

def test_lbfgs_quadratic_and_rosenbrock():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((6, 6))
    A = A @ A.T + 6 * np.eye(6)
    b = rng.standard_normal(6)
    res = minimize(lambda x: (0.5 * x @ A @ x - b @ x, A @ x - b), np.zeros(6), max_iter=100,
                   gtol=1e-10, ftol=0)
    np.testing.assert_allclose(res.x, np.linalg.solve(A, b), atol=1e-6)

    def rosen(x):
        f = (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2
        g = np.array([-2 * (1 - x[0]) - 400 * x[0] * (x[1] - x[0] ** 2),
                      200 * (x[1] - x[0] ** 2)])
        return f, g
    res = minimize(rosen, np.array([-1.2, 1.0]), max_iter=500, gtol=1e-9, ftol=0)
    np.testing.assert_allclose(res.x, [1.0, 1.0], atol=1e-4)


def test_lbfgs_stops_on_non_finite():
    res = minimize(lambda x: (float("nan"), np.zeros_like(x)), np.ones(3))
    assert res.status == "non-finite"
    # a step into a non-finite region is shortened, not taken
    f = lambda x: ((x[0] ** 2, np.array([2 * x[0]])) if abs(x[0]) < 3  # noqa: E731
                   else (float("inf"), np.array([np.nan])))
    res = minimize(f, np.array([2.9]), max_iter=50)
    assert np.isfinite(res.f) and abs(res.x[0]) < 1e-3

"""bench/whatif_item_counts.py's private aggregate: the noise really gives
(epsilon, delta)-DP (checked against the exact privacy profile of the
Gaussian mechanism, Balle & Wang 2018, Theorem 8), a device's report is what
the docstring says, and the shift recovers a planted rise and ignores noise."""
from __future__ import annotations

import importlib.util
import math
import os

import numpy as np
import pytest

PATH = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "whatif_item_counts.py")
pytestmark = pytest.mark.skipif(not os.path.exists(PATH), reason="no source tree (bench/)")


@pytest.fixture(scope="module")
def w():
    spec = importlib.util.spec_from_file_location("whatif_item_counts", PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _phi(x):
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _exact_delta(sigma, sens, eps):
    """The smallest delta for which N(0, sigma^2) noise on a query of L2
    sensitivity ``sens`` is (eps, delta)-DP (Balle & Wang 2018, Thm. 8)."""
    a, b = sens / (2 * sigma), eps * sigma / sens
    return _phi(a - b) - math.exp(eps) * _phi(-a - b)


@pytest.mark.parametrize("eps", [0.1, 1.0, 4.0, 10.0])
@pytest.mark.parametrize("m", [1, 20, 200])
def test_the_noise_gives_the_promised_privacy(w, eps, m):
    delta = 1e-6
    sens = math.sqrt(m)
    sigma = w.zcdp_gaussian_sigma(eps, delta, sens)
    assert _exact_delta(sigma, sens, eps) <= delta
    # and it is not wildly conservative: a third less noise already breaks it
    assert _exact_delta(sigma * 2 / 3, sens, eps) > delta
    assert w.zcdp_gaussian_sigma(math.inf, delta, sens) == 0.0
    with pytest.raises(ValueError):
        w.zcdp_gaussian_sigma(0.0, delta, sens)


def test_a_device_reports_its_most_clicked_items_once_per_window(w):
    users = np.array([0, 0, 0, 1, 1, 2, 2])
    items = np.array([1, 1, 2, 2, 3, 1, 1])
    times = np.array([1.0, 2, 3, 4, 5, 6, 7])
    # one window: user 0 -> item 1 (two clicks), user 1 -> item 3 (a tie, the newer),
    # user 2 -> item 1 once though clicked twice
    np.testing.assert_array_equal(w.window_reports(users, items, times, 0, 10, 10, 1, 4),
                                  [0, 2, 0, 1])
    # windows of 5 ending at 10: [5, 10) and [0, 5); two items per report
    np.testing.assert_array_equal(w.window_reports(users, items, times, 0, 10, 5, 2, 4),
                                  [0, 2, 2, 1])
    # clicks outside [start, end) are not reported
    np.testing.assert_array_equal(w.window_reports(users, items, times, 5.5, 10, 10, 2, 4),
                                  [0, 1, 0, 0])


def test_the_shift_finds_a_planted_rise_and_ignores_noise(w):
    rng = np.random.default_rng(0)
    n = 400
    before = rng.integers(20, 200, n).astype(np.float64)
    between = before / 4
    between[:10] *= 6                         # ten items rose six-fold
    sh = w.private_shift(before, between, 0.0, rng)
    assert sh[:10].min() > sh[10:].max()
    np.testing.assert_allclose(sh[:10] - np.median(sh[10:]), math.log(6), atol=0.1)
    # no change but heavy noise on small counts: almost every count is below the
    # threshold, so those items share one shift (a constant changes no ranking)
    # instead of following the noise
    flat = np.full(n, 2.0)
    sh = w.private_shift(flat * 10, flat, 20.0, np.random.default_rng(1))
    assert np.mean(np.abs(sh - np.median(sh)) < 1e-9) > 0.95


@pytest.mark.parametrize("sigma", [0.7, 6.3, 23.9])
def test_the_noisy_count_likelihood_is_the_exact_convolution(w, sigma):
    from scipy.special import logsumexp
    from scipy.stats import norm, poisson

    y = np.array([-40.0, -3.0, 0.0, 2.5, 17.0, 140.0, 900.0])
    mu = np.tile([1e-3, 0.4, 3.0, 20.0, 150.0, 900.0, 5000.0], (y.size, 1))
    b = np.arange(12000)
    ref = np.array([[logsumexp(poisson.logpmf(b, m) + norm.logpdf(yy - b, scale=sigma))
                     for m in row] for yy, row in zip(y, mu)])
    np.testing.assert_allclose(w.noisy_count_loglik(y, mu, sigma), ref, rtol=1e-9, atol=1e-9)
    yi = np.array([0.0, 1.0, 7.0, 300.0])
    np.testing.assert_allclose(w.noisy_count_loglik(yi, mu[:4], 0.0),
                               poisson.logpmf(yi[:, None], mu[:4]), rtol=1e-12)


def _planted_counts(rng, n=2000, total=18000.0):
    before = np.round(rng.gamma(0.6, 120.0, n))
    d = np.zeros(n)
    d[: n // 20] = math.log(6.0)              # 5% of the items rose six-fold
    q = (before + 0.5) / (before.sum() + 0.5 * n)
    lam = total * q * np.exp(d) / np.sum(q * np.exp(d))
    return before, rng.poisson(lam).astype(np.float64), d, lam


def test_the_empirical_bayes_prior_finds_the_planted_mixture(w):
    before, between, d, lam = _planted_counts(np.random.default_rng(3))
    shift, g = w.eb_shift(before, between, 0.0)
    grid = w.EB_GRID
    base = grid[np.argmax(g)]                 # where the unchanged items sit (the total moved)
    rise = np.abs(grid - (base + math.log(6.0))) < 0.35
    assert abs(g[np.abs(grid - base) < 0.35].sum() - 0.95) < 0.04
    assert abs(g[rise].sum() - 0.05) < 0.02
    informed = lam > 30                       # items whose counts carry the rise clearly
    np.testing.assert_allclose(shift[: d.size // 20][informed[: d.size // 20]] - base,
                               math.log(6.0), atol=0.25)
    np.testing.assert_allclose(shift[d.size // 20:][informed[d.size // 20:]], base, atol=0.25)


@pytest.mark.parametrize("sigma", [6.3, 23.9])
def test_the_empirical_bayes_shift_does_not_follow_the_noise(w, sigma):
    """Against the thresholded estimator on the same noisy counts: closer to
    the truth, and no item without a real rise among the most raised."""
    before, between, d, lam = _planted_counts(np.random.default_rng(4))
    eb = w.eb_private_shift(before, between, sigma, np.random.default_rng(5))
    th = w.private_shift(before, between, sigma, np.random.default_rng(5))

    def err(s):
        s = s - np.median(s[d == 0])
        return float(np.mean((s - d) ** 2))

    assert err(eb) < 0.5 * err(th)
    top = np.argsort(-eb)[:20]
    # sigma 23.9 leaves only ~24 of the 100 risers clear of the noise
    assert (d[top] == 0).sum() <= (0 if sigma < 10 else 3)
    assert (d[np.argsort(-th)[:20]] == 0).sum() >= 10          # what the threshold lets through
    # pure noise on a catalogue with no change: the shift stays nearly flat
    flat = np.full(2000, 3.0)
    sh = w.eb_private_shift(flat * 10, flat, sigma, np.random.default_rng(6))
    assert np.ptp(sh) < 0.3


def test_the_mixing_weights_reach_the_maximum_likelihood(w):
    """Two grid points: the weights maximise the mean log-likelihood, checked
    against a fine scan of it (an interior optimum, near 0.88)."""
    lik = np.array([[1.0, 0.0], [0.3, 1.0]] * 50 + [[0.9, 0.2]] * 40)
    g = w.npmle_weights(lik)
    grid = np.linspace(1e-9, 1 - 1e-9, 100001)
    obj = np.log(np.outer(lik[:, 0], grid) + np.outer(lik[:, 1], 1 - grid)).mean(axis=0)
    assert abs(g[0] - grid[np.argmax(obj)]) < 1e-4
    assert abs(g.sum() - 1.0) < 1e-12

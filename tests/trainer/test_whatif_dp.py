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

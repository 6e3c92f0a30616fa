"""What if the cloud received anonymous per-item click counts from the devices?

The DeepRec protocol (``deeprec-train evaluate``) lets no click after the
first cutoff reach the cloud; the centralized model sees every user's clicks
up to the test part. On a log whose popularity moves between the cutoffs
(Online Retail's pre-Christmas weeks) that is where personal models fall
behind the centralized one. This script measures how much of that gap one
aggregate closes: the number of clicks on each item between the cutoffs,
summed over all devices -- no user ids, no sequences, no times.

The global model's output biases are shifted by ``beta * log(rate between /
rate before)`` (add-one smoothed rates; a logit adjustment for a change of
the item prior), then every device fine-tunes from that model exactly as in
``deeprec-train evaluate`` (same reader, split, fit settings, candidates and
recipe). Prints per-user mean Recall@20 / MRR@20 of global, centralized and
personal for each ``--betas`` value (0 = the evaluate run itself). Choose beta
on a ``--validation`` run (the test part removed), then read the test run.

    python bench/whatif_item_counts.py LOG [--format online-retail] [--validation]
        [--betas 0 0.5 1] [--epsilon inf 4 1] [--models DIR] [--json out.json]

``--epsilon``: the same with a differentially private aggregate instead of
exact click counts.  Each device reports the set of its ``--max-items``
most-clicked items between the cutoffs (ties: the newer click first), each
item once; the server sums the reports and adds Gaussian noise calibrated to
user-level (epsilon, delta)-differential privacy: adding or removing one
device changes the sum by at most sqrt(max_items) in L2 norm, and noise of
standard deviation sigma = sqrt(max_items) / sqrt(2 rho) is rho-zCDP, which
implies (rho + 2 sqrt(rho ln(1/delta)), delta)-DP (Bun & Steinke 2016,
Proposition 1.3); rho is solved from epsilon and ``--delta``.  (Secure
aggregation is assumed, so the server sees only the noisy sum.)  The
reference rate before the cutoff is counted the same way from the cloud's
own log: per user and window of the same length as the period between the
cutoffs, her ``max_items`` most-clicked items, once each.  ``inf`` = the
bounded reports without noise.  ``--estimator`` turns the noisy counts into
the shift: ``eb`` (default) is the empirical-Bayes posterior mean of each
item's log rate ratio, with the noise and the Poisson count modelled exactly
and the prior of the ratios fitted on all items' counts (nothing to tune);
``threshold`` (the first version) treats counts at or below 2 sigma as zero
and smooths the rest towards the reference rate -- at epsilon 4 it lets noise
on rare items pass as rises.

Not a product feature: shipping it would mean devices reporting what they
clicked, which the privacy design does not allow today. The script exists so
that decision can be taken with numbers. Needs the trainer extra; about
10 minutes per beta on Online Retail on a 2-core machine.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys
from typing import Tuple

import numpy as np


def zcdp_gaussian_sigma(epsilon: float, delta: float, l2_sensitivity: float) -> float:
    """Standard deviation of Gaussian noise for (epsilon, delta)-DP of a sum
    with the given L2 sensitivity, through rho-zCDP (sigma^2 = Delta^2 / (2 rho);
    rho-zCDP implies (rho + 2 sqrt(rho ln(1/delta)), delta)-DP).  0 for
    epsilon = inf."""
    if math.isinf(epsilon):
        return 0.0
    if not (epsilon > 0 and 0 < delta < 1):
        raise ValueError(f"need epsilon > 0 and 0 < delta < 1, got {epsilon}, {delta}")
    big_l = math.log(1.0 / delta)
    sqrt_rho = math.sqrt(big_l + epsilon) - math.sqrt(big_l)   # rho + 2 sqrt(rho L) = epsilon
    return l2_sensitivity / (math.sqrt(2.0) * sqrt_rho)


def window_reports(users, items, times, start: float, end: float, window: float,
                   max_items: int, n_items: int) -> np.ndarray:
    """Per item: how many (user, window) pairs report it.  Windows of length
    ``window`` end at ``end`` (the last one may be shorter at ``start``); a
    user's report for a window is her ``max_items`` most-clicked items in it
    (ties: the newer last click first), each once."""
    import pandas as pd

    keep = (times >= start) & (times < end)
    df = pd.DataFrame({"u": users[keep], "i": items[keep], "t": times[keep]})
    if df.empty:
        return np.zeros(n_items)
    df["w"] = np.floor((end - df["t"].to_numpy()) / window).astype(np.int64)
    g = df.groupby(["u", "w", "i"], sort=False)["t"].agg(["size", "max"]).reset_index()
    g = g.sort_values(["u", "w", "size", "max"], ascending=[True, True, False, False])
    g = g[g.groupby(["u", "w"], sort=False).cumcount() < max_items]
    return np.bincount(g["i"].to_numpy(), minlength=n_items).astype(np.float64)


def private_shift(before: np.ndarray, between: np.ndarray, sigma: float,
                  rng: np.random.Generator) -> np.ndarray:
    """log(rate between / rate before) from report counts: ``between``
    noised with N(0, sigma^2), counts at or below 2 sigma set to 0, both
    rates smoothed towards the reference rate (N pseudo-reports spread as
    it)."""
    n = before.size
    q = (before + 1.0) / (before.sum() + n)
    noisy = between + (rng.normal(0.0, sigma, n) if sigma > 0 else 0.0)
    kept = np.where(noisy > 2.0 * sigma, noisy, 0.0)
    r = (kept + n * q) / (kept.sum() + n)
    return np.log(r) - np.log(q)


#: log rate ratios the empirical-Bayes prior may put mass on (a 1/55 fall to a
#: 3,000-fold rise, in steps of 0.1)
EB_GRID = np.round(np.arange(-4.0, 8.0 + 1e-9, 0.1), 10)


def noisy_count_loglik(y: np.ndarray, mu: np.ndarray, sigma: float,
                       chunk: int = 64) -> np.ndarray:
    """``log p(y | mu)`` for ``y = b + e``, ``b ~ Poisson(mu)``, ``e ~ N(0,
    sigma^2)``; ``y`` of shape ``(n,)``, ``mu`` of shape ``(n, k)``.
    ``sigma == 0``: the Poisson log-pmf of the (integer) count.  Otherwise
    the sum over ``b`` is exact over the window where its terms are not
    negligible: the terms are log-concave in ``b``, so they are summed over
    +-12 of their widths (at most sigma) around the largest one, found by
    bisection; what lies outside is below ~1e-30 of the sum."""
    from scipy.special import gammaln, logsumexp

    y = np.asarray(y, np.float64)
    mu = np.asarray(mu, np.float64)
    if sigma == 0:
        yy = np.rint(y)[:, None]
        return yy * np.log(mu) - mu - gammaln(yy + 1.0)
    s2 = sigma * sigma
    out = np.empty_like(mu)
    width = int(math.ceil(24.0 * sigma)) + 8
    off = np.arange(width, dtype=np.float64)
    for a in range(0, y.size, chunk):
        yc, lm = y[a:a + chunk, None], np.log(mu[a:a + chunk])
        # d/db of the log term ~ log mu - log(b + 1/2) + (y - b) / sigma^2: decreasing
        lo = np.zeros_like(lm)
        hi = np.maximum(np.maximum(mu[a:a + chunk], yc), 0.0) + 12.0 * sigma + 12.0
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            up = lm - np.log(mid + 0.5) + (yc - mid) / s2 > 0
            lo, hi = np.where(up, mid, lo), np.where(up, hi, mid)
        sd = 1.0 / np.sqrt(1.0 / (lo + 1.0) + 1.0 / s2)
        start = np.maximum(np.floor(lo - 12.0 * sd) - 2.0, 0.0)
        bb = start[..., None] + off                                     # (c, k, width)
        terms = (bb * lm[..., None] - mu[a:a + chunk, :, None] - gammaln(bb + 1.0)
                 - 0.5 * (yc[..., None] - bb) ** 2 / s2)
        out[a:a + chunk] = logsumexp(terms, axis=2) - 0.5 * math.log(2 * math.pi * s2)
    return out


def npmle_weights(lik: np.ndarray, iterations: int = 30000, tol: float = 1e-10) -> np.ndarray:
    """Mixing weights ``g`` (on the columns of ``lik``, the likelihood of
    each row's data under each grid point) of maximum marginal likelihood
    ``sum_i log sum_k lik[i, k] g[k]``: EM, accelerated by SQUAREM
    (Varadhan & Roland 2008, scheme S3, with a plain EM step when the
    extrapolation does not improve), until the mean log-likelihood gains
    less than ``tol`` or ``iterations`` EM steps are spent.  Plain EM crawls
    here: with noisy counts the likelihood is flat in ``g`` and thousands of
    steps barely move it."""
    n = lik.shape[0]

    def em(g):
        f = lik @ g
        return g * (lik.T @ (1.0 / f)) / n

    def objective(g):
        return float(np.mean(np.log(lik @ g)))

    g = np.full(lik.shape[1], 1.0 / lik.shape[1])
    obj = objective(g)
    for _ in range(max(iterations // 3, 1)):
        g1 = em(g)
        g2 = em(g1)
        r, v = g1 - g, g2 - 2.0 * g1 + g
        nv = float(np.linalg.norm(v))
        step = -float(np.linalg.norm(r)) / nv if nv > 0 else -1.0
        new = np.clip(g - 2.0 * step * r + step * step * v, 0.0, None)
        new = em(new / new.sum()) if new.sum() > 0 else g2
        new_obj, obj2 = objective(new), objective(g2)
        if not new_obj >= obj2:
            new, new_obj = g2, obj2
        done = new_obj - obj < tol
        g, obj = new, new_obj
        if done:
            break
    return g


def eb_shift(before: np.ndarray, between: np.ndarray, sigma: float,
             grid: np.ndarray = EB_GRID) -> Tuple[np.ndarray, np.ndarray]:
    """Empirical-Bayes ``log(rate between / rate before)`` from (noisy)
    report counts ``between`` and reference counts ``before``.

    Item i's count is ``Poisson(S q_i exp(d_i))`` plus ``N(0, sigma^2)``
    noise, ``q_i`` its reference rate (``before`` + 1/2, normalised), ``S``
    the noisy total; the log rate ratios ``d_i`` are drawn from one prior
    ``g`` on ``grid``, estimated by maximum marginal likelihood over all
    items (the NPMLE, :func:`npmle_weights`; Kiefer & Wolfowitz 1956,
    Efron 2016's g-modelling).  Returns ``(E[d_i | count_i], g)``.  A
    count the noise explains is pulled to where most items are; a rise the
    noise cannot explain keeps most of its size.  Nothing is tuned: the prior is fitted
    on the counts themselves."""
    before = np.asarray(before, np.float64)
    between = np.asarray(between, np.float64)
    n = before.size
    q = (before + 0.5) / (before.sum() + 0.5 * n)
    total = max(float(between.sum()), 1.0)
    ll = noisy_count_loglik(between, total * q[:, None] * np.exp(grid)[None, :], sigma)
    lik = np.exp(ll - ll.max(axis=1, keepdims=True))
    g = npmle_weights(lik)
    post = lik * g
    post /= post.sum(axis=1, keepdims=True)
    return post @ grid, g


def eb_private_shift(before: np.ndarray, between: np.ndarray, sigma: float,
                     rng: np.random.Generator) -> np.ndarray:
    """:func:`eb_shift` of ``between`` noised with ``N(0, sigma^2)``
    (:func:`private_shift`'s signature)."""
    noisy = between + (rng.normal(0.0, sigma, between.size) if sigma > 0 else 0.0)
    return eb_shift(before, noisy, sigma)[0]


ESTIMATORS = {"eb": eb_private_shift, "threshold": private_shift}


def main(argv=None) -> int:
    from _protocol import add_log_arguments, prepare  # bench/, beside this script

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_log_arguments(ap, "beta")
    ap.add_argument("--betas", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    ap.add_argument("--epsilon", type=float, nargs="+", default=[],
                    help="also with a user-level (epsilon, delta)-DP aggregate of bounded "
                         "reports, for each value ('inf': bounded, no noise)")
    ap.add_argument("--delta", type=float, default=1e-6, help="DP delta (default 1e-6)")
    ap.add_argument("--max-items", type=int, default=20,
                    help="items a device reports at most (default 20)")
    ap.add_argument("--estimator", choices=sorted(ESTIMATORS), default="eb",
                    help="how the noisy counts become a shift: 'eb' (default) the "
                         "empirical-Bayes posterior mean, 'threshold' counts at or below "
                         "2 sigma dropped")
    ap.add_argument("--noise-seeds", type=int, default=1,
                    help="noise draws per epsilon, a row each (default 1)")
    a = ap.parse_args(argv)
    ready = prepare(a)
    if ready is None:
        return 0
    st, sp, models, cands = ready           # evaluate's own reading, split, fit, candidates
    import deeprec_edge.trainer.evaluate as EV
    from deeprec_edge.model import model_from_params, params_of

    quiet = lambda s: None  # noqa: E731
    g, N = models["global"], len(sp.catalogue)
    before = sp.train.item_support().astype(np.float64)
    between = sp.central.subset(sp.central.times >= sp.cutoff).item_support().astype(np.float64)
    shift = (np.log((between + 1) / (between.sum() + N))
             - np.log((before + 1) / (before.sum() + N)))
    st_score = copy.copy(st)
    st_score.methods, st_score.ks = ("global", "centralized", "personal"), (20,)
    variants = [("exact", None, beta, None) for beta in a.betas]
    if a.epsilon:
        t = sp.train.times
        end = sp.test_cutoff if sp.test_cutoff is not None else float(sp.central.times.max())
        window = end - sp.cutoff
        ref = window_reports(sp.train.users, sp.train.items, t, float(t.min()), sp.cutoff,
                             window, a.max_items, N)
        btw = sp.central.subset(sp.central.times >= sp.cutoff)
        rep = window_reports(btw.users, btw.items, btw.times, sp.cutoff, end, window,
                             a.max_items, N)
        print(f"DP reports: {int(rep.sum()):,} item reports between the cutoffs "
              f"(at most {a.max_items} per device), {int(ref.sum()):,} before")
        for eps in a.epsilon:
            sigma = zcdp_gaussian_sigma(eps, a.delta, math.sqrt(a.max_items))
            for seed in range(a.noise_seeds if sigma > 0 else 1):
                sh = ESTIMATORS[a.estimator](ref, rep, sigma, np.random.default_rng(seed))
                for beta in a.betas:
                    if beta:
                        variants.append((f"eps {eps:g} {a.estimator}", (sigma, seed), beta, sh))
    rows = {}
    print(f"{a.log}: {len(sp.users)} users, {int(between.sum()):,} clicks between the cutoffs"
          f"{' (validation split)' if a.validation else ''}")
    print("| counts | beta | global R@20 | centralized R@20 | personal R@20 | global MRR@20 | "
          "centralized MRR@20 | personal MRR@20 |\n|---|---|---|---|---|---|---|---|")
    for kind, noise, beta, sh in variants:
        p = copy.deepcopy(params_of(g))
        p.b_out = (p.b_out + beta * (shift if sh is None else sh)).astype(np.float32)
        g2 = model_from_params(p, g.item_ids, g.popularity, config=dict(g.config),
                               repeat=g.repeat, recipe=g.recipe)
        personal, _ = EV.finetune_users(sp, g2, st, cands, log=quiet, progress=False)
        sc = EV.score_users(sp, {"global": g2, "centralized": models["centralized"]}, personal,
                            st_score, cands, progress=False)
        row = {}
        for m in st_score.methods:
            s = sc.acc[m]["full"].summary(ks=(20,), ci="normal", seed=0)["optimistic"]
            row[m] = {k: s[k]["mean"] for k in ("recall@20", "mrr@20")}
        label = kind if noise is None else f"{kind} (sigma {noise[0]:.1f}, noise seed {noise[1]})"
        rows[f"{label}, beta {beta:g}"] = row
        print(f"| {label} | {beta:g} | " + " | ".join(
            f"{row[m][k]:.4f}" for k in ("recall@20", "mrr@20") for m in st_score.methods)
            + " |", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"log": a.log, "validation": a.validation, "users": len(sp.users),
                       "between_clicks": int(between.sum()), "results": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

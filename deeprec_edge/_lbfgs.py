"""A small deterministic L-BFGS minimiser (numpy only).

Used for the problems that are small enough to solve exactly on a phone:
the trainer's calibration of the repeat component, and the device's
parameter-efficient personal parts (a user-embedding offset, personal item
biases, personal repeat weights, optionally the head).  Full-batch,
deterministic, no line-search randomness: the same data give the same
weights on every machine that rounds the same way.

``minimize(fun, x0)`` with ``fun(x) -> (f, g)`` (float64) returns an
:class:`LbfgsResult`.  A non-finite objective or gradient stops the search:
the last finite point is returned with ``status="non-finite"`` -- callers
decide (fine-tuning then keeps the global model).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Tuple

import numpy as np

__all__ = ["LbfgsResult", "minimize"]


@dataclass
class LbfgsResult:
    """``x`` (the best point found), ``f`` its value, ``iterations``,
    ``evaluations`` and ``status``: "converged", "max-iterations",
    "line-search" (no decrease found: at a minimum to rounding) or
    "non-finite"."""

    x: np.ndarray
    f: float
    iterations: int
    evaluations: int
    status: str


def minimize(fun: Callable[[np.ndarray], Tuple[float, np.ndarray]], x0: np.ndarray, *,
             max_iter: int = 50, history: int = 8, gtol: float = 1e-5,
             ftol: float = 1e-9, max_evals: int = 0) -> LbfgsResult:
    """Minimise ``fun`` from ``x0`` with L-BFGS and a backtracking (Armijo)
    line search.

    Stops when the gradient's max-norm is below ``gtol * max(1, |f|)``, when
    an iteration lowers ``f`` by less than ``ftol * max(1, |f|)``, after
    ``max_iter`` iterations or ``max_evals`` evaluations (0: ``4 *
    max_iter``)."""
    x = np.array(x0, np.float64, copy=True).reshape(-1)
    max_evals = max_evals or 4 * max_iter + 4
    f, g = fun(x)
    f = float(f)
    g = np.asarray(g, np.float64).reshape(-1)
    n_eval = 1
    if not (np.isfinite(f) and np.all(np.isfinite(g))):
        return LbfgsResult(x, f, 0, n_eval, "non-finite")
    S, Y, rho = [], [], []
    status = "max-iterations"
    it = 0
    for it in range(1, max_iter + 1):
        if np.max(np.abs(g), initial=0.0) <= gtol * max(1.0, abs(f)):
            status = "converged"
            it -= 1
            break
        # two-loop recursion: d = -H g
        q = g.copy()
        alphas = []
        for s, y, r in zip(reversed(S), reversed(Y), reversed(rho)):
            a = r * float(s @ q)
            alphas.append(a)
            q -= a * y
        if S:
            gamma = float(S[-1] @ Y[-1]) / float(Y[-1] @ Y[-1])
        else:
            gamma = 1.0 / max(1.0, float(np.linalg.norm(g)))
        d = gamma * q
        for (s, y, r), a in zip(zip(S, Y, rho), reversed(alphas)):
            b = r * float(y @ d)
            d += (a - b) * s
        d = -d
        slope = float(g @ d)
        if not slope < 0:          # not a descent direction: restart from steepest descent
            S, Y, rho = [], [], []
            d = -g / max(1.0, float(np.linalg.norm(g)))
            slope = float(g @ d)
        step = 1.0
        accepted = False
        while n_eval < max_evals:
            xn = x + step * d
            fn, gn = fun(xn)
            fn = float(fn)
            n_eval += 1
            gn = np.asarray(gn, np.float64).reshape(-1)
            finite = np.isfinite(fn) and bool(np.all(np.isfinite(gn)))
            if finite and fn <= f + 1e-4 * step * slope:
                accepted = True
                break
            step *= 0.5 if finite else 0.1
            if step < 1e-12:
                break
        if not accepted:
            status = "line-search" if n_eval < max_evals else "max-iterations"
            break
        s, y = xn - x, gn - g
        sy = float(s @ y)
        if sy > 1e-10 * float(y @ y):
            S.append(s)
            Y.append(y)
            rho.append(1.0 / sy)
            if len(S) > history:
                S.pop(0)
                Y.pop(0)
                rho.pop(0)
        decrease = f - fn
        x, f, g = xn, fn, gn
        if decrease <= ftol * max(1.0, abs(f)):
            status = "converged"
            break
    return LbfgsResult(x, f, it, n_eval, status)

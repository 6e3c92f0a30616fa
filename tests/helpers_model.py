"""Synthetic random models for tests (numpy only, no kernels needed).

``random_model(...)`` builds a valid :class:`deeprec_edge.model.Model` of
any shape; ``random_arrays(...)`` gives the raw arrays of a model file (to
break on purpose); ``write_npz(path, arrays)`` writes arrays as an npz
without any validation; ``child_env()`` is the environment of a child
interpreter that imports the same deeprec_edge and these helpers, and
``wait_for(pred, timeout, proc)`` waits for that child to reach a point.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np

import deeprec_edge
from deeprec_edge.model import GRULayer, Model, make_personal

__all__ = ["random_model", "random_arrays", "random_personal", "write_npz", "set_config",
           "child_env", "wait_for"]


def child_env() -> Dict[str, str]:
    """os.environ with PYTHONPATH leading to the deeprec_edge under test and
    to this folder (so ``python -c`` children import the same code)."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(deeprec_edge.__file__)))
    here = os.path.dirname(os.path.abspath(__file__))
    env["PYTHONPATH"] = os.pathsep.join([root, here] + ([env["PYTHONPATH"]]
                                                        if env.get("PYTHONPATH") else []))
    return env


def wait_for(pred: Any, timeout: float, proc: Any) -> None:
    """Poll ``pred()`` until true; fail if the child ``proc`` exits first, or
    after ``timeout`` seconds (a guard against a hung child, not a speed
    check: generous on purpose)."""
    t0 = time.monotonic()
    while not pred():
        if proc.poll() is not None:
            raise AssertionError(f"child exited early: {proc.returncode}\n"
                                 f"{proc.stderr.read().decode(errors='replace')}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise AssertionError("child did not reach the expected point in time")
        time.sleep(0.01)


def random_model(n_items: int = 30, e: int = 8, hidden: Union[int, Sequence[int]] = 12,
                 d: Optional[int] = None, tied: bool = False, activation: str = "tanh",
                 string_ids: bool = False, carry_state: bool = False, seed: int = 0,
                 **config: Any) -> Model:
    """A valid random global model.  ``hidden`` is H for one layer or a list
    of hidden sizes (one per layer).  ``d`` defaults to ``e`` when tied, else
    to the last hidden size.  Item ids are 1000 + 7*i (or ``"item-<i>"``)."""
    rng = np.random.default_rng(seed)
    hs = [hidden] if isinstance(hidden, int) else list(hidden)
    if d is None:
        d = e if tied else hs[-1]
    if tied and e != d:
        raise ValueError("tied models need e == d")
    f32 = lambda *shape: (rng.standard_normal(shape) * 0.3).astype(np.float32)  # noqa: E731
    layers, inp = [], e
    for H in hs:
        layers.append(GRULayer(f32(3 * H, inp), f32(3 * H, H), f32(3 * H), f32(3 * H)))
        inp = H
    ids = (np.array([f"item-{i}" for i in range(n_items)]) if string_ids
           else 1000 + 7 * np.arange(n_items, dtype=np.int64))
    cfg = {"n_items": n_items, "e": e, "L": len(hs), "H": hs[0] if len(set(hs)) == 1 else hs,
           "d": d, "activation": activation, "tied": tied, "carry_state": carry_state,
           "session_gap_seconds": 3600.0, "flags": [], "loss": "xe", "alpha": 0.75,
           "trained_on": "synthetic test data", "created": "2026-01-01T00:00:00+00:00"}
    cfg.update(config)
    model = Model(config=cfg, item_ids=ids, E=f32(n_items, e), layers=layers, W_p=f32(d, hs[-1]),
                  b_p=f32(d), O=None if tied else f32(n_items, d), b=f32(n_items),
                  popularity=rng.integers(0, 100, n_items).astype(np.float64))
    model.validate()
    return model


class _Params:
    """Stand-in for the engine's Params (only what make_personal reads)."""

    def __init__(self, model: Model, seed: int):
        rng = np.random.default_rng(seed)
        self.layers = [list(layer) for layer in model.layers]
        self.layers[-1] = [a + rng.standard_normal(a.shape).astype(np.float32) * 0.01
                           for a in self.layers[-1]]
        self.W_p = model.W_p + np.float32(0.01)
        self.b_p = model.b_p - np.float32(0.01)


def random_personal(base: Optional[Model] = None, seed: int = 1, with_bias: bool = False,
                    **kw: Any) -> Model:
    """A valid personal model derived from ``base`` (default: random_model())."""
    base = base if base is not None else random_model(**kw)
    bi = b = None
    if with_bias:
        bi = np.array([0, 3, 5], np.int64)
        b = np.array([0.5, -0.25, 1.0], np.float32)
    return make_personal(base, _Params(base, seed), clicks_used=42,
                         last_timestamp=1_700_000_000.5, seed=seed, epochs=3,
                         bias_index=bi, bias=b)


def random_arrays(**kw: Any) -> Dict[str, np.ndarray]:
    """The arrays of a valid model file, by name (fresh copies: safe to break)."""
    return {k: np.array(v, copy=True) for k, v in random_model(**kw).to_arrays().items()}


def write_npz(path: Any, arrays: Dict[str, np.ndarray]) -> None:
    """Write arrays as an npz, no validation (for broken files)."""
    np.savez(path, **arrays)


def set_config(arrays: Dict[str, np.ndarray], **changes: Any) -> Dict[str, np.ndarray]:
    """Change config keys (a value of ``...`` deletes the key)."""
    cfg = json.loads(str(arrays["config"][()]))
    for k, v in changes.items():
        if v is ...:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    arrays["config"] = np.array(json.dumps(cfg))
    return arrays


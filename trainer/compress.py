"""Smaller model files for devices: magnitude pruning (one-shot, or gradual
with DeepRec's AGP schedule and recovery training during ``deeprec-train
fit --prune``), quantisation settings for ``deeprec-train export``, and
the ``--compress`` presets.

Pruning zeroes the smallest-magnitude weights: in a GRU or head matrix the
smallest of the whole matrix, in an item table (``E``, ``O``) the smallest
of each row, so every item keeps its largest coordinates (a global
threshold would wipe whole rows of rarely clicked items).  A pruned matrix
is stored sparse when that is smaller (:mod:`deeprec_edge.quant`), and
quantisation keeps its zeros.

AGP (automated gradual pruning, Zhu & Gupta 2017; DeepRec prunes 70% of
its GRU weights this way): the sparsity after a share ``t`` of training is

    s(t) = s_f * (1 - (1 - (t - t_0) / (t_1 - t_0)) ** 3)    for t_0 <= t <= t_1

(0 before ``t_0``, ``s_f`` after ``t_1``); the masks are recomputed ten
times per epoch inside that window, the weights keep training (pruned ones
held at zero after every step), and the epochs after ``t_1`` recover the
accuracy the last pruning steps cost.

numpy only.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from deeprec_edge.model import MATRIX_GROUPS, GRULayer, Model, compress_model
from deeprec_edge.quant import Compressed, dequantize, quantize, storage_of

__all__ = ["PRESETS", "magnitude_mask", "prune_model", "agp_sparsity", "Pruner",
           "compact_model", "parse_dtype", "DEFAULT_PRUNE_PARTS"]

#: What ``--prune`` prunes by default.
DEFAULT_PRUNE_PARTS: Tuple[str, ...] = ("tables", "gru", "head")

#: ``--compress`` presets: storage per group, pruning, deflate.  ``max`` is
#: the smallest export the README's table measured within 1% relative
#: Recall@20 of the float32 model on both RSC15-100k and Online Retail: item
#: tables int3 (seven levels, per-row least-squares scales), GRU and head
#: int4, float16 scales and biases, deflated.  It prunes nothing:
#: one-shot pruning costs more than 1% at 50% on Online Retail; pruning during
#: training (``fit --prune``) and then ``--compress max`` goes further on
#: RSC15-100k.  The README's table gives the ratios and losses.
PRESETS: Dict[str, Dict[str, Any]] = {
    "max": {"dtype": {"tables": "int3", "gru": "int4", "head": "int4", "bias": "float16"},
            "prune": 0.0, "deflate": True},
}

#: Storages ``--dtype`` accepts for a matrix group, and for ``bias``.
MATRIX_DTYPES: Tuple[str, ...] = ("float32", "float16", "int8", "int4", "int3")
BIAS_DTYPES: Tuple[str, ...] = ("float32", "float16")


def parse_dtype(spec: str) -> Dict[str, str]:
    """``"int8"`` (every matrix group) or ``"tables=int3,gru=int4,bias=float16"``
    -> storage per group (``bias``: every bias vector, float32 or float16);
    ValueError naming what is wrong."""
    out: Dict[str, str] = {}
    for part in [p.strip() for p in str(spec).split(",") if p.strip()]:
        if "=" in part:
            g, _, dt = part.partition("=")
            g, dt = g.strip(), dt.strip()
            if g not in MATRIX_GROUPS + ("bias",):
                raise ValueError(f"--dtype: unknown group {g!r} (groups: "
                                 f"{', '.join(MATRIX_GROUPS)}, bias)")
            groups = [g]
        else:
            dt, groups = part, list(MATRIX_GROUPS)
        allowed = BIAS_DTYPES if groups == ["bias"] else MATRIX_DTYPES
        if dt not in allowed:
            raise ValueError(f"--dtype: unknown storage {dt!r} for "
                             f"{'the biases' if groups == ['bias'] else 'matrices'} "
                             f"({', '.join(allowed)})")
        for g in groups:
            out[g] = dt
    if not out:
        raise ValueError("--dtype: empty")
    return out


def _group(name: str) -> str:
    return "tables" if name in ("E", "O") else "head" if name == "head.W" else "gru"


def magnitude_mask(W: np.ndarray, fraction: float, per_row: bool = False) -> np.ndarray:
    """bool mask of the weights kept when the ``fraction`` of smallest
    magnitudes is pruned (of the whole matrix, or of each row).  Ties at
    the threshold: the earlier position is pruned first (deterministic)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"prune fraction must be in [0, 1), got {fraction}")
    W = np.asarray(W)
    keep = np.ones(W.shape, bool)
    if fraction <= 0 or W.size == 0:
        return keep
    if per_row:
        k = int(np.floor(fraction * W.shape[1]))
        if k:
            drop = np.argsort(np.abs(W), axis=1, kind="stable")[:, :k]
            np.put_along_axis(keep, drop, False, axis=1)
        return keep
    k = int(np.floor(fraction * W.size))
    if k:
        drop = np.argsort(np.abs(W).reshape(-1), kind="stable")[:k]
        keep.reshape(-1)[drop] = False
    return keep


def prune_model(model: Model, fraction: float,
                parts: Sequence[str] = DEFAULT_PRUNE_PARTS) -> Model:
    """One-shot magnitude pruning (no retraining) of the matrices in
    ``parts`` (groups: tables, gru, head); each matrix keeps its storage
    dtype (a compressed one is pruned on its values and re-quantised)."""
    for p in parts:
        if p not in MATRIX_GROUPS:
            raise ValueError(f"unknown prune part {p!r} (parts: {', '.join(MATRIX_GROUPS)})")
    new = {}
    for name, v in model.matrices().items():
        if _group(name) not in parts or fraction <= 0:
            new[name] = v
            continue
        vals = dequantize(v).copy()
        vals[~magnitude_mask(vals, fraction, per_row=_group(name) == "tables")] = 0.0
        new[name] = quantize(vals, storage_of(v)) if isinstance(v, Compressed) else vals
    return _with_matrices(model, new)


def _with_matrices(model: Model, new: Mapping[str, Any]) -> Model:
    m = Model(config=dict(model.config), item_ids=model.item_ids, E=new["E"],
              layers=[GRULayer(new[f"gru{l}.W_ih"], new[f"gru{l}.W_hh"], layer.b_ih, layer.b_hh)
                      for l, layer in enumerate(model.layers)],
              W_p=new["head.W"], b_p=model.b_p, O=new.get("O"), b=model.b,
              popularity=model.popularity, personal=model.personal,
              personal_bias_index=model.personal_bias_index, personal_bias=model.personal_bias,
              repeat_scale=model.repeat_scale, repeat_w=model.repeat_w)
    # the file's storage record and flags follow the matrices
    m.config = m._file_config()[0]
    return m


def agp_sparsity(t: float, final: float, begin: float, end: float) -> float:
    """AGP: the sparsity after a share ``t`` of training (module docstring)."""
    if final <= 0 or t < begin:
        return 0.0
    if t >= end or end <= begin:
        return float(final)
    return float(final * (1.0 - (1.0 - (t - begin) / (end - begin)) ** 3))


class Pruner:
    """Gradual magnitude pruning of a training ``Params`` (arrays updated in
    place by the optimiser): :meth:`update` recomputes the masks for a
    sparsity, :meth:`apply` zeroes the pruned weights (after every step)."""

    def __init__(self, params: Any, final: float, begin: float = 0.1, end: float = 0.6,
                 parts: Sequence[str] = DEFAULT_PRUNE_PARTS):
        if not 0.0 < final < 1.0:
            raise ValueError(f"--prune must be in (0, 1), got {final}")
        if not 0.0 <= begin < end <= 1.0:
            raise ValueError(f"prune schedule must have 0 <= begin < end <= 1, got "
                             f"begin={begin}, end={end}")
        for p in parts:
            if p not in MATRIX_GROUPS:
                raise ValueError(f"unknown prune part {p!r} (parts: {', '.join(MATRIX_GROUPS)})")
        self.final, self.begin, self.end = float(final), float(begin), float(end)
        self.targets: List[Tuple[str, np.ndarray, bool]] = []
        if "tables" in parts:
            self.targets.append(("E", params.E, True))
            if params.O is not None:
                self.targets.append(("O", params.O, True))
        if "gru" in parts:
            for l, layer in enumerate(params.layers):
                self.targets += [(f"gru{l}.W_ih", layer[0], False),
                                 (f"gru{l}.W_hh", layer[1], False)]
        if "head" in parts:
            self.targets.append(("head.W", params.W_p, False))
        self.masks: Dict[str, np.ndarray] = {}
        self.sparsity = 0.0

    def update(self, t: float) -> float:
        """Masks for the AGP sparsity at training share ``t`` (recomputed
        from the current magnitudes); returns that sparsity."""
        s = agp_sparsity(t, self.final, self.begin, self.end)
        if s > self.sparsity or (s and not self.masks):
            for name, W, per_row in self.targets:
                self.masks[name] = magnitude_mask(W, s, per_row)
            self.sparsity = s
            self.apply()
        return self.sparsity

    def apply(self, names: Optional[Iterable[str]] = None) -> None:
        """Zero the pruned weights (of ``names``; default: all)."""
        if not self.masks:
            return
        for name, W, _ in self.targets:
            if names is None or name in names:
                W *= self.masks[name]

    @property
    def dense_names(self) -> List[str]:
        """The small matrices (GRU, head): re-masked after every step."""
        return [n for n, _, per_row in self.targets if not per_row]


def compact_model(model: Model) -> Model:
    """The same model with item ids and integer popularity counts in the
    smallest integer dtypes that hold them (the file format reads any
    integer type; the fingerprint's canonical form does not change for the
    ids)."""
    ids = model.item_ids
    if ids.dtype.kind in "iu" and ids.size:
        lo, hi = int(ids.min()), int(ids.max())
        for dt in (np.int16, np.int32):
            if np.iinfo(dt).min <= lo and hi <= np.iinfo(dt).max:
                ids = ids.astype(dt)
                break
    pop = np.asarray(model.popularity)
    if pop.size and (pop.dtype.kind in "iu" or (np.all(pop == np.round(pop)) and pop.min() >= 0)):
        hi = float(pop.max())
        for dt in (np.uint8, np.uint16, np.uint32):
            if hi <= np.iinfo(dt).max:
                pop = pop.astype(dt)
                break
    return Model(config=dict(model.config), item_ids=ids, E=model.E, layers=list(model.layers),
                 W_p=model.W_p, b_p=model.b_p, O=model.O, b=model.b, popularity=pop,
                 personal=model.personal, personal_bias_index=model.personal_bias_index,
                 personal_bias=model.personal_bias, repeat_scale=model.repeat_scale,
                 repeat_w=model.repeat_w)


def apply_dtype(model: Model, dtype: Mapping[str, str]) -> Model:
    """:func:`deeprec_edge.model.compress_model` with storage per group."""
    return compress_model(model, dict(dtype))

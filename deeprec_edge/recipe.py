"""The fine-tuning recipe: which personal parts a device fits, and how firmly
they are held to the global model.

A recipe is chosen by the trainer -- by simulating devices on users of the
training period (``deeprec_edge.trainer.simulate``) -- and written into the
model file's config (``"finetune"``), so that ``deeprec-edge finetune`` and
:func:`deeprec_edge.finetune` do the right thing with no flags.  Any field
can still be overridden by the caller.  numpy-free; validated on load.

Fields
------
``parts``
    Personal parts to fit (:mod:`deeprec_edge._personal`): ``offset`` (user
    offset of the head), ``bias`` (personal biases of the user's items),
    ``repeat`` (personal repeat weights), ``head`` (the head matrix), and
    ``gru`` (the last GRU layer and head trained first by truncated BPTT, the
    original DeepRec fine-tuning).  Empty: keep the global model.
``l2``
    Strength of the Gaussian prior centred on the global model (per event
    summed loss + ``l2/2 |theta - theta_global|^2``).
``max_events``
    Newest next-click events used (older ones are ignored): bounds time and
    memory on long histories.
``max_iter``
    L-BFGS iterations.
``half_life``
    Recency weighting of the events, in events: the ``a``-th newest event
    weighs ``0.5 ** (a / half_life)`` (0: every event weighs the same).  A
    user whose habits changed is then described by her recent clicks.
``holdout``, ``min_holdout``
    Per-user fallback: the newest ``holdout`` share of the events (at least
    ``min_holdout``) is held out; when the personal parts fitted on the rest
    do not lower the held-out loss, the user keeps the global model.  Users
    with fewer than ``2 * min_holdout`` events skip the check (the prior
    keeps their personal parts near the global ones).  ``holdout = 0``
    disables the check.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Dict, Mapping, Tuple

__all__ = ["RECIPE_PARTS", "FinetuneRecipe", "DEFAULT_RECIPE"]

#: Parts a recipe may name.
RECIPE_PARTS: Tuple[str, ...] = ("offset", "bias", "repeat", "head", "gru")


def _number(name: str, v: Any, low: float = -math.inf, high: float = math.inf) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
            or not low <= v <= high:
        raise ValueError(f"fine-tuning recipe {name} must be a number in [{low}, {high}], "
                         f"got {v!r}")


def _integer(name: str, v: Any, low: int, high: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
        raise ValueError(f"fine-tuning recipe {name} must be an integer in [{low}, {high}], "
                         f"got {v!r}")


@dataclass(frozen=True)
class FinetuneRecipe:
    """A device's fine-tuning recipe (see the module docstring)."""

    parts: Tuple[str, ...] = ("offset", "bias", "repeat")
    l2: float = 10.0
    max_events: int = 500
    max_iter: int = 25
    half_life: float = 0.0
    holdout: float = 0.2
    min_holdout: int = 10

    def __post_init__(self) -> None:
        if isinstance(self.parts, (str, bytes)):
            raise ValueError(f"fine-tuning recipe parts must be a sequence of names such as "
                             f"('offset', 'bias'), not the string {self.parts!r:.80}")
        parts = tuple(self.parts)
        bad = [p for p in parts if p not in RECIPE_PARTS]
        if bad:
            raise ValueError(f"fine-tuning recipe: unknown part(s) {bad}; choose among "
                             f"{list(RECIPE_PARTS)}")
        if len(set(parts)) != len(parts):
            raise ValueError(f"fine-tuning recipe: parts listed twice in {list(parts)}")
        object.__setattr__(self, "parts", tuple(p for p in RECIPE_PARTS if p in parts))
        _number("l2", self.l2, low=0.0)
        _integer("max_events", self.max_events, low=1, high=10_000_000)
        _integer("max_iter", self.max_iter, low=1, high=100_000)
        _number("half_life", self.half_life, low=0.0)
        _number("holdout", self.holdout, low=0.0, high=0.9)
        _integer("min_holdout", self.min_holdout, low=1, high=1_000_000)

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["parts"] = list(self.parts)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FinetuneRecipe":
        """Build from a config dict; unknown keys are an error (a newer file)."""
        if not isinstance(d, Mapping):
            raise ValueError(f"fine-tuning recipe must be a JSON object, got {d!r}")
        known = {f for f in cls.__dataclass_fields__}
        extra = sorted(set(d) - known)
        if extra:
            raise ValueError(f"fine-tuning recipe has unknown key(s) {extra} (this version "
                             f"knows {sorted(known)})")
        kw = dict(d)
        if "parts" in kw:
            if not isinstance(kw["parts"], (list, tuple)) or \
                    not all(isinstance(p, str) for p in kw["parts"]):
                raise ValueError(f"fine-tuning recipe parts must be a list of names, got "
                                 f"{kw['parts']!r}")
            kw["parts"] = tuple(kw["parts"])
        return cls(**kw)

    def label(self) -> str:
        """A one-line name for logs and reports, e.g. ``offset+bias+repeat
        (l2 10, holdout 0)``; "keep the global model" with no parts."""
        if not self.parts:
            return "keep the global model"
        opts = [f"l2 {self.l2:g}", f"holdout {self.holdout:g}"]
        if self.half_life:
            opts.append(f"half-life {self.half_life:g}")
        return f"{'+'.join(self.parts)} ({', '.join(opts)})"

    def with_(self, **changes: Any) -> "FinetuneRecipe":
        """A copy with ``changes`` (validated)."""
        return replace(self, **changes)


#: The recipe of a model file that names none (a version-1 file).
DEFAULT_RECIPE = FinetuneRecipe()

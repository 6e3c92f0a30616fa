"""Checks of the numbers and paths a user hands to deeprec-edge.

One definition of every bound, used three ways:

- as an :mod:`argparse` ``type=`` (``Int``/``Float`` objects are callables on
  the option's text), so ``--negatives 100000000`` stops at parse time with
  ``argument --negatives: must be an integer in [0, 100000], got
  '100000000'`` and exit status 2;
- by the Python API: :func:`check_finetune_args` is the one call at the top
  of :func:`deeprec_edge.finetune` and of the engine-level
  :func:`deeprec_edge._finetune.finetune_params`; its messages name the
  argument (``n_negatives must be ...``);
- by both commands (``deeprec-edge`` and ``deeprec-train``): the same
  objects, so one setting has one range everywhere.

Bounds are generous for real use and stop what cannot work: a zero batch
(a division by zero later), a NaN learning rate (an optimiser error naming
an internal function), a batch whose logits do not fit in memory (seconds
of work, then MemoryError).  :func:`check_output_not_input` refuses an
output path that is one of the command's inputs (also through links).
"""
from __future__ import annotations

import argparse
import math
import numbers
import os
from typing import Any, Mapping, Optional, Union

__all__ = [
    "Int", "Float", "check_finetune_args", "check_output_not_input",
    "EPOCHS", "SEED", "WINDOW", "BATCH_SIZE", "NEGATIVES", "ALPHA", "LEARNING_RATE",
    "HOLDOUT", "L2_PULL", "MAX_EVENTS", "TOP_K", "RANK_K", "check_item_ids", "FINETUNE_ARGS", "RECIPE_DECIDES",
    "OPTIMIZERS", "MAX_BATCH_LOGITS", "show_ranges", "quoted", "quoted_list",
]


def _fmt(x: Union[int, float]) -> str:
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return str(x)


class _Number:
    """A number in a range; see :class:`Int` and :class:`Float`."""

    kind = "number"

    def __init__(self, lo: Optional[float] = None, hi: Optional[float] = None, *,
                 lo_open: bool = False, hi_open: bool = False):
        self.lo, self.hi, self.lo_open, self.hi_open = lo, hi, lo_open, hi_open
        self.__name__ = self.kind  # argparse names the type by it in some messages

    def describe(self) -> str:
        """What is accepted, e.g. ``an integer in [1, 10000]``."""
        a = "an integer" if self.kind == "integer" else "a number"
        if self.lo is not None and self.hi is not None:
            return (f"{a} in {'(' if self.lo_open else '['}{_fmt(self.lo)}, "
                    f"{_fmt(self.hi)}{')' if self.hi_open else ']'}")
        if self.lo is not None:
            return f"{a} {'>' if self.lo_open else '>='} {_fmt(self.lo)}"
        if self.hi is not None:
            return f"{a} {'<' if self.hi_open else '<='} {_fmt(self.hi)}"
        return a if self.kind == "integer" else "a finite number"

    def _in_range(self, v: float) -> bool:
        if self.lo is not None and (v < self.lo or (self.lo_open and v == self.lo)):
            return False
        if self.hi is not None and (v > self.hi or (self.hi_open and v == self.hi)):
            return False
        return True

    def _convert(self, value: Any) -> Optional[Union[int, float]]:
        raise NotImplementedError

    def check(self, value: Any, name: str) -> Union[int, float]:
        """``value`` as a Python int/float, or ValueError naming ``name``."""
        v = self._convert(value)
        if v is None or not self._in_range(v):
            raise ValueError(f"{name} must be {self.describe()}, got {value!r}")
        return v

    def _parse(self, text: str) -> Any:
        raise NotImplementedError

    def __call__(self, text: str) -> Union[int, float]:
        """The argparse ``type=``: parse the option's text and check it."""
        try:
            value = self._parse(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text!r}") from None
        v = self._convert(value)
        if v is None or not self._in_range(v):
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text!r}")
        return v

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"


class Int(_Number):
    """An integer in ``[lo, hi]`` (either bound may be None).  Python values:
    int or numpy integer (not bool, not float)."""

    kind = "integer"

    def _convert(self, value: Any) -> Optional[int]:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            return None
        return int(value)

    def _parse(self, text: str) -> int:
        return int(text.strip(), 10)


class Float(_Number):
    """A finite number in a range (open or closed at either end).  Python
    values: int, float or numpy number (not bool); NaN and infinities are
    refused."""

    kind = "number"

    def _convert(self, value: Any) -> Optional[float]:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return None
        v = float(value)
        return v if math.isfinite(v) else None

    def _parse(self, text: str) -> float:
        return float(text)


#: Fine-tuning epochs (an epoch is one pass over the user's windows).
EPOCHS = Int(1, 10_000)
#: Random seeds (numpy's generators take any non-negative integer).
SEED = Int(0, 2 ** 63 - 1)
#: BPTT window, clicks.
WINDOW = Int(1, 10_000)
#: Windows per mini-batch.
BATCH_SIZE = Int(1, 10_000)
#: Negatives shared by a mini-batch (0: the batch's own targets only).
NEGATIVES = Int(0, 100_000)
#: Exponent of popularity for drawing negatives (0: uniform).
ALPHA = Float(0.0, 10.0)
#: Learning rate.
LEARNING_RATE = Float(0.0, lo_open=True)
#: Share of the newest clicks held out (0: none; 1 would leave nothing to train on).
HOLDOUT = Float(0.0, 0.9)          # the recipe's range (deeprec_edge.recipe)
#: Strength of the L2 pull towards the global weights (0: off).
L2_PULL = Float(0.0)
#: Newest next-click events a device learns its personal parts from.
MAX_EVENTS = Int(1, 10_000_000)
#: Number of recommendations.
TOP_K = Int(1, 2 ** 31 - 1)
#: ``k`` of the Python ranking calls (0: nothing; more than the items: all of them).
RANK_K = Int(0, 2 ** 63 - 1)

#: The numeric arguments of :func:`deeprec_edge.finetune` and their ranges.
FINETUNE_ARGS = {
    "epochs": EPOCHS, "seed": SEED, "window": WINDOW, "batch_size": BATCH_SIZE,
    "n_negatives": NEGATIVES, "alpha": ALPHA, "lr": LEARNING_RATE, "holdout": HOLDOUT,
    "l2_to_global": L2_PULL, "l2": L2_PULL, "max_events": MAX_EVENTS,
}
#: Settings that may be None: the model's recipe decides them.
RECIPE_DECIDES = frozenset({"holdout", "l2", "max_events"})
OPTIMIZERS = ("adagrad", "adam", "sgd")
#: Logits of one mini-batch at most (rows x (rows + negatives), float32: 1 GiB):
#: beyond it the sampled softmax alone would take gigabytes.
MAX_BATCH_LOGITS = 1 << 28


def check_finetune_args(args: Mapping[str, Any],
                        names: Optional[Mapping[str, str]] = None) -> None:
    """Check the fine-tuning settings in ``args`` (e.g. ``locals()`` at the top
    of :func:`deeprec_edge.finetune`; keys it does not know are ignored).

    Raises ValueError naming the argument -- or its command-line option,
    when ``names`` maps the argument to it -- and the accepted range.
    """
    names = names or {}
    got = {}
    for key, spec in FINETUNE_ARGS.items():
        if key in args and not (args[key] is None and key in RECIPE_DECIDES):
            got[key] = spec.check(args[key], names.get(key, key))
    if "optimizer" in args and args["optimizer"] not in OPTIMIZERS:
        raise ValueError(f"{names.get('optimizer', 'optimizer')} must be one of "
                         f"{', '.join(OPTIMIZERS)}, got {args['optimizer']!r}")
    for key in ("early_stopping", "train_gru"):
        if key in args and not isinstance(args[key], bool):
            raise ValueError(f"{names.get(key, key)} must be True or False, got {args[key]!r}")
    if {"batch_size", "window", "n_negatives"} <= got.keys():
        rows = got["batch_size"] * got["window"]
        logits = rows * (rows + got["n_negatives"])
        if logits > MAX_BATCH_LOGITS:
            b, w, n = (names.get(k, k) for k in ("batch_size", "window", "n_negatives"))
            raise ValueError(
                f"{b} x {w} x ({b} x {w} + {n}) = {logits:,} logits per mini-batch is more "
                f"than {MAX_BATCH_LOGITS:,} (1 GiB of float32): lower {b}, {w} or {n}")


def check_item_ids(values: Any, name: str) -> Any:
    """Refuse a string where a sequence of item ids (or part names) is
    expected: iterating ``"1085"`` would give ``'1', '0', '8', '5'``."""
    if isinstance(values, (str, bytes)):
        raise ValueError(f"{name} must be a sequence (e.g. a list), not a single string: "
                         f"got {quoted(values)}; write [{quoted(values)}]")
    return values


def quoted(value: Any, limit: int = 80) -> str:
    """``repr(value)`` for a message, at most about ``limit`` characters: a
    value read from a file (a 10^6-character line, a hostile header) must
    not turn one error line into megabytes."""
    r = repr(value)
    if len(r) <= limit:
        return r
    n = len(value) if isinstance(value, (str, bytes)) else len(r)
    return f"{r[:limit]}... ({n:,} characters)"


def quoted_list(values: Any, k: int = 10, limit: int = 80) -> str:
    """``[v1, v2, ...]`` of at most ``k`` :func:`quoted` values, and how
    many more there are."""
    vals = list(values)
    shown = ", ".join(quoted(v, limit) for v in vals[:k])
    more = f", ... ({len(vals) - k:,} more)" if len(vals) > k else ""
    return f"[{shown}{more}]"


def show_ranges(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Name every numeric option's range in its ``--help`` text, from the
    option's own ``type=`` (an :class:`Int` or :class:`Float`), so that the
    help and the check cannot disagree.  The range goes before a trailing
    ``(default ...)``, else at the end; a help that already holds the exact
    wording is left as it is.  Sub-commands are handled too.  Returns
    ``parser``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                show_ranges(sub)
            continue
        if not isinstance(action.type, _Number) or action.help in (None, argparse.SUPPRESS):
            continue
        rng = action.type.describe()
        text = action.help
        if rng in text:
            continue
        at = text.rfind(" (default")
        action.help = (f"{text[:at]}, {rng}{text[at:]}" if at > 0
                       else f"{text}, {rng}" if text else rng)
    return parser


def check_output_not_input(output: Any, inputs: Mapping[str, Any]) -> None:
    """Refuse to write ``output`` over one of the command's inputs.

    ``inputs`` maps a description (``"the history HISTORY"``) to a path or
    None.  The same file is recognised through symbolic and hard links
    (:func:`os.path.samefile`).  Raises ValueError; a path that does not
    exist yet is never an input.
    """
    for what, path in inputs.items():
        if path is None:
            continue
        try:
            same = os.path.samefile(output, path)
        except (OSError, ValueError):
            continue
        if same:
            raise ValueError(f"refusing to write {output}: it is {what} ({path}), an input of "
                             f"this command; write the result to another file")

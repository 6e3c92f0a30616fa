"""Ranges of the user-facing numbers (deeprec_edge._checks): the Python API
of fine-tuning refuses a bad setting before any work, naming the argument;
the same objects are the commands' argparse types (tests/test_cli.py)."""
from __future__ import annotations

import argparse
import math

import numpy as np
import pytest

import deeprec_edge as de
from deeprec_edge import _checks as C
from deeprec_edge._finetune import finetune_params
from deeprec_edge.demo import demo_paths
from deeprec_edge.model import params_of

BAD = {
    "epochs": [0, -1, 2.5, True, "3", 10_001],
    "seed": [-1, 1.0, None],
    "window": [0, -5, 1e9],
    "batch_size": [0, -1, 10_001],
    "n_negatives": [-1, 100_000_000],
    "alpha": [-0.5, math.inf, math.nan, 11.0],
    "lr": [0.0, -0.1, math.nan, math.inf, "0.1"],
    "holdout": [-0.1, math.nan, 1.0, 1.5],
    "l2_to_global": [-1.0, math.nan, math.inf],
}
BAD_CASES = [pytest.param(k, v, id=f"{k}={v!r}") for k, vs in BAD.items() for v in vs]


@pytest.fixture(scope="module")
def demo():
    m, h = demo_paths()
    model = de.load_model(m)
    return model, de.read_history(h, model=model)


@pytest.mark.parametrize("arg,value", BAD_CASES)
def test_finetune_refuses_bad_settings_naming_the_argument(demo, arg, value):
    model, hist = demo
    with pytest.raises(ValueError, match=rf"^{arg} must be an? (integer|number)") as e:
        de.finetune(model, hist, **{arg: value})
    assert repr(value) in str(e.value)


@pytest.mark.parametrize("arg,value", BAD_CASES)
def test_finetune_params_refuses_the_same(demo, arg, value):
    model, hist = demo
    with pytest.raises(ValueError, match=rf"^{arg} must be"):
        finetune_params(params_of(model), hist.items, None, **{arg: value})


def test_other_finetune_arguments(demo):
    model, hist = demo
    with pytest.raises(ValueError, match="^optimizer must be one of adagrad, adam, sgd"):
        de.finetune(model, hist, optimizer="rmsprop")
    with pytest.raises(ValueError, match="^train_gru must be True or False"):
        de.finetune(model, hist, train_gru="no")
    with pytest.raises(ValueError, match=r"^batch_size x window x \(batch_size x window \+ "
                                         r"n_negatives\) = 100,100,000,000,000 logits"):
        de.finetune(model, hist, batch_size=10_000, window=1_000, n_negatives=10_000)


def test_good_values_pass_unchanged_and_numpy_numbers_count():
    C.check_finetune_args(dict(epochs=np.int64(3), seed=0, window=20, batch_size=16,
                               n_negatives=0, alpha=0, lr=np.float32(0.05), holdout=0.0,
                               l2_to_global=0, optimizer="sgd", early_stopping=False,
                               train_gru=True, model=object(), progress=None))
    assert C.HOLDOUT.check(np.float64(0.25), "holdout") == 0.25
    assert C.EPOCHS.check(np.int32(7), "epochs") == 7 and type(C.EPOCHS.check(7, "e")) is int


def test_specs_as_argparse_types():
    assert C.NEGATIVES("256") == 256 and C.HOLDOUT(" 0.5") == 0.5
    for spec, text in ((C.NEGATIVES, "1e3"), (C.NEGATIVES, "100000001"), (C.HOLDOUT, "nan"),
                       (C.LEARNING_RATE, "-inf"), (C.EPOCHS, "")):
        with pytest.raises(argparse.ArgumentTypeError, match=rf"^must be .*, got {text!r}"):
            spec(text)
    assert C.Float(0, 1, lo_open=True, hi_open=True).describe() == "a number in (0, 1)"
    assert C.Int(1).describe() == "an integer >= 1" and C.Float().describe() == "a finite number"


def test_output_not_input(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("x")
    C.check_output_not_input(b, {"the input A": a})              # b does not exist yet
    (tmp_path / "link").symlink_to(a)
    for out in (a, tmp_path / "link", tmp_path / "." / "a"):
        with pytest.raises(ValueError, match=f"it is the input A \\({a}\\)"):
            C.check_output_not_input(out, {"the input A": a, "nothing": None})


def _numeric_options(parser, name=""):
    """(command, option, type) of every numeric option, sub-commands included."""
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for k, sub in a.choices.items():
                yield from _numeric_options(sub, f"{name} {k}".strip())
        elif isinstance(a.type, C._Number):
            yield name, a.option_strings[-1], a.type


def _help_text(parser, command):
    sub = parser
    for word in command.split():
        sub = next(a for a in sub._actions
                   if isinstance(a, argparse._SubParsersAction)).choices[word]
    return " ".join(sub.format_help().split())      # argparse wraps lines


def test_every_numeric_option_of_deeprec_edge_names_its_range_in_help():
    """docs/cli.md: every numeric option is checked against the range --help
    prints; the range comes from the option's type, once (show_ranges)."""
    from deeprec_edge.cli import build_parser
    p = build_parser()
    opts = list(_numeric_options(p))
    assert {("finetune", "--l2"), ("finetune", "--max-events"), ("finetune", "--seed"),
            ("recommend", "-k")} <= {(c, o) for c, o, _ in opts}
    for command, option, typ in opts:
        text = _help_text(p, command)
        line = text[text.index(f" {option} "):]
        # the option's own entry holds its range, and no entry says it twice
        nxt = min([i for i in (line.find(" --", 3), line.find(" -k ", 3)) if i > 0] or [len(line)])
        assert typ.describe() in line[:nxt], (command, option, line[:nxt])
        assert line[:nxt].count(typ.describe()) == 1, (command, option)


def test_show_ranges_places_the_range_before_the_default():
    p = argparse.ArgumentParser()
    p.add_argument("--a", type=C.Int(1, 5), help="apples (default 2)")
    p.add_argument("--b", type=C.Float(0.0), help="bananas")
    p.add_argument("--c", type=C.Float(0.0, 1.0), help="cherries, a number in [0, 1]")
    p.add_argument("--d", type=C.Int(0))
    C.show_ranges(p)
    helps = {a.dest: a.help for a in p._actions}
    assert helps["a"] == "apples, an integer in [1, 5] (default 2)"
    assert helps["b"] == "bananas, a number >= 0"
    assert helps["c"] == "cherries, a number in [0, 1]"        # already said: unchanged
    assert helps["d"] is None                                  # no help line to extend

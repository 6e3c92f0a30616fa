"""Argument checking of the Python binding (deeprec_edge.kernels).

For every function: a wrong dtype, number of dimensions, shape, layout
(non-contiguous, Fortran order, misaligned, non-native byte order), a
read-only output, or a non-array raises ValueError whose message starts with
the argument's name; empty arrays work; out-of-range indices raise IndexError
naming the array and the offending entry.  tests/fuzz.py (run by
tests/test_fuzz.py) calls every function of this table with spoilt arguments
and checks that no combination crashes or raises anything else.

The table SPECS describes each function once (its valid arguments, which
arrays are outputs, which dimensions are free); the generic tests walk it.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest

from deeprec_edge import kernels as K

F32, I32, MASK = "f32", "i32", "mask"
ERRORS = (ValueError, IndexError, RuntimeError, TypeError)


def _subprocess_env(**extra):
    """Environment in which a child interpreter imports the same deeprec_edge
    as this test run (whatever the working directory)."""
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(K.__file__)))
    path = os.environ.get("PYTHONPATH")
    return dict(os.environ, PYTHONPATH=pkg_parent + (os.pathsep + path if path else ""),
                **extra)


# ---------------------------------------------------------------------------
# The table: valid arguments of every function
# ---------------------------------------------------------------------------

def _f(rng, *shape, scale=0.5):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _gru_weights(rng, I, H):
    return dict(W_ih=_f(rng, 3 * H, I), W_hh=_f(rng, 3 * H, H), b_ih=_f(rng, 3 * H),
                b_hh=_f(rng, 3 * H))


def make_sgemm(rng):
    return dict(A=_f(rng, 3, 4), B=_f(rng, 4, 5), C=_f(rng, 3, 5), beta=0.5)


def make_gru_forward(rng, T=3, B=2, I=4, H=5):
    return dict(x=_f(rng, T, B, I), h0=_f(rng, B, H),
                lengths=np.array([T, 1] + [0] * (B - 2), np.int32)[:B],
                keep_cache=True, **_gru_weights(rng, I, H))


def make_gru_backward(rng, T=3, B=2, I=4, H=5):
    fw = make_gru_forward(rng, T, B, I, H)
    y, _, cache = K.gru_forward(**fw)
    return dict(x=fw["x"], W_ih=fw["W_ih"], W_hh=fw["W_hh"], y=y, cache=cache,
                dy=_f(rng, T, B, H), dh_n=_f(rng, B, H), h0=fw["h0"], lengths=fw["lengths"],
                dW_ih=np.zeros((3 * H, I), np.float32), dW_hh=np.zeros((3 * H, H), np.float32),
                db_ih=np.zeros(3 * H, np.float32), db_hh=np.zeros(3 * H, np.float32))


def make_gru_step(rng, I=4, H=5):
    return dict(x=_f(rng, I), h=_f(rng, H), out=np.zeros(H, np.float32),
                **_gru_weights(rng, I, H))


def make_stepper_ctor(rng, I=4, H=5):
    return _gru_weights(rng, I, H)


def stepper_step(stepper, x, h, out=None):
    return stepper.step(x, h, out)


def make_stepper_step(rng, I=4, H=5):
    return dict(stepper=K.GruStepper(**_gru_weights(rng, I, H)), x=_f(rng, I), h=_f(rng, H),
                out=np.zeros(H, np.float32))


def make_head_forward(rng, N=3, H=4, D=5):
    return dict(h=_f(rng, N, H), W_p=_f(rng, D, H), b_p=_f(rng, D), activation="tanh")


def make_head_backward(rng, N=3, H=4, D=5):
    fw = make_head_forward(rng, N, H, D)
    u = K.head_forward(**fw)
    return dict(h=fw["h"], W_p=fw["W_p"], u=u, du=_f(rng, N, D), activation="tanh",
                dW_p=np.zeros((D, H), np.float32), db_p=np.zeros(D, np.float32))


def make_sampled_loss(rng, B=3, S=6, D=4):
    return dict(U=_f(rng, B, D), O_s=_f(rng, S, D),
                target_col=np.array([0, 2, -1] + [1] * (B - 3), np.int32)[:B],
                b_s=_f(rng, S), col_ids=np.arange(10, 10 + S, dtype=np.int32),
                logq=_f(rng, S), dO_s=np.zeros((S, D), np.float32),
                db_s=np.zeros(S, np.float32))


def make_score(rng, N=7, D=4):
    return dict(O=_f(rng, N, D), u=_f(rng, D), bias=_f(rng, N),
                idx=np.array([6, 0, 3], np.int32))


def make_score_topk(rng, N=7, D=4):
    return dict(O=_f(rng, N, D), u=_f(rng, D), k=3, bias=_f(rng, N),
                idx=np.array([6, 0, 3, 5], np.int32),
                exclude=np.array([0, 0, 0, 1, 0, 0, 0], np.uint8))


def make_adagrad_step(rng):
    return dict(param=_f(rng, 3, 4), grad=_f(rng, 3, 4), accum=np.ones((3, 4), np.float32),
                lr=0.1)


def make_adam_step(rng):
    return dict(param=_f(rng, 3, 4), grad=_f(rng, 3, 4), m=np.zeros((3, 4), np.float32),
                v=np.zeros((3, 4), np.float32), step=1, lr=0.01)


def make_sgd_step(rng):
    return dict(param=_f(rng, 3, 4), grad=_f(rng, 3, 4), lr=0.1,
                velocity=np.zeros((3, 4), np.float32), momentum=0.9)


def make_adagrad_rows(rng, n_rows=6, D=4):
    return dict(table=_f(rng, n_rows, D), accum=np.ones((n_rows, D), np.float32),
                rows=np.array([1, 4, 2], np.int32), grad_rows=_f(rng, 3, D), lr=0.1)


def make_adam_rows(rng, n_rows=6, D=4):
    return dict(table=_f(rng, n_rows, D), m=np.zeros((n_rows, D), np.float32),
                v=np.zeros((n_rows, D), np.float32), rows=np.array([1, 4, 2], np.int32),
                grad_rows=_f(rng, 3, D), step=1, lr=0.01)


def make_sgd_rows(rng, n_rows=6, D=4):
    return dict(table=_f(rng, n_rows, D), rows=np.array([1, 4, 2], np.int32),
                grad_rows=_f(rng, 3, D), lr=0.1)


@dataclass
class Spec:
    name: str
    fn: Callable
    make: Callable
    arrays: dict                     # argument -> F32 | I32 | MASK
    outputs: frozenset = frozenset()  # arrays written in place (must be writeable)
    # arrays whose sizes define free dimensions: a bad shape there may be
    # reported on a later argument that no longer matches
    definers: frozenset = frozenset()
    # (argument, axis) whose size may change alone without making the call invalid
    free_axes: frozenset = frozenset()
    any_shape: frozenset = frozenset()  # arrays of any number of dimensions

    def __repr__(self):
        return self.name


_GRU_W = {"W_ih": F32, "W_hh": F32, "b_ih": F32, "b_hh": F32}

SPECS = [
    Spec("sgemm", K.sgemm, make_sgemm, {"A": F32, "B": F32, "C": F32},
         outputs=frozenset({"C"}), definers=frozenset({"A", "B"})),
    Spec("gru_forward", K.gru_forward, make_gru_forward,
         {"x": F32, **_GRU_W, "h0": F32, "lengths": I32},
         definers=frozenset({"x"}), free_axes=frozenset({("x", 0)})),
    Spec("gru_backward", K.gru_backward, make_gru_backward,
         {"x": F32, "W_ih": F32, "W_hh": F32, "y": F32, "cache": F32, "dy": F32,
          "dh_n": F32, "h0": F32, "lengths": I32, "dW_ih": F32, "dW_hh": F32,
          "db_ih": F32, "db_hh": F32},
         outputs=frozenset({"dW_ih", "dW_hh", "db_ih", "db_hh"}), definers=frozenset({"x"})),
    Spec("gru_step", K.gru_step, make_gru_step, {"x": F32, "h": F32, **_GRU_W, "out": F32},
         outputs=frozenset({"out"}), definers=frozenset({"x"})),
    Spec("GruStepper", K.GruStepper, make_stepper_ctor, dict(_GRU_W),
         free_axes=frozenset({("W_ih", 1)})),
    Spec("GruStepper.step", stepper_step, make_stepper_step, {"x": F32, "h": F32, "out": F32},
         outputs=frozenset({"out"})),
    Spec("head_forward", K.head_forward, make_head_forward, {"h": F32, "W_p": F32, "b_p": F32},
         definers=frozenset({"h", "W_p"}), free_axes=frozenset({("h", 0)})),
    Spec("head_backward", K.head_backward, make_head_backward,
         {"h": F32, "W_p": F32, "u": F32, "du": F32, "dW_p": F32, "db_p": F32},
         outputs=frozenset({"dW_p", "db_p"}), definers=frozenset({"h", "W_p"})),
    Spec("sampled_loss", K.sampled_loss, make_sampled_loss,
         {"U": F32, "O_s": F32, "target_col": I32, "b_s": F32, "col_ids": I32, "logq": F32,
          "dO_s": F32, "db_s": F32},
         outputs=frozenset({"dO_s", "db_s"}), definers=frozenset({"U", "O_s"})),
    Spec("score", K.score, make_score, {"O": F32, "u": F32, "bias": F32, "idx": I32},
         definers=frozenset({"O"}), free_axes=frozenset({("idx", 0)})),
    Spec("score_topk", K.score_topk, make_score_topk,
         {"O": F32, "u": F32, "bias": F32, "idx": I32, "exclude": MASK},
         definers=frozenset({"O"}), free_axes=frozenset({("idx", 0)})),
    Spec("adagrad_step", K.adagrad_step, make_adagrad_step,
         {"param": F32, "grad": F32, "accum": F32}, outputs=frozenset({"param", "accum"}),
         definers=frozenset({"param"}), any_shape=frozenset({"param"})),
    Spec("adam_step", K.adam_step, make_adam_step,
         {"param": F32, "grad": F32, "m": F32, "v": F32},
         outputs=frozenset({"param", "m", "v"}), definers=frozenset({"param"}),
         any_shape=frozenset({"param"})),
    Spec("sgd_step", K.sgd_step, make_sgd_step, {"param": F32, "grad": F32, "velocity": F32},
         outputs=frozenset({"param", "velocity"}), definers=frozenset({"param"}),
         any_shape=frozenset({"param"})),
    Spec("adagrad_rows", K.adagrad_rows, make_adagrad_rows,
         {"table": F32, "accum": F32, "rows": I32, "grad_rows": F32},
         outputs=frozenset({"table", "accum"}), definers=frozenset({"table", "rows"})),
    Spec("adam_rows", K.adam_rows, make_adam_rows,
         {"table": F32, "m": F32, "v": F32, "rows": I32, "grad_rows": F32},
         outputs=frozenset({"table", "m", "v"}), definers=frozenset({"table", "rows"})),
    Spec("sgd_rows", K.sgd_rows, make_sgd_rows,
         {"table": F32, "rows": I32, "grad_rows": F32},
         outputs=frozenset({"table"}), definers=frozenset({"table", "rows"}),
         free_axes=frozenset({("table", 0)})),
]

SPEC_ARRAYS = [pytest.param(s, a, id=f"{s.name}-{a}") for s in SPECS for a in s.arrays]
# arrays of 2+ dimensions (a 1-D array is both C- and Fortran-contiguous)
SPEC_ARRAYS_ND = [
    pytest.param(s, a, id=f"{s.name}-{a}") for s in SPECS for a in s.arrays
    if s.make(np.random.default_rng(0))[a].ndim >= 2
]
# arrays with alignment and byte order (not 1-byte masks)
SPEC_ARRAYS_WIDE = [pytest.param(s, a, id=f"{s.name}-{a}") for s in SPECS
                    for a, kind in s.arrays.items() if kind != MASK]
SPEC_OUTPUTS = [pytest.param(s, a, id=f"{s.name}-{a}") for s in SPECS for a in sorted(s.outputs)]
SPEC_AXES = [
    pytest.param(s, a, ax, id=f"{s.name}-{a}-axis{ax}")
    for s in SPECS for a in s.arrays
    for ax in range(s.make(np.random.default_rng(0))[a].ndim)
]


def _valid(spec, seed=0):
    return spec.make(np.random.default_rng(seed))


def _expect_value_error(spec, kwargs, arg):
    """Call; expect ValueError blaming `arg` (or, for a definer, some argument)."""
    with pytest.raises(ValueError) as info:
        spec.fn(**kwargs)
    msg = str(info.value)
    if arg in spec.definers:
        assert any(msg.startswith(f"{a}:") for a in spec.arrays), msg
    else:
        assert msg.startswith(f"{arg}:"), msg
    assert "expected" in msg, msg
    return msg


# ---------------------------------------------------------------------------
# Ways to spoil an array
# ---------------------------------------------------------------------------

_WRONG_DTYPES = {F32: [np.float64, np.float16, np.int32], I32: [np.int64, np.uint32, np.float32],
                 MASK: [np.float32, np.int32, np.int8]}


def _strided(a):
    """Same shape and values, not contiguous (every other element of a buffer)."""
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    view = big[..., ::2]
    view[...] = a
    assert not view.flags.c_contiguous
    return view


def _misaligned(a):
    buf = np.zeros(a.nbytes + 1, np.uint8)[1:]
    m = buf.view(a.dtype).reshape(a.shape)
    m[...] = a
    assert not m.flags.aligned
    return m


def _grow(a, axis):
    pad = [(0, 0)] * a.ndim
    pad[axis] = (0, 1)
    return np.pad(a, pad, mode="edge")


# ---------------------------------------------------------------------------
# Generic tests over the table
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("spec", SPECS, ids=repr)
def test_valid_call(spec):
    spec.fn(**_valid(spec))


@pytest.mark.parametrize("spec", SPECS, ids=repr)
def test_read_only_inputs_accepted(spec):
    kw = _valid(spec)
    for name in spec.arrays:
        if name not in spec.outputs:
            kw[name].flags.writeable = False
    spec.fn(**kw)


@pytest.mark.parametrize("spec,arg", SPEC_ARRAYS)
def test_wrong_dtype(spec, arg):
    for dt in _WRONG_DTYPES[spec.arrays[arg]]:
        kw = _valid(spec)
        kw[arg] = kw[arg].astype(dt)
        msg = _expect_value_error(spec, kw, arg)
        assert np.dtype(dt).name in msg, msg


@pytest.mark.parametrize("spec,arg", SPEC_ARRAYS)
def test_wrong_ndim(spec, arg):
    for spoil in (lambda a: a[None], lambda a: a.reshape(-1)[:1].reshape(()),
                  lambda a: a.reshape(a.shape + (1,))):
        kw = _valid(spec)
        bad = spoil(kw[arg])
        if bad.ndim == kw[arg].ndim:
            continue
        kw[arg] = bad
        if arg in spec.any_shape:
            with pytest.raises(ValueError):
                spec.fn(**kw)
        else:
            _expect_value_error(spec, kw, arg)


@pytest.mark.parametrize("spec,arg,axis", SPEC_AXES)
def test_inconsistent_shape(spec, arg, axis):
    kw = _valid(spec)
    kw[arg] = _grow(kw[arg], axis)
    if (arg, axis) in spec.free_axes:
        spec.fn(**kw)  # this size is defined by this argument alone
    else:
        _expect_value_error(spec, kw, arg)


@pytest.mark.parametrize("spec,arg", SPEC_ARRAYS)
def test_non_contiguous(spec, arg):
    kw = _valid(spec)
    kw[arg] = _strided(kw[arg])
    msg = _expect_value_error(spec, kw, arg)
    assert "non-contiguous" in msg
    assert msg.startswith(f"{arg}:")


@pytest.mark.parametrize("spec,arg", SPEC_ARRAYS_ND)
def test_fortran_order(spec, arg):
    kw = _valid(spec)
    kw[arg] = np.asfortranarray(kw[arg])
    msg = _expect_value_error(spec, kw, arg)
    assert msg.startswith(f"{arg}:") and "Fortran" in msg, msg


@pytest.mark.parametrize("spec,arg", SPEC_ARRAYS_WIDE)
def test_misaligned_or_byteswapped(spec, arg):
    kw = _valid(spec)
    a = kw[arg]
    kw[arg] = _misaligned(a)
    msg = _expect_value_error(spec, kw, arg)
    assert msg.startswith(f"{arg}:") and "misaligned" in msg, msg
    kw[arg] = a.astype(a.dtype.newbyteorder())
    msg = _expect_value_error(spec, kw, arg)
    assert msg.startswith(f"{arg}:"), msg


@pytest.mark.parametrize("spec,arg", SPEC_ARRAYS)
def test_not_an_array(spec, arg):
    for bad in (lambda a: a.tolist(), lambda a: "x", lambda a: memoryview(a)):
        kw = _valid(spec)
        kw[arg] = bad(kw[arg])
        with pytest.raises(ValueError, match=f"^{arg}: expected"):
            spec.fn(**kw)


@pytest.mark.parametrize("spec,arg", SPEC_OUTPUTS)
def test_read_only_output(spec, arg):
    kw = _valid(spec)
    kw[arg].flags.writeable = False
    msg = _expect_value_error(spec, kw, arg)
    assert msg.startswith(f"{arg}: expected writeable") and "read-only" in msg, msg


@pytest.mark.parametrize("spec", SPECS, ids=repr)
def test_failed_check_leaves_outputs_untouched(spec):
    kw = _valid(spec)
    before = {a: kw[a].copy() for a in spec.outputs}
    last = list(spec.arrays)[-1]
    kw[last] = kw[last].astype(np.float64)
    with pytest.raises(ValueError):
        spec.fn(**kw)
    for a in spec.outputs:
        np.testing.assert_array_equal(kw[a], before[a])


# ---------------------------------------------------------------------------
# Outputs that share memory with another argument
# ---------------------------------------------------------------------------

def _in_one_buffer(a, b, overlap):
    """Copies of a and b placed in one byte buffer: b starts inside a's last
    element (overlap) or right after a's end (adjacent, sharing nothing)."""
    na, nb = a.nbytes, b.nbytes
    start = na - 4 if overlap else na
    buf = np.zeros(start + nb + 64, np.uint8)
    va = buf[:na].view(a.dtype).reshape(a.shape)
    vb = buf[start:start + nb].view(b.dtype).reshape(b.shape)
    vb[...] = b
    if not overlap:
        va[...] = a
    assert np.shares_memory(va, vb) == overlap
    return va, vb


SPEC_ALIASES = [
    pytest.param(s, out, other, id=f"{s.name}-{out}-{other}")
    for s in SPECS for out in sorted(s.outputs) for other in s.arrays
    if other != out and _valid(s)[other] is not None and _valid(s)[out].size
    and _valid(s)[other].size
]


@pytest.mark.parametrize("spec,out,other", SPEC_ALIASES)
def test_output_sharing_memory_is_refused(spec, out, other):
    """An output overlapping any other array of the call would make the
    kernel read values it has already written: refused, naming both."""
    kw = _valid(spec)
    before = {a: kw[a].copy() for a in spec.outputs if a not in (out, other)}
    kw[out], kw[other] = _in_one_buffer(kw[out], kw[other], overlap=True)
    with pytest.raises(ValueError, match="shares no memory") as info:
        spec.fn(**kw)
    msg = str(info.value)
    assert {msg.split(":")[0], msg.split(" with ")[1].split(",")[0]} == {out, other}, msg
    for a, v in before.items():
        np.testing.assert_array_equal(kw[a], v)


@pytest.mark.parametrize("spec,out,other", SPEC_ALIASES)
def test_adjacent_arrays_in_one_buffer_are_fine(spec, out, other):
    """Sharing a buffer without sharing bytes is no overlap (np.shares_memory
    is False): the call works and gives the separate-array result."""
    want = _valid(spec, seed=5)
    kw = _valid(spec, seed=5)
    kw[out], kw[other] = _in_one_buffer(kw[out], kw[other], overlap=False)
    spec.fn(**kw)
    spec.fn(**want)
    for a in spec.outputs:
        np.testing.assert_array_equal(kw[a], want[a], err_msg=a)


def test_sgemm_into_its_own_operand_is_refused():
    A = np.arange(9, dtype=np.float32).reshape(3, 3)
    B = np.eye(3, dtype=np.float32)
    for C, name in ((A, "A"), (B, "B"), (A.reshape(-1)[:9].reshape(3, 3), "A")):
        with pytest.raises(ValueError, match=f"^C: .*shares no memory with {name}"):
            K.sgemm(A, B, C=C)
    np.testing.assert_array_equal(A, np.arange(9, dtype=np.float32).reshape(3, 3))


@pytest.mark.parametrize("step", ["gru_step", "GruStepper.step"])
def test_step_in_place_allowed_partial_overlap_refused(step):
    rng = np.random.default_rng(3)
    I = H = 5
    w = _gru_weights(rng, I, H)
    stepper = K.GruStepper(**w)
    run = ((lambda x, h, out: K.gru_step(x, h, out=out, **w)) if step == "gru_step"
           else stepper.step)
    x, h0 = _f(rng, I), _f(rng, H)
    want = run(x, h0.copy(), None)
    h = h0.copy()
    assert run(x, h, h) is h                      # out is h: the documented in-place step
    np.testing.assert_array_equal(h, want)
    buf = np.zeros(2 * H, np.float32)
    buf[:H] = h0
    with pytest.raises(ValueError, match="^out: .*shares no memory with h"):
        run(x, buf[:H], buf[1:H + 1])             # shifted by one element
    with pytest.raises(ValueError, match="^out: .*shares no memory with x"):
        run(x, h0, x)
    if step == "GruStepper.step":
        with pytest.raises(ValueError, match="^out: .*the stepper's weights"):
            run(x, h0, stepper.b_ih[:H])


def test_clip_refuses_overlapping_arrays():
    a = np.ones(8, np.float32)
    with pytest.raises(ValueError, match=r"^grads\[1\]: .*grads\[0\]"):
        K.clip_by_global_norm([a, a], 1.0)
    with pytest.raises(ValueError, match=r"^grads\[2\]: .*grads\[0\]"):
        K.clip_by_global_norm([a[:5], np.ones(3, np.float32), a[4:]], 1.0)
    np.testing.assert_array_equal(a, 1.0)
    K.clip_by_global_norm([a[:4], a[4:]], 1.0)    # one buffer, no shared element
    np.testing.assert_allclose(np.linalg.norm(a), 1.0, rtol=1e-6)
    assert K.global_norm([a, a]) == pytest.approx(np.sqrt(2.0), rel=1e-6)  # read-only: fine


def test_message_format():
    x = np.zeros((3, 4))
    w = _gru_weights(np.random.default_rng(0), 4, 5)
    with pytest.raises(ValueError) as info:
        K.gru_forward(x, **w)
    assert str(info.value) == ("x: expected float32 array of shape (T, B, I) C-contiguous, "
                               "got float64 array of shape (3, 4) C-contiguous")
    x = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(ValueError) as info:
        K.gru_forward(x, **w, h0=np.zeros((3, 6), np.float32))
    assert str(info.value) == ("h0: expected float32 array of shape (B, H) = (3, 5) "
                               "C-contiguous, got float32 array of shape (3, 6) C-contiguous")
    with pytest.raises(ValueError, match=r"^W_hh: .*\(3H, H\).*\(14, 5\)"):
        K.gru_forward(x, w["W_ih"], w["W_hh"][:-1], w["b_ih"], w["b_hh"])


# ---------------------------------------------------------------------------
# Empty arrays
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("M,N,Kd", [(0, 5, 4), (3, 0, 4), (3, 5, 0), (0, 0, 0)])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_sgemm_empty(M, N, Kd, trans_a, trans_b):
    rng = np.random.default_rng(1)
    A = _f(rng, Kd, M) if trans_a else _f(rng, M, Kd)
    B = _f(rng, N, Kd) if trans_b else _f(rng, Kd, N)
    C = K.sgemm(A, B, trans_a, trans_b)
    assert C.shape == (M, N) and C.dtype == np.float32
    np.testing.assert_array_equal(C, np.zeros((M, N), np.float32))
    C0 = _f(rng, M, N)
    C1 = K.sgemm(A, B, trans_a, trans_b, beta=2.0, C=C0.copy())
    np.testing.assert_allclose(C1, 2 * C0)


@pytest.mark.parametrize("T,B,I,H", [(0, 2, 4, 5), (3, 0, 4, 5), (3, 2, 0, 5), (3, 2, 4, 0),
                                     (0, 0, 0, 0)])
def test_gru_empty(T, B, I, H):
    kw = make_gru_forward(np.random.default_rng(2), T, B, I, H)
    kw["lengths"] = np.minimum(kw["lengths"], T).astype(np.int32)
    y, h_n, cache = K.gru_forward(**kw)
    assert y.shape == (T, B, H) and h_n.shape == (B, H) and cache.shape == (T, B, 4 * H)
    if T == 0:
        np.testing.assert_array_equal(h_n, kw["h0"])
    bw = K.gru_backward(kw["x"], kw["W_ih"], kw["W_hh"], y, cache, dy=np.zeros_like(y),
                        dh_n=np.zeros_like(h_n), h0=kw["h0"], lengths=kw["lengths"])
    dx, dh0, dW_ih, dW_hh, db_ih, db_hh = bw
    assert dx.shape == (T, B, I) and dh0.shape == (B, H)
    assert dW_ih.shape == (3 * H, I) and dW_hh.shape == (3 * H, H)
    assert db_ih.shape == (3 * H,) and db_hh.shape == (3 * H,)
    step = make_gru_step(np.random.default_rng(3), I, H)
    assert K.gru_step(**step).shape == (H,)
    stepper = K.GruStepper(step["W_ih"], step["W_hh"], step["b_ih"], step["b_hh"])
    assert (stepper.input_size, stepper.hidden_size) == (I, H)
    assert stepper.step(step["x"], step["h"]).shape == (H,)


@pytest.mark.parametrize("N,H,D", [(0, 4, 5), (3, 0, 5), (3, 4, 0), (0, 0, 0)])
def test_head_empty(N, H, D):
    kw = make_head_backward(np.random.default_rng(4), N, H, D)
    u = K.head_forward(kw["h"], kw["W_p"])
    assert u.shape == (N, D)
    dh, dW_p, db_p = K.head_backward(**kw)
    assert dh.shape == (N, H) and dW_p.shape == (D, H) and db_p.shape == (D,)


@pytest.mark.parametrize("B,S,D", [(0, 6, 4), (3, 6, 0), (0, 0, 0)])
def test_sampled_loss_empty(B, S, D):
    kw = make_sampled_loss(np.random.default_rng(5), B, S, D)
    loss, row_loss, dU, dO_s, db_s = K.sampled_loss(**kw)
    assert row_loss.shape == (B,) and dU.shape == (B, D)
    assert dO_s.shape == (S, D) and db_s.shape == (S,)
    if B == 0:
        assert loss == 0.0


def test_sampled_loss_no_columns():
    rng = np.random.default_rng(6)
    loss, row_loss, *_ = K.sampled_loss(_f(rng, 2, 3), np.zeros((0, 3), np.float32),
                                        np.array([-1, -1], np.int32))
    assert loss == 0.0 and row_loss.shape == (2,)


def test_score_empty():
    rng = np.random.default_rng(7)
    O, u = _f(rng, 0, 4), _f(rng, 4)
    assert K.score(O, u).shape == (0,)
    assert K.score(_f(rng, 5, 4), u, idx=np.zeros(0, np.int32)).shape == (0,)
    assert K.score(_f(rng, 5, 0), np.zeros(0, np.float32)).shape == (5,)
    for kw in (dict(O=O, u=u, k=3), dict(O=_f(rng, 5, 4), u=u, k=0),
               dict(O=_f(rng, 5, 4), u=u, k=3, idx=np.zeros(0, np.int32)),
               dict(O=_f(rng, 5, 4), u=u, k=3, exclude=np.ones(5, bool))):
        top_idx, top_score = K.score_topk(**kw)
        assert top_idx.shape == (0,) and top_score.shape == (0,)
        assert top_idx.dtype == np.int32 and top_score.dtype == np.float32


def test_optimisers_empty():
    e = lambda: np.zeros(0, np.float32)  # noqa: E731
    K.adagrad_step(e(), e(), e(), 0.1)
    K.adam_step(e(), e(), e(), e(), 1, 0.1)
    K.sgd_step(e(), e(), 0.1, velocity=e(), momentum=0.9)
    K.sgd_step(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32), 0.1)
    assert K.global_norm([]) == 0.0
    assert K.global_norm([e(), np.zeros((2, 0), np.float32)]) == 0.0
    assert K.clip_by_global_norm([e()], 1.0) == 0.0
    rows, g = np.zeros(0, np.int32), np.zeros((0, 4), np.float32)
    for n_rows in (0, 6):
        t = np.zeros((n_rows, 4), np.float32)
        K.adagrad_rows(t, t.copy(), rows, g, 0.1)
        K.adam_rows(t, t.copy(), t.copy(), rows, g, 1, 0.1)
        K.sgd_rows(t, rows, g, 0.1)


# ---------------------------------------------------------------------------
# Out-of-range indices -> IndexError naming the array and the entry
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("fn", ["gru_forward", "gru_backward"])
@pytest.mark.parametrize("bad,pos", [([4, 1], 0), ([3, -1], 1), ([2**31 - 1, 0], 0)])
def test_gru_lengths_out_of_range(fn, bad, pos):
    spec = {"gru_forward": SPECS[1], "gru_backward": SPECS[2]}[fn]
    kw = _valid(spec)
    kw["lengths"] = np.array(bad, np.int32)
    with pytest.raises(IndexError, match=rf"^{fn}: lengths\[{pos}\] = {bad[pos]} is outside "
                                         r"\[0, 3\].*DRE_ERR_INDEX"):
        spec.fn(**kw)


@pytest.mark.parametrize("bad,pos", [([0, 6, -1], 1), ([0, 2, -2], 2), ([99, 0, 0], 0)])
def test_target_col_out_of_range(bad, pos):
    kw = make_sampled_loss(np.random.default_rng(8))
    kw["target_col"] = np.array(bad, np.int32)
    before = kw["dO_s"].copy()
    with pytest.raises(IndexError, match=rf"^sampled_loss: target_col\[{pos}\] = {bad[pos]} "
                                         r"is outside \[-1, 5\]"):
        K.sampled_loss(**kw)
    np.testing.assert_array_equal(kw["dO_s"], before)


@pytest.mark.parametrize("fn", ["score", "score_topk"])
@pytest.mark.parametrize("bad,pos", [([0, 7], 1), ([-1, 0], 0), ([2**31 - 1], 0),
                                     ([-2**31], 0)])
def test_idx_out_of_range(fn, bad, pos):
    kw = (make_score if fn == "score" else make_score_topk)(np.random.default_rng(9))
    kw["idx"] = np.array(bad, np.int32)
    with pytest.raises(IndexError, match=rf"^{fn}: idx\[{pos}\] = {bad[pos]} is outside "
                                         r"\[0, 6\]"):
        getattr(K, fn)(**kw)


def test_idx_into_empty_table():
    with pytest.raises(IndexError, match=r"idx\[0\] = 0 .*no valid value"):
        K.score(np.zeros((0, 3), np.float32), np.zeros(3, np.float32),
                idx=np.zeros(1, np.int32))


@pytest.mark.parametrize("fn", ["adagrad_rows", "adam_rows", "sgd_rows"])
@pytest.mark.parametrize("bad,pos", [([1, 6, 2], 1), ([-1, 0, 2], 0), ([0, 1, 2**31 - 1], 2)])
def test_rows_out_of_range(fn, bad, pos):
    spec = next(s for s in SPECS if s.name == fn)
    kw = _valid(spec)
    kw["rows"] = np.array(bad, np.int32)
    before = {a: kw[a].copy() for a in spec.outputs}
    with pytest.raises(IndexError, match=rf"^{fn}: rows\[{pos}\] = {bad[pos]} is outside "
                                         r"\[0, 5\].*DRE_ERR_INDEX"):
        spec.fn(**kw)
    for a in spec.outputs:  # the C core checks every index before touching memory
        np.testing.assert_array_equal(kw[a], before[a])


# ---------------------------------------------------------------------------
# Other argument errors
# ---------------------------------------------------------------------------

def test_scalar_argument_errors():
    rng = np.random.default_rng(10)
    with pytest.raises(ValueError, match="^activation: expected 'tanh' or 'identity'"):
        K.head_forward(_f(rng, 2, 3), _f(rng, 4, 3), activation="relu")
    with pytest.raises(ValueError, match="^activation:"):
        K.head_backward(**{**make_head_backward(rng), "activation": "sigmoid"})
    with pytest.raises(ValueError, match="^loss: expected 'xe' or 'bpr-max'"):
        K.sampled_loss(**{**make_sampled_loss(rng), "loss": "bpr"})
    with pytest.raises(ValueError, match="^dO_s, db_s:"):
        K.sampled_loss(**make_sampled_loss(rng), need_grads=False)
    for k in (-1, 2.5, "3", None):
        with pytest.raises(ValueError, match="^k: expected a non-negative integer"):
            K.score_topk(_f(rng, 5, 3), _f(rng, 3), k)
    top_idx, _ = K.score_topk(_f(rng, 5, 3), _f(rng, 3), np.int64(10**12))
    assert top_idx.shape == (5,)
    with pytest.raises(ValueError, match="^velocity: .*required when momentum != 0"):
        K.sgd_step(_f(rng, 3), _f(rng, 3), 0.1, momentum=0.9)
    for max_norm in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="^max_norm:"):
            K.clip_by_global_norm([_f(rng, 3)], max_norm)
    # Adam's step number: an integer >= 1 (inf gave OverflowError, found by tests/fuzz.py)
    for step in (float("inf"), 2.0, 0, -3, 2 ** 63, None):
        with pytest.raises(ValueError, match="^step: expected an integer >= 1"):
            K.adam_step(**{**make_adam_step(rng), "step": step})
        with pytest.raises(ValueError, match="^step: expected an integer >= 1"):
            K.adam_rows(**{**make_adam_rows(rng), "step": step})
    K.adam_step(**{**make_adam_step(rng), "step": np.int64(7)})


@pytest.mark.parametrize("fn", ["global_norm", "clip_by_global_norm"])
def test_grad_list_errors(fn):
    rng = np.random.default_rng(11)
    call = (lambda g: K.global_norm(g)) if fn == "global_norm" else \
        (lambda g: K.clip_by_global_norm(g, 1.0))
    good = _f(rng, 3, 4)
    for bad in (good.astype(np.float64), good.T, _strided(good), good.tolist(), None):
        with pytest.raises(ValueError, match=r"^grads\[1\]: expected"):
            call([_f(rng, 2), bad])
    with pytest.raises(ValueError, match=r"^grads: expected a sequence"):
        call(3)
    assert call(x for x in [good.copy()]) > 0  # any iterable
    if fn == "clip_by_global_norm":
        ro = good.copy()
        ro.flags.writeable = False
        with pytest.raises(ValueError, match=r"^grads\[0\]: expected writeable"):
            call([ro])
    else:
        ro = good.copy()
        ro.flags.writeable = False
        assert call([ro]) == pytest.approx(float(np.sqrt((good.astype(np.float64) ** 2).sum())),
                                           rel=1e-6)


def test_bool_and_uint8_masks_agree():
    kw = make_score_topk(np.random.default_rng(12))
    a = K.score_topk(**kw)
    b = K.score_topk(**{**kw, "exclude": kw["exclude"].astype(bool)})
    np.testing.assert_array_equal(a[0], b[0])
    assert 3 not in a[0]


def test_status_mapping_names_the_function():
    unsupported = [p for p in ("scalar", "avx2", "avx512", "neon")
                   if p not in K.supported_paths()]
    assert unsupported, "no CPU supports both NEON and AVX2"
    with pytest.raises(RuntimeError, match=r"^set_path: .*DRE_ERR_UNSUPPORTED"):
        K.set_path(unsupported[0])


# ---------------------------------------------------------------------------
# Paths
# ---------------------------------------------------------------------------

def test_paths():
    supported = K.supported_paths()
    assert "scalar" in supported
    assert K.active_path() in supported
    assert all(isinstance(p, str) for p in supported)


def test_set_path_unknown_name():
    before = K.active_path()
    for name in ("sse", "", "SCALAR", "unknown"):
        with pytest.raises(ValueError, match="^set_path: name: unknown kernel path"):
            K.set_path(name)
    with pytest.raises(TypeError):
        K.set_path(None)
    assert K.active_path() == before


def test_forced_path_restores():
    before = K.active_path()
    for name in K.supported_paths():
        with K.forced_path(name) as got:
            assert got == name and K.active_path() == name
        assert K.active_path() == before
    with pytest.raises(KeyError):
        with K.forced_path("scalar"):
            raise KeyError("boom")
    assert K.active_path() == before
    with pytest.raises(ValueError):
        with K.forced_path("no-such-path"):
            pass  # pragma: no cover
    assert K.active_path() == before


@pytest.mark.parametrize("value,expect_scalar", [("1", True), ("yes", True), ("0", False),
                                                 ("", False)])
def test_force_scalar_env(value, expect_scalar, tmp_path):
    env = _subprocess_env(DEEPREC_EDGE_FORCE_SCALAR=value)
    code = ("import deeprec_edge.kernels as K; "
            "print(K.active_path(), ','.join(K.supported_paths()))")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path,
                         capture_output=True, text=True, check=True).stdout.split()
    active, supported = out[0], out[1].split(",")
    assert active in supported
    if expect_scalar:
        assert active == "scalar"
    elif len(supported) > 1:
        assert active != "scalar"  # the best path the CPU supports


# ---------------------------------------------------------------------------
# GruStepper specifics
# ---------------------------------------------------------------------------

def test_stepper_matches_gru_step_and_holds_references():
    rng = np.random.default_rng(13)
    w = _gru_weights(rng, 4, 5)
    s = K.GruStepper(**w)
    assert s.W_ih is w["W_ih"] and s.hidden_size == 5 and s.input_size == 4
    assert "GruStepper(input_size=4, hidden_size=5, weight_dtype=float32)" == repr(s)
    x, h = _f(rng, 4), _f(rng, 5)
    np.testing.assert_array_equal(s.step(x, h), K.gru_step(x, h, **w))
    w["b_hh"][:] += 1.0  # in-place weight updates are seen by the stepper
    np.testing.assert_array_equal(s.step(x, h), K.gru_step(x, h, **w))
    h2 = h.copy()
    assert s.step(x, h2, out=h2) is h2
    np.testing.assert_array_equal(h2, K.gru_step(x, h, **w))
    with pytest.raises(AttributeError):
        s.W_ih = w["W_ih"]


def test_stepper_shared_between_threads():
    rng = np.random.default_rng(14)
    w = _gru_weights(rng, 16, 32)
    s = K.GruStepper(**w)
    xs = _f(rng, 8, 200, 16)
    expected = []
    for seq in xs:
        h = np.zeros(32, np.float32)
        for x in seq:
            h = K.gru_step(x, h, **w)
        expected.append(h)
    results = [None] * len(xs)

    def run(i):
        h = np.zeros(32, np.float32)
        for x in xs[i]:
            s.step(x, h, out=h)
        results[i] = h

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got, want)

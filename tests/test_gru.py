"""GRU layer: forward, backward through time, single step.

Oracles, in order of trust:
1. ``reference.gru_forward/gru_backward`` (float64), proven below against
   central finite differences and against torch.nn.GRU in float64;
2. torch.nn.GRU (float64, weights copied) with pack_padded_sequence, and
   onnxruntime's GRU operator (linear_before_reset=1, gates reordered z, r, h).
The float32 kernels are compared with those, never with their own output.
"""
import numpy as np
import pytest

import reference as ref
from conftest import (FD_EPS_F32, TOL_F32_FD, TOL_F32_GRAD, TOL_F32_GRU, TOL_F64, TOL_FD64,
                      TOL_ORT, assert_close, f32, gru_weights, i32, randn)

# (T, B, I, H): every H and I of conftest.EDGE_SIZES appears, plus H = 128, 256.
FWD_CASES = [
    (1, 1, 1, 1), (3, 2, 3, 4), (5, 3, 5, 7), (4, 4, 8, 8), (3, 5, 9, 9),
    (6, 3, 15, 16), (4, 2, 17, 17), (3, 3, 31, 32), (2, 4, 33, 31), (3, 2, 16, 33),
    (2, 3, 64, 63), (2, 2, 65, 64), (3, 2, 7, 65), (2, 3, 32, 128), (2, 2, 64, 256),
    (40, 4, 16, 32),   # a long recurrence: error must not grow with T
]
BWD_CASES = [
    (1, 1, 1, 1), (3, 2, 3, 4), (5, 3, 5, 7), (4, 4, 8, 8), (3, 5, 9, 9),
    (4, 3, 15, 16), (3, 2, 17, 17), (3, 3, 31, 33), (2, 3, 63, 64), (3, 2, 7, 65),
    (2, 2, 32, 128), (2, 2, 16, 256),
    (40, 4, 16, 32),
]


def _lengths(rng, T, B, sort=False):
    """Random lengths in [0, T] with at least one full-length sequence."""
    lengths = rng.integers(0, T + 1, size=B)
    lengths[rng.integers(B)] = T
    if sort:
        lengths = np.sort(lengths)[::-1]
    return i32(lengths)


def _problem(rng, T, B, I, H, with_h0=True):
    x = randn(rng, T, B, I)
    W_ih, W_hh, b_ih, b_hh = gru_weights(rng, I, H)
    h0 = randn(rng, B, H, scale=0.5) if with_h0 else None
    return x, W_ih, W_hh, b_ih, b_hh, h0


def _L(y, h_n, dy, dh_n, lengths=None):
    """The scalar whose gradients gru_backward returns (float64)."""
    y = np.asarray(y, np.float64)
    if lengths is not None:
        T = y.shape[0]
        y = y * (np.arange(T)[:, None] < np.asarray(lengths)[None, :])[..., None]
    return float(np.sum(y * dy) + np.sum(np.asarray(h_n, np.float64) * dh_n))


# --------------------------------------------------------------------------
# torch / onnxruntime oracles
# --------------------------------------------------------------------------

def torch_gru(torch, x, W_ih, W_hh, b_ih, b_hh, h0, lengths, dy=None, dh_n=None):
    """nn.GRU in float64 with the given weights; variable lengths via packing.

    Returns (y, h_n, grads or None) as float64 numpy arrays."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    T, B, I = x.shape
    H = W_hh.shape[1]
    gru = torch.nn.GRU(I, H).double()
    with torch.no_grad():
        gru.weight_ih_l0.copy_(torch.from_numpy(np.asarray(W_ih, np.float64)))
        gru.weight_hh_l0.copy_(torch.from_numpy(np.asarray(W_hh, np.float64)))
        gru.bias_ih_l0.copy_(torch.from_numpy(np.asarray(b_ih, np.float64)))
        gru.bias_hh_l0.copy_(torch.from_numpy(np.asarray(b_hh, np.float64)))
    xt = torch.tensor(np.asarray(x, np.float64), requires_grad=True)
    h0_ = np.zeros((B, H)) if h0 is None else np.asarray(h0, np.float64)
    h0t = torch.tensor(h0_, requires_grad=True)
    if lengths is None:
        yt, hn = gru(xt, h0t[None])
    else:
        packed = pack_padded_sequence(xt, torch.tensor(np.asarray(lengths, np.int64)),
                                      enforce_sorted=False)
        out, hn = gru(packed, h0t[None])
        yt, _ = pad_packed_sequence(out, total_length=T)
    hn = hn[0]
    grads = None
    if dy is not None or dh_n is not None:
        L = 0.0
        if dy is not None:
            L = L + (yt * torch.from_numpy(np.asarray(dy, np.float64))).sum()
        if dh_n is not None:
            L = L + (hn * torch.from_numpy(np.asarray(dh_n, np.float64))).sum()
        L.backward()
        grads = {"dx": xt.grad.numpy(), "dh0": h0t.grad.numpy(),
                 "dW_ih": gru.weight_ih_l0.grad.numpy(), "dW_hh": gru.weight_hh_l0.grad.numpy(),
                 "db_ih": gru.bias_ih_l0.grad.numpy(), "db_hh": gru.bias_hh_l0.grad.numpy()}
    return yt.detach().numpy(), hn.detach().numpy(), grads


def onnx_gru(x, W_ih, W_hh, b_ih, b_hh, h0, lengths):
    """onnxruntime's GRU (linear_before_reset=1) on float32 inputs -> (Y, Y_h)."""
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    T, B, I = x.shape
    H = W_hh.shape[1]

    def zrh(a):  # ours r, z, n -> ONNX z, r, h
        r, z, n = np.split(np.asarray(a, np.float32), 3, axis=0)
        return np.concatenate([z, r, n], axis=0)

    W = zrh(W_ih)[None]
    R = zrh(W_hh)[None]
    Bias = np.concatenate([zrh(b_ih), zrh(b_hh)])[None]
    node = helper.make_node("GRU", ["X", "W", "R", "B", "sequence_lens", "initial_h"],
                            ["Y", "Y_h"], hidden_size=H, linear_before_reset=1)
    graph = helper.make_graph(
        [node], "gru",
        inputs=[helper.make_tensor_value_info("X", TensorProto.FLOAT, [T, B, I]),
                helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, [B]),
                helper.make_tensor_value_info("initial_h", TensorProto.FLOAT, [1, B, H])],
        outputs=[helper.make_tensor_value_info("Y", TensorProto.FLOAT, [T, 1, B, H]),
                 helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, [1, B, H])],
        initializer=[numpy_helper.from_array(f32(W), "W"), numpy_helper.from_array(f32(R), "R"),
                     numpy_helper.from_array(f32(Bias), "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
    lens = np.full(B, T, np.int32) if lengths is None else i32(lengths)
    h0_ = np.zeros((1, B, H), np.float32) if h0 is None else f32(h0)[None]
    Y, Y_h = sess.run(None, {"X": f32(x), "sequence_lens": lens, "initial_h": h0_})
    return Y[:, 0], Y_h[0]


# --------------------------------------------------------------------------
# The reference itself
# --------------------------------------------------------------------------

@pytest.mark.parametrize("lengths", [None, [4, 2, 0]])
def test_reference_gradients_match_finite_differences(rng, lengths):
    T, B, I, H = 4, 3, 3, 4
    x, W_ih, W_hh, b_ih, b_hh, h0 = [np.float64(a) for a in _problem(rng, T, B, I, H)]
    dy, dh_n = rng.standard_normal((T, B, H)), rng.standard_normal((B, H))
    args = dict(x=x, W_ih=W_ih, W_hh=W_hh, b_ih=b_ih, b_hh=b_hh, h0=h0)
    g = ref.gru_backward(lengths=lengths, dy=dy, dh_n=dh_n, **args)
    for name, grad_name in [("x", "dx"), ("h0", "dh0"), ("W_ih", "dW_ih"), ("W_hh", "dW_hh"),
                            ("b_ih", "db_ih"), ("b_hh", "db_hh")]:
        def f(v, name=name):
            a = dict(args, **{name: v})
            y, h_n, _ = ref.gru_forward(lengths=lengths, **a)
            return _L(y, h_n, dy, dh_n)
        assert_close(g[grad_name], ref.numerical_grad(f, args[name]), TOL_FD64,
                     f"reference {grad_name} vs finite differences")


def test_reference_gradients_directional_large(rng):
    """Directional central differences at a size with padding and H > 32."""
    T, B, I, H = 5, 4, 17, 33
    lengths = [5, 0, 3, 1]
    p = [np.float64(a) for a in _problem(rng, T, B, I, H)]
    dy, dh_n = rng.standard_normal((T, B, H)), rng.standard_normal((B, H))
    g = ref.gru_backward(*p[:5], h0=p[5], lengths=lengths, dy=dy, dh_n=dh_n)

    def f(x, W_ih, W_hh, b_ih, b_hh, h0):
        y, h_n, _ = ref.gru_forward(x, W_ih, W_hh, b_ih, b_hh, h0, lengths)
        return _L(y, h_n, dy, dh_n)
    vs = [rng.standard_normal(a.shape) for a in p]
    fd = ref.directional_derivative(f, p, vs)
    an = sum(np.sum(g[k] * v) for k, v in zip(["dx", "dW_ih", "dW_hh", "db_ih", "db_hh", "dh0"],
                                             vs))
    assert_close(an, fd, TOL_FD64, "reference directional derivative")


@pytest.mark.parametrize("lengths", [None, [3, 1, 4, 2]])
def test_reference_matches_torch_float64(rng, torch, lengths):
    T, B, I, H = 4, 4, 5, 6
    p = _problem(rng, T, B, I, H)
    dy, dh_n = rng.standard_normal((T, B, H)), rng.standard_normal((B, H))
    y_t, hn_t, g_t = torch_gru(torch, *p, lengths, dy, dh_n)
    y_r, hn_r, _ = ref.gru_forward(*p, lengths=lengths)
    assert_close(y_r, y_t, TOL_F64, "reference y vs torch")
    assert_close(hn_r, hn_t, TOL_F64, "reference h_n vs torch")
    g_r = ref.gru_backward(*p, lengths=lengths, dy=dy, dh_n=dh_n)
    for k in g_t:
        assert_close(g_r[k], g_t[k], TOL_F64, f"reference {k} vs torch autograd")


# --------------------------------------------------------------------------
# Forward
# --------------------------------------------------------------------------

@pytest.mark.parametrize("T,B,I,H", FWD_CASES)
def test_forward_matches_reference(path, rng, K, T, B, I, H):
    x, W_ih, W_hh, b_ih, b_hh, h0 = _problem(rng, T, B, I, H)
    lengths = _lengths(rng, T, B)
    y, h_n, cache = K.gru_forward(x, W_ih, W_hh, b_ih, b_hh, h0=h0, lengths=lengths,
                                  keep_cache=True)
    y_r, hn_r, _ = ref.gru_forward(x, W_ih, W_hh, b_ih, b_hh, h0, lengths)
    assert y.dtype == np.float32 and h_n.dtype == np.float32
    assert cache.shape == (T, B, 4 * H) and cache.dtype == np.float32
    assert_close(y, y_r, TOL_F32_GRU, "y")
    assert_close(h_n, hn_r, TOL_F32_GRU, "h_n")
    pad = np.arange(T)[:, None] >= lengths[None, :]
    assert np.all(y[pad] == 0.0), "y must be exactly zero past each length"


@pytest.mark.parametrize("T,B,I,H", [(4, 3, 5, 7), (3, 2, 16, 33)])
def test_forward_defaults_h0_none_lengths_none(path, rng, K, T, B, I, H):
    x, W_ih, W_hh, b_ih, b_hh, _ = _problem(rng, T, B, I, H, with_h0=False)
    y, h_n, cache = K.gru_forward(x, W_ih, W_hh, b_ih, b_hh)
    assert cache is None
    y_r, hn_r, _ = ref.gru_forward(x, W_ih, W_hh, b_ih, b_hh)
    assert_close(y, y_r, TOL_F32_GRU, "y")
    assert_close(h_n, hn_r, TOL_F32_GRU, "h_n")
    # lengths NULL means every sequence has T steps; h0 NULL means zeros
    y2, h2, _ = K.gru_forward(x, W_ih, W_hh, b_ih, b_hh, h0=np.zeros((B, H), np.float32),
                              lengths=np.full(B, T, np.int32))
    assert_close(y2, y_r, TOL_F32_GRU, "y with explicit full lengths and zero h0")
    assert_close(h2, hn_r, TOL_F32_GRU, "h_n with explicit full lengths and zero h0")
    assert_close(y2[-1], h2, TOL_F32_GRU, "last output equals h_n")


@pytest.mark.parametrize("order", ["sorted", "unsorted", "ascending"])
def test_forward_length_orders(path, rng, K, order):
    """Non-increasing lengths take a prefix shortcut; other orders must agree."""
    T, B, I, H = 7, 9, 8, 17
    x, W_ih, W_hh, b_ih, b_hh, h0 = _problem(rng, T, B, I, H)
    lengths = np.array([7, 7, 6, 4, 4, 2, 1, 0, 0])
    if order == "unsorted":
        lengths = rng.permutation(lengths)
    elif order == "ascending":
        lengths = lengths[::-1]
    lengths = i32(lengths)
    y, h_n, _ = K.gru_forward(x, W_ih, W_hh, b_ih, b_hh, h0=h0, lengths=lengths)
    y_r, hn_r, _ = ref.gru_forward(x, W_ih, W_hh, b_ih, b_hh, h0, lengths)
    assert_close(y, y_r, TOL_F32_GRU, "y")
    assert_close(h_n, hn_r, TOL_F32_GRU, "h_n")


def test_forward_zero_lengths_keep_h0(path, rng, K):
    T, B, I, H = 3, 4, 5, 9
    x, W_ih, W_hh, b_ih, b_hh, h0 = _problem(rng, T, B, I, H)
    y, h_n, _ = K.gru_forward(x, W_ih, W_hh, b_ih, b_hh, h0=h0,
                              lengths=np.zeros(B, np.int32))
    assert np.all(y == 0.0)
    np.testing.assert_array_equal(h_n, h0)


def test_forward_T_zero(path, rng, K):
    B, I, H = 3, 4, 5
    x = np.zeros((0, B, I), np.float32)
    W_ih, W_hh, b_ih, b_hh = gru_weights(rng, I, H)
    h0 = randn(rng, B, H)
    y, h_n, cache = K.gru_forward(x, W_ih, W_hh, b_ih, b_hh, h0=h0, keep_cache=True)
    assert y.shape == (0, B, H)
    np.testing.assert_array_equal(h_n, h0)


def test_empty_batch(path, rng, K):
    T, I, H = 3, 4, 5
    x = np.zeros((T, 0, I), np.float32)
    W_ih, W_hh, b_ih, b_hh = gru_weights(rng, I, H)
    y, h_n, cache = K.gru_forward(x, W_ih, W_hh, b_ih, b_hh, keep_cache=True)
    assert y.shape == (T, 0, H) and h_n.shape == (0, H)
    dx, dh0, dW_ih, dW_hh, db_ih, db_hh = K.gru_backward(x, W_ih, W_hh, y, cache)
    assert dx.shape == (T, 0, I) and np.all(dW_ih == 0) and np.all(db_hh == 0)


@pytest.mark.parametrize("T,B,I,H,lengths", [
    (5, 4, 3, 8, [5, 2, 4, 1]), (4, 3, 17, 33, None), (3, 2, 64, 65, [1, 3])])
def test_forward_matches_torch(path, rng, K, torch, T, B, I, H, lengths):
    x, W_ih, W_hh, b_ih, b_hh, h0 = _problem(rng, T, B, I, H)
    lengths = None if lengths is None else i32(lengths)
    y_t, hn_t, _ = torch_gru(torch, x, W_ih, W_hh, b_ih, b_hh, h0, lengths)
    y, h_n, _ = K.gru_forward(x, W_ih, W_hh, b_ih, b_hh, h0=h0, lengths=lengths)
    assert_close(y, y_t, TOL_F32_GRU, "y vs torch.nn.GRU")
    assert_close(h_n, hn_t, TOL_F32_GRU, "h_n vs torch.nn.GRU")


@pytest.mark.parametrize("T,B,I,H,lengths", [
    (5, 4, 3, 8, [5, 2, 4, 1]), (4, 3, 17, 33, None), (3, 5, 33, 64, [3, 1, 2, 3, 2])])
def test_forward_matches_onnxruntime(path, rng, K, T, B, I, H, lengths):
    x, W_ih, W_hh, b_ih, b_hh, h0 = _problem(rng, T, B, I, H)
    lengths = None if lengths is None else i32(lengths)
    Y, Y_h = onnx_gru(x, W_ih, W_hh, b_ih, b_hh, h0, lengths)
    y_r, hn_r, _ = ref.gru_forward(x, W_ih, W_hh, b_ih, b_hh, h0, lengths)
    # the oracle agrees with the float64 reference (proves the gate reordering)
    assert_close(Y, y_r, TOL_F32_GRU, "onnxruntime Y vs reference")
    assert_close(Y_h, hn_r, TOL_F32_GRU, "onnxruntime Y_h vs reference")
    y, h_n, _ = K.gru_forward(x, W_ih, W_hh, b_ih, b_hh, h0=h0, lengths=lengths)
    assert_close(y, Y, TOL_ORT, "y vs onnxruntime Y")
    assert_close(h_n, Y_h, TOL_ORT, "h_n vs onnxruntime Y_h")


# --------------------------------------------------------------------------
# Backward
# --------------------------------------------------------------------------

def _run_backward(K, p, lengths, dy, dh_n, acc=None, need_dx=True):
    x, W_ih, W_hh, b_ih, b_hh, h0 = p
    y, h_n, cache = K.gru_forward(x, W_ih, W_hh, b_ih, b_hh, h0=h0, lengths=lengths,
                                  keep_cache=True)
    acc = acc or {}
    return K.gru_backward(x, W_ih, W_hh, y, cache, dy=dy, dh_n=dh_n, h0=h0, lengths=lengths,
                          dW_ih=acc.get("dW_ih"), dW_hh=acc.get("dW_hh"),
                          db_ih=acc.get("db_ih"), db_hh=acc.get("db_hh"), need_dx=need_dx)


GRAD_NAMES = ("dx", "dh0", "dW_ih", "dW_hh", "db_ih", "db_hh")


@pytest.mark.parametrize("T,B,I,H", BWD_CASES)
def test_backward_matches_reference(path, rng, K, T, B, I, H):
    p = _problem(rng, T, B, I, H)
    lengths = _lengths(rng, T, B)
    dy, dh_n = randn(rng, T, B, H), randn(rng, B, H)
    got = dict(zip(GRAD_NAMES, _run_backward(K, p, lengths, dy, dh_n)))
    want = ref.gru_backward(*p, lengths=lengths, dy=dy, dh_n=dh_n)
    for k in GRAD_NAMES:
        assert got[k].dtype == np.float32
        assert_close(got[k], want[k], TOL_F32_GRAD, k)


@pytest.mark.parametrize("lengths", [None, [5, 3, 1, 2]])  # torch cannot pack length 0
def test_backward_matches_torch_autograd(path, rng, K, torch, lengths):
    T, B, I, H = 5, 4, 9, 17
    p = _problem(rng, T, B, I, H)
    lengths_t = None if lengths is None else i32(lengths)
    dy, dh_n = randn(rng, T, B, H), randn(rng, B, H)
    _, _, g_t = torch_gru(torch, *p, lengths_t, dy, dh_n)
    got = dict(zip(GRAD_NAMES, _run_backward(K, p, lengths_t, dy, dh_n)))
    for k in GRAD_NAMES:
        assert_close(got[k], g_t[k], TOL_F32_GRAD, f"{k} vs torch autograd")


def test_backward_accumulates_into_given_arrays(path, rng, K):
    T, B, I, H = 4, 3, 7, 9
    p = _problem(rng, T, B, I, H)
    lengths = i32([4, 0, 2])
    dy, dh_n = randn(rng, T, B, H), randn(rng, B, H)
    init = {"dW_ih": randn(rng, 3 * H, I), "dW_hh": randn(rng, 3 * H, H),
            "db_ih": randn(rng, 3 * H), "db_hh": randn(rng, 3 * H)}
    acc = {k: v.copy() for k, v in init.items()}
    out = dict(zip(GRAD_NAMES, _run_backward(K, p, lengths, dy, dh_n, acc=acc)))
    want = ref.gru_backward(*p, lengths=lengths, dy=dy, dh_n=dh_n)
    for k, a in acc.items():
        assert out[k] is a, f"{k}: the given accumulator must be returned, updated in place"
        assert_close(a, init[k] + want[k], TOL_F32_GRAD, f"{k} accumulated")
    # a second window adds again: twice the gradient on top of the initial values
    _run_backward(K, p, lengths, dy, dh_n, acc=acc)
    for k, a in acc.items():
        assert_close(a, init[k] + 2 * want[k], TOL_F32_GRAD, f"{k} accumulated twice")


def test_backward_defaults_none(path, rng, K):
    """dy None, dh_n None: zeros; need_dx False: dx is None; lengths None: T."""
    T, B, I, H = 3, 2, 5, 8
    p = _problem(rng, T, B, I, H, with_h0=False)
    dh_n = randn(rng, B, H)
    dx, dh0, dW_ih, dW_hh, db_ih, db_hh = _run_backward(K, p, None, None, dh_n, need_dx=False)
    assert dx is None
    want = ref.gru_backward(*p, dh_n=dh_n)
    for k, v in zip(GRAD_NAMES[1:], (dh0, dW_ih, dW_hh, db_ih, db_hh)):
        assert_close(v, want[k], TOL_F32_GRAD, f"{k} (dy None)")
    dy = randn(rng, T, B, H)
    got = dict(zip(GRAD_NAMES, _run_backward(K, p, None, dy, None)))
    want = ref.gru_backward(*p, dy=dy)
    for k in GRAD_NAMES:
        assert_close(got[k], want[k], TOL_F32_GRAD, f"{k} (dh_n None)")
    got = dict(zip(GRAD_NAMES, _run_backward(K, p, None, None, None)))
    for k in GRAD_NAMES:
        assert np.all(got[k] == 0.0), f"{k} must be zero with no upstream gradient"


def test_backward_ignores_dy_at_padded_steps(path, rng, K):
    T, B, I, H = 5, 3, 4, 9
    p = _problem(rng, T, B, I, H)
    lengths = i32([5, 2, 0])
    dy, dh_n = randn(rng, T, B, H), randn(rng, B, H)
    pad = np.arange(T)[:, None] >= lengths[None, :]
    dy_dirty = dy.copy()
    dy_dirty[pad] = np.nan   # never read, per the header
    got = dict(zip(GRAD_NAMES, _run_backward(K, p, lengths, dy_dirty, dh_n)))
    want = ref.gru_backward(*p, lengths=lengths, dy=dy, dh_n=dh_n)
    for k in GRAD_NAMES:
        assert_close(got[k], want[k], TOL_F32_GRAD, f"{k} with NaN dy at padded steps")
    assert np.all(got["dx"][pad] == 0.0), "dx must be zero at padded steps"


def test_backward_all_zero_lengths(path, rng, K):
    T, B, I, H = 3, 4, 5, 6
    p = _problem(rng, T, B, I, H)
    lengths = np.zeros(B, np.int32)
    dy, dh_n = randn(rng, T, B, H), randn(rng, B, H)
    dx, dh0, dW_ih, dW_hh, db_ih, db_hh = _run_backward(K, p, lengths, dy, dh_n)
    np.testing.assert_array_equal(dh0, dh_n)
    for name, g in [("dx", dx), ("dW_ih", dW_ih), ("dW_hh", dW_hh), ("db_ih", db_ih),
                    ("db_hh", db_hh)]:
        assert np.all(g == 0.0), f"{name} must be zero when no step runs"


@pytest.mark.parametrize("T,B,I,H", [(4, 3, 5, 7), (3, 2, 33, 64)])
def test_backward_spot_check_finite_differences_of_kernel(path, rng, K, T, B, I, H):
    """The kernel's gradients vs central differences of the kernel's own
    float32 forward, along a random direction in every input at once."""
    x, W_ih, W_hh, b_ih, b_hh, h0 = p = _problem(rng, T, B, I, H)
    lengths = _lengths(rng, T, B)
    dy, dh_n = randn(rng, T, B, H), randn(rng, B, H)
    g = dict(zip(GRAD_NAMES, _run_backward(K, p, lengths, dy, dh_n)))
    names = ["dx", "dW_ih", "dW_hh", "db_ih", "db_hh", "dh0"]
    vs = [rng.standard_normal(a.shape) for a in (x, W_ih, W_hh, b_ih, b_hh, h0)]

    def L(sign):
        q = [f32(a + sign * FD_EPS_F32 * v) for a, v in zip((x, W_ih, W_hh, b_ih, b_hh, h0), vs)]
        y, h_n, _ = K.gru_forward(*q[:5], h0=q[5], lengths=lengths)
        return _L(y, h_n, dy, dh_n, lengths), q
    Lp, qp = L(+1)
    Lm, qm = L(-1)
    # use the float32-rounded step actually taken
    an = sum(float(np.sum(np.float64(g[k]) * (np.float64(a) - np.float64(b))))
             for k, a, b in zip(names, qp, qm))
    assert_close(Lp - Lm, an, TOL_F32_FD, "kernel gradient vs kernel finite differences")


def test_backward_bad_length_raises_and_leaves_accumulators(path, rng, K):
    T, B, I, H = 3, 2, 4, 5
    x, W_ih, W_hh, b_ih, b_hh, h0 = _problem(rng, T, B, I, H)
    y, h_n, cache = K.gru_forward(x, W_ih, W_hh, b_ih, b_hh, h0=h0, keep_cache=True)
    acc = randn(rng, 3 * H, I)
    before = acc.copy()
    with pytest.raises(IndexError):
        K.gru_backward(x, W_ih, W_hh, y, cache, dy=randn(rng, T, B, H), h0=h0,
                       lengths=i32([T + 1, 1]), dW_ih=acc)
    np.testing.assert_array_equal(acc, before)
    with pytest.raises(IndexError):
        K.gru_forward(x, W_ih, W_hh, b_ih, b_hh, lengths=i32([-1, 1]))


# --------------------------------------------------------------------------
# Single step (streaming)
# --------------------------------------------------------------------------

@pytest.mark.parametrize("I,H", [(1, 1), (5, 7), (16, 17), (33, 64), (64, 65), (32, 256)])
def test_step_matches_reference(path, rng, K, I, H):
    W_ih, W_hh, b_ih, b_hh = gru_weights(rng, I, H)
    x, h = randn(rng, I), randn(rng, H, scale=0.5)
    want = ref.gru_step(x, h, W_ih, W_hh, b_ih, b_hh)
    got = K.gru_step(x, h, W_ih, W_hh, b_ih, b_hh)
    assert_close(got, want, TOL_F32_GRU, "gru_step")
    # in place: out may be h
    h2 = h.copy()
    res = K.gru_step(x, h2, W_ih, W_hh, b_ih, b_hh, out=h2)
    assert_close(h2, want, TOL_F32_GRU, "gru_step in place")
    assert res is None or res is h2
    st = K.GruStepper(W_ih, W_hh, b_ih, b_hh)
    assert_close(st.step(x, h), want, TOL_F32_GRU, "GruStepper.step")


def test_stepper_sequence_equals_forward(path, rng, K):
    T, I, H = 6, 9, 17
    x, W_ih, W_hh, b_ih, b_hh, h0 = _problem(rng, T, 1, I, H)
    st = K.GruStepper(W_ih, W_hh, b_ih, b_hh)
    h = h0[0].copy()
    for t in range(T):
        st.step(x[t, 0], h, out=h)
    _, hn_r, _ = ref.gru_forward(x, W_ih, W_hh, b_ih, b_hh, h0)
    assert_close(h, hn_r[0], TOL_F32_GRU, "streamed state vs reference forward")


def test_zero_input_size(path, rng, K):
    """I = 0: the recurrence alone (biases and W_hh) still runs."""
    T, B, I, H = 3, 2, 0, 5
    x = np.zeros((T, B, I), np.float32)
    W_ih, W_hh, b_ih, b_hh = gru_weights(rng, I, H)
    h0 = randn(rng, B, H)
    y, h_n, cache = K.gru_forward(x, W_ih, W_hh, b_ih, b_hh, h0=h0, keep_cache=True)
    y_r, hn_r, _ = ref.gru_forward(x, W_ih, W_hh, b_ih, b_hh, h0)
    assert_close(y, y_r, TOL_F32_GRU, "y (I = 0)")
    dy = randn(rng, T, B, H)
    got = dict(zip(GRAD_NAMES, K.gru_backward(x, W_ih, W_hh, y, cache, dy=dy, h0=h0)))
    want = ref.gru_backward(x, W_ih, W_hh, b_ih, b_hh, h0, dy=dy)
    for k in GRAD_NAMES:
        assert_close(got[k], want[k], TOL_F32_GRAD, f"{k} (I = 0)")


# --------------------------------------------------------------------------
# Single step with float16 (binary16) weights
# --------------------------------------------------------------------------

@pytest.mark.parametrize("I,H", [(1, 1), (5, 7), (7, 8), (9, 16), (16, 17), (33, 64), (64, 100),
                                 (100, 100), (128, 256)])
def test_step_float16_weights_match_reference(path, rng, K, I, H):
    """The float16 step is the float32 step on the float16 weights' values:
    checked against float64 numpy on exactly those values (numpy's
    astype(float16) rounds to nearest even, as the C conversion does)."""
    W_ih, W_hh, b_ih, b_hh = gru_weights(rng, I, H)
    W_ih16, W_hh16 = W_ih.astype(np.float16), W_hh.astype(np.float16)
    x, h = randn(rng, I), randn(rng, H, scale=0.5)
    want = ref.gru_step(x, h, W_ih16.astype(np.float64), W_hh16.astype(np.float64), b_ih, b_hh)
    assert_close(K.gru_step(x, h, W_ih16, W_hh16, b_ih, b_hh), want, TOL_F32_GRU,
                 "gru_step float16 weights")
    st = K.GruStepper(W_ih16, W_hh16, b_ih, b_hh)
    assert st.weight_dtype == np.float16
    h2 = h.copy()
    assert st.step(x, h2, out=h2) is h2
    assert_close(h2, want, TOL_F32_GRU, "GruStepper float16 in place")
    # and the rounding is the only difference from the float32 weights
    full = ref.gru_step(x, h, W_ih, W_hh, b_ih, b_hh)
    assert np.max(np.abs(h2 - full)) < 2e-3 * max(1.0, np.sqrt(I + H) / 8)


def test_step_float16_sequence_equals_reference_forward(path, rng, K):
    T, I, H = 9, 24, 40
    x, W_ih, W_hh, b_ih, b_hh, h0 = _problem(rng, T, 1, I, H)
    W_ih16, W_hh16 = W_ih.astype(np.float16), W_hh.astype(np.float16)
    st = K.GruStepper(W_ih16, W_hh16, b_ih, b_hh)
    h = h0[0].copy()
    for t in range(T):
        st.step(x[t, 0], h, out=h)
    _, hn_r, _ = ref.gru_forward(x, W_ih16.astype(np.float64), W_hh16.astype(np.float64),
                                 b_ih, b_hh, h0)
    assert_close(h, hn_r[0], TOL_F32_GRU, "streamed float16 state vs reference forward")


def test_step_float16_weight_errors(K, rng):
    W_ih, W_hh, b_ih, b_hh = gru_weights(rng, 4, 5)
    W_ih16, W_hh16 = W_ih.astype(np.float16), W_hh.astype(np.float16)
    x, h = randn(rng, 4), randn(rng, 5)
    for a, b, blamed in ((W_ih16, W_hh, "W_ih"), (W_ih, W_hh16, "W_hh")):
        for fn in (lambda: K.gru_step(x, h, a, b, b_ih, b_hh),
                   lambda: K.GruStepper(a, b, b_ih, b_hh)):
            with pytest.raises(ValueError, match=f"^{blamed}: .*compressed weights need W_ih and W_hh of one dtype"):
                fn()
    with pytest.raises(ValueError, match="^W_ih: expected float16 array of shape"):
        K.GruStepper(W_ih16[:, :3], W_hh16, b_ih, b_hh).step(x, h)
    with pytest.raises(ValueError, match="^W_hh: expected float16"):
        K.gru_step(x, h, W_ih16, W_hh16[:, ::-1], b_ih, b_hh)          # not contiguous
    with pytest.raises(ValueError, match="^W_hh: expected float16"):
        K.gru_step(x, h, W_ih16, W_hh16.astype(W_hh16.dtype.newbyteorder()), b_ih, b_hh)
    with pytest.raises(ValueError, match=r"^x: expected float32 array of shape \(I,\) = \(4,\)"):
        K.GruStepper(W_ih16, W_hh16, b_ih, b_hh).step(randn(rng, 3), h)

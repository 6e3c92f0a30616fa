"""ONNX export of a model file (``deeprec-train export MODEL --onnx OUT.onnx``):
the inference graph, for running the model elsewhere (onnxruntime, ...).

Two graphs, opset 18 (``OPSET``):

**session graph** (``OUT.onnx``)
    input ``items`` int64 [T] -- the dense item indices of one session's
    clicks, oldest first (T >= 1); output ``scores`` float32 [N] -- every
    item's score after the last click, what :class:`deeprec_edge.Session`
    scores for the same clicks: ``scale * (O_i . u + b_i) + w . phi_i``
    (``u`` = the head over the last GRU layer's state, every layer starting
    from zero).  The repeat term (a model with a repeat component,
    :mod:`deeprec_edge.repeat`) is computed **inside the graph** from
    ``items`` -- the session is the whole history, so ``phi_i`` are the
    item's click count, clicks since its last click, whether it is the last
    click, and ``seen``/``in_session`` -- over the ``memory`` most recently
    clicked distinct items, as the runtime's repeat memory keeps them.
    (One difference: an item evicted from a full memory and clicked again
    counts its clicks from the session's start in the graph, from its
    return in the runtime; it needs more than ``memory`` distinct items in
    one session.)
**step graph** (``OUT.step.onnx``)
    inputs ``item`` int64 [1], ``state`` float32 [sum H] (every layer's
    state, bottom first; zeros at a session start) and, for a model with a
    repeat component, ``repeat`` float32 [N] (the repeat addend ``w . phi``
    of each item, which the app keeps from its own memory); outputs
    ``state_out`` float32 [sum H] and ``scores`` float32 [N] after the click.

Item indices: item ``i`` of the graphs is ``item_ids[i]`` of the model file;
the graph's metadata holds them (``item_ids``, JSON) with the model's
fingerprint.  The GRU is ONNX ``GRU`` with ``linear_before_reset=1`` (PyTorch
semantics) with the gates reordered from r, z, n to z, r, h.  Compressed item
tables stay compressed in the graph (int8 or float16 initializers; the
scores multiply the per-row scales after the dot product, as the kernels
do); GRU and head matrices are written as their float32 values.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from deeprec_edge._atomic import atomic_write
from deeprec_edge.model import Model
from deeprec_edge.quant import Compressed, dequantize

__all__ = ["OPSET", "session_graph", "step_graph", "export_onnx"]

#: The ONNX opset of both graphs (ScatterElements with reduction "max": 18).
OPSET = 18


def _onnx():
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:   # pragma: no cover - onnx is in the [trainer] extra
        raise ImportError('ONNX export needs the onnx package: pip install "deeprec-edge[trainer]"')
    return onnx, TensorProto, helper, numpy_helper


class _Builder:
    """Nodes and initializers of one graph, with fresh names."""

    def __init__(self):
        self.onnx, self.TP, self.h, self.nh = _onnx()
        self.nodes: List[Any] = []
        self.inits: List[Any] = []
        self._n = 0

    def name(self, base: str) -> str:
        self._n += 1
        return f"{base}_{self._n}"

    def const(self, value: Any, name: str = "c") -> str:
        n = self.name(name)
        self.inits.append(self.nh.from_array(np.asarray(value), n))
        return n

    def op(self, op_type: str, inputs: List[str], n_out: int = 1, **attrs: Any) -> Any:
        outs = [self.name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(self.h.make_node(op_type, inputs, outs, **attrs))
        return outs[0] if n_out == 1 else outs

    # -- model pieces ---------------------------------------------------
    def table_rows(self, table: Any, idx: str, name: str) -> str:
        """float32 rows ``table[idx]`` ([len(idx), C])."""
        if isinstance(table, Compressed):
            rows = self.op("Cast", [self.op("Gather", [self.const(table.data, name), idx],
                                            axis=0)], to=self.TP.FLOAT)
            if table.scale is not None:
                s = self.op("Gather", [self.const(table.scale, name + "_scale"), idx], axis=0)
                rows = self.op("Mul", [rows, self.op("Unsqueeze", [s, self.const(
                    np.array([1], np.int64))])])
            return rows
        return self.op("Gather", [self.const(np.asarray(table, np.float32), name), idx], axis=0)

    def gru(self, model: Model, x: str, h0: Optional[List[str]]) -> Tuple[str, List[str]]:
        """Every layer over x [T, 1, in]; returns (last layer's final state
        [1, H], every layer's final state [H])."""
        finals = []
        for l, layer in enumerate(model.layers):
            H = int(layer.b_ih.shape[0] // 3)
            W_ih, W_hh = dequantize(layer.W_ih), dequantize(layer.W_hh)
            order = np.r_[H:2 * H, 0:H, 2 * H:3 * H]          # r, z, n -> z, r, h
            W = self.const(W_ih[order][None].astype(np.float32), f"gru{l}_W")
            R = self.const(W_hh[order][None].astype(np.float32), f"gru{l}_R")
            B = self.const(np.concatenate([layer.b_ih[order], layer.b_hh[order]])[None]
                           .astype(np.float32), f"gru{l}_B")
            inputs = [x, W, R, B, ""]
            if h0 is not None:
                inputs.append(h0[l])
            Y, Y_h = self.op("GRU", inputs, n_out=2, hidden_size=H, linear_before_reset=1)
            x = self.op("Squeeze", [Y, self.const(np.array([1], np.int64))])   # [T, 1, H]
            finals.append(self.op("Reshape", [Y_h, self.const(np.array([H], np.int64))]))
        return self.op("Reshape", [finals[-1], self.const(np.array([1, -1], np.int64))]), finals

    def scores(self, model: Model, h: str) -> str:
        """``scale * (O . u + b)`` [N] from the last state h [1, H]."""
        W_p = dequantize(model.W_p).astype(np.float32)
        z = self.op("Gemm", [h, self.const(W_p, "head_W"), self.const(model.b_p, "head_b")],
                    transB=1)
        u = self.op("Tanh", [z]) if model.activation == "tanh" else z
        O = model.out_table
        if isinstance(O, Compressed):
            Of = self.op("Cast", [self.const(O.data, "O")], to=self.TP.FLOAT)
            s = self.op("Gemm", [u, Of], transB=1)                  # [1, N]: dot products
            if O.scale is not None:
                s = self.op("Mul", [s, self.const(O.scale, "O_scale")])
            s = self.op("Add", [s, self.const(model.output_bias, "b")])
        else:
            s = self.op("Gemm", [u, self.const(np.asarray(O, np.float32), "O"),
                                 self.const(model.output_bias, "b")], transB=1)
        if model.has_repeat and model.repeat.scale != 1.0:
            s = self.op("Mul", [s, self.const(np.array(model.repeat.scale, np.float32))])
        return self.op("Reshape", [s, self.const(np.array([-1], np.int64))])

    def repeat_addend(self, model: Model, items: str) -> str:
        """``w . phi_i`` [N] of one session's clicks (module docstring)."""
        N = model.n_items
        spec = model.repeat
        w = [np.float32(x) for x in spec.w]
        f = lambda v: self.const(np.array(v, np.float32))  # noqa: E731
        zeros = self.const(np.zeros(N, np.float32), "zerosN")
        T_i = self.op("Shape", [items])                                        # [1] int64
        T = self.op("Cast", [T_i], to=self.TP.FLOAT)
        ones = self.op("ConstantOfShape", [T_i], value=self.h.make_tensor(
            "one", self.TP.FLOAT, [1], [1.0]))
        count = self.op("ScatterElements", [zeros, items, ones], axis=0, reduction="add")
        pos1 = self.op("Range", [f(1.0), self.op("Add", [self.op("Squeeze", [T]), f(1.0)]),
                                 f(1.0)])
        last = self.op("ScatterElements", [zeros, items, pos1], axis=0, reduction="max")
        k = self.const(np.array([min(int(spec.memory), N)], np.int64))
        top = self.op("TopK", [last, k], n_out=2, axis=0, largest=1, sorted=1)[0]
        thr = self.op("ReduceMin", [top], keepdims=1)
        seen = self.op("Cast", [self.op("Greater", [count, f(0.0)])], to=self.TP.FLOAT)
        kept = self.op("Mul", [seen, self.op("Cast", [self.op("GreaterOrEqual", [last, thr])],
                                             to=self.TP.FLOAT)])
        age = self.op("Sub", [T, last])
        is_last = self.op("Cast", [self.op("Equal", [last, T])], to=self.TP.FLOAT)
        terms = self.op("Add", [f(w[0] + w[4]), self.op("Mul", [f(w[1]), self.op(
            "Log", [self.op("Add", [count, f(1.0)])])])])
        terms = self.op("Add", [terms, self.op("Mul", [f(w[2]), self.op(
            "Log", [self.op("Add", [age, f(1.0)])])])])
        terms = self.op("Add", [terms, self.op("Mul", [f(w[3]), is_last])])
        return self.op("Mul", [kept, terms])

    def model_proto(self, inputs, outputs, model: Model, doc: str):
        graph = self.h.make_graph(self.nodes, "deeprec_edge", inputs, outputs, self.inits)
        m = self.h.make_model(graph, opset_imports=[self.h.make_opsetid("", OPSET)],
                              producer_name="deeprec-edge", doc_string=doc)
        m.ir_version = 9
        self.h.set_model_props(m, {"deeprec_edge_fingerprint": model.fingerprint(),
                                   "item_ids": json.dumps(np.asarray(model.item_ids).tolist())})
        self.onnx.checker.check_model(m)
        return m


def session_graph(model: Model):
    """The session graph of ``model`` (an onnx ModelProto)."""
    b = _Builder()
    TP, h = b.TP, b.h
    x = b.op("Unsqueeze", [b.table_rows(model.E, "items", "E"),
                           b.const(np.array([1], np.int64))])                # [T, 1, e]
    last, _ = b.gru(model, x, None)
    s = b.scores(model, last)
    if model.has_repeat:
        s = b.op("Add", [s, b.repeat_addend(model, "items")])
    b.nodes.append(h.make_node("Identity", [s], ["scores"]))
    N = model.n_items
    return b.model_proto([h.make_tensor_value_info("items", TP.INT64, ["T"])],
                         [h.make_tensor_value_info("scores", TP.FLOAT, [N])], model,
                         "deeprec-edge session graph: items (dense indices of one session) "
                         "-> scores of every item after the last click")


def step_graph(model: Model):
    """The streaming-step graph of ``model`` (an onnx ModelProto)."""
    b = _Builder()
    TP, h = b.TP, b.h
    hs = model.hidden_sizes
    offs = np.r_[0, np.cumsum(hs)]
    h0 = []
    for l, H in enumerate(hs):
        sl = b.op("Slice", ["state", b.const(np.array([offs[l]], np.int64)),
                            b.const(np.array([offs[l + 1]], np.int64))])
        h0.append(b.op("Reshape", [sl, b.const(np.array([1, 1, H], np.int64))]))
    x = b.op("Unsqueeze", [b.table_rows(model.E, "item", "E"), b.const(np.array([1], np.int64))])
    last, finals = b.gru(model, x, h0)
    b.nodes.append(h.make_node("Concat", finals, ["state_out"], axis=0))
    s = b.scores(model, last)
    inputs = [h.make_tensor_value_info("item", TP.INT64, [1]),
              h.make_tensor_value_info("state", TP.FLOAT, [int(offs[-1])])]
    if model.has_repeat:
        s = b.op("Add", [s, "repeat"])
        inputs.append(h.make_tensor_value_info("repeat", TP.FLOAT, [model.n_items]))
    b.nodes.append(h.make_node("Identity", [s], ["scores"]))
    return b.model_proto(inputs, [h.make_tensor_value_info("state_out", TP.FLOAT, [int(offs[-1])]),
                                  h.make_tensor_value_info("scores", TP.FLOAT, [model.n_items])],
                         model, "deeprec-edge step graph: one click, state in -> state out "
                                "and scores of every item")


def step_path(path: str) -> str:
    """``OUT.onnx`` -> ``OUT.step.onnx``."""
    root, ext = os.path.splitext(os.fspath(path))
    return root + ".step" + (ext or ".onnx")


def export_onnx(model: Model, path: Any) -> Dict[str, Any]:
    """Write the session graph to ``path`` and the step graph beside it
    (``*.step.onnx``), atomically.  Returns ``{"session": path, "step":
    path, "opset": OPSET, "bytes": ...}``."""
    out = {"session": os.fspath(path), "step": step_path(path), "opset": OPSET}
    for key, g in (("session", session_graph(model)), ("step", step_graph(model))):
        data = g.SerializeToString()
        atomic_write(out[key], lambda f, d=data: f.write(d))
        out[f"{key}_bytes"] = len(data)
    return out

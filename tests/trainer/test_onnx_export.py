"""ONNX export: the session graph and the step graph, run in onnxruntime,
against deeprec_edge.Session for the same clicks (same top-20, scores
within 1e-5 relative): plain, tied, compressed and repeat-aware models."""
from __future__ import annotations

import json

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import deeprec_edge as de  # noqa: E402
from deeprec_edge.model import compress_model, model_from_params, params_of  # noqa: E402
from deeprec_edge.repeat import RepeatSpec  # noqa: E402
from deeprec_edge.trainer.cli import main  # noqa: E402
from deeprec_edge.trainer.onnx_export import OPSET, export_onnx  # noqa: E402
from helpers_model import random_model  # noqa: E402


def _with_repeat(m, memory=500):
    return model_from_params(params_of(m), m.item_ids, m.popularity,
                             repeat=RepeatSpec(scale=0.7, w=(1.5, 0.4, -0.3, -0.8, 0.6),
                                               memory=memory))


MODELS = {
    "plain": lambda: random_model(n_items=150, e=8, hidden=[16, 12], d=10, seed=1),
    "tied-identity": lambda: random_model(n_items=120, e=12, hidden=12, tied=True,
                                          activation="identity", seed=2),
    "int8": lambda: compress_model(random_model(n_items=150, e=8, hidden=16, seed=3),
                                   {"tables": "int8", "gru": "int8", "head": "int8"}),
    "float16-int4": lambda: compress_model(random_model(n_items=150, e=8, hidden=16, seed=4),
                                           {"E": "float16", "O": "int4"}),
    "compress-max": lambda: compress_model(random_model(n_items=150, e=8, hidden=16, seed=7),
                                           {"tables": "int3", "gru": "int4", "head": "int4",
                                            "bias": "float16"}),
    "repeat": lambda: _with_repeat(random_model(n_items=150, e=8, hidden=16, seed=5)),
    "repeat-int8-evicting": lambda: compress_model(
        _with_repeat(random_model(n_items=150, e=8, hidden=16, seed=6), memory=4),
        {"tables": "int8"}),
}


def _session_scores(model, clicks):
    """Every item's score from a Session after the clicks (item order)."""
    s = de.Session(model, exclude_clicked=False)
    for i in clicks:
        s.click(model.item_ids[i])
    return _session_scores_from(s, model)


def _close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_session_graph_matches_session(tmp_path, kind):
    model = MODELS[kind]()
    info = export_onnx(model, tmp_path / "m.onnx")
    assert info["opset"] == OPSET == 18
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    assert json.loads(meta["item_ids"]) == model.item_ids.tolist()
    assert meta["deeprec_edge_fingerprint"] == model.fingerprint()
    rng = np.random.default_rng(0)
    # repeats, a returning item; with memory 4 the first items are evicted (not re-clicked)
    for clicks in ([5], [5, 17, 5, 99, 17, 3], list(rng.integers(0, 20, 12)),
                   [40, 41, 42, 43, 44, 45, 7, 7, 8]):
        if kind == "repeat-int8-evicting" and len(set(clicks)) > 4:
            clicks = [40, 41, 42, 43, 44, 45, 7, 7, 8]    # evicted ones never come back
        got = sess.run(["scores"], {"items": np.asarray(clicks, np.int64)})[0]
        want, top, _ = _session_scores(model, clicks)
        _close(got, want)
        order = np.lexsort((np.arange(model.n_items), -got.astype(np.float64)))[:20]
        np.testing.assert_array_equal(model.item_ids[order], top)


@pytest.mark.parametrize("kind", ["plain", "int8", "repeat"])
def test_step_graph_streams_like_session(tmp_path, kind):
    model = MODELS[kind]()
    info = export_onnx(model, tmp_path / "m.onnx")
    step = ort.InferenceSession(info["step"], providers=["CPUExecutionProvider"])
    state = np.zeros(sum(model.hidden_sizes), np.float32)
    s = de.Session(model, exclude_clicked=False)
    for i in [3, 9, 3, 77, 120, 9]:
        s.click(model.item_ids[i])
        feeds = {"item": np.array([i], np.int64), "state": state}
        if model.has_repeat:
            mi, phi = s._mem.features()
            add = np.zeros(model.n_items, np.float32)
            add[mi] = phi @ model.repeat.weights
            feeds["repeat"] = add
        state, got = step.run(["state_out", "scores"], feeds)
        np.testing.assert_allclose(state, s._core.get_state(), rtol=1e-5, atol=1e-6)
        want, top, _ = _session_scores_from(s, model)
        _close(got, want)


def _session_scores_from(s, model):
    ids, sc = s.recommend(model.n_items)
    pos = {k: i for i, k in enumerate(model.item_ids.tolist())}
    full = np.empty(model.n_items, np.float32)
    full[[pos[k] for k in ids.tolist()]] = sc
    return full, ids[:20], s


def test_cli_export_onnx(tmp_path, capsys):
    m = MODELS["plain"]()
    from deeprec_edge.model import save_model
    save_model(m, tmp_path / "w.npz")
    assert main(["export", str(tmp_path / "w.npz"), "--onnx", str(tmp_path / "w.onnx")]) == 0
    out = capsys.readouterr().out
    assert "session graph" in out and (tmp_path / "w.step.onnx").exists()
    assert main(["export", str(tmp_path / "w.npz"), "-o", str(tmp_path / "c.npz"), "--dtype",
                 "int8", "--onnx", str(tmp_path / "c.onnx")]) == 0
    assert (tmp_path / "c.onnx").stat().st_size < (tmp_path / "w.onnx").stat().st_size
    assert main(["export", str(tmp_path / "w.npz")]) != 0
    assert "give -o OUTPUT" in capsys.readouterr().err

"""Compressed exports (``deeprec-train export --dtype/--prune/--compress``),
magnitude pruning, AGP pruning with recovery during ``fit --prune``, and
``deeprec-edge info`` on the result."""
from __future__ import annotations

import json

import numpy as np
import pytest

from deeprec_edge.cli import main as edge_main
from deeprec_edge.model import load_model, save_model
from deeprec_edge.quant import Compressed
from deeprec_edge.trainer.cli import main
from deeprec_edge.trainer.compress import (Pruner, agp_sparsity, compact_model, magnitude_mask,
                                           parse_dtype, prune_model)
from deeprec_edge.trainer.fit import FitConfig, fit, init_params
from deeprec_edge.trainer.synthetic import make_synthetic
from deeprec_edge.model import model_from_params

READER = ["--format", "csv", "--user-col", "user_id", "--item-col", "item_id",
          "--time-col", "time"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    inter, _ = make_synthetic(n_users=40, n_items=120, n_clusters=4, drift=0.5,
                              sessions_per_user=5, seed=3)
    d = tmp_path_factory.mktemp("compress")
    log = d / "log.csv"
    inter.to_frame()[["user_id", "item_id", "time"]].to_csv(log, index=False)
    assert main(["fit", str(log), *READER, "--hidden", "24", "--epochs", "2", "--negatives",
                 "32", "-q", "-o", str(d / "w.npz")]) == 0
    return d


def _zeros(W):
    W = W.dequantize() if isinstance(W, Compressed) else W
    return float((W == 0).mean())


@pytest.mark.parametrize("dtype,want", [
    ("float16", {"E": "float16", "gru0.W_ih": "float16", "head.W": "float16"}),
    ("int8", {"E": "int8", "gru0.W_hh": "int8", "head.W": "int8"}),
    ("tables=int4,gru=int8", {"E": "int4", "gru0.W_ih": "int8", "head.W": "float32"}),
])
def test_export_dtype(trained, tmp_path, dtype, want):
    src = load_model(trained / "w.npz")
    out = tmp_path / "c.npz"
    assert main(["export", str(trained / "w.npz"), "-o", str(out), "--dtype", dtype]) == 0
    m = load_model(out)
    for k, v in want.items():
        assert m.storage[k] == v
    assert m.format_version == 2 and out.stat().st_size < (trained / "w.npz").stat().st_size
    # the export's scores are the float32 model's within the quantisation error
    u = np.random.default_rng(0).standard_normal(src.dim).astype(np.float32)
    O = m.out_table.dequantize() if isinstance(m.out_table, Compressed) else m.out_table
    rel = np.abs(O @ u - src.out_table @ u).max() / np.abs(src.out_table @ u).max()
    assert rel < {"float16": 1e-3, "int8": 2e-2}.get(dtype, 0.3)
    # item ids and counts in small integer types: same ids
    np.testing.assert_array_equal(m.item_ids, src.item_ids)


def test_export_prune_and_compress_max(trained, tmp_path, capsys):
    out = tmp_path / "p.npz"
    assert main(["export", str(trained / "w.npz"), "-o", str(out), "--prune", "0.7",
                 "--dtype", "int8", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    m = load_model(out)
    assert info["prune"] == 0.7 and "pruned" in info["flags"]
    for name, W in m.matrices().items():
        assert _zeros(W) >= 0.66, name          # zeros kept (tables: floor(0.7 * 24) per row)
        assert m.storage[name] == "int8+sparse"
    out2 = tmp_path / "max.npz"
    assert main(["export", str(trained / "w.npz"), "-o", str(out2), "--compress", "max"]) == 0
    mx = load_model(out2)
    assert mx.storage["E"].startswith("int3") and mx.storage["head.W"].startswith("int4")
    assert out2.stat().st_size < out.stat().st_size * 1.5
    with np.load(out2) as z:       # float16 scales and output bias, as the preset says
        assert z["E.scale"].dtype == np.float16 and z["b"].dtype == np.float16
    src = load_model(trained / "w.npz")
    np.testing.assert_array_equal(mx.b, src.b.astype(np.float16).astype(np.float32))
    assert edge_main(["info", str(out2)]) == 0
    text = capsys.readouterr().out
    assert "file_bytes" in text and "(a deflated npz)" in text and "int3" in text
    assert edge_main(["info", str(out2), "--json"]) == 0
    j = json.loads(capsys.readouterr().out)
    assert j["file_bytes"] == out2.stat().st_size and j["storage"]["E"] == "int3"
    assert j["deflated"] and j["array_bytes"]["E"] > 0


def test_export_int3_undeflated_says_where_the_saving_is(trained, tmp_path, capsys):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    assert main(["export", str(trained / "w.npz"), "-o", str(a), "--dtype", "int3"]) == 0
    assert "its saving is in a deflated file: add --compressed" in capsys.readouterr().out
    assert main(["export", str(trained / "w.npz"), "-o", str(b), "--dtype", "int3",
                 "--compressed"]) == 0
    assert "add --compressed" not in capsys.readouterr().out
    assert b.stat().st_size < a.stat().st_size
    assert load_model(a).fingerprint() == load_model(b).fingerprint()


@pytest.mark.parametrize("args,message", [
    (["--dtype", "int2"], "unknown storage 'int2'"),
    (["--dtype", "bias=int8"], "unknown storage 'int8' for the biases (float32, float16)"),
    (["--dtype", "rows=int8"], "unknown group 'rows'"),
    (["--prune", "1.5"], "argument --prune: must be a number in [0, 1), got '1.5'"),
])
def test_export_refuses_bad_settings(trained, tmp_path, capsys, args, message):
    out = tmp_path / "x.npz"
    try:
        rc = main(["export", str(trained / "w.npz"), "-o", str(out), *args])
    except SystemExit as e:      # argparse refuses a typed value itself
        rc = e.code
    assert rc != 0
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_magnitude_mask_prunes_the_smallest():
    W = np.array([[0.1, -5.0, 0.2, 3.0], [-0.05, 0.3, 4.0, -0.01]], np.float32)
    keep = magnitude_mask(W, 0.5)
    np.testing.assert_array_equal(W[keep], np.float32([-5.0, 3.0, 0.3, 4.0]))
    row = magnitude_mask(W, 0.5, per_row=True)
    np.testing.assert_array_equal(row.sum(1), [2, 2])
    np.testing.assert_array_equal(W[row], np.float32([-5.0, 3.0, 0.3, 4.0]))
    with pytest.raises(ValueError):
        magnitude_mask(W, 1.0)


def test_prune_model_keeps_storage(trained):
    m = load_model(trained / "w.npz")
    from deeprec_edge.model import compress_model
    q = compress_model(m, {"gru": "int8"})
    p = prune_model(q, 0.5, parts=("gru",))
    assert isinstance(p.layers[0].W_ih, Compressed) and _zeros(p.layers[0].W_ih) >= 0.5
    assert _zeros(p.E) < 0.01                         # tables not pruned here
    assert p.storage["gru0.W_ih"] == "int8+sparse"


def test_agp_schedule():
    assert agp_sparsity(0.05, 0.7, 0.1, 0.6) == 0.0
    assert agp_sparsity(0.6, 0.7, 0.1, 0.6) == pytest.approx(0.7)
    assert agp_sparsity(0.9, 0.7, 0.1, 0.6) == pytest.approx(0.7)
    mid = agp_sparsity(0.35, 0.7, 0.1, 0.6)
    assert mid == pytest.approx(0.7 * (1 - 0.5 ** 3))
    ts = np.linspace(0, 1, 50)
    s = [agp_sparsity(t, 0.9, 0.2, 0.8) for t in ts]
    assert np.all(np.diff(s) >= 0)                    # monotone, fast first then slow


def test_fit_prune_reaches_the_sparsity_and_recovers(tmp_path):
    inter, _ = make_synthetic(n_users=30, n_items=60, n_clusters=3, drift=0.5,
                              sessions_per_user=5, seed=2)
    from deeprec_edge.trainer.fit import sequence_from_sessions
    inter = inter.compact_items()
    items, reset, _ = sequence_from_sessions(inter.items, inter.sessions, inter.times)
    cfg = FitConfig(hidden=[16], prune=0.7, prune_begin=0.2, prune_end=0.6)
    cfg.train.epochs, cfg.train.n_negatives = 5, 16
    p = init_params(len(inter.item_ids), cfg, seed=0)
    logs = []
    hist = fit(p, items, reset, cfg, log=logs.append, progress=False)
    sp = [e["sparsity"] for e in hist["epochs"]]
    assert sp[0] < 0.7 and sp[-1] == pytest.approx(0.7, abs=0.02)
    assert all(b >= a for a, b in zip(sp, sp[1:]))
    for W in (p.E, p.layers[0][0], p.layers[0][1], p.W_p):
        assert (W == 0).mean() >= 0.68          # per row: floor(0.7 * 16) of 16
    assert all(np.isfinite(e["loss"]) for e in hist["epochs"])
    assert any("pruning" in s for s in logs)
    n = len(inter.item_ids)
    m = model_from_params(p, np.arange(n), np.ones(n))
    save_model(m, tmp_path / "m.npz")
    assert "pruned" in load_model(tmp_path / "m.npz").flags


def test_pruner_refuses_bad_schedules():
    cfg = FitConfig(hidden=[8])
    p = init_params(10, cfg, seed=0)
    with pytest.raises(ValueError, match="in \\(0, 1\\)"):
        Pruner(p, 1.2)
    with pytest.raises(ValueError, match="begin < end"):
        Pruner(p, 0.5, begin=0.7, end=0.3)


def test_parse_dtype_and_compact_model(trained):
    assert parse_dtype("int8") == {"tables": "int8", "gru": "int8", "head": "int8"}
    assert parse_dtype("tables=int4, gru=int8") == {"tables": "int4", "gru": "int8"}
    assert parse_dtype("tables=int3,bias=float16") == {"tables": "int3", "bias": "float16"}
    assert parse_dtype("float16") == {"tables": "float16", "gru": "float16", "head": "float16"}
    m = load_model(trained / "w.npz")
    c = compact_model(m)
    assert c.item_ids.dtype.itemsize < 8 and c.popularity.dtype.kind == "u"
    np.testing.assert_array_equal(c.item_ids, m.item_ids)
    assert c.fingerprint() != m.fingerprint() or m.popularity.dtype.kind == "u"

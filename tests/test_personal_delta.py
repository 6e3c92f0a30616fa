"""Personal models as deltas: only what differs from the global model plus
its fingerprint, loaded against that model (a mismatch is an error), for
plain and compressed global models, through the API and the CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest

from deeprec_edge.cli import main
from deeprec_edge.model import (ModelFormatError, compress_model, delta_arrays, load_model,
                                make_personal, params_of, save_model)
from deeprec_edge.quant import Compressed
from helpers_model import random_model, write_npz


def _parts_only(base, seed=0):
    """A personal model with the parameter-efficient parts: head offset and
    personal biases (the GRU and head matrix unchanged)."""
    p = params_of(base)
    p.b_p = p.b_p + np.float32(0.1)
    return make_personal(base, p, clicks_used=10, last_timestamp=1.7e9, seed=seed, epochs=0,
                         bias_index=np.array([1, 4], np.int64),
                         bias=np.array([0.5, -0.5], np.float32))


@pytest.mark.parametrize("compressed", [False, True])
def test_delta_round_trip_holds_only_what_differs(tmp_path, compressed):
    base = random_model(n_items=500, e=16, hidden=[24, 20], seed=2)
    if compressed:
        base = compress_model(base, {"tables": "int8", "gru": "int8", "head": "int8"})
    pers = _parts_only(base)
    save_model(base, tmp_path / "g.npz")
    save_model(pers, tmp_path / "full.npz")
    save_model(pers, tmp_path / "d.npz", delta_of=base)
    with np.load(tmp_path / "d.npz") as z:
        names = set(z.files)
    assert names == {"format", "version", "config", "personal", "delta", "head.b",
                     "personal.bias_index", "personal.bias"}
    assert (tmp_path / "d.npz").stat().st_size < 0.2 * (tmp_path / "full.npz").stat().st_size
    back = load_model(tmp_path / "d.npz", base=load_model(tmp_path / "g.npz"))
    assert back.fingerprint() == pers.fingerprint() == load_model(tmp_path / "full.npz").fingerprint()
    np.testing.assert_array_equal(back.output_bias, pers.output_bias)
    assert back.storage == pers.storage


def test_a_trained_layer_replaces_the_compressed_one(tmp_path):
    """The global model stores the last layer int8; the personal one trained
    it in float32: the merged model must not pick up the global scales."""
    base = compress_model(random_model(seed=5), {"gru": "int8"})
    p = params_of(base)
    p.layers[-1] = [a + np.float32(0.01) for a in p.layers[-1]]      # the trained layer
    pers = make_personal(base, p, clicks_used=5, last_timestamp=None, seed=0, epochs=1)
    assert not isinstance(pers.layers[-1].W_ih, Compressed)
    arrays = delta_arrays(pers, base)
    assert "gru0.W_ih" in arrays and "gru0.W_ih.scale" not in arrays
    save_model(pers, tmp_path / "d.npz", delta_of=base)
    back = load_model(tmp_path / "d.npz", base=base)
    assert back.fingerprint() == pers.fingerprint()
    assert back.storage["gru0.W_ih"] == "float32"


def test_a_delta_keeps_arrays_that_differ_only_in_the_sign_of_zero(tmp_path):
    """-0.0 and 0.0 are equal numbers with different bytes, and the
    fingerprint hashes bytes: a delta that left such an array out loaded as
    a model of another fingerprint."""
    base = random_model(seed=3)
    base.b_p[:] = 0.0
    p = params_of(base)
    p.b_p = -base.b_p                                   # -0.0 everywhere
    pers = make_personal(base, p, clicks_used=1, last_timestamp=None, seed=0, epochs=1)
    assert "head.b" in delta_arrays(pers, base)
    save_model(pers, tmp_path / "d.npz", delta_of=base)
    assert load_model(tmp_path / "d.npz", base=base).fingerprint() == pers.fingerprint()


def test_delta_errors(tmp_path):
    base = random_model(seed=1)
    other = random_model(seed=9)
    pers = _parts_only(base)
    save_model(pers, tmp_path / "d.npz", delta_of=base)
    with pytest.raises(ModelFormatError, match="a personal delta .*load it with that global"):
        load_model(tmp_path / "d.npz")
    with pytest.raises(ModelFormatError, match="the base given is another model"):
        load_model(tmp_path / "d.npz", base=other)
    with pytest.raises(ModelFormatError, match="not from this base"):
        save_model(pers, tmp_path / "x.npz", delta_of=other)
    with pytest.raises(ModelFormatError, match="only a personal model"):
        save_model(base, tmp_path / "x.npz", delta_of=base)
    with pytest.raises(ModelFormatError, match="must be the global model"):
        save_model(_parts_only(pers), tmp_path / "x.npz", delta_of=pers)
    assert not (tmp_path / "x.npz").exists()
    # a damaged delta record, a delta of a global model, version 1
    with np.load(tmp_path / "d.npz") as z:
        a = {k: z[k] for k in z.files}
    for change, msg in [
        (dict(delta=np.array(json.dumps({"format": "x"}))), "'delta' record has format 'x'"),
        (dict(delta=np.array("not json")), "'delta' is not valid JSON"),
        (dict(version=np.array(1)), "version 1 cannot hold a personal delta"),
    ]:
        write_npz(tmp_path / "bad.npz", {**a, **change})
        with pytest.raises(ModelFormatError, match=msg):
            load_model(tmp_path / "bad.npz", base=base)
    g = {k: v for k, v in a.items() if k not in ("personal", "personal.bias",
                                                    "personal.bias_index")}
    write_npz(tmp_path / "bad.npz", g)
    with pytest.raises(ModelFormatError, match="needs the 'personal' record"):
        load_model(tmp_path / "bad.npz", base=base)
    # an array the config does not have is still refused
    write_npz(tmp_path / "bad.npz", {**a, "gru7.W_ih": np.zeros((3, 3), np.float32)})
    with pytest.raises(ModelFormatError, match="unexpected array"):
        load_model(tmp_path / "bad.npz", base=base)


def _demo_files(tmp_path):
    assert main(["demo", "--files", str(tmp_path)]) == 0
    return tmp_path / "weights.npz", tmp_path / "history.csv"


def test_cli_delta_finetune_recommend_info(tmp_path, capsys):
    w, h = _demo_files(tmp_path)
    capsys.readouterr()
    d = tmp_path / "me.delta.npz"
    assert main(["finetune", str(w), str(h), "-o", str(d), "--delta", "--parts", "offset,bias",
                 "-q"]) == 0
    # deflated records and parts: a few KB, against the global model in float32 as
    # `deeprec-train fit` writes it (the demo file keeps its table as float16)
    f32 = tmp_path / "weights.f32.npz"
    save_model(compress_model(load_model(w), {"tables": "float32"}), f32)
    assert d.stat().st_size < 0.06 * f32.stat().st_size
    capsys.readouterr()
    assert main(["recommend", str(d), "--base", str(w), "--history", str(h), "-k", "5",
                 "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert len(got) == 5
    assert main(["recommend", str(d), "--history", str(h)]) != 0
    assert "--base WEIGHTS" in capsys.readouterr().err
    assert main(["info", str(d), "--base", str(w), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["delta_of"] == load_model(w).fingerprint() and info["kind"] == "personal"
    # continual fine-tuning reads the delta with its base (here: no newer clicks)
    d2 = tmp_path / "me2.delta.npz"
    assert main(["finetune", str(d), str(h), "--base", str(w), "-o", str(d2), "--delta",
                 "-q"]) != 0
    assert "no new clicks to fine-tune on" in capsys.readouterr().err
    full = tmp_path / "me.npz"
    assert main(["finetune", str(w), str(h), "-o", str(full), "--parts", "offset", "-q"]) == 0
    assert main(["finetune", str(full), str(h), "-o", str(d2), "--delta", "-q"]) != 0
    assert "give its global model with --base" in capsys.readouterr().err
    assert not d2.exists()


def test_cli_delta_with_another_base_fails_before_the_fine_tune(tmp_path, capsys, monkeypatch):
    """--delta --base OTHER: the delta cannot be written against a global model
    WEIGHTS does not descend from; that was found only after the whole
    fine-tune had run."""
    import deeprec_edge.api as api
    w, h = _demo_files(tmp_path)
    other = tmp_path / "other.npz"
    save_model(compress_model(load_model(w), {"tables": "float32"}), other)
    assert load_model(other).fingerprint() != load_model(w).fingerprint()
    ran = []
    monkeypatch.setattr(api, "finetune_params", lambda *a, **k: ran.append(1))
    capsys.readouterr()
    out = tmp_path / "me.delta.npz"
    assert main(["finetune", str(w), str(h), "-o", str(out), "--delta", "--base", str(other),
                 "--parts", "gru", "-q"]) == 2
    err = capsys.readouterr().err
    assert "not from this base" in err and not ran and not out.exists()

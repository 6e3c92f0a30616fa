"""Compressed model files (format version 2 with a ``storage`` record):
float16, int8, int4 and int3 matrices with per-row scales, dense or sparse --
round trips, strict validation of the compressed form, and the runtime
(Session, recommend, fine-tuning) reading them as stored.

References: float64 numpy on the dequantised values (``q * scale``).
"""
from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

import deeprec_edge as de
import reference as ref
from deeprec_edge.model import (ModelFormatError, compress_model, load_model, make_personal,
                                params_of, save_model)
from deeprec_edge.quant import Compressed, quantize
from deeprec_edge.repeat import RepeatSpec
from helpers_model import random_model, write_npz

STORAGES = ("float16", "int8", "int4", "int3")
QMAX = {"int8": 127, "int4": 7, "int3": 3}


def _quantize_f64_f32(x, qmax):
    """:func:`_quantize_f64` with float32 candidate scales (the rule when a
    scale would exceed float16's range)."""
    return _quantize_f64(x, qmax, half=False)


def _quantize_f64(x, qmax, half=True):
    """The int4/int3 quantiser as specified (docs/model-format.md), in
    float64 with the scale candidates computed as documented: per row, for
    each clipping ratio 1.0, 0.98, ..., 0.5 the candidate scale
    f16(f32(max|row|) * f32(ratio) / f32(qmax)); values clip(rint(x / s));
    the candidate of least squared error (float64), the first on ties."""
    x = np.asarray(x, np.float32)
    amax = np.abs(x).max(axis=1)
    best = None
    for ratio in np.linspace(1.0, 0.5, 26):
        s = (amax * np.float32(ratio) / np.float32(qmax)).astype(np.float32)
        s = s.astype(np.float16).astype(np.float64) if half else s.astype(np.float64)
        safe = np.where(s > 0, s, 1.0)
        q = np.clip(np.rint(x.astype(np.float64) / safe[:, None]), -qmax, qmax)
        err = ((np.float32(1) * (q * s[:, None]).astype(np.float32) - x.astype(np.float64)) ** 2
               ).sum(axis=1)
        if best is None:
            best = [err, q, s]
        else:
            k = err < best[0]
            best = [np.where(k, err, best[0]), np.where(k[:, None], q, best[1]),
                    np.where(k, s, best[2])]
    return best[1].astype(np.int8), best[2]


def _prune(model, fraction, seed=0):
    """Magnitude-prune every weight matrix of a float32 model (a copy)."""
    m = model.copy()
    for layer in m.layers:
        for W in (layer.W_ih, layer.W_hh):
            W[np.abs(W) < np.quantile(np.abs(W), fraction)] = 0
    for W in (m.E, m.W_p) + (() if m.O is None else (m.O,)):
        W[np.abs(W) < np.quantile(np.abs(W), fraction)] = 0
    return m


def _values(x):
    return x.dequantize() if isinstance(x, Compressed) else x


def _f64(t):
    """float64 values q * scale of a table (without calling dequantize)."""
    if not isinstance(t, Compressed):
        return t.astype(np.float64)
    v = t.data.astype(np.float64)
    return v if t.scale is None else v * t.scale.astype(np.float64)[:, None]


@pytest.mark.parametrize("storage", STORAGES)
@pytest.mark.parametrize("pruned", [0.0, 0.7])
@pytest.mark.parametrize("tied", [False, True])
def test_round_trip_every_storage(tmp_path, storage, pruned, tied):
    base = random_model(n_items=40, e=8, hidden=[12, 9], tied=tied, seed=3)
    if pruned:
        base = _prune(base, pruned)
    m = compress_model(base, {"tables": storage, "gru": storage, "head": storage})
    assert m.format_version == 2
    want_flags = {storage} | ({"pruned"} if pruned else set())
    assert set(m.flags) == want_flags
    for name, st in m.storage.items():
        assert st == storage + ("+sparse" if pruned else "")
    p = tmp_path / "m.npz"
    save_model(m, p)
    back = load_model(p)
    assert back.fingerprint() == m.fingerprint()
    assert back.storage == m.storage and back.flags == m.flags
    for name, v in m.matrices().items():
        w = back.matrices()[name]
        assert isinstance(w, Compressed) and w.storage == storage
        np.testing.assert_array_equal(w.data, v.data)
        if v.scale is not None:
            np.testing.assert_array_equal(w.scale, v.scale)
    # the values are the quantised float32 values: int8 within half a step
    # of max|row| / 127; int4/int3 the specified least-squares quantiser
    for name, v in m.matrices().items():
        x = base.matrices()[name]
        if storage in ("int4", "int3"):
            q, s = _quantize_f64(x, QMAX[storage])
            np.testing.assert_array_equal(v.data, q)
            np.testing.assert_array_equal(v.scale, s)
        else:
            step = (np.abs(x).max(axis=1, keepdims=True) / 127 if storage == "int8"
                    else np.abs(x) * 2 ** -10)
            assert (np.abs(_values(v) - x) <= step / 2 + 1e-7).all()
        assert ((x == 0) <= (_values(v) == 0)).all()          # zeros stay zeros
    with np.load(p) as z:
        assert int(z["version"]) == 2
        cfg = json.loads(str(z["config"][()]))
    assert cfg["storage"] == m.storage and sorted(cfg["flags"]) == sorted(want_flags)


def test_file_bytes_shrink_with_the_storage(tmp_path):
    base = random_model(n_items=2000, e=32, hidden=32, d=32, seed=1)
    sizes = {}
    for st in ("float32", "float16", "int8", "int4"):
        m = compress_model(base, {"tables": st, "gru": st, "head": st})
        save_model(m, tmp_path / f"{st}.npz")
        sizes[st] = (tmp_path / f"{st}.npz").stat().st_size
    # item ids, popularity and biases stay as they are: 14% of this float32 file
    assert sizes["float16"] < 0.57 * sizes["float32"]
    assert sizes["int8"] < 0.36 * sizes["float32"]
    assert sizes["int4"] < 0.25 * sizes["float32"]
    m = compress_model(_prune(base, 0.9), {"tables": "int8", "gru": "int8", "head": "int8"})
    save_model(m, tmp_path / "pruned.npz")
    assert (tmp_path / "pruned.npz").stat().st_size < 0.55 * sizes["int8"]


def test_plain_models_stay_version_1_and_float32_is_the_default(tmp_path):
    m = random_model()
    assert m.format_version == 1 and set(m.storage.values()) == {"float32"} and m.flags == []
    back = compress_model(compress_model(m, {"tables": "int8"}), {"tables": "float32"})
    assert back.format_version == 1 and "storage" not in back.config
    np.testing.assert_array_equal(back.E, compress_model(m, {"tables": "int8"}).E.dequantize())


def test_compress_model_refuses_unknown_names_and_storages():
    m = random_model()
    with pytest.raises(ValueError, match="'gru9.W_ih' is neither a weight matrix"):
        compress_model(m, {"gru9.W_ih": "int8"})
    with pytest.raises(ValueError, match="unknown storage 'int2'"):
        compress_model(m, {"E": "int2"})
    with pytest.raises(ValueError, match="the biases are stored float32 or float16"):
        compress_model(m, {"bias": "int8"})
    m.E[0, 0] = 1e6
    with pytest.raises(ValueError, match="E: a value of magnitude >= 65520 does not fit float16"):
        compress_model(m, {"E": "float16"})


def _arrays(storage="int8", pruned=0.0, **kw):
    base = random_model(n_items=20, e=8, hidden=12, seed=5, **kw)
    if pruned:
        base = _prune(base, pruned)
    m = compress_model(base, {"tables": storage, "gru": storage, "head": storage})
    return {k: np.array(v, copy=True) for k, v in m.to_arrays().items()}


def _error(tmp_path, arrays):
    p = tmp_path / "bad.npz"
    write_npz(p, arrays)
    with pytest.raises(ModelFormatError) as e:
        load_model(p)
    return str(e.value)


def _cfg(a, **changes):
    cfg = json.loads(str(a["config"][()]))
    cfg.update(changes)
    a["config"] = np.array(json.dumps(cfg))
    return a


@pytest.mark.parametrize("storage,pruned,mutate,message", [
    ("int8", 0, lambda a: a["E"].__setitem__((0, 0), -128), "array 'E' holds -128"),
    ("int8", 0, lambda a: a.__setitem__("E.scale", a["E.scale"] * np.nan),
     "array 'E.scale' must hold finite scales >= 0"),
    ("int8", 0, lambda a: a["E.scale"].__setitem__(3, -1.0), "finite scales >= 0"),
    ("int8", 0, lambda a: a.pop("E.scale"), "missing array(s) 'E.scale'"),
    ("int8", 0, lambda a: a.__setitem__("E.scale", a["E.scale"].astype(np.float64)),
     "array 'E.scale' has dtype float64, expected float32"),
    ("int8", 0, lambda a: a.__setitem__("E", a["E"].astype(np.int16)),
     "array 'E' has dtype int16, expected int8"),
    ("int8", 0, lambda a: a.__setitem__("E", a["E"][:, :7].copy()),
     "array 'E' has shape (20, 7), expected (20, 8)"),
    ("int4", 0, lambda a: a["O"].__setitem__((0, 0), 0x08), "int4 value -8"),
    ("int4", 0, lambda a: a.__setitem__("gru0.W_ih", a["gru0.W_ih"].astype(np.int8)),
     "array 'gru0.W_ih' has dtype int8, expected uint8"),
    ("int4", 0, lambda a: a.__setitem__("E.scale", a["E.scale"].astype(np.float64)),
     "array 'E.scale' has dtype float64, expected float32 or float16"),
    ("int3", 0, lambda a: a["E"].__setitem__((0, 0), 0x04), "array 'E': int3 values must be in -3 .. 3"),
    ("int3", 0, lambda a: a["E"].__setitem__((0, 0), 0x0C), "array 'E': int3 values must be in -3 .. 3"),
    ("int3", 0.7, lambda a: a["E"].__setitem__(0, 0x15), "array 'E': int3 values must be in -3 .. 3"),
    ("float16", 0, lambda a: a["E"].__setitem__((1, 1), np.inf), "array 'E' has 1 non-finite"),
    ("float16", 0, lambda a: a.__setitem__("E", a["E"].astype(np.float32)),
     "array 'E' has dtype float32, expected float16"),
    ("int8", 0.7, lambda a: a["gru0.W_hh.mask"].__setitem__((0, 0), 0xFF ^ a["gru0.W_hh.mask"][0, 0]),
     "array 'gru0.W_hh' holds"),
    ("int8", 0.7, lambda a: a.__setitem__("E", np.append(a["E"], np.int8(3))),
     "array 'E' holds"),
    ("int8", 0.7, lambda a: a["E"].__setitem__(0, 0), "array 'E' stores zeros"),
    ("int8", 0.7, lambda a: a["gru0.W_hh.mask"].__setitem__((0, 1), 0x80),
     "array 'gru0.W_hh.mask' has bits set past column 12"),
    ("int8", 0.7, lambda a: a.__setitem__("E", np.zeros(10 ** 4, np.int8)),
     "expected 1-d with at most 160 values"),
    ("int8", 0, lambda a: _cfg(a, flags=[]), "config flags [] do not match the config storage"),
    ("int8", 0, lambda a: _cfg(a, flags=["float16", "int8"]),
     "config flags ['float16', 'int8'] do not match the config storage (which needs ['int8']"),
    ("int8", 0, lambda a: _cfg(a, storage={"E": "int8"}),
     "unexpected array(s) 'O.scale', 'gru0.W_hh.scale', 'gru0.W_ih.scale', 'head.W.scale' "
     "(the arrays of a compressed matrix need it listed in the config's 'storage')"),
    ("int8", 0, lambda a: a.__setitem__("version", np.array(1)),
     "version 1 cannot hold a compressed matrices"),
    ("int8", 0, lambda a: a.__setitem__("b", a["b"].astype(np.float16)), None),  # allowed here
    ("int8", 0, lambda a: a.__setitem__("gru0.b_hh", a["gru0.b_hh"].astype(np.float16)), None),
    ("int8", 0, lambda a: a.__setitem__("personal.bias" if "personal.bias" in a else "head.b",
                                        a["head.b"].astype(np.float64)),
     "array 'head.b' has dtype float64, expected float32"),
    ("int8", 0, lambda a: a.__setitem__("b", np.r_[np.nan, a["b"][1:]].astype(np.float16)),
     "array 'b' has 1 NaN value(s)"),
    ("int8", 0, lambda a: a.__setitem__("b", a["b"].astype(np.float64)),
     "array 'b' has dtype float64, expected float32"),
])
def test_broken_compressed_files_get_clean_errors(tmp_path, storage, pruned, mutate, message):
    a = _arrays(storage, pruned)
    mutate(a)
    if message is None:
        write_npz(tmp_path / "ok.npz", a)
        load_model(tmp_path / "ok.npz")
        return
    msg = _error(tmp_path, a)
    assert message in msg, msg
    assert msg.startswith(str(tmp_path / "bad.npz"))


def test_a_truncated_compressed_file_is_refused(tmp_path):
    m = compress_model(random_model(n_items=300, e=16, seed=2), {"tables": "int4"})
    p = tmp_path / "m.npz"
    save_model(m, p)
    data = p.read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFormatError, match="cut.npz"):
        load_model(tmp_path / "cut.npz")
    with zipfile.ZipFile(p) as z:
        assert {"E.npy", "E.scale.npy"} <= set(z.namelist())


def test_a_compressed_table_is_not_silently_inflated():
    t = quantize(np.ones((4, 3), np.float32), "int8")
    with pytest.raises(TypeError, match="not silently inflated"):
        np.asarray(t)
    np.testing.assert_array_equal(t[np.array([1, 3])], np.ones((2, 3), np.float32))
    np.testing.assert_array_equal(t[1:3], np.ones((2, 3), np.float32))
    with pytest.raises(AttributeError):
        t.scale = None


# --------------------------------------------------------------------------
# the runtime on compressed models
# --------------------------------------------------------------------------


class _NoInflate(Compressed):
    """A table that fails the test if anything inflates it whole."""

    __slots__ = ()

    def dequantize(self):
        raise AssertionError(f"a {self.storage} item table was inflated to float32")


def _guarded(model):
    """The model with its item tables refusing to be inflated."""
    m = model.copy()
    for attr in ("E", "O"):
        t = getattr(m, attr)
        if isinstance(t, Compressed):
            object.__setattr__(m, attr, _NoInflate(t.data, t.scale, t.storage))
    return m


def _reference_user(model, clicks):
    """float64 user vector after the clicks (one session), on the
    dequantised weights."""
    hs = [np.zeros(h) for h in model.hidden_sizes]
    for i in clicks:
        x = _f64(model.E)[i]
        for l, layer in enumerate(model.layers):
            W_ih, W_hh = (_values(w).astype(np.float64) for w in layer[:2])
            hs[l] = ref.gru_step(x, hs[l], W_ih, W_hh, layer.b_ih, layer.b_hh)
            x = hs[l]
    return ref.head_forward(x[None], _values(model.W_p), model.b_p, model.activation)[0]


@pytest.mark.parametrize("storage", STORAGES)
@pytest.mark.parametrize("tied", [False, True])
def test_session_on_a_compressed_model_matches_float64(path, storage, tied):
    base = random_model(n_items=300, e=16, hidden=[24, 20], d=16 if tied else 12, tied=tied,
                        seed=7)
    m = _guarded(compress_model(base, {"tables": storage, "gru": storage, "head": storage}))
    clicks = [5, 17, 250, 17, 3]
    s = de.Session(m, exclude_clicked=False)
    for i in clicks:
        s.click(m.item_ids[i])
    u = _reference_user(m, clicks)
    np.testing.assert_allclose(s.user_vector, u, rtol=2e-5, atol=2e-5)
    full = _f64(m.out_table) @ s.user_vector.astype(np.float64) + m.b
    ids, scores = s.recommend(20)
    idx = np.searchsorted(m.item_ids, ids)
    np.testing.assert_allclose(scores, full[idx], rtol=1e-5, atol=1e-5)
    assert (full[idx].min() >= np.sort(full)[-20] - 1e-5)     # the 20 best, up to rounding
    # the same rows through a candidate table score the same bits
    cands = m.item_ids[np.argsort(-full)[:60]]
    sc = de.Session(m, candidates=cands.tolist(), exclude_clicked=False)
    for i in clicks:
        sc.click(m.item_ids[i])
    ids_c, scores_c = sc.recommend(20)
    np.testing.assert_array_equal(ids_c, ids)
    np.testing.assert_array_equal(scores_c, scores)
    # recommend() (the batch path) ranks the same way
    hist = _history(m, clicks)
    ids_r, scores_r = de.recommend(m, hist, k=20, exclude_clicked=False)
    np.testing.assert_array_equal(ids_r, ids)
    np.testing.assert_allclose(scores_r, scores, rtol=1e-5, atol=1e-6)


def _history(model, clicks):
    from deeprec_edge.history import History
    n = len(clicks)
    return History(items=np.asarray(clicks, np.int32), item_ids=model.item_ids[clicks],
                   timestamps=1_700_000_000.0 + np.arange(n) * 60.0, session_ids=None,
                   n_rows=n)


def test_session_steps_int8_and_float16_layers_as_stored(path):
    base = random_model(n_items=50, e=8, hidden=[12, 10], seed=2)
    m = compress_model(base, {"gru0.W_ih": "int8", "gru0.W_hh": "int8", "gru1.W_ih": "float16",
                              "gru1.W_hh": "float16"})
    s = de.Session(m)
    assert s._core.layer_dtypes == ["int8", "float16"]
    s.click(m.item_ids[3])
    np.testing.assert_allclose(s.user_vector, _reference_user(m, [3]), rtol=2e-5, atol=2e-5)


def test_repeat_component_on_a_compressed_model(path):
    base = random_model(n_items=120, e=8, hidden=12, seed=4)
    from deeprec_edge.model import model_from_params
    rep = model_from_params(params_of(base), base.item_ids, base.popularity,
                            repeat=RepeatSpec(scale=0.8, w=(2.0, 0.3, -0.2, -0.5, 0.7)))
    m = _guarded(compress_model(rep, {"tables": "int8", "gru": "int8"}))
    clicks = [4, 9, 4, 100]
    s = de.Session(m)
    for i in clicks:
        s.click(m.item_ids[i])
    ids, scores = s.recommend(10)
    ids_r, scores_r = de.recommend(m, _history(m, clicks), k=10)
    np.testing.assert_array_equal(ids, ids_r)
    np.testing.assert_allclose(scores, scores_r, rtol=1e-5, atol=1e-5)
    assert m.item_ids[4] in ids.tolist()          # the repeated item is ranked with its bonus


def test_finetune_on_a_compressed_model_keeps_frozen_parts_compressed(tmp_path):
    base = random_model(n_items=60, e=8, hidden=[12, 10], seed=8)
    m = compress_model(base, {"tables": "int8", "gru": "int8", "head": "int8"})
    rng = np.random.default_rng(0)
    clicks = np.concatenate([np.tile(rng.permutation(60)[:8], 6), rng.integers(0, 60, 30)])
    res = de.finetune(_guarded(m), _history(m, clicks.tolist()), seed=0,
                      parts=("gru", "offset", "bias"), epochs=2, holdout=0.0)
    p = res.model
    assert isinstance(p.E, Compressed) and isinstance(p.O, Compressed)
    assert isinstance(p.layers[0].W_ih, Compressed)            # frozen lower layer
    assert p.personal["base_fingerprint"] == m.fingerprint()
    save_model(p, tmp_path / "me.npz")
    back = load_model(tmp_path / "me.npz")
    assert back.fingerprint() == p.fingerprint()
    assert back.storage["E"] == "int8" and back.storage["gru0.W_hh"] == "int8"
    assert back.storage["gru1.W_hh"] in ("int8", "float32")   # trained: float32 unless unchanged


def test_make_personal_keeps_a_compressed_part_it_did_not_change():
    m = compress_model(random_model(seed=3), {"gru": "int8", "head": "int8"})
    p = params_of(m)
    pers = make_personal(m, p, clicks_used=1, last_timestamp=None, seed=0, epochs=0)
    assert pers.layers[-1].W_hh is m.layers[-1].W_hh and pers.W_p is m.W_p
    p.W_p = p.W_p + np.float32(0.5)
    pers = make_personal(m, p, clicks_used=1, last_timestamp=None, seed=0, epochs=0)
    assert not isinstance(pers.W_p, Compressed) and pers.W_p.dtype == np.float32


def test_int3_file_is_smaller_than_int4_deflated(tmp_path):
    base = random_model(n_items=2000, e=32, hidden=32, d=32, seed=1)
    sizes = {}
    for st in ("int4", "int3"):
        m = compress_model(base, {"tables": st, "gru": st, "head": st})
        save_model(m, tmp_path / f"{st}.npz", compressed=True)
        sizes[st] = (tmp_path / f"{st}.npz").stat().st_size
        back = load_model(tmp_path / f"{st}.npz")
        assert back.storage["E"] == st and back.fingerprint() == m.fingerprint()
        assert np.abs(back.E.data).max() <= QMAX[st]
    # seven levels of a Gaussian-like row take about 2.7 bits once deflated, fifteen about 3.6
    assert sizes["int3"] < 0.85 * sizes["int4"], sizes


def test_scales_beyond_float16_stay_float32(tmp_path):
    """A scale beyond float16's range: the whole matrix keeps float32
    scales, quantised by the same rule with float32 candidates; a tiny row
    (subnormal float16 scale) stays within a step of its values."""
    m = random_model(n_items=30, e=8, seed=4)
    m.E[5] *= 1e-6
    c = compress_model(m, {"E": "int4"})
    assert c.E.scale.dtype == np.float32
    np.testing.assert_array_equal(c.E.scale.astype(np.float16).astype(np.float32), c.E.scale)
    assert (np.abs(c.E[5] - m.E[5]) <= np.abs(m.E[5]).max() / 7).all()
    m.E[3] *= 1e6
    c = compress_model(m, {"E": "int4"})
    with np.errstate(over="ignore"):
        assert not np.array_equal(c.E.scale.astype(np.float16).astype(np.float32), c.E.scale)
    q, s = _quantize_f64_f32(m.E, 7)
    np.testing.assert_array_equal(c.E.data, q)
    np.testing.assert_array_equal(c.E.scale, s)
    save_model(c, tmp_path / "t.npz")
    with np.load(tmp_path / "t.npz") as z:
        assert z["E.scale"].dtype == np.float32
    np.testing.assert_array_equal(load_model(tmp_path / "t.npz").E.scale, c.E.scale)


@pytest.mark.parametrize("storage", ["float32", "int8"])
def test_output_bias_float16(tmp_path, storage):
    m = random_model(n_items=40, e=8, seed=6)
    c = compress_model(m, {"tables": storage, "bias": "float16"})
    f16 = lambda v: v.astype(np.float16).astype(np.float32)  # noqa: E731
    np.testing.assert_array_equal(c.b, f16(m.b))
    np.testing.assert_array_equal(c.b_p, f16(m.b_p))
    for l, layer in enumerate(c.layers):
        np.testing.assert_array_equal(layer.b_ih, f16(m.layers[l].b_ih))
        np.testing.assert_array_equal(layer.b_hh, f16(m.layers[l].b_hh))
    save_model(c, tmp_path / "b.npz")
    with np.load(tmp_path / "b.npz") as z:
        # stored float16 only beside compressed matrices (a version-1 file keeps float32)
        for name in ("b", "head.b", "gru0.b_ih", "gru0.b_hh"):
            assert z[name].dtype == (np.float16 if storage != "float32" else np.float32), name
    back = load_model(tmp_path / "b.npz")
    assert back.b.dtype == np.float32 and back.fingerprint() == c.fingerprint()
    np.testing.assert_array_equal(back.b, c.b)
    # a bias that is no longer a float16 value (a fine-tune moved it) is written float32
    c.b[0] += np.float32(1e-4)
    save_model(c, tmp_path / "b2.npz")
    with np.load(tmp_path / "b2.npz") as z:
        assert z["b"].dtype == np.float32
    m.b[1] = 7e4
    with pytest.raises(ValueError, match=r"a bias \(b\) of magnitude >= 65520"):
        compress_model(m, {"bias": "float16"})


def test_deflated_writer(tmp_path, monkeypatch):
    """Deflated files: any zip reader reads them (np.load, zipfile's CRC
    check), the same model gives the same bytes, each member is no larger
    than zlib's default deflate, and archives near zip64 sizes go through
    numpy's writer."""
    import zlib
    from deeprec_edge import _npz
    m = compress_model(random_model(n_items=500, e=16, seed=7),
                       {"tables": "int3", "gru": "int4", "head": "int8", "bias": "float16"})
    p1, p2 = tmp_path / "a.npz", tmp_path / "b.npz"
    save_model(m, p1, compressed=True)
    save_model(m, p2, compressed=True)
    assert p1.read_bytes() == p2.read_bytes()
    arrays = m.to_arrays()
    with zipfile.ZipFile(p1) as z:
        assert z.testzip() is None
        assert [i.filename for i in z.infolist()] == [k + ".npy" for k in arrays]
        for info in z.infolist():
            assert info.compress_type == zipfile.ZIP_DEFLATED
            raw = z.read(info)
            for strategy in (zlib.Z_DEFAULT_STRATEGY, zlib.Z_HUFFMAN_ONLY):  # at least as small
                c = zlib.compressobj(9, zlib.DEFLATED, -15, 9, strategy)
                assert info.compress_size <= len(c.compress(raw) + c.flush())
    with np.load(p1) as z:
        for k, v in arrays.items():
            np.testing.assert_array_equal(z[k], v)
            assert z[k].dtype == np.asarray(v).dtype
    assert load_model(p1).fingerprint() == m.fingerprint()
    monkeypatch.setattr(_npz, "_ZIP32_LIMIT", 10_000)
    save_model(m, p2, compressed=True)
    assert p2.read_bytes() != p1.read_bytes()
    assert load_model(p2).fingerprint() == m.fingerprint()


def test_deflated_writer_streams_members(tmp_path):
    """A large member is deflated in chunks: memory beyond the arrays stays
    a fraction of the member (np.savez_compressed copies it whole)."""
    import tracemalloc
    from deeprec_edge._npz import write_npz_deflated
    a = np.arange(8_000_000, dtype=np.float32) % 977          # 32 MB, deflates fast
    tracemalloc.start()
    try:
        with open(tmp_path / "big.npz", "wb") as f:
            write_npz_deflated(f, {"x": a, "y": a[:10]})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 0.5 * a.nbytes, peak
    with np.load(tmp_path / "big.npz") as z:
        np.testing.assert_array_equal(z["x"], a)
        np.testing.assert_array_equal(z["y"], a[:10])


def test_float16_bias_and_scales_hash_and_delta_by_value(tmp_path):
    """b and per-row scales are stored float16 or float32 by their values:
    the fingerprint and personal deltas see values, not the dtype -- a
    model whose b happens to be float16 values has the fingerprint it had
    when written float32, and a personal model whose matrices are all
    float32 (so b is written float32) does not carry b in its delta."""
    from deeprec_edge.model import _fingerprint, delta_arrays
    m = random_model(n_items=60, e=8, hidden=8, d=8, seed=9)
    m.b[:] = 0.0
    g = compress_model(m, {"tables": "int8"})
    arrays = g.to_arrays()
    assert arrays["b"].dtype == np.float16
    widened = dict(arrays, b=arrays["b"].astype(np.float32))
    assert _fingerprint(widened) == g.fingerprint()
    assert _fingerprint(dict(arrays, b=arrays["b"] + np.float16(1))) != g.fingerprint()
    # global: GRU and head compressed, E float32; the fine-tune makes them float32
    g = compress_model(random_model(n_items=60, e=8, hidden=8, d=8, seed=9),
                       {"gru": "int8", "head": "int8", "bias": "float16"})
    p = params_of(g)
    p.W_p = p.W_p + np.float32(0.25)
    for k in (0, 1):                                  # W_ih, W_hh of the last layer
        p.layers[-1][k] = p.layers[-1][k] + np.float32(0.25)
    pers = make_personal(g, p, clicks_used=3, last_timestamp=None, seed=0, epochs=1)
    assert all(st == "float32" for st in pers.storage.values())
    assert g.to_arrays()["b"].dtype == np.float16 and pers.to_arrays()["b"].dtype == np.float32
    delta = delta_arrays(pers, g)
    assert not {"b", "gru0.b_ih", "gru0.b_hh"} & set(delta)
    assert pers.to_arrays()["gru0.b_ih"].dtype == np.float32
    save_model(g, tmp_path / "g.npz")
    save_model(pers, tmp_path / "d.npz", delta_of=g)
    back = load_model(tmp_path / "d.npz", base=load_model(tmp_path / "g.npz"))
    assert back.fingerprint() == pers.fingerprint()
    np.testing.assert_array_equal(back.b, g.b)


def test_export_dtype_overrides_the_preset_group_by_group(tmp_path):
    from deeprec_edge.trainer.export import export_model
    src = tmp_path / "m.npz"
    save_model(random_model(n_items=50, e=8, hidden=8, d=8, seed=2), src)
    export_model(str(src), str(tmp_path / "o.npz"), compress="max", dtype="gru=int8")
    out = load_model(tmp_path / "o.npz")
    assert out.storage["E"] == "int3" and out.storage["gru0.W_ih"] == "int8"
    assert out.storage["head.W"] == "int4"
    with np.load(tmp_path / "o.npz") as z:
        assert z["b"].dtype == np.float16

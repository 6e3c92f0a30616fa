"""The model file (schema version 1): round trips, fingerprints, validation
of every kind of bad input, and atomic saving (errors, unwritable paths, a
process killed mid-save).  numpy only: no compiled kernels needed."""
from __future__ import annotations

import errno
import io
import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
import tracemalloc
import warnings
import zipfile

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.append(HERE)

from deeprec_edge import _atomic  # noqa: E402
from deeprec_edge import model as M  # noqa: E402
from deeprec_edge._atomic import atomic_write  # noqa: E402
from deeprec_edge.model import (FORMAT_TAG, FORMAT_VERSION, Model, ModelFormatError,  # noqa: E402
                                load_model, model_from_params, save_model,
                                validate_arrays)
from helpers_model import (child_env, random_arrays, random_model, random_personal,  # noqa: E402
                           set_config, wait_for, write_npz)


def assert_same_model(a: Model, b: Model) -> None:
    arrays_a, arrays_b = a.to_arrays(), b.to_arrays()
    assert sorted(arrays_a) == sorted(arrays_b)
    for k in arrays_a:
        x, y = np.asarray(arrays_a[k]), np.asarray(arrays_b[k])
        assert x.dtype.kind == y.dtype.kind, k
        assert x.shape == y.shape, k
        if k in ("config", "personal"):
            assert json.loads(str(x[()])) == json.loads(str(y[()]))
        else:
            np.testing.assert_array_equal(x, y, err_msg=k)
    assert a.fingerprint() == b.fingerprint()


def load_error(path) -> str:
    with pytest.raises(ModelFormatError) as ei:
        load_model(path)
    msg = str(ei.value)
    assert str(path) in msg, msg  # every message names the file
    return msg


def broken(tmp_path, arrays, name="broken.npz"):
    p = tmp_path / name
    write_npz(p, arrays)
    return p


def dir_listing(d):
    return sorted(os.listdir(d))


# --------------------------------------------------------------------------
# round trips
# --------------------------------------------------------------------------


@pytest.mark.parametrize("kw", [
    {},
    {"string_ids": True},
    {"tied": True, "e": 8},
    {"hidden": [12, 10, 6]},
    {"hidden": [9, 9], "d": 5, "activation": "identity", "carry_state": True},
    {"n_items": 1, "hidden": 1, "e": 1},
], ids=["int-ids", "str-ids", "tied", "3-layers", "identity-carry", "tiny"])
@pytest.mark.parametrize("compressed", [False, True], ids=["stored", "deflate"])
def test_round_trip(tmp_path, kw, compressed):
    m = random_model(**kw)
    p = tmp_path / "weights.npz"
    save_model(m, p, compressed=compressed)
    m2 = load_model(p)
    assert_same_model(m, m2)
    assert m2.n_items == m.n_items and m2.hidden_sizes == m.hidden_sizes
    assert m2.n_layers == len(m.layers) and m2.dim == m.dim
    assert m2.tied == m.tied and (m2.O is None) == m.tied
    assert m2.out_table is (m2.E if m2.tied else m2.O)
    assert m2.activation == m.activation and m2.carry_state == m.carry_state
    assert m2.session_gap_seconds == 3600.0 and m2.flags == []
    for layer in m2.layers:
        assert all(a.dtype == np.float32 and a.flags.c_contiguous for a in layer)
    assert not m2.is_personal
    # files are plain npz readable without pickle by anyone
    with np.load(p, allow_pickle=False) as z:
        assert str(z["format"]) == FORMAT_TAG and int(z["version"]) == m.format_version
        assert z["E"].dtype == np.float32
    assert dir_listing(tmp_path) == ["weights.npz"]  # no temporary files left


def test_round_trip_personal(tmp_path):
    base = random_model()
    p1 = random_personal(base, with_bias=True)
    assert p1.is_personal
    assert p1.personal["base_fingerprint"] == base.fingerprint()
    assert p1.personal["finetunes"] == 1 and p1.personal["clicks_used"] == 42
    # frozen parts are shared, not copied; the last layer and head are new
    assert p1.E is base.E and p1.O is base.O and p1.b is base.b
    assert not np.array_equal(p1.layers[-1].W_hh, base.layers[-1].W_hh)
    save_model(p1, tmp_path / "p.npz")
    p2 = load_model(tmp_path / "p.npz")
    assert_same_model(p1, p2)
    eb = p2.output_bias
    np.testing.assert_array_equal(eb[[0, 3, 5]], np.float32([0.5, -0.25, 1.0]))
    np.testing.assert_array_equal(np.delete(eb, [0, 3, 5]), np.delete(base.b, [0, 3, 5]))
    info = p2.describe()
    assert info["kind"] == "personal" and info["base_fingerprint"] == base.fingerprint()
    assert info["personal_biases"] == 3 and "last_click_utc" in info
    # continual fine-tuning: the base fingerprint stays the global model's
    p3 = random_personal(p2, seed=5)
    assert p3.personal["base_fingerprint"] == base.fingerprint()
    assert p3.personal["parent_fingerprint"] == p2.fingerprint()
    assert p3.personal["finetunes"] == 2 and p3.personal["clicks_used_total"] == 84
    np.testing.assert_array_equal(p3.personal_bias_index, p2.personal_bias_index)
    save_model(p3, tmp_path / "p3.npz")
    assert_same_model(p3, load_model(tmp_path / "p3.npz"))


def test_model_from_params(tmp_path):
    class P:  # the engine's Params shape, without importing the kernels
        pass

    src = random_model(hidden=[7, 5], d=4)
    prm = P()
    prm.E, prm.layers, prm.W_p, prm.b_p = src.E, [list(l) for l in src.layers], src.W_p, src.b_p
    prm.O, prm.b_out, prm.activation = src.O, src.b, "tanh"
    m = model_from_params(prm, src.item_ids.tolist(), src.popularity,
                          {"loss": "bpr-max", "trained_on": "x", "carry_state": True})
    assert m.config["H"] == [7, 5] and m.config["L"] == 2 and m.config["d"] == 4
    assert m.config["loss"] == "bpr-max" and m.carry_state and "created" in m.config
    save_model(m, tmp_path / "m.npz")
    assert_same_model(m, load_model(tmp_path / "m.npz"))
    prm.b_out = np.full(3, 1, np.float32)  # wrong length: validated at once
    with pytest.raises(ModelFormatError, match=r"array 'b' has shape \(3,\), expected \(30,\)"):
        model_from_params(prm, src.item_ids, src.popularity)


def test_params_of_shares_arrays():
    pytest.importorskip("deeprec_edge._core", reason="compiled kernels not built")
    m = random_personal(with_bias=True)
    prm = M.params_of(m)
    assert prm.E is m.E and prm.W_p is m.W_p and prm.O is m.O
    np.testing.assert_array_equal(prm.b_out, m.output_bias)
    assert prm.hidden_sizes == m.hidden_sizes and prm.activation == m.activation


# --------------------------------------------------------------------------
# fingerprint and item ids
# --------------------------------------------------------------------------


def test_fingerprint_is_canonical(tmp_path):
    m = random_model()
    fp = m.fingerprint()
    assert len(fp) == 64 and int(fp, 16) >= 0
    arrays = m.to_arrays()
    # array order, compression and byte order do not matter
    rev = {k: arrays[k] for k in reversed(list(arrays))}
    rev["E"] = arrays["E"].astype(">f4")
    rev["config"] = np.array(json.dumps(json.loads(str(arrays["config"][()])), indent=3))
    np.savez_compressed(tmp_path / "x.npz", **rev)
    assert load_model(tmp_path / "x.npz").fingerprint() == fp
    # string ids: the unicode width does not matter
    s = random_model(string_ids=True)
    s2 = s.copy()
    s2.item_ids = s.item_ids.astype("<U40")
    assert s2.fingerprint() == s.fingerprint()
    # any change of any value does
    m2 = m.copy()
    m2.layers[0].W_hh[0, 0] += np.float32(1e-3)
    assert m2.fingerprint() != fp
    m3 = m.copy()
    m3.config["session_gap_seconds"] = 1800.0
    assert m3.fingerprint() != fp
    assert m.fingerprint() == fp  # copies are deep


def test_item_index():
    m = random_model(n_items=10)  # ids 1000 + 7 i
    idx, unk = m.item_index([1007, 1000, 5, 1063])
    np.testing.assert_array_equal(idx, [1, 0, -1, 9])
    np.testing.assert_array_equal(unk, [False, False, True, False])
    idx, unk = m.item_index(np.array(["1014", "x", " 1021"]))  # decimal strings accepted
    np.testing.assert_array_equal(idx, [2, -1, 3])
    i, u = m.item_index(1021)
    assert i.shape == () and int(i) == 3 and not u
    assert m.item_index([])[0].shape == (0,)
    s = random_model(n_items=5, string_ids=True)
    idx, unk = s.item_index(["item-4", "item-0", "item-9", 3])
    np.testing.assert_array_equal(idx, [4, 0, -1, -1])
    assert s.id_to_index["item-2"] == 2 and m.id_to_index[1007] == 1


# --------------------------------------------------------------------------
# bad files
# --------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "nope.npz")


def test_not_an_npz(tmp_path):
    p = tmp_path / "weights.npz"
    p.write_text("item_id,timestamp\n1,2\n")
    assert "is not a deeprec-edge model file (not an npz archive)" in load_error(p)
    p.write_bytes(b"")
    assert "is empty (0 bytes)" in load_error(p)
    np.save(tmp_path / "a.npy", np.zeros(3, np.float32))
    assert "single .npy array" in load_error(tmp_path / "a.npy")


def test_zip_that_is_not_a_model(tmp_path):
    p = tmp_path / "other.npz"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("readme.txt", "hello")
    assert "non-array member(s) 'readme.txt'" in load_error(p)
    np.savez(p, a=np.zeros(2))
    assert "not a deeprec-edge model file: it has no 'format' array (it holds 'a')" in load_error(p)


def _member_data_offset(path, member):
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(member)
    with open(path, "rb") as f:
        f.seek(info.header_offset + 26)
        n, extra = np.frombuffer(f.read(4), "<u2")
    return info.header_offset + 30 + int(n) + int(extra), info.file_size


@pytest.mark.parametrize("member", ["E.npy", "gru0.W_hh.npy", "config.npy", "item_ids.npy"])
def test_corrupt_bytes(tmp_path, member):
    p = tmp_path / "weights.npz"
    save_model(random_model(n_items=100), p)
    start, size = _member_data_offset(p, member)
    data = bytearray(p.read_bytes())
    pos = start + size - 5  # inside the array's data, past the .npy header
    data[pos] ^= 0x5A
    p.write_bytes(bytes(data))
    msg = load_error(p)
    assert "is truncated or corrupt" in msg and f"'{member[:-4]}'" in msg, msg


@pytest.mark.parametrize("keep", [0.02, 0.5, 0.97, "minus1"])
def test_truncated(tmp_path, keep):
    p = tmp_path / "weights.npz"
    save_model(random_model(n_items=100), p)
    data = p.read_bytes()
    n = len(data) - 1 if keep == "minus1" else int(len(data) * keep)
    p.write_bytes(data[:n])
    assert "is truncated or corrupt" in load_error(p)


# --------------------------------------------------------------------------
# bounded: any file is rejected in little memory (headers before data)
# --------------------------------------------------------------------------


def _peak_mb(fn):
    """Run fn(); return (its exception message, peak Python/numpy memory in MB)."""
    tracemalloc.start()
    try:
        try:
            fn()
            msg = None
        except ModelFormatError as e:
            msg = str(e)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return msg, peak / 2 ** 20


def _npy_header(dtype, shape):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
              "shape": tuple(shape)})
    return buf.getvalue()


def _write_members(path, arrays, raw=None, compress=zipfile.ZIP_STORED):
    """An npz of ``arrays`` plus raw members: name -> (npy header, number of
    zero bytes after it), streamed so no data is built in memory."""
    with zipfile.ZipFile(path, "w", compression=compress) as z:
        for k, v in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(v), allow_pickle=False)
            z.writestr(f"{k}.npy", buf.getvalue())
        for k, (header, n_zero) in (raw or {}).items():
            with z.open(f"{k}.npy", "w", force_zip64=True) as m:
                m.write(header)
                chunk = bytes(1 << 20)
                for i in range(0, n_zero, len(chunk)):
                    m.write(chunk[:min(len(chunk), n_zero - i)])


@pytest.mark.parametrize("L", [10 ** 8, 10 ** 6, 65])
def test_absurd_layer_count_is_rejected_at_once(tmp_path, L):
    """The audit's 78 KB file with L = 10^8 took 15.6 GB and 126 s; 10^6 gave
    a 71 MB error line."""
    a = set_config(random_arrays(), L=L)
    msg, peak = _peak_mb(lambda: load_model(broken(tmp_path, a)))
    assert f"config L={L} is beyond what deeprec-edge reads (at most 64)" in msg
    assert peak < 20 and len(msg) < 400, (peak, len(msg))
    a = set_config(random_arrays(), H=[12] * 200_000, L=200_000)
    msg, peak = _peak_mb(lambda: load_model(broken(tmp_path, a)))
    assert "config L=200000 is beyond" in msg and len(msg) < 400 and peak < 100


@pytest.mark.parametrize("key,value", [("n_items", 2 ** 31), ("e", 70000), ("d", 1 << 17),
                                       ("H", 1 << 20)])
def test_config_sizes_are_bounded(tmp_path, key, value):
    a = set_config(random_arrays(), **{key: value})
    msg = load_error(broken(tmp_path, a))
    assert (f"config {key}={value} is beyond" in msg or f"each at most {1 << 16}" in msg), msg


@pytest.mark.parametrize("mib", [48, 256])
def test_member_inflating_to_gigabytes_is_rejected_unread(tmp_path, mib):
    """A small npz whose 'E' inflates to many MiB of the wrong shape: the
    header is checked against the config before any data is read (and past
    64 MiB the inflation alone is implausible)."""
    a = random_arrays()
    del a["E"]
    cols = (mib << 20) // 120
    p = tmp_path / "bomb.npz"
    _write_members(p, a, {"E": (_npy_header(np.float32, (30, cols)), 120 * cols)},
                   compress=zipfile.ZIP_DEFLATED)
    assert os.path.getsize(p) < 2 << 20
    msg, peak = _peak_mb(lambda: load_model(p))
    if mib < 64:
        assert f"array 'E' has shape (30, {cols}), expected (30, 8)" in msg, msg
    else:
        assert f"its members inflate to {mib}.0 MiB from a file of" in msg, msg
    assert peak < 20, peak


def test_consistent_bomb_is_rejected_by_its_inflation(tmp_path):
    """Every header agrees with a config of 2^21 items, but 300 MiB come out
    of 1 MiB: no model compresses like that; rejected before any read."""
    n, e = 1 << 21, 8
    a = set_config(random_arrays(), n_items=n)
    raw = {}
    for k in ("item_ids", "E", "O", "b", "popularity"):
        v = a.pop(k)
        shape = (n,) + v.shape[1:]
        raw[k] = (_npy_header(v.dtype, shape), int(np.prod(shape)) * v.dtype.itemsize)
    p = tmp_path / "bomb.npz"
    _write_members(p, a, raw, compress=zipfile.ZIP_DEFLATED)
    msg, peak = _peak_mb(lambda: load_model(p))
    assert "is not a plausible archive: its members inflate to" in msg, msg
    assert peak < 20, peak


def test_many_members_and_huge_headers_are_rejected(tmp_path):
    p = tmp_path / "members.npz"
    with zipfile.ZipFile(p, "w") as z:
        for i in range(3000):
            z.writestr(f"a{i}.npy", b"")
    msg, peak = _peak_mb(lambda: load_model(p))
    assert "the archive has 3000 members (at most 1024)" in msg and peak < 20
    a = random_arrays()
    del a["b"]
    hdr = b"\x93NUMPY\x02\x00" + (60000).to_bytes(4, "little") + b" " * 60000
    _write_members(p, a, {"b": (hdr, 0)})
    assert "a header of 60000 bytes" in load_error(p)
    a = random_arrays()
    del a["config"]
    _write_members(p, a, {"config": (_npy_header("<U2000000", ()), 8_000_000)},
                   compress=zipfile.ZIP_DEFLATED)
    msg, peak = _peak_mb(lambda: load_model(p))
    assert "array 'config' is a string of 2000000 characters" in msg and peak < 20, msg


def test_header_disagreeing_with_member_size(tmp_path):
    a = random_arrays()
    del a["b"]
    p = tmp_path / "short.npz"
    _write_members(p, a, {"b": (_npy_header(np.float32, (30,)), 60)})   # 120 bytes due
    msg = load_error(p)
    assert "array 'b' declares float32 (30,)" in msg and "holds 60 bytes of data" in msg


def test_duplicate_member_and_object_header(tmp_path):
    p = tmp_path / "dup.npz"
    a = random_arrays()
    write_npz(p, a)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # zipfile warns about the duplicate name
        with zipfile.ZipFile(p, "a") as z:
            buf = io.BytesIO()
            np.lib.format.write_array(buf, a["b"])
            z.writestr("b.npy", buf.getvalue())
    assert "holds member 'b.npy' twice" in load_error(p)
    del a["b"]
    _write_members(p, a, {"b": (_npy_header(object, (30,)), 0)})
    assert "array 'b' holds Python objects (needs pickle)" in load_error(p)


def test_wrong_format_tag(tmp_path):
    a = random_arrays()
    a["format"] = np.array("something-else/model")
    assert "format tag is 'something-else/model', expected 'deeprec-edge/model'" in \
        load_error(broken(tmp_path, a))
    a["format"] = np.array([FORMAT_TAG])
    assert "'format' must be a 0-d unicode string" in load_error(broken(tmp_path, a))


def test_wrong_version(tmp_path):
    a = random_arrays()
    a["version"] = np.array(FORMAT_VERSION + 1, np.int64)
    msg = load_error(broken(tmp_path, a))
    assert (f"version {FORMAT_VERSION + 1} is newer than this deeprec-edge supports "
            f"(version {FORMAT_VERSION})") in msg
    assert "upgrade" in msg
    a["version"] = np.array(0)
    assert "version 0 is invalid" in load_error(broken(tmp_path, a))
    a["version"] = np.array("1")
    assert "'version' must be a 0-d integer" in load_error(broken(tmp_path, a))


@pytest.mark.parametrize("name", ["E", "gru0.W_hh", "head.b", "O", "b", "popularity",
                                  "item_ids", "config", "version", "gru1.b_ih"])
def test_missing_array(tmp_path, name):
    a = random_arrays(hidden=[6, 5])
    del a[name]
    msg = load_error(broken(tmp_path, a))
    assert "missing array" in msg and f"'{name}'" in msg, msg


def test_missing_several_arrays_listed_together(tmp_path):
    a = random_arrays()
    del a["E"], a["head.W"]
    assert "missing array(s) 'E', 'head.W'" in load_error(broken(tmp_path, a))


def test_unexpected_arrays(tmp_path):
    a = random_arrays()
    a["gru1.W_ih"] = a["gru0.W_ih"]
    msg = load_error(broken(tmp_path, a))
    assert "unexpected array(s) 'gru1.W_ih'" in msg and "config says L=1" in msg
    t = random_arrays(tied=True)
    t["O"] = t["E"]
    assert "'O' is present but config says tied=true" in load_error(broken(tmp_path, t))
    a = random_arrays()
    a["personal.bias"] = np.zeros(1, np.float32)
    assert "personal biases need the 'personal' record" in load_error(broken(tmp_path, a))


@pytest.mark.parametrize("name", ["E", "gru0.W_hh", "head.W", "O", "b"])
def test_nan_and_inf_weights(tmp_path, name):
    a = random_arrays()
    flat = a[name].reshape(-1)
    flat[[0, 2]] = np.nan
    msg = load_error(broken(tmp_path, a))
    assert f"array '{name}' has 2 NaN value(s)" in msg, msg
    flat[[0, 2]] = 0
    flat[-1] = -np.inf
    msg = load_error(broken(tmp_path, a))
    assert f"array '{name}' has 1 infinite value(s)" in msg, msg


def test_nan_popularity_and_negative(tmp_path):
    a = random_arrays()
    a["popularity"][3] = np.nan
    assert "array 'popularity' has 1 NaN" in load_error(broken(tmp_path, a))
    a["popularity"][3] = -1
    assert "array 'popularity' has 1 negative value(s)" in load_error(broken(tmp_path, a))
    a["popularity"] = np.arange(30, dtype=np.int64)  # integer counts are fine
    validate_arrays(a)


def test_wrong_dtype(tmp_path):
    a = random_arrays()
    a["E"] = a["E"].astype(np.float64)
    assert "array 'E' has dtype float64, expected float32" in load_error(broken(tmp_path, a))
    a = random_arrays()
    a["gru0.W_ih"] = a["gru0.W_ih"].astype(np.float16)
    msg = load_error(broken(tmp_path, a))
    assert "array 'gru0.W_ih' is float16, expected float32" in msg and "'storage'" in msg
    a = random_arrays()
    a["b"] = a["b"].astype(np.int32)
    assert "array 'b' has dtype int32, expected float32" in load_error(broken(tmp_path, a))
    a = random_arrays()
    a["item_ids"] = a["item_ids"].astype(np.float64)
    assert "'item_ids' has dtype float64, expected int64 or a unicode" in \
        load_error(broken(tmp_path, a))


def test_big_endian_float32_is_accepted(tmp_path):
    a = random_arrays()
    a["E"] = a["E"].astype(">f4")
    m = load_model(broken(tmp_path, a))
    assert m.E.dtype == np.float32 and m.E.dtype.isnative


def test_pickled_object_array(tmp_path):
    a = random_arrays()
    a["item_ids"] = np.array([object()] * 30, dtype=object)
    msg = load_error(broken(tmp_path, a))
    assert "array 'item_ids' holds Python objects" in msg


@pytest.mark.parametrize("name,shape,expect", [
    ("E", (30, 7), "array 'E' has shape (30, 7), expected (30, 8) = (n_items, e)"),
    ("gru0.W_ih", (36, 9), "array 'gru0.W_ih' has shape (36, 9), expected (36, 8) = (3*H, e)"),
    ("gru0.W_hh", (12, 12), "array 'gru0.W_hh' has shape (12, 12), expected (36, 12) = (3*H, H)"),
    ("gru0.b_hh", (35,), "array 'gru0.b_hh' has shape (35,), expected (36,)"),
    ("head.W", (12, 12), "array 'head.W' has shape (12, 12), expected (12, 12)"),
    ("O", (29, 12), "array 'O' has shape (29, 12), expected (30, 12) = (n_items, d)"),
    ("b", (30, 1), "array 'b' has shape (30, 1), expected (30,)"),
])
def test_wrong_shape(tmp_path, name, shape, expect):
    a = random_arrays()
    if name == "head.W":  # a transposed head: d != H here
        a = random_arrays(d=5)
        shape, expect = (12, 5), "array 'head.W' has shape (12, 5), expected (5, 12) = (d, H)"
    a[name] = np.zeros(shape, np.float32)
    assert expect in load_error(broken(tmp_path, a))


def test_wrong_shape_second_layer(tmp_path):
    a = random_arrays(hidden=[6, 5])
    a["gru1.W_ih"] = np.zeros((15, 5), np.float32)
    assert ("array 'gru1.W_ih' has shape (15, 5), expected (15, 6) = (3*H, H_prev) with H=5, "
            "H_prev=6") in load_error(broken(tmp_path, a))


def test_duplicate_ids(tmp_path):
    a = random_arrays()
    a["item_ids"][[3, 7]] = a["item_ids"][0]
    a["item_ids"][9] = a["item_ids"][1]
    msg = load_error(broken(tmp_path, a))
    assert "'item_ids' has 2 duplicate id(s) (e.g. 1000, 1007)" in msg
    s = random_arrays(string_ids=True)
    s["item_ids"][5] = "item-2"
    assert "1 duplicate id(s) (e.g. 'item-2')" in load_error(broken(tmp_path, s))


def test_item_ids_length_and_rank(tmp_path):
    a = random_arrays()
    a["item_ids"] = a["item_ids"][:-1]
    assert "'item_ids' has 29 ids, expected n_items=30" in load_error(broken(tmp_path, a))
    a["item_ids"] = np.arange(30).reshape(5, 6)
    assert "'item_ids' must be 1-d" in load_error(broken(tmp_path, a))


def test_bad_json(tmp_path):
    a = random_arrays()
    a["config"] = np.array('{"n_items": 30, "e": ')
    assert "'config' is not valid JSON" in load_error(broken(tmp_path, a))
    a["config"] = np.array('[1, 2]')
    assert "'config' must be a JSON object, got list" in load_error(broken(tmp_path, a))
    a["config"] = np.array('{"n_items": NaN}')
    assert "'config' is not valid JSON (NaN is not allowed" in load_error(broken(tmp_path, a))
    # nested beyond the decoder's recursion limit: a RecursionError, not a format error
    a["config"] = np.array("[" * 100_000 + "]" * 100_000)
    assert "'config' is not valid JSON (nested too deeply)" in load_error(broken(tmp_path, a))


@pytest.mark.parametrize("changes,expect", [
    ({"H": ...}, "config is missing key(s) 'H'"),
    ({"tied": ..., "carry_state": ...}, "config is missing key(s) 'carry_state', 'tied'"),
    ({"n_items": 31}, "'item_ids' has 30 ids, expected n_items=31"),
    ({"e": 0}, "config e must be a positive integer, got 0"),
    ({"L": True}, "config L must be a positive integer, got True"),
    ({"H": [12, 12]}, "config H must be a positive integer or a list of L=1"),
    ({"activation": "relu"}, "config activation must be one of ['tanh', 'identity'], got 'relu'"),
    ({"tied": "yes"}, "config tied must be true or false, got 'yes'"),
    ({"tied": True}, "config says tied=true but e=8 != d=12"),
    ({"session_gap_seconds": -5}, "config session_gap_seconds must be a positive number"),
    ({"flags": ["float16"]}, "config flags ['float16'] do not match the config storage (which "
                             "needs []"),
    ({"storage": {"E": "int8"}}, "config flags [] do not match the config storage (which needs "
                                 "['int8']"),
    ({"storage": {"b": "int8"}, "flags": ["int8"]}, "config storage names 'b', which are not "
                                                    "weight matrices"),
    ({"storage": {"E": "int2"}}, "config storage of 'E': unknown storage 'int2'"),
    ({"storage": ["E"]}, "config storage must be an object"),
    ({"flags": ["sliced"]}, "flag 'sliced' (a sliced model"),
    ({"flags": ["zstd"]}, "unknown flag 'zstd' in config flags"),
    ({"flags": "sliced"}, "config flags must be a list of strings"),
    ({"alpha": "high"}, "config alpha must be a number"),
])
def test_bad_config(tmp_path, changes, expect):
    a = set_config(random_arrays(), **changes)
    msg = load_error(broken(tmp_path, a))
    assert expect in msg, msg


def test_optional_config_keys_have_defaults(tmp_path):
    a = set_config(random_arrays(), session_gap_seconds=..., flags=..., loss=..., alpha=...,
                   trained_on=..., created=...)
    m = load_model(broken(tmp_path, a))
    assert m.session_gap_seconds == 3600.0 and m.flags == []


@pytest.mark.parametrize("change,expect", [
    (lambda p: p.pop("seed"), "personal record is missing key(s) 'seed'"),
    (lambda p: p.update(base_fingerprint="abc"), "personal base_fingerprint must be 64"),
    (lambda p: p.update(clicks_used=-1), "personal clicks_used must be a non-negative"),
    (lambda p: p.update(last_timestamp="yesterday"), "personal last_timestamp must be unix"),
    # finite but beyond any time a history is read at: `info` could not print it
    (lambda p: p.update(last_timestamp=1e20), "personal last_timestamp must be unix"),
    (lambda p: p.update(last_timestamp=-2e11), "personal last_timestamp must be unix"),
    # optional keys that the next fine-tune reads with int(): checked when present
    (lambda p: p.update(finetunes="x"), "personal finetunes must be a non-negative integer"),
    (lambda p: p.update(clicks_used_total=None), "personal clicks_used_total must be a non-neg"),
    (lambda p: p.update(clicks_used_total=2.9), "personal clicks_used_total must be a non-neg"),
    (lambda p: p.update(parent_fingerprint="abc"), "personal parent_fingerprint must be 64"),
    (lambda p: p.update(last_timestamp_clicks=-1), "personal last_timestamp_clicks must be a "),
    (lambda p: p.update(last_timestamp_clicks="2"), "personal last_timestamp_clicks must be a "),
])
def test_bad_personal_record(tmp_path, change, expect):
    a = {k: np.array(v, copy=True) for k, v in random_personal().to_arrays().items()}
    rec = json.loads(str(a["personal"][()]))
    change(rec)
    a["personal"] = np.array(json.dumps(rec))
    assert expect in load_error(broken(tmp_path, a))


def test_bad_personal_bias(tmp_path):
    good = {k: np.array(v, copy=True) for k, v in
            random_personal(with_bias=True).to_arrays().items()}
    a = dict(good)
    del a["personal.bias"]
    assert "missing array 'personal.bias'" in load_error(broken(tmp_path, a))
    a = dict(good)
    a["personal.bias_index"] = np.array([0, 3, 30])
    assert "'personal.bias_index' has indices outside 0..29" in load_error(broken(tmp_path, a))
    a = dict(good)
    a["personal.bias"] = np.array([1, np.nan, 2], np.float32)
    assert "array 'personal.bias' has 1 NaN" in load_error(broken(tmp_path, a))


# --------------------------------------------------------------------------
# saving
# --------------------------------------------------------------------------


def test_save_rejects_invalid_model_and_keeps_previous(tmp_path):
    p = tmp_path / "weights.npz"
    save_model(random_model(seed=1), p)
    before = p.read_bytes()
    bad = random_model(seed=2)
    bad.E[0, 0] = np.nan
    with pytest.raises(ModelFormatError, match=r"\(not written\): array 'E' has 1 NaN"):
        save_model(bad, p)
    assert p.read_bytes() == before
    assert dir_listing(tmp_path) == ["weights.npz"]


def test_save_over_existing_replaces_and_keeps_mode(tmp_path):
    p = tmp_path / "weights.npz"
    save_model(random_model(seed=1), p)
    os.chmod(p, 0o640)
    m2 = random_model(seed=2)
    save_model(m2, p)
    assert load_model(p).fingerprint() == m2.fingerprint()
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o640
    q = tmp_path / "new.npz"
    save_model(m2, q)
    umask = _atomic._current_umask()
    assert stat.S_IMODE(os.stat(q).st_mode) == 0o666 & ~umask


def _assert_previous_intact(tmp_path, p, before):
    assert p.read_bytes() == before
    assert dir_listing(tmp_path) == [p.name], dir_listing(tmp_path)


def test_writer_error_mid_save_keeps_previous(tmp_path, monkeypatch):
    p = tmp_path / "weights.npz"
    save_model(random_model(seed=1), p)
    before = p.read_bytes()

    def failing(f, arrays, compressed):
        f.write(b"PK\x03\x04 partial garbage")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(M, "_write_arrays", failing)
    with pytest.raises(OSError, match="No space left"):
        save_model(random_model(seed=2), p)
    _assert_previous_intact(tmp_path, p, before)

    def interrupted(f, arrays, compressed):
        f.write(b"x" * 1000)
        raise KeyboardInterrupt

    monkeypatch.setattr(M, "_write_arrays", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_model(random_model(seed=2), p)
    _assert_previous_intact(tmp_path, p, before)


def test_unwritable_directory(tmp_path, monkeypatch):
    d = tmp_path / "ro"
    d.mkdir()
    p = d / "weights.npz"
    save_model(random_model(seed=1), p)
    before = p.read_bytes()

    # a permission failure as the OS reports it (also what root would see on
    # a read-only mount): the message names the path and the directory
    def denied(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    with pytest.raises(PermissionError) as ei:
        save_model(random_model(seed=2), p)
    msg = str(ei.value)
    assert f"cannot write {p}: directory {d} is not writable" in msg, msg
    assert ei.value.errno == errno.EACCES
    monkeypatch.undo()
    _assert_previous_intact(d, p, before)


_UNWRITABLE_CHILD = textwrap.dedent("""
    import os, sys
    import deeprec_edge.model as M
    from helpers_model import random_model

    model = random_model(seed=2)
    if os.geteuid() == 0:      # root writes anywhere: drop to 'nobody' first
        os.setgid(65534)
        os.setuid(65534)
    try:
        M.save_model(model, sys.argv[1])
    except PermissionError as e:
        print("PermissionError:", e)
        sys.exit(3)
    sys.exit(0)
""")


@pytest.mark.skipif(os.name != "posix", reason="needs POSIX permissions")
def test_unwritable_directory_chmod(tmp_path):
    """A real permission failure (run as an unprivileged process even when
    the tests run as root)."""
    d = tmp_path / "ro"
    d.mkdir()
    p = d / "weights.npz"
    save_model(random_model(seed=1), p)
    before = p.read_bytes()
    os.chmod(d, 0o555)
    try:
        r = subprocess.run([sys.executable, "-c", _UNWRITABLE_CHILD, str(p)], env=child_env(), cwd=HERE,
                           capture_output=True, text=True, timeout=120)
    finally:
        os.chmod(d, 0o755)
    assert r.returncode == 3, r.stdout + r.stderr
    assert f"cannot write {p}: directory " in r.stdout and "is not writable" in r.stdout
    _assert_previous_intact(d, p, before)


def test_missing_directory_and_other_bad_paths(tmp_path):
    m = random_model()
    p = tmp_path / "no" / "such" / "weights.npz"
    with pytest.raises(FileNotFoundError, match=r"cannot write .*weights.npz: directory .*such "
                                                r"does not exist"):
        save_model(m, p)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(NotADirectoryError, match="is not a directory"):
        save_model(m, f / "weights.npz")
    with pytest.raises(IsADirectoryError, match="it is a directory"):
        save_model(m, tmp_path)
    assert dir_listing(tmp_path) == ["file"]


def test_atomic_write_basic(tmp_path):
    p = tmp_path / "x.bin"
    atomic_write(p, lambda f: f.write(b"one"))
    atomic_write(str(p), lambda f: f.write(b"two"))
    assert p.read_bytes() == b"two" and dir_listing(tmp_path) == ["x.bin"]


# --------------------------------------------------------------------------
# a process killed mid-save
# --------------------------------------------------------------------------


_SLOW_CHILD = textwrap.dedent("""
    import io, os, sys, time
    import numpy as np
    import deeprec_edge.model as M
    from helpers_model import random_model

    path, marker = sys.argv[1], sys.argv[2]
    model = random_model(n_items=3000, e=16, hidden=32, seed=2)

    def slow(f, arrays, compressed):
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        data = buf.getvalue()
        half = len(data) // 2
        f.write(data[:half])
        f.flush()
        os.fsync(f.fileno())
        open(marker, "w").close()   # tell the parent: half of the file is on disk
        time.sleep(120)
        f.write(data[half:])

    M._write_arrays = slow
    M.save_model(model, path)
""")


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_mid_save_leaves_previous_file_intact(tmp_path):
    p = tmp_path / "weights.npz"
    old = random_model(n_items=3000, e=16, hidden=32, seed=1)
    save_model(old, p)
    before = p.read_bytes()
    marker = tmp_path / "started"
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_CHILD, str(p), str(marker)],
                            env=child_env(), cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(marker.exists, 60, proc)
        temps = [n for n in os.listdir(tmp_path) if n.startswith(".weights.npz.")]
        assert len(temps) == 1 and os.path.getsize(tmp_path / temps[0]) > 10_000
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert p.read_bytes() == before
    assert load_model(p).fingerprint() == old.fingerprint()
    # the killed writer's partial temporary file never shadows the model; the
    # next save works as usual and removes it (its writer no longer runs)
    new = random_model(n_items=50, seed=3)
    save_model(new, p)
    assert load_model(p).fingerprint() == new.fingerprint()
    assert dir_listing(tmp_path) == ["started", "weights.npz"]


_LOOP_CHILD = textwrap.dedent("""
    import sys
    import deeprec_edge.model as M
    from helpers_model import random_model

    a = random_model(n_items=4000, e=16, hidden=32, seed=11)
    b = random_model(n_items=4000, e=16, hidden=32, seed=12)
    print("ready", flush=True)
    i = 0
    while True:
        M.save_model(a if i % 2 else b, sys.argv[1])
        i += 1
""")


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_at_random_moments_never_leaves_a_broken_file(tmp_path):
    """Unpatched save_model in a loop, killed at arbitrary moments: the file
    is always a complete model, the old one or a new one."""
    p = tmp_path / "weights.npz"
    old = random_model(n_items=50, seed=10)
    save_model(old, p)
    ok = {old.fingerprint(), random_model(n_items=4000, e=16, hidden=32, seed=11).fingerprint(),
          random_model(n_items=4000, e=16, hidden=32, seed=12).fingerprint()}
    rng = np.random.default_rng(0)
    for trial in range(4):
        proc = subprocess.Popen([sys.executable, "-c", _LOOP_CHILD, str(p)], env=child_env(), cwd=HERE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            line = proc.stdout.readline()
            assert line.strip() == b"ready", proc.stderr.read()
            time.sleep(float(rng.uniform(0.0, 0.3)))
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
            proc.stderr.close()
        assert load_model(p).fingerprint() in ok


def _rewrite_member(path, member, edit):
    """Rewrite one member's bytes with edit(bytes) (a valid zip: the CRC is
    recomputed, so only the reader's own checks can catch it)."""
    with zipfile.ZipFile(path) as z:
        items = [(i.filename, z.read(i.filename)) for i in z.infolist()]
    with zipfile.ZipFile(path, "w") as z:
        for name, data in items:
            z.writestr(name, edit(data) if name == member else data)


def test_invalid_code_points_and_zip_features_are_format_errors(tmp_path):
    """Found by tests/fuzz.py: a unicode array holding a code point beyond
    U+10FFFF made numpy raise SystemError; zip members flagged encrypted or
    "patched" made zipfile raise NotImplementedError."""
    p = tmp_path / "s.npz"
    save_model(random_model(string_ids=True), p)
    needle = "item-3".encode("utf-32-le")
    _rewrite_member(p, "item_ids.npy",
                    lambda b: b.replace(needle, needle[:-4] + (0x110000).to_bytes(4, "little")))
    assert "array 'item_ids' holds invalid unicode characters" in load_error(p)
    _rewrite_member(p, "item_ids.npy", lambda b: b.replace((0x110000).to_bytes(4, "little"),
                                                           (0xD800).to_bytes(4, "little")))
    assert "holds invalid unicode characters" in load_error(p)
    for flag in (0x20, 0x40, 0x01):
        save_model(random_model(), p)
        data = bytearray(p.read_bytes())
        at = data.index(b"PK\x01\x02")               # the first member's directory entry
        data[at + 8:at + 10] = flag.to_bytes(2, "little")
        p.write_bytes(bytes(data))
        assert "is encrypted or patched" in load_error(p)


def test_item_index_keeps_64_bit_ids_exact():
    """A list of Python ints that numpy cannot fit one integer type (an id
    >= 2**63 beside ordinary ones) became float64 and matched ids above
    2**53 to their neighbours: each id is matched exactly, the huge one is
    unknown -- also through recommend's and Session's candidates."""
    from deeprec_edge import Session, recommend
    from deeprec_edge.model import model_from_params, params_of
    base = random_model(n_items=4)
    ids = np.array([2 ** 60 + k for k in range(4)], np.int64)
    m = model_from_params(params_of(base), ids, base.popularity)
    want = [2 ** 60 + 1, 2 ** 60 + 3, 2 ** 64 - 5]
    idx, unk = m.item_index(want)
    np.testing.assert_array_equal(idx, [1, 3, -1])
    np.testing.assert_array_equal(unk, [False, False, True])
    assert sorted(recommend(m, None, k=4, candidates=want)[0].tolist()) == want[:2]
    assert sorted(Session(m, candidates=want).recommend(4)[0].tolist()) == want[:2]


def test_sparse_matrices_that_decode_to_gigabytes_are_rejected_unread(tmp_path):
    """An all-zero mask deflates ~1000x and its dense matrix is 4 bytes an
    entry: a 0.1 MB file declaring a 7000 x 65536 pruned table would decode
    to 1.3 GiB. Rejected from the headers, before any data."""
    from deeprec_edge._npz import write_npz_deflated
    R, C = 7000, 65536
    m = random_model(n_items=R, e=8, hidden=1, d=1)
    a = m.to_arrays()
    cfg = json.loads(str(a["config"][()]))
    cfg.update(e=C, storage={"E": "float32+sparse"}, flags=["pruned"])
    a["config"] = np.array(json.dumps(cfg))
    a["version"] = np.array(2, np.int64)
    a["E.mask"] = np.zeros((R, C // 8), np.uint8)
    a["E"] = np.zeros(0, np.float32)
    a["gru0.W_ih"] = np.zeros((3, C), np.float32)
    p = tmp_path / "bomb.npz"
    with open(p, "wb") as f:
        write_npz_deflated(f, a)
    assert p.stat().st_size < 200_000
    msg, peak = _peak_mb(lambda: load_model(p))
    assert "not a plausible model file: its sparse matrices decode to" in msg, msg
    assert peak < 40, peak


def test_a_npy_header_shorter_than_its_prefix_is_rejected_unread(tmp_path):
    """A v1 header declaring 0 bytes made the reader read(-2): the whole
    member. Rejected from the 12 bytes read, with a plain message."""
    a = random_arrays()
    raw = {"popularity": (b"\x93NUMPY\x01\x00\x00\x00", 60 << 20)}
    a.pop("popularity")
    p = tmp_path / "h.npz"
    _write_members(p, a, raw, compress=zipfile.ZIP_DEFLATED)
    msg, peak = _peak_mb(lambda: load_model(p))
    assert "array 'popularity' is not a valid .npy array (a header of 0 bytes)" in msg, msg
    assert "cannot be read" not in msg
    assert peak < 20, peak

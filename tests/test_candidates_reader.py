"""The device's candidate reader (deeprec_edge.candidates.read_candidates):
the trainer's npz (read within bounds), CSV with or without users, a plain
list; every problem a ValueError naming the file (never BadZipFile, EOFError,
AttributeError or a traceback from a short row)."""
from __future__ import annotations

import numpy as np
import pytest

from deeprec_edge.candidates import CANDIDATES_FORMAT, read_candidates
from helpers_model import random_model


def _npz(path, users=("u1", "u2"), per=(3, 2), **extra):
    offsets = np.concatenate([[0], np.cumsum(per)]).astype(np.int64)
    arrays = dict(format=np.array(CANDIDATES_FORMAT), version=np.array(1, np.int64),
                  user_ids=np.array(users), offsets=offsets,
                  item_ids=np.arange(1000, 1000 + 7 * offsets[-1], 7, dtype=np.int64),
                  scores=np.linspace(1, 0, offsets[-1]).astype(np.float32))
    arrays.update(extra)
    np.savez(path, **arrays)
    return path


def test_reads_every_kind(tmp_path):
    model = random_model(n_items=20)
    p = _npz(tmp_path / "c.npz")
    assert read_candidates(p, model, user="u2") == [1021, 1028]
    (tmp_path / "c.csv").write_text("user_id,item_id,rank,score\nu1,1000,1,0.5\nu2,1007,1,0.4\n")
    assert read_candidates(tmp_path / "c.csv", model, user="u2") == [1007]
    (tmp_path / "l.txt").write_text("item_id\n1000\n\n1014\n")
    assert read_candidates(tmp_path / "l.txt", model) == [1000, 1014]


def test_several_users_message_speaks_to_python_and_the_command_line(tmp_path):
    p = _npz(tmp_path / "c.npz")
    with pytest.raises(ValueError) as e:
        read_candidates(p)
    msg = str(e.value)
    assert "holds candidates of 2 users" in msg
    assert "read_candidates(..., user='u1') in Python" in msg and "--user u1" in msg


@pytest.mark.parametrize("case,expect", [
    ("empty", "is empty"), ("truncated", "truncated or corrupt"), ("text", "is not an npz"),
    ("tag", "format tag 'other'"), ("object", "holds Python objects"),
    ("offsets", "inconsistent offsets"), ("missing", "missing array(s) 'offsets'"),
])
def test_bad_npz_is_one_value_error(tmp_path, case, expect):
    p = tmp_path / "c.npz"
    if case == "empty":
        p.write_bytes(b"")
    elif case == "text":
        p.write_text("hello\n")
    elif case == "truncated":
        data = _npz(p).read_bytes()
        p.write_bytes(data[:len(data) * 2 // 3])
    elif case == "tag":
        _npz(p, format=np.array("other"))
    elif case == "object":                     # user_ids needing pickle
        import io
        import zipfile
        good = _npz(tmp_path / "good.npz")
        with zipfile.ZipFile(good) as src, zipfile.ZipFile(p, "w") as z:
            for name in src.namelist():
                if name != "user_ids.npy":
                    z.writestr(name, src.read(name))
            buf = io.BytesIO()
            np.lib.format.write_array_header_1_0(buf, {"descr": "|O", "fortran_order": False,
                                                       "shape": (2,)})
            z.writestr("user_ids.npy", buf.getvalue() + b"\x80\x04N.")
    elif case == "offsets":
        _npz(p, offsets=np.array([0, 9, 1], np.int64))
    else:
        np.savez(p, format=np.array(CANDIDATES_FORMAT), user_ids=np.array(["u"]),
                 item_ids=np.zeros(1, np.int64))
    with pytest.raises(ValueError) as e:
        read_candidates(p)
    assert type(e.value) is ValueError and str(e.value).startswith(str(p)), str(e.value)
    assert expect in str(e.value), str(e.value)


def test_bad_csv_is_one_value_error(tmp_path):
    p = tmp_path / "c.csv"
    p.write_text("user_id,item_id,rank\nu1,1000,1\nu1\n")
    with pytest.raises(ValueError, match=r"c.csv, line 3: 1 field\(s\), the header names 3"):
        read_candidates(p)
    p.write_bytes(b"item_id,x\n10\xff00,1\n")
    with pytest.raises(ValueError, match="not valid UTF-8"):
        read_candidates(p)


def test_invalid_code_points_are_a_value_error(tmp_path):
    """Found by tests/fuzz.py (the trainer's reader raised SystemError)."""
    import zipfile
    p = _npz(tmp_path / "c.npz")
    with zipfile.ZipFile(p) as z:
        items = [(i.filename, z.read(i.filename)) for i in z.infolist()]
    bad = (0x110000).to_bytes(4, "little")
    with zipfile.ZipFile(p, "w") as z:
        for name, data in items:
            z.writestr(name, data.replace("u2".encode("utf-32-le"), b"u\0\0\0" + bad)
                       if name == "user_ids.npy" else data)
    with pytest.raises(ValueError, match="array 'user_ids' holds invalid unicode characters"):
        read_candidates(p, user="u1")
    pytest.importorskip("pandas")
    from deeprec_edge.trainer.candidates import load_candidates_npz
    with pytest.raises(ValueError, match="invalid unicode characters"):
        load_candidates_npz(p)


def test_spreadsheet_csvs_read_like_plain_ones(tmp_path):
    """Excel's "CSV UTF-8" (a byte-order mark) and R's write.csv (quoted
    names) give the same candidates as a plain file: the item column is
    found, and the user column too (another user's items never leak in)."""
    model = random_model(n_items=20)
    plain = "user_id,item_id\nu1,1015\nu2,1008\nu1,1011\n"
    cases = {
        "plain": plain.encode(),
        "bom": b"\xef\xbb\xbf" + plain.encode(),
        "quoted": b'"user_id","item_id","rank"\n"u1",1015,1\n"u2",1008,1\n"u1",1011,2\n',
        "spaced": b"user_id, item_id\nu1 , 1015\nu2, 1008\n u1, 1011\n",
    }
    for name, data in cases.items():
        p = tmp_path / f"{name}.csv"
        p.write_bytes(data)
        assert read_candidates(p, model, user="u1") == [1015, 1011], name
    p = tmp_path / "list.txt"
    p.write_bytes(b'\xef\xbb\xbf"item_id"\n1015\n1011\n')
    assert read_candidates(p, model) == [1015, 1011]

"""The deeprec-edge command: happy paths, formats, and user errors (one
line, exit status 2, no traceback, existing files untouched)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from deeprec_edge import load_model
from deeprec_edge.cli import main
from deeprec_edge.demo import demo_paths


@pytest.fixture()
def files(tmp_path):
    m, h = demo_paths()
    shutil.copy(m, tmp_path / "w.npz")
    shutil.copy(h, tmp_path / "h.csv")
    return tmp_path / "w.npz", tmp_path / "h.csv"


def run(*args):
    """The installed command in a subprocess (exit code, stdout, stderr).

    Runs in the tests folder: ``python -m`` puts the working directory first
    on sys.path, and from the repository root that would import the source
    tree (which has no compiled extension) instead of the installed package.
    """
    p = subprocess.run([sys.executable, "-m", "deeprec_edge", *map(str, args)],
                       capture_output=True, text=True, timeout=300,
                       cwd=os.path.dirname(os.path.abspath(__file__)))
    return p.returncode, p.stdout, p.stderr


def test_help_everywhere(capsys):
    for args in ([], ["finetune"], ["recommend"], ["info"], ["demo"]):
        with pytest.raises(SystemExit) as e:
            main(args + ["--help"])
        assert e.value.code == 0
        out = capsys.readouterr().out
        assert "usage: deeprec-edge" in out


def test_demo_runs_and_improves(capsys):
    assert main(["demo", "-q"]) == 0
    out = capsys.readouterr().out
    assert "before fine-tuning" in out and "after fine-tuning" in out
    line = [ln for ln in out.splitlines() if ln.startswith("held-out")][0]
    before, after = [float(x) for x in
                     line.split("Recall@20 ")[1].split(", MRR")[0].replace("(global)", "")
                     .replace("(personal)", "").split("->")]
    assert after > before


def test_finetune_recommend_info_end_to_end(files, tmp_path):
    w, h = files
    out = tmp_path / "me.npz"
    code, so, se = run("finetune", w, h, "-o", out, "--epochs", "2", "--format", "json")
    assert code == 0, se
    summary = json.loads(so)
    assert summary["clicks_used"] == 240 and os.path.exists(out)
    assert load_model(out).personal is not None
    code, so, se = run("recommend", out, "--history", h, "-k", "5", "--format", "csv")
    assert code == 0, se
    rows = so.strip().splitlines()
    assert rows[0] == "rank,item_id,score" and len(rows) == 6
    code, so, se = run("recommend", out, "-k", "3", "--format", "json")
    assert code == 0 and len(json.loads(so)) == 3
    code, so, se = run("info", out)
    assert code == 0 and "personal" in so.lower()


def test_finetune_head_only_with_pull(files, tmp_path, capsys):
    """--head-only keeps the GRU layer the global one; --l2-global is accepted."""
    from deeprec_edge.model import params_of
    w, h = files
    out = tmp_path / "me.npz"
    assert main(["finetune", str(w), str(h), "-o", str(out), "--epochs", "1", "--head-only",
                 "--l2-global", "0.5", "--optimizer", "sgd", "--lr", "0.1", "--holdout", "0", "-q",
                 "--format", "json"]) == 0
    capsys.readouterr()
    g, p = params_of(load_model(w)), params_of(load_model(out))
    for a, b in zip(p.layers[-1], g.layers[-1]):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(p.b_p, g.b_p)


def _one_line_error(code, out, err):
    assert code == 2, (code, out, err)
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("deeprec-edge: error:"), err
    return lines[0]


def test_errors_are_one_line(files, tmp_path):
    w, h = files
    msg = _one_line_error(*run("info", tmp_path / "missing.npz"))
    assert "missing.npz" in msg
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"garbage, not a zip archive")
    _one_line_error(*run("info", bad))
    trunc = tmp_path / "trunc.npz"
    trunc.write_bytes(w.read_bytes()[:5000])
    _one_line_error(*run("finetune", trunc, h, "-o", tmp_path / "o.npz"))
    garbage = tmp_path / "g.csv"
    garbage.write_text("item_id,timestamp\n1001,1700000000\n1002,not-a-time\n")
    msg = _one_line_error(*run("finetune", w, garbage, "-o", tmp_path / "o.npz"))
    assert "line 3" in msg
    unknown = tmp_path / "u.csv"
    unknown.write_text("item_id,timestamp\n5,1700000000\n6,1700000060\n")
    _one_line_error(*run("finetune", w, unknown, "-o", tmp_path / "o.npz"))
    assert not (tmp_path / "o.npz").exists()


def test_unwritable_output_keeps_previous_file(files, tmp_path):
    w, h = files
    ro = tmp_path / "ro"
    ro.mkdir()
    prev = ro / "p.npz"
    shutil.copy(w, prev)
    before = prev.read_bytes()
    os.chmod(ro, 0o500)
    try:
        if os.access(ro, os.W_OK):  # root ignores permissions
            pytest.skip("running as root: directory permissions are not enforced")
        _one_line_error(*run("finetune", w, h, "-o", prev, "--epochs", "1"))
        assert prev.read_bytes() == before
    finally:
        os.chmod(ro, 0o700)
    msg = _one_line_error(*run("finetune", w, h, "-o", tmp_path / "nodir" / "p.npz"))
    assert "does not exist" in msg


def test_output_is_a_directory(files, tmp_path):
    w, h = files
    msg = _one_line_error(*run("finetune", w, h, "-o", tmp_path))
    assert "directory" in msg


def test_failed_save_keeps_previous_file(files, tmp_path, monkeypatch, capsys):
    """Root ignores directory permissions, so simulate the write failing at
    the last step (the rename): the previous personal model stays intact and
    no temporary file is left behind."""
    w, h = files
    prev = tmp_path / "p.npz"
    shutil.copy(w, prev)
    before = prev.read_bytes()

    def deny(src, dst):
        raise PermissionError(13, "Permission denied", str(dst))

    monkeypatch.setattr(os, "replace", deny)
    assert main(["finetune", str(w), str(h), "-o", str(prev), "--epochs", "1", "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("deeprec-edge: error:") and "Permission denied" in err
    assert prev.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["h.csv", "p.npz", "w.npz"]


def test_unwritable_location(files):
    w, h = files
    msg = _one_line_error(*run("finetune", w, h, "-o", "/proc/deeprec-edge-test.npz"))
    assert "/proc" in msg

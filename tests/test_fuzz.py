"""A short run of the fuzz harness (tests/fuzz.py) in CI, and checks that
the harness itself can fail: a planted exception is a finding, a planted
crash is reported with the case that caused it.  The long run and its
command are in tests/fuzz.py's docstring and the README."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

import fuzz

HERE = os.path.dirname(os.path.abspath(__file__))


def _run(*args, env=None):
    p = subprocess.run([sys.executable, os.path.join(HERE, "fuzz.py"), *args],
                       capture_output=True, text=True, timeout=1800, cwd=HERE,
                       env=dict(os.environ, **(env or {})))
    return p.returncode, p.stdout, p.stderr


@pytest.mark.slow
def test_short_fuzz_run_finds_nothing():
    code, out, err = _run("--calls", "6000", "--seed", "20261205", "--jobs", "2", "-q")
    summary = out.strip().splitlines()[-1]
    assert code == 0, out[-4000:] + err[-2000:]
    assert summary.startswith("calls: 6000 (binding ") and "findings: 0; crashes: 0" in summary


class _Planted(fuzz.Target):
    name = "binding"

    def case(self, rng, tmp):
        raise KeyError("planted")


def test_harness_reports_an_undocumented_exception(tmp_path):
    finding = fuzz.run_case(_Planted(), 0, 7, str(tmp_path))
    assert finding is not None and finding.startswith("KeyError: 'planted'")


def test_harness_reports_a_crash_and_carries_on(tmp_path):
    """A worker killed by a signal (SIGABRT here, as a segfault would) is a
    CRASH naming the case; the cases after it still run; the crashed
    worker's files are removed all the same."""
    code, out, err = _run("--calls", "40", "--targets", "binding", "--seed", "3",
                          env={"DEEPREC_EDGE_FUZZ_PLANT_CRASH": "17", "TMPDIR": str(tmp_path)})
    assert code == 1
    assert "CRASH binding:17 exit status" in out and "--replay binding:17" in out
    assert "calls: 40" in out.strip().splitlines()[-1]
    assert os.listdir(tmp_path) == []

"""One version, written once, everywhere it shows.

The version is written in csrc/include/deeprec_edge.h (DRE_VERSION_*);
setup.py reads it for the distribution and deeprec_edge.__version__ comes
from the compiled extension.  These tests check the installed package
against itself, and against the source tree when they run from a checkout
or an sdist (cibuildwheel copies only tests/ and pyproject.toml: then the
source-tree checks skip).
"""
from __future__ import annotations

import importlib.metadata as md
import os
import re
import subprocess
import sys

import pytest

import deeprec_edge
from deeprec_edge import kernels

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADER = os.path.join(ROOT, "csrc", "include", "deeprec_edge.h")
PYPROJECT = os.path.join(ROOT, "pyproject.toml")

VERSION_RE = re.compile(r"^\d+\.\d+\.\d+$")


def header_version(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    parts = []
    for name in ("MAJOR", "MINOR", "PATCH"):
        m = re.search(rf"^#define DRE_VERSION_{name} +(\d+)\s*$", text, re.MULTILINE)
        assert m, f"{path}: no DRE_VERSION_{name}"
        parts.append(m.group(1))
    return ".".join(parts)


def test_installed_versions_agree():
    v = deeprec_edge.__version__
    assert VERSION_RE.match(v), v
    assert md.version("deeprec-edge") == v, "distribution metadata vs __version__"
    assert "%d.%d.%d" % kernels.C_API_VERSION == v, "compiled C library vs __version__"


def test_cli_reports_the_version(tmp_path):
    # outside the checkout: `python -m` puts the working directory first on sys.path
    out = subprocess.run([sys.executable, "-m", "deeprec_edge", "--version"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == f"deeprec-edge {deeprec_edge.__version__}"


@pytest.mark.skipif(not os.path.exists(HEADER), reason="no source tree next to the tests")
def test_header_is_the_version_source():
    assert header_version(HEADER) == deeprec_edge.__version__, (
        "the installed package is not built from this source tree's header")


@pytest.mark.skipif(not os.path.exists(PYPROJECT), reason="no pyproject.toml next to the tests")
def test_pyproject_writes_no_version_of_its_own():
    with open(PYPROJECT, encoding="utf-8") as f:
        text = f.read()
    project = text.split("[project]", 1)[1].split("\n[", 1)[0]
    assert not re.search(r"^version\s*=", project, re.MULTILINE), (
        "pyproject.toml sets a version: it must stay dynamic (read from the C header)")
    assert re.search(r'^dynamic\s*=\s*\[[^]]*"version"', project, re.MULTILINE)


def test_license_ships_in_the_distribution():
    dist = md.distribution("deeprec-edge")
    assert dist.metadata["License-Expression"] == "Apache-2.0"
    licenses = [f for f in (dist.files or []) if f.name == "LICENSE"]
    assert licenses, "LICENSE is not in the installed distribution"
    text = licenses[0].read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0" in text

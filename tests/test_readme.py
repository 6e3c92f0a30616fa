"""The README as a newcomer meets it.

- Every code block runs, in README order, in one fresh folder, with the
  installed commands: bash blocks as scripts (``bash -e``), python blocks
  with this interpreter.  A block may be marked on the line above its fence:
  ``<!-- readme-test: skip: REASON -->`` (installs packages, real data,
  minutes of compute: the reason is required), ``<!-- readme-test: output of
  the block above -->`` (each of its lines must be in the previous block's
  stdout), ``<!-- readme-test: setup: FILES -->`` (inputs the README says
  come from elsewhere, made here by ``SETUP``).
- One install command for users and one for developers, nowhere else.
- Every section with a timing table names its machine (``Machine:`` with
  the lscpu model, whether AVX-512 was exposed, the kernel path).

The README is not in a wheel's test sources: these tests skip there.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
READMES = [os.path.join(ROOT, "README.md"), os.path.join(ROOT, "bench", "README.md")]
README = READMES[0]

pytestmark = pytest.mark.skipif(not os.path.exists(README),
                                reason="README.md is not here (tests run from a wheel)")

_FENCE = re.compile(r"^```(\w*)\s*$")
_MARK = re.compile(r"^<!--\s*readme-test:\s*(.*?)\s*-->$")


def code_blocks(text):
    """[(language, code, marker or None, line number)] of every fenced block."""
    lines = text.splitlines()
    out, i = [], 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        j = i + 1
        while not lines[j].startswith("```"):
            j += 1
        mark = _MARK.match(lines[i - 1].strip()) if i else None
        out.append((m.group(1), "\n".join(lines[i + 1:j]) + "\n",
                    mark.group(1) if mark else None, i + 1))
        i = j + 1
    return out


def sections(text):
    """{heading: body} of the '## ' sections."""
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return {parts[k].strip(): parts[k + 1] for k in range(1, len(parts), 2)}


def _read(path=README):
    with open(path, encoding="utf-8") as f:
        return f.read()


# --------------------------------------------------------------------------
# inputs the README says come from elsewhere
# --------------------------------------------------------------------------


def _clicks_tsv(path):
    """A session log on the demo catalogue (GRU4Rec's tab-separated format),
    sessions numbered from 1 (so session "42" exists)."""
    from deeprec_edge.trainer.demo import ID_OFFSET, make_world
    world = make_world(seed=5)
    items, starts = world.global_log(700)
    session = np.cumsum(starts)
    t = 1_600_000_000 + np.arange(items.size) * 60 + session * 7200
    with open(path, "w", encoding="utf-8") as f:
        f.write("SessionId\tItemId\tTime\n")
        for s, i, tt in zip(session.tolist(), items.tolist(), t.tolist()):
            f.write(f"{s}\t{i + ID_OFFSET}\t{tt}\n")


def _u_data(path):
    """MovieLens-100k's format (user, item, rating, time; tab-separated)."""
    from deeprec_edge.trainer.synthetic import make_synthetic
    inter, _ = make_synthetic(n_users=40, n_items=120, sessions_per_user=6, seed=3)
    df = inter.df
    with open(path, "w", encoding="utf-8") as f:
        for u, i, t in zip(df["user"].tolist(), df["item"].tolist(), df["time"].tolist()):
            f.write(f"{u + 1}\t{i + 1}\t4\t{int(t)}\n")


SETUP = {"clicks.tsv": _clicks_tsv, "u.data": _u_data}


# --------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------


def test_every_readme_block_runs(tmp_path):
    pytest.importorskip("pandas", reason="the README's trainer blocks need the trainer extra")
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep
               + os.environ.get("PATH", ""))
    env.pop("PYTHONPATH", None)
    prev_out, ran = None, 0
    for lang, code, mark, line in code_blocks(_read()):
        where = f"README.md line {line}"
        if mark and mark.startswith("skip:"):
            assert mark[len("skip:"):].strip(), f"{where}: a skip needs a reason"
            continue
        if mark == "output of the block above":
            assert prev_out is not None, where
            for want in code.strip().splitlines():
                assert want in prev_out, f"{where}: {want!r} not in the output:\n{prev_out}"
            continue
        if mark and mark.startswith("setup:"):
            for name, make in SETUP.items():
                if name in mark:
                    make(str(tmp_path / name))
        assert lang in ("bash", "python"), f"{where}: a block of {lang or 'no language'} " \
                                           f"without a readme-test marker"
        cmd = ["bash", "-e", "-o", "pipefail", "-c", code] if lang == "bash" else \
            [sys.executable, "-c", code]
        p = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=1800)
        assert p.returncode == 0, f"{where} ({lang}) failed:\n{code}\n{p.stdout[-3000:]}" \
                                  f"\n{p.stderr[-3000:]}"
        prev_out, ran = p.stdout, ran + 1
    assert ran >= 3


def test_one_install_command_for_users_and_one_for_developers():
    installs = [(mark, ln.strip()) for _, code, mark, _ in code_blocks(_read())
                for ln in code.splitlines() if re.match(r"\s*(python3? -m )?pip install", ln)]
    assert len(installs) == 2, installs
    user, dev = (cmd for _, cmd in installs)
    assert user.startswith("pip install .") and "# users" in user, user
    assert ".[trainer,test]" in dev and "# developers" in dev, dev
    assert "pip install" in sections(_read())["Install"]


def test_quickstart_says_where_its_files_come_from():
    quick = sections(_read())["Quickstart"]
    block = next(c for lang, c, _, _ in code_blocks(quick) if lang == "bash")
    made = block.index("deeprec-edge demo --files .")
    assert made < block.index("deeprec-edge finetune weights.npz history.csv")
    assert "deeprec-train fit" in quick and "item_id,timestamp" in quick


_TIMING = re.compile(r"\d(\.\d+)?\s?(ms|µs|us|s)\b|GFLOP/s|\d(\.\d+)?x\b")


@pytest.mark.parametrize("path", READMES, ids=["README.md", "bench/README.md"])
def test_every_timing_table_names_its_machine(path):
    if not os.path.exists(path):
        pytest.skip(f"{path} is not here")
    checked = 0
    for title, body in sections(_read(path)).items():
        rows = [ln for ln in body.splitlines() if ln.startswith("|") and "---" not in ln]
        results = [ln for ln in rows if _TIMING.search(ln.split("|", 2)[-1])]
        if len(results) < 2:        # a table explaining a column is not a result
            continue
        machines = [p for p in re.split(r"\n\s*\n", body) if p.strip().startswith("Machine:")]
        assert machines, f"{path}, section {title!r}: a timing table without a 'Machine:' line"
        for m in machines:
            for part in ("lscpu model", "avx512", "kernel path"):
                assert part in m, f"{path}, section {title!r}: the machine line lacks {part!r}"
        checked += 1
    assert checked, f"{path}: no timing table found (the check would pass vacuously)"


def test_demo_points_to_files_you_have():
    from deeprec_edge.demo import NEXT_STEPS
    assert NEXT_STEPS.startswith("deeprec-edge demo --files .")

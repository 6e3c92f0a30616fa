"""Conventions of the test suite itself, checked on its source.

No wall-clock assertion in a unit test: a test that asserts how long
something took fails under emulation (qemu runs ~13x slower) and on slow
boards, and passes on a fast machine whatever the code does.  Speed goals
live in bench/ (pytest-benchmark, ratios against peers in the same run).
Waiting for a child process with a generous timeout is a hang guard, not a
speed claim: use timeouts (``subprocess.run(timeout=...)``,
``helpers_model.wait_for``), not ``assert elapsed < x``.
"""
from __future__ import annotations

import ast
import os

HERE = os.path.dirname(os.path.abspath(__file__))
CLOCKS = {"time", "perf_counter", "monotonic", "process_time", "time_ns", "perf_counter_ns",
          "monotonic_ns", "process_time_ns"}


def _is_clock_call(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    f = node.func
    if isinstance(f, ast.Attribute):
        return f.attr in CLOCKS and isinstance(f.value, ast.Name) and f.value.id == "time"
    return isinstance(f, ast.Name) and f.id in CLOCKS and f.id != "time"


def wall_clock_asserts(source: str):
    """(line, text) of every assert that compares a clock reading (a call of
    time.perf_counter() & co., or a name assigned from one)."""
    tree = ast.parse(source)
    timed = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)) and node.value is not None \
                and any(_is_clock_call(n) for n in ast.walk(node.value)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            timed |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assert) and any(
                isinstance(n, ast.Compare) and any(
                    _is_clock_call(m) or (isinstance(m, ast.Name) and m.id in timed)
                    for m in ast.walk(n)) for n in ast.walk(node.test)):
            found.append((node.lineno, ast.get_source_segment(source, node)))
    return found


def test_the_detector_finds_what_it_should():
    src = ("import time\nfrom time import perf_counter\nt0 = time.perf_counter()\nrun()\n"
           "took = time.perf_counter() - t0\nassert took < 20.0\n"
           "assert perf_counter() - t0 < 1\nassert len(x) == 3\nelapsed = 5\n"
           "assert time.monotonic() > 0 or True\n")
    assert [ln for ln, _ in wall_clock_asserts(src)] == [6, 7, 10]


def test_no_unit_test_asserts_on_wall_clock_time():
    bad = []
    for root, _, files in os.walk(HERE):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(root, name)
                with open(path, encoding="utf-8") as f:
                    for line, text in wall_clock_asserts(f.read()):
                        bad.append(f"{os.path.relpath(path, HERE)}:{line}: {text}")
    assert not bad, "wall-clock assertions in unit tests (move speed goals to bench/):\n" + \
        "\n".join(bad)

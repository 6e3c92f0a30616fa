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
    code, so, se = run("finetune", w, h, "-o", out, "--epochs", "2", "--json")
    assert code == 0, se
    summary = json.loads(so)
    # the demo recipe's gru part holds its newest clicks out: they stay new
    assert summary["clicks_used"] + summary["clicks_left_new"] == 240 and os.path.exists(out)
    assert summary["clicks_used"] == summary["gru"]["heldout_first_target"]
    assert load_model(out).personal is not None
    code, so, se = run("recommend", out, "--history", h, "-k", "5", "--csv")
    assert code == 0, se
    rows = so.strip().splitlines()
    assert rows[0] == "rank,item_id,score" and len(rows) == 6
    code, so, se = run("recommend", out, "-k", "3", "--json")
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
                 "--json"]) == 0
    capsys.readouterr()
    g, p = params_of(load_model(w)), params_of(load_model(out))
    for a, b in zip(p.layers[-1], g.layers[-1]):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(p.b_p, g.b_p)


def test_finetune_recipe_flags(files, tmp_path, capsys):
    """No flags: the model file's recipe; --parts/--l2/--max-events override it and the
    summary says which recipe ran; --parts none keeps the global model."""
    w, h = files
    g = load_model(w)
    out = tmp_path / "me.npz"
    assert main(["finetune", str(w), str(h), "-o", str(out), "-q", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["recipe"] == g.recipe.to_dict()
    assert main(["finetune", str(w), str(h), "-o", str(out), "-q", "--json", "--parts",
                 "offset,bias", "--l2", "2.5", "--max-events", "50", "--holdout", "0"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["recipe"]["parts"] == ["offset", "bias"] and s["recipe"]["l2"] == 2.5
    assert s["recipe"]["max_events"] == 50 and s["personal_parts"]["events"] == 50
    p = load_model(out)
    assert not np.array_equal(p.b_p, g.b_p) and p.personal_bias_index is not None
    assert main(["finetune", str(w), str(h), "-o", str(out), "-q", "--parts", "offset,bias",
                 "--holdout", "0"]) == 0
    text = capsys.readouterr().out
    assert "personal parts offset+bias: " in text and ", loss " in text
    assert main(["finetune", str(w), str(h), "-o", str(out), "-q", "--parts", "none"]) == 0
    text = capsys.readouterr().out
    assert "kept the global model: no personal parts in the recipe" in text
    # nothing fitted: the summary names no personal parts (it once said "N events")
    assert "personal parts" not in text.replace("no personal parts in the recipe", "")
    code, so, se = run("finetune", w, h, "-o", out, "--parts", "magic")
    assert "--parts: unknown part(s) magic" in _one_line_error(code, so, se)


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


# --------------------------------------------------------------------------
# outputs that are inputs, or not regular files
# --------------------------------------------------------------------------


def test_output_that_is_an_input_is_refused(files, tmp_path):
    """-o onto the history, the model or the candidate file -- also through a
    symbolic or a hard link -- is refused before any work; nothing changes."""
    w, h = files
    cands = tmp_path / "c.txt"
    cands.write_text("item_id\n1001\n1002\n")
    os.symlink(h, tmp_path / "h-link.csv")
    os.link(w, tmp_path / "w-hard.npz")
    before = {p: p.read_bytes() for p in (w, h, cands)}
    for out, what in ((h, "the history HISTORY"), (w, "the model WEIGHTS"),
                      (tmp_path / "h-link.csv", "the history HISTORY"),
                      (tmp_path / "w-hard.npz", "the model WEIGHTS"),
                      (cands, "the --candidates file")):
        msg = _one_line_error(*run("finetune", w, h, "-o", out, "--candidates", cands,
                                   "--epochs", "1"))
        assert f"refusing to write {out}: it is {what}" in msg, msg
        assert {p: p.read_bytes() for p in before} == before
    assert os.path.islink(tmp_path / "h-link.csv")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_output_is_refused_and_kept(files, tmp_path):
    w, h = files
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    msg = _one_line_error(*run("finetune", w, h, "-o", fifo, "--epochs", "1"))
    assert "it is a FIFO (named pipe), not a regular file" in msg
    import stat
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


# --------------------------------------------------------------------------
# numeric options: checked at parse time, naming the option
# --------------------------------------------------------------------------

BAD_OPTIONS = [
    ("finetune", "--batch-size", "0"), ("finetune", "--negatives", "100000000"),
    ("finetune", "--holdout", "-0.1"), ("finetune", "--holdout", "nan"),
    ("finetune", "--holdout", "1.5"), ("finetune", "--holdout", "1"),
    ("finetune", "--epochs", "0"), ("finetune", "--epochs", "-1"),
    ("finetune", "--epochs", "2.5"), ("finetune", "--l2-global", "nan"),
    ("finetune", "--l2-global", "-1"), ("finetune", "--lr", "nan"), ("finetune", "--lr", "0"),
    ("finetune", "--lr", "inf"), ("finetune", "--window", "0"), ("finetune", "--seed", "-1"),
    ("finetune", "--alpha", "-0.5"), ("finetune", "--alpha", "inf"),
    ("recommend", "-k", "0"), ("recommend", "-k", "x"), ("demo", "-k", "-3"),
    ("demo", "--seed", "1e3"),
]


@pytest.mark.parametrize("cmd,option,value", BAD_OPTIONS)
def test_numeric_options_are_validated(files, cmd, option, value, capsys):
    w, h = files
    args = {"finetune": [str(w), str(h)], "recommend": [str(w)], "demo": []}[cmd]
    with pytest.raises(SystemExit) as e:
        main([cmd, *args, option, value])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"argument {option}: must be " in err and repr(value) in err, err


def test_option_combination_out_of_memory_bounds_is_one_line(files, tmp_path):
    w, h = files
    msg = _one_line_error(*run("finetune", w, h, "-o", tmp_path / "o.npz",
                               "--batch-size", "10000", "--window", "1000"))
    assert "--batch-size x --window x (--batch-size x --window + --negatives)" in msg
    assert not (tmp_path / "o.npz").exists()


def test_help_states_the_ranges(capsys):
    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "windows per batch, an integer in [1, 10000]" in out
    assert "in [0, 0.9] (default: the model's recipe" in out
    # the parser's range is the recipe's: 0.95 fails when parsed, naming the option
    with pytest.raises(SystemExit):
        main(["finetune", "w.npz", "h.csv", "--holdout", "0.95"])
    assert "argument --holdout: must be a number in [0, 0.9], got '0.95'" in \
        capsys.readouterr().err


# --------------------------------------------------------------------------
# conventions shared with deeprec-train (issue 10, item 20)
# --------------------------------------------------------------------------


def _options(parser):
    """{subcommand: {option string: argparse action}}"""
    out = {}
    for act in parser._actions:
        if isinstance(act, __import__("argparse")._SubParsersAction):
            for name, sub in act.choices.items():
                out[name] = {s: a for a in sub._actions for s in a.option_strings}
    return out


def test_json_is_a_flag_that_prints_everywhere(capsys, files):
    """--json is a flag (no argument) that prints JSON on stdout, in every
    command that has machine-readable output; no --format option remains."""
    from deeprec_edge.cli import build_parser
    opts = _options(build_parser())
    for cmd in ("finetune", "recommend", "info"):
        act = opts[cmd]["--json"]
        assert act.nargs == 0 and act.const is True, cmd
        assert "--format" not in opts[cmd], cmd
    assert "--head-only" in opts["finetune"]
    w, _ = files
    assert main(["info", str(w), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["items"] == 300
    assert main(["recommend", str(w), "-k", "2", "--json"]) == 0
    assert [r["rank"] for r in json.loads(capsys.readouterr().out)] == [1, 2]
    with pytest.raises(SystemExit):
        main(["recommend", str(w), "--json", "--csv"])


def test_deeprec_train_follows_the_same_conventions():
    """deeprec-train: --json is a flag that prints (a report file is
    --report FILE), and every fine-tuning option of `evaluate` is
    `deeprec-edge finetune`'s option with the --ft- prefix."""
    pytest.importorskip("pandas")
    from deeprec_edge.cli import build_parser as edge_parser
    from deeprec_edge.trainer.cli import build_parser as train_parser
    train, edge = _options(train_parser()), _options(edge_parser())["finetune"]
    for cmd, opts in train.items():
        if "--json" in opts:
            assert opts["--json"].nargs == 0, f"deeprec-train {cmd} --json takes an argument"
    ft = {s for s in train["evaluate"] if s.startswith("--ft-")}
    assert ft, "no --ft- options"
    for s in ft - {"--ft-candidates"}:
        assert "--" + s[len("--ft-"):] in edge, f"{s} has no deeprec-edge finetune twin"
        a, b = train["evaluate"][s], edge["--" + s[len("--ft-"):]]
        assert type(a) is type(b) and a.type is b.type, s


# --------------------------------------------------------------------------
# stdout closed early
# --------------------------------------------------------------------------


def test_closed_stdout_stops_quietly(tmp_path):
    """`deeprec-edge recommend ... | head -1`: no "Broken pipe", no traceback,
    the exit status of a process ended by SIGPIPE (141)."""
    from helpers_model import random_model
    from deeprec_edge import save_model
    m = tmp_path / "big.npz"
    save_model(random_model(n_items=5000, seed=1), m)        # > 64 KB of output
    p = subprocess.Popen([sys.executable, "-m", "deeprec_edge", "recommend", str(m), "-k",
                          "5000", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         cwd=os.path.dirname(os.path.abspath(__file__)))
    first = p.stdout.readline()
    p.stdout.close()
    err = p.stderr.read().decode()
    p.stderr.close()
    assert p.wait(timeout=120) == 141, err
    assert first.strip() == b"[" and err == ""


# --------------------------------------------------------------------------
# the source tree shadowing the installed package (python -m from the root)
# --------------------------------------------------------------------------


def test_source_tree_import_says_what_to_do(tmp_path):
    """`python -m pytest` / `python -m deeprec_edge` from the repository root
    import the source tree, which has no compiled core: the error must say
    so and what to run instead (it was a bare ModuleNotFoundError)."""
    import deeprec_edge
    pkg = os.path.dirname(os.path.abspath(deeprec_edge.__file__))
    tree = tmp_path / "repo"
    shutil.copytree(pkg, tree / "deeprec_edge", ignore=shutil.ignore_patterns(
        "_core*.so", "_core*.pyd", "__pycache__", "trainer"))
    (tree / "deeprec_edge" / "_core.pyx").write_text("# the Cython source\n")
    # -S: no site-packages, so nothing there (an editable install's import
    # hook, say) can supply the missing core; the message needs no numpy
    for args in (["-c", "import deeprec_edge"], ["-m", "deeprec_edge", "--help"]):
        p = subprocess.run([sys.executable, "-S", *args], cwd=tree, capture_output=True,
                           text=True, timeout=120)
        last = p.stderr.strip().splitlines()[-1]
        assert p.returncode != 0 and last.startswith("ImportError: deeprec_edge was imported "
                                                     "from its source tree"), p.stderr
        for hint in ("pip install .", "run `pytest`, not `python -m pytest`",
                     "`deeprec-edge`, not `python -m deeprec_edge`"):
            assert hint in last, last


def test_base_model_is_an_input_too(files, tmp_path):
    """-o onto the --base global model is refused before any work (it was
    replaced by a delta that only that global model can read)."""
    w, h = files
    g = tmp_path / "g.npz"
    shutil.copy(w, g)
    before = g.read_bytes()
    msg = _one_line_error(*run("finetune", w, h, "--base", g, "--delta", "-o", g))
    assert f"refusing to write {g}: it is the global model --base" in msg, msg
    assert g.read_bytes() == before


def test_head_only_adds_the_gru_part_to_the_files_recipe(files, tmp_path, capsys):
    """--head-only adds gru to the recipe the model file names (it replaced it)."""
    from deeprec_edge.model import save_model
    w, h = files
    m = load_model(w)
    m.config["finetune"] = dict(m.recipe.to_dict(), parts=["offset", "bias"])
    save_model(m, tmp_path / "r.npz")
    out = tmp_path / "me.npz"
    assert main(["finetune", str(tmp_path / "r.npz"), str(h), "-o", str(out), "-q", "--json",
                 "--head-only", "--epochs", "1"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["recipe"]["parts"] == ["offset", "bias", "gru"]
    assert main(["finetune", str(tmp_path / "r.npz"), str(h), "-o", str(out), "-q",
                 "--head-only", "--epochs", "1"]) == 0
    assert "recipe: offset+bias+gru, prior strength 10 (as given)" in capsys.readouterr().out


def test_recommend_csv_quotes_string_ids(tmp_path, capsys):
    """String ids with commas or quotes survive recommend --csv (read back by csv)."""
    import csv
    import io
    from deeprec_edge.model import model_from_params, params_of, save_model
    from helpers_model import random_model
    base = random_model(n_items=5, e=8, hidden=[12], seed=0)
    ids = np.array(['shirt, blue', 'mug "xl"', "lamp", "desk", "pen"])
    save_model(model_from_params(params_of(base), ids, base.popularity), tmp_path / "s.npz")
    assert main(["recommend", str(tmp_path / "s.npz"), "--csv", "-k", "5"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["rank", "item_id", "score"] and all(len(r) == 3 for r in rows)
    assert sorted(r[1] for r in rows[1:]) == sorted(ids.tolist())


def test_demo_output_never_replaces_the_packaged_files(tmp_path, monkeypatch, capsys):
    """demo -o onto the packaged demo model is refused (demo --files would
    then hand out a personal model as the global one)."""
    import deeprec_edge.demo as demo
    m, h = demo_paths()
    shutil.copy(m, tmp_path / "demo_model.npz")
    shutil.copy(h, tmp_path / "demo_history.csv")
    fake = (str(tmp_path / "demo_model.npz"), str(tmp_path / "demo_history.csv"))
    monkeypatch.setattr(demo, "demo_paths", lambda: fake)
    before = (tmp_path / "demo_model.npz").read_bytes()
    assert main(["demo", "-q", "-o", fake[0]]) == 2
    assert "it is the packaged demo model" in capsys.readouterr().err
    assert (tmp_path / "demo_model.npz").read_bytes() == before


def test_candidates_with_no_known_id_are_an_error(files, tmp_path):
    """A candidate set none of whose ids the model knows stops the command
    (it printed an empty ranking, and fine-tuning scored 0 -> 0 and kept
    the global model for a reason it did not say)."""
    w, h = files
    c = tmp_path / "c.csv"
    c.write_text("user_id,item_id\nu1,nope\nu1,nada\nu2,1001\n")
    for cmd in (("recommend", w, "--history", h), ("finetune", w, h, "-o", tmp_path / "o.npz")):
        msg = _one_line_error(*run(*cmd, "--candidates", c, "--user", "u1"))
        assert "none of its 2 candidate ids is in the model's catalogue" in msg, msg
        assert "for user u1" in msg
    assert not (tmp_path / "o.npz").exists()


def test_kept_global_says_why_for_the_gru_part(files, tmp_path, capsys):
    """When the gru part keeps epoch 0 the summary says so, not "no personal
    parts in the recipe"."""
    w, h = files
    c = tmp_path / "c.csv"          # two known items the held-out clicks never hit:
    c.write_text("item_id\n1215\n1211\n")   # Recall@20 0 -> 0, so epoch 0 is kept
    assert main(["finetune", str(w), str(h), "-o", str(tmp_path / "o.npz"), "-q", "--json",
                 "--parts", "gru", "--candidates", str(c)]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["best_epoch"] == 0 and s["recall20_after"] == 0.0
    assert s["kept_global"].startswith("the gru part's held-out check kept epoch 0"), s


def _strict_json(text):
    """json.loads that refuses NaN/Infinity (what JSON parsers other than
    Python's do)."""
    def refuse(c):
        raise ValueError(f"{c} is not JSON")
    return json.loads(text, parse_constant=refuse)


def test_json_output_is_strict_json_when_nothing_is_held_out(files, tmp_path, capsys):
    """--holdout 0 leaves the held-out numbers undefined: they are null, not NaN
    (json.dumps wrote NaN, which jq, JavaScript and most parsers reject)."""
    w, h = files
    out = tmp_path / "me.npz"
    assert main(["finetune", str(w), str(h), "-o", str(out), "-q", "--json", "--parts",
                 "offset", "--holdout", "0"]) == 0
    s = _strict_json(capsys.readouterr().out)
    assert s["heldout_events"] == 0 and s["recall20_before"] is None
    assert main(["info", str(out), "--json"]) == 0
    _strict_json(capsys.readouterr().out)
    assert main(["recommend", str(out), "-k", "3", "--json"]) == 0
    assert len(_strict_json(capsys.readouterr().out)) == 3


def test_an_empty_output_name_is_an_error_not_the_default(files, tmp_path):
    """-o "" wrote to the default WEIGHTS.personal.npz without a word."""
    w, h = files
    code, so, se = run("finetune", w, h, "-o", "")
    assert "-o/--output: the file name is empty" in _one_line_error(code, so, se)
    assert not os.path.exists(str(w).replace(".npz", ".personal.npz"))


def test_demo_files_include_a_candidate_set_for_the_readme_s_python(tmp_path, capsys):
    """The README's Python quickstart reads cands.csv next to weights.npz and
    history.csv (it read cands.npz, made only in the Trainer section further
    down, so a reader following it in order hit FileNotFoundError)."""
    from deeprec_edge.candidates import read_candidates
    from deeprec_edge.demo import DEMO_CANDIDATES
    assert main(["demo", "--files", str(tmp_path)]) == 0
    assert "cands.csv" in capsys.readouterr().out
    m = load_model(tmp_path / "weights.npz")
    ids = read_candidates(str(tmp_path / "cands.csv"), model=m)
    assert len(ids) == len(set(ids)) == DEMO_CANDIDATES
    idx, unknown = m.item_index(ids)
    assert not unknown.any()
    pop = np.asarray(m.popularity)
    assert pop[idx].min() >= np.sort(pop)[::-1][DEMO_CANDIDATES - 1]     # the most popular
    before = (tmp_path / "cands.csv").read_bytes()
    code, so, se = run("demo", "--files", tmp_path)          # never over existing files
    assert "exists" in _one_line_error(code, so, se)
    assert (tmp_path / "cands.csv").read_bytes() == before


def test_a_stray_argument_gets_the_command_s_usage_and_a_hint(files):
    """recommend MODEL HISTORY printed the top-level usage and 'unrecognized
    arguments: history.csv', with no word of --history."""
    w, h = files
    code, so, se = run("recommend", w, h)
    assert code == 2 and "Traceback" not in se
    assert "usage: deeprec-edge recommend" in se
    assert f"give the history as --history {h}" in se
    code, so, se = run("finetune", w, h, "--bogus")
    assert code == 2 and "deeprec-edge finetune: error: unrecognized arguments: --bogus" in se


def test_recommend_says_on_stderr_what_the_history_lost(files, tmp_path):
    """Unknown item ids in --history were skipped without a word (finetune
    reports them); the note goes to stderr, the ranking on stdout stays CSV."""
    w, h = files
    lines = h.read_text().splitlines()
    h2 = tmp_path / "h2.csv"
    h2.write_text("\n".join(lines[:6] + ["nope-42," + lines[5].split(",", 1)[1]]) + "\n")
    code, so, se = run("recommend", w, "--history", h2, "-k", "3", "--csv")
    assert code == 0 and so.splitlines()[0] == "rank,item_id,score" and len(so.splitlines()) == 4
    assert "1 of 6 clicks skipped (1 on items outside the model's catalogue, e.g. 'nope-42')" \
        in se
    code, so, se = run("recommend", w, "--history", h, "-k", "3", "--csv")
    assert code == 0 and se == ""

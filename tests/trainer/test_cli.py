"""The deeprec-train command: the whole chain fit -> candidates -> export ->
evaluate on a small generated log, export/slice round trips, user errors,
and the command without the trainer extra."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from deeprec_edge import load_model, read_history, recommend
from deeprec_edge.cli import main as edge_main
from deeprec_edge.model import make_personal, model_from_params, params_of, save_model
from deeprec_edge.trainer.cli import INSTALL_HINT, main
from deeprec_edge.trainer.export import read_item_list, slice_model
from deeprec_edge.trainer.fit import FitConfig, init_params
from deeprec_edge.trainer.synthetic import make_synthetic

READER = ["--format", "csv", "--user-col", "user_id", "--item-col", "item_id",
          "--time-col", "time"]
SMALL = ["--hidden", "16", "--epochs", "2", "--negatives", "32", "-q"]


@pytest.fixture(scope="module")
def log_csv(tmp_path_factory):
    inter, _ = make_synthetic(n_users=50, n_items=80, n_clusters=4, drift=0.5,
                              sessions_per_user=6, seed=1)
    path = tmp_path_factory.mktemp("log") / "log.csv"
    inter.to_frame()[["user_id", "item_id", "time"]].to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def chain(log_csv, tmp_path_factory):
    """fit -> candidates -> export (sliced to the candidates) -> evaluate."""
    d = tmp_path_factory.mktemp("chain")
    out = {"dir": d}
    assert main(["fit", str(log_csv), *READER, *SMALL, "--valid-split", "0.1",
                 "-o", str(d / "w.npz"), "--report", str(d / "fit.json")]) == 0
    assert main(["candidates", str(log_csv), *READER, "--model", str(d / "w.npz"), "-n", "15",
                 "-o", str(d / "c.npz"), "--csv", str(d / "c.csv"), "--report",
                 str(d / "c.json"), "-q"]) == 0
    assert main(["export", str(d / "w.npz"), "-o", str(d / "s.npz"), "--items",
                 str(d / "c.csv"), "--top-popular", "5"]) == 0
    assert main(["evaluate", str(log_csv), *READER, *SMALL, "--methods",
                 "popularity,item-knn,global,centralized,personal", "--set",
                 "simulate_users=20", "--set", "min_simulated_users=5", "--candidates", "15",
                 "--report", str(d / "r.json"), "--markdown", str(d / "r.md")]) == 0
    return out


def test_chain_fit(chain):
    d = chain["dir"]
    m = load_model(d / "w.npz")
    assert m.hidden_sizes == [16] and not m.is_personal
    assert m.item_ids.dtype.kind == "i" and m.item_ids.min() >= 1000      # catalogue ids
    assert m.config["session_gap_seconds"] == 3600.0 and m.config["fit"]["hidden"] == [16]
    rep = json.loads((d / "fit.json").read_text())
    assert len(rep["fit"]["epochs"]) == 2 and "recall@20" in rep["fit"]["epochs"][-1]
    assert rep["summary"]["clicks_per_s"] > 0


def test_chain_candidates(chain):
    d = chain["dir"]
    m = load_model(d / "w.npz")
    with np.load(d / "c.npz", allow_pickle=False) as z:
        sizes = np.diff(z["offsets"])
        assert np.all(sizes == 15) and np.isin(z["item_ids"], m.item_ids).all()
    rep = json.loads((d / "c.json").read_text())
    assert 0.0 < rep["recall"]["recall"] <= 1.0 and rep["mean_set_size"] == 15
    # a device gets its own user's rows of the CSV
    rows = (d / "c.csv").read_text().splitlines()
    user = rows[1].split(",")[0]
    (d / "mine.csv").write_text("\n".join([rows[0]] + [r for r in rows[1:]
                                                       if r.split(",")[0] == user]) + "\n")
    hist = d / "h.csv"
    hist.write_text("item_id,timestamp\n" + "".join(
        f"{i},{1_700_000_000 + 60 * k}\n" for k, i in enumerate(m.item_ids[:12].tolist())))
    assert edge_main(["finetune", str(d / "w.npz"), str(hist), "--candidates",
                      str(d / "mine.csv"), "--epochs", "1", "-o", str(d / "p.npz"), "-q"]) == 0
    assert load_model(d / "p.npz").is_personal


def test_device_reads_candidates_npz(chain):
    d = chain["dir"]
    with np.load(d / "c.npz", allow_pickle=False) as z:
        user = str(z["user_ids"][0])
    from deeprec_edge.candidates import read_candidates
    assert len(read_candidates(d / "c.npz", load_model(d / "w.npz"), user=user)) == 15


def test_chain_export_slice(chain, capsys):
    d = chain["dir"]
    full, sliced = load_model(d / "w.npz"), load_model(d / "s.npz")
    wanted = set(read_item_list(d / "c.csv"))
    order = np.argsort(-full.popularity, kind="stable")[:5]
    wanted |= {str(x) for x in full.item_ids[order].tolist()}
    assert {str(x) for x in sliced.item_ids.tolist()} == wanted
    assert sliced.config["sliced_from"] == {"fingerprint": full.fingerprint(),
                                            "n_items": full.n_items,
                                            "items_to_rank": len(wanted), "input_items": 0}
    assert edge_main(["info", str(d / "s.npz")]) == 0
    assert f"{len(wanted)}" in capsys.readouterr().out


def test_chain_evaluate(chain):
    d = chain["dir"]
    r = json.loads((d / "r.json").read_text())
    assert r["protocol"] == "deeprec" and r["command"][:2] == ["deeprec-train", "evaluate"]
    assert set(r["methods"]) == {"popularity", "item-knn", "global", "centralized", "personal"}
    s = r["methods"]["personal"]["full"]["optimistic"]
    assert s["n_units"] == r["data"]["evaluated_users"] > 5
    assert 0.0 <= s["recall@20"]["mean"] <= 1.0
    md = (d / "r.md").read_text()
    assert "DeepRec protocol" in md and "| personal |" in md
    # the global model chose its device recipe by simulating devices
    sel = r["global_model"]["recipe_selection"]
    assert sel["status"] in ("chosen",) or sel["status"].startswith("skipped")
    assert r["finetune"]["recipe"] == r["global_model"]["recipe"]


def test_export_round_trip(chain, tmp_path):
    src = chain["dir"] / "w.npz"
    for extra in ([], ["--compressed"]):
        out = tmp_path / f"e{len(extra)}.npz"
        assert main(["export", str(src), "-o", str(out), *extra]) == 0
        a, b = load_model(src), load_model(out)
        assert a.fingerprint() == b.fingerprint()
        np.testing.assert_array_equal(a.item_ids, b.item_ids)


def random_model(tied: bool, n=40, seed=0):
    cfg = FitConfig(hidden=[8], tied=tied, dim=8, embedding=6)
    p = init_params(n, cfg, seed)
    rng = np.random.default_rng(seed)
    p.b_out[...] = rng.normal(0, 0.1, n).astype(np.float32)
    ids = np.arange(n, dtype=np.int64) * 7 + 100
    return model_from_params(p, ids, rng.integers(1, 50, n).astype(np.float64))


@pytest.mark.parametrize("tied", [True, False])
def test_sliced_model_ranks_the_same_among_its_items(tied, tmp_path):
    m = random_model(tied)
    keep = m.item_ids[::3]
    s, info = slice_model(m, list(keep) + [99999])
    assert info["kept"] == len(keep) and info["unknown"] == 1
    assert s.n_items == len(keep) and (s.O is None) == tied
    save_model(s, tmp_path / "s.npz")
    s = load_model(tmp_path / "s.npz")
    h = tmp_path / "h.csv"
    clicks = keep[[0, 3, 5, 2, 8]]
    h.write_text("item_id,timestamp\n" + "".join(f"{i},{1_700_000_000 + 60 * k}\n"
                                                 for k, i in enumerate(clicks.tolist())))
    hf, hs = read_history(h, model=m), read_history(h, model=s)
    ids_f, sc_f = recommend(m, hf, k=len(keep), candidates=keep, exclude_clicked=False)
    ids_s, sc_s = recommend(s, hs, k=len(keep), exclude_clicked=False)
    np.testing.assert_array_equal(ids_f, ids_s)
    np.testing.assert_allclose(sc_f, sc_s, rtol=1e-5, atol=1e-6)


def test_slice_keeps_personal_biases():
    m = random_model(False)
    p = params_of(m)
    pm = make_personal(m, p, clicks_used=3, last_timestamp=1.0, seed=0, epochs=1,
                       bias_index=np.array([0, 1, 5]), bias=np.array([1.0, 2.0, 3.0]))
    s, _ = slice_model(pm, m.item_ids[[1, 2, 5]])
    assert s.is_personal
    assert s.personal_bias_index.tolist() == [0, 2]
    assert s.personal_bias.tolist() == [2.0, 3.0]
    s.validate()


def test_item_list_formats(tmp_path):
    (tmp_path / "a.txt").write_text("item_id\n1\n\n2\n")
    (tmp_path / "b.csv").write_text("user_id,item_id,rank\nu,3,1\nu,4,2\n")
    np.savez(tmp_path / "c.npz", item_ids=np.array([5, 6]))
    assert read_item_list(tmp_path / "a.txt") == ["1", "2"]
    assert read_item_list(tmp_path / "b.csv") == ["3", "4"]
    assert read_item_list(tmp_path / "c.npz") == [5, 6]
    # device click histories, as the device's reader takes them (--inputs): the item
    # column by any of its names, comma, tab or semicolon delimited
    for name, text in (("h1.csv", "itemId,timestamp\n7,1700000000\n8,1700000060\n"),
                       ("h2.csv", "Item;time\n7;1700000000\n8;1700000060\n"),
                       ("h3.tsv", "timestamp\taid\n1700000000\t7\n1700000060\t8\n"),
                       ("h4.csv", '\ufeff"item_id","timestamp"\n7,1700000000\n8,1\n')):
        (tmp_path / name).write_text(text, encoding="utf-8")
        assert read_item_list(tmp_path / name) == ["7", "8"], name
    (tmp_path / "h5.csv").write_text("item,item_id\n1,2\n")
    with pytest.raises(ValueError, match="ambiguous item column"):
        read_item_list(tmp_path / "h5.csv")


def test_export_inputs_that_keep_nothing_are_an_error(tmp_path, capsys):
    """--inputs whose ids the catalogue does not hold (a misread file) stop
    the export instead of writing a slice that loses every device click;
    unknown input clicks are counted."""
    m = random_model(False)
    save_model(m, tmp_path / "m.npz")
    (tmp_path / "items.txt").write_text("\n".join(str(x) for x in m.item_ids[:5].tolist()))
    (tmp_path / "h.csv").write_text("item_id,timestamp\nnope,1\nnada,2\n")
    assert main(["export", str(tmp_path / "m.npz"), "-o", str(tmp_path / "s.npz"), "--items",
                 str(tmp_path / "items.txt"), "--inputs", str(tmp_path / "h.csv")]) == 2
    assert "none of the 2 --inputs ids is in the catalogue" in capsys.readouterr().err
    assert not (tmp_path / "s.npz").exists()
    (tmp_path / "h.csv").write_text(f"item_id,timestamp\nnope,1\n{m.item_ids[20]},2\n")
    assert main(["export", str(tmp_path / "m.npz"), "-o", str(tmp_path / "s.npz"), "--items",
                 str(tmp_path / "items.txt"), "--inputs", str(tmp_path / "h.csv")]) == 0
    out = capsys.readouterr().out
    assert "1 of them only as inputs" in out and "1 --inputs clicks on items not in" in out
    assert load_model(tmp_path / "s.npz").n_items == 6


def test_fit_without_a_gap_rule_tells_devices_not_to_cut_sessions(log_csv, tmp_path):
    """fit --no-session-gap trains one session per user; the file said 3600 s,
    so devices cut sessions the model never saw cut."""
    from deeprec_edge.trainer.pipeline import NO_GAP_SECONDS
    out = tmp_path / "w.npz"
    assert main(["fit", str(log_csv), *READER, *SMALL, "--set", "simulate_users=0",
                 "--no-session-gap", "-o", str(out)]) == 0
    m = load_model(out)
    assert m.session_gap_seconds == NO_GAP_SECONDS
    h = tmp_path / "h.csv"
    h.write_text(f"item_id,timestamp\n{m.item_ids[0]},1000000\n{m.item_ids[1]},1500000\n"
                 f"{m.item_ids[2]},90000000\n")
    assert read_history(h, model=m).session_starts(m.session_gap_seconds).tolist() == \
        [True, False, False]


def test_user_errors(tmp_path, capsys, log_csv):
    w = tmp_path / "w.npz"
    assert main(["fit", str(tmp_path / "nope.csv"), *READER, "-o", str(w)]) == 2
    assert "no such file" in capsys.readouterr().err
    odd = tmp_path / "odd.csv"          # no header name says which column is the item
    odd.write_text("user_id,thing,time\n1,2,3\n")
    assert main(["fit", str(odd), "--format", "csv", "-o", str(w)]) == 2
    assert "--item-col" in capsys.readouterr().err
    assert main(["fit", str(log_csv), *READER, "-o", str(tmp_path / "no" / "w.npz")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["fit", str(log_csv), *READER, "--set", "train.nonsense=1", "-o", str(w)]) == 2
    assert "no such field" in capsys.readouterr().err
    m = random_model(True)
    save_model(m, tmp_path / "m.npz")
    (tmp_path / "items.txt").write_text("123456\n")
    assert main(["export", str(tmp_path / "m.npz"), "-o", str(tmp_path / "o.npz"),
                 "--items", str(tmp_path / "items.txt")]) == 2
    assert "none of the 1 requested items" in capsys.readouterr().err
    assert not (tmp_path / "o.npz").exists() and not w.exists()
    assert main(["evaluate", str(log_csv), *READER, "--methods", "global,magic"]) == 2
    assert "unknown method" in capsys.readouterr().err
    # a plot format matplotlib cannot write is refused before any work (and
    # before any other report file is written)
    pytest.importorskip("matplotlib")
    js = tmp_path / "r.json"
    assert main(["evaluate", str(log_csv), *READER, "--report", str(js),
                 "--plot", str(tmp_path / "p.xyz")]) == 2
    assert "unknown image format 'xyz'" in capsys.readouterr().err
    assert not js.exists()


def test_fit_flags_reach_the_config(log_csv, tmp_path):
    w = tmp_path / "w.npz"
    assert main(["fit", str(log_csv), *READER, "--hidden", "8,6", "--no-tied", "--dim", "5",
                 "--epochs", "1", "--set", "train.clip_norm=5", "--loss", "bpr-max",
                 "-o", str(w), "-q"]) == 0
    m = load_model(w)
    assert m.hidden_sizes == [8, 6] and not m.tied and m.dim == 5
    assert m.config["fit"]["train"]["clip_norm"] == 5 and m.config["loss"] == "bpr-max"


def test_evaluate_finetune_flags_reach_the_runtime(log_csv, tmp_path):
    """--ft-parts/--ft-l2 override the model's recipe, the gru part's flags are
    passed to deeprec_edge.finetune, all recorded in the report."""
    r = tmp_path / "r.json"
    assert main(["evaluate", str(log_csv), *READER, *SMALL, "--methods", "global,personal",
                 "--set", "simulate_users=0", "--validation", "--ft-parts", "gru,bias",
                 "--ft-l2", "4", "--ft-epochs", "1", "--ft-l2-global", "0.25",
                 "--ft-head-only", "--report", str(r)]) == 0
    ft = json.loads(r.read_text())["finetune"]
    assert ft["recipe"]["parts"] == ["bias", "gru"] and ft["recipe"]["l2"] == 4
    assert ft["gru_settings"] == {"epochs": 1, "l2_to_global": 0.25, "train_gru": False}
    assert main(["evaluate", str(log_csv), *READER, "--ft-parts", "everything"]) == 2


def test_evaluate_sessions_command(tmp_path):
    inter, _ = make_synthetic(n_users=40, n_items=50, n_clusters=2, seed=5)
    from deeprec_edge.trainer.data import split_by_time
    tr, te, _ = split_by_time(inter, 0.8, unit="session")
    for name, part in (("train.txt", tr), ("test.txt", te)):
        f = part.to_frame()
        f.rename(columns={"session": "SessionId", "item_id": "ItemId", "time": "Time"})[
            ["SessionId", "ItemId", "Time"]].to_csv(tmp_path / name, sep="\t", index=False)
    assert main(["evaluate-sessions", str(tmp_path / "train.txt"), str(tmp_path / "test.txt"),
                 *SMALL, "--report", str(tmp_path / "r.json")]) == 0
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["protocol"] == "sessions"
    assert set(r["methods"]) == {"popularity", "cooccurrence", "item-knn", "sknn", "v-sknn",
                                 "recency", "gru"}
    assert r["data"]["catalogue_items"] <= 50


@pytest.mark.heavy
def test_demo_data(tmp_path):
    assert main(["demo-data", "-o", str(tmp_path), "-q"]) == 0
    m = load_model(tmp_path / "demo_model.npz")
    h = read_history(tmp_path / "demo_history.csv", model=m)
    assert len(h) == 240 and h.n_unknown == 0


def test_without_the_trainer_extra(monkeypatch, capsys, tmp_path):
    real = importlib.util.find_spec

    def fake(name, *args, **kw):
        return None if name in ("pandas", "scipy") else real(name, *args, **kw)

    monkeypatch.setattr(importlib.util, "find_spec", fake)
    assert main(["fit", "log.csv", "-o", str(tmp_path / "w.npz")]) == 2
    err = capsys.readouterr().err
    assert INSTALL_HINT in err and "pandas, scipy" in err


def test_the_entry_module_imports_no_pandas():
    code = ("import sys, deeprec_edge.trainer.cli as c; "
            "c.build_parser(); print(sorted(m for m in ('pandas', 'scipy', 'tqdm') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.abspath(__file__)), timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_outputs_that_are_inputs_are_refused(log_csv, tmp_path, capsys):
    """fit -o LOG, export -o MODEL, evaluate --report LOG: refused with a message, the
    input untouched (also through a symbolic link)."""
    import shutil
    log = tmp_path / "log.csv"
    shutil.copy(log_csv, log)
    before = log.read_bytes()
    link = tmp_path / "link.csv"
    link.symlink_to(log)
    for argv in (["fit", str(log), *READER, *SMALL, "-o", str(log)],
                 ["fit", str(log), *READER, *SMALL, "-o", str(link)],
                 ["evaluate", str(log), *READER, *SMALL, "--report", str(log)]):
        assert main(argv) == 2
        assert "an input of this command" in capsys.readouterr().err
        assert log.read_bytes() == before
    m = tmp_path / "m.npz"
    assert main(["fit", str(log), *READER, *SMALL, "--set", "simulate_users=0", "-o",
                 str(m)]) == 0
    data = m.read_bytes()
    assert main(["export", str(m), "-o", str(m)]) == 2
    assert "an input of this command" in capsys.readouterr().err and m.read_bytes() == data


def test_numeric_options_name_their_range(log_csv, capsys):
    for argv, opt in ((["fit", "x.csv", "--epochs", "0", "-o", "m.npz"], "--epochs"),
                      (["fit", "x.csv", "--lr", "nan", "-o", "m.npz"], "--lr"),
                      (["fit", "x.csv", "--dropout-in", "1.5", "-o", "m.npz"], "--dropout-in"),
                      (["evaluate", "x.csv", "--quantile", "1"], "--quantile"),
                      (["evaluate", "x.csv", "--ft-holdout", "-0.1"], "--ft-holdout"),
                      (["candidates", "x.csv", "-n", "0", "-o", "c.npz"], "-n")):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        assert f"argument {opt}" in capsys.readouterr().err


def test_every_output_is_checked_before_any_work(log_csv, tmp_path, capsys):
    """fit/candidates --report onto the log, two outputs onto one file, or an
    output in a missing directory: refused before reading, nothing changed
    (fit --report LOG replaced the log with JSON; -o X --report X left an
    unreadable model; --report R --markdown R an unparseable report)."""
    import shutil
    log = tmp_path / "log.csv"
    shutil.copy(log_csv, log)
    before = log.read_bytes()
    out = tmp_path / "o.npz"
    cases = [
        (["fit", str(log), *READER, *SMALL, "-o", str(out), "--report", str(log)],
         "an input of this command"),
        (["candidates", str(log), *READER, "-o", str(out), "--report", str(log), "-q"],
         "an input of this command"),
        (["fit", str(log), *READER, *SMALL, "-o", str(out), "--report", str(out)],
         "-o and --report both name"),
        (["candidates", str(log), *READER, "-o", str(out), "--csv", str(out), "-q"],
         "-o and --csv both name"),
        (["evaluate", str(log), *READER, *SMALL, "--report", str(tmp_path / "r"),
          "--markdown", str(tmp_path / "." / "r")], "--report and --markdown both name"),
        (["fit", str(log), *READER, *SMALL, "-o", str(out), "--report",
          str(tmp_path / "missing" / "r.json")], "missing"),
    ]
    for argv, expect in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert expect in err, (argv, err)
        assert "epoch" not in err                    # refused before training
        assert log.read_bytes() == before
        assert not out.exists() and not (tmp_path / "r").exists()


def test_evaluate_sessions_starts_every_test_session_fresh(tmp_path):
    """Each test session is its own anonymous user: a model that carries its
    state across a user's sessions ranks exactly as the same weights without
    that flag (it carried session 0's state into session 1)."""
    from deeprec_edge.trainer.data import split_by_time
    from deeprec_edge.trainer.evaluate import evaluate_sessions
    inter, _ = make_synthetic(n_users=30, n_items=40, n_clusters=2, seed=3)
    tr, te, _ = split_by_time(inter, 0.8, unit="session")
    p = init_params(tr.n_items, FitConfig(hidden=[12], embedding=8, dim=8), seed=0)
    ids = tr.item_ids
    pop = tr.item_support().astype(np.float32)
    reps = {}
    for carry in (False, True):
        m = model_from_params(p, ids, pop, config={"carry_state": carry})
        assert m.carry_state is carry
        r = evaluate_sessions(tr, te, methods=("gru",), model=m, progress=False)
        reps[carry] = r["methods"]["gru"]["full"]["optimistic"]
    for k in ("recall@20", "mrr@20"):
        assert reps[True][k]["mean"] == reps[False][k]["mean"], k


def test_candidate_recall_builds_the_sets_from_pre_cutoff_clicks_alone(tmp_path, monkeypatch):
    """candidates --eval-quantile: an item with too few clicks before the
    cutoff is not in the sets built at the cutoff, however often it is
    clicked after it (support filtering ran on the whole log)."""
    import deeprec_edge.trainer.cli as tcli
    rows = ["user_id,item_id,time"]
    t = 0
    for u in range(40):                      # items 1..4: well supported before the cutoff
        for i in (1, 2, 3, 4, 1, 2):
            rows.append(f"u{u},{i},{t}")
            t += 10
    rows += [f"u{u},99,{t + u}" for u in range(3)]          # item 99: 3 clicks before,
    t_pre, t = t + 2, t + 1000
    for u in range(30):                                    # 30 after the cutoff
        rows += [f"u{u},99,{t}", f"u{u},1,{t + 1}"]
        t += 10
    rows.append(f"u0,2,{t}")
    log = tmp_path / "log.csv"
    log.write_text("\n".join(rows) + "\n")
    from deeprec_edge.trainer.data import time_cutoff
    times = np.array([float(r.rsplit(",", 1)[1]) for r in rows[1:]])
    assert t_pre < time_cutoff(times, 0.8) < t_pre + 998      # the cutoff falls in the gap
    seen = []
    real = tcli._candidate_sets
    monkeypatch.setattr(tcli, "_candidate_sets",
                        lambda a, hist, model: seen.append(hist) or real(a, hist, model))
    assert main(["candidates", str(log), *READER, "-o", str(tmp_path / "c.npz"), "-q",
                 "--eval-quantile", "0.8", "--min-item-support", "5", "-n", "5"]) == 0
    pre, full = seen
    assert 99 not in set(pre.item_ids[pre.items].tolist())
    assert 99 in set(full.item_ids[full.items].tolist())


def test_evaluate_has_no_user_filter_that_would_read_test_clicks(log_csv, capsys):
    """--min-user-events counted every click of a user, test clicks too, and
    evaluate ignored it anyway: it is not an evaluate option."""
    with pytest.raises(SystemExit):
        main(["evaluate", str(log_csv), *READER, *SMALL, "--min-user-events", "5"])
    assert "unrecognized arguments: --min-user-events" in capsys.readouterr().err


def test_every_numeric_option_names_its_range_in_help():
    """docs/cli.md: every numeric option of deeprec-train is checked against the
    range its --help prints (the option's own type, via _checks.show_ranges)."""
    import argparse

    from deeprec_edge import _checks as C
    from deeprec_edge.trainer.cli import build_parser

    seen = 0
    for cmd, sub in next(a for a in build_parser()._actions
                         if isinstance(a, argparse._SubParsersAction)).choices.items():
        for a in sub._actions:
            if isinstance(a.type, C._Number):
                seen += 1
                assert a.help and a.help.count(a.type.describe()) == 1, (cmd, a.option_strings)
                # what --help prints (argparse expands %-formats and wraps lines)
                assert a.type.describe() in " ".join(sub.format_help().split()), cmd
    assert seen > 50


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")
def test_an_output_that_cannot_be_created_fails_before_any_output_is_written(
        log_csv, tmp_path, capsys):
    """docs/trainer.md: a bad output writes no output file. /proc passes the
    permission checks (as root) but takes no new file: fit ran to the end,
    wrote -o, then failed on --report."""
    w = tmp_path / "w.npz"
    code = main(["fit", str(log_csv), *READER, *SMALL, "-o", str(w),
                 "--report", "/proc/deeprec-edge-report.json"])
    err = capsys.readouterr().err
    assert code == 2 and "/proc" in err and "Traceback" not in err
    assert not w.exists() and os.listdir(tmp_path) == []
    code = main(["fit", str(log_csv), *READER, *SMALL, "-o", str(w), "--report", ""])
    assert code == 2 and "--report: the file name is empty" in capsys.readouterr().err
    assert not w.exists()


def test_a_binary_file_as_the_log_is_named_in_the_error(tmp_path, capsys):
    """fit weights.npz --format csv said only "'utf-8' codec can't decode byte"."""
    m = model_from_params(init_params(20, FitConfig(hidden=[8])), np.arange(20),
                          np.ones(20))
    w = tmp_path / "weights.npz"
    save_model(m, w)
    assert main(["fit", str(w), "--format", "csv", "-o", str(tmp_path / "x.npz"), "-q"]) == 2
    err = capsys.readouterr().err
    assert f"{w}: not csv text" in err and "is this the click log?" in err


def test_candidate_recall_is_not_measured_on_a_session_log(tmp_path, capsys):
    """On a session log the sets are per session and the later clicks are new
    sessions, which have no set: the recall printed (0.0024 on RSC15, '148
    users without a set') measured nothing. It is skipped, with the reason."""
    rng = np.random.default_rng(0)
    rows = ["SessionId\tItemId\tTime"]
    for s in range(60):
        for j in range(5):
            rows.append(f"{s + 1}\t{int(rng.integers(0, 20))}\t{1_600_000_000 + 600 * s + j}")
    log = tmp_path / "clicks.tsv"
    log.write_text("\n".join(rows) + "\n")
    rep = tmp_path / "c.json"
    assert main(["candidates", str(log), "--format", "session-tsv", "-o", str(tmp_path / "c.npz"),
                 "--report", str(rep), "-n", "5", "-q"]) == 0
    out = capsys.readouterr().out
    assert "candidate recall not measured: a session log" in out
    r = json.loads(rep.read_text())
    assert "recall" not in r and r["recall_skipped"].startswith("a session log")
    assert r["users"] > 0                          # the sets themselves are still written

"""Slices that can still fine-tune: ``export --items`` keeps the items to
rank, ``--inputs`` the items the devices click; without it the export says
what is lost, and a device's fine-tuning error counts its unknown clicks."""
from __future__ import annotations

import numpy as np
import pytest

from deeprec_edge.cli import main as edge_main
from deeprec_edge.model import load_model, save_model
from deeprec_edge.trainer.cli import main
from helpers_model import random_model


@pytest.fixture()
def files(tmp_path):
    m = random_model(n_items=200, e=8, hidden=12, seed=3)
    save_model(m, tmp_path / "w.npz")
    rng = np.random.default_rng(0)
    ids = m.item_ids
    perm = rng.permutation(200)
    cands = ids[perm[:20]]
    (tmp_path / "cands.txt").write_text("item_id\n" + "\n".join(map(str, cands)) + "\n")
    # 10 sessions (2 h apart) of 6 clicks; one click of each on a candidate:
    # outside the candidates' slice every session keeps a single click
    clicked = np.concatenate([np.r_[ids[perm[20 + 5 * s: 25 + 5 * s]], cands[s]]
                              for s in range(10)])
    times = [1_700_000_000 + 7200 * s + 60 * k for s in range(10) for k in range(6)]
    (tmp_path / "h.csv").write_text("item_id,timestamp\n" + "".join(
        f"{i},{t}\n" for i, t in zip(clicked.tolist(), times)))
    return tmp_path, m, cands, clicked


def test_a_slice_without_inputs_says_what_is_lost(files, capsys):
    d, m, cands, clicked = files
    assert main(["export", str(d / "w.npz"), "-o", str(d / "s.npz"), "--items",
                 str(d / "cands.txt")]) == 0
    out = capsys.readouterr().out
    assert "loses that click" in out and "--inputs" in out
    s = load_model(d / "s.npz")
    assert s.n_items == 20 and s.config["sliced_from"]["items_to_rank"] == 20
    lost = int((~np.isin(clicked, cands)).sum())
    assert edge_main(["finetune", str(d / "s.npz"), str(d / "h.csv"), "--parts", "gru",
                      "-o", str(d / "p.npz"), "-q"]) != 0
    err = capsys.readouterr().err
    assert f"{lost} of the history's 60 clicks are on items outside the catalogue" in err
    assert "this sliced model keeps 20 of 200 items" in err and "--inputs" in err


def test_a_slice_with_inputs_fine_tunes_on_the_whole_history(files, capsys):
    d, m, cands, clicked = files
    assert main(["export", str(d / "w.npz"), "-o", str(d / "s.npz"), "--items",
                 str(d / "cands.txt"), "--inputs", str(d / "h.csv"), "--dtype", "int8"]) == 0
    out = capsys.readouterr().out
    assert "only as inputs" in out and "loses" not in out
    s = load_model(d / "s.npz")
    want = np.union1d(cands, clicked)
    np.testing.assert_array_equal(np.sort(s.item_ids), np.sort(want))
    assert s.config["sliced_from"]["input_items"] == int(np.setdiff1d(clicked, cands).size)
    assert edge_main(["finetune", str(d / "s.npz"), str(d / "h.csv"), "--parts", "gru",
                      "--epochs", "1", "-o", str(d / "p.npz"), "--json"]) == 0
    import json
    summary = json.loads(capsys.readouterr().out)
    # every click is known to the slice (clicks_used is 0 when the check kept the model)
    assert summary["clicks_read"] == 60 and summary["clicks_skipped_unknown"] == 0
    assert summary["clicks_used"] == (60 if summary["kept_global"] is None else 0)
    # a sliced model ranks its items as the source model does among them
    full, sl = load_model(d / "w.npz"), s
    assert edge_main(["recommend", str(d / "s.npz"), "--history", str(d / "h.csv"), "-k", "5",
                      "--json"]) == 0


def test_inputs_need_a_slice(files, capsys):
    d, *_ = files
    assert main(["export", str(d / "w.npz"), "-o", str(d / "x.npz"), "--inputs",
                 str(d / "h.csv")]) != 0
    assert "--inputs keeps the rows of clicked items in a slice" in capsys.readouterr().err

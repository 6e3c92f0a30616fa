"""Readers, the Interactions container and preprocessing (trainer/data.py)."""
import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from deeprec_edge.trainer import data as D
from deeprec_edge.trainer.data import DataFormatError, Interactions


def write(path, text):
    path.write_text(text)
    return path


def frame(inter):
    """Catalogue-id view as a list of tuples, for exact comparisons."""
    f = inter.to_frame()
    return list(zip(f.user_id.tolist(), f.item_id.tolist(), f.time.tolist(), f.session.tolist()))


# ---------------------------------------------------------------------------
# generic CSV
# ---------------------------------------------------------------------------

def test_generic_csv_unix_seconds_and_sessions_by_gap(tmp_path):
    p = write(tmp_path / "log.csv",
              "user,item,ts\n"
              "u2,30,1000\n"
              "u1,10,100\n"
              "u1,20,3700\n"       # gap exactly 3600 s: same session
              "u1,10,7301\n"       # gap 3601 s: new session
              "u2,10,1001\n")
    inter = D.read_csv(p, user_col="user", item_col="item", time_col="ts")
    inter.validate()
    assert inter.user_ids.tolist() == ["u1", "u2"]
    assert inter.item_ids.dtype == np.int64 and inter.item_ids.tolist() == [10, 20, 30]
    assert inter.df.dtypes.to_dict() == {"user": np.int64, "item": np.int32, "time": np.float64,
                                         "session": np.int64}
    assert frame(inter) == [("u1", 10, 100.0, 0), ("u1", 20, 3700.0, 0), ("u1", 10, 7301.0, 1),
                            ("u2", 30, 1000.0, 2), ("u2", 10, 1001.0, 2)]
    assert inter.info["time_unit"] == "s"
    assert inter.n_sessions == 3 and inter.session_offsets().tolist() == [0, 2, 3, 5]


def test_generic_csv_iso_and_millisecond_times(tmp_path):
    iso = write(tmp_path / "iso.csv", "u;i;t\n1;5;2020-01-01T00:00:00Z\n1;6;2020-01-01 00:00:01.5\n")
    a = D.read_csv(iso, user_col="u", item_col="i", time_col="t", sep=";")
    assert a.info["time_unit"] == "iso"
    assert a.times.tolist() == [1577836800.0, 1577836801.5]
    ms = write(tmp_path / "ms.csv", "u,i,t\n1,5,1577836800000\n1,6,1577836801500\n")
    b = D.read_csv(ms, user_col="u", item_col="i", time_col="t")
    assert b.info["time_unit"] == "ms"
    np.testing.assert_allclose(b.times, a.times)


def test_generic_csv_string_ids_keep_leading_zeros(tmp_path):
    p = write(tmp_path / "s.csv", "user,item,t\na,007,1\na,7,2\na,x9,3\n")
    inter = D.read_csv(p, user_col="user", item_col="item", time_col="t")
    assert sorted(inter.item_ids.tolist()) == ["007", "7", "x9"]
    assert len(set(inter.items.tolist())) == 3


def test_generic_csv_without_header_and_explicit_sessions(tmp_path):
    p = write(tmp_path / "n.csv", "9,1,5,100\n9,1,6,101\n9,2,5,50\n")
    inter = D.read_csv(p, header=False, names=["s", "u", "i", "t"], user_col="u", session_col="s",
                       item_col="i", time_col="t")
    # explicit session 9 spans users 1 and 2: sessions never span users
    assert inter.user_kind == "user"
    assert frame(inter) == [(1, 5, 100.0, 0), (1, 6, 101.0, 0), (2, 5, 50.0, 1)]
    only_sessions = D.read_csv(p, header=False, names=["s", "u", "i", "t"], session_col="s",
                               item_col="i", time_col="t")
    assert only_sessions.user_kind == "session" and only_sessions.n_sessions == 1
    with pytest.raises(ValueError, match="names"):
        D.read_csv(p, header=False, item_col="i", time_col="t", user_col="u")


def test_chunk_size_does_not_change_the_result(tmp_path):
    rng = np.random.default_rng(0)
    n = 500
    df = pd.DataFrame({"user": rng.integers(0, 30, n), "item": rng.integers(100, 160, n),
                       "time": rng.integers(0, 50_000, n)})
    p = tmp_path / "big.csv"
    df.to_csv(p, index=False)
    a = D.read_csv(p, user_col="user", item_col="item", time_col="time", chunksize=7)
    b = D.read_csv(p, user_col="user", item_col="item", time_col="time", chunksize=10_000)
    pd.testing.assert_frame_equal(a.df, b.df)
    assert np.array_equal(a.item_ids, b.item_ids) and np.array_equal(a.user_ids, b.user_ids)
    assert a.item_ids.tolist() == sorted(a.item_ids.tolist())
    assert a.info["n_rows_read"] == n and len(a) == n


def test_fixed_vocabulary_drops_and_counts_unknown_items(tmp_path):
    train = write(tmp_path / "train.tsv", "SessionId\tItemId\tTime\n1\t10\t1.0\n1\t20\t2.0\n2\t30\t3.0\n2\t10\t4.0\n")
    test = write(tmp_path / "test.tsv", "SessionId\tItemId\tTime\n5\t20\t9.0\n5\t99\t9.5\n5\t30\t10.0\n")
    tr = D.read_session_tsv(train)
    te = D.read_session_tsv(test, item_vocab=tr.item_ids)
    assert np.array_equal(te.item_ids, tr.item_ids)
    assert te.info["n_unknown_items"] == 1
    assert te.item_ids[te.items].tolist() == [20, 30]
    assert tr.encode_items([30, 99, 10]).tolist() == [2, -1, 0]
    # a vocabulary of strings works on integer files and vice versa
    te2 = D.read_session_tsv(test, item_vocab=["20", "30"])
    assert te2.item_ids[te2.items].tolist() == ["20", "30"]


def test_stable_order_for_equal_timestamps(tmp_path):
    # MovieLens has many ratings in the same second: file order breaks ties
    p = write(tmp_path / "u.data", "1\t5\t3\t100\n1\t3\t4\t100\n1\t4\t4\t100\n1\t9\t1\t99\n")
    inter = D.read_movielens(p)
    assert inter.item_ids[inter.items].tolist() == [9, 5, 3, 4]


# ---------------------------------------------------------------------------
# dataset formats
# ---------------------------------------------------------------------------

def test_movielens_three_formats_agree(tmp_path):
    rows = [(1, 10, 5, 978300760), (1, 20, 2, 978300761), (2, 10, 4, 978300000)]
    u = write(tmp_path / "u.data", "".join(f"{a}\t{b}\t{c}\t{d}\n" for a, b, c, d in rows))
    dat = write(tmp_path / "ratings.dat", "".join(f"{a}::{b}::{c}::{d}\n" for a, b, c, d in rows))
    csv = write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n"
                + "".join(f"{a},{b},{c}.0,{d}\n" for a, b, c, d in rows))
    a, b, c = D.read_movielens(u), D.read_movielens(dat), D.read_movielens(csv)
    assert frame(a) == frame(b) == frame(c)
    assert a.info["format"] == "movielens-100k" and b.info["format"] == "movielens-dat"
    assert len(a) == 3 and a.n_users == 2 and a.n_items == 2
    liked = D.read_movielens(u, min_rating=4)
    assert liked.item_ids[liked.items].tolist() == [10, 10] and liked.info["n_events_skipped"] == 1


def test_yoochoose_clicks(tmp_path):
    p = write(tmp_path / "yoochoose-clicks.dat",
              "1,2014-04-07T10:51:09.277Z,214536502,0\n"
              "1,2014-04-07T10:54:09.277Z,214536500,0\n"
              "2,2014-04-06T18:00:00.000Z,214536500,S\n")
    inter = D.read_yoochoose_clicks(p)
    assert inter.user_kind == "session" and inter.user_ids.tolist() == [1, 2]
    assert inter.n_sessions == 2
    t0 = pd.Timestamp("2014-04-07T10:51:09.277Z").timestamp()
    assert inter.times[0] == pytest.approx(t0)
    assert inter.times[1] - inter.times[0] == pytest.approx(180.0)


def test_diginetica_views(tmp_path):
    p = write(tmp_path / "train-item-views.csv",
              "session_id;user_id;item_id;timeframe;eventdate\n"
              "1;NA;81766;526309;2016-05-09\n"
              "1;NA;31331;1031018;2016-05-09\n"
              "2;7;32118;243569;2016-05-10\n"
              "2;7;9654;75848;2016-05-10\n")
    inter = D.read_diginetica(p)
    day = pd.Timestamp("2016-05-09", tz="UTC").timestamp()
    assert inter.user_kind == "session" and inter.n_sessions == 2
    assert inter.times[:2].tolist() == pytest.approx([day + 526.309, day + 1031.018])
    # session 2: ordered by timeframe, not by file order
    assert inter.item_ids[inter.items[2:]].tolist() == [9654, 32118]
    # original CIKM header spelling; user level keeps rows with a user id only
    p2 = write(tmp_path / "v.csv", p.read_text().replace(
        "session_id;user_id;item_id", "sessionId;userId;itemId"))
    users = D.read_diginetica(p2, users=True)
    assert users.user_kind == "user" and users.user_ids.tolist() == [7]
    assert len(users) == 2 and users.info["n_events_skipped"] == 2


def test_otto_jsonl_event_types_and_gzip(tmp_path):
    lines = [
        {"session": 0, "events": [{"aid": 11, "ts": 1659304800025, "type": "clicks"},
                                  {"aid": 12, "ts": 1659304900000, "type": "carts"},
                                  {"aid": 13, "ts": 1659304900000 + 7_200_000, "type": "clicks"}]},
        {"session": 1, "events": [{"aid": 11, "ts": 1659304800000, "type": "orders"}]},
    ]
    text = "".join(json.dumps(x) + "\n" for x in lines)
    p = write(tmp_path / "train.jsonl", text)
    clicks = D.read_otto(p)
    assert clicks.item_ids[clicks.items].tolist() == [11, 13]
    assert clicks.info["n_events_skipped"] == 2 and clicks.n_sessions == 2   # 2 h gap splits
    assert clicks.times[0] == pytest.approx(1659304800.025)
    everything = D.read_otto(p, event_types=("clicks", "carts", "orders"))
    assert len(everything) == 4 and everything.user_ids.tolist() == [0, 1]
    as_sessions = D.read_otto(p, event_types=("clicks", "carts", "orders"), as_sessions=True)
    assert as_sessions.user_kind == "session" and as_sessions.n_sessions == 2
    gz = tmp_path / "train.jsonl.gz"
    with gzip.open(gz, "wt") as fh:
        fh.write(text)
    assert frame(D.read_otto(gz)) == frame(clicks)
    with pytest.raises(ValueError, match="event_types"):
        D.read_otto(p, event_types=("views",))


def test_tianchi_behaviours(tmp_path):
    p = write(tmp_path / "UserBehavior.csv",
              "1,2268318,2520377,pv,1511544070\n"
              "1,2333346,2520771,buy,1511561733\n"
              "1,2576651,149192,pv,1511572885\n"
              "2,3830808,4181361,cart,1511593493\n")
    pv = D.read_tianchi(p)
    assert len(pv) == 2 and pv.info["n_events_skipped"] == 2 and pv.user_ids.tolist() == [1]
    allb = D.read_tianchi(p, behaviors=("pv", "buy", "cart", "fav"))
    assert len(allb) == 4 and allb.n_sessions == 4    # user 1's clicks are hours apart


def test_read_interactions_dispatch(tmp_path):
    p = write(tmp_path / "u.data", "1\t5\t3\t100\n")
    assert len(D.read_interactions(p, "movielens")) == 1
    with pytest.raises(ValueError, match="unknown format"):
        D.read_interactions(p, "parquet")


# ---------------------------------------------------------------------------
# malformed input: clear errors naming the line
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("text, line, what", [
    ("1\t5\t3\t100\n1\tabc\t3\t101\n", 2, "'item'"),            # not an integer
    ("1\t5\t3\t100\n1\t6\t3\n", 2, "missing value"),             # too few fields
    ("1\t5\t3\t100\n\n1\t6\t3\t100\t7\n", 3, "5 fields"),        # too many (after a blank line)
    ("1\t5\t3\t100\n1\t6\t3\t1e400x\n", 2, "'time'"),            # not a number
])
def test_malformed_movielens_lines(tmp_path, text, line, what):
    p = write(tmp_path / "u.data", text)
    with pytest.raises(DataFormatError, match=f"line {line}") as exc:
        D.read_movielens(p, chunksize=1, on_missing="error")   # missing values: skipped by default
    assert what in str(exc.value) and "u.data" in str(exc.value)


def test_blank_lines_are_skipped_and_counted_right(tmp_path):
    p = write(tmp_path / "log.csv", "user,item,t\n\n1,2,3\n\n1,x,4\n")
    with pytest.raises(DataFormatError, match="line 5"):
        D.read_csv(p, user_col="user", item_col="item", time_col="t", ids_as_str=False)
    ok = write(tmp_path / "ok.csv", "user,item,t\n\n1,2,3\n\n1,4,4\n\n")
    assert len(D.read_csv(ok, user_col="user", item_col="item", time_col="t")) == 2


def test_malformed_other_formats(tmp_path):
    bad_iso = write(tmp_path / "c.dat", "1,2014-04-07T10:51:09Z,5,0\n1,yesterday,6,0\n")
    with pytest.raises(DataFormatError, match="line 2.*Timestamp"):
        D.read_yoochoose_clicks(bad_iso)
    bad_json = write(tmp_path / "o.jsonl", '{"session": 0, "events": []}\n{"session": 1, "events": [\n')
    with pytest.raises(DataFormatError, match="line 2"):
        D.read_otto(bad_json)
    no_aid = write(tmp_path / "o2.jsonl", '{"session": 0, "events": [{"ts": 1, "type": "clicks"}]}\n')
    with pytest.raises(DataFormatError, match="line 1.*aid"):
        D.read_otto(no_aid, on_missing="error")                 # skipped by default
    bad_beh = write(tmp_path / "ub.csv", "1,2,3,pv,100\n1,2,3,like,101\n")
    with pytest.raises(DataFormatError, match="line 2.*behavior"):
        D.read_tianchi(bad_beh)
    bad_date = write(tmp_path / "d.csv", "sessionId;userId;itemId;timeframe;eventdate\n1;NA;5;10;2016-13-45\n")
    with pytest.raises(DataFormatError, match="line 2.*eventdate"):
        D.read_diginetica(bad_date)
    no_col = write(tmp_path / "s.tsv", "Session\tItemId\tTime\n1\t2\t3\n")
    with pytest.raises(DataFormatError, match="SessionId"):
        D.read_session_tsv(no_col)


# ---------------------------------------------------------------------------
# preprocessing
# ---------------------------------------------------------------------------

def random_log(seed=0, n=3000, n_users=60, n_items=200):
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, n)
    items = np.minimum(rng.zipf(1.6, n) - 1, n_items - 1)
    times = rng.uniform(0, 30 * 86400, n).round()
    return Interactions.from_arrays(users, items, times, n_items=n_items)


def test_sessionize_and_repeats():
    inter = Interactions.from_arrays([0, 0, 0, 0, 1], [1, 1, 2, 1, 1], [0, 10, 20, 5000, 0],
                                     session_gap=None)
    assert inter.n_sessions == 2
    s = D.sessionize(inter, 3600)
    assert s.sessions.tolist() == [0, 0, 0, 1, 2]
    r = D.remove_consecutive_repeats(s)
    assert r.items.tolist() == [1, 2, 1, 1] and r.info["n_consecutive_repeats_removed"] == 1
    r.validate()


def test_filter_support_is_iterative_and_stable():
    # item 3 has support 2 only via session B; removing it makes B too short,
    # which drops item 1's only other click -> a second round is needed.
    users = [0, 0, 0, 1, 1, 2, 2, 3, 3]
    items = [1, 2, 2, 1, 3, 2, 2, 3, 4]
    times = [0, 1, 2, 0, 1, 0, 1, 0, 1]
    inter = Interactions.from_arrays(users, items, times, n_items=5)
    f = D.filter_support(inter, min_item_support=3, min_session_length=2)
    assert f.item_ids.tolist() == [2]                # compacted vocabulary
    assert f.info["filter_rounds"] >= 2
    assert np.all(f.item_support() >= 3)
    big = D.filter_support(random_log(), min_item_support=5, min_session_length=2)
    big.validate()
    assert np.all(big.item_support() >= 5)
    assert np.all(np.diff(big.session_offsets()) >= 2)
    again = D.filter_support(big, min_item_support=5, min_session_length=2)
    assert len(again) == len(big)                    # a fixed point
    u = D.filter_support(random_log(), min_item_support=1, min_session_length=1, min_user_events=60)
    assert np.all(np.diff(u.user_offsets()) >= 60)


def test_split_by_time_quantile_and_date():
    inter = random_log(1)
    tr, te, cut = D.split_by_time(inter, 0.8)
    assert cut == pytest.approx(np.quantile(inter.times, 0.8))
    assert tr.times.max() < cut <= te.times.min()
    assert len(tr) + len(te) == len(inter)
    assert abs(len(tr) / len(inter) - 0.8) < 0.01
    assert np.array_equal(tr.item_ids, inter.item_ids) and np.array_equal(te.user_ids, inter.user_ids)
    tr.validate(), te.validate()
    by_date = D.split_by_time(inter, cutoff="1970-01-15")
    assert by_date.cutoff == 14 * 86400.0
    assert by_date.train.times.max() < 14 * 86400.0 <= by_date.test.times.min()
    with pytest.raises(ValueError):
        D.split_by_time(inter, 1.5)


def test_session_split_and_gru4rec_convention():
    inter = D.sessionize(random_log(2), 3600)
    tr, te, cut = D.split_by_time(inter, 0.7, unit="session")
    off = te.session_offsets()
    assert np.all(tr.times < cut)                             # whole sessions ended before
    assert np.all(te.times[off[1:] - 1] >= cut)               # sessions ending after the cutoff
    assert not set(tr.sessions.tolist()) & set(te.sessions.tolist())
    tr2, te2 = D.session_split_convention(tr, te)
    assert np.all(tr2.item_support() > 0)                     # train compacted
    assert set(te2.item_ids[te2.items].tolist()) <= set(tr2.item_ids.tolist())
    assert np.all(np.diff(te2.session_offsets()) >= 2)
    assert np.array_equal(te2.item_ids, tr2.item_ids)


def test_remap_items_and_compact():
    inter = Interactions.from_arrays([0, 0, 1], [0, 2, 2], [0, 1, 2], item_ids=[10, 11, 12])
    c = inter.compact_items()
    assert c.item_ids.tolist() == [10, 12] and c.items.tolist() == [0, 1, 1]
    m = D.remap_items(inter, [12, 99])
    assert m.items.tolist() == [0, 0] and m.info["n_unknown_items"] == 1


def test_container_invariants_are_checked():
    df = pd.DataFrame({"user": [1, 0], "item": [0, 0], "time": [0.0, 1.0], "session": [0, 1]})
    with pytest.raises(ValueError, match="grouped by user"):
        Interactions(df, [5])
    df = pd.DataFrame({"user": [0], "item": [3], "time": [0.0], "session": [0]})
    with pytest.raises(ValueError, match="item codes"):
        Interactions(df, [5])
    ok = Interactions(pd.DataFrame({"user": [1, 0], "item": [0, 0], "time": [0.0, 1.0],
                                    "session": [1, 0]}), [5], sort=True)
    assert ok.users.tolist() == [0, 1]
    assert "events=2" in repr(ok) and ok.summary()["events"] == 2


def test_from_frame_matches_read_csv(tmp_path):
    df = pd.DataFrame({"u": ["a", "a", "b"], "i": [3, 4, 3], "t": [5, 6, 7]})
    p = tmp_path / "f.csv"
    df.to_csv(p, index=False)
    a = Interactions.from_frame(df, user_col="u", item_col="i", time_col="t")
    b = D.read_csv(p, user_col="u", item_col="i", time_col="t")
    assert frame(a) == frame(b)


def test_package_import_is_light_and_names_the_extra():
    code = ("import sys; import deeprec_edge.trainer as t; "
            "assert 'pandas' not in sys.modules and 'scipy' not in sys.modules; "
            "sys.modules['pandas'] = None\n"
            "try:\n    t.Interactions\nexcept ImportError as e:\n    print(e)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=os.path.dirname(__file__), timeout=60)
    assert out.returncode == 0, out.stderr
    assert 'pip install "deeprec-edge[trainer]"' in out.stdout


def test_session_labels_reused_across_users_keep_each_users_time_order(tmp_path):
    """Explicit session labels that recur across users ("web", "app"): each
    user's sessions come in her own time order (they were ordered by the
    label's first click over all users)."""
    p = tmp_path / "s.csv"
    p.write_text("user_id,session_id,item_id,timestamp\n"
                 "A,web,1,1000\nA,web,2,1010\nA,app,3,5000\nA,app,4,5010\n"
                 "B,app,5,100\nB,app,6,110\nB,web,7,9000\n")
    f = D.read_csv(p).to_frame()
    for u, g in f.groupby("user_id"):
        assert g.time.is_monotonic_increasing, (u, g.time.tolist())
    a = f[f.user_id == "A"]
    assert a.item_id.tolist() == [1, 2, 3, 4] and a.session.nunique() == 2

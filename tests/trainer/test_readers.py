"""Readers for UCI Online Retail and Tmall (IJCAI-15), CSV column detection,
missing values skipped and counted, and the CLI's reading flags.

Every fixture is a tiny file written here; the last tests check the counts of
the real shared files when they are present (``DEEPREC_DATASETS`` or
``../shared/datasets`` beside the repository) and skip otherwise.
"""
import gzip
import os
from pathlib import Path

import numpy as np
import pytest

from deeprec_edge.trainer import cli
from deeprec_edge.trainer import data as D
from deeprec_edge.trainer.data import DataFormatError


def write(path, text, gz=False):
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def rows(inter):
    f = inter.to_frame()
    return list(zip(f.user_id.tolist(), f.item_id.tolist(), f.time.tolist()))


T0 = 1291191960.0      # 2010-12-01 08:26:00 UTC


# ---------------------------------------------------------------------------
# UCI Online Retail
# ---------------------------------------------------------------------------

RETAIL = (
    "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
    "536365,85123A,\"WHITE HANGING HEART T-LIGHT HOLDER\",6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom\n"
    "536365,71053,\"LANTERN, WHITE METAL\",6,2010-12-01 08:26:00,3.39,17850.0,United Kingdom\n"
    "536366,22633,HAND WARMER,6,2010-12-01 08:28:00,1.85,,United Kingdom\n"           # guest
    "C536379,D,Discount,-1,2010-12-01 09:41:00,27.5,14527.0,United Kingdom\n"         # cancellation
    "536367,84879,BIRD ORNAMENT,32,2010-12-01 08:34:00,1.69,13047.0,United Kingdom\n"
    "536365,84406B,CREAM CUPID HEARTS COAT HANGER,8,2010-12-01 08:26:00,2.75,17850.0,United Kingdom\n"
    "536368,POST,POSTAGE,1,2010-12-01 08:20:00,18,13047.0,France\n"
    "536369,22960,JAM MAKING SET,6,2010-12-01 08:26:00,4.25,,United Kingdom\n"        # guest
    "536370,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01 12:26:00,2.55,17850,United Kingdom\n"
)


@pytest.mark.parametrize("gz", [False, True])
def test_online_retail_drops_guests_and_cancellations(tmp_path, gz):
    p = write(tmp_path / ("r.csv.gz" if gz else "r.csv"), RETAIL, gz=gz)
    inter = D.read_online_retail(p)
    inter.validate()
    assert inter.user_ids.dtype == np.int64 and inter.user_ids.tolist() == [13047, 17850]
    assert inter.item_ids.dtype.kind == "U"           # StockCode is text (85123A, POST)
    assert rows(inter) == [
        (13047, "POST", T0 - 360), (13047, "84879", T0 + 480),
        # one basket at 08:26 in file order, although the file interleaves it
        (17850, "85123A", T0), (17850, "71053", T0), (17850, "84406B", T0),
        (17850, "85123A", T0 + 4 * 3600)]
    assert inter.sessions.tolist() == [0, 0, 1, 1, 1, 2]      # 4 h gap: a new session
    info = inter.info
    assert info["n_rows_read"] == 9 and info["n_no_customer"] == 2
    assert info["n_missing_values"] == 2 and info["n_cancellations"] == 1
    assert info["n_events_skipped"] == 1 and info["format"] == "online-retail"


def test_online_retail_us_dates_and_missing_fields(tmp_path):
    text = ("InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
            "1,A,x,1,12/1/2010 8:26,1,5.0,UK\n"
            "2,,x,1,12/1/2010 8:27,1,5.0,UK\n"                 # no StockCode
            "3,B,x,1,,1,5.0,UK\n"                              # no InvoiceDate
            "4,C,x,1,12/1/2010 9:00,1,6,UK\n")
    p = write(tmp_path / "r.csv", text)
    inter = D.read_online_retail(p)
    assert rows(inter) == [(5, "A", T0), (6, "C", T0 + 34 * 60)]
    assert inter.info["n_missing_values"] == 2 and inter.info["n_no_customer"] == 0
    with pytest.raises(DataFormatError, match="r.csv, line 3: missing value in column 'StockCode'"):
        D.read_online_retail(p, on_missing="error")


@pytest.mark.parametrize("line, match", [
    ("1,A,x,1,2010-12-01 08:26:00,1,17850.5,UK", r"line 3: column 'CustomerID' has '17850.5'; "
                                                  r"expected a customer number"),
    ("1,A,x,1,yesterday,1,17850.0,UK", r"line 3: column 'InvoiceDate' has 'yesterday'"),
    ("1,A,x,1,2010-13-01 08:26:00,1,17850.0,UK", r"line 3: column 'InvoiceDate'"),
])
def test_online_retail_bad_values_name_the_line(tmp_path, line, match):
    good = "1,A,x,1,2010-12-01 08:26:00,1,17850.0,UK\n"
    p = write(tmp_path / "r.csv", RETAIL.splitlines()[0] + "\n" + good + line + "\n")
    with pytest.raises(DataFormatError, match=match):
        D.read_online_retail(p, chunksize=1)


def test_online_retail_wrong_header(tmp_path):
    p = write(tmp_path / "r.csv", "user,item,time\n1,2,3\n")
    with pytest.raises(DataFormatError, match=r"not an Online Retail file.*lacks \['InvoiceNo'"):
        D.read_online_retail(p)
    with pytest.raises(DataFormatError, match="empty"):
        D.read_online_retail(write(tmp_path / "e.csv", ""))


def test_online_retail_on_a_fixed_vocabulary(tmp_path):
    p = write(tmp_path / "r.csv", RETAIL)
    inter = D.read_online_retail(p, item_vocab=np.array(["85123A", "POST"]))
    assert sorted(set(inter.to_frame().item_id)) == ["85123A", "POST"]
    assert inter.info["n_unknown_items"] == 3


# ---------------------------------------------------------------------------
# Tmall user_log_format1
# ---------------------------------------------------------------------------

TMALL = ("user_id,item_id,cat_id,seller_id,brand_id,time_stamp,action_type\n"
         "7,100,1,1,1,0829,0\n"
         "7,101,1,1,,0828,0\n"          # empty brand_id: not a used column
         "7,102,1,1,1,0829,2\n"         # purchase
         "5,100,1,1,1,1111,0\n"
         "7,103,1,1,1,829,0\n"          # 3-digit day stamp, same day as the first row
         "5,104,1,1,1,1111,3\n"         # favourite
         "5,105,1,1,1,,0\n")            # no day: skipped


def day(month, d, year=2014):
    import datetime as dt
    return dt.datetime(year, month, d, tzinfo=dt.timezone.utc).timestamp()


def test_tmall_clicks_sorted_stably_by_user_and_day(tmp_path):
    p = write(tmp_path / "user_log_format1.csv", TMALL)
    inter = D.read_tmall(p)
    inter.validate()
    assert rows(inter) == [(5, 100, day(11, 11)),
                           (7, 101, day(8, 28)), (7, 100, day(8, 29)), (7, 103, day(8, 29))]
    assert inter.sessions.tolist() == [0, 1, 2, 2]            # one session per user-day
    info = inter.info
    assert info["n_rows_read"] == 7 and info["n_missing_values"] == 1
    assert info["n_events_skipped"] == 2 and info["action_types"] == ["click"]
    assert info["year"] == 2014 and info["format"] == "tmall"


def test_tmall_action_types_and_year(tmp_path):
    p = write(tmp_path / "t.csv", TMALL)
    both = D.read_tmall(p, action_types=("click", "purchase"), year=2015)
    assert (7, 102, day(8, 29, 2015)) in rows(both) and len(both) == 5
    assert both.info["n_events_skipped"] == 1
    assert D.read_tmall(p, action_types=["3"]).to_frame().item_id.tolist() == [104]
    assert D.tmall_action_codes(["favorite", "add-to-cart", 0]) == (0, 1, 3)
    with pytest.raises(ValueError, match="unknown Tmall action type 'like'"):
        D.read_tmall(p, action_types=("like",))
    with pytest.raises(ValueError, match="year must be an integer"):
        D.read_tmall(p, year=0)


@pytest.mark.parametrize("bad, match", [
    ("7,100,1,1,1,0230,0", r"line 3: column 'time_stamp' has '0230'; expected a day MMDD of 2014"),
    ("7,100,1,1,1,08-29,0", r"line 3: column 'time_stamp' has '08-29'"),
    ("7,100,1,1,1,0829,4", r"line 3: column 'action_type' has '4'; expected 0, 1, 2 or 3"),
    ("x,100,1,1,1,0829,0", r"line 3: column 'user_id' has 'x'; expected an integer"),
])
def test_tmall_bad_values_name_the_line(tmp_path, bad, match):
    head = TMALL.splitlines()
    p = write(tmp_path / "t.csv", "\n".join([head[0], head[1], bad]) + "\n")
    with pytest.raises(DataFormatError, match=match):
        D.read_tmall(p)


def test_tmall_leap_day_and_missing_value_policy(tmp_path):
    head = TMALL.splitlines()[0]
    p = write(tmp_path / "t.csv", head + "\n1,2,1,1,1,0229,0\n")
    with pytest.raises(DataFormatError, match="0229"):
        D.read_tmall(p)
    assert D.read_tmall(p, year=2016).times.tolist() == [day(2, 29, 2016)]
    q = write(tmp_path / "m.csv", TMALL)
    with pytest.raises(DataFormatError, match="line 8: missing value in column 'time_stamp'"):
        D.read_tmall(q, on_missing="error")
    with pytest.raises(ValueError, match="on_missing must be one of"):
        D.read_tmall(q, on_missing="drop")
    with pytest.raises(DataFormatError, match="not a Tmall user_log_format1 file"):
        D.read_tmall(write(tmp_path / "ub.csv", "user,item,category,behavior,timestamp\n1,2,3,pv,4\n"))


# ---------------------------------------------------------------------------
# CSV column detection
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("header, roles", [
    ("userId,movieId,rating,timestamp", {"user": "userId", "item": "movieId", "time": "timestamp"}),
    ("InvoiceNo,StockCode,InvoiceDate,CustomerID",
     {"user": "CustomerID", "item": "StockCode", "time": "InvoiceDate"}),
    ("timestamp,visitorid,event,itemid", {"user": "visitorid", "item": "itemid", "time": "timestamp"}),
    ("Customer_ID,Product ID,Date", {"user": "Customer_ID", "item": "Product ID", "time": "Date"}),
    ("session,aid,ts,type", {"session": "session", "item": "aid", "time": "ts"}),
    ("SessionId,ItemId,Time", {"session": "SessionId", "item": "ItemId", "time": "Time"}),
    ("user_id,session_id,item_id,datetime",
     {"user": "user_id", "session": "session_id", "item": "item_id", "time": "datetime"}),
])
def test_detect_columns(header, roles):
    got = D.detect_columns(header.split(","))
    assert {r: c for r, c in got.items() if c is not None} == roles


@pytest.mark.parametrize("header, kw, match", [
    ("user_id,date,time,item_id", {}, r"cannot tell the time column from the header "
                                      r"\['user_id', 'date', 'time', 'item_id'\]: 2 columns look "
                                      r"like one \('date', 'time'\); name it with time_col= "
                                      r"\(--time-col"),
    ("user_id,thing,time", {}, r"cannot tell the item column.*no column is named like one "
                               r"\(itemid, item, movieid.*--item-col"),
    ("who,item_id,time", {}, r"cannot tell the user or session column.*--user-col / --session-col"),
    ("user_id,customer_id,item,time", {}, r"2 columns look like one \('user_id', 'customer_id'\)"),
    ("user_id,item_id,time", {"time_col": "item_id"}, "one column serves two roles"),
])
def test_detect_columns_errors(header, kw, match):
    with pytest.raises(ValueError, match=match):
        D.detect_columns(header.split(","), **kw)


def test_detect_columns_keeps_what_is_given():
    # an ambiguous role is fine once named; user given: session not detected
    got = D.detect_columns(["user_id", "date", "time", "item_id", "session"], time_col="date",
                           user_col="user_id")
    assert got == {"user": "user_id", "item": "item_id", "time": "date", "session": None}


def test_read_csv_without_column_names(tmp_path):
    p = write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,10,4,100\n1,20,3,90\n"
                                        "2,10,5,50\n")
    inter = D.read_csv(p)
    assert rows(inter) == [(1, 20, 90.0), (1, 10, 100.0), (2, 10, 50.0)]
    assert inter.info["columns"] == {"user": "userId", "item": "movieId", "time": "timestamp"}
    assert inter.info["columns_detected"] == ["item", "time", "user"]
    # a file without header: the names given are matched the same way
    q = write(tmp_path / "n.csv", "1,10,100\n1,20,90\n")
    inter = D.read_csv(q, header=False, names=["user", "item", "ts"])
    assert rows(inter) == [(1, 20, 90.0), (1, 10, 100.0)]
    with pytest.raises(ValueError, match=r"r.csv: cannot tell the item column from the header "
                                         r"\['a', 'b', 'time'\]"):
        D.read_csv(write(tmp_path / "r.csv", "a,b,time\n1,2,3\n"), user_col="a")


# ---------------------------------------------------------------------------
# missing values: skipped and counted in every reader
# ---------------------------------------------------------------------------

MISSING_CASES = [
    ("csv", "log.csv", "user,item,t\n1,5,100\n1,,101\n,6,102\n1,7,103\n",
     {"user_col": "user", "item_col": "item", "time_col": "t"}, 2, "line 3: missing value in column 'item'"),
    ("movielens", "u.data", "1\t5\t3\t100\n1\t6\t3\n1\t7\t3\t102\n", {}, 1,
     "line 2: missing value in column 'time'"),
    ("movielens", "u.data", "1\t5\t3\t100\n1\t6\t\t101\n", {"min_rating": 3}, 1,
     "line 2: missing value in column 'rating'"),
    ("yoochoose", "c.dat", "1,2014-04-07T10:51:09Z,5,0\n1,,6,0\n1,2014-04-07T10:52:09Z,7,\n", {}, 1,
     "line 2: missing value in column 'Timestamp'"),
    ("session-tsv", "s.tsv", "SessionId\tItemId\tTime\n1\t5\t1\n\t6\t2\n1\t7\t3\n", {}, 1,
     "line 3: missing value in column 'SessionId'"),
    ("diginetica", "d.csv", "sessionId;userId;itemId;timeframe;eventdate\n1;NA;5;10;2016-01-01\n"
                            "1;NA;;20;2016-01-01\n1;NA;7;30;2016-01-01\n", {}, 1,
     "line 3: missing value in column 'itemid'"),
    ("otto", "o.jsonl", '{"session": 1, "events": [{"aid": 5, "ts": 1000, "type": "clicks"}, '
                        '{"aid": null, "ts": 2000, "type": "clicks"}, {"ts": 3000, "type": "clicks"}]}\n'
                        '{"events": [{"aid": 6, "ts": 1000, "type": "clicks"}]}\n', {}, 3,
     "line 1: missing value in event"),
    ("tianchi", "UserBehavior.csv", "1,2,3,pv,100\n1,4,3,,101\n1,5,3,pv,\n1,6,3,pv,102\n", {}, 2,
     "line 2: missing value in column 'behavior'"),
    ("online-retail", "r.csv", RETAIL, {}, 2, None),
    ("tmall", "t.csv", TMALL, {}, 1, "line 8: missing value in column 'time_stamp'"),
]


@pytest.mark.parametrize("fmt, name, text, kw, n_missing, error", MISSING_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(MISSING_CASES)])
def test_missing_values_are_skipped_and_counted(tmp_path, fmt, name, text, kw, n_missing, error):
    p = write(tmp_path / name, text)
    inter = D.read_interactions(p, fmt, **kw)
    inter.validate()
    assert inter.info["n_missing_values"] == n_missing
    assert inter.info["n_rows_read"] >= len(inter) + n_missing
    if error is not None:
        with pytest.raises(DataFormatError, match=error):
            D.read_interactions(p, fmt, on_missing="error", **kw)
    with pytest.raises(ValueError, match="on_missing must be one of"):
        D.read_interactions(p, fmt, on_missing="ignore", **kw)


def test_missing_values_counted_across_chunks(tmp_path):
    text = "user,item,t\n" + "".join(f"1,{'' if k % 3 == 0 else k},{k}\n" for k in range(20))
    p = write(tmp_path / "log.csv", text)
    inter = D.read_csv(p, user_col="user", item_col="item", time_col="t", chunksize=4)
    assert inter.info["n_missing_values"] == 7 and len(inter) == 13
    assert inter.info["n_rows_read"] == 20


# ---------------------------------------------------------------------------
# the command line
# ---------------------------------------------------------------------------

def test_guess_format_by_header(tmp_path):
    assert cli._guess_format(str(write(tmp_path / "online-retail.csv.gz", RETAIL, gz=True))) \
        == "online-retail"
    assert cli._guess_format(str(write(tmp_path / "any.csv", RETAIL))) == "online-retail"
    assert cli._guess_format(str(write(tmp_path / "user_log_format1.csv", TMALL))) == "tmall"
    assert cli._guess_format(str(write(tmp_path / "plain.csv", "user_id,item_id,time\n"))) == "csv"
    assert D.guess_format_from_header(tmp_path / "missing.csv") is None


def _parse(*args):
    return cli.build_parser().parse_args(["fit", "LOG", "-o", "unused.npz", *args])


def test_cli_reads_online_retail_and_says_what_it_skipped(tmp_path, capsys):
    p = write(tmp_path / "online-retail-dataset.csv.gz", RETAIL, gz=True)
    inter = cli._read(_parse(), str(p))
    assert inter.info["format"] == "online-retail" and len(inter) == 6
    err = capsys.readouterr().err
    assert "(online-retail): 6 clicks, 5 items, 2 users" in err
    assert "skipped 2 rows with a missing value (2 without CustomerID), 1 filtered out " \
           "(cancellations)" in err


def test_cli_reads_tmall_with_its_flags(tmp_path, capsys):
    p = write(tmp_path / "user_log_format1.csv", TMALL)
    inter = cli._read(_parse("--action-types", "click,purchase", "--year", "2015"), str(p))
    assert len(inter) == 5 and inter.times.max() == day(11, 11, 2015)
    err = capsys.readouterr().err
    assert "(tmall): 5 clicks" in err
    assert "skipped 1 rows with a missing value, 1 filtered out (action types other than click, " \
           "purchase)" in err


def test_cli_csv_columns_detected_and_missing_value_policy(tmp_path, capsys):
    p = write(tmp_path / "log.csv", "customer_id,product_id,timestamp\n1,5,100\n1,,101\n2,6,102\n")
    inter = cli._read(_parse("--format", "csv"), str(p))
    assert len(inter) == 2
    err = capsys.readouterr().err
    assert "skipped 1 rows with a missing value" in err
    assert "columns user=customer_id, item=product_id, time=timestamp (detected from the header)" in err
    with pytest.raises(DataFormatError, match="log.csv, line 3: missing value in column 'product_id'"):
        cli._read(_parse("--format", "csv", "--on-missing", "error"), str(p))
    assert cli.main(["fit", str(p), "--format", "csv", "--on-missing", "error", "-q",
                     "-o", str(tmp_path / "w.npz")]) == 2
    assert "line 3: missing value" in capsys.readouterr().err
    bad = write(tmp_path / "bad.csv", "customer_id,date,time,item\n1,2,3,4\n")
    assert cli.main(["fit", str(bad), "-o", str(tmp_path / "w.npz")]) == 2
    assert "--time-col" in capsys.readouterr().err and not (tmp_path / "w.npz").exists()


# ---------------------------------------------------------------------------
# the real shared files (skipped when absent)
# ---------------------------------------------------------------------------

def _datasets() -> Path:
    env = os.environ.get("DEEPREC_DATASETS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "datasets"


def _real(rel: str) -> Path:
    p = _datasets() / rel
    if not p.exists():
        pytest.skip(f"{p} not present (set DEEPREC_DATASETS to the shared datasets folder)")
    return p


def test_real_online_retail_counts():
    """The counts of online_retail_uci/README.txt."""
    inter = D.read_online_retail(_real("online_retail_uci/online-retail-dataset.csv.gz"))
    s = inter.summary()
    assert (s["events"], s["users"], s["items"]) == (397_924, 4_339, 3_665)
    assert inter.info["n_rows_read"] == 541_909
    assert inter.info["n_no_customer"] == 135_080 and inter.info["n_cancellations"] == 8_905
    u, i = inter.users, inter.items
    seen = set()
    repeats = 0
    for a, b in zip(u.tolist(), i.tolist()):
        repeats += (a, b) in seen
        seen.add((a, b))
    assert abs(repeats / len(u) - 0.329) < 0.001    # 32.9%: time order, ties in file order


def test_real_tmall_counts():
    """The counts of tmall_ijcai15_head100k/README.txt."""
    p = _real("tmall_ijcai15_head100k/user_log_format1_little.csv")
    every = D.read_tmall(p, action_types=("click", "cart", "purchase", "favourite"))
    assert (len(every), every.summary()["users"], every.summary()["items"]) == (100_000, 710, 45_444)
    clicks = D.read_tmall(p)
    assert (len(clicks), clicks.summary()["users"]) == (88_033, 710)
    assert clicks.info["n_missing_values"] == 0       # brand_id is empty on 115 rows: unused
    assert cli._guess_format(str(p)) == "tmall"

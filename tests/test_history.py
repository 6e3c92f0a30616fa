"""The click-history reader (history.csv) and session splitting.  numpy only."""
from __future__ import annotations

import datetime as dt
import io
import os
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.append(HERE)

from deeprec_edge.history import (MS_THRESHOLD, HistoryError,  # noqa: E402
                                  parse_timestamp, read_history, split_sessions)
from helpers_model import random_model  # noqa: E402

T0 = 1_700_000_000  # 2023-11-14T22:13:20Z


def utc(*args) -> float:
    return dt.datetime(*args, tzinfo=dt.timezone.utc).timestamp()


@pytest.fixture(scope="module")
def model():
    return random_model(n_items=20)  # ids 1000, 1007, ..., 1133


def write(tmp_path, text, name="history.csv", encoding="utf-8"):
    p = tmp_path / name
    p.write_bytes(text.encode(encoding))
    return p


def error(tmp_path, text, **kw) -> str:
    p = write(tmp_path, text)
    with pytest.raises(HistoryError) as ei:
        read_history(p, **kw)
    msg = str(ei.value)
    assert str(p) in msg, msg
    return msg


# --------------------------------------------------------------------------
# columns
# --------------------------------------------------------------------------


@pytest.mark.parametrize("item", ["item_id", "item", "itemId", "aid", "ItemId", "ITEM_ID"])
@pytest.mark.parametrize("time", ["timestamp", "time", "ts", "Time"])
def test_column_names_detected(tmp_path, item, time):
    p = write(tmp_path, f"{item},{time}\n1000,{T0}\n1007,{T0 + 5}\n")
    h = read_history(p)
    assert h.columns == {"item": item, "time": time, "session": None}
    np.testing.assert_array_equal(h.item_ids, [1000, 1007])
    assert h.session_ids is None and h.items is None


@pytest.mark.parametrize("session", ["session_id", "session", "SessionId", "sessionid"])
def test_session_column_detected(tmp_path, session):
    p = write(tmp_path, f"{session},item_id,timestamp\ns1,1000,{T0}\ns2,1007,{T0 + 1}\n")
    h = read_history(p)
    assert h.columns["session"] == session
    np.testing.assert_array_equal(h.session_ids, ["s1", "s2"])


def test_column_order_is_free_and_other_columns_ignored(tmp_path, model):
    a = read_history(write(tmp_path, f"item_id,timestamp,session_id\n1000,{T0},a\n"
                                     f"1014,{T0 + 3},a\n", "a.csv"), model=model)
    b = read_history(write(tmp_path, f"user,session_id,price,timestamp,item_id\n"
                                     f"u,a,1.5,{T0},1000\nu,a,2,{T0 + 3},1014\n", "b.csv"),
                     model=model)
    for h in (a, b):
        np.testing.assert_array_equal(h.items, [0, 2])
        assert h.items.dtype == np.int32 and h.timestamps.dtype == np.float64
        np.testing.assert_array_equal(h.timestamps, [T0, T0 + 3])
        np.testing.assert_array_equal(h.session_ids, ["a", "a"])
        np.testing.assert_array_equal(h.item_ids, [1000, 1014])


def test_explicit_columns(tmp_path, model):
    p = write(tmp_path, f"product,when,visit,item\n1007,{T0},v1,zzz\n1000,{T0 + 1},v1,zzz\n")
    h = read_history(p, model=model, item_col="product", time_col="when", session_col="visit")
    np.testing.assert_array_equal(h.items, [1, 0])
    assert h.columns == {"item": "product", "time": "when", "session": "visit"}
    msg = error(tmp_path, f"item_id,timestamp\n1000,{T0}\n", item_col="sku")
    assert "no column named 'sku' (given as the item id column)" in msg
    assert "['item_id', 'timestamp']" in msg


def test_missing_and_ambiguous_columns(tmp_path):
    msg = error(tmp_path, "item_id,date\n1000,2024-01-01\n")
    assert "no timestamp column" in msg and "time_col" in msg
    msg = error(tmp_path, f"sku,timestamp\n1000,{T0}\n")
    assert "no item id column" in msg and "'item_id'" in msg
    msg = error(tmp_path, f"item,item_id,timestamp\n1,1000,{T0}\n")
    assert "ambiguous item id column: ['item', 'item_id']" in msg and "item_col" in msg


@pytest.mark.parametrize("sep", ["\t", ";"])
def test_tab_and_semicolon_separated(tmp_path, sep):
    text = sep.join(["SessionId", "ItemId", "Time"]) + "\n" + \
        sep.join(["7", "1000", str(T0)]) + "\n" + sep.join(["7", "1007", str(T0 + 2)]) + "\n"
    h = read_history(write(tmp_path, text))
    np.testing.assert_array_equal(h.item_ids, [1000, 1007])
    np.testing.assert_array_equal(h.session_ids, ["7", "7"])


def test_bom_blank_lines_whitespace_and_quotes(tmp_path, model):
    text = f'\ufeffitem_id, timestamp \r\n\r\n 1000 , {T0} \r\n\r\n"1007","{T0 + 1}"\r\n\r\n'
    h = read_history(write(tmp_path, text), model=model)
    np.testing.assert_array_equal(h.items, [0, 1])
    assert h.n_rows == 2


def test_file_objects_and_paths(tmp_path, model):
    text = f"item_id,timestamp\n1000,{T0}\n1007,{T0 + 1}\n"
    p = write(tmp_path, text)
    for src in (p, str(p), io.StringIO(text), io.BytesIO(text.encode())):
        h = read_history(src, model=model)
        np.testing.assert_array_equal(h.items, [0, 1])
    with open(p, "rb") as f:  # a caller's binary file stays open
        read_history(f, model=model)
        assert not f.closed
    with open(p, "r", encoding="utf-8", newline="") as f:
        assert read_history(f).source == str(p)


# --------------------------------------------------------------------------
# timestamps
# --------------------------------------------------------------------------


@pytest.mark.parametrize("text,expect", [
    ("2024-03-01T12:00:00Z", utc(2024, 3, 1, 12)),
    ("2024-03-01T12:00:00", utc(2024, 3, 1, 12)),               # naive = UTC
    ("2024-03-01 12:00:00", utc(2024, 3, 1, 12)),
    ("2024-03-01T12:00:00+02:00", utc(2024, 3, 1, 10)),
    ("2024-03-01T12:00:00-0530", utc(2024, 3, 1, 17, 30)),
    ("2024-03-01T12:00:00+01", utc(2024, 3, 1, 11)),
    ("2024-03-01T12:00:00.250Z", utc(2024, 3, 1, 12) + 0.25),
    ("2024-03-01T12:00:00.123456789", utc(2024, 3, 1, 12) + 0.123456789),
    ("2024-03-01T12:00", utc(2024, 3, 1, 12)),
    ("2024-03-01", utc(2024, 3, 1)),
    ("2024-02-29T23:59:59z", utc(2024, 2, 29, 23, 59, 59)),
    ("2016-12-31T23:59:60Z", utc(2017, 1, 1)),               # a leap second, as unix time
])
def test_iso_timestamps(text, expect):
    t, kind = parse_timestamp(text)
    assert kind == "iso" and t == pytest.approx(expect, abs=1e-6)


@pytest.mark.parametrize("text,expect,kind", [
    ("1700000000", 1_700_000_000, "s"),
    ("1700000000.5", 1_700_000_000.5, "s"),
    ("0", 0, "s"),
    ("99999999999", 99_999_999_999, "s"),
    ("100000000000", 100_000_000, "ms"),          # MS_THRESHOLD: 1e11 -> milliseconds
    ("1700000000123", 1_700_000_000.123, "ms"),
    ("1.7e12", 1_700_000_000, "ms"),
    ("12345678", 12_345_678, "s"),                 # eight digits, but no date: seconds
    ("19001301", 19_001_301, "s"),
])
def test_unix_timestamps(text, expect, kind):
    t, k = parse_timestamp(text)
    assert k == kind and t == pytest.approx(expect, abs=1e-6)
    assert MS_THRESHOLD == 1e11


@pytest.mark.parametrize("text", ["yesterday", "2024-13-01", "2024-02-30T00:00:00",
                                  "2024-03-01T25:00:00", "2024-03-01T12:00:00+25:00",
                                  "nan", "inf", "1e20", "12:00:00", "2024/03/01"])
def test_bad_timestamps(text):
    with pytest.raises(ValueError):
        parse_timestamp(text)


@pytest.mark.parametrize("text", ["20240301", "19991231", "21001231"])
def test_a_date_without_dashes_is_not_read_as_seconds_of_1970(text):
    """20240301 read as unix seconds was 1970-08-23, and consecutive days one
    second apart (one session): the message says how to write it."""
    with pytest.raises(ValueError, match=f"looks like a date written YYYYMMDD; write it as "
                                         f"ISO-8601 \\({text[:4]}-{text[4:6]}-{text[6:]}\\)"):
        parse_timestamp(text)


def test_iso_seconds_and_ms_files_agree(tmp_path, model):
    iso = read_history(write(tmp_path, "item_id,timestamp\n1000,2023-11-14T22:13:20Z\n"
                                       "1007,2023-11-14T23:13:20.5+01:00\n", "iso.csv"),
                       model=model)
    sec = read_history(write(tmp_path, f"item_id,timestamp\n1000,{T0}\n1007,{T0}.5\n",
                             "s.csv"), model=model)
    ms = read_history(write(tmp_path, f"item_id,timestamp\n1000,{T0}000\n1007,{T0}500\n",
                            "ms.csv"), model=model)
    assert (iso.time_format, sec.time_format, ms.time_format) == ("iso", "s", "ms")
    for h in (iso, sec, ms):
        np.testing.assert_allclose(h.timestamps, [T0, T0 + 0.5], rtol=0, atol=1e-6)


def test_units_and_kinds_must_be_consistent(tmp_path):
    msg = error(tmp_path, f"item_id,timestamp\n1000,{T0}\n1007,{T0}000\n")
    assert "line 3, column 'timestamp'" in msg
    assert "reads as unix milliseconds, but the file's timestamps are unix seconds (decided " \
           "by line 2)" in msg
    msg = error(tmp_path, f"item_id,timestamp\n1000,{T0}000\n1007,{T0}\n")
    assert "line 3, column 'timestamp'" in msg and "are unix milliseconds" in msg
    msg = error(tmp_path, f"item_id,timestamp\n1000,2024-01-01\n1007,{T0}\n")
    assert "line 3" in msg and "are ISO-8601" in msg


# --------------------------------------------------------------------------
# order, unknown ids
# --------------------------------------------------------------------------


def test_rows_sorted_by_time_stably(tmp_path, model):
    rows = [(1021, T0 + 10, "b"), (1000, T0, "a"), (1007, T0 + 10, "b"), (1014, T0 + 5, "a"),
            (1028, T0 + 10, "c"), (1035, T0 - 1, "a")]
    text = "item_id,timestamp,session_id\n" + "".join(f"{i},{t},{s}\n" for i, t, s in rows)
    h = read_history(write(tmp_path, text), model=model)
    np.testing.assert_array_equal(h.item_ids, [1035, 1000, 1014, 1021, 1007, 1028])
    np.testing.assert_array_equal(h.timestamps, [T0 - 1, T0, T0 + 5, T0 + 10, T0 + 10, T0 + 10])
    np.testing.assert_array_equal(h.session_ids, ["a", "a", "a", "b", "b", "c"])
    np.testing.assert_array_equal(h.items, model.item_index(h.item_ids)[0])
    assert h.last_timestamp == T0 + 10


def test_unknown_ids_counted_skipped_reported(tmp_path, model):
    text = (f"item_id,timestamp\n1000,{T0}\n42,{T0 + 1}\n1007,{T0 + 2}\nabc,{T0 + 3}\n"
            f"42,{T0 + 4}\n1001,{T0 + 5}\n7,{T0 + 6}\n8,{T0 + 7}\n9,{T0 + 8}\n1014,{T0 + 9}\n")
    h = read_history(write(tmp_path, text), model=model)
    assert h.n_rows == 10 and h.n_unknown == 7 and len(h) == 3
    assert h.unknown_examples == ["42", "abc", "1001", "7", "8"]
    np.testing.assert_array_equal(h.items, [0, 1, 2])
    np.testing.assert_array_equal(h.timestamps, [T0, T0 + 2, T0 + 9])


def test_string_catalogue(tmp_path):
    m = random_model(n_items=6, string_ids=True)
    text = f"aid,ts\nitem-3,{T0}\nitem-9,{T0 + 1}\n5,{T0 + 2}\nitem-0,{T0 + 3}\n"
    h = read_history(write(tmp_path, text), model=m)
    np.testing.assert_array_equal(h.items, [3, 0])
    np.testing.assert_array_equal(h.item_ids, ["item-3", "item-0"])
    assert h.n_unknown == 2


def test_ids_without_a_model(tmp_path):
    h = read_history(write(tmp_path, f"item_id,ts\n5,{T0}\n-3,{T0 + 1}\n5,{T0 + 2}\n", "a.csv"))
    assert h.item_ids.dtype == np.int64
    np.testing.assert_array_equal(h.item_ids, [5, -3, 5])
    h = read_history(write(tmp_path, f"item_id,ts\n5,{T0}\nx7,{T0 + 1}\n", "b.csv"))
    assert h.item_ids.dtype.kind == "U"
    np.testing.assert_array_equal(h.item_ids, ["5", "x7"])


def test_all_unknown(tmp_path, model):
    msg = error(tmp_path, f"item_id,timestamp\n1,{T0}\n2,{T0 + 1}\n1,{T0 + 2}\n", model=model)
    assert "none of the 3 click(s) is on an item in the model's catalogue" in msg
    assert "'1', '2'" in msg


# --------------------------------------------------------------------------
# malformed input
# --------------------------------------------------------------------------


def test_malformed_timestamp_names_line_and_column(tmp_path):
    text = (f"session_id,item_id,timestamp\na,1000,{T0}\na,1007,{T0 + 1}\n"
            f"a,1014,not-a-time\na,1021,{T0 + 3}\n")
    msg = error(tmp_path, text)
    assert "line 4, column 'timestamp'" in msg and "'not-a-time' is not a timestamp" in msg


def test_garbage_rows(tmp_path):
    msg = error(tmp_path, f"item_id,timestamp,session_id\n1000,{T0},a\n1007,{T0}\n")
    assert "line 3, column 'session_id'" in msg and "has 2 field(s) but the header has 3" in msg
    msg = error(tmp_path, f"item_id,timestamp\n1000,{T0}\n%%garbage%%\n")
    assert "line 3, column 'timestamp'" in msg and "missing: ['timestamp']" in msg
    msg = error(tmp_path, f"item_id,timestamp\n1000,{T0}\n1007,{T0},extra\n")
    assert "line 3: has 3 fields but the header has 2" in msg
    msg = error(tmp_path, f"item_id,timestamp\n1000,{T0}\n,{T0}\n")
    assert "line 3, column 'item_id': empty item id" in msg
    msg = error(tmp_path, f"item_id,timestamp\n1000,{T0}\n1007,\n")
    assert "line 3, column 'timestamp': empty timestamp" in msg
    msg = error(tmp_path, f"item_id,timestamp,session\n1000,{T0},s\n1007,{T0}, \n")
    assert "line 3, column 'session': empty session id" in msg
    msg = error(tmp_path, f'item_id,timestamp\n1000,{T0}\n"10"07,{T0}\n')
    assert "line 3: malformed CSV" in msg


def test_line_numbers_count_physical_lines(tmp_path):
    # blank lines and a quoted field spanning two lines still give file lines
    text = f'item_id,timestamp,note\n\n1000,{T0},"two\nlines"\n\n1007,oops,x\n'
    msg = error(tmp_path, text)
    assert "line 6, column 'timestamp'" in msg


def test_invalid_utf8(tmp_path):
    p = tmp_path / "h.csv"
    p.write_bytes(b"item_id,timestamp\n1000," + str(T0).encode() + b"\n\xff\xfe,1\n")
    with pytest.raises(HistoryError, match="not valid UTF-8"):
        read_history(p)


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
@pytest.mark.parametrize("bad_line", [2, 3, 4608, 5001])
def test_invalid_utf8_names_its_line(tmp_path, bad_line, newline):
    """Text decodes in blocks of several KB, so the decoder's position is not
    the bad byte's line (line 5001 was reported as line 4608)."""
    rows = [b"item_id,timestamp,note"] + [b"1000,%d,caf\xc3\xa9" % (T0 + i)
                                          for i in range(1, 6000)]
    rows[bad_line - 1] = b"1007,%d,caf\xe9" % T0            # latin-1 e-acute: not UTF-8
    data = newline.join(rows) + newline
    p = tmp_path / "h.csv"
    p.write_bytes(data)
    for src in (p, io.BytesIO(data)):
        with pytest.raises(HistoryError) as e:
            read_history(src)
        assert f"line {bad_line}: not valid UTF-8 text" in str(e.value), str(e.value)


def test_clicks_dated_in_the_future_are_skipped_and_counted(tmp_path, model):
    now = utc(2024, 3, 1)
    text = ("item_id,timestamp\n"
            f"1000,{now - 100:.0f}\n"
            "1007,2999-01-01T00:00:00Z\n"               # the audit's click
            f"1014,{now + 3600:.0f}\n"                  # within the day of slack: kept
            f"1021,{now + 2 * 86400:.0f}\n")            # 2 days ahead: skipped
    p = write(tmp_path, text.replace("2999-01-01T00:00:00Z", f"{utc(2999, 1, 1):.0f}"))
    h = read_history(p, model=model, now=now)
    assert h.n_rows == 4 and h.n_future == 2 and len(h) == 2
    assert h.future_example == (3, f"{utc(2999, 1, 1):.0f}")
    assert h.timestamps.max() == now + 3600
    p = write(tmp_path, "item_id,timestamp\n1000,2999-01-01\n1007,2998-05-05T10:00:00Z\n")
    with pytest.raises(HistoryError, match=r"every click \(2\) is dated more than 24 hours in "
                                           r"the future \(the first, line 2: '2999-01-01'\)"):
        read_history(p, model=model, now=now)
    # the default clock is this machine's: a click of 2999 is in the future
    p = write(tmp_path, f"item_id,timestamp\n1000,{T0}\n1007,{utc(2999, 1, 1):.0f}\n")
    assert read_history(p).n_future == 1


def test_a_future_click_does_not_block_continual_finetuning(tmp_path):
    """The personal model's last timestamp is that of the newest *used*
    click, so later clicks still fine-tune it further."""
    import deeprec_edge as de
    from deeprec_edge.demo import demo_paths
    m, h = demo_paths()
    model = de.load_model(m)
    lines = Path(h).read_text(encoding="utf-8").splitlines()
    lines.insert(5, lines[5].split(",")[0] + ",2999-01-01T00:00:00Z")
    p = write(tmp_path, "\n".join(lines[:150]) + "\n")
    hist = de.read_history(p, model=model)
    assert hist.n_future == 1
    first = de.finetune(model, hist, epochs=1, holdout=0)
    assert first.model.personal["last_timestamp"] < utc(2100, 1, 1)
    later = write(tmp_path, "\n".join([lines[0]] + lines[150:]) + "\n", name="later.csv")
    second = de.finetune(first.model, de.read_history(later, model=model), epochs=1, holdout=0)
    assert second.summary["clicks_used"] == len(lines) - 150


def test_empty_file_and_header_only(tmp_path):
    msg = error(tmp_path, "")
    assert "the file is empty; expected a header row" in msg
    msg = error(tmp_path, "\n\n")
    assert "the file is empty" in msg
    msg = error(tmp_path, "item_id,timestamp\n")
    assert "no clicks: the file has a header (item_id,timestamp) but no data rows" in msg
    msg = error(tmp_path, "item_id,timestamp\n\n\n")
    assert "no data rows" in msg


def test_history_error_is_value_error():
    assert issubclass(HistoryError, ValueError)


# --------------------------------------------------------------------------
# sessions
# --------------------------------------------------------------------------


def test_split_sessions_gap_rule():
    t = np.array([0, 10, 3610, 7211, 7212, 7212 + 3600.5])
    # a gap of exactly gap_seconds does not split; more than it does
    np.testing.assert_array_equal(split_sessions(t, 3600),
                                  [True, False, False, True, False, True])
    np.testing.assert_array_equal(split_sessions(t, 5), [True, True, True, True, False, True])
    np.testing.assert_array_equal(split_sessions(t, None), [True] + [False] * 5)
    assert split_sessions(np.zeros(0), 3600).shape == (0,)
    with pytest.raises(ValueError, match="gap_seconds must be positive"):
        split_sessions(t, 0)


def test_split_sessions_by_ids():
    t = np.array([0, 1, 2, 100000, 100001])
    ids = np.array(["a", "a", "b", "b", "a"])
    np.testing.assert_array_equal(split_sessions(t, 3600, ids), [True, False, True, False, True])
    with pytest.raises(ValueError, match="session_ids has shape"):
        split_sessions(t, 3600, ids[:2])


def test_history_session_starts_and_newer_than(tmp_path, model):
    text = (f"item_id,timestamp\n1000,{T0}\n1007,{T0 + 60}\n1014,{T0 + 4000}\n"
            f"1021,{T0 + 4010}\n")
    h = read_history(write(tmp_path, text), model=model)
    np.testing.assert_array_equal(h.session_starts(3600), [True, False, True, False])
    np.testing.assert_array_equal(h.session_starts(30), [True, True, True, False])
    n = h.newer_than(T0 + 60)
    np.testing.assert_array_equal(n.items, [2, 3])
    assert n.n_older == 2 and n.n_rows == h.n_rows and len(h) == 4
    assert h.newer_than(None) is h


# --------------------------------------------------------------------------
# scale
# --------------------------------------------------------------------------


def test_streaming_memory_is_linear_and_small(tmp_path, model):
    n = 20_000
    rng = np.random.default_rng(0)
    ids = model.item_ids[rng.integers(0, model.n_items, n)]
    ts = T0 + np.arange(n) * 7
    p = tmp_path / "big.csv"
    with open(p, "w") as f:
        f.write("session_id,item_id,timestamp\n")
        for k in range(n):
            f.write(f"s{k // 50},{ids[k]},{ts[k]}\n")
    tracemalloc.start()
    try:
        h = read_history(p, model=model)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(h) == n and h.n_unknown == 0
    np.testing.assert_array_equal(h.item_ids, ids)
    # per row: int32 item, int64 id, float64 time, session code and the
    # session id array (unicode); about 55 bytes, below the file's own text
    assert peak < 100 * n, f"peak {peak / n:.0f} bytes per row"


@pytest.mark.parametrize("name,text", [
    # a header of 200k columns, none of them an item column: the whole header was quoted
    ("wide header", ",".join(f"col{i}" for i in range(200_000)) + "\n1,2\n"),
    # one long timestamp: quoted whole
    ("long timestamp", "item_id,timestamp\n1000," + "9" * 130_000 + "x\n"),
    # long unknown ids only
    ("long ids", "item_id,timestamp\n" + "".join(f"{'x' * 100_000}{i},{T0 + i}\n"
                                                 for i in range(5))),
])
def test_error_messages_stay_short_whatever_the_file_holds(tmp_path, model, name, text):
    """Each message quoted what it read in full: 2 MB for a wide header, 650 KB
    for long ids. Quotes are cut (and say how long the value was)."""
    msg = error(tmp_path, text, model=model)
    assert len(msg) <= 2100, (name, len(msg))
    assert "characters)" in msg or "more)" in msg, msg[:300]


def test_messages_count_the_clicks_skipped_as_dated_in_the_future(tmp_path, model):
    """Two known items dated 2999 and one unknown id: 'none of the 3 click(s) is
    on an item in the model's catalogue' -- two of them are. One known click
    and one future one: 'needs at least 2 clicks of known items, got 1', with
    no word about the skipped click."""
    import deeprec_edge as de
    known = [str(i) for i in np.asarray(model.item_ids)[:2]]
    text = ("item_id,timestamp\n" + f"{known[0]},2999-01-01T00:00:00Z\n"
            + f"{known[1]},2999-01-01T00:00:01Z\n" + "nope,2023-11-14T22:13:20Z\n")
    msg = error(tmp_path, text, model=model)
    assert "none of the 1 click(s) not dated in the future" in msg
    assert "2 other(s), dated more than 24 hours in the future, were skipped" in msg
    p = write(tmp_path, "item_id,timestamp\n" + f"{known[0]},2023-11-14T22:13:20Z\n"
              + f"{known[1]},2999-01-01T00:00:00Z\n", name="one.csv")
    with pytest.raises(ValueError) as e:
        de.finetune(model, de.read_history(p, model=model))
    assert "got 1" in str(e.value) and "1 click(s) dated in the future were skipped" in \
        str(e.value)

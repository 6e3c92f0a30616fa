"""Reading the device's click history (``history.csv``) and splitting sessions.

The file is CSV with a header row naming the columns: an item id column, a
timestamp column and optionally a session id column, in any order, other
columns ignored.  Column names are auto-detected (case-insensitive):

- item: ``item_id``, ``itemid`` (``itemId``, ``ItemId``), ``item``, ``aid``
- time: ``timestamp``, ``time``, ``ts``
- session (optional): ``session_id``, ``sessionid`` (``SessionId``), ``session``

or given explicitly.  The delimiter is a comma, or a tab or semicolon when
the header has no comma.  Timestamps are ISO-8601 (``2024-03-01T12:00:00``,
``...Z``, ``...+02:00``, a space instead of ``T``, fractions of a second, or a
date alone; without a zone they are UTC) or unix time as numbers.  Unix
seconds or milliseconds are told apart by magnitude, decided once per file
from the first row: a value of 1e11 or more is milliseconds (1e11 s would be
the year 5138; 1e11 ms is 1973-03-03), below is seconds; a value of 1e14 or
more (microseconds, nanoseconds) is rejected.  Every row must then agree
with the first (same kind, same unit), otherwise the row is an error.  Eight
digits that form a date of 1900-2100 (``20240301``, ISO-8601's basic form)
are an error rather than seconds of 1970; a leap second (``23:59:60``) is
the next minute's first second, as unix time counts it.

A click dated more than :data:`FUTURE_TOLERANCE_SECONDS` (one day) after
the reader's clock is skipped and counted (``History.n_future``), not used:
a personal model remembers its newest click, so one click in the year 2999
would make every later continual fine-tune find "no new clicks".  The day
of slack absorbs clock skew between devices and local times written
without a zone.

Reading streams row by row with the :mod:`csv` module; memory is linear in
the number of rows (a few bytes per row: dense item codes and float64
times).  Rows are sorted by time, stably (ties keep file order).  Text must
be UTF-8; an invalid byte is reported with the number of the line it is on.
"""
from __future__ import annotations

import csv
import datetime as _dt
import io
import itertools
import os
import re
import time
from array import array
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ._checks import quoted, quoted_list

__all__ = [
    "HistoryError",
    "History",
    "read_history",
    "split_sessions",
    "parse_timestamp",
    "ITEM_COLUMNS",
    "TIME_COLUMNS",
    "SESSION_COLUMNS",
    "MS_THRESHOLD",
    "FUTURE_TOLERANCE_SECONDS",
]

#: Item column names recognised automatically (compared case-insensitively).
ITEM_COLUMNS = ("item_id", "itemid", "item", "aid")
#: Timestamp column names recognised automatically.
TIME_COLUMNS = ("timestamp", "time", "ts")
#: Session column names recognised automatically.
SESSION_COLUMNS = ("session_id", "sessionid", "session")
#: Numeric timestamps at or above this magnitude are milliseconds.
MS_THRESHOLD = 1e11
#: Numeric timestamps at or above this magnitude are rejected (micro/nanoseconds).
MAX_MS = 1e14
#: Clicks dated later than the reader's clock plus this (seconds) are skipped
#: and counted as dated in the future.
FUTURE_TOLERANCE_SECONDS = 86400.0

_NUM_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_INT_RE = re.compile(r"[+-]?\d+")
_ISO_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?)?"
    r"\s*(?:([Zz])|([+-])(\d{2})(?::?(\d{2}))?)?")
_EPOCH = _dt.datetime(1970, 1, 1)


class HistoryError(ValueError):
    """A click history cannot be used: the message names the file and, for
    a bad row, the line number and the column.  Values quoted from the file
    are shortened (:func:`deeprec_edge._checks.quoted`), and the message is
    at most :data:`MAX_MESSAGE` characters whatever it quotes."""

    def __init__(self, msg: str = "") -> None:
        if len(msg) > MAX_MESSAGE:
            msg = msg[:MAX_MESSAGE] + " ..."
        super().__init__(msg)


#: Longest message of a :class:`HistoryError` (characters).
MAX_MESSAGE = 2000


@dataclass
class History:
    """Clicks read by :func:`read_history`, sorted by time (stable).

    - ``items``: dense item indices (int32) into the model given to
      :func:`read_history`; None when read without a model.
    - ``item_ids``: the catalogue item ids of the kept clicks (int64 when
      every id in the file is an integer and no model says otherwise, else
      unicode; with a model, the model's own ids).
    - ``timestamps``: unix time in seconds (float64).
    - ``session_ids``: the session column's values (unicode) or None.
    - ``n_rows``: data rows read; ``n_unknown``: rows skipped because the
      item is not in the model's catalogue; ``unknown_examples``: up to five
      distinct unknown ids as written in the file.
    - ``source``: file name; ``columns``: the columns used
      (``{"item": ..., "time": ..., "session": ... or None}``);
      ``time_format``: ``"iso"``, ``"s"`` or ``"ms"``.
    - ``n_older``: clicks dropped by :meth:`newer_than` (0 otherwise).
    - ``n_future``: rows skipped because their click is dated more than
      :data:`FUTURE_TOLERANCE_SECONDS` after the reader's clock;
      ``future_example``: the first such row as ``(line, timestamp text)``.
    """

    items: Optional[np.ndarray]
    item_ids: np.ndarray
    timestamps: np.ndarray
    session_ids: Optional[np.ndarray]
    n_rows: int
    n_unknown: int = 0
    unknown_examples: List[str] = field(default_factory=list)
    source: str = "<history>"
    columns: Dict[str, Optional[str]] = field(default_factory=dict)
    time_format: str = "s"
    n_older: int = 0
    n_future: int = 0
    future_example: Optional[Tuple[int, str]] = None

    def __len__(self) -> int:
        return int(self.timestamps.shape[0])

    @property
    def last_timestamp(self) -> Optional[float]:
        """Time of the newest click (unix seconds), None when empty."""
        return float(self.timestamps[-1]) if len(self) else None

    def session_starts(self, gap_seconds: Optional[float] = 3600.0) -> np.ndarray:
        """Session start flags (bool per click): from the session column when
        the file has one, else by the time-gap rule (:func:`split_sessions`)."""
        return split_sessions(self.timestamps, gap_seconds, self.session_ids)

    def select(self, mask: np.ndarray) -> "History":
        """A History with only the clicks where ``mask`` is True."""
        m = np.asarray(mask, bool)
        if m.shape != self.timestamps.shape:
            raise ValueError(f"mask has shape {m.shape}, expected {self.timestamps.shape}")
        return self._take(m)

    def _take(self, index: np.ndarray) -> "History":
        """A History of the clicks ``index`` (a bool mask or positions) picks."""
        return replace(
            self,
            items=None if self.items is None else self.items[index],
            item_ids=self.item_ids[index],
            timestamps=self.timestamps[index],
            session_ids=None if self.session_ids is None else self.session_ids[index],
            unknown_examples=list(self.unknown_examples),
            columns=dict(self.columns),
        )

    def time_sorted(self) -> "History":
        """This history with its clicks sorted by time, stably (ties keep
        their order); ``self`` when they already are (as
        :func:`read_history` leaves them)."""
        ts = np.asarray(self.timestamps)
        if ts.shape[0] < 2 or (ts[1:] >= ts[:-1]).all():
            return self
        return self._take(np.argsort(ts, kind="stable"))

    def newer_than(self, timestamp: Optional[float]) -> "History":
        """Only the clicks strictly after ``timestamp`` (unix seconds; None
        keeps all); the number dropped is added to ``n_older``.  Not what
        continual fine-tuning learns from: clicks dated exactly a personal
        model's ``last_timestamp`` may be new too (its record's
        ``last_timestamp_clicks``, docs/model-format.md)."""
        if timestamp is None:
            return self
        m = self.timestamps > float(timestamp)
        h = self.select(m)
        h.n_older = self.n_older + int((~m).sum())
        return h


def split_sessions(timestamps: Any, gap_seconds: Optional[float] = 3600.0,
                   session_ids: Any = None) -> np.ndarray:
    """Session start flags for clicks in time order.

    Click 0 always starts a session.  With ``session_ids`` a session starts
    wherever the id differs from the previous click's (the ids decide; the
    gap is not used).  Otherwise a gap of *more than* ``gap_seconds`` since
    the previous click starts one (GRU4Rec's rule; ``None`` means one
    session).  Returns a bool array of the same length.
    """
    t = np.asarray(timestamps, dtype=np.float64)
    if t.ndim != 1:
        raise ValueError(f"timestamps must be 1-d, got shape {t.shape}")
    n = t.shape[0]
    starts = np.zeros(n, dtype=bool)
    if n == 0:
        return starts
    starts[0] = True
    if session_ids is not None:
        s = np.asarray(session_ids)
        if s.shape != (n,):
            raise ValueError(f"session_ids has shape {s.shape}, expected ({n},)")
        starts[1:] = s[1:] != s[:-1]
        return starts
    if gap_seconds is None:
        return starts
    gap = float(gap_seconds)
    if not gap > 0:
        raise ValueError(f"gap_seconds must be positive, got {gap_seconds!r}")
    starts[1:] = np.diff(t) > gap
    return starts


# --------------------------------------------------------------------------
# timestamps
# --------------------------------------------------------------------------


def _parse_iso(s: str) -> Optional[float]:
    m = _ISO_RE.fullmatch(s)
    if m is None:
        return None
    y, mo, d, hh, mi, ss, frac, z, sign, oh, om = m.groups()
    leap = ss == "60"                  # a leap second (23:59:60): one second after :59
    try:
        t = _dt.datetime(int(y), int(mo), int(d), int(hh or 0), int(mi or 0),
                         59 if leap else int(ss or 0))
    except ValueError:
        return None
    secs = (t - _EPOCH).total_seconds() + (1.0 if leap else 0.0)
    if frac:
        secs += int(frac) / 10.0 ** len(frac)
    if sign:
        h, mm = int(oh), int(om or 0)
        if h > 23 or mm > 59:
            return None
        off = h * 3600 + mm * 60
        secs -= off if sign == "+" else -off
    return secs


def _looks_like_basic_date(s: str) -> bool:
    """Eight digits that are a calendar date of 1900-2100 (YYYYMMDD)."""
    y, mo, d = int(s[:4]), int(s[4:6]), int(s[6:])
    if not 1900 <= y <= 2100:
        return False
    try:
        _dt.date(y, mo, d)
    except ValueError:
        return False
    return True


def parse_timestamp(s: str) -> Tuple[float, str]:
    """Parse one timestamp: returns ``(unix seconds, kind)`` with kind
    ``"iso"``, ``"s"`` or ``"ms"`` (numbers: milliseconds when the
    magnitude is at least :data:`MS_THRESHOLD`).  Raises ValueError."""
    s = s.strip()
    if _NUM_RE.fullmatch(s):
        if len(s) == 8 and s.isdigit() and _looks_like_basic_date(s):
            # 20240301 as unix seconds is 1970-08-23: a date written without dashes
            raise ValueError(f"{quoted(s)} looks like a date written YYYYMMDD; write it as ISO-8601 "
                             f"({s[:4]}-{s[4:6]}-{s[6:]}) or as unix seconds")
        v = float(s)
        a = abs(v)
        if a >= MAX_MS:
            raise ValueError(f"{quoted(s)} is too large for unix seconds or milliseconds "
                             f"(microseconds or nanoseconds are not supported)")
        return (v / 1000.0, "ms") if a >= MS_THRESHOLD else (v, "s")
    t = _parse_iso(s)
    if t is None:
        raise ValueError(f"{quoted(s)} is not a timestamp (expected ISO-8601 such as "
                         f"2024-03-01T12:00:00Z, or unix seconds or milliseconds)")
    return t, "iso"


_KIND_NAMES = {"iso": "ISO-8601", "s": "unix seconds", "ms": "unix milliseconds"}


# --------------------------------------------------------------------------
# columns
# --------------------------------------------------------------------------


def _find_column(header: List[str], role: str, given: Optional[str],
                 candidates: Sequence[str], where: str, option: str,
                 required: bool) -> Optional[int]:
    if given is not None:
        exact = [i for i, h in enumerate(header) if h == given]
        if not exact:
            exact = [i for i, h in enumerate(header) if h.lower() == given.lower()]
        if not exact:
            raise HistoryError(f"{where}: no column named {quoted(given)} (given as the "
                               f"{role} column); the header has {quoted_list(header)}")
        if len(exact) > 1:
            raise HistoryError(f"{where}: the header names column {quoted(given)} "
                               f"{len(exact)} times")
        return exact[0]
    hits = [i for i, h in enumerate(header) if h.lower() in candidates]
    if len(hits) > 1:
        raise HistoryError(f"{where}: ambiguous {role} column: {[header[i] for i in hits]} "
                           f"all match; choose one with {option}")
    if not hits:
        if required:
            raise HistoryError(f"{where}: no {role} column: the header has "
                               f"{quoted_list(header)}; expected "
                               f"one of {list(candidates)} (case-insensitive) or pass {option}")
        return None
    return hits[0]


def _open_text(path_or_file: Any) -> Tuple[Any, str, Any, Any]:
    """(text file object, display name, cleanup function, a function giving
    the line of the first invalid UTF-8 byte or None when it cannot tell)."""
    if isinstance(path_or_file, (str, bytes, os.PathLike)):
        p = os.fspath(path_or_file)
        if isinstance(p, bytes):
            p = os.fsdecode(p)
        f = open(p, "r", encoding="utf-8-sig", newline="")

        def locate() -> Optional[int]:
            with open(p, "rb") as raw:
                return _first_bad_utf8_line(raw)
        return f, p, f.close, locate
    name = str(getattr(path_or_file, "name", "<stream>"))
    if isinstance(path_or_file, io.TextIOBase) or (
            hasattr(path_or_file, "read") and isinstance(path_or_file.read(0), str)):
        return path_or_file, name, lambda: None, lambda: None
    # a binary file: decode it, and give it back to the caller open afterwards
    try:
        start: Optional[int] = path_or_file.tell() if path_or_file.seekable() else None
    except (AttributeError, OSError, ValueError):
        start = None
    w = io.TextIOWrapper(path_or_file, encoding="utf-8-sig", newline="")

    def locate_in_stream() -> Optional[int]:
        if start is None:
            return None
        path_or_file.seek(start)
        return _first_bad_utf8_line(path_or_file)
    return w, name, w.detach, locate_in_stream


def _first_bad_utf8_line(raw: Any) -> Optional[int]:
    """The number of the first line of a binary stream that is not valid
    UTF-8 (lines split as the reader splits them: at \n, \r\n or \r), or
    None.  Text files decode in blocks, so the decoder's error does not say
    which line; this second pass, on the error path only, does."""
    lines = io.TextIOWrapper(raw, encoding="latin-1", newline="")
    try:
        for no, line in enumerate(lines, 1):
            try:
                line.encode("latin-1").decode("utf-8")
            except UnicodeDecodeError:
                return no
        return None
    finally:
        lines.detach()


class _NotUtf8(Exception):
    """Decoding failed; ``line`` is where the text reader had got to."""

    def __init__(self, line: int, reason: str):
        super().__init__(line, reason)
        self.line, self.reason = line, reason


class _Codes:
    """Interns strings: a code per row, one copy per distinct value."""

    def __init__(self) -> None:
        self.index: Dict[str, int] = {}
        self.values: List[str] = []
        self.codes = array("q")

    def add(self, s: str) -> None:
        c = self.index.get(s)
        if c is None:
            c = len(self.values)
            self.index[s] = c
            self.values.append(s)
        self.codes.append(c)


def _id_array(values: List[str]) -> np.ndarray:
    """int64 when every id is a decimal integer fitting int64, else unicode."""
    if values and all(_INT_RE.fullmatch(v) for v in values):
        ints = [int(v) for v in values]
        if all(-(1 << 63) <= v < (1 << 63) for v in ints):
            return np.array(ints, dtype=np.int64)
    return np.array(values, dtype=str) if values else np.zeros(0, np.int64)


# --------------------------------------------------------------------------
# reader
# --------------------------------------------------------------------------


def read_history(path_or_file: Any, model: Any = None, item_col: Optional[str] = None,
                 time_col: Optional[str] = None, session_col: Optional[str] = None,
                 now: Optional[float] = None) -> History:
    """Read a click history CSV (see the module docstring for the format).

    ``path_or_file``: a path or an open file (text or binary).  With
    ``model`` (a :class:`deeprec_edge.model.Model`) item ids are mapped to
    its dense indices; rows whose item is not in its catalogue are counted
    (``n_unknown``), skipped and reported (``unknown_examples``).
    ``item_col``/``time_col``/``session_col`` name the columns explicitly
    (default: auto-detected; the session column is optional).  Clicks dated
    more than :data:`FUTURE_TOLERANCE_SECONDS` after ``now`` (unix seconds;
    default: this machine's clock) are skipped and counted (``n_future``).

    Raises :class:`HistoryError` (a ValueError) naming the file, and for a
    malformed row its line number and column: missing header or columns,
    wrong number of fields, empty or unparseable values, timestamps that
    mix kinds or units, text that is not UTF-8 (with the line of the first
    bad byte), an empty history, a history whose clicks are all in the
    future, or (with a model) a history whose items are all unknown.
    """
    f, where, cleanup, locate = _open_text(path_or_file)
    limit = (time.time() if now is None else float(now)) + FUTURE_TOLERANCE_SECONDS
    try:
        return _read(f, where, model, item_col, time_col, session_col, limit)
    except _NotUtf8 as e:
        exact = locate()
        line = f"line {exact}" if exact else f"at or after line {e.line}"
        raise HistoryError(f"{where}, {line}: not valid UTF-8 text ({e.reason})") from None
    finally:
        cleanup()


def _read(f: Any, where: str, model: Any, item_col: Optional[str], time_col: Optional[str],
          session_col: Optional[str], limit: float) -> History:
    try:
        first = f.readline()
    except UnicodeDecodeError as e:
        raise _NotUtf8(1, e.reason) from None
    if first.startswith("\ufeff"):
        first = first[1:]
    if not first.strip():
        raise HistoryError(f"{where}: the file is empty; expected a header row naming the "
                           f"columns (e.g. item_id,timestamp[,session_id]) and one row per "
                           f"click")
    delim = ","
    if "," not in first:
        if "\t" in first:
            delim = "\t"
        elif ";" in first:
            delim = ";"
    reader = csv.reader(itertools.chain([first], f), delimiter=delim, strict=True)
    try:
        header = [h.strip() for h in next(reader)]
    except csv.Error as e:
        raise HistoryError(f"{where}, line 1: malformed header ({e})") from None
    ci = _find_column(header, "item id", item_col, ITEM_COLUMNS, where, "item_col "
                      "(--item-col)", True)
    ti = _find_column(header, "timestamp", time_col, TIME_COLUMNS, where, "time_col "
                      "(--time-col)", True)
    si = _find_column(header, "session id", session_col, SESSION_COLUMNS, where,
                      "session_col (--session-col)", False)
    used = [("item", ci), ("time", ti)] + ([("session", si)] if si is not None else [])
    idx = [i for _, i in used]
    if len(set(idx)) != len(idx):
        raise HistoryError(f"{where}: the same column is used for two roles "
                           f"({', '.join(f'{r}={quoted(header[i])}' for r, i in used)})")
    n_fields = len(header)
    names = {"item": header[ci], "time": header[ti],
             "session": header[si] if si is not None else None}

    # per-row storage: float64 times, int32 dense items (model) or interned ids
    times = array("d")
    dense = array("i")
    raw_items = _Codes()
    sessions = _Codes() if si is not None else None
    kind: Optional[str] = None
    kind_line = 0
    n_rows = 0
    n_future = 0
    future_example: Optional[Tuple[int, str]] = None
    n_unknown = 0
    unknown_examples: List[str] = []
    unknown_seen = set()
    lookup: Optional[dict] = None
    int_catalogue = False
    memo: Dict[str, int] = {}
    if model is not None:
        lookup = model.id_to_index
        int_catalogue = np.asarray(model.item_ids).dtype.kind in "iu"

    def bad(line: int, col: Optional[int], msg: str) -> HistoryError:
        c = f", column {quoted(header[col])}" if col is not None else ""
        return HistoryError(f"{where}, line {line}{c}: {msg}")

    line = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise bad(reader.line_num, None, f"malformed CSV ({e})") from None
        except UnicodeDecodeError as e:
            raise _NotUtf8(reader.line_num + 1, e.reason) from None
        line = reader.line_num
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank line
        if len(row) != n_fields:
            if len(row) < n_fields:
                missing = [header[i] for i in idx if i >= len(row)]
                col = min(i for i in idx if i >= len(row)) if missing else None
                raise bad(line, col, f"has {len(row)} field(s) but the header has "
                                     f"{n_fields}" + (f" (missing: {missing})" if missing
                                                      else ""))
            raise bad(line, None, f"has {len(row)} fields but the header has {n_fields} "
                                  f"({delim!r}-separated: quote values that contain it)")
        n_rows += 1
        item = row[ci].strip()
        if not item:
            raise bad(line, ci, "empty item id")
        ts_text = row[ti].strip()
        if not ts_text:
            raise bad(line, ti, "empty timestamp")
        try:
            t, k = parse_timestamp(ts_text)
        except ValueError as e:
            raise bad(line, ti, str(e)) from None
        if kind is None:
            kind, kind_line = k, line
        elif k != kind:
            raise bad(line, ti, f"{quoted(ts_text)} reads as {_KIND_NAMES[k]}, but the file's "
                                f"timestamps are {_KIND_NAMES[kind]} (decided by line "
                                f"{kind_line}); one file must use one kind and unit")
        if sessions is not None:
            sv = row[si].strip()
            if not sv:
                raise bad(line, si, "empty session id")
        if t > limit:
            n_future += 1
            if future_example is None:
                future_example = (line, ts_text)
            continue
        if lookup is not None:
            code = memo.get(item)
            if code is None:
                if int_catalogue:
                    key: Any = int(item) if _INT_RE.fullmatch(item) else None
                else:
                    key = item
                code = lookup.get(key, -1) if key is not None else -1
                memo[item] = code
            if code < 0:
                n_unknown += 1
                if item not in unknown_seen and len(unknown_examples) < 5:
                    unknown_seen.add(item)
                    unknown_examples.append(item)
                continue
            dense.append(code)
        else:
            raw_items.add(item)
        times.append(t)
        if sessions is not None:
            sessions.add(sv)

    if n_rows == 0:
        raise HistoryError(f"{where}: no clicks: the file has a header "
                           f"({delim.join(header)}) but no data rows")
    if n_future == n_rows:
        fl, ft = future_example or (0, "")
        raise HistoryError(
            f"{where}: every click ({n_rows}) is dated more than "
            f"{FUTURE_TOLERANCE_SECONDS / 3600:g} hours in the future (the first, line {fl}: "
            f"{quoted(ft)}); is the device clock right, and are the timestamps unix seconds?")
    if model is not None and len(dense) == 0 and n_unknown:
        counted = (f"{n_rows - n_future} click(s) not dated in the future" if n_future
                   else f"{n_rows} click(s)")
        future = (f"; {n_future} other(s), dated more than "
                  f"{FUTURE_TOLERANCE_SECONDS / 3600:g} hours in the future, were skipped"
                  if n_future else "")
        raise HistoryError(
            f"{where}: none of the {counted} is on an item in the model's catalogue "
            f"(unknown ids such as {', '.join(quoted(u) for u in unknown_examples)}){future}; "
            f"is this history for this model, and is {quoted(names['item'])} the item id "
            f"column?")

    ts = np.frombuffer(times, dtype=np.float64).copy() if len(times) else np.zeros(0)
    del times
    if model is not None:
        items = np.frombuffer(dense, dtype=f"i{dense.itemsize}").astype(np.int32)
        item_ids = np.asarray(model.item_ids)[items]
    else:
        items = None
        uniq = _id_array(raw_items.values)
        item_ids = uniq[np.frombuffer(raw_items.codes, dtype=np.int64)]
    session_ids = None
    if sessions is not None:
        session_ids = np.array(sessions.values, dtype=str)[
            np.frombuffer(sessions.codes, dtype=np.int64)]

    return History(items=items, item_ids=item_ids, timestamps=ts, session_ids=session_ids,
                   n_rows=n_rows, n_unknown=n_unknown, unknown_examples=unknown_examples,
                   source=where, columns=names, time_format=kind or "s",
                   n_future=n_future, future_example=future_example).time_sorted()

"""Interaction logs: readers, the :class:`Interactions` container and preprocessing.

Every reader returns an :class:`Interactions`: a pandas DataFrame with four
integer-coded columns and the arrays that map codes back to the catalogue's
own ids (DESIGN.md §9: catalogue ids in files and at the API, dense indices
inside).

=========  ========  ==========================================================
column     dtype     meaning
=========  ========  ==========================================================
user       int64     user code 0..U-1 (``user_ids[code]`` is the catalogue id);
                     for session-only logs the unit is the session
                     (``user_kind == "session"``)
item       int32     item code 0..N-1 (``item_ids[code]``)
time       float64   seconds since the Unix epoch (UTC)
session    int64     session number, increasing in row order
=========  ========  ==========================================================

Rows are ordered by user, then session, then time; ties in time keep the
file order (a stable sort), which matters for logs such as MovieLens where
many ratings share a second.  Sessions never span two users.

Readers work in chunks (``pd.read_csv(chunksize=...)`` or line by line for
JSON), so memory holds the kept columns as integer codes (4 + 8 + 8 + 8 bytes
per event) plus one chunk of raw text, never the whole raw file.  Item ids
are coded as they are met; a fresh vocabulary is finally sorted by catalogue
id, so codes do not depend on the chunk size.  Passing ``item_vocab`` (for
example ``train.item_ids``) maps a second file onto the same codes instead:
unknown items are dropped and counted in ``info["n_unknown_items"]``.

Malformed input raises :class:`DataFormatError` (a ``ValueError``) naming the
file, the physical line number (1-based, header included) and the column.
Blank lines are skipped.
"""
from __future__ import annotations

import gzip
import io
import json
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd

__all__ = [
    "DEFAULT_SESSION_GAP",
    "DataFormatError",
    "Interactions",
    "TimeSplit",
    "FORMATS",
    "read_interactions",
    "read_csv",
    "read_movielens",
    "read_yoochoose_clicks",
    "read_session_tsv",
    "read_diginetica",
    "read_otto",
    "read_tianchi",
    "read_online_retail",
    "read_tmall",
    "tmall_action_codes",
    "detect_columns",
    "guess_format_from_header",
    "COLUMN_SPELLINGS",
    "MISSING_POLICIES",
    "sessionize",
    "remove_consecutive_repeats",
    "filter_support",
    "filter_sessions",
    "time_cutoff",
    "split_by_time",
    "remap_items",
    "session_split_convention",
]

#: GRU4Rec's convention for e-commerce logs: a gap of more than one hour
#: starts a new session (DESIGN.md §9).
DEFAULT_SESSION_GAP = 3600.0
#: Rows per chunk of the CSV readers (raw text of one chunk is what is held
#: beyond the coded columns).
DEFAULT_CHUNKSIZE = 500_000

PathLike = Union[str, "os.PathLike[str]"]
_EPOCH = pd.Timestamp(0, tz="UTC")
_CANONICAL_INT = re.compile(r"^-?(0|[1-9][0-9]*)$")


class DataFormatError(ValueError):
    """A malformed input line (the message names the file, line and column)."""


# ---------------------------------------------------------------------------
# the container
# ---------------------------------------------------------------------------

def _as_id_array(ids: Any) -> np.ndarray:
    """Catalogue ids as an int64 array if they are all integers, else str."""
    arr = np.asarray(ids)
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64, copy=False)
    if arr.dtype.kind == "b":
        raise TypeError("item/user ids must be integers or strings, got booleans")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.floor(arr)):
            raise TypeError("item/user ids must be integers or strings, got non-integral floats")
        return arr.astype(np.int64)
    values = arr.tolist()
    if len(values) and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        return np.asarray(values, dtype=np.int64)
    return np.asarray([str(v) for v in values], dtype=str) if len(values) else np.empty(0, np.int64)


def _sorted_unique(a: np.ndarray) -> np.ndarray:
    """Sorted distinct values.  (``np.sort`` + a diff mask: numpy 2.x's hash-based
    ``np.unique`` is many times slower on millions of int64 keys.)"""
    s = np.sort(np.asarray(a), kind="stable")
    if len(s) < 2:
        return s
    return s[np.r_[True, s[1:] != s[:-1]]]


def _member(keys: np.ndarray, sorted_ref: np.ndarray) -> np.ndarray:
    """``np.isin(keys, sorted_ref)`` for a sorted reference, by binary search."""
    keys = np.asarray(keys)
    if len(sorted_ref) == 0 or len(keys) == 0:
        return np.zeros(keys.shape, bool)
    pos = np.minimum(np.searchsorted(sorted_ref, keys), len(sorted_ref) - 1)
    return sorted_ref[pos] == keys


class Interactions:
    """An integer-coded interaction log (see the module docstring).

    Parameters
    ----------
    df:
        DataFrame with columns ``user, item, time, session`` (any extra
        columns are dropped), already in canonical order unless
        ``sort=True``.
    item_ids, user_ids:
        Catalogue ids indexed by code (int64 or str arrays).  ``user_ids``
        defaults to ``arange(max user + 1)``.
    user_kind:
        ``"user"`` or ``"session"`` (the unit of a session-only log).
    info:
        Counters collected while reading and preprocessing (rows read,
        unknown items dropped, filter rounds ...).
    """

    COLUMNS = ("user", "item", "time", "session")
    DTYPES = {"user": np.int64, "item": np.int32, "time": np.float64, "session": np.int64}

    def __init__(self, df: pd.DataFrame, item_ids: Any, user_ids: Any = None, *,
                 user_kind: str = "user", info: Optional[Dict[str, Any]] = None,
                 sort: bool = False, validate: bool = True):
        missing = [c for c in self.COLUMNS if c not in df.columns]
        if missing:
            raise ValueError(f"Interactions needs columns {list(self.COLUMNS)}; missing {missing}")
        if user_kind not in ("user", "session"):
            raise ValueError(f"user_kind must be 'user' or 'session', got {user_kind!r}")
        cols = {c: np.asarray(df[c].to_numpy()).astype(self.DTYPES[c], copy=False) for c in self.COLUMNS}
        if sort and len(df):
            order = np.lexsort((cols["time"], cols["session"], cols["user"]))
            cols = {c: v[order] for c, v in cols.items()}
        self.df = pd.DataFrame(cols, copy=False)
        self.item_ids = _as_id_array(item_ids)
        if user_ids is None:
            n_users = int(cols["user"].max()) + 1 if len(df) else 0
            user_ids = np.arange(n_users, dtype=np.int64)
        self.user_ids = _as_id_array(user_ids)
        self.user_kind = user_kind
        self.info: Dict[str, Any] = dict(info or {})
        if validate:
            self.validate()

    # -- construction -----------------------------------------------------
    @classmethod
    def from_arrays(cls, users: Any, items: Any, times: Any, sessions: Any = None, *,
                    item_ids: Any = None, user_ids: Any = None, n_items: Optional[int] = None,
                    session_gap: Optional[float] = DEFAULT_SESSION_GAP,
                    user_kind: str = "user") -> "Interactions":
        """Build from code arrays (already 0-based integer codes).

        Rows are sorted stably by (user, time); without ``sessions`` they are
        derived with the time-gap rule (``session_gap=None``: one session per
        user).  ``item_ids`` defaults to ``arange(n_items)``.
        """
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        times = np.asarray(times, dtype=np.float64)
        if not (len(users) == len(items) == len(times)):
            raise ValueError("users, items and times must have the same length")
        if item_ids is None:
            n = n_items if n_items is not None else (int(items.max()) + 1 if len(items) else 0)
            item_ids = np.arange(n, dtype=np.int64)
        sess = None if sessions is None else pd.factorize(np.asarray(sessions))[0].astype(np.int64)
        return _assemble(users, items, times, sess, _as_id_array(item_ids),
                         None if user_ids is None else _as_id_array(user_ids),
                         session_gap=session_gap, user_kind=user_kind, info={})

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, *, item_col: str, time_col: str,
                   user_col: Optional[str] = None, session_col: Optional[str] = None,
                   time_unit: str = "auto", item_vocab: Any = None,
                   session_gap: Optional[float] = DEFAULT_SESSION_GAP) -> "Interactions":
        """Build from an in-memory frame of catalogue ids (same rules as :func:`read_csv`)."""
        return _read_tabular([(1, frame)], "<frame>", user_col=user_col, item_col=item_col,
                             time_col=time_col, session_col=session_col, time_unit=time_unit,
                             item_vocab=item_vocab, session_gap=session_gap, ids_as_str=True)

    # -- sizes and columns --------------------------------------------------
    def __len__(self) -> int:
        return len(self.df)

    @property
    def n_events(self) -> int:
        """Number of clicks (rows)."""
        return len(self.df)

    @property
    def n_items(self) -> int:
        """Size of the item vocabulary (codes 0..n_items-1), used or not."""
        return len(self.item_ids)

    @property
    def n_users(self) -> int:
        """Size of the user vocabulary (codes 0..n_users-1), used or not."""
        return len(self.user_ids)

    @property
    def n_sessions(self) -> int:
        """Number of distinct sessions present."""
        s = self.sessions
        return int(np.count_nonzero(np.diff(s))) + 1 if len(s) else 0

    @property
    def users(self) -> np.ndarray:
        """User code of every click (int64; ``user_ids[code]`` is the id)."""
        return self.df["user"].to_numpy()

    @property
    def items(self) -> np.ndarray:
        """Item code of every click (int32; ``item_ids[code]`` is the id)."""
        return self.df["item"].to_numpy()

    @property
    def times(self) -> np.ndarray:
        """Unix time of every click, seconds (float64)."""
        return self.df["time"].to_numpy()

    @property
    def sessions(self) -> np.ndarray:
        """Session number of every click (int64, increasing along the rows)."""
        return self.df["session"].to_numpy()

    def _offsets(self, key: np.ndarray) -> np.ndarray:
        if len(key) == 0:
            return np.zeros(1, np.int64)
        starts = np.flatnonzero(key[1:] != key[:-1]) + 1
        return np.concatenate([[0], starts, [len(key)]]).astype(np.int64)

    def session_offsets(self) -> np.ndarray:
        """Row offsets of the sessions: session k is rows ``off[k]:off[k+1]``."""
        return self._offsets(self.sessions)

    def user_offsets(self) -> np.ndarray:
        """Row offsets of the users present (rows are grouped by user)."""
        return self._offsets(self.users)

    def item_support(self) -> np.ndarray:
        """Events per item code (length ``n_items``)."""
        return np.bincount(self.items, minlength=self.n_items).astype(np.int64)

    def active_users(self) -> np.ndarray:
        """Sorted codes of the users with at least one event."""
        u = self.users
        return u[self.user_offsets()[:-1]] if len(u) else np.empty(0, np.int64)

    def encode_items(self, ids: Any) -> np.ndarray:
        """Catalogue ids -> item codes (int64, -1 for ids not in the vocabulary)."""
        return _Coder(self.item_ids).lookup(np.asarray(ids))

    def encode_users(self, ids: Any) -> np.ndarray:
        """Catalogue user ids -> user codes (int64, -1 for unknown)."""
        return _Coder(self.user_ids).lookup(np.asarray(ids))

    # -- derived logs ---------------------------------------------------------
    def subset(self, rows: Any, **info: Any) -> "Interactions":
        """Rows selected by a boolean mask or index array (vocabularies kept)."""
        cols = {c: self.df[c].to_numpy()[rows] for c in self.COLUMNS}
        new_info = dict(self.info)
        new_info.update(info)
        return Interactions(pd.DataFrame(cols), self.item_ids, self.user_ids,
                            user_kind=self.user_kind, info=new_info, validate=False)

    def time_ordered(self) -> "Interactions":
        """The same clicks with each user's rows in time order (stable), as a
        device reads her history; ``self`` when they are already.  Rows are
        in session order, which differs only where a log's explicit sessions
        overlap in time (two tabs, two devices)."""
        u, t = self.users, self.times
        if not np.any((u[1:] == u[:-1]) & (t[1:] < t[:-1])):
            return self
        return self.subset(np.lexsort((t, u)))

    def compact_items(self) -> "Interactions":
        """Drop item codes without events and renumber the rest (order kept)."""
        used = self.item_support() > 0
        if used.all():
            return self
        remap = np.cumsum(used) - 1
        df = self.df.copy()
        df["item"] = remap[self.items].astype(np.int32)
        return Interactions(df, self.item_ids[used], self.user_ids, user_kind=self.user_kind,
                            info=self.info, validate=False)

    def copy(self) -> "Interactions":
        """A copy (the clicks and both vocabularies; ``info`` shared)."""
        return Interactions(self.df.copy(), self.item_ids.copy(), self.user_ids.copy(),
                            user_kind=self.user_kind, info=self.info, validate=False)

    def to_frame(self) -> pd.DataFrame:
        """Catalogue-id view: ``user_id, item_id, time, session`` (session as coded)."""
        return pd.DataFrame({"user_id": self.user_ids[self.users], "item_id": self.item_ids[self.items],
                             "time": self.times, "session": self.sessions})

    def summary(self) -> Dict[str, Any]:
        """Counts and time span (for logs and reports)."""
        t = self.times
        return {
            "events": self.n_events,
            "users": len(self.user_offsets()) - 1,
            "sessions": self.n_sessions,
            "items": int(np.count_nonzero(self.item_support())),
            "item_vocabulary": self.n_items,
            "user_kind": self.user_kind,
            "start": float(t.min()) if len(t) else None,
            "end": float(t.max()) if len(t) else None,
        }

    def validate(self) -> None:
        """Check the invariants; raise ``ValueError`` naming the first broken one."""
        u, i, t, s = self.users, self.items, self.times, self.sessions
        if len(u) == 0:
            return
        if i.min() < 0 or i.max() >= self.n_items:
            raise ValueError(f"item codes must be in [0, {self.n_items}), got [{i.min()}, {i.max()}]")
        if u.min() < 0 or u.max() >= self.n_users:
            raise ValueError(f"user codes must be in [0, {self.n_users}), got [{u.min()}, {u.max()}]")
        if not np.all(np.isfinite(t)):
            raise ValueError("times must be finite")
        if np.any(np.diff(u) < 0):
            raise ValueError("rows must be grouped by user in ascending order")
        if np.any(np.diff(s) < 0):
            raise ValueError("session numbers must not decrease along the rows")
        same = s[1:] == s[:-1]
        if np.any(same & (u[1:] != u[:-1])):
            raise ValueError("a session spans two users")
        if np.any(same & (t[1:] < t[:-1])):
            raise ValueError("times must not decrease within a session")

    def __repr__(self) -> str:
        return (f"Interactions(events={self.n_events}, {self.user_kind}s={len(self.user_offsets()) - 1}, "
                f"sessions={self.n_sessions}, items={self.n_items})")


# ---------------------------------------------------------------------------
# coding catalogue ids
# ---------------------------------------------------------------------------

class _Coder:
    """Catalogue id -> dense code.  Grows unless built from a fixed vocabulary."""

    def __init__(self, fixed: Any = None):
        self.fixed = fixed is not None
        if self.fixed:
            arr = _as_id_array(fixed)
            self.ids: List[Any] = arr.tolist()
            self.int_ids = arr.dtype.kind in "iu"
            self.index: Dict[Any, int] = {v: k for k, v in enumerate(self.ids)}
            if len(self.index) != len(self.ids):
                raise ValueError("the item vocabulary contains duplicate ids")
        else:
            self.ids = []
            self.index = {}
            self.int_ids = True

    def _normalise(self, keys: List[Any]) -> List[Any]:
        if not keys:
            return keys
        if self.int_ids and isinstance(keys[0], str):
            return [int(k) if _CANONICAL_INT.match(k) else k for k in keys]
        if not self.int_ids and not isinstance(keys[0], str):
            return [str(k) for k in keys]
        return keys

    def lookup(self, values: np.ndarray) -> np.ndarray:
        """Codes of `values` (int64), -1 where unknown; never grows."""
        if len(values) == 0:
            return np.empty(0, np.int64)
        inv, uniq = pd.factorize(values)
        keys = self._normalise(uniq.tolist()) if self.fixed else uniq.tolist()
        get = self.index.get
        cu = np.fromiter((get(k, -1) for k in keys), dtype=np.int64, count=len(keys))
        out = cu[inv]
        out[inv < 0] = -1
        return out

    def encode(self, values: np.ndarray) -> np.ndarray:
        if self.fixed:
            return self.lookup(values)
        if len(values) == 0:
            return np.empty(0, np.int64)
        inv, uniq = pd.factorize(values)
        keys = uniq.tolist()
        index, ids = self.index, self.ids
        cu = np.empty(len(keys), np.int64)
        for n, k in enumerate(keys):
            c = index.get(k)
            if c is None:
                c = len(ids)
                index[k] = c
                ids.append(k)
            cu[n] = c
        return cu[inv]

    def final_ids(self, ids_as_str: bool) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """(ids array, remap old code -> new code or None).

        A grown vocabulary is sorted by id so codes are independent of the
        chunking; string ids that are all canonical integers become int64.
        """
        if self.fixed:
            return _as_id_array(self.ids) if self.ids else np.empty(0, np.int64), None
        ids = self.ids
        if ids_as_str and ids and all(isinstance(v, str) and _CANONICAL_INT.match(v) for v in ids):
            arr = np.asarray([int(v) for v in ids], dtype=np.int64)
        else:
            arr = _as_id_array(ids) if ids else np.empty(0, np.int64)
        order = np.argsort(arr, kind="stable")
        remap = np.empty(len(arr), np.int64)
        remap[order] = np.arange(len(arr))
        return arr[order], remap


# ---------------------------------------------------------------------------
# assembling a log from coded arrays
# ---------------------------------------------------------------------------

def _assemble(users: np.ndarray, items: np.ndarray, times: np.ndarray, sessions: Optional[np.ndarray],
              item_ids: np.ndarray, user_ids: Optional[np.ndarray], *, session_gap: Optional[float],
              user_kind: str, info: Dict[str, Any]) -> Interactions:
    """Sort (stable) and number sessions; `sessions` are explicit session codes or None."""
    n = len(users)
    if n:
        if sessions is None:
            order = np.lexsort((times, users))
        else:
            # sessions ordered by their first click within each user: the start of
            # each (user, session) pair -- a session label may recur across users
            # ("web", "app"), and its first click over all users says nothing of hers
            u64, s64 = users.astype(np.int64), sessions.astype(np.int64)
            n_s = int(s64.max()) + 1
            if (int(u64.max()) + 1) * n_s < 2 ** 62:
                _, pair = np.unique(u64 * n_s + s64, return_inverse=True)
            else:
                _, pair = np.unique(np.stack([u64, s64], 1), axis=0, return_inverse=True)
            pair = pair.reshape(-1)
            start = np.full(int(pair.max()) + 1, np.inf)
            np.minimum.at(start, pair, times)
            order = np.lexsort((times, sessions, start[pair], users))
        users, items, times = users[order], items[order].astype(np.int32), times[order]
        new = np.empty(n, dtype=bool)
        new[0] = True
        new[1:] = users[1:] != users[:-1]
        if sessions is not None:
            sessions = sessions[order]
            new[1:] |= sessions[1:] != sessions[:-1]
        if session_gap is not None:
            new[1:] |= np.diff(times) > session_gap
        sess = np.cumsum(new, dtype=np.int64) - 1
    else:
        sess = np.empty(0, np.int64)
    if user_ids is None:
        user_ids = np.arange(int(users.max()) + 1 if n else 0, dtype=np.int64)
    df = pd.DataFrame({"user": users.astype(np.int64, copy=False), "item": items.astype(np.int32),
                       "time": times.astype(np.float64, copy=False), "session": sess}, copy=False)
    del users, items, times, sessions, sess
    return Interactions(df, item_ids, user_ids, user_kind=user_kind, info=info)


class _Builder:
    """Accumulates coded chunks; memory = coded columns only."""

    def __init__(self, item_vocab: Any, explicit_sessions: bool):
        self.items = _Coder(item_vocab)
        self.users = _Coder()
        self.sess = _Coder() if explicit_sessions else None
        self.parts: Dict[str, List[np.ndarray]] = {"user": [], "item": [], "time": [], "session": []}
        self.info: Dict[str, Any] = {"n_rows_read": 0, "n_unknown_items": 0, "n_events_skipped": 0,
                                     "n_missing_values": 0}

    def add(self, user_raw: Any, item_raw: Any, times: np.ndarray, session_raw: Any = None) -> None:
        icodes = self.items.encode(np.asarray(item_raw) if not isinstance(item_raw, pd.Series) else item_raw)
        keep = icodes >= 0
        n_unknown = int(len(keep) - np.count_nonzero(keep))
        if n_unknown:
            self.info["n_unknown_items"] += n_unknown
            icodes = icodes[keep]
            times = np.asarray(times)[keep]
            user_raw = np.asarray(user_raw)[keep]
            if session_raw is not None:
                session_raw = np.asarray(session_raw)[keep]
        self.parts["item"].append(icodes.astype(np.int32))
        self.parts["time"].append(np.asarray(times, dtype=np.float64))
        self.parts["user"].append(self.users.encode(np.asarray(user_raw)))
        if self.sess is not None:
            self.parts["session"].append(self.sess.encode(np.asarray(session_raw)))

    def build(self, *, session_gap: Optional[float], user_kind: str, ids_as_str: bool) -> Interactions:
        cat = {}
        for k in list(self.parts):                    # concatenate one column at a time
            v = self.parts.pop(k)
            cat[k] = np.concatenate(v) if v else np.empty(0, np.int64)
            del v
        item_ids, iremap = self.items.final_ids(ids_as_str)
        user_ids, uremap = self.users.final_ids(ids_as_str)
        items = cat.pop("item")
        if iremap is not None and len(items):
            items = iremap.astype(np.int32)[items]
        users = cat.pop("user").astype(np.int64, copy=False)
        if uremap is not None and len(users):
            users = uremap[users]
        sessions = cat.pop("session") if self.sess is not None else None
        return _assemble(users, items, cat.pop("time").astype(np.float64, copy=False), sessions, item_ids,
                         user_ids, session_gap=session_gap, user_kind=user_kind, info=self.info)


# ---------------------------------------------------------------------------
# column validation (errors name the line)
# ---------------------------------------------------------------------------

def _bad(path: str, line: int, column: str, value: Any, expected: str) -> DataFormatError:
    return DataFormatError(f"{path}, line {line}: column {column!r} has {value!r}; expected {expected}")


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


#: What a reader does with a row whose used column is empty: skip it and count
#: it in ``info["n_missing_values"]`` (default), or raise DataFormatError.
MISSING_POLICIES = ("skip", "error")


def _check_policy(on_missing: str) -> None:
    if on_missing not in MISSING_POLICIES:
        raise ValueError(f"on_missing must be one of {MISSING_POLICIES}, got {on_missing!r}")


def _skip_missing(chunk: pd.DataFrame, cols: Sequence[str], path: str, lines: np.ndarray,
                  info: Dict[str, Any], on_missing: str) -> Tuple[pd.DataFrame, np.ndarray]:
    """Drop rows with an empty field (or too few fields) in `cols`, counting
    them in ``info["n_missing_values"]``; ``on_missing="error"`` raises instead,
    naming the first such line and column."""
    na = chunk[list(cols)].isna().to_numpy()
    bad = na.any(axis=1)
    if not bad.any():
        return chunk, lines
    if on_missing == "error":
        k = _first_bad(bad)
        c = list(cols)[int(np.flatnonzero(na[k])[0])]
        raise DataFormatError(f"{path}, line {lines[k]}: missing value in column {c!r} "
                              "(too few fields or an empty field)")
    info["n_missing_values"] = info.get("n_missing_values", 0) + int(bad.sum())
    keep = ~bad
    return chunk.loc[keep], lines[keep]


def _int_column(s: pd.Series, name: str, path: str, lines: np.ndarray) -> np.ndarray:
    if pd.api.types.is_integer_dtype(s.dtype):
        return s.to_numpy(dtype=np.int64)
    conv = pd.to_numeric(s, errors="coerce")
    if pd.api.types.is_integer_dtype(conv.dtype):  # exact, even above 2**53
        return conv.to_numpy(dtype=np.int64)
    num = conv.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(num)
    bad[~bad] = num[~bad] != np.floor(num[~bad])
    if bad.any():
        k = _first_bad(bad)
        raise _bad(path, int(lines[k]), name, s.iloc[k], "an integer")
    return num.astype(np.int64)


def _float_column(s: pd.Series, name: str, path: str, lines: np.ndarray) -> np.ndarray:
    if pd.api.types.is_float_dtype(s.dtype) or pd.api.types.is_integer_dtype(s.dtype):
        num = s.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        num = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(num)
    if bad.any():
        k = _first_bad(bad)
        raise _bad(path, int(lines[k]), name, s.iloc[k], "a number")
    return num


def _id_column(s: pd.Series, name: str, path: str, lines: np.ndarray, as_str: bool) -> np.ndarray:
    """Ids as int64 (fast path) or as str (generic files: "007" stays "007")."""
    if as_str:
        return s.astype(str).to_numpy(dtype=object)
    return _int_column(s, name, path, lines)


_UNIT_SCALE = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


class _TimeParser:
    """Timestamps -> float64 seconds.  ``unit``: s, ms, us, ns, iso or auto.

    ``auto`` decides once, on the first chunk: non-numeric text is ISO 8601
    (naive times are taken as UTC); numbers above 1e11 are milliseconds, above
    1e14 microseconds, above 1e17 nanoseconds, else seconds.
    """

    def __init__(self, unit: str = "auto"):
        if unit not in ("auto", "iso") and unit not in _UNIT_SCALE:
            raise ValueError(f"time_unit must be auto, iso, s, ms, us or ns; got {unit!r}")
        self.unit = unit

    def __call__(self, s: pd.Series, name: str, path: str, lines: np.ndarray) -> np.ndarray:
        if self.unit == "auto":
            numeric = (pd.api.types.is_numeric_dtype(s.dtype)
                       or bool(pd.to_numeric(s.iloc[:1000], errors="coerce").notna().all()))
            if numeric:
                v = np.abs(_float_column(s, name, path, lines))
                med = float(np.median(v)) if len(v) else 0.0
                self.unit = "ns" if med > 1e17 else "us" if med > 1e14 else "ms" if med > 1e11 else "s"
            else:
                self.unit = "iso"
        if self.unit == "iso":
            dt = pd.to_datetime(s.astype(str), utc=True, format="ISO8601", errors="coerce")
            secs = ((dt - _EPOCH) / pd.Timedelta(seconds=1)).to_numpy(dtype=np.float64, na_value=np.nan)
            bad = ~np.isfinite(secs)
            if bad.any():
                k = _first_bad(bad)
                raise _bad(path, int(lines[k]), name, s.iloc[k], "an ISO 8601 date-time")
            return secs
        return _float_column(s, name, path, lines) * _UNIT_SCALE[self.unit]


# ---------------------------------------------------------------------------
# chunked CSV input
# ---------------------------------------------------------------------------

def _csv_chunks(path: PathLike, *, sep: str, header: bool, names: Optional[Sequence[str]] = None,
                usecols: Optional[Sequence[Any]] = None, dtype: Any = None,
                chunksize: int = DEFAULT_CHUNKSIZE) -> Iterator[Tuple[int, pd.DataFrame]]:
    """Yield ``(line number of the chunk's first row, chunk)``; blank lines kept
    as all-NaN rows so line numbers stay exact (callers drop them)."""
    p = os.fspath(path)
    line = 2 if header else 1
    try:
        reader = pd.read_csv(p, sep=sep, header=0 if header else None, names=names, usecols=usecols,
                             dtype=dtype, chunksize=chunksize, skip_blank_lines=False, engine="c",
                             index_col=False, low_memory=True)
        with reader:
            for chunk in reader:
                yield line, chunk
                line += len(chunk)
    except pd.errors.ParserError as exc:
        msg = str(exc).strip()
        m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", msg)
        if m:
            raise DataFormatError(f"{p}, line {m.group(2)}: {m.group(3)} fields, expected {m.group(1)} "
                                  f"(separator {sep!r})") from exc
        raise DataFormatError(f"{p}: {msg}") from exc
    except pd.errors.EmptyDataError as exc:
        raise DataFormatError(f"{p}: the file is empty") from exc
    except ValueError as exc:
        if "Usecols" in str(exc) or "usecols" in str(exc):
            raise DataFormatError(f"{p}: {exc}") from exc
        raise


def _drop_blank(chunk: pd.DataFrame, line0: int) -> Tuple[pd.DataFrame, np.ndarray, int]:
    lines = line0 + np.arange(len(chunk), dtype=np.int64)
    blank = chunk.isna().all(axis=1).to_numpy()
    if blank.any():
        keep = ~blank
        return chunk.loc[keep], lines[keep], int(blank.sum())
    return chunk, lines, 0


def _read_tabular(chunks: Iterable[Tuple[int, pd.DataFrame]], path: str, *, user_col: Optional[str],
                  item_col: str, time_col: str, session_col: Optional[str], time_unit: str,
                  item_vocab: Any, session_gap: Optional[float], ids_as_str: bool,
                  row_filter: Optional[Callable[[pd.DataFrame, np.ndarray], np.ndarray]] = None,
                  filter_cols: Sequence[str] = (), on_missing: str = "skip") -> Interactions:
    if user_col is None and session_col is None:
        raise ValueError("give user_col, session_col or both")
    _check_policy(on_missing)
    builder = _Builder(item_vocab, explicit_sessions=session_col is not None)
    parse_time = _TimeParser(time_unit)
    needed = [c for c in (user_col, item_col, time_col, session_col) if c is not None]
    for line0, chunk in chunks:
        missing = [c for c in needed if c not in chunk.columns]
        if missing:
            raise DataFormatError(f"{path}: no column(s) {missing}; the file has {list(chunk.columns)}")
        chunk, lines, _ = _drop_blank(chunk, line0)
        builder.info["n_rows_read"] += len(chunk)
        chunk, lines = _skip_missing(chunk, needed + list(filter_cols), path, lines, builder.info,
                                     on_missing)
        if len(chunk) == 0:
            continue
        items = _id_column(chunk[item_col], item_col, path, lines, ids_as_str)
        times = parse_time(chunk[time_col], time_col, path, lines)
        sess = (_id_column(chunk[session_col], session_col, path, lines, ids_as_str)
                if session_col is not None else None)
        users = (_id_column(chunk[user_col], user_col, path, lines, ids_as_str)
                 if user_col is not None else sess)
        if row_filter is not None:
            keep = row_filter(chunk, lines)
            builder.info["n_events_skipped"] += int(len(keep) - np.count_nonzero(keep))
            items, times, users = items[keep], times[keep], users[keep]
            sess = sess[keep] if sess is not None else None
        builder.add(users, items, times, sess)
    if user_col is None:          # a session-only log: each session is its own unit
        kind, gap = "session", None
    else:                         # users, with sessions by gap (within given sessions, if any)
        kind, gap = "user", session_gap
    inter = builder.build(session_gap=gap, user_kind=kind, ids_as_str=ids_as_str)
    inter.info["source"] = path
    inter.info["time_unit"] = parse_time.unit
    return inter


# ---------------------------------------------------------------------------
# readers
# ---------------------------------------------------------------------------

#: Header spellings recognised per role when ``read_csv`` is not told the
#: columns; a header name matches after lower-casing and removing everything
#: but letters and digits (``user_id``, ``userId`` and ``User ID`` are ``userid``).
COLUMN_SPELLINGS: Dict[str, Tuple[str, ...]] = {
    "user": ("userid", "user", "customerid", "customer", "visitorid", "visitor", "clientid",
             "uid", "memberid"),
    "item": ("itemid", "item", "movieid", "movie", "productid", "product", "stockcode", "aid",
             "iid", "articleid", "sku", "asin", "trackid"),
    "time": ("timestamp", "time", "ts", "date", "datetime", "invoicedate", "eventtime",
             "unixtime"),
    "session": ("sessionid", "session"),
}


def _spelling(name: Any) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def detect_columns(header: Sequence[str], *, user_col: Optional[str] = None,
                   item_col: Optional[str] = None, time_col: Optional[str] = None,
                   session_col: Optional[str] = None, source: str = "the file") -> Dict[str, Optional[str]]:
    """Roles of the columns of `header` by their common spellings
    (:data:`COLUMN_SPELLINGS`, case and ``_`` ignored).

    Columns given are kept; ``item`` and ``time`` are detected when not
    given; ``user`` and ``session`` are both detected (either may be absent,
    not both) unless one of them is given.  Returns ``{"user", "item",
    "time", "session"} -> column name or None``.  A role with no candidate, or
    with several, raises ValueError naming the header, the spellings tried and
    the keyword / command-line flag that settles it.
    """
    names = [str(h) for h in header]
    found: Dict[str, List[str]] = {r: [] for r in COLUMN_SPELLINGS}
    for h in names:
        key = _spelling(h)
        for role, spellings in COLUMN_SPELLINGS.items():
            if key in spellings:
                found[role].append(h)
    given = {"user": user_col, "item": item_col, "time": time_col, "session": session_col}
    out: Dict[str, Optional[str]] = dict(given)

    def fail(role: str, why: str) -> ValueError:
        return ValueError(f"{source}: cannot tell the {role} column from the header {names}: {why}; "
                          f"name it with {role}_col= (--{role}-col on the command line)")

    def pick(role: str, required: bool) -> Optional[str]:
        cand = found[role]
        if len(cand) > 1:
            raise fail(role, f"{len(cand)} columns look like one ({', '.join(map(repr, cand))})")
        if not cand and required:
            raise fail(role, f"no column is named like one "
                             f"({', '.join(COLUMN_SPELLINGS[role])}, any case, '_' ignored)")
        return cand[0] if cand else None

    for role in ("item", "time"):
        if out[role] is None:
            out[role] = pick(role, True)
    if user_col is None and session_col is None:
        out["user"] = pick("user", False)
        out["session"] = pick("session", False)
        if out["user"] is None and out["session"] is None:
            raise ValueError(f"{source}: cannot tell the user or session column from the header "
                             f"{names}: no column is named like one "
                             f"({', '.join(COLUMN_SPELLINGS['user'] + COLUMN_SPELLINGS['session'])}); "
                             f"name it with user_col= or session_col= (--user-col / --session-col "
                             f"on the command line)")
    used = [c for c in out.values() if c is not None]
    if len(set(used)) != len(used):
        raise ValueError(f"{source}: one column serves two roles ({out}); name the columns with "
                         f"user_col=/item_col=/time_col=/session_col=")
    return out


def _read_header(path: str, sep: str) -> List[str]:
    try:
        return [str(c) for c in pd.read_csv(path, sep=sep, nrows=0, engine="c").columns]
    except pd.errors.EmptyDataError as exc:
        raise DataFormatError(f"{path}: the file is empty") from exc
    except pd.errors.ParserError as exc:
        raise DataFormatError(f"{path}: {str(exc).strip()}") from exc


def read_csv(path: PathLike, *, item_col: Optional[str] = None, time_col: Optional[str] = None,
             user_col: Optional[str] = None, session_col: Optional[str] = None, sep: str = ",",
             header: bool = True, names: Optional[Sequence[str]] = None, time_unit: str = "auto",
             item_vocab: Any = None, session_gap: Optional[float] = DEFAULT_SESSION_GAP,
             ids_as_str: bool = True, on_missing: str = "skip",
             chunksize: int = DEFAULT_CHUNKSIZE) -> Interactions:
    """A generic delimited file of catalogue ids (``user,item,timestamp[,session]``).

    Columns are named by ``*_col`` (header names, or ``names`` for a file
    without header); roles not given are detected from the header's common
    spellings (:func:`detect_columns`; ``info["columns"]`` records the
    result).  A user column gives users with sessions by time gap
    (``session_gap`` seconds; ``None``: one session per user), a session
    column alone a session-only log (each session is its own unit), both
    explicit sessions within users.  ``time_unit``: auto, iso, s, ms, us, ns.
    Ids are read as text, so ``"007"`` and ``"7"`` stay distinct; when every id
    is a canonical integer the vocabulary becomes int64 (``ids_as_str=False``
    parses them as integers directly, faster).  Rows with an empty used field
    are skipped and counted in ``info["n_missing_values"]``
    (``on_missing="error"``: raise instead).
    """
    if not header and names is None:
        raise ValueError("a file without header needs `names`")
    p = os.fspath(path)
    roles = {"user": user_col, "item": item_col, "time": time_col, "session": session_col}
    detected = [r for r in ("item", "time") if roles[r] is None]
    if user_col is None and session_col is None:
        detected += ["user", "session"]
    if detected:
        cols = list(names) if names is not None else _read_header(p, sep)
        roles = detect_columns(cols, user_col=user_col, item_col=item_col, time_col=time_col,
                               session_col=session_col, source=p)
    dtype = None
    if ids_as_str:
        dtype = {roles[r]: str for r in ("user", "item", "session") if roles[r] is not None}
    chunks = _csv_chunks(p, sep=sep, header=header, names=names, dtype=dtype, chunksize=chunksize)
    inter = _read_tabular(chunks, p, user_col=roles["user"], item_col=roles["item"],
                          time_col=roles["time"], session_col=roles["session"], time_unit=time_unit,
                          item_vocab=item_vocab, session_gap=session_gap, ids_as_str=ids_as_str,
                          on_missing=on_missing)
    inter.info["columns"] = {r: c for r, c in roles.items() if c is not None}
    inter.info["columns_detected"] = [r for r in detected if roles[r] is not None]
    return inter


def _base_name(path: str) -> str:
    name = os.path.basename(path).lower()
    for suffix in (".gz", ".bz2", ".xz", ".zip", ".zst"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


def read_movielens(path: PathLike, *, fmt: str = "auto", min_rating: Optional[float] = None,
                   item_vocab: Any = None, session_gap: Optional[float] = DEFAULT_SESSION_GAP,
                   on_missing: str = "skip", chunksize: int = DEFAULT_CHUNKSIZE) -> Interactions:
    """MovieLens ratings as implicit clicks (user level; sessions by time gap).

    ``fmt``: ``"100k"`` (``u.data``: user, item, rating, ts; tab, no header),
    ``"dat"`` (ML-1M/10M ``ratings.dat``: ``::``-separated), ``"csv"``
    (ML-20M/25M/latest ``ratings.csv`` with header userId,movieId,rating,
    timestamp) or ``"auto"`` (by file name).  ``min_rating`` keeps ratings
    >= it (the rating column is otherwise ignored).  Rows with an empty used
    field are skipped and counted (``on_missing="error"``: raise).
    """
    p = os.fspath(path)
    if fmt == "auto":
        name = _base_name(p)
        fmt = "dat" if name.endswith(".dat") else "csv" if name.endswith(".csv") else "100k"
    def liked(chunk: pd.DataFrame, lines: np.ndarray) -> np.ndarray:
        return _float_column(chunk["rating"], "rating", p, lines) >= float(min_rating)
    filt = liked if min_rating is not None else None
    if fmt == "100k":
        names = ["user", "item", "rating", "time"]
        chunks = _csv_chunks(p, sep="\t", header=False, names=names, chunksize=chunksize)
        ucol, icol, tcol = "user", "item", "time"
    elif fmt == "dat":
        # '::' read as ':' with empty fields in between keeps the fast C parser.
        names = ["user", "_a", "item", "_b", "rating", "_c", "time"]
        chunks = _csv_chunks(p, sep=":", header=False, names=names, chunksize=chunksize)
        chunks = ((l0, c.drop(columns=["_a", "_b", "_c"])) for l0, c in chunks)
        ucol, icol, tcol = "user", "item", "time"
    elif fmt == "csv":
        chunks = _csv_chunks(p, sep=",", header=True, chunksize=chunksize)
        chunks = ((l0, c.rename(columns={"userId": "user", "movieId": "item", "timestamp": "time"}))
                  for l0, c in chunks)
        ucol, icol, tcol = "user", "item", "time"
    else:
        raise ValueError(f"fmt must be auto, 100k, dat or csv; got {fmt!r}")
    inter = _read_tabular(chunks, p, user_col=ucol, item_col=icol, time_col=tcol, session_col=None,
                          time_unit="s", item_vocab=item_vocab, session_gap=session_gap,
                          ids_as_str=False, row_filter=filt,
                          filter_cols=["rating"] if filt is not None else (), on_missing=on_missing)
    inter.info["format"] = f"movielens-{fmt}"
    if filt is not None:
        inter.info["events_skipped_reason"] = f"ratings below {min_rating}"
    return inter


def read_yoochoose_clicks(path: PathLike, *, item_vocab: Any = None, session_gap: Optional[float] = None,
                          on_missing: str = "skip", chunksize: int = DEFAULT_CHUNKSIZE) -> Interactions:
    """RecSys Challenge 2015 ``yoochoose-clicks.dat``: ``SessionId,Timestamp,ItemId,Category``,
    comma-separated, no header, ISO 8601 times.  A session-only log (each
    session is its own unit); ``session_gap`` optionally splits given sessions
    further."""
    p = os.fspath(path)
    names = ["SessionId", "Timestamp", "ItemId", "Category"]
    chunks = _csv_chunks(p, sep=",", header=False, names=names, dtype={"Timestamp": str, "Category": str},
                         chunksize=chunksize)
    inter = _read_tabular(chunks, p, user_col=None, item_col="ItemId", time_col="Timestamp",
                          session_col="SessionId", time_unit="iso", item_vocab=item_vocab,
                          session_gap=None, ids_as_str=False, on_missing=on_missing)
    if session_gap is not None:
        inter = sessionize(inter, session_gap, keep_sessions=True)
    inter.info["format"] = "yoochoose-clicks"
    return inter


def read_session_tsv(path: PathLike, *, session_col: str = "SessionId", item_col: str = "ItemId",
                     time_col: str = "Time", sep: str = "\t", time_unit: str = "s",
                     item_vocab: Any = None, on_missing: str = "skip",
                     chunksize: int = DEFAULT_CHUNKSIZE) -> Interactions:
    """The session-rec / GRU4Rec prepared format: ``SessionId, ItemId, Time``
    (tab-separated, header, unix seconds, fractional).  Read a test file with
    ``item_vocab=train.item_ids`` to put it on the training codes."""
    p = os.fspath(path)
    chunks = _csv_chunks(p, sep=sep, header=True, chunksize=chunksize)
    inter = _read_tabular(chunks, p, user_col=None, item_col=item_col, time_col=time_col,
                          session_col=session_col, time_unit=time_unit, item_vocab=item_vocab,
                          session_gap=None, ids_as_str=False, on_missing=on_missing)
    inter.info["format"] = "session-tsv"
    return inter


def _diginetica_names(cols: Sequence[str]) -> Dict[str, str]:
    return {c: re.sub(r"[^a-z]", "", str(c).lower()) for c in cols}


def read_diginetica(path: PathLike, *, users: bool = False, item_vocab: Any = None,
                    session_gap: Optional[float] = DEFAULT_SESSION_GAP, on_missing: str = "skip",
                    chunksize: int = DEFAULT_CHUNKSIZE) -> Interactions:
    """DIGINETICA (CIKM Cup 2016) item views, ``;``-separated with header
    ``sessionId;userId;itemId;timeframe;eventdate`` (``session_id`` ... in the
    SR-GNN sample; header names are matched ignoring case and ``_``; the
    purchases file's columns work too).

    Time = ``eventdate`` (a day, UTC) + ``timeframe`` / 1000 (milliseconds
    since the session started) -- approximate across days, exact within a
    session.  By default each session is its own unit (``userId`` is mostly
    NA).  ``users=True`` keeps only rows with a ``userId`` and makes the user
    the unit, with the given sessions inside (split further when a gap
    exceeds ``session_gap``); dropped rows are counted in
    ``info["n_events_skipped"]``.  Rows with an empty session, item, timeframe
    or eventdate are skipped and counted in ``info["n_missing_values"]``
    (``on_missing="error"``: raise).
    """
    p = os.fspath(path)
    _check_policy(on_missing)
    raw = _csv_chunks(p, sep=";", header=True, chunksize=chunksize,
                      dtype={"eventdate": str})
    counts: Dict[str, Any] = {"n_missing_values": 0, "n_rows": 0}

    def chunks() -> Iterator[Tuple[int, pd.DataFrame]]:
        for line0, chunk in raw:
            chunk = chunk.rename(columns=_diginetica_names(chunk.columns))
            need = ["sessionid", "itemid", "timeframe", "eventdate"] + (["userid"] if users else [])
            miss = [c for c in need if c not in chunk.columns]
            if miss:
                raise DataFormatError(f"{p}: no column(s) {miss} (after lower-casing and removing '_'); "
                                      f"the file has {list(chunk.columns)}")
            chunk, lines, _ = _drop_blank(chunk, line0)
            n0 = len(chunk)
            chunk, lines = _skip_missing(chunk, ["sessionid", "itemid", "timeframe", "eventdate"], p,
                                         lines, counts, on_missing)
            counts["n_rows"] += n0 - len(chunk)
            if len(chunk) == 0:
                continue
            day = pd.to_datetime(chunk["eventdate"].astype(str), format="%Y-%m-%d", utc=True, errors="coerce")
            secs = ((day - _EPOCH) / pd.Timedelta(seconds=1)).to_numpy(dtype=np.float64, na_value=np.nan)
            bad = ~np.isfinite(secs)
            if bad.any():
                k = _first_bad(bad)
                raise _bad(p, int(lines[k]), "eventdate", chunk["eventdate"].iloc[k], "a date YYYY-MM-DD")
            tf = _float_column(chunk["timeframe"], "timeframe", p, lines)
            out = pd.DataFrame({"session": chunk["sessionid"].to_numpy(), "item": chunk["itemid"].to_numpy(),
                                "time": secs + tf / 1000.0})
            if users:
                out["user"] = chunk["userid"].to_numpy()
            # line numbers of the kept rows: re-expand so _read_tabular sees no blanks
            yield int(lines[0]) if len(lines) else line0, _with_lines(out, lines)

    if users:
        inter = _read_lined(chunks(), p, user_col="user", session_col="session", session_gap=session_gap,
                            item_vocab=item_vocab, optional_user=True)
    else:
        inter = _read_lined(chunks(), p, user_col=None, session_col="session", session_gap=None,
                            item_vocab=item_vocab)
    inter.info["format"] = "diginetica"
    inter.info["n_missing_values"] = counts["n_missing_values"]
    inter.info["n_rows_read"] += counts["n_rows"]
    if users:
        inter.info["events_skipped_reason"] = "rows without userId"
    return inter


def _with_lines(frame: pd.DataFrame, lines: np.ndarray) -> pd.DataFrame:
    frame["_line"] = lines
    return frame


def _read_lined(chunks: Iterable[Tuple[int, pd.DataFrame]], path: str, *, user_col: Optional[str],
                session_col: Optional[str], session_gap: Optional[float], item_vocab: Any,
                optional_user: bool = False) -> Interactions:
    """Like _read_tabular for frames that carry parsed float ``time`` and a
    ``_line`` column (readers that compute times themselves)."""
    builder = _Builder(item_vocab, explicit_sessions=session_col is not None)
    for _, frame in chunks:
        lines = frame["_line"].to_numpy()
        builder.info["n_rows_read"] += len(frame)
        if optional_user and user_col is not None:
            has = frame[user_col].notna().to_numpy()
            builder.info["n_events_skipped"] += int(len(has) - np.count_nonzero(has))
            frame, lines = frame.loc[has], lines[has]
        items = _int_column(frame["item"], "item", path, lines)
        sess = _int_column(frame[session_col], session_col, path, lines) if session_col else None
        users = _int_column(frame[user_col], user_col, path, lines) if user_col else sess
        builder.add(users, items, frame["time"].to_numpy(dtype=np.float64), sess)
    kind = "user" if user_col is not None else "session"
    return builder.build(session_gap=session_gap if user_col is not None else None,
                         user_kind=kind, ids_as_str=False)


def _open_text(path: str) -> io.TextIOBase:
    if path.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, "r", encoding="utf-8")


def _json_loads() -> Callable[[Any], Any]:
    try:  # optional speed-up, same results
        import orjson  # type: ignore
        return orjson.loads
    except ImportError:  # pragma: no cover - depends on the environment
        return json.loads


def read_otto(path: PathLike, *, event_types: Sequence[str] = ("clicks",), as_sessions: bool = False,
              item_vocab: Any = None, session_gap: Optional[float] = DEFAULT_SESSION_GAP,
              on_missing: str = "skip", chunk_events: int = 1_000_000) -> Interactions:
    """OTTO RecSys dataset JSON lines (``.jsonl`` or ``.jsonl.gz``):
    ``{"session": int, "events": [{"aid": int, "ts": ms, "type": "clicks"|"carts"|"orders"}]}``.

    OTTO "sessions" last up to four weeks (pseudonymous visitors), so by
    default each is a *user* and sessions come from the time-gap rule;
    ``as_sessions=True`` keeps them as sessions.  ``event_types`` chooses the
    events kept (others counted in ``info["n_events_skipped"]``).  An event
    without ``aid``, ``ts`` or ``type`` (absent or null), or a record without
    ``session``, is skipped and counted in ``info["n_missing_values"]``
    (``on_missing="error"``: raise).
    """
    p = os.fspath(path)
    _check_policy(on_missing)
    types = set(event_types)
    unknown = types - {"clicks", "carts", "orders"}
    if unknown:
        raise ValueError(f"event_types must be among clicks, carts, orders; got {sorted(unknown)}")
    loads = _json_loads()
    builder = _Builder(item_vocab, explicit_sessions=False)
    us: List[int] = []
    it: List[int] = []
    ts: List[int] = []

    def flush() -> None:
        if it:
            builder.add(np.asarray(us, np.int64), np.asarray(it, np.int64),
                        np.asarray(ts, np.float64) / 1000.0)
            us.clear(), it.clear(), ts.clear()

    with _open_text(p) as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = loads(line)
                if not isinstance(obj, dict):
                    raise TypeError("a record must be a JSON object")
                sid = obj.get("session")
                events = obj["events"]
                if not isinstance(events, list):
                    raise TypeError("'events' must be a list")
                if sid is None:
                    if on_missing == "error":
                        raise DataFormatError(f"{p}, line {lineno}: missing value 'session'")
                    builder.info["n_missing_values"] += len(events)
                    builder.info["n_rows_read"] += len(events)
                    continue
                if not isinstance(sid, int) or isinstance(sid, bool):
                    raise TypeError("'session' must be an integer")
                n_before = len(it)
                n_missing = 0
                for ev in events:
                    if not isinstance(ev, dict):
                        raise TypeError(f"event {ev!r} is not an object")
                    aid, t, kind = ev.get("aid"), ev.get("ts"), ev.get("type")
                    if aid is None or t is None or kind is None:
                        if on_missing == "error":
                            raise DataFormatError(f"{p}, line {lineno}: missing value in event {ev!r} "
                                                  "(needs 'aid', 'ts' and 'type')")
                        n_missing += 1
                        continue
                    if not isinstance(aid, int) or not isinstance(t, (int, float)) or isinstance(t, bool):
                        raise TypeError(f"event {ev!r} needs integer 'aid' and numeric 'ts'")
                    if kind not in ("clicks", "carts", "orders"):
                        raise TypeError(f"event {ev!r} has an unknown type {kind!r}")
                    if kind in types:
                        it.append(aid)
                        ts.append(t)
                n_kept = len(it) - n_before
                builder.info["n_missing_values"] += n_missing
                builder.info["n_events_skipped"] += len(events) - n_missing - n_kept
                us.extend([sid] * n_kept)
                builder.info["n_rows_read"] += len(events)
            except DataFormatError:
                raise
            except (ValueError, KeyError, TypeError) as exc:
                what = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
                raise DataFormatError(f"{p}, line {lineno}: not a valid OTTO session record ({what})") from exc
            if len(it) >= chunk_events:
                flush()
    flush()
    kind = "session" if as_sessions else "user"
    inter = builder.build(session_gap=None if as_sessions else session_gap, user_kind=kind, ids_as_str=False)
    inter.info["format"] = "otto"
    inter.info["source"] = p
    inter.info["events_skipped_reason"] = f"event types other than {', '.join(sorted(types))}"
    return inter


TIANCHI_BEHAVIORS = ("pv", "buy", "cart", "fav")


def read_tianchi(path: PathLike, *, behaviors: Sequence[str] = ("pv",), item_vocab: Any = None,
                 session_gap: Optional[float] = DEFAULT_SESSION_GAP, on_missing: str = "skip",
                 chunksize: int = DEFAULT_CHUNKSIZE) -> Interactions:
    """Tianchi / Taobao ``UserBehavior.csv`` (the DeepRec paper's data):
    ``user,item,category,behavior,timestamp``, no header, unix seconds.
    ``behaviors`` (among pv, buy, cart, fav) choose what counts as a click."""
    p = os.fspath(path)
    keep = set(behaviors)
    bad = keep - set(TIANCHI_BEHAVIORS)
    if bad:
        raise ValueError(f"behaviors must be among {TIANCHI_BEHAVIORS}; got {sorted(bad)}")
    names = ["user", "item", "category", "behavior", "time"]
    chunks = _csv_chunks(p, sep=",", header=False, names=names, dtype={"behavior": str},
                         chunksize=chunksize)

    def filt(chunk: pd.DataFrame, lines: np.ndarray) -> np.ndarray:
        b = chunk["behavior"]
        known = b.isin(TIANCHI_BEHAVIORS).to_numpy()
        if not known.all():
            k = _first_bad(~known)
            raise _bad(p, int(lines[k]), "behavior", b.iloc[k], f"one of {TIANCHI_BEHAVIORS}")
        return b.isin(keep).to_numpy()

    inter = _read_tabular(chunks, p, user_col="user", item_col="item", time_col="time", session_col=None,
                          time_unit="s", item_vocab=item_vocab, session_gap=session_gap,
                          ids_as_str=False, row_filter=filt, filter_cols=["behavior"],
                          on_missing=on_missing)
    inter.info["format"] = "tianchi"
    inter.info["events_skipped_reason"] = f"behaviours other than {', '.join(sorted(keep))}"
    return inter

# ---------------------------------------------------------------------------
# UCI Online Retail and Tmall (IJCAI-15)
# ---------------------------------------------------------------------------

#: Header of the UCI Online Retail CSV (Chen, Sain & Guo 2012).
ONLINE_RETAIL_HEADER = ("InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate",
                        "UnitPrice", "CustomerID", "Country")
_CUSTOMER_ID = re.compile(r"^\s*(\d+)(?:\.0*)?\s*$")


def _require_columns(path: str, have: Sequence[str], need: Sequence[str], what: str,
                     expected: Sequence[str]) -> None:
    missing = [c for c in need if c not in have]
    if missing:
        raise DataFormatError(f"{path}: not {what}: the header {list(have)} lacks {missing} "
                              f"(expected {','.join(expected)})")


def _invoice_seconds(s: pd.Series, path: str, lines: np.ndarray) -> np.ndarray:
    """InvoiceDate as seconds: ``YYYY-MM-DD HH:MM[:SS]`` (any ISO 8601), or the
    ``M/D/YYYY H:MM`` of the UCI spreadsheet's CSV exports; naive = UTC."""
    text = s.astype(str).str.strip()
    dt = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
    bad = dt.isna().to_numpy()
    if bad.any():
        us = pd.to_datetime(text[bad], utc=True, format="%m/%d/%Y %H:%M", errors="coerce")
        dt = dt.copy()
        dt[bad] = us
        bad = dt.isna().to_numpy()
    if bad.any():
        k = _first_bad(bad)
        raise _bad(path, int(lines[k]), "InvoiceDate", s.iloc[k],
                   "a date-time YYYY-MM-DD HH:MM:SS (or M/D/YYYY H:MM)")
    return ((dt - _EPOCH) / pd.Timedelta(seconds=1)).to_numpy(dtype=np.float64)


def read_online_retail(path: PathLike, *, item_vocab: Any = None,
                       session_gap: Optional[float] = DEFAULT_SESSION_GAP, on_missing: str = "skip",
                       chunksize: int = DEFAULT_CHUNKSIZE) -> Interactions:
    """The UCI Online Retail data set (CSV, optionally ``.gz``) with header
    ``InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country``.

    user = ``CustomerID`` (written as a float, ``17850.0``: read as the
    integer 17850), item = ``StockCode`` (text: ``85123A``, ``POST``),
    time = ``InvoiceDate`` (``YYYY-MM-DD HH:MM:SS``, or ``M/D/YYYY H:MM``;
    naive = UTC).  Dropped and counted:

    - rows without ``CustomerID`` (guest checkouts): ``info["n_no_customer"]``,
      also in ``info["n_missing_values"]`` -- always skipped, whatever
      ``on_missing`` says, as the format prescribes;
    - cancellations (``InvoiceNo`` starting with ``C``) among the rest:
      ``info["n_cancellations"]``, also in ``info["n_events_skipped"]``;
    - rows with an empty ``InvoiceNo``, ``StockCode`` or ``InvoiceDate``:
      ``info["n_missing_values"]`` (``on_missing="error"``: raise).

    The lines of one invoice share a timestamp (a basket): they keep their
    file order (stable sort), so "the next item" is well defined.  Sessions
    by time gap within each customer.
    """
    p = os.fspath(path)
    _check_policy(on_missing)
    used = ["InvoiceNo", "StockCode", "InvoiceDate", "CustomerID"]
    _require_columns(p, _read_header(p, ","), used, "an Online Retail file", ONLINE_RETAIL_HEADER)
    chunks = _csv_chunks(p, sep=",", header=True, usecols=used, dtype=str, chunksize=chunksize)
    builder = _Builder(item_vocab, explicit_sessions=False)
    info = builder.info
    info["n_no_customer"] = 0
    info["n_cancellations"] = 0
    for line0, chunk in chunks:
        chunk, lines, _ = _drop_blank(chunk, line0)
        info["n_rows_read"] += len(chunk)
        guest = chunk["CustomerID"].isna().to_numpy()
        if guest.any():
            info["n_no_customer"] += int(guest.sum())
            info["n_missing_values"] += int(guest.sum())
            chunk, lines = chunk.loc[~guest], lines[~guest]
        chunk, lines = _skip_missing(chunk, ["InvoiceNo", "StockCode", "InvoiceDate"], p, lines,
                                     info, on_missing)
        cancel = chunk["InvoiceNo"].str.strip().str.upper().str.startswith("C").to_numpy(dtype=bool)
        if cancel.any():
            info["n_cancellations"] += int(cancel.sum())
            info["n_events_skipped"] += int(cancel.sum())
            chunk, lines = chunk.loc[~cancel], lines[~cancel]
        if len(chunk) == 0:
            continue
        cust = chunk["CustomerID"].str.extract(_CUSTOMER_ID, expand=False)
        bad = cust.isna().to_numpy()
        if bad.any():
            k = _first_bad(bad)
            raise _bad(p, int(lines[k]), "CustomerID", chunk["CustomerID"].iloc[k],
                       "a customer number such as 17850 or 17850.0")
        users = cust.to_numpy(dtype=object).astype(np.int64)
        times = _invoice_seconds(chunk["InvoiceDate"], p, lines)
        builder.add(users, chunk["StockCode"].to_numpy(dtype=object), times)
    inter = builder.build(session_gap=session_gap, user_kind="user", ids_as_str=True)
    inter.info.update(format="online-retail", source=p, time_unit="iso",
                      events_skipped_reason="cancellations")
    return inter


#: IJCAI-15 ``user_log_format1`` action types.
TMALL_ACTIONS: Dict[str, int] = {"click": 0, "cart": 1, "purchase": 2, "favourite": 3}
_TMALL_ALIASES = {"add-to-cart": "cart", "buy": "purchase", "favorite": "favourite",
                  "fav": "favourite", "add-to-favourite": "favourite"}
TMALL_HEADER = ("user_id", "item_id", "cat_id", "seller_id", "brand_id", "time_stamp", "action_type")


def tmall_action_codes(action_types: Sequence[Any]) -> Tuple[int, ...]:
    """Action codes (0 click, 1 add-to-cart, 2 purchase, 3 add-to-favourite) of
    names (``click``, ``cart``, ``purchase``, ``favourite`` and a few aliases)
    or codes."""
    if isinstance(action_types, (str, int)):
        action_types = [action_types]
    out = []
    for a in action_types:
        key = str(a).strip().lower()
        key = _TMALL_ALIASES.get(key, key)
        if key in TMALL_ACTIONS:
            out.append(TMALL_ACTIONS[key])
        elif key in ("0", "1", "2", "3"):
            out.append(int(key))
        else:
            raise ValueError(f"unknown Tmall action type {a!r}; use click, cart, purchase, "
                             f"favourite or their codes 0-3")
    if not out:
        raise ValueError("choose at least one Tmall action type")
    return tuple(sorted(set(out)))


def _mmdd_seconds(s: pd.Series, year: int, path: str, lines: np.ndarray) -> np.ndarray:
    """``MMDD`` day stamps (``0829`` or ``829``) of `year` -> seconds (00:00 UTC)."""
    text = s.astype(str).str.strip()
    ok = text.str.fullmatch(r"\d{1,4}").to_numpy(dtype=bool)
    v = np.where(ok, pd.to_numeric(text.where(ok, "0"), errors="coerce").to_numpy(), 0).astype(np.int64)
    stamps = pd.Series(year * 10000 + v).astype(str).str.zfill(8)
    day = pd.to_datetime(stamps, format="%Y%m%d", utc=True, errors="coerce")
    bad = ~ok | day.isna().to_numpy()
    if bad.any():
        k = _first_bad(bad)
        raise _bad(path, int(lines[k]), "time_stamp", s.iloc[k], f"a day MMDD of {year} (e.g. 1111)")
    return ((day - _EPOCH) / pd.Timedelta(seconds=1)).to_numpy(dtype=np.float64)


def read_tmall(path: PathLike, *, action_types: Sequence[Any] = ("click",), year: int = 2014,
               item_vocab: Any = None, session_gap: Optional[float] = DEFAULT_SESSION_GAP,
               on_missing: str = "skip", chunksize: int = DEFAULT_CHUNKSIZE) -> Interactions:
    """Tmall (Tianchi / IJCAI-15 repeat buyers) ``user_log_format1.csv``:
    header ``user_id,item_id,cat_id,seller_id,brand_id,time_stamp,action_type``.

    ``time_stamp`` is a day ``MMDD`` of one year (``year``, default 2014, the
    competition's: six months up to 11 November), read as 00:00 UTC of that
    day; ``action_type`` 0 click, 1 add-to-cart, 2 purchase, 3 add-to-favourite.
    ``action_types`` chooses what is kept (default clicks; the others are
    counted in ``info["n_events_skipped"]``).  Rows are sorted stably by
    (user, day): the order within a day is unknown and the file's is kept.
    With the default ``session_gap`` each user-day is a session.  Rows with
    an empty used field are skipped and counted in ``info["n_missing_values"]``
    (``brand_id``, empty on some rows, is not used).  Not the Taobao
    ``UserBehavior.csv`` (``read_tianchi``).
    """
    p = os.fspath(path)
    _check_policy(on_missing)
    codes = tmall_action_codes(action_types)
    if isinstance(year, bool) or not isinstance(year, (int, np.integer)) or not 1 <= year <= 9999:
        raise ValueError(f"year must be an integer in 1..9999, got {year!r}")
    used = ["user_id", "item_id", "time_stamp", "action_type"]
    _require_columns(p, _read_header(p, ","), used, "a Tmall user_log_format1 file", TMALL_HEADER)
    chunks = _csv_chunks(p, sep=",", header=True, usecols=used,
                         dtype={"time_stamp": str, "action_type": str}, chunksize=chunksize)
    builder = _Builder(item_vocab, explicit_sessions=False)
    info = builder.info
    for line0, chunk in chunks:
        chunk, lines, _ = _drop_blank(chunk, line0)
        info["n_rows_read"] += len(chunk)
        chunk, lines = _skip_missing(chunk, used, p, lines, info, on_missing)
        if len(chunk) == 0:
            continue
        act = chunk["action_type"].str.strip()
        known = act.isin(["0", "1", "2", "3"]).to_numpy(dtype=bool)
        if not known.all():
            k = _first_bad(~known)
            raise _bad(p, int(lines[k]), "action_type", chunk["action_type"].iloc[k],
                       "0, 1, 2 or 3 (click, add-to-cart, purchase, add-to-favourite)")
        keep = np.isin(act.to_numpy(dtype=object).astype(np.int64), codes)
        info["n_events_skipped"] += int(len(keep) - np.count_nonzero(keep))
        if not keep.any():
            continue
        chunk, lines = chunk.loc[keep], lines[keep]
        users = _int_column(chunk["user_id"], "user_id", p, lines)
        items = _int_column(chunk["item_id"], "item_id", p, lines)
        times = _mmdd_seconds(chunk["time_stamp"], int(year), p, lines)
        builder.add(users, items, times)
    inter = builder.build(session_gap=session_gap, user_kind="user", ids_as_str=False)
    names = {v: k for k, v in TMALL_ACTIONS.items()}
    inter.info.update(format="tmall", source=p, time_unit="day", year=int(year),
                      action_types=[names[c] for c in codes],
                      events_skipped_reason="action types other than "
                                            + ", ".join(names[c] for c in codes))
    return inter


def guess_format_from_header(path: PathLike) -> Optional[str]:
    """``"online-retail"`` or ``"tmall"`` when the first line of `path`
    (``.gz`` read transparently) is that format's header, else None."""
    p = os.fspath(path)
    try:
        opener = gzip.open if p.endswith(".gz") else open
        with opener(p, "rt", encoding="utf-8", errors="replace") as f:  # type: ignore[operator]
            head = f.readline(65536)
    except (OSError, EOFError):
        return None
    cols = {c.strip().strip('"').lstrip("\ufeff") for c in head.strip().split(",")}
    if {"InvoiceNo", "StockCode", "InvoiceDate", "CustomerID"} <= cols:
        return "online-retail"
    if {"user_id", "item_id", "time_stamp", "action_type"} <= cols:
        return "tmall"
    return None


#: Reader per format name (for command lines): ``read_interactions(path, fmt, **kw)``.
FORMATS: Dict[str, Callable[..., Interactions]] = {
    "csv": read_csv,
    "movielens": read_movielens,
    "yoochoose": read_yoochoose_clicks,
    "session-tsv": read_session_tsv,
    "diginetica": read_diginetica,
    "otto": read_otto,
    "tianchi": read_tianchi,
    "online-retail": read_online_retail,
    "tmall": read_tmall,
}


def read_interactions(path: PathLike, fmt: str, **kwargs: Any) -> Interactions:
    """Dispatch to the reader of `fmt` (a key of :data:`FORMATS`)."""
    try:
        reader = FORMATS[fmt]
    except KeyError:
        raise ValueError(f"unknown format {fmt!r}; choose one of {sorted(FORMATS)}") from None
    return reader(path, **kwargs)


# ---------------------------------------------------------------------------
# preprocessing
# ---------------------------------------------------------------------------

def sessionize(inter: Interactions, gap: Optional[float] = DEFAULT_SESSION_GAP, *,
               keep_sessions: bool = False) -> Interactions:
    """Renumber sessions by the time-gap rule within each user: a gap of
    *more than* `gap` seconds starts a new session (``None``: one session per
    user).  ``keep_sessions=True`` only splits the existing sessions."""
    u, t, s = inter.users, inter.times, inter.sessions
    n = len(u)
    if n == 0:
        return inter
    new = np.empty(n, dtype=bool)
    new[0] = True
    new[1:] = u[1:] != u[:-1]
    if keep_sessions:
        new[1:] |= s[1:] != s[:-1]
    if gap is not None:
        new[1:] |= np.diff(t) > gap
    df = inter.df.copy()
    df["session"] = np.cumsum(new, dtype=np.int64) - 1
    info = dict(inter.info, session_gap=gap)
    return Interactions(df, inter.item_ids, inter.user_ids, user_kind=inter.user_kind, info=info,
                        validate=False)


def remove_consecutive_repeats(inter: Interactions) -> Interactions:
    """Drop a click on the same item as the previous click of the same session."""
    i, s = inter.items, inter.sessions
    if len(i) < 2:
        return inter
    rep = np.zeros(len(i), dtype=bool)
    rep[1:] = (i[1:] == i[:-1]) & (s[1:] == s[:-1])
    n = int(rep.sum())
    return inter.subset(~rep, n_consecutive_repeats_removed=inter.info.get("n_consecutive_repeats_removed", 0) + n)


def _run_lengths(keys: np.ndarray) -> np.ndarray:
    """Length of the run each row belongs to (keys sorted into runs)."""
    if len(keys) == 0:
        return np.empty(0, np.int64)
    starts = np.concatenate([[0], np.flatnonzero(keys[1:] != keys[:-1]) + 1, [len(keys)]])
    return np.repeat(np.diff(starts), np.diff(starts))


def filter_support(inter: Interactions, *, min_item_support: int = 5, min_session_length: int = 2,
                   min_user_events: int = 0, max_rounds: int = 100, compact: bool = True) -> Interactions:
    """Iterative support filtering until stable: drop events of items with
    fewer than `min_item_support` events, sessions shorter than
    `min_session_length` events and users with fewer than `min_user_events`
    events; repeat (each removal can push others below the threshold) until
    no row is dropped.  ``compact=True`` renumbers the surviving items
    0..N'-1.  ``info["filter_rounds"]`` records the rounds taken."""
    users, items, sess = inter.users, inter.items, inter.sessions
    keep = np.ones(len(items), dtype=bool)
    rounds = 0
    while True:
        rounds += 1
        idx = np.flatnonzero(keep)
        k = np.ones(len(idx), dtype=bool)
        if min_item_support > 1:
            sup = np.bincount(items[idx], minlength=inter.n_items)
            k &= sup[items[idx]] >= min_item_support
        if min_session_length > 1:
            k2 = np.zeros(len(idx), dtype=bool)
            sub = idx[k]
            k2[np.flatnonzero(k)] = _run_lengths(sess[sub]) >= min_session_length
            k &= k2
        if min_user_events > 1:
            k3 = np.zeros(len(idx), dtype=bool)
            sub = idx[k]
            k3[np.flatnonzero(k)] = _run_lengths(users[sub]) >= min_user_events
            k &= k3
        if k.all():
            break
        keep[idx[~k]] = False
        if rounds >= max_rounds:
            raise RuntimeError(f"support filtering did not settle in {max_rounds} rounds")
    out = inter.subset(keep, filter_rounds=rounds,
                       n_filtered_events=inter.info.get("n_filtered_events", 0) + int((~keep).sum()))
    return out.compact_items() if compact else out


def filter_sessions(inter: Interactions, min_length: int = 2) -> Interactions:
    """Drop sessions with fewer than `min_length` events (one pass)."""
    if min_length <= 1 or len(inter) == 0:
        return inter
    keep = _run_lengths(inter.sessions) >= min_length
    return inter.subset(keep)


def _to_seconds(when: Any) -> float:
    if isinstance(when, (int, float, np.integer, np.floating)) and not isinstance(when, bool):
        return float(when)
    ts = pd.Timestamp(when)
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return float((ts - _EPOCH) / pd.Timedelta(seconds=1))


def time_cutoff(times: Any, quantile: float = 0.8) -> float:
    """The `quantile` of the event times (``numpy.quantile``, linear)."""
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    t = np.asarray(times, dtype=np.float64)
    if len(t) == 0:
        raise ValueError("no events to take a time quantile of")
    return float(np.quantile(t, quantile))


@dataclass
class TimeSplit:
    """Result of :func:`split_by_time`."""

    train: Interactions
    test: Interactions
    cutoff: float  #: seconds since the epoch

    def __iter__(self) -> Iterator[Any]:  # allows ``train, test, cutoff = split``
        return iter((self.train, self.test, self.cutoff))


def split_by_time(inter: Interactions, quantile: float = 0.8, *, cutoff: Any = None,
                  unit: str = "event") -> TimeSplit:
    """Split at a time cutoff (the `quantile` of event times, or `cutoff`: unix
    seconds, a date string or a datetime, naive = UTC).

    ``unit="event"`` (the DeepRec protocol): events with ``time < cutoff`` go
    to train, the rest to test; a session crossing the cutoff is cut in two
    (both parts keep its session number).  ``unit="session"`` (GRU4Rec):
    whole sessions, by the time of their *last* event.  Both parts keep the
    full item and user vocabularies; see :func:`session_split_convention`.
    """
    if cutoff is None:
        c = time_cutoff(inter.times, quantile)
    else:
        c = _to_seconds(cutoff)
    t = inter.times
    if unit == "event":
        train_mask = t < c
    elif unit == "session":
        off = inter.session_offsets()
        last = t[off[1:] - 1]
        train_mask = np.repeat(last < c, np.diff(off))
    else:
        raise ValueError(f"unit must be 'event' or 'session', got {unit!r}")
    return TimeSplit(inter.subset(train_mask, split_cutoff=c), inter.subset(~train_mask, split_cutoff=c), c)


def remap_items(inter: Interactions, item_ids: Any) -> Interactions:
    """Put `inter` on another item vocabulary (by catalogue id); events of
    items not in `item_ids` are dropped and counted in ``info["n_unknown_items"]``."""
    target = _as_id_array(item_ids)
    if len(target) == len(inter.item_ids) and np.array_equal(target, inter.item_ids):
        return inter
    code_map = _Coder(target).lookup(inter.item_ids)
    new_items = code_map[inter.items] if len(inter) else np.empty(0, np.int64)
    keep = new_items >= 0
    df = inter.df.loc[keep].copy()
    df["item"] = new_items[keep].astype(np.int32)
    info = dict(inter.info)
    info["n_unknown_items"] = info.get("n_unknown_items", 0) + int((~keep).sum())
    return Interactions(df.reset_index(drop=True), target, inter.user_ids, user_kind=inter.user_kind,
                        info=info, validate=False)


def session_split_convention(train: Interactions, test: Interactions, *,
                             min_session_length: int = 2) -> Tuple[Interactions, Interactions]:
    """GRU4Rec's convention after a session split: train keeps only its own
    items (renumbered 0..N-1); test events whose item is not in train are
    removed, then test sessions shorter than `min_session_length` are removed."""
    tr = train.compact_items()
    te = filter_sessions(remap_items(test, tr.item_ids), min_session_length)
    return tr, te

"""Reading candidate sets on the device (numpy only).

Accepted files:

- the trainer's ``.npz`` (keys ``format`` = "deeprec-edge/candidates",
  ``version``, ``user_ids``, ``offsets``, ``item_ids``, ``scores``; CSR
  layout, loaded with ``allow_pickle=False``);
- a CSV with a header containing ``item_id`` and optionally ``user_id``
  (the trainer writes ``user_id,item_id,rank,score``);
- a plain list: one item id per line (an ``item_id`` header line is allowed).

A file holding several users needs ``user`` to pick one.
"""
from __future__ import annotations

import csv
import os
from typing import List, Optional

import numpy as np

__all__ = ["read_candidates", "CANDIDATES_FORMAT"]

CANDIDATES_FORMAT = "deeprec-edge/candidates"


def _pick_user(users: List[str], user: Optional[str], path: str) -> Optional[str]:
    distinct = list(dict.fromkeys(users))
    if user is None:
        if len(distinct) > 1:
            raise ValueError(f"{path}: holds candidates of {len(distinct)} users; "
                             f"choose one with --user (e.g. --user {distinct[0]})")
        return distinct[0] if distinct else None
    if str(user) not in distinct:
        raise ValueError(f"{path}: no candidates for user {user!r}")
    return str(user)


def _typed(tokens: List[str], model) -> list:
    """Catalogue-typed ids: ints for an integer catalogue (non-integers are
    kept as strings and will simply be unknown)."""
    if model is not None and np.asarray(model.item_ids).dtype.kind in "iu":
        out = []
        for t in tokens:
            try:
                out.append(int(t))
            except ValueError:
                out.append(t)
        return out
    return tokens


def read_candidates(path, model=None, user: Optional[str] = None) -> list:
    """Candidate item ids (catalogue ids, in file order) for one user."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(2, f"candidate file not found: {path}", path)
    if path.endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as z:
                need = {"format", "user_ids", "offsets", "item_ids"}
                if not need <= set(z.files):
                    raise ValueError(f"{path}: not a candidates file (missing "
                                     f"{', '.join(sorted(need - set(z.files)))})")
                if str(z["format"][()]) != CANDIDATES_FORMAT:
                    raise ValueError(f"{path}: not a candidates file (format tag "
                                     f"{str(z['format'][()])!r})")
                users = [str(u) for u in z["user_ids"].tolist()]
                offsets = z["offsets"].astype(np.int64)
                ids = z["item_ids"]
        except (OSError, EOFError) as e:
            raise ValueError(f"{path}: cannot read candidates ({e})") from None
        if offsets.shape != (len(users) + 1,) or offsets[0] != 0 or offsets[-1] != len(ids) \
                or np.any(np.diff(offsets) < 0):
            raise ValueError(f"{path}: inconsistent offsets in candidates file")
        u = _pick_user(users, user, path)
        k = users.index(u)
        return ids[offsets[k]:offsets[k + 1]].tolist()
    with open(path, newline="", encoding="utf-8") as f:
        first = f.readline()
        f.seek(0)
        header = [c.strip().lower() for c in first.strip().split(",")]
        if "item_id" in header and len(header) > 1:
            rows = list(csv.DictReader(f))
            cols = {c.strip().lower(): c for c in rows[0].keys()} if rows else {}
            if not rows:
                return []
            ic = cols["item_id"]
            if "user_id" in cols:
                uc = cols["user_id"]
                u = _pick_user([r[uc] for r in rows], user, path)
                rows = [r for r in rows if r[uc] == u]
            return _typed([r[ic].strip() for r in rows], model)
        lines = [ln.strip() for ln in f if ln.strip()]
        if lines and lines[0].lower() == "item_id":
            lines = lines[1:]
        return _typed(lines, model)

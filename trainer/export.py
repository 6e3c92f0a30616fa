"""Export a model file for devices: re-export, compress (float16, int8,
int4, int3 with per-row scales; magnitude pruning), or slice it to a list of
items (``deeprec-train export``).

Compression (:mod:`deeprec_edge.trainer.compress`): ``dtype`` stores the
weight matrices of each group (``tables``: E, O; ``gru``; ``head``) as
float32, float16, int8, int4 or int3 (format version 2,
:mod:`deeprec_edge.quant`) and the biases (``bias``) as float32 or
float16,
``prune`` zeroes that share of the smallest weights first (one-shot, no
recovery training: ``deeprec-train fit --prune`` prunes gradually while
training), and a compressed export also writes item ids and integer
popularity counts in the smallest integer types; ``compress="max"`` is the
preset the README's table recommends.

A *sliced* model is the same ``weights.npz`` format (``docs/model-format.md``)
holding only the listed items: the rows of ``E``, ``O`` (when untied), ``b``,
``popularity`` and ``item_ids`` of those items, in the source model's item
order; the GRU layers and the head are unchanged.  Every score of a kept
item is therefore exactly the source model's score, so a sliced model ranks
its items as the source model ranks them among those items -- as long as
the history it reads contains only kept items: a click on an item outside
the slice is an unknown item for the device, counted and skipped (its input
row is gone).  So a slice meant for devices that fine-tune keeps, beside the
items to rank (``items``: the candidate sets), the items their users click
(``inputs``: the users' histories, or the training log); without ``inputs``
the summary says that clicks outside the slice are lost, and a device's
``deeprec-edge finetune`` reports how many of its clicks that is.

The format reserves the flag ``sliced`` for later versions and version 1
rejects every flag, so a slice carries no flag; its config records the
provenance under the informational key ``sliced_from``
(``{"fingerprint": ..., "n_items": ...}`` of the model it was cut from).
A personal model can be sliced too: its personal output biases are kept for
the kept items.

This module needs numpy only (no pandas).
"""
from __future__ import annotations

import csv
import json
import os
from typing import Any, Dict, Iterable, List, Optional, Tuple

import numpy as np

from deeprec_edge.model import GRULayer, Model, load_model, save_model

__all__ = ["slice_model", "read_item_list", "export_model"]

from .compress import PRESETS, compact_model, parse_dtype, prune_model  # noqa: E402


def slice_model(model: Model, items: Any, *, by: str = "id") -> Tuple[Model, Dict[str, Any]]:
    """The model restricted to ``items``.

    ``items``: catalogue ids (``by="id"``) or dense indices (``by="index"``);
    duplicates are ignored and the kept items stay in the source model's
    order.  Unknown ids are counted, not fatal; no known id at all raises
    ``ValueError``.  Returns ``(sliced model, info)`` with ``info`` =
    ``{"requested", "kept", "unknown", "unknown_examples", "source_items"}``.
    """
    arr = np.asarray(list(items) if not isinstance(items, np.ndarray) else items)
    if by == "id":
        if arr.size == 0:
            idx, unknown = np.zeros(0, np.int64), np.zeros(0, bool)
        else:
            idx, unknown = model.item_index(arr)
        examples = [str(x) for x in arr[np.asarray(unknown, bool)][:5].tolist()]
        n_unknown = int(np.count_nonzero(unknown))
        idx = np.asarray(idx)[~np.asarray(unknown, bool)]
    elif by == "index":
        idx = arr.astype(np.int64).reshape(-1)
        bad = (idx < 0) | (idx >= model.n_items)
        if bad.any():
            raise ValueError(f"item indices must be in 0..{model.n_items - 1}; got "
                             f"{idx[bad][:5].tolist()}")
        n_unknown, examples = 0, []
    else:
        raise ValueError(f"by must be 'id' or 'index', got {by!r}")
    keep = np.unique(idx).astype(np.int64)
    if keep.size == 0:
        raise ValueError(f"none of the {arr.size} requested items is in the model's catalogue "
                         f"of {model.n_items} items" +
                         (f" (e.g. {', '.join(examples)})" if examples else ""))
    cfg = json.loads(json.dumps(model.config))
    cfg["n_items"] = int(keep.size)
    cfg["sliced_from"] = {"fingerprint": model.fingerprint(), "n_items": model.n_items}
    bias_index = bias = None
    if model.personal_bias_index is not None and model.personal_bias is not None:
        pos = np.full(model.n_items, -1, np.int64)
        pos[keep] = np.arange(keep.size)
        new = pos[model.personal_bias_index]
        ok = new >= 0
        bias_index = new[ok].astype(np.int64)
        bias = np.ascontiguousarray(model.personal_bias[ok], np.float32)
    sliced = Model(
        config=cfg,
        item_ids=np.ascontiguousarray(model.item_ids[keep]),
        E=_take(model.E, keep),
        layers=[GRULayer(*(a.copy() for a in layer)) for layer in model.layers],
        W_p=model.W_p.copy(), b_p=model.b_p.copy(), repeat_scale=model.repeat_scale,
        repeat_w=None if model.repeat_w is None else model.repeat_w.copy(),
        O=None if model.O is None else _take(model.O, keep),
        b=np.ascontiguousarray(model.b[keep]),
        popularity=np.ascontiguousarray(model.popularity[keep]),
        personal=None if model.personal is None else json.loads(json.dumps(model.personal)),
        personal_bias_index=bias_index, personal_bias=bias,
    )
    sliced.validate()
    info = {"requested": int(arr.size), "kept": int(keep.size), "unknown": n_unknown,
            "unknown_examples": examples, "source_items": model.n_items}
    return sliced, info


def _take(table: Any, rows: np.ndarray) -> Any:
    """Rows of an item table in its own storage."""
    from deeprec_edge.quant import Compressed
    if isinstance(table, Compressed):
        return table.take(rows)
    return np.ascontiguousarray(table[rows])


def _ids_from_npz(path: str) -> np.ndarray:
    with np.load(path, allow_pickle=False) as z:
        if "item_ids" not in z.files:
            raise ValueError(f"{path}: no 'item_ids' array (expected a candidates file from "
                             f"'deeprec-train candidates' or a model file)")
        return np.asarray(z["item_ids"]).reshape(-1)


def read_item_list(path: Any) -> List[Any]:
    """Item ids from a file, in file order (duplicates kept; the caller
    de-duplicates):

    - ``.npz``: the ``item_ids`` array (a candidates file: the union of all
      users' sets; or a model file: its catalogue);
    - CSV with a header naming an item column as the device's history
      reader does (``item_id``, ``itemId``, ``item``, ``aid``, any case;
      delimited by commas, or tabs or semicolons when the header has no
      comma) -- a candidates CSV ``user_id,item_id,rank,score`` or a
      device's click history: that column, all rows;
    - otherwise one id per line (a header line naming the item column is
      allowed, blank lines skipped).

    Ids are returned as text, or as ints for an ``.npz`` with integer ids;
    :meth:`Model.item_index` matches decimal text against integer
    catalogues.
    """
    p = os.fspath(path)
    if not os.path.exists(p):
        raise FileNotFoundError(2, f"item list not found: {p}", p)
    if p.endswith(".npz"):
        return _ids_from_npz(p).tolist()
    from deeprec_edge.history import ITEM_COLUMNS
    with open(p, newline="", encoding="utf-8-sig") as f:
        first = f.readline()
        f.seek(0)
        delim = "," if "," in first else "\t" if "\t" in first else ";" if ";" in first else ","
        header = [c.strip().lower() for c in next(csv.reader([first], delimiter=delim), [])]
        hits = [i for i, h in enumerate(header) if h in ITEM_COLUMNS]
        if len(hits) > 1:
            raise ValueError(f"{p}: ambiguous item column: {[header[i] for i in hits]} all "
                             f"match")
        if hits and len(header) > 1:
            col = hits[0]
            rows = csv.reader(f, delimiter=delim)
            next(rows, None)
            out = []
            for line, row in enumerate(rows, start=2):
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) <= col:
                    raise ValueError(f"{p}, line {line}: no item_id field")
                out.append(row[col].strip())
            return out
        out = [ln.strip() for ln in f if ln.strip()]
    if out and out[0].strip('"').lower() in ITEM_COLUMNS:
        out = out[1:]
    return out


def export_model(source: Any, output: Any, *, items: Optional[Iterable[Any]] = None,
                 top_popular: int = 0, compressed: bool = False,
                 dtype: Optional[Any] = None, prune: float = 0.0,
                 compress: Optional[str] = None,
                 inputs: Optional[Iterable[Any]] = None) -> Dict[str, Any]:
    """Load ``source`` (validated), optionally slice it to ``items`` and/or
    the ``top_popular`` most popular items (their union), prune and
    compress it, and write ``output`` atomically in the same format.

    ``dtype``: a storage for every weight matrix (``"int8"``) or per group
    (``"tables=int4,gru=int8"`` or a dict); ``prune``: one-shot magnitude
    pruning of that share of every weight matrix's weights; ``compress``: a
    preset of :data:`deeprec_edge.trainer.compress.PRESETS` (``"max"``),
    whose groups an explicit ``dtype`` overrides one by one (and ``prune``
    its pruning); ``compressed``: deflate the
    npz (the preset may turn it on); ``inputs``: item ids the devices click
    (their histories), kept beside ``items`` so a sliced model can still
    read and fine-tune on those histories.  Returns a summary dict: ``source``,
    ``output``, ``items`` (catalogue size written), ``source_items``,
    ``sliced`` (bool), ``unknown`` (requested ids not in the catalogue),
    ``unknown_examples``, ``bytes``, ``fingerprint``, ``storage`` (per
    matrix), ``flags``, ``prune``."""
    spec: Dict[str, Any] = {}
    if compress is not None:
        if compress not in PRESETS:
            raise ValueError(f"unknown --compress preset {compress!r} (presets: "
                             f"{', '.join(PRESETS)})")
        spec = dict(PRESETS[compress])
    if dtype is not None:    # overrides the preset group by group
        spec["dtype"] = {**spec.get("dtype", {}),
                         **(parse_dtype(dtype) if isinstance(dtype, str) else dict(dtype))}
    if prune:
        spec["prune"] = float(prune)
    if not 0.0 <= spec.get("prune", 0.0) < 1.0:
        raise ValueError(f"--prune must be in [0, 1), got {spec['prune']}")
    compressed = compressed or bool(spec.get("deflate"))
    model = load_model(source)
    info: Dict[str, Any] = {"requested": 0, "kept": model.n_items, "unknown": 0,
                            "unknown_examples": [], "source_items": model.n_items}
    sliced = items is not None or top_popular > 0
    if inputs is not None and not sliced:
        raise ValueError("--inputs keeps the rows of clicked items in a slice: give the items "
                         "to rank with --items or --top-popular")
    n_input_only = 0
    if sliced:
        idx_parts = []
        unknown, examples, requested = 0, [], 0

        def known(ids):
            idx, unk = model.item_index(np.asarray(ids, dtype=object if any(
                isinstance(x, str) for x in ids) else None))
            unk = np.asarray(unk, bool)
            return np.asarray(idx)[~unk], unk

        if items is not None:
            ids = list(items)
            requested = len(ids)
            if ids:
                kept, unk = known(ids)
                unknown = int(unk.sum())
                examples = [str(x) for x, u in zip(ids, unk.tolist()) if u][:5]
                idx_parts.append(kept)
        if top_popular > 0:
            pop = np.asarray(model.popularity, np.float64)
            order = np.lexsort((np.arange(model.n_items), -pop))
            idx_parts.append(order[:top_popular])
        idx = np.concatenate(idx_parts) if idx_parts else np.zeros(0, np.int64)
        if idx.size == 0:
            raise ValueError(f"none of the {requested} requested items is in the catalogue of "
                             f"{source} ({model.n_items} items)" +
                             (f", e.g. {', '.join(examples)}" if examples else ""))
        ranked = np.unique(idx)
        if inputs is not None:
            ids = list(inputs)
            if ids:
                kept, unk = known(ids)
                if not kept.size:       # a misread file would keep nothing, silently
                    raise ValueError(
                        f"none of the {len(ids):,} --inputs ids is in the catalogue of "
                        f"{source} ({model.n_items} items), e.g. "
                        f"{', '.join(repr(str(x)) for x in ids[:3])}")
                n_input_only = int(np.setdiff1d(kept, ranked).size)
                idx = np.concatenate([idx, kept])
                info["inputs_unknown"] = int(unk.sum())
        model, sinfo = slice_model(model, idx, by="index")
        model.config["sliced_from"].update(items_to_rank=int(ranked.size),
                                           input_items=n_input_only)
        info.update(kept=sinfo["kept"], requested=requested, unknown=unknown,
                    unknown_examples=examples)
    if spec.get("prune"):
        model = prune_model(model, spec["prune"])
    if spec.get("dtype"):
        from deeprec_edge.model import compress_model
        model = compress_model(model, spec["dtype"])
    if spec:
        model = compact_model(model)
    save_model(model, output, compressed=compressed)
    return {"source": os.fspath(source), "output": os.fspath(output), "items": model.n_items,
            "source_items": info["source_items"], "sliced": sliced,
            "requested": info["requested"], "unknown": info["unknown"],
            "unknown_examples": info["unknown_examples"],
            "bytes": os.path.getsize(output), "fingerprint": model.fingerprint(),
            "storage": model.storage, "flags": model.flags, "prune": spec.get("prune", 0.0),
            "deflated": bool(compressed), "input_items_kept": n_input_only,
            "inputs_given": inputs is not None,
            "inputs_unknown": info.get("inputs_unknown", 0)}

"""The model file ``weights.npz`` (schema versions 1 and 2): load, validate, save.

A model is a GRU next-item recommender (``DESIGN.md`` section 2): input
embeddings ``E``, ``L`` stacked GRU layers (PyTorch ``nn.GRU`` layout, gate
order r, z, n), a dense head ``u = act(W_p h_L + b_p)``, output item
embeddings ``O`` (or ``E`` when tied) and output bias ``b``, plus the
catalogue's own item ids and item popularity.  A *personal* model is the
same file plus a ``personal`` JSON record (fingerprint of the global model it
came from, fine-tuning metadata) and optionally personal output biases for
some items.  Version 2 adds the optional *repeat component*
(:mod:`deeprec_edge.repeat`: ``repeat.scale``, ``repeat.w`` and the config's
``repeat`` record) and the device's fine-tuning recipe (the config's
``finetune`` record, :mod:`deeprec_edge.recipe`) and **compressed storage**
of the weight matrices (:mod:`deeprec_edge.quant`: float16, int8, int4 or int3
with per-row scales, dense or sparse; the config's ``storage`` record and
the flags ``float16``, ``int8``, ``int4``, ``int3``, ``pruned``); a model without any
of these is written as version 1, so older readers still load it.  The full
schema is in ``docs/model-format.md``.

:func:`load_model` reads with ``allow_pickle=False`` and validates every
name, dtype, shape and value; anything wrong raises :class:`ModelFormatError`
saying exactly what.  :func:`save_model` validates first, then writes
atomically (:mod:`deeprec_edge._atomic`), so a failed or interrupted save
leaves the previous file intact.

This module needs numpy only; it never imports the compiled kernels
(:func:`params_of` imports the training engine lazily).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import re
import struct
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from ._atomic import atomic_write
from .recipe import DEFAULT_RECIPE, FinetuneRecipe
from .repeat import DEFAULT_MEMORY, FEATURES as REPEAT_FEATURES, RepeatSpec
from ._npz import SMALL_ARCHIVE, NpzArchive, write_npz_deflated
from .quant import (_NIBBLE, Compressed, decode as _decode, encode as _encode, float16_if_exact,
                    parse_storage)

__all__ = [
    "FORMAT_TAG",
    "FORMAT_VERSION",
    "SUPPORTED_FLAGS",
    "RESERVED_FLAGS",
    "DEFAULT_SESSION_GAP_SECONDS",
    "MAX_ITEMS",
    "MAX_DIM",
    "MAX_LAYERS",
    "ModelFormatError",
    "GRULayer",
    "Model",
    "load_model",
    "save_model",
    "validate_arrays",
    "model_from_params",
    "make_personal",
    "params_of",
    "compress_model",
    "MATRIX_GROUPS",
    "delta_arrays",
    "DELTA_TAG",
]

#: The value of the ``format`` array of every model file.
FORMAT_TAG = "deeprec-edge/model"
#: The newest schema version this code reads (a model is written with the
#: lowest version that holds it: 1 without a repeat component or recipe).
FORMAT_VERSION = 2
#: Largest repeat memory a file may ask for (distinct items per user).
MAX_REPEAT_MEMORY = 1_000_000
#: Config flags this version understands: what the ``storage`` record
#: holds (a flag for every compressed dtype in use, ``pruned`` for sparse
#: storage), so a reader that predates compression refuses the file.
SUPPORTED_FLAGS: frozenset = frozenset({"float16", "int8", "int4", "int3", "pruned"})
#: Flags reserved for later variants of the same format, with what they mean.
RESERVED_FLAGS: Dict[str, str] = {
    "sliced": "a sliced model holding only the items one device needs",
}
#: Session gap (seconds) used when the config does not give one (GRU4Rec's 1 hour).
DEFAULT_SESSION_GAP_SECONDS = 3600.0
#: Bounds on the config; a file beyond them is rejected before any array is
#: read.  Items: dense indices are int32 in the kernels.
MAX_ITEMS = 2 ** 31 - 1
#: Largest e, d and hidden size H.
MAX_DIM = 1 << 16
#: Most GRU layers.
MAX_LAYERS = 64
#: Longest JSON record (config, personal) in characters.
MAX_JSON_CHARS = 1 << 20
#: Longest string item id in characters.
MAX_ID_CHARS = 4096
_MAX_MESSAGE = 600

ACTIVATIONS = ("tanh", "identity")
_REQUIRED_CONFIG = ("n_items", "e", "L", "H", "d", "activation", "tied", "carry_state")
#: Largest magnitude of a personal model's last_timestamp (unix seconds): the
#: history reader reads numbers from 1e11 as milliseconds and rejects 1e14 ms.
_MAX_SECONDS = 1e11
_REQUIRED_PERSONAL = ("base_fingerprint", "clicks_used", "last_timestamp", "seed", "epochs",
                      "created")
_LAYER_PARTS = ("W_ih", "W_hh", "b_ih", "b_hh")
_FINGERPRINT_DOMAIN = b"deeprec-edge/model-fingerprint/v1\0"
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


class ModelFormatError(ValueError):
    """A model file (or an in-memory model about to be saved) breaks the
    schema: the message names the file and exactly what is wrong."""


class GRULayer(NamedTuple):
    """One GRU layer's weights, PyTorch layout, gate order r, z, n:
    ``W_ih`` [3H, in], ``W_hh`` [3H, H], ``b_ih`` [3H], ``b_hh`` [3H]."""

    W_ih: np.ndarray
    W_hh: np.ndarray
    b_ih: np.ndarray
    b_hh: np.ndarray


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON-serialisable")


def _dump_json(obj: Any, what: str) -> str:
    try:
        return json.dumps(obj, sort_keys=True, allow_nan=False, default=_json_default,
                          ensure_ascii=False)
    except (TypeError, ValueError) as e:
        raise ModelFormatError(f"{what} cannot be written as JSON: {e}") from None


def _canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False,
                      ensure_ascii=False, default=_json_default).encode("utf-8")


@dataclass(eq=False)
class Model:
    """A global or personal GRU next-item model.

    Attributes mirror the file (``docs/model-format.md``): ``config`` (the
    JSON config as a dict, exactly as stored), ``item_ids`` (the catalogue's
    ids, int64 or unicode, length N), ``E`` [N, e], ``layers`` (a list of
    :class:`GRULayer`, bottom first), ``W_p`` [d, H] and ``b_p`` [d] (the
    head, ``head.W``/``head.b`` in the file), ``O`` [N, d] or None when tied,
    ``b`` [N], ``popularity`` [N], and for a personal model ``personal`` (the
    metadata dict) and optionally ``personal_bias_index`` / ``personal_bias``
    (dense item indices and their personal output biases), and for a model
    with a repeat component ``repeat_scale`` / ``repeat_w`` (with the
    config's ``repeat`` record; a personal model carries its own ``w``).
    The weight matrices ``E``, ``O``, ``W_ih``/``W_hh`` of every layer and
    ``W_p`` are float32 arrays or :class:`deeprec_edge.quant.Compressed`
    (float16, int8, int4, int3 as stored; never inflated: the runtime reads them
    as they are); everything else is float32.

    Build one with :func:`load_model`, :func:`model_from_params` or
    :func:`make_personal`; :meth:`validate` checks an in-memory model
    against the schema (:func:`save_model` always does).
    """

    config: Dict[str, Any]
    item_ids: np.ndarray
    E: np.ndarray
    layers: List[GRULayer]
    W_p: np.ndarray
    b_p: np.ndarray
    O: Optional[np.ndarray]
    b: np.ndarray
    popularity: np.ndarray
    personal: Optional[Dict[str, Any]] = None
    personal_bias_index: Optional[np.ndarray] = None
    personal_bias: Optional[np.ndarray] = None
    repeat_scale: Optional[float] = None
    repeat_w: Optional[np.ndarray] = None
    _lookup: Optional[Tuple[np.ndarray, np.ndarray]] = field(default=None, init=False, repr=False)
    _id_dict: Optional[dict] = field(default=None, init=False, repr=False)

    def __repr__(self) -> str:
        kind = "personal" if self.is_personal else "global"
        return (f"Model({kind}, n_items={self.n_items}, e={self.embedding_dim}, "
                f"H={self.hidden_sizes}, d={self.dim}, activation={self.activation!r}, "
                f"tied={self.tied}, carry_state={self.carry_state})")

    # -- shape ---------------------------------------------------------
    @property
    def n_items(self) -> int:
        """Number of items N in the catalogue."""
        return int(self.E.shape[0])

    @property
    def embedding_dim(self) -> int:
        """Input embedding size e."""
        return int(self.E.shape[1])

    @property
    def n_layers(self) -> int:
        """Number of GRU layers L."""
        return len(self.layers)

    @property
    def hidden_sizes(self) -> List[int]:
        """Hidden size of every GRU layer, bottom first."""
        return [int(layer.W_hh.shape[1]) for layer in self.layers]

    @property
    def hidden_size(self) -> int:
        """Hidden size H of the last GRU layer (the one fine-tuned)."""
        return int(self.layers[-1].W_hh.shape[1])

    @property
    def dim(self) -> int:
        """User / output embedding size d."""
        return int(self.W_p.shape[0])

    @property
    def activation(self) -> str:
        """Head activation: ``"tanh"`` or ``"identity"``."""
        return str(self.config.get("activation", "tanh"))

    @property
    def tied(self) -> bool:
        """True when the output table is the input embedding (``O is E``)."""
        return self.O is None

    @property
    def carry_state(self) -> bool:
        """True when hidden states carry over session starts (never reset)."""
        return bool(self.config.get("carry_state", False))

    @property
    def session_gap_seconds(self) -> float:
        """A gap longer than this starts a new session (default 3600)."""
        return float(self.config.get("session_gap_seconds", DEFAULT_SESSION_GAP_SECONDS))

    @property
    def flags(self) -> List[str]:
        """Format variant flags of the file this model is written as (the
        compressed dtypes in use, ``pruned`` for sparse storage)."""
        return list(self._file_config()[0].get("flags", []))

    @property
    def storage(self) -> Dict[str, str]:
        """Storage of every weight matrix in the file, by array name
        (``"float32"``, ``"int8"``, ``"int4+sparse"``, ...)."""
        return self._encoded()[1]

    def matrices(self) -> Dict[str, Any]:
        """The weight matrices by file name (float32 arrays or Compressed)."""
        out: Dict[str, Any] = {"E": self.E}
        for l, layer in enumerate(self.layers):
            out[f"gru{l}.W_ih"] = layer.W_ih
            out[f"gru{l}.W_hh"] = layer.W_hh
        out["head.W"] = self.W_p
        if self.O is not None:
            out["O"] = self.O
        return out

    def _encoded(self) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
        """File arrays of every matrix and their storage strings."""
        arrays: Dict[str, np.ndarray] = {}
        storage: Dict[str, str] = {}
        for name, value in self.matrices().items():
            try:
                enc, st = _encode(name, value)
            except ValueError as e:
                raise ModelFormatError(f"model: {e}") from None
            arrays.update(enc)
            storage[name] = st
        return arrays, storage

    def _file_config(self, storage: Optional[Dict[str, str]] = None
                     ) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
        """The config as the file holds it: ``storage`` and the storage
        flags follow the matrices (whatever the in-memory config says)."""
        enc: Dict[str, np.ndarray] = {}
        if storage is None:
            enc, storage = self._encoded()
        cfg = dict(self.config)
        compressed = {k: v for k, v in storage.items() if v != "float32"}
        if compressed:
            cfg["storage"] = dict(sorted(compressed.items()))
        else:
            cfg.pop("storage", None)
        flags = [f for f in cfg.get("flags", []) if f not in SUPPORTED_FLAGS]
        flags += sorted(_storage_flags(storage))
        if flags or "flags" in cfg:
            cfg["flags"] = flags
        return cfg, enc

    @staticmethod
    def _bias_file(b: np.ndarray, storage: Mapping[str, str]) -> np.ndarray:
        """A bias vector (``b``, ``head.b``, ``gru{l}.b_ih``/``b_hh``) as the
        file stores it: float16 in a file with compressed matrices when
        every value is a float16 value (``compress_model(..., {"bias":
        "float16"})`` rounds them so), else float32."""
        return float16_if_exact(b) if _has_storage(storage) else b

    @property
    def is_personal(self) -> bool:
        """True for a fine-tuned personal model."""
        return self.personal is not None

    @property
    def out_table(self) -> np.ndarray:
        """The output item table: ``O``, or ``E`` when tied."""
        return self.E if self.O is None else self.O

    @property
    def output_bias(self) -> np.ndarray:
        """The output bias in effect: ``b`` with the personal biases applied
        (``b`` itself, not a copy, when there are none)."""
        if self.personal_bias_index is None or self.personal_bias is None:
            return self.b
        out = self.b.copy()
        out[self.personal_bias_index] = self.personal_bias
        return out

    @property
    def has_repeat(self) -> bool:
        """True when the model scores with a repeat component."""
        return self.repeat_w is not None

    @property
    def repeat(self) -> RepeatSpec:
        """The repeat component (scale 1, weights 0 when the model has none)."""
        if self.repeat_w is None:
            return RepeatSpec()
        mem = int((self.config.get("repeat") or {}).get("memory", DEFAULT_MEMORY))
        return RepeatSpec(scale=float(self.repeat_scale),
                          w=tuple(float(x) for x in np.asarray(self.repeat_w).tolist()),
                          memory=mem)

    @property
    def recipe(self) -> FinetuneRecipe:
        """The device's fine-tuning recipe written by the trainer (the
        default recipe when the file names none)."""
        r = self.config.get("finetune")
        return DEFAULT_RECIPE if r is None else FinetuneRecipe.from_dict(r)

    @property
    def format_version(self) -> int:
        """The schema version this model is written with (1 unless it has a
        repeat component, a recipe or compressed matrices)."""
        if self.repeat_w is not None or "finetune" in self.config:
            return 2
        return 2 if _has_storage(self.storage) else 1

    @property
    def n_parameters(self) -> int:
        """Number of float weights (embeddings, GRU, head, output table and bias)."""
        n = self.E.size + self.W_p.size + self.b_p.size + self.b.size
        n += sum(a.size for layer in self.layers for a in layer)
        return int(n + (0 if self.O is None else self.O.size))

    # -- item ids ------------------------------------------------------
    def _sorted_ids(self) -> Tuple[np.ndarray, np.ndarray]:
        if self._lookup is None:
            order = np.argsort(self.item_ids, kind="stable")
            self._lookup = (self.item_ids[order], order.astype(np.int64))
        return self._lookup

    def item_index(self, ids: Any) -> Tuple[np.ndarray, np.ndarray]:
        """Map catalogue item ids to dense indices 0..N-1.

        ``ids``: a sequence or array of ids (a scalar gives 0-d results).
        Integer catalogues also accept ids given as decimal strings (``"42"``),
        string catalogues accept integers (compared as their decimal text).
        Returns ``(indices int64, unknown_mask bool)``; unknown ids get
        index -1.  Uses a sorted search: O((N + n) log N), no Python loop for
        array input of the catalogue's kind.
        """
        q = np.asarray(ids)
        if q.dtype.kind == "f" and not isinstance(ids, np.ndarray):
            # Python ints numpy could not fit one integer type (an id >= 2**63 beside
            # ordinary ones) became float64, rounding ids above 2**53 onto neighbours:
            # each element is matched as given instead
            q = np.asarray(ids, dtype=object)
        scalar = q.ndim == 0
        q = q.reshape(-1)
        sorted_ids, order = self._sorted_ids()
        valid = np.ones(q.shape[0], bool)
        if sorted_ids.dtype.kind in "iu":
            if q.dtype.kind in "iu":
                if q.dtype.kind == "u" and q.dtype.itemsize == 8:
                    valid = q < np.uint64(1 << 63)
                    q = np.where(valid, q, 0)
                q = q.astype(np.int64, copy=False)
            elif q.dtype.kind in "f":
                valid = np.isfinite(q) & (q == np.round(q)) & (np.abs(q) < 2.0 ** 63)
                q = np.where(valid, q, 0).astype(np.int64)
            elif q.dtype.kind == "b":
                valid[:] = False
                q = np.zeros(q.shape[0], np.int64)
            else:  # strings, bytes, objects: parse decimal integers
                vals = np.zeros(q.shape[0], np.int64)
                for i, x in enumerate(q.tolist()):
                    v = _as_int(x)
                    if v is None:
                        valid[i] = False
                    else:
                        vals[i] = v
                q = vals
        else:
            if q.dtype.kind != "U":
                q = np.array([_as_str(x) for x in q.tolist()], dtype=str) if q.size else \
                    np.zeros(0, dtype="<U1")
        n = sorted_ids.shape[0]
        if q.size == 0 or n == 0:
            idx = np.full(q.shape[0], -1, np.int64)
        else:
            pos = np.searchsorted(sorted_ids, q)
            posc = np.minimum(pos, n - 1)
            found = valid & (pos < n) & (sorted_ids[posc] == q)
            idx = np.where(found, order[posc], -1)
        unknown = idx < 0
        if scalar:
            return idx.reshape(()), unknown.reshape(())
        return idx, unknown

    @property
    def id_to_index(self) -> dict:
        """A dict from catalogue id (Python int or str) to dense index (cached;
        treat as read-only)."""
        if self._id_dict is None:
            self._id_dict = {k: i for i, k in enumerate(self.item_ids.tolist())}
        return self._id_dict

    # -- identity ------------------------------------------------------
    def to_arrays(self) -> Dict[str, np.ndarray]:
        """The arrays of the file, by name (shares memory with the model;
        compressed matrices in their file encoding)."""
        enc, storage = self._encoded()
        cfg, _ = self._file_config(storage)
        version = 2 if (self.repeat_w is not None or "finetune" in cfg or "storage" in cfg) else 1
        arrays: Dict[str, np.ndarray] = {
            "format": np.array(FORMAT_TAG),
            "version": np.array(version, dtype=np.int64),
            "config": np.array(_dump_json(cfg, "config")),
            "item_ids": np.asarray(self.item_ids),
        }
        arrays.update({k: v for k, v in enc.items() if k == "E" or k.startswith("E.")})
        for l, layer in enumerate(self.layers):
            for part, a in zip(_LAYER_PARTS, layer):
                name = f"gru{l}.{part}"
                if part in ("W_ih", "W_hh"):
                    arrays.update({k: v for k, v in enc.items()
                                   if k == name or k.startswith(name + ".")})
                else:
                    arrays[name] = self._bias_file(a, storage)
        arrays.update({k: v for k, v in enc.items() if k == "head.W" or k.startswith("head.W.")})
        arrays["head.b"] = self._bias_file(self.b_p, storage)
        if self.O is not None:
            arrays.update({k: v for k, v in enc.items() if k == "O" or k.startswith("O.")})
        arrays["b"] = self._bias_file(self.b, storage)
        arrays["popularity"] = self.popularity
        if self.personal is not None:
            arrays["personal"] = np.array(_dump_json(self.personal, "personal"))
        if self.personal_bias_index is not None:
            arrays["personal.bias_index"] = self.personal_bias_index
        if self.personal_bias is not None:
            arrays["personal.bias"] = self.personal_bias
        if self.repeat_w is not None:
            arrays["repeat.scale"] = np.asarray(self.repeat_scale, np.float32).reshape(())
            arrays["repeat.w"] = self.repeat_w
        return arrays

    def fingerprint(self) -> str:
        """sha256 (hex) of the model's arrays computed canonically.

        Independent of array order, zip layout, compression and byte order:
        every array is hashed in sorted name order as name, kind, shape and
        canonical bytes (numbers little-endian, strings UTF-8 with lengths,
        the JSON arrays re-serialised with sorted keys).  Two files have the
        same fingerprint exactly when they hold the same model.  See
        ``docs/model-format.md`` for the exact definition.
        """
        return _fingerprint(self.to_arrays())

    def validate(self) -> None:
        """Check the in-memory model against the schema; raises
        :class:`ModelFormatError` naming the problem."""
        validate_arrays(self.to_arrays(), where="model")

    def copy(self) -> "Model":
        """A deep copy (arrays and metadata; a Compressed matrix, immutable,
        is shared)."""
        cp = lambda a: None if a is None else a.copy()  # noqa: E731
        return Model(
            config=json.loads(_dump_json(self.config, "config")),
            item_ids=self.item_ids.copy(),
            E=self.E.copy(),
            layers=[GRULayer(*(a.copy() for a in layer)) for layer in self.layers],
            W_p=self.W_p.copy(), b_p=self.b_p.copy(), O=cp(self.O), b=self.b.copy(),
            popularity=self.popularity.copy(),
            personal=None if self.personal is None else json.loads(_dump_json(self.personal,
                                                                              "personal")),
            personal_bias_index=cp(self.personal_bias_index),
            personal_bias=cp(self.personal_bias),
            repeat_scale=self.repeat_scale,
            repeat_w=cp(self.repeat_w),
        )

    def describe(self) -> Dict[str, Any]:
        """A summary for people and ``deeprec-edge info``: shape, settings,
        provenance and, for a personal model, its fine-tuning record."""
        c = self.config
        info: Dict[str, Any] = {
            "kind": "personal" if self.is_personal else "global",
            "format": f"{FORMAT_TAG} v{self.format_version}",
            "items": self.n_items,
            "item_id_type": "string" if self.item_ids.dtype.kind == "U" else "integer",
            "embedding_dim": self.embedding_dim,
            "layers": self.n_layers,
            "hidden_sizes": self.hidden_sizes,
            "dim": self.dim,
            "activation": self.activation,
            "tied": self.tied,
            "carry_state": self.carry_state,
            "session_gap_seconds": self.session_gap_seconds,
            "parameters": self.n_parameters,
            "flags": self.flags,
            "storage": self.storage,
            "array_bytes": {k: int(np.asarray(v).nbytes) for k, v in self.to_arrays().items()
                            if k not in ("format", "version", "config", "personal")},
            "repeat": (dict(zip(REPEAT_FEATURES, (round(x, 4) for x in self.repeat.w)),
                            scale=round(self.repeat.scale, 4), memory=self.repeat.memory)
                       if self.has_repeat else None),
            "finetune_recipe": self.recipe.to_dict(),
        }
        for k in ("loss", "alpha", "trained_on", "created"):
            if k in c:
                info[k] = c[k]
        info["fingerprint"] = self.fingerprint()
        if self.personal is not None:
            p = self.personal
            info["base_fingerprint"] = p.get("base_fingerprint")
            info["clicks_used"] = p.get("clicks_used")
            ts = p.get("last_timestamp")
            info["last_timestamp"] = ts
            if isinstance(ts, (int, float)) and math.isfinite(ts):
                try:
                    info["last_click_utc"] = _dt.datetime.fromtimestamp(
                        ts, _dt.timezone.utc).isoformat()
                except (OverflowError, OSError, ValueError):   # before year 1
                    info["last_click_utc"] = None
            for k in ("seed", "epochs", "finetunes", "clicks_used_total"):
                if k in p:
                    info[k] = p[k]
            info["personal_created"] = p.get("created")
            info["personal_biases"] = (0 if self.personal_bias_index is None
                                       else int(self.personal_bias_index.shape[0]))
        return info


# --------------------------------------------------------------------------
# fingerprint
# --------------------------------------------------------------------------


def _value_hashed(name: str) -> bool:
    """Arrays the writer stores as float16 or float32 by their values (the
    biases, per-row scales): compared and hashed as float32."""
    return name.endswith(".scale") or _is_bias(name)


def _is_bias(name: str) -> bool:
    """``b``, ``head.b``, ``gru{l}.b_ih``, ``gru{l}.b_hh``."""
    return name in ("b", "head.b") or re.fullmatch(r"gru\d+\.b_(ih|hh)", name) is not None


def _canonical_bytes(name: str, a: np.ndarray) -> Tuple[bytes, Iterable[bytes]]:
    if name in ("config", "personal"):
        obj = json.loads(str(a[()]))
        return b"json", [_canonical_json(obj)]
    kind = a.dtype.kind
    if kind == "U":
        def gen():
            for s in a.reshape(-1).tolist():
                b = s.encode("utf-8")
                yield struct.pack("<Q", len(b))
                yield b
        return b"utf8", gen()
    if kind in "iub":
        return b"<i8", [np.ascontiguousarray(a, dtype="<i8").tobytes()]
    if kind == "f":
        # biases and per-row scales hash as float32 whatever they are stored as
        # (float16 when their values allow it): their values are the model
        itemsize = 4 if _value_hashed(name) and a.dtype.itemsize == 2 else a.dtype.itemsize
        dt = f"<f{itemsize}"
        arr = np.ascontiguousarray(a, dtype=dt)
        return dt.encode(), [memoryview(arr).cast("B")]
    raise ModelFormatError(f"array '{name}' has dtype {a.dtype}, which has no canonical form")


def _fingerprint(arrays: Mapping[str, np.ndarray]) -> str:
    h = hashlib.sha256(_FINGERPRINT_DOMAIN)
    for name in sorted(arrays):
        a = np.asarray(arrays[name])
        tag, chunks = _canonical_bytes(name, a)
        shape = ",".join(str(int(s)) for s in a.shape).encode()
        h.update(name.encode("utf-8") + b"\0" + tag + b"\0" + shape + b"\0")
        for c in chunks:
            h.update(c)
        h.update(b"\0")
    return h.hexdigest()


# --------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------


def _as_int(x: Any) -> Optional[int]:
    if isinstance(x, bytes):
        x = x.decode("utf-8", "replace")
    if isinstance(x, str):
        s = x.strip()
        if not re.fullmatch(r"[+-]?\d+", s):
            return None
        v = int(s)
    elif isinstance(x, (bool, np.bool_)):
        return None
    elif isinstance(x, (int, np.integer)):
        v = int(x)
    elif isinstance(x, (float, np.floating)) and math.isfinite(x) and float(x).is_integer():
        v = int(x)
    else:
        return None
    return v if -(1 << 63) <= v < (1 << 63) else None


def _as_str(x: Any) -> str:
    if isinstance(x, bytes):
        return x.decode("utf-8", "replace")
    if isinstance(x, (np.generic,)):
        x = x.item()
    return str(x)


def _names(names: Iterable[str]) -> str:
    return ", ".join(repr(n) for n in sorted(names))


def _examples(values: Sequence[Any], k: int = 5) -> str:
    shown = ", ".join(repr(v) for v in list(values)[:k])
    return shown + (", ..." if len(values) > k else "")


class _Checker:
    """Validates one model's arrays; every error names ``where``."""

    def __init__(self, where: str):
        self.where = where

    def fail(self, msg: str) -> ModelFormatError:
        if len(msg) > _MAX_MESSAGE:  # values quoted from a hostile file stay short
            msg = msg[:_MAX_MESSAGE] + " ..."
        return ModelFormatError(f"{self.where}: {msg}")

    # -- scalars and JSON ----------------------------------------------
    def string_scalar(self, name: str, a: np.ndarray) -> str:
        self.member(name, _Member("str"), a.dtype, a.shape)
        return str(a[()])

    def json_obj(self, name: str, a: np.ndarray) -> Dict[str, Any]:
        text = self.string_scalar(name, a)

        def bad_constant(c: str) -> Any:
            raise ValueError(f"{c} is not allowed")

        try:
            obj = json.loads(text, parse_constant=bad_constant)
        except ValueError as e:
            raise self.fail(f"'{name}' is not valid JSON ({e})") from None
        except RecursionError:                  # e.g. "[" * 5000: the decoder's own limit
            raise self.fail(f"'{name}' is not valid JSON (nested too deeply)") from None
        if not isinstance(obj, dict):
            raise self.fail(f"'{name}' must be a JSON object, got {type(obj).__name__}")
        return obj

    @staticmethod
    def _is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    @staticmethod
    def _is_num(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    def config(self, cfg: Dict[str, Any]) -> Tuple[int, int, List[int], int, bool]:
        missing = [k for k in _REQUIRED_CONFIG if k not in cfg]
        if missing:
            raise self.fail(f"config is missing key(s) {_names(missing)}")
        for k in ("n_items", "e", "L", "d"):
            if not self._is_int(cfg[k]) or cfg[k] < 1:
                raise self.fail(f"config {k} must be a positive integer, got {cfg[k]!r}")
        # bounds first: the config sizes every later check (and what a file
        # may make us allocate)
        for k, hi in (("n_items", MAX_ITEMS), ("e", MAX_DIM), ("d", MAX_DIM),
                      ("L", MAX_LAYERS)):
            if cfg[k] > hi:
                raise self.fail(f"config {k}={cfg[k]} is beyond what deeprec-edge reads (at "
                                f"most {hi})")
        L = cfg["L"]
        H = cfg["H"]
        if self._is_int(H) and 1 <= H <= MAX_DIM:
            hs = [H] * L
        elif (isinstance(H, list) and len(H) == L
              and all(self._is_int(h) and 1 <= h <= MAX_DIM for h in H)):
            hs = list(H)
        else:
            raise self.fail(f"config H must be a positive integer or a list of L={L} positive "
                            f"integers (each at most {MAX_DIM}), got {H!r}")
        if cfg["activation"] not in ACTIVATIONS:
            raise self.fail(f"config activation must be one of {list(ACTIVATIONS)}, got "
                            f"{cfg['activation']!r}")
        for k in ("tied", "carry_state"):
            if not isinstance(cfg[k], bool):
                raise self.fail(f"config {k} must be true or false, got {cfg[k]!r}")
        if cfg["tied"] and cfg["e"] != cfg["d"]:
            raise self.fail(f"config says tied=true but e={cfg['e']} != d={cfg['d']} "
                            f"(tied embeddings need e == d)")
        gap = cfg.get("session_gap_seconds", DEFAULT_SESSION_GAP_SECONDS)
        if not self._is_num(gap) or gap <= 0:
            raise self.fail(f"config session_gap_seconds must be a positive number, got {gap!r}")
        flags = cfg.get("flags", [])
        if not isinstance(flags, list) or not all(isinstance(f, str) for f in flags):
            raise self.fail(f"config flags must be a list of strings, got {flags!r}")
        for f in flags:
            if f in SUPPORTED_FLAGS:
                continue
            if f in RESERVED_FLAGS:
                raise self.fail(f"flag {f!r} ({RESERVED_FLAGS[f]}) is not supported by this "
                                f"version of deeprec-edge; use a newer deeprec-edge")
            raise self.fail(f"unknown flag {f!r} in config flags (this version knows "
                            f"{sorted(SUPPORTED_FLAGS | set(RESERVED_FLAGS))} and supports "
                            f"{sorted(SUPPORTED_FLAGS) or 'none'})")
        storage = cfg.get("storage", {})
        if not isinstance(storage, dict):
            raise self.fail(f"config storage must be an object (array name -> storage), got "
                            f"{storage!r}")
        for name, st in storage.items():
            try:
                parse_storage(st)
            except ValueError as e:
                raise self.fail(f"config storage of '{name}': {e}") from None
        want = _storage_flags(storage)
        have = set(flags) & SUPPORTED_FLAGS
        if have != want:
            raise self.fail(f"config flags {sorted(have)} do not match the config storage "
                            f"(which needs {sorted(want)}: a flag for every compressed dtype "
                            f"in use, 'pruned' for sparse storage)")
        rp = cfg.get("repeat")
        if rp is not None:
            if not isinstance(rp, dict):
                raise self.fail(f"config repeat must be an object, got {rp!r}")
            feats = rp.get("features")
            if feats != list(REPEAT_FEATURES):
                raise self.fail(f"config repeat features are {feats!r}; this version of "
                                f"deeprec-edge scores with {list(REPEAT_FEATURES)} (a newer "
                                f"file? upgrade deeprec-edge)")
            mem = rp.get("memory", DEFAULT_MEMORY)
            if not self._is_int(mem) or not 1 <= mem <= MAX_REPEAT_MEMORY:
                raise self.fail(f"config repeat memory must be an integer in [1, "
                                f"{MAX_REPEAT_MEMORY}], got {mem!r}")
            extra = sorted(set(rp) - {"features", "memory", "calibration"})
            if extra:
                raise self.fail(f"config repeat has unknown key(s) {_names(extra)}")
        if "finetune" in cfg:
            try:
                FinetuneRecipe.from_dict(cfg["finetune"])
            except ValueError as e:
                raise self.fail(f"config finetune: {e}") from None
        for k, ok, what in (("loss", lambda v: isinstance(v, str), "a string"),
                            ("alpha", self._is_num, "a number"),
                            ("created", lambda v: isinstance(v, str), "a string")):
            if k in cfg and not ok(cfg[k]):
                raise self.fail(f"config {k} must be {what}, got {cfg[k]!r}")
        names = set(_matrix_shapes(cfg["n_items"], cfg["e"], hs, cfg["d"], cfg["tied"]))
        odd = sorted(set(storage) - names)
        if odd:
            raise self.fail(f"config storage names {_names_shown(odd)}, which are not weight "
                            f"matrices of this model (those are {_names_shown(names)})")
        return cfg["n_items"], cfg["e"], hs, cfg["d"], cfg["tied"]

    def personal(self, p: Dict[str, Any]) -> None:
        missing = [k for k in _REQUIRED_PERSONAL if k not in p]
        if missing:
            raise self.fail(f"personal record is missing key(s) {_names(missing)}")
        # required keys are present (above); the optional ones are checked when present
        for k in ("base_fingerprint", "parent_fingerprint"):
            fp = p.get(k)
            if (k in p) and not (isinstance(fp, str) and re.fullmatch(r"[0-9a-f]{64}", fp)):
                raise self.fail(f"personal {k} must be 64 lowercase hex digits (sha256), "
                                f"got {fp!r}")
        for k in ("clicks_used", "epochs", "finetunes", "clicks_used_total",
                  "last_timestamp_clicks"):
            if k in p and (not self._is_int(p[k]) or p[k] < 0):
                raise self.fail(f"personal {k} must be a non-negative integer, got {p[k]!r}")
        if not self._is_int(p["seed"]):
            raise self.fail(f"personal seed must be an integer, got {p['seed']!r}")
        ts = p["last_timestamp"]
        if ts is not None and (not self._is_num(ts) or not abs(ts) <= _MAX_SECONDS):
            raise self.fail(f"personal last_timestamp must be unix seconds (at most "
                            f"{_MAX_SECONDS:g} in magnitude, as histories are read) or null, "
                            f"got {ts!r}")
        if not isinstance(p["created"], str):
            raise self.fail(f"personal created must be a string, got {p['created']!r}")

    # -- arrays --------------------------------------------------------
    def finite(self, name: str, a: np.ndarray) -> None:
        flat = a.reshape(-1)
        step = 1 << 20
        for i in range(0, flat.shape[0], step):
            if not np.isfinite(flat[i:i + step]).all():
                n_nan = int(np.isnan(flat).sum())
                n_inf = int(np.isinf(flat).sum())
                parts = []
                if n_nan:
                    parts.append(f"{n_nan} NaN")
                if n_inf:
                    parts.append(f"{n_inf} infinite")
                raise self.fail(f"array '{name}' has {' and '.join(parts)} value(s) "
                                f"(of {flat.shape[0]})")

    def member(self, name: str, m: "_Member", dtype: np.dtype, shape: Tuple[int, ...]) -> None:
        """Check an array's dtype and shape against its entry of the member
        table -- from the array, or from its .npy header before its data is
        read (load_model)."""
        getattr(self, f"_kind_{m.kind}")(name, m, np.dtype(dtype), tuple(shape))

    def _kind_str(self, name: str, m: "_Member", dt: np.dtype, shape: Tuple[int, ...]) -> None:
        if dt.kind != "U" or shape != ():
            raise self.fail(f"array '{name}' must be a 0-d unicode string, got dtype "
                            f"{dt} with shape {shape}")
        if dt.itemsize // 4 > MAX_JSON_CHARS:
            raise self.fail(f"array '{name}' is a string of {dt.itemsize // 4} characters "
                            f"(at most {MAX_JSON_CHARS})")

    def _kind_int(self, name: str, m: "_Member", dt: np.dtype, shape: Tuple[int, ...]) -> None:
        if shape != () or dt.kind not in "iu":
            raise self.fail(f"array '{name}' must be a 0-d integer, got dtype {dt} with shape "
                            f"{shape}")

    def _kind_f32(self, name: str, m: "_Member", dt: np.dtype, shape: Tuple[int, ...]) -> None:
        if dt == np.float16 and m.dtype == "float16":   # a bias beside compressed matrices
            dt = np.dtype(np.float32)
        if dt == np.float16:
            raise self.fail(f"array '{name}' is float16, expected float32 (only the weight "
                            f"matrices E, O, gru*.W_ih, gru*.W_hh and head.W may be stored "
                            f"compressed, each listed in the config's 'storage')")
        if dt.kind != "f" or dt.itemsize != 4:
            raise self.fail(f"array '{name}' has dtype {dt.name}, expected float32")
        if shape != m.shape:
            raise self.fail(f"array '{name}' has shape {shape}, expected {m.shape} {m.desc}")

    def _kind_arr(self, name: str, m: "_Member", dt: np.dtype, shape: Tuple[int, ...]) -> None:
        """A compressed matrix's array: exactly ``m.dtype`` (or one of
        ``"a|b"``) and ``m.shape``."""
        if dt.newbyteorder("=") not in [np.dtype(x).newbyteorder("=")
                                        for x in m.dtype.split("|")]:
            raise self.fail(f"array '{name}' has dtype {dt.name}, expected "
                            f"{m.dtype.replace('|', ' or ')} ({m.desc.split(';')[0]})")
        if shape != m.shape:
            raise self.fail(f"array '{name}' has shape {shape}, expected {m.shape} {m.desc}")

    def _kind_vals(self, name: str, m: "_Member", dt: np.dtype, shape: Tuple[int, ...]) -> None:
        """The nonzero values of a sparse matrix: 1-d ``m.dtype``, at most
        ``m.shape[0]`` of them (the exact count comes from the mask)."""
        if dt.newbyteorder("=") != np.dtype(m.dtype).newbyteorder("="):
            raise self.fail(f"array '{name}' has dtype {dt.name}, expected {m.dtype} "
                            f"({m.desc.split(';')[0]})")
        if len(shape) != 1 or shape[0] > m.shape[0]:
            raise self.fail(f"array '{name}' has shape {shape}, expected 1-d with at most "
                            f"{m.shape[0]} values {m.desc}")

    def _kind_ids(self, name: str, m: "_Member", dt: np.dtype, shape: Tuple[int, ...]) -> None:
        if dt.kind not in "iuU":
            raise self.fail(f"array '{name}' has dtype {dt}, expected int64 or a unicode string "
                            f"array")
        if dt.kind == "U" and dt.itemsize // 4 > MAX_ID_CHARS:
            raise self.fail(f"array '{name}' holds ids of {dt.itemsize // 4} characters (at "
                            f"most {MAX_ID_CHARS})")
        if len(shape) != 1:
            raise self.fail(f"array '{name}' must be 1-d, got shape {shape}")
        if shape != m.shape:
            raise self.fail(f"array '{name}' has {shape[0]} ids, expected n_items={m.shape[0]} "
                            f"(config)")

    def _kind_counts(self, name: str, m: "_Member", dt: np.dtype,
                     shape: Tuple[int, ...]) -> None:
        if dt == np.float16:
            raise self.fail(f"array '{name}' is float16, expected float32 or float64")
        if dt.kind not in "iuf":
            raise self.fail(f"array '{name}' has dtype {dt}, expected float32 or float64 "
                            f"(counts or probabilities)")
        if shape != m.shape:
            raise self.fail(f"array '{name}' has shape {shape}, expected {m.shape} {m.desc}")

    def _kind_index(self, name: str, m: "_Member", dt: np.dtype,
                    shape: Tuple[int, ...]) -> None:
        if dt.kind not in "iu" or len(shape) != 1:
            raise self.fail(f"array '{name}' must be a 1-d int64 array, got dtype {dt} with "
                            f"shape {shape}")
        if shape[0] > m.shape[0]:
            raise self.fail(f"array '{name}' has {shape[0]} entries, more than n_items="
                            f"{m.shape[0]}")

    def float32(self, name: str, a: np.ndarray, m: "_Member") -> np.ndarray:
        self.member(name, m, a.dtype, a.shape)
        a = _native(a, np.float32)
        self.finite(name, a)
        return a

    def item_ids(self, a: np.ndarray, m: "_Member") -> np.ndarray:
        self.member("item_ids", m, a.dtype, a.shape)
        if a.dtype.kind in "iu":
            if a.dtype.kind == "u" and a.dtype.itemsize == 8 and a.size and \
                    int(a.max()) >= (1 << 63):
                raise self.fail("array 'item_ids' has ids >= 2**63 (must fit int64)")
            a = _native(a, np.int64)
        else:
            a = _native(a, a.dtype)
        n = a.shape[0]
        if n > 1:
            s = np.sort(a, kind="stable")
            dup_mask = s[1:] == s[:-1]
            if dup_mask.any():
                dups = np.unique(s[1:][dup_mask])
                raise self.fail(f"array 'item_ids' has {dups.shape[0]} duplicate id(s) "
                                f"(e.g. {_examples(dups.tolist())}); item ids must be unique")
        return a


def _native(a: np.ndarray, dtype: Any) -> np.ndarray:
    """C-contiguous, native byte order, the given dtype."""
    dt = np.dtype(dtype)
    if not dt.isnative:
        dt = dt.newbyteorder("=")
    return np.ascontiguousarray(a, dtype=dt)


# --------------------------------------------------------------------------
# the member table: every array a model file may hold
# --------------------------------------------------------------------------


class _Member(NamedTuple):
    """One array of the file: ``kind`` (how its dtype is checked: ``str``
    0-d unicode, ``int`` 0-d integer, ``f32`` float32 (or float16 when
    ``dtype`` is ``"float16"``, read as float32), ``ids`` int64 or unicode
    ids, ``counts`` numbers, ``index`` int indices at most ``shape[0]`` of
    them, ``arr`` exactly ``dtype`` (or one of ``"float32|float16"``),
    ``vals`` 1-d ``dtype`` of at most ``shape[0]`` values), its ``shape``
    given the config, ``desc`` (how the shape follows from the config, for
    messages), ``required``, ``dtype``."""

    kind: str
    shape: Tuple[int, ...] = ()
    desc: str = ""
    required: bool = True
    dtype: str = ""


#: The record arrays read before the table can be built (from the config).
_RECORDS = {"format": _Member("str"), "version": _Member("int"), "config": _Member("str"),
            "personal": _Member("str"), "delta": _Member("str")}


def _matrix_shapes(n: int, e: int, hs: List[int], d: int, tied: bool
                   ) -> Dict[str, Tuple[Tuple[int, int], str]]:
    """The weight matrices (the arrays a file may store compressed): name ->
    (shape, how the shape follows from the config), in file order."""
    t: Dict[str, Tuple[Tuple[int, int], str]] = {
        "E": ((n, e), f"= (n_items, e) with n_items={n}, e={e}")}
    inp, inp_name = e, "e"
    for l, H in enumerate(hs):
        sym = f"with H={H}, {inp_name}={inp}" if inp_name != "H" else f"with H={H}, H_prev={inp}"
        t[f"gru{l}.W_ih"] = ((3 * H, inp), f"= (3*H, {'e' if l == 0 else 'H_prev'}) {sym}")
        t[f"gru{l}.W_hh"] = ((3 * H, H), f"= (3*H, H) with H={H}")
        inp, inp_name = H, "H"
    t["head.W"] = ((d, hs[-1]), f"= (d, H) with d={d}, H={hs[-1]}")
    if not tied:
        t["O"] = ((n, d), f"= (n_items, d) with n_items={n}, d={d}")
    return t


def _storage_flags(storage: Mapping[str, str]) -> set:
    """The flags a storage record needs: every compressed dtype in use, and
    ``pruned`` when a matrix is sparse."""
    flags = set()
    for st in storage.values():
        dt, sparse = parse_storage(st)
        if dt != "float32":
            flags.add(dt)
        if sparse:
            flags.add("pruned")
    return flags


_FILE_DTYPE = {"float32": "float32", "float16": "float16", "int8": "int8", "int4": "uint8",
               "int3": "uint8"}


def _has_storage(storage: Mapping[str, str]) -> bool:
    """A storage record is needed: some matrix is compressed or sparse."""
    return any(st != "float32" for st in storage.values())


def _matrix_members(t: Dict[str, _Member], name: str, shape: Tuple[int, int], desc: str,
                    storage: str) -> None:
    """The file arrays of one weight matrix in ``storage`` (quant.py)."""
    dt, sparse = parse_storage(storage)
    R, C = shape
    if dt == "float32" and not sparse:
        t[name] = _Member("f32", shape, desc)
        return
    what = f"{storage}; matrix {desc}"
    if sparse:
        t[f"{name}.mask"] = _Member("arr", (R, (C + 7) // 8),
                                    f"= (rows, ceil(columns/8)), the {storage} mask of a "
                                    f"matrix {desc}", dtype="uint8")
        n_max = (R * C + 1) // 2 if dt in _NIBBLE else R * C
        t[name] = _Member("vals", (n_max,), f"({what})", dtype=_FILE_DTYPE[dt])
    else:
        cols = (C + 1) // 2 if dt in _NIBBLE else C
        t[name] = _Member("arr", (R, cols), f"({what}" + (", two values per byte)" if
                                                           dt in _NIBBLE else ")"),
                          dtype=_FILE_DTYPE[dt])
    if dt in ("int8",) + _NIBBLE:
        t[f"{name}.scale"] = _Member("arr", (R,), f"= (rows,), the per-row scales of a "
                                                  f"matrix {desc}", dtype="float32|float16")


def _member_table(n: int, e: int, hs: List[int], d: int, tied: bool, personal: bool,
                  n_biases: Optional[int] = None, repeat: bool = False,
                  storage: Optional[Mapping[str, str]] = None) -> Dict[str, _Member]:
    """Every array of a model file with this config, in file order: what
    its dtype and shape must be.  A new array of the format is one entry
    here (and, if its values need checks, a few lines in validate_arrays).
    ``n_biases``: length of ``personal.bias_index`` once known; ``storage``:
    the config's storage record (a compressed matrix is several arrays,
    :func:`_matrix_members`)."""
    storage = storage or {}
    mats = _matrix_shapes(n, e, hs, d, tied)
    # biases may be float16 beside compressed matrices (Model._bias_file)
    half = "float16" if _has_storage(storage) else ""
    t: Dict[str, _Member] = {k: _RECORDS[k] for k in ("format", "version", "config")}
    t["item_ids"] = _Member("ids", (n,))
    _matrix_members(t, "E", *mats["E"], storage.get("E", "float32"))
    for l, H in enumerate(hs):
        for part in ("W_ih", "W_hh"):
            name = f"gru{l}.{part}"
            _matrix_members(t, name, *mats[name], storage.get(name, "float32"))
        t[f"gru{l}.b_ih"] = _Member("f32", (3 * H,), f"= (3*H,) with H={H}", dtype=half)
        t[f"gru{l}.b_hh"] = _Member("f32", (3 * H,), f"= (3*H,) with H={H}", dtype=half)
    _matrix_members(t, "head.W", *mats["head.W"], storage.get("head.W", "float32"))
    t["head.b"] = _Member("f32", (d,), f"= (d,) with d={d}", dtype=half)
    if not tied:
        _matrix_members(t, "O", *mats["O"], storage.get("O", "float32"))
    t["b"] = _Member("f32", (n,), f"= (n_items,) with n_items={n}", dtype=half)
    t["popularity"] = _Member("counts", (n,), "= (n_items,)")
    if personal:
        t["personal"] = _RECORDS["personal"]
        t["personal.bias_index"] = _Member("index", (n,), required=False)
        t["personal.bias"] = _Member("f32", (n if n_biases is None else n_biases,),
                                     "= (len(personal.bias_index),)", required=False)
    if repeat:
        t["repeat.scale"] = _Member("f32", (), "= () (a scalar)")
        t["repeat.w"] = _Member("f32", (len(REPEAT_FEATURES),),
                                f"= ({len(REPEAT_FEATURES)},), one weight per repeat feature")
    return t


def _names_shown(names: Sequence[str], k: int = 12) -> str:
    """At most ``k`` names, so a message stays one short line."""
    names = sorted(names)
    more = f" and {len(names) - k} more" if len(names) > k else ""
    return _names(names[:k]) + more


def _check_head(ck: _Checker, names: Iterable[str],
                get: Any) -> Tuple[Dict[str, Any], Tuple[int, int, List[int], int, bool], bool]:
    """Format tag, version and config (``get(name)`` gives an array): returns
    (config, (n, e, hs, d, tied), is_personal)."""
    names = set(names)
    if "format" not in names:
        raise ck.fail(f"not a deeprec-edge model file: it has no 'format' array (it holds "
                      f"{_names_shown(names) or 'no arrays'})")
    tag = str(get("format")[()])
    if tag != FORMAT_TAG:
        raise ck.fail(f"format tag is {tag!r}, expected {FORMAT_TAG!r}: not a deeprec-edge "
                      f"model file")
    if "version" not in names:
        raise ck.fail("missing array 'version'")
    version = int(get("version")[()])
    if version > FORMAT_VERSION:
        raise ck.fail(f"model file version {version} is newer than this deeprec-edge supports "
                      f"(version {FORMAT_VERSION}); upgrade deeprec-edge to read it")
    if version < 1:
        raise ck.fail(f"model file version {version} is invalid (versions start at 1)")
    if "config" not in names:
        raise ck.fail("missing array 'config'")
    cfg = ck.json_obj("config", get("config"))
    return cfg, ck.config(cfg), "personal" in names


def _check_names(ck: _Checker, names: Iterable[str], table: Mapping[str, _Member],
                 L: int, tied: bool, is_personal: bool, has_repeat: bool = False,
                 partial: bool = False) -> None:
    """Exactly the table's arrays (``partial``: a personal delta, which may
    leave out what its global model holds)."""
    names = set(names)
    missing = [] if partial else [k for k, m in table.items() if m.required and k not in names]
    if missing:
        what = f"L={L}, tied={str(tied).lower()}" + (", repeat component" if has_repeat else "")
        raise ck.fail(f"missing array(s) {_names_shown(missing)} (config: {what})")
    extra = sorted(names - set(table))
    if extra:
        hints = []
        if "O" in extra and tied:
            hints.append("'O' is present but config says tied=true (the output table is E)")
        if any(x.startswith("gru") and not x.endswith((".scale", ".mask")) for x in extra):
            hints.append(f"config says L={L} (layers gru0..gru{L - 1})")
        if any(x.startswith("personal.") for x in extra) and not is_personal:
            hints.append("personal biases need the 'personal' record")
        if any(x.startswith("repeat.") for x in extra) and not has_repeat:
            hints.append("repeat arrays need the config's 'repeat' record")
        if any(x.endswith((".scale", ".mask")) for x in extra):
            hints.append("the arrays of a compressed matrix need it listed in the config's "
                         "'storage'")
        hint = f" ({'; '.join(hints)})" if hints else ""
        raise ck.fail(f"unexpected array(s) {_names_shown(extra)}{hint}")
    has_i, has_b = "personal.bias_index" in names, "personal.bias" in names
    if has_i != has_b:
        raise ck.fail("missing array " + ("'personal.bias'" if has_i else
                                          "'personal.bias_index'") +
                      " ('personal.bias_index' and 'personal.bias' come together)")


def validate_arrays(arrays: Mapping[str, np.ndarray], where: str = "model") -> Model:
    """Validate a model's arrays (as stored in the file, by name) and build
    the :class:`Model`.  Raises :class:`ModelFormatError` whose message starts
    with ``where`` and names exactly what is wrong: wrong format tag,
    unsupported version, invalid or incomplete config (or one beyond the
    bounds :data:`MAX_ITEMS`, :data:`MAX_DIM`, :data:`MAX_LAYERS`), missing
    or unexpected arrays, wrong dtype, wrong shape (expected vs got),
    NaN/Inf (which array, how many), duplicate item ids, bad personal
    record."""
    ck = _Checker(where)
    arrays = {k: np.asarray(v) for k, v in arrays.items()}

    def get(name: str) -> np.ndarray:
        a = arrays[name]
        ck.member(name, _RECORDS[name], a.dtype, a.shape)
        return a

    cfg, (n, e, hs, d, tied), is_personal = _check_head(ck, arrays, get)
    has_repeat = cfg.get("repeat") is not None
    storage = cfg.get("storage", {})
    version = int(arrays["version"][()])
    if version < 2 and (has_repeat or "finetune" in cfg or storage):
        what = ("repeat component" if has_repeat else "fine-tuning recipe" if "finetune" in cfg
                else "compressed matrices (config storage)")
        raise ck.fail(f"model file version {version} cannot hold a {what} "
                      f"(version 2 or newer)")
    bi = arrays.get("personal.bias_index")
    n_biases = bi.shape[0] if bi is not None and bi.ndim == 1 else None
    table = _member_table(n, e, hs, d, tied, is_personal, n_biases, has_repeat, storage)
    _check_names(ck, arrays, table, len(hs), tied, is_personal, has_repeat)
    for name, m in table.items():   # every dtype and shape before any value
        if name in arrays:
            ck.member(name, m, arrays[name].dtype, arrays[name].shape)

    item_ids = ck.item_ids(arrays["item_ids"], table["item_ids"])
    f32 = {name: ck.float32(name, arrays[name], m) for name, m in table.items()
           if m.kind == "f32" and name in arrays}
    mats: Dict[str, Any] = {}
    for name, (shape, _) in _matrix_shapes(n, e, hs, d, tied).items():
        st = storage.get(name, "float32")
        if st == "float32":
            mats[name] = f32[name]
            continue
        try:
            mats[name] = _decode(name, arrays, st, shape)
        except ValueError as err:
            raise ck.fail(str(err)) from None
        if not isinstance(mats[name], Compressed):
            ck.finite(name, mats[name])
    layers = [GRULayer(mats[f"gru{l}.W_ih"], mats[f"gru{l}.W_hh"], f32[f"gru{l}.b_ih"],
                       f32[f"gru{l}.b_hh"]) for l in range(len(hs))]

    pop = _native(arrays["popularity"], arrays["popularity"].dtype)
    if pop.dtype.kind == "f":
        ck.finite("popularity", pop)
    n_neg = int((pop < 0).sum())
    if n_neg:
        raise ck.fail(f"array 'popularity' has {n_neg} negative value(s); popularity must be "
                      f">= 0")

    personal = None
    bias_index = None
    if is_personal:
        personal = ck.json_obj("personal", get("personal"))
        ck.personal(personal)
        if bi is not None:
            bias_index = _native(bi, np.int64)
            k = bias_index.shape[0]
            if k and (bias_index.min() < 0 or bias_index.max() >= n):
                raise ck.fail(f"array 'personal.bias_index' has indices outside 0..{n - 1}")
            if np.unique(bias_index).shape[0] != k:
                raise ck.fail("array 'personal.bias_index' has duplicate indices")

    r_scale = None
    if has_repeat:
        r_scale = float(np.asarray(f32["repeat.scale"]).reshape(-1)[0])
        if not r_scale > 0:
            raise ck.fail(f"array 'repeat.scale' must be > 0, got {r_scale}")
    return Model(config=cfg, item_ids=item_ids, E=mats["E"], layers=layers, W_p=mats["head.W"],
                 b_p=f32["head.b"], O=mats.get("O"), b=f32["b"], popularity=pop,
                 personal=personal, personal_bias_index=bias_index,
                 personal_bias=f32.get("personal.bias"), repeat_scale=r_scale,
                 repeat_w=f32.get("repeat.w"))


# --------------------------------------------------------------------------
# load / save
# --------------------------------------------------------------------------


def load_model(path: Any, base: Optional[Model] = None) -> Model:
    """Load and validate a model file (``allow_pickle=False``).

    A **personal delta** (written by ``save_model(..., delta_of=global)``:
    only what differs from its global model) is loaded against ``base``,
    the global model it was fine-tuned from: without ``base``, or with a
    model of another fingerprint, :class:`ModelFormatError` says which
    global model it needs.  ``base`` is ignored for a complete file.

    Raises :class:`ModelFormatError` (a :class:`ValueError`) naming the file
    and the problem when it is not an npz archive, is truncated or corrupt,
    has the wrong format tag, a newer version, a missing or unexpected
    array, a wrong dtype or shape, NaN/Inf values, duplicate item ids or an
    invalid config.  A missing file raises :class:`FileNotFoundError`.

    Bounded on any input: the zip structure, the config (against
    :data:`MAX_ITEMS`, :data:`MAX_DIM`, :data:`MAX_LAYERS`) and every
    array's ``.npy`` header (dtype and shape against the config) are checked
    before any array data is read (:mod:`deeprec_edge._npz`), so a hostile or
    broken file is rejected in milliseconds and megabytes.
    """
    p = os.fspath(path)
    # the file is opened here, not by np.load, so it is closed on every error
    with open(p, "rb") as f:  # FileNotFoundError / IsADirectoryError as they are
        arrays, delta, table = _read_npz(f, p)
    if delta is not None:
        arrays = _merge_delta(arrays, delta, table, base, p)
    return validate_arrays(arrays, where=p)


#: The ``format`` of a personal delta's ``delta`` record.
DELTA_TAG = "deeprec-edge/personal-delta"


def _same_array(a: np.ndarray, b: np.ndarray, name: str = "") -> bool:
    """Equal as the fingerprint sees them: for floats also the sign of zero
    (np.array_equal calls -0.0 and 0.0 equal; their bytes differ)."""
    a, b = np.asarray(a), np.asarray(b)
    if _value_hashed(name) and a.dtype.kind == b.dtype.kind == "f":
        a, b = a.astype(np.float32), b.astype(np.float32)
    elif not (a.dtype.kind == b.dtype.kind and a.dtype.itemsize == b.dtype.itemsize):
        return False
    if a.shape != b.shape or not np.array_equal(a, b):
        return False
    return a.dtype.kind != "f" or np.array_equal(np.signbit(a), np.signbit(b))


def delta_arrays(model: Model, base: Model) -> Dict[str, np.ndarray]:
    """The arrays of a personal delta of ``model`` against ``base``, its
    global model: the records (format, config, personal), every array that
    differs from ``base``'s, and the ``delta`` record (the base's
    fingerprint and the model's own version).  Raises ValueError when
    ``model`` is not personal, ``base`` is personal, or ``model`` was not
    fine-tuned from ``base``."""
    if model.personal is None:
        raise ValueError("only a personal model can be written as a delta of its global model")
    if base.is_personal:
        raise ValueError("the base of a personal delta must be the global model (this base is "
                         "itself personal)")
    fp, want = base.fingerprint(), model.personal.get("base_fingerprint")
    if fp != want:
        raise ValueError(f"the personal model was fine-tuned from the global model {want}, not "
                         f"from this base ({fp}); a delta is written against its own global "
                         f"model")
    full, ref = model.to_arrays(), base.to_arrays()
    out = {k: v for k, v in full.items()
           if k in ("format", "config", "personal") or k not in ref or
           not _same_array(v, ref[k], k)}
    out["version"] = np.array(2, np.int64)
    out["delta"] = np.array(json.dumps({"format": DELTA_TAG, "base_fingerprint": fp,
                                        "version": int(full["version"][()])}))
    return out


def _parse_delta(ck: "_Checker", a: np.ndarray) -> Dict[str, Any]:
    rec = ck.json_obj("delta", a)
    if rec.get("format") != DELTA_TAG:
        raise ck.fail(f"'delta' record has format {rec.get('format')!r}, expected {DELTA_TAG!r}")
    fp = rec.get("base_fingerprint")
    if not (isinstance(fp, str) and re.fullmatch(r"[0-9a-f]{64}", fp)):
        raise ck.fail(f"'delta' record: base_fingerprint must be 64 lowercase hex digits, got "
                      f"{fp!r}")
    v = rec.get("version")
    if v not in (1, 2):
        raise ck.fail(f"'delta' record: version must be 1 or 2, got {v!r}")
    return rec


def _merge_delta(arrays: Dict[str, np.ndarray], delta: Dict[str, Any], table: Iterable[str],
                 base: Optional[Model], p: str) -> Dict[str, np.ndarray]:
    """A delta's arrays completed from its global model (every array of the
    delta's member table it does not hold)."""
    fp = delta["base_fingerprint"]
    if base is None:
        raise ModelFormatError(f"{p}: a personal delta (only what differs from its global model, "
                               f"fingerprint {fp[:16]}...): load it with that global model "
                               f"(load_model(path, base=global_model), or --base WEIGHTS)")
    have = base.fingerprint()
    if have != fp:
        raise ModelFormatError(f"{p}: a personal delta of the global model {fp[:16]}..., but the "
                               f"base given is another model ({have[:16]}...); load it with the "
                               f"global model it was fine-tuned from")
    ref = base.to_arrays()
    merged = {k: v for k, v in arrays.items() if k != "delta"}
    for name in table:
        if name not in merged and name in ref:
            merged[name] = ref[name]
    for name, a in ref.items():
        if _is_bias(name) and merged.get(name) is a:
            # the base's biases, float16 beside its compressed matrices, are
            # float32 values for a personal model whose matrices may all be float32
            merged[name] = np.asarray(a, np.float32)
    merged["version"] = np.array(delta["version"], np.int64)
    return merged


def _read_npz(f: Any, p: str) -> Tuple[Dict[str, np.ndarray], Optional[Dict[str, Any]], List[str]]:
    """The arrays of a model file (every header checked against the member
    table before any data), the ``delta`` record of a personal delta (None
    for a complete file) and the member table's names."""
    head = f.read(6)
    if not head:
        raise ModelFormatError(f"{p} is empty (0 bytes): not a deeprec-edge model file")
    if head.startswith(b"\x93NUMPY"):
        raise ModelFormatError(f"{p} is a single .npy array, not a deeprec-edge model file "
                               f"(an npz archive)")
    if not head.startswith(_ZIP_MAGIC):
        raise ModelFormatError(f"{p} is not a deeprec-edge model file (not an npz archive)")

    def fail(msg: str) -> ModelFormatError:
        return ModelFormatError(f"{p} {msg}" if msg.startswith("is ") else f"{p}: {msg}")

    ck = _Checker(p)
    with NpzArchive(f, fail) as z:
        names = set(z.members)
        arrays: Dict[str, np.ndarray] = {}

        def get(name: str) -> np.ndarray:   # a record: header checked, then read
            h = z.header(name)
            ck.member(name, _RECORDS[name], h.dtype, h.shape)
            arrays[name] = z.read(name)
            return arrays[name]

        cfg, (n, e, hs, d, tied), is_personal = _check_head(ck, names, get)
        has_repeat = cfg.get("repeat") is not None
        delta = None
        if "delta" in names:
            delta = _parse_delta(ck, get("delta"))
            if not is_personal:
                raise ck.fail("a 'delta' record needs the 'personal' record (only personal "
                              "models are written as deltas)")
            if int(arrays["version"][()]) < 2:
                raise ck.fail("model file version 1 cannot hold a personal delta (version 2 "
                              "or newer)")
            names.discard("delta")
        n_biases = None
        if "personal.bias_index" in names:
            bh = z.header("personal.bias_index")
            n_biases = bh.shape[0] if len(bh.shape) == 1 else None
        table = _member_table(n, e, hs, d, tied, is_personal, n_biases, has_repeat,
                              cfg.get("storage"))
        _check_names(ck, names, table, len(hs), tied, is_personal, has_repeat,
                     partial=delta is not None)
        for name, m in table.items():       # every header before any data
            if name in names:
                h = z.header(name)
                ck.member(name, m, h.dtype, h.shape)
        _check_sparse_memory(ck, z, n, e, hs, d, tied, cfg.get("storage") or {})
        for name in table:
            if name in names and name not in arrays:
                arrays[name] = z.read(name)
    return arrays, delta, list(table)


#: In-memory bytes of decoding a model's sparse matrices, at most this many
#: times its file size (beyond ``_npz.SMALL_ARCHIVE``).
MAX_SPARSE_INFLATION = 1000


def _check_sparse_memory(ck: "_Checker", z: NpzArchive, n: int, e: int, hs: List[int], d: int,
                         tied: bool, storage: Mapping[str, str]) -> None:
    """A sparse matrix decodes to its dense size from a mask that deflates
    to almost nothing (an all-zero mask): count those dense bytes (and the
    decoder's bit and bool copies of the mask) before any data is read: at
    most :data:`MAX_SPARSE_INFLATION` times the file beyond
    :data:`_npz.SMALL_ARCHIVE` (a 99%-pruned int4 matrix decodes to ~600x
    its file bytes; an all-zero mask to ~10,000x)."""
    extra = 0
    for name, (shape, _) in _matrix_shapes(n, e, hs, d, tied).items():
        dt, sparse = parse_storage(storage.get(name, "float32"))
        if sparse:
            extra += shape[0] * shape[1] * ({"float32": 4, "float16": 2}.get(dt, 1) + 2)
    if not extra:
        return
    if extra > SMALL_ARCHIVE and extra > MAX_SPARSE_INFLATION * z.size:
        raise ck.fail(f"not a plausible model file: its sparse matrices decode to "
                      f"{extra / 2**20:,.0f} MiB from a file of {z.size:,} bytes (more than "
                      f"{MAX_SPARSE_INFLATION}x)")


def _write_arrays(f: Any, arrays: Mapping[str, np.ndarray], compressed: bool) -> None:
    if compressed:
        write_npz_deflated(f, arrays)
    else:
        np.savez(f, **arrays)


def save_model(model: Model, path: Any, *, compressed: bool = False,
               delta_of: Optional[Model] = None) -> None:
    """Validate ``model`` and write it to ``path`` atomically.

    ``delta_of``: write a personal model as a **delta** of its global model
    (:func:`delta_arrays`: the records and only the arrays that differ,
    plus the global model's fingerprint; always deflated: a few KB for the
    parameter-efficient parts), loaded with ``load_model(path,
    base=global_model)``.

    The file is written to a temporary file in the same directory, fsynced
    and renamed over ``path``; on any error the temporary file is removed
    and an existing ``path`` is left untouched.  An invalid model raises
    :class:`ModelFormatError` before anything is written; a missing or
    unwritable directory raises :class:`OSError` naming the path.
    ``compressed`` uses zip deflate (smaller, slower to load).
    """
    p = os.fspath(path)
    arrays = model.to_arrays()
    validate_arrays(arrays, where=f"{p} (not written)")
    if delta_of is not None:
        try:
            arrays = delta_arrays(model, delta_of)
        except ValueError as e:
            raise ModelFormatError(f"{p} (not written): {e}") from None
        compressed = True    # its records are most of it, and text deflates well
    atomic_write(p, lambda f: _write_arrays(f, arrays, compressed))


# --------------------------------------------------------------------------
# building models
# --------------------------------------------------------------------------


def model_from_params(params: Any, item_ids: Any, popularity: Any,
                      config: Optional[Mapping[str, Any]] = None, *,
                      repeat: Optional[RepeatSpec] = None,
                      recipe: Optional[FinetuneRecipe] = None) -> Model:
    """A global :class:`Model` from training-engine ``Params`` (or anything
    with ``E, layers, W_p, b_p, O, b_out, activation``).

    The shape keys of the config (n_items, e, L, H, d, activation, tied) are
    derived from the arrays; ``config`` adds the rest (carry_state defaults
    to False, session_gap_seconds to 3600, flags to [], created to now;
    loss, alpha, trained_on, ... are kept as given).  ``repeat`` adds the
    repeat component, ``recipe`` the device's fine-tuning recipe.  The
    result is validated.
    """
    layers = [GRULayer(*(_matrix(a) for a in layer)) for layer in params.layers]
    hs = [int(layer.W_hh.shape[1]) for layer in layers]
    E = _matrix(params.E)
    W_p = _matrix(params.W_p)
    cfg = dict(config or {})
    cfg.update(n_items=int(E.shape[0]), e=int(E.shape[1]), L=len(layers),
               H=hs[0] if len(set(hs)) == 1 else hs, d=int(W_p.shape[0]),
               activation=str(params.activation), tied=params.O is None)
    cfg.setdefault("carry_state", False)
    cfg.setdefault("session_gap_seconds", DEFAULT_SESSION_GAP_SECONDS)
    cfg.setdefault("flags", [])
    cfg.setdefault("created", _utc_now())
    if repeat is not None:
        rec = dict(cfg.get("repeat") or {})
        rec.update(features=list(REPEAT_FEATURES), memory=int(repeat.memory))
        cfg["repeat"] = rec
    if recipe is not None:
        cfg["finetune"] = recipe.to_dict()
    ids = np.asarray(item_ids)
    if ids.dtype.kind in "iu":
        ids = ids.astype(np.int64)
    elif ids.dtype.kind in "OS":
        ids = np.array([_as_str(x) for x in ids.tolist()], dtype=str)
    model = Model(config=json.loads(_dump_json(cfg, "config")), item_ids=ids, E=E,
                  layers=layers, W_p=W_p, b_p=np.ascontiguousarray(params.b_p, np.float32),
                  O=None if params.O is None else _matrix(params.O),
                  b=np.ascontiguousarray(params.b_out, np.float32),
                  popularity=np.asarray(popularity),
                  repeat_scale=None if repeat is None else float(np.float32(repeat.scale)),
                  repeat_w=None if repeat is None else repeat.weights.copy())
    model.validate()
    return model


def make_personal(base: Model, params: Any, *, clicks_used: int,
                  last_timestamp: Optional[float], seed: int, epochs: int,
                  bias_index: Optional[np.ndarray] = None, bias: Optional[np.ndarray] = None,
                  repeat_w: Optional[np.ndarray] = None, **extra: Any) -> Model:
    """A personal model: ``base`` with the last GRU layer and the head taken
    from the fine-tuned ``params`` (everything else is shared with ``base``,
    not copied -- it is frozen).

    The ``personal`` record gets ``base_fingerprint`` (the *global* model's
    fingerprint: ``base``'s own, or inherited when ``base`` is already
    personal), ``parent_fingerprint`` (``base``'s fingerprint), the
    fine-tuning metadata, ``finetunes`` (how many fine-tunes led here),
    ``clicks_used_total`` and any ``extra`` keys.  ``bias_index``/``bias``
    set personal output biases (dense indices); by default a personal base's
    biases are kept.  ``repeat_w`` sets personal repeat weights (a model
    with a repeat component; default: ``base``'s).
    """
    parent = base.fingerprint()
    prev = base.personal or {}
    record: Dict[str, Any] = dict(extra)
    record.update(
        base_fingerprint=prev.get("base_fingerprint", parent),
        parent_fingerprint=parent,
        clicks_used=int(clicks_used),
        clicks_used_total=int(prev.get("clicks_used_total", prev.get("clicks_used", 0)))
        + int(clicks_used),
        finetunes=int(prev.get("finetunes", 0)) + 1,
        last_timestamp=None if last_timestamp is None else float(last_timestamp),
        seed=int(seed),
        epochs=int(epochs),
        created=_utc_now(),
    )
    last = params.layers[-1]
    # a part the fine-tune left unchanged keeps the base's storage (a
    # compressed frozen matrix stays compressed; the trained ones are float32)
    layers = list(base.layers[:-1]) + [GRULayer(*(_unless_same(b, a) for b, a in
                                                   zip(base.layers[-1], last)))]
    if bias_index is None and bias is None:
        bias_index, bias = base.personal_bias_index, base.personal_bias
    elif bias_index is not None and bias is not None:
        bias_index = np.asarray(bias_index, np.int64)
        bias = np.ascontiguousarray(bias, np.float32)
    else:
        raise ValueError("bias_index and bias go together")
    if repeat_w is not None and base.repeat_w is None:
        raise ValueError("personal repeat weights need a model with a repeat component")
    r_w = base.repeat_w if repeat_w is None else np.ascontiguousarray(repeat_w, np.float32)
    model = Model(config=json.loads(_dump_json(base.config, "config")), item_ids=base.item_ids,
                  E=base.E, layers=layers, W_p=_unless_same(base.W_p, params.W_p),
                  b_p=np.ascontiguousarray(params.b_p, np.float32), O=base.O, b=base.b,
                  popularity=base.popularity, personal=json.loads(_dump_json(record,
                                                                             "personal")),
                  personal_bias_index=bias_index, personal_bias=bias,
                  repeat_scale=base.repeat_scale, repeat_w=r_w)
    model._lookup, model._id_dict = base._lookup, base._id_dict
    return model


#: Groups of weight matrices for :func:`compress_model`.
MATRIX_GROUPS = ("tables", "gru", "head")


def _group_of(name: str) -> str:
    return "tables" if name in ("E", "O") else "head" if name == "head.W" else "gru"


def compress_model(model: Model, storage: Mapping[str, str]) -> Model:
    """``model`` with weight matrices re-stored (:func:`deeprec_edge.quant.quantize`).

    ``storage`` maps a matrix name (``"E"``, ``"gru0.W_hh"``, ...) or a
    group (``"tables"``: E and O, ``"gru"``: every W_ih/W_hh, ``"head"``:
    head.W) to a storage dtype (``"float32"``, ``"float16"``, ``"int8"``,
    ``"int4"``, ``"int3"``); a name wins over its group, matrices not named
    keep their storage.  ``"bias": "float16"`` rounds the biases (``b``,
    ``head.b``, every ``b_ih``/``b_hh``) to float16 values, which a file with
    compressed matrices then stores as float16 (``"float32"`` or absent:
    unchanged).  Quantisation starts from the current values (a matrix already
    compressed in another dtype is re-quantised from its dequantised values).  Zeros stay
    zeros, so a pruned model stays pruned and its file stores it sparse.
    Biases, ids and records are shared, not copied.  Raises ValueError for
    an unknown name or storage.
    """
    from .quant import parse_storage, quantize, storage_of

    mats = model.matrices()
    storage = dict(storage)
    bias = storage.pop("bias", "float32")
    if bias not in ("float32", "float16"):
        raise ValueError(f"compress_model: the biases are stored float32 or float16, got "
                         f"{bias!r}")

    def biases(v: np.ndarray, what: str) -> np.ndarray:
        if bias != "float16":
            return v
        with np.errstate(over="ignore"):
            h = np.asarray(v, np.float32).astype(np.float16)
        if not np.isfinite(h).all():
            raise ValueError(f"compress_model: a bias ({what}) of magnitude >= 65520 does not "
                             f"fit float16")
        return h.astype(np.float32)
    for k, v in storage.items():
        if k not in mats and k not in MATRIX_GROUPS:
            raise ValueError(f"compress_model: {k!r} is neither a weight matrix of this model "
                             f"({', '.join(mats)}) nor a group ({', '.join(MATRIX_GROUPS)})")
        parse_storage(v)
    new = {}
    for name, value in mats.items():
        want = storage.get(name, storage.get(_group_of(name)))
        if want is None or parse_storage(want)[0] == storage_of(value):
            new[name] = value
            continue
        try:
            new[name] = quantize(value, want)
        except ValueError as e:
            raise ValueError(f"compress_model: {name}: {e}") from None
    out = Model(config=json.loads(_dump_json(model.config, "config")), item_ids=model.item_ids,
                E=new["E"], layers=[GRULayer(new[f"gru{l}.W_ih"], new[f"gru{l}.W_hh"],
                                             biases(layer.b_ih, f"gru{l}.b_ih"),
                                             biases(layer.b_hh, f"gru{l}.b_hh"))
                                    for l, layer in enumerate(model.layers)],
                W_p=new["head.W"], b_p=biases(model.b_p, "head.b"), O=new.get("O"),
                b=biases(model.b, "b"),
                popularity=model.popularity, personal=model.personal,
                personal_bias_index=model.personal_bias_index,
                personal_bias=model.personal_bias, repeat_scale=model.repeat_scale,
                repeat_w=model.repeat_w)
    out.config["storage"], out.config["flags"] = out._file_config()[0].get("storage", {}), \
        out.flags
    if not out.config["storage"]:
        del out.config["storage"]
    out._lookup, out._id_dict = model._lookup, model._id_dict
    return out


def _matrix(a: Any) -> Any:
    """A weight matrix as a model holds it: Compressed as it is, else float32."""
    return a if isinstance(a, Compressed) else np.ascontiguousarray(a, np.float32)


def _unless_same(stored: Any, new: Any) -> Any:
    """``stored`` if ``new`` holds exactly its values, else ``new`` as float32."""
    new = np.ascontiguousarray(new, np.float32)
    if isinstance(stored, Compressed):
        return stored if np.array_equal(stored.dequantize(), new) else new
    return stored if stored is new else new


def params_of(model: Model) -> Any:
    """The training engine's ``Params`` view of ``model`` (arrays shared, not
    copied; ``b_out`` is :attr:`Model.output_bias`).  Compressed item tables
    ``E`` and ``O`` stay compressed (``table[rows]`` gives float32 rows);
    compressed GRU and head matrices -- a few hundred KB -- are given as
    their float32 values, which batched training and evaluation multiply
    with (the streaming :class:`~deeprec_edge.Session` steps on the stored
    ones).  Imports the engine and hence the compiled kernels."""
    from ._engine import Params  # lazy: this module works without the C core
    from .quant import dequantize

    layers = [[dequantize(layer.W_ih), dequantize(layer.W_hh), layer.b_ih, layer.b_hh]
              for layer in model.layers]
    return Params(model.E, layers, dequantize(model.W_p), model.b_p, model.O,
                  model.output_bias, model.activation)

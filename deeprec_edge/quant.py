"""Compressed weight matrices: float16, int8, int4 and int3 with per-row
scales, dense or sparse (pruned), as a model file stores them.

A model file may store each weight *matrix* -- the item tables ``E`` and
``O``, the GRU matrices ``gru{l}.W_ih``/``gru{l}.W_hh`` and the head
``head.W`` -- in one of these **storages** (``docs/model-format.md``):

=================  ===================================================================
``float32``        the array itself (the default)
``float16``        IEEE binary16, same shape
``int8``           ``q`` int8 [R, C] in [-127, 127] and ``scale`` float32 [R]: the
                   value of ``(r, c)`` is ``q[r, c] * scale[r]`` (symmetric, per row)
``int4``           the same with ``q`` in [-7, 7], two per byte (file only: in
                   memory an int4 matrix is an int8 one, the kernels read it as such)
``int3``           the same with ``q`` in [-3, 3] (seven levels), stored like int4:
                   a deflated file codes its values in about 2.7 bits
``<any>+sparse``   a pruned matrix: a bit mask of its nonzero entries (row-major,
                   little bit order, one row per ``ceil(C/8)`` bytes) and only the
                   nonzero values, in row-major order
=================  ===================================================================

Scales (``X.scale``) are stored as float16 when every one of them is a
float16 value -- what int4/int3 quantisation produces -- else float32 (both
are hashed as float32 by the model fingerprint).

The writer stores a matrix sparse exactly when that takes fewer bytes than
dense (so the layout follows from the values: one canonical file per
model); a reader accepts either.

In memory a float32 matrix is a numpy array and any other one a
:class:`Compressed` (its stored values and scales, never inflated): the
kernels score and step on it directly (:func:`deeprec_edge.kernels.score_topk`
with ``scale=``, the int8/float16 GRU steps), and ``table[rows]`` gives the
float32 rows a computation needs.  :func:`quantize` makes one from float32
values, :func:`encode` / :func:`decode` convert between it and the file's
arrays (decode validates everything: value ranges, scales, mask padding,
the number of sparse values).

numpy only.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np

__all__ = ["DTYPES", "Compressed", "parse_storage", "storage_string", "quantize", "encode",
           "decode", "storage_of", "dequantize", "file_names", "float16_if_exact"]

#: The storage dtypes, smallest last.
DTYPES: Tuple[str, ...] = ("float32", "float16", "int8", "int4", "int3")
_QMAX = {"int8": 127, "int4": 7, "int3": 3}
#: dtypes stored two values per byte (4-bit two's complement)
_NIBBLE = ("int4", "int3")
_F32 = np.float32
#: Clipping ratios the int4/int3 quantiser tries per row (scale = ratio *
#: max|row| / qmax), from no clipping down to half the row's range.
_CLIP_RATIOS = np.linspace(1.0, 0.5, 26)
#: Largest float16 value: int4/int3 scales up to it are float16 values.
_F16_MAX = 65504.0


class Compressed:
    """A float16 or int8 weight matrix with optional per-row scales, as stored.

    ``data``: float16 or int8 [R, C]; ``scale``: float32 [R] or None (the
    value of ``(r, c)`` is ``f32(data[r, c]) * scale[r]``, one float32
    rounding, exactly as :func:`deeprec_edge.kernels.dequantize_rows`);
    ``storage``: the storage dtype, ``"float16"``, ``"int8"``, ``"int4"`` or
    ``"int3"`` (int4/int3 values are int8 data in [-7, 7] / [-3, 3]; dense
    or sparse in a file is decided when it is written).

    Immutable (frozen parts are shared, not copied).  Indexing with rows
    gives float32 rows: ``table[idx]`` (idx an int, slice or integer array
    of any shape) -> float32 ``idx.shape + (C,)``.  There is deliberately no
    ``__array__``: inflating a whole table is :meth:`dequantize`, said out
    loud.
    """

    __slots__ = ("data", "scale", "storage", "_packed")

    def __init__(self, data: np.ndarray, scale: Optional[np.ndarray], storage: str):
        if storage not in DTYPES[1:]:
            raise ValueError(f"Compressed: storage must be one of {', '.join(DTYPES[1:])}, "
                             f"got {storage!r}")
        data = np.ascontiguousarray(data)
        if data.ndim != 2 or data.dtype not in (np.float16, np.int8):
            raise ValueError(f"Compressed: data must be a 2-d float16 or int8 array, got "
                             f"{data.dtype} of shape {data.shape}")
        if scale is not None:
            scale = np.ascontiguousarray(scale, _F32)
            if scale.shape != (data.shape[0],):
                raise ValueError(f"Compressed: scale must have shape ({data.shape[0]},), got "
                                 f"{scale.shape}")
        elif data.dtype == np.int8:
            raise ValueError("Compressed: int8 data needs per-row scales")
        data.flags.writeable = False
        if scale is not None:
            scale.flags.writeable = False
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "storage", storage)
        object.__setattr__(self, "_packed", None)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Compressed is immutable")

    def __repr__(self) -> str:
        return f"Compressed({self.storage}, shape={self.shape})"

    # -- what a float32 array would say ---------------------------------
    @property
    def shape(self) -> Tuple[int, int]:
        return tuple(int(s) for s in self.data.shape)  # type: ignore[return-value]

    @property
    def ndim(self) -> int:
        return 2

    @property
    def size(self) -> int:
        return int(self.data.size)

    @property
    def dtype(self) -> np.dtype:
        """The dtype of the stored values (float16 or int8)."""
        return self.data.dtype

    @property
    def nbytes(self) -> int:
        """Bytes held in memory (values and scales)."""
        return int(self.data.nbytes + (0 if self.scale is None else self.scale.nbytes))

    def copy(self) -> "Compressed":
        """Itself: a Compressed never changes."""
        return self

    def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise TypeError(f"a {self.storage} matrix is not silently inflated to float32: use "
                        f"table[rows] for the rows you need, or .dequantize()")

    # -- rows ------------------------------------------------------------
    def __getitem__(self, idx: Any) -> np.ndarray:
        if isinstance(idx, tuple):
            raise TypeError("Compressed: index rows only (table[rows])")
        if isinstance(idx, slice):
            idx = np.arange(self.data.shape[0])[idx]
        idx = np.asarray(idx)
        if idx.dtype.kind not in "iu":
            raise TypeError(f"Compressed: rows must be integers, got {idx.dtype}")
        flat = idx.reshape(-1)
        rows = self.data[flat].astype(_F32)
        if self.scale is not None:
            rows *= self.scale[flat][:, None]
        return rows.reshape(idx.shape + (self.data.shape[1],))

    def packed(self) -> Any:
        """int8 data packed for scoring (:class:`deeprec_edge.kernels.PackedI8`,
        made at the first call and kept: about :attr:`nbytes` more memory).

        The scoring kernels give the same bits on it as on :attr:`data`, two
        to three times faster; the runtime scores whole int8 tables and
        gathered candidate tables this way.  float16 storage: ValueError."""
        if self.data.dtype != np.int8:
            raise ValueError(f"Compressed.packed: {self.storage} data is not packed (int8 only)")
        if self._packed is None:
            from .kernels import pack_rows_i8
            object.__setattr__(self, "_packed", pack_rows_i8(self.data))
        return self._packed

    def take(self, rows: Any) -> "Compressed":
        """The given rows, still compressed (a candidate table)."""
        rows = np.asarray(rows, np.int64).reshape(-1)
        return Compressed(self.data[rows], None if self.scale is None else self.scale[rows],
                          self.storage)

    def dequantize(self) -> np.ndarray:
        """Every value as float32 (for small matrices: a GRU layer, the head)."""
        return self[np.arange(self.data.shape[0])]


def parse_storage(s: Any) -> Tuple[str, bool]:
    """``"int8+sparse"`` -> ``("int8", True)``; ValueError for anything else
    than a storage string."""
    if not isinstance(s, str):
        raise ValueError(f"storage must be a string, got {s!r}")
    dt, _, rest = s.partition("+")
    if dt not in DTYPES or rest not in ("", "sparse"):
        raise ValueError(f"unknown storage {s!r} (one of {', '.join(DTYPES)}, optionally "
                         f"with '+sparse')")
    return dt, rest == "sparse"


def storage_string(dtype: str, sparse: bool) -> str:
    return dtype + ("+sparse" if sparse else "")


def storage_of(value: Any) -> str:
    """The storage dtype of a matrix: a Compressed's own, else float32."""
    return value.storage if isinstance(value, Compressed) else "float32"


def dequantize(value: Any) -> np.ndarray:
    """float32 values of a matrix (a float32 array is returned as it is)."""
    return value.dequantize() if isinstance(value, Compressed) else value


def quantize(a: Any, storage: str) -> Any:
    """float32 values (or a Compressed, re-quantised from its values) in
    ``storage`` (a dtype; ``+sparse`` is accepted and ignored: the writer
    decides): a float32 array for ``float32``, else a :class:`Compressed`.

    Symmetric per-row quantisation, values ``clip(rint(W / scale), -qmax,
    qmax)`` (ties to even); zeros stay zeros (a pruned matrix stays pruned).
    int8: ``scale = max|row| / 127`` (float32).  int4 / int3 (7 / 3 levels
    each side), where one step is a large share of the row: the scale of
    least squared error over :data:`_CLIP_RATIOS` (``ratio * max|row| /
    qmax``, clipping the largest values when that costs less than the
    coarser step; the first ratio wins ties), each candidate rounded to
    float16 -- so the file stores float16 scales -- unless some row's scale
    would exceed float16's range (|W| beyond ~1.3e5: then float32
    candidates).  A row so small that its float16 scale is subnormal or 0
    loses precision only where the values are below 1e-4 anyway.  float16:
    values beyond its range raise ValueError."""
    dt, sparse = parse_storage(storage)
    a = np.ascontiguousarray(dequantize(a), _F32)
    if a.ndim != 2:
        raise ValueError(f"only matrices are compressed, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError("cannot compress non-finite values")
    if dt == "float32":
        return a
    if dt == "float16":
        with np.errstate(over="ignore"):
            h = a.astype(np.float16)
        if not np.isfinite(h).all():
            raise ValueError("a value of magnitude >= 65520 does not fit float16")
        return Compressed(h, None, dt)
    qmax = _QMAX[dt]
    amax = np.abs(a).max(axis=1, initial=0.0)
    if dt == "int8":
        scale = (amax / np.float32(qmax)).astype(_F32)
        return Compressed(_round_rows(a, scale, qmax), scale, dt)
    q = np.empty(a.shape, np.int8)
    scale = np.empty(a.shape[0], _F32)
    half = bool(amax.max(initial=0.0) / np.float32(qmax) <= _F16_MAX)
    step = max(1, (1 << 20) // max(1, a.shape[1]))       # rows per block: bounded temporaries
    for r0 in range(0, a.shape[0], step):
        blk = a[r0:r0 + step]
        best_err = None
        for ratio in _CLIP_RATIOS:
            s = (amax[r0:r0 + step] * _F32(ratio) / _F32(qmax)).astype(_F32)
            if half:
                s = s.astype(np.float16).astype(_F32)
            v = _round_rows(blk, s, qmax)
            err = np.square(v.astype(_F32) * s[:, None] - blk, dtype=np.float64).sum(axis=1)
            if best_err is None:
                best_err, q[r0:r0 + step], scale[r0:r0 + step] = err, v, s
            else:
                better = err < best_err
                best_err = np.where(better, err, best_err)
                q[r0:r0 + step][better] = v[better]
                scale[r0:r0 + step][better] = s[better]
    return Compressed(q, scale, dt)


def _round_rows(a: np.ndarray, scale: np.ndarray, qmax: int) -> np.ndarray:
    """``clip(rint(a / scale), -qmax, qmax)`` per row as int8 (a zero scale:
    zeros)."""
    safe = np.where(scale > 0, scale, _F32(1.0))
    return np.clip(np.rint(a / safe[:, None]), -qmax, qmax).astype(np.int8)


# --------------------------------------------------------------------------
# file arrays
# --------------------------------------------------------------------------


def file_names(name: str, storage: str) -> Tuple[str, ...]:
    """Names of the file arrays of matrix ``name`` in ``storage``."""
    dt, sparse = parse_storage(storage)
    out = [name]
    if dt in _QMAX:
        out.append(f"{name}.scale")
    if sparse:
        out.append(f"{name}.mask")
    return tuple(out)


def _pack4(q: np.ndarray) -> np.ndarray:
    """int8 values in [-7, 7] (int4, int3) along the last axis, two per byte (low nibble
    first); an odd count ends with a zero nibble."""
    n = q.shape[-1]
    nib = (q.astype(np.int16) & 0xF).astype(np.uint8)
    if n % 2:
        nib = np.concatenate([nib, np.zeros(nib.shape[:-1] + (1,), np.uint8)], axis=-1)
    return np.ascontiguousarray(nib[..., 0::2] | (nib[..., 1::2] << 4))


def _unpack4(b: np.ndarray, n: int, what: str, qmax: int = 7) -> np.ndarray:
    nib = np.empty(b.shape[:-1] + (2 * b.shape[-1],), np.uint8)
    nib[..., 0::2] = b & 0xF
    nib[..., 1::2] = b >> 4
    if nib.shape[-1] > n and nib[..., n:].any():
        raise ValueError(f"{what}: the padding nibble after the last value must be 0")
    nib = nib[..., :n]
    q = np.where(nib >= 8, nib.astype(np.int16) - 16, nib).astype(np.int8)
    if qmax < 7 and (np.abs(q.astype(np.int16)) > qmax).any():
        raise ValueError(f"{what}: int{qmax.bit_length() + 1} values must be in "
                         f"-{qmax} .. {qmax}")
    if (nib == 8).any():
        raise ValueError(f"{what}: int4 value -8 (symmetric quantisation uses -7 .. 7)")
    return q


def _sparse_smaller(data: np.ndarray, dt: str) -> bool:
    """Sparse storage takes fewer bytes than dense for these values."""
    R, C = data.shape
    nnz = int(np.count_nonzero(data))
    bits = {"float32": 32, "float16": 16, "int8": 8, "int4": 4, "int3": 4}[dt]
    dense = R * ((C * bits + 7) // 8)
    sparse = R * ((C + 7) // 8) + (nnz * bits + 7) // 8
    return sparse < dense


def encode(name: str, value: Any) -> Tuple[Dict[str, np.ndarray], str]:
    """The file arrays of matrix ``name`` (a float32 array or a
    Compressed) and the storage string they are in: the value's dtype,
    ``+sparse`` when that is smaller."""
    dt = storage_of(value)
    if dt == "float32":
        data, scale = np.ascontiguousarray(value, _F32), None
    else:
        data, scale = value.data, value.scale
        if dt in _NIBBLE and np.abs(data.astype(np.int16)).max(initial=0) > _QMAX[dt]:
            raise ValueError(f"{name}: {dt} storage needs values in [-{_QMAX[dt]}, "
                             f"{_QMAX[dt]}]")
    sparse = data.size > 0 and _sparse_smaller(data, dt)
    out: Dict[str, np.ndarray] = {}
    if sparse:
        mask = data != 0
        out[f"{name}.mask"] = np.packbits(mask, axis=1, bitorder="little")
        vals = np.ascontiguousarray(data[mask])
        out[name] = _pack4(vals) if dt in _NIBBLE else vals
    else:
        out[name] = _pack4(data) if dt in _NIBBLE else data
    if scale is not None:
        out[f"{name}.scale"] = float16_if_exact(scale)
    return out, storage_string(dt, sparse)


def float16_if_exact(a: np.ndarray) -> np.ndarray:
    """A float32 vector as a file stores it when its values decide (per-row
    scales, and biases beside compressed matrices): float16 when every
    value is a float16 value, else ``a`` itself."""
    with np.errstate(over="ignore"):
        h = np.asarray(a).astype(np.float16)
    return h if np.array_equal(h.astype(_F32), a) else a


def decode(name: str, arrays: Dict[str, np.ndarray], storage: str,
           shape: Tuple[int, int]) -> Any:
    """The in-memory matrix of ``name`` from its file arrays (dtypes and
    shapes already checked against the member table).  Raises ValueError
    (message starting with the array's name) for values outside the
    storage's range, bad scales, mask padding, a wrong number of sparse
    values or stored zeros."""
    dt, sparse = parse_storage(storage)
    R, C = shape
    scale = None
    if dt in _QMAX:
        scale = np.ascontiguousarray(arrays[f"{name}.scale"], _F32)   # float32 or float16
        if not np.isfinite(scale).all() or (scale < 0).any():
            raise ValueError(f"array '{name}.scale' must hold finite scales >= 0")
    raw = arrays[name]
    if sparse:
        packed = np.asarray(arrays[f"{name}.mask"], np.uint8)
        bits = np.unpackbits(packed, axis=1, bitorder="little")
        if bits[:, C:].any():
            raise ValueError(f"array '{name}.mask' has bits set past column {C} (padding "
                             f"must be 0)")
        mask = bits[:, :C].astype(bool)
        nnz = int(mask.sum())
        want = (nnz + 1) // 2 if dt in _NIBBLE else nnz
        if raw.shape != (want,):
            raise ValueError(f"array '{name}' holds {raw.shape[0]} values, but its mask has "
                             f"{nnz} nonzero entries" + (f" (two {dt} values per byte)"
                                                          if dt in _NIBBLE else ""))
        vals = (_unpack4(raw, nnz, f"array '{name}'", _QMAX[dt]) if dt in _NIBBLE
                else np.asarray(raw))
        if nnz and not (vals != 0).all():
            raise ValueError(f"array '{name}' stores zeros; a sparse matrix stores only its "
                             f"nonzero values")
        dense = np.zeros((R, C), vals.dtype)
        dense[mask] = vals
    else:
        dense = (_unpack4(np.asarray(raw), C, f"array '{name}'", _QMAX[dt]) if dt in _NIBBLE
                 else raw)
    if dt == "float32":
        return np.ascontiguousarray(dense, _F32)
    if dt == "float16":
        dense = np.ascontiguousarray(dense, np.float16)
        if not np.isfinite(dense).all():
            raise ValueError(f"array '{name}' has {int((~np.isfinite(dense)).sum())} "
                             f"non-finite value(s) (of {dense.size})")
        return Compressed(dense, None, dt)
    dense = np.ascontiguousarray(dense, np.int8)
    if dt == "int8" and (dense == -128).any():
        raise ValueError(f"array '{name}' holds -128 (symmetric int8 quantisation uses "
                         f"-127 .. 127)")
    return Compressed(dense, scale, dt)

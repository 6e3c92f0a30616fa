# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
# cython: embedsignature=True, cdivision=True
"""Thin binding of the deeprec-edge C core (csrc/include/deeprec_edge.h).

Every function here does the same three things:

1. checks each array argument -- exact dtype (float32, int32, uint8/bool
   masks), number of dimensions, shape consistency with the other arguments,
   C-contiguity, alignment, native byte order, and writeability for outputs --
   and raises ``ValueError`` naming the argument, what was expected and what
   was got.  Nothing is converted or copied silently;
2. allocates the outputs and the workspace with numpy;
3. calls the C function once, with the GIL released, and maps a non-OK status
   to an exception in one place (:func:`_raise_status`).

The public, documented module is :mod:`deeprec_edge.kernels`, which
re-exports these names.  See docs/kernels-python.md.
"""
cimport numpy as cnp
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t, uint16_t, uintptr_t

import operator

import numpy as np

cnp.import_array()

__all__ = [
    "active_path", "supported_paths", "set_path",
    "sgemm",
    "gru_forward", "gru_backward", "gru_step", "GruStepper",
    "head_forward", "head_backward",
    "sampled_loss",
    "score", "score_topk", "dequantize_rows", "pack_rows_i8", "PackedI8",
    "adagrad_step", "adam_step", "sgd_step", "global_norm", "clip_by_global_norm",
    "adagrad_rows", "adam_rows", "sgd_rows",
]

#: Version of the C API this module was compiled against (major, minor, patch).
C_API_VERSION = (DRE_VERSION_MAJOR, DRE_VERSION_MINOR, DRE_VERSION_PATCH)


# ---------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------

cdef enum _Kind:
    _F32 = 0
    _I32 = 1
    _MASK = 2
    _F16 = 3
    _I8 = 4
    _I8P = 5  # a PackedI8 table (never an array kind)

cdef tuple _KIND_NAMES = ("float32", "int32", "uint8 or bool", "float16", "int8", "packed int8")


cdef inline bint _dtype_ok(cnp.ndarray a, _Kind kind) noexcept:
    cdef int t = cnp.PyArray_TYPE(a)
    if kind == _F32:
        return t == cnp.NPY_FLOAT32 and cnp.PyArray_ISNOTSWAPPED(a)
    if kind == _F16:
        return t == cnp.NPY_FLOAT16 and cnp.PyArray_ISNOTSWAPPED(a)
    if kind == _I8:
        return t == cnp.NPY_INT8
    if kind == _I32:
        # int32 is NPY_INT on LP64 and may be NPY_LONG where long is 32-bit.
        return ((t == cnp.NPY_INT or t == cnp.NPY_LONG) and cnp.PyArray_ITEMSIZE(a) == 4
                and cnp.PyArray_ISNOTSWAPPED(a))
    return t == cnp.NPY_UINT8 or t == cnp.NPY_BOOL


cdef inline bint _ok(object a, _Kind kind, int ndim, Py_ssize_t *dims, bint out) noexcept:
    """True if `a` is a usable array; then the free entries (-1) of dims are
    filled with its sizes.  ndim < 0 accepts any number of dimensions (dims
    is then not used)."""
    cdef cnp.ndarray arr
    cdef cnp.npy_intp *shape
    cdef int i
    if not cnp.PyArray_Check(a):
        return False
    arr = <cnp.ndarray>a
    if not _dtype_ok(arr, kind):
        return False
    # C-contiguous and aligned (ISCARRAY_RO); outputs must also be writeable.
    if not cnp.PyArray_ISCARRAY_RO(arr) or (out and not cnp.PyArray_ISWRITEABLE(arr)):
        return False
    if ndim < 0:
        return True
    if cnp.PyArray_NDIM(arr) != ndim:
        return False
    shape = cnp.PyArray_DIMS(arr)
    for i in range(ndim):
        if dims[i] >= 0 and dims[i] != shape[i]:
            return False
    for i in range(ndim):
        dims[i] = shape[i]
    return True


def _describe(a):
    """What an argument is, for error messages."""
    if not isinstance(a, np.ndarray):
        return "None" if a is None else f"an object of type {type(a).__name__}"
    f = a.flags
    parts = [f"{a.dtype} array of shape {a.shape}"]
    if f.c_contiguous:
        parts.append("C-contiguous")
    elif f.f_contiguous:
        parts.append("Fortran-ordered (not C-contiguous)")
    else:
        parts.append("non-contiguous")
    if not f.aligned:
        parts.append("misaligned")
    if not f.writeable:
        parts.append("read-only")
    return " ".join(parts)


def _shape_text(str sym, dims):
    """'(T, B, I)' plus the sizes already fixed by other arguments:
    '(T, B, I) = (T, 4, 8)'."""
    if dims is None or all(d < 0 for d in dims):
        return sym
    names = [s.strip() for s in sym.strip("()").split(",") if s.strip()]
    vals = [str(d) if d >= 0 else n for d, n in zip(dims, names)]
    concrete = "(" + ", ".join(vals) + ("," if len(vals) == 1 else "") + ")"
    return f"{sym} = {concrete}"


cdef int _bad_array(object a, str name, _Kind kind, int ndim, Py_ssize_t *dims,
                    str sym, bint out, str note=None) except -1:
    cdef int i
    fixed = None
    if ndim > 0 and dims != NULL:
        fixed = [dims[i] for i in range(ndim)]
    writeable = "writeable " if out else ""
    if ndim < 0:
        shape = sym
    else:
        shape = "of shape " + _shape_text(sym, fixed)
    msg = (f"{name}: expected {writeable}{_KIND_NAMES[<int>kind]} array {shape} "
           f"C-contiguous, got {_describe(a)}")
    if note:
        msg += f" ({note})"
    raise ValueError(msg)


cdef inline int _check(object a, str name, _Kind kind, int ndim, Py_ssize_t *dims,
                       str sym, bint out=False) except -1:
    """Validate `a` (see _ok) or raise ValueError naming `name`."""
    cdef Py_ssize_t saved[4]
    cdef int i
    if ndim > 0:
        for i in range(ndim):
            saved[i] = dims[i]
    if _ok(a, kind, ndim, dims, out):
        return 0
    if ndim > 0:
        return _bad_array(a, name, kind, ndim, saved, sym, out)
    return _bad_array(a, name, kind, ndim, NULL, sym, out)


cdef int _check_like(object a, str name, object ref, str refname, bint out) except -1:
    """`a` must be a float32 C-contiguous array of exactly ref's shape."""
    if _ok(a, _F32, -1, NULL, out) and a.shape == ref.shape:
        return 0
    writeable = "writeable " if out else ""
    raise ValueError(f"{name}: expected {writeable}float32 array of the shape of {refname} "
                     f"{ref.shape} C-contiguous, got {_describe(a)}")


# Outputs written by a kernel must share no byte with anything else it reads
# or writes: the C core reads inputs while it writes outputs (a GEMM into its
# own operand, an optimiser whose state overlaps its gradient), so an
# overlap gives wrong values silently.  Every array here is C-contiguous
# (checked before), so sharing memory is exactly an overlap of byte ranges
# (what np.shares_memory computes, without its general-stride search).

cdef inline bint _overlaps(object a, object b) noexcept:
    """True if two checked (C-contiguous) arrays share at least one byte."""
    cdef char *pa
    cdef char *pb
    cdef Py_ssize_t na, nb
    if a is None or b is None:
        return False
    pa = <char *>cnp.PyArray_DATA(<cnp.ndarray>a)
    pb = <char *>cnp.PyArray_DATA(<cnp.ndarray>b)
    na = cnp.PyArray_NBYTES(<cnp.ndarray>a)
    nb = cnp.PyArray_NBYTES(<cnp.ndarray>b)
    return na > 0 and nb > 0 and pa < pb + nb and pb < pa + na


cdef int _overlap_error(str out_name, str other) except -1:
    raise ValueError(f"{out_name}: expected an array that shares no memory with {other}, got "
                     f"one that overlaps it (the kernel would read values it has already "
                     f"overwritten); pass a separate array")


cdef int _no_overlap(tuple outs, tuple ins) except -1:
    """``outs`` and ``ins`` are ((name, array or None), ...): no output may
    overlap an input or another output."""
    cdef Py_ssize_t i, j
    for i in range(len(outs)):
        name, a = outs[i]
        for j in range(i + 1, len(outs)):
            if _overlaps(a, outs[j][1]):
                _overlap_error(name, outs[j][0])
        for other, b in ins:
            if _overlaps(a, b):
                _overlap_error(name, other)
    return 0


cdef inline float *_f(object a) noexcept:
    return <float *>cnp.PyArray_DATA(<cnp.ndarray>a)

cdef inline float *_f_or_null(object a) noexcept:
    return NULL if a is None else <float *>cnp.PyArray_DATA(<cnp.ndarray>a)

cdef inline int32_t *_i_or_null(object a) noexcept:
    return NULL if a is None else <int32_t *>cnp.PyArray_DATA(<cnp.ndarray>a)

cdef inline void *_data(object a) noexcept:
    return cnp.PyArray_DATA(<cnp.ndarray>a)


cdef inline object _empty(int nd, cnp.npy_intp *dims, int typenum):
    return cnp.PyArray_EMPTY(nd, dims, typenum, 0)

cdef inline object _zeros(int nd, cnp.npy_intp *dims):
    return cnp.PyArray_ZEROS(nd, dims, cnp.NPY_FLOAT32, 0)

cdef inline object _workspace(size_t nbytes):
    # At least one byte, so the pointer handed to C is always valid.
    cdef cnp.npy_intp n = <cnp.npy_intp>(nbytes if nbytes > 0 else 1)
    return cnp.PyArray_EMPTY(1, &n, cnp.NPY_UINT8, 0)


# ---------------------------------------------------------------------------
# Status -> exception, in one place
# ---------------------------------------------------------------------------

_STATUS_NAMES = {
    DRE_OK: "DRE_OK",
    DRE_ERR_NULL: "DRE_ERR_NULL",
    DRE_ERR_SIZE: "DRE_ERR_SIZE",
    DRE_ERR_INDEX: "DRE_ERR_INDEX",
    DRE_ERR_WORKSPACE: "DRE_ERR_WORKSPACE",
    DRE_ERR_ARG: "DRE_ERR_ARG",
    DRE_ERR_UNSUPPORTED: "DRE_ERR_UNSUPPORTED",
}


def _first_out_of_range(str name, arr, int64_t lo, int64_t hi):
    """Name the first entry of `arr` outside [lo, hi) (error path only)."""
    if arr is None:
        return f"{name}: an entry is out of range"
    a = np.asarray(arr).ravel()
    bad = np.flatnonzero((a < lo) | (a >= hi))
    valid = f"[{lo}, {hi - 1}]" if hi > lo else "(no valid value: the range is empty)"
    if bad.size == 0:
        return f"{name}: an entry is out of range {valid}"
    i = int(bad[0])
    return f"{name}[{i}] = {int(a[i])} is outside {valid}"


cdef int _raise_status(dre_status st, str func, str index_arg=None, object index_arr=None,
                       int64_t lo=0, int64_t hi=0) except -1:
    """Map a C status to an exception: DRE_ERR_INDEX -> IndexError,
    DRE_ERR_UNSUPPORTED -> RuntimeError, every other error -> ValueError.
    For DRE_ERR_INDEX the caller names the index array and its valid range
    [lo, hi); the message then points at the first offending entry."""
    text = dre_status_to_string(st).decode("utf-8", "replace")
    code = _STATUS_NAMES.get(<int>st, f"status {<int>st}")
    if st == DRE_ERR_INDEX:
        where = (_first_out_of_range(index_arg, index_arr, lo, hi)
                 if index_arg is not None else "an index is out of range")
        raise IndexError(f"{func}: {where} ({text}, {code})")
    if st == DRE_ERR_UNSUPPORTED:
        raise RuntimeError(f"{func}: {text} ({code})")
    raise ValueError(f"{func}: {text} ({code})")


# ---------------------------------------------------------------------------
# Kernel paths
# ---------------------------------------------------------------------------

def _known_paths():
    """{name: enum value} of every path the C library knows (supported here
    or not), in enum order; asks dre_path_name so a new path needs no change."""
    paths = {}
    cdef int p
    for p in range(64):
        name = dre_path_name(<dre_path>p).decode("ascii")
        if name != "unknown":
            paths[name] = p
    return paths


cdef dict _PATHS = _known_paths()


def active_path():
    """Name of the kernel path in use: ``"scalar"``, ``"avx2"``, ``"avx512"``
    or ``"neon"``.

    Decided once, on first use: the best path this CPU and build support, or
    ``"scalar"`` when the environment variable ``DEEPREC_EDGE_FORCE_SCALAR``
    is set to a non-empty value other than ``"0"`` (read at that moment).
    :func:`set_path` changes it afterwards.
    """
    return dre_path_name(dre_active_path()).decode("ascii")


def supported_paths():
    """Names of the kernel paths this build and CPU can run.

    Returns
    -------
    list of str
        Always contains ``"scalar"``; ``"avx2"`` on x86-64 with AVX2 + FMA
        and OS support for YMM state; ``"avx512"`` with AVX-512F and OS
        support for ZMM state as well; ``"neon"`` on aarch64.
    """
    return [name for name, p in _PATHS.items() if dre_path_supported(<dre_path><int>p)]


def set_path(str name not None):
    """Switch every kernel to the path `name` (for tests and benchmarks).

    Parameters
    ----------
    name : str
        ``"scalar"``, ``"avx2"``, ``"avx512"`` or ``"neon"``.

    Raises
    ------
    ValueError
        Unknown name.
    RuntimeError
        This CPU or build cannot run that path.

    Notes
    -----
    Process-wide; not meant to be called while other threads are inside
    kernels.  Prefer the context manager
    :func:`deeprec_edge.kernels.forced_path`.
    """
    cdef dre_status st
    if name not in _PATHS:
        raise ValueError(f"set_path: name: unknown kernel path {name!r}; "
                         f"expected one of {list(_PATHS)}")
    st = dre_set_path(<dre_path><int>_PATHS[name])
    if st != DRE_OK:
        _raise_status(st, "set_path")


# ---------------------------------------------------------------------------
# SGEMM
# ---------------------------------------------------------------------------

def sgemm(A, B, bint trans_a=False, bint trans_b=False, float alpha=1.0, float beta=0.0,
          C=None):
    """General matrix product ``C = alpha * op(A) @ op(B) + beta * C``.

    Parameters
    ----------
    A : float32 array, shape (M, K), or (K, M) when `trans_a`
    B : float32 array, shape (K, N), or (N, K) when `trans_b`
    trans_a, trans_b : bool
        Use the transpose of the stored A (B).  No copy is made.
    alpha, beta : float
    C : float32 array, shape (M, N), optional
        Updated in place and returned.  When ``beta == 0`` it is overwritten
        without being read (NaNs in it do not propagate).  When None, a new
        array is allocated (zeros if ``beta != 0``).  Must not share memory
        with A or B (ValueError).

    Returns
    -------
    C : float32 array, shape (M, N)
    """
    cdef Py_ssize_t da[2]
    cdef Py_ssize_t db[2]
    cdef Py_ssize_t dc[2]
    cdef cnp.npy_intp shp[2]
    cdef int64_t M, N, K, lda, ldb
    cdef size_t wsb
    cdef dre_status st
    da[0] = -1; da[1] = -1
    _check(A, "A", _F32, 2, da, "(K, M)" if trans_a else "(M, K)")
    M = da[1] if trans_a else da[0]
    K = da[0] if trans_a else da[1]
    if trans_b:
        db[0] = -1; db[1] = K
        _check(B, "B", _F32, 2, db, "(N, K)")
        N = db[0]
    else:
        db[0] = K; db[1] = -1
        _check(B, "B", _F32, 2, db, "(K, N)")
        N = db[1]
    lda = da[1]
    ldb = db[1]
    if C is None:
        shp[0] = M; shp[1] = N
        C = _empty(2, shp, cnp.NPY_FLOAT32) if beta == 0.0 else _zeros(2, shp)
    else:
        dc[0] = M; dc[1] = N
        _check(C, "C", _F32, 2, dc, "(M, N)", True)
        _no_overlap((("C", C),), (("A", A), ("B", B)))
    wsb = dre_sgemm_workspace_size(N, K)
    ws = _workspace(wsb)
    cdef const float *pa = _f(A)
    cdef const float *pb = _f(B)
    cdef float *pc = _f(C)
    cdef void *pw = _data(ws)
    with nogil:
        st = dre_sgemm(trans_a, trans_b, M, N, K, alpha, pa, lda, pb, ldb, beta,
                       pc, N, pw, wsb)
    if st != DRE_OK:
        _raise_status(st, "sgemm")
    return C


# ---------------------------------------------------------------------------
# GRU layer
# ---------------------------------------------------------------------------

cdef int64_t _check_W_hh(object W_hh, str name, _Kind kind=_F32) except -1:
    """W_hh [3H, H]; returns H."""
    cdef Py_ssize_t d[2]
    d[0] = -1; d[1] = -1
    _check(W_hh, name, kind, 2, d, "(3H, H)")
    if d[0] != 3 * d[1]:
        _bad_array(W_hh, name, kind, 2, NULL, "(3H, H)", False,
                   f"{d[0]} != 3 * {d[1]}")
    return d[1]


cdef inline bint _is_f16(object a) noexcept:
    return cnp.PyArray_Check(a) and cnp.PyArray_TYPE(<cnp.ndarray>a) == cnp.NPY_FLOAT16


cdef inline bint _is_i8(object a) noexcept:
    return cnp.PyArray_Check(a) and cnp.PyArray_TYPE(<cnp.ndarray>a) == cnp.NPY_INT8


cdef _Kind _weight_kind(object W_ih, object W_hh) except *:
    """Both W_ih and W_hh float16 select the binary16 step kernel, both int8
    the int8 one; otherwise both are checked as float32 (a lone compressed
    one is blamed by name)."""
    if _is_f16(W_ih) and _is_f16(W_hh):
        return _F16
    if _is_i8(W_ih) and _is_i8(W_hh):
        return _I8
    for a, name, sym in ((W_ih, "W_ih", "of shape (3H, I)"), (W_hh, "W_hh", "of shape (3H, H)")):
        if _is_f16(a) or _is_i8(a):
            _bad_array(a, name, _F32, -1, NULL, sym, False,
                       "compressed weights need W_ih and W_hh of one dtype: both float16 "
                       "or both int8")
    return _F32


cdef int _check_step_scales(object s_ih, object s_hh, _Kind wk, int64_t H) except -1:
    """Per-row scales of int8 step weights: float32 [3H] each, or None (1)."""
    if wk != _I8:
        for a, name in ((s_ih, "s_ih"), (s_hh, "s_hh")):
            if a is not None:
                raise ValueError(f"{name}: per-row scales go with int8 weights; got "
                                 f"{_KIND_NAMES[<int>wk]} W_ih and W_hh")
        return 0
    if s_ih is not None:
        _check_vec(s_ih, "s_ih", 3 * H, "(3H,)")
    if s_hh is not None:
        _check_vec(s_hh, "s_hh", 3 * H, "(3H,)")
    return 0


cdef inline int _check_vec(object a, str name, Py_ssize_t n, str sym, bint out=False) except -1:
    cdef Py_ssize_t d[1]
    d[0] = n
    return _check(a, name, _F32, 1, d, sym, out)


cdef inline int _check_mat(object a, str name, Py_ssize_t r, Py_ssize_t c, str sym,
                           bint out=False) except -1:
    cdef Py_ssize_t d[2]
    d[0] = r; d[1] = c
    return _check(a, name, _F32, 2, d, sym, out)


cdef inline int _check_t3(object a, str name, Py_ssize_t t, Py_ssize_t b, Py_ssize_t c,
                          str sym, bint out=False) except -1:
    cdef Py_ssize_t d[3]
    d[0] = t; d[1] = b; d[2] = c
    return _check(a, name, _F32, 3, d, sym, out)


cdef inline int _check_idx(object a, str name, Py_ssize_t n, str sym) except -1:
    cdef Py_ssize_t d[1]
    d[0] = n
    return _check(a, name, _I32, 1, d, sym)


def gru_forward(x, W_ih, W_hh, b_ih, b_hh, h0=None, lengths=None, bint keep_cache=False):
    """One GRU layer over a batch of variable-length sequences (time-major).

    PyTorch ``nn.GRU`` semantics, gate order r, z, n::

        r  = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
        z  = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
        n  = tanh(W_in x + b_in + r * (W_hn h + b_hn))
        h' = (1 - z) * n + z * h

    Parameters
    ----------
    x : float32 array, shape (T, B, I)
    W_ih : float32 array, shape (3H, I)
    W_hh : float32 array, shape (3H, H)
    b_ih, b_hh : float32 arrays, shape (3H,)
    h0 : float32 array, shape (B, H), optional
        Initial state (None: zeros).
    lengths : int32 array, shape (B,), optional
        Steps of each sequence, each in [0, T] (None: all T).  Step t of
        sequence b runs only if ``t < lengths[b]``.  Non-increasing lengths
        are fastest.
    keep_cache : bool
        Keep the gate activations that :func:`gru_backward` needs.

    Returns
    -------
    y : float32 array, shape (T, B, H)
        Outputs; zeros at the padded steps ``t >= lengths[b]``.
    h_n : float32 array, shape (B, H)
        State after each sequence's last step (``h0[b]`` for length 0).
    cache : float32 array, shape (T, B, 4H), or None
        None unless `keep_cache`.

    Raises
    ------
    ValueError
        Wrong dtype, shape or layout of an argument.
    IndexError
        A length outside [0, T].
    """
    cdef Py_ssize_t dx[3]
    cdef cnp.npy_intp shp[3]
    cdef int64_t T, B, I, H
    cdef size_t wsb
    cdef dre_status st
    dx[0] = -1; dx[1] = -1; dx[2] = -1
    _check(x, "x", _F32, 3, dx, "(T, B, I)")
    T = dx[0]; B = dx[1]; I = dx[2]
    H = _check_W_hh(W_hh, "W_hh")
    _check_mat(W_ih, "W_ih", 3 * H, I, "(3H, I)")
    _check_vec(b_ih, "b_ih", 3 * H, "(3H,)")
    _check_vec(b_hh, "b_hh", 3 * H, "(3H,)")
    if h0 is not None:
        _check_mat(h0, "h0", B, H, "(B, H)")
    if lengths is not None:
        _check_idx(lengths, "lengths", B, "(B,)")
    shp[0] = T; shp[1] = B; shp[2] = H
    y = _empty(3, shp, cnp.NPY_FLOAT32)
    h_n = _empty(2, &shp[1], cnp.NPY_FLOAT32)
    cache = None
    if keep_cache:
        shp[2] = 4 * H
        cache = _empty(3, shp, cnp.NPY_FLOAT32)
    wsb = dre_gru_forward_workspace_size(T, B, I, H)
    ws = _workspace(wsb)
    cdef const float *px = _f(x)
    cdef const int32_t *pl = _i_or_null(lengths)
    cdef const float *ph0 = _f_or_null(h0)
    cdef const float *pwi = _f(W_ih)
    cdef const float *pwh = _f(W_hh)
    cdef const float *pbi = _f(b_ih)
    cdef const float *pbh = _f(b_hh)
    cdef float *py = _f(y)
    cdef float *phn = _f(h_n)
    cdef float *pc = _f_or_null(cache)
    cdef void *pw = _data(ws)
    with nogil:
        st = dre_gru_forward(T, B, I, H, px, pl, ph0, pwi, pwh, pbi, pbh, py, phn, pc,
                             pw, wsb)
    if st != DRE_OK:
        _raise_status(st, "gru_forward", "lengths", lengths, 0, T + 1)
    return y, h_n, cache


def gru_backward(x, W_ih, W_hh, y, cache, dy=None, dh_n=None, h0=None, lengths=None,
                 dW_ih=None, dW_hh=None, db_ih=None, db_hh=None, bint need_dx=True):
    """Backward through time of :func:`gru_forward`.

    `x`, `W_ih`, `W_hh`, `y`, `cache`, `h0` and `lengths` must be those of
    the forward pass (called with ``keep_cache=True``).

    Parameters
    ----------
    x : float32 array, shape (T, B, I)
    W_ih : float32 array, shape (3H, I)
    W_hh : float32 array, shape (3H, H)
    y : float32 array, shape (T, B, H)
        Forward output.
    cache : float32 array, shape (T, B, 4H)
        Forward cache.
    dy : float32 array, shape (T, B, H), optional
        Loss gradient of y (None: zeros).  Entries at padded steps are ignored.
    dh_n : float32 array, shape (B, H), optional
        Loss gradient of h_n (None: zeros).
    h0 : float32 array, shape (B, H), optional
    lengths : int32 array, shape (B,), optional
    dW_ih, dW_hh, db_ih, db_hh : float32 arrays, optional
        Shapes (3H, I), (3H, H), (3H,), (3H,).  Accumulated in place (+=);
        zeros are allocated for those that are None.
    need_dx : bool
        Compute the input gradient dx.

    Returns
    -------
    dx : float32 array, shape (T, B, I), or None
        Gradient of x (zeros at padded steps); None unless `need_dx`.
    dh0 : float32 array, shape (B, H)
        Gradient of the initial state.
    dW_ih, dW_hh, db_ih, db_hh : float32 arrays
        The accumulators (the arrays passed in, or new ones).

    Raises
    ------
    ValueError
        Wrong dtype, shape or layout of an argument.
    IndexError
        A length outside [0, T].
    """
    cdef Py_ssize_t dx_[3]
    cdef cnp.npy_intp shp[3]
    cdef int64_t T, B, I, H
    cdef size_t wsb
    cdef dre_status st
    dx_[0] = -1; dx_[1] = -1; dx_[2] = -1
    _check(x, "x", _F32, 3, dx_, "(T, B, I)")
    T = dx_[0]; B = dx_[1]; I = dx_[2]
    H = _check_W_hh(W_hh, "W_hh")
    _check_mat(W_ih, "W_ih", 3 * H, I, "(3H, I)")
    _check_t3(y, "y", T, B, H, "(T, B, H)")
    _check_t3(cache, "cache", T, B, 4 * H, "(T, B, 4H)")
    if dy is not None:
        _check_t3(dy, "dy", T, B, H, "(T, B, H)")
    if dh_n is not None:
        _check_mat(dh_n, "dh_n", B, H, "(B, H)")
    if h0 is not None:
        _check_mat(h0, "h0", B, H, "(B, H)")
    if lengths is not None:
        _check_idx(lengths, "lengths", B, "(B,)")
    shp[0] = 3 * H; shp[1] = I
    if dW_ih is None:
        dW_ih = _zeros(2, shp)
    else:
        _check_mat(dW_ih, "dW_ih", 3 * H, I, "(3H, I)", True)
    shp[1] = H
    if dW_hh is None:
        dW_hh = _zeros(2, shp)
    else:
        _check_mat(dW_hh, "dW_hh", 3 * H, H, "(3H, H)", True)
    if db_ih is None:
        db_ih = _zeros(1, shp)
    else:
        _check_vec(db_ih, "db_ih", 3 * H, "(3H,)", True)
    if db_hh is None:
        db_hh = _zeros(1, shp)
    else:
        _check_vec(db_hh, "db_hh", 3 * H, "(3H,)", True)
    _no_overlap((("dW_ih", dW_ih), ("dW_hh", dW_hh), ("db_ih", db_ih), ("db_hh", db_hh)),
                (("x", x), ("W_ih", W_ih), ("W_hh", W_hh), ("y", y), ("cache", cache),
                 ("dy", dy), ("dh_n", dh_n), ("h0", h0), ("lengths", lengths)))
    shp[0] = T; shp[1] = B; shp[2] = I
    dx = _empty(3, shp, cnp.NPY_FLOAT32) if need_dx else None
    shp[1] = B; shp[2] = H
    dh0 = _empty(2, &shp[1], cnp.NPY_FLOAT32)
    wsb = dre_gru_backward_workspace_size(T, B, I, H)
    ws = _workspace(wsb)
    cdef const float *px = _f(x)
    cdef const int32_t *pl = _i_or_null(lengths)
    cdef const float *ph0 = _f_or_null(h0)
    cdef const float *pwi = _f(W_ih)
    cdef const float *pwh = _f(W_hh)
    cdef const float *py = _f(y)
    cdef const float *pc = _f(cache)
    cdef const float *pdy = _f_or_null(dy)
    cdef const float *pdhn = _f_or_null(dh_n)
    cdef float *pdx = _f_or_null(dx)
    cdef float *pdh0 = _f(dh0)
    cdef float *pdwi = _f(dW_ih)
    cdef float *pdwh = _f(dW_hh)
    cdef float *pdbi = _f(db_ih)
    cdef float *pdbh = _f(db_hh)
    cdef void *pw = _data(ws)
    with nogil:
        st = dre_gru_backward(T, B, I, H, px, pl, ph0, pwi, pwh, py, pc, pdy, pdhn,
                              pdx, pdh0, pdwi, pdwh, pdbi, pdbh, pw, wsb)
    if st != DRE_OK:
        _raise_status(st, "gru_backward", "lengths", lengths, 0, T + 1)
    return dx, dh0, dW_ih, dW_hh, db_ih, db_hh


def gru_step(x, h, W_ih, W_hh, b_ih, b_hh, out=None, s_ih=None, s_hh=None):
    """One GRU step of one sequence (a streaming click): ``GRU(x, h)``.

    Parameters
    ----------
    x : float32 array, shape (I,)
    h : float32 array, shape (H,)
    W_ih : float32, float16 or int8 array, shape (3H, I)
    W_hh : float32, float16 or int8 array, shape (3H, H)
        Both of one dtype.  float16: half-precision weights (IEEE binary16)
        take half the memory traffic per step; int8 (with per-row scales
        `s_ih`, `s_hh`): a quarter.  Every product and sum is still float32,
        so the result is the float32 step on the stored values (an int8
        row's dot product is multiplied by its scale before the bias).
    b_ih, b_hh : float32 arrays, shape (3H,)
    out : float32 array, shape (H,), optional
        Where to write the new state; may be `h` itself (in place).
    s_ih, s_hh : float32 arrays, shape (3H,), optional
        Per-row scales of int8 `W_ih` and `W_hh` (None: 1).

    Returns
    -------
    h_new : float32 array, shape (H,)
        `out` if given.

    See Also
    --------
    GruStepper : the same with the weights checked once and a preallocated
        workspace, for the lowest per-call overhead.
    """
    cdef Py_ssize_t d[1]
    cdef cnp.npy_intp n
    cdef int64_t I, H
    cdef size_t wsb
    cdef dre_status st
    cdef _Kind wk = _weight_kind(W_ih, W_hh)
    H = _check_W_hh(W_hh, "W_hh", wk)
    d[0] = -1
    _check(x, "x", _F32, 1, d, "(I,)")
    I = d[0]
    _check_vec(h, "h", H, "(H,)")
    cdef Py_ssize_t dm[2]
    dm[0] = 3 * H; dm[1] = I
    _check(W_ih, "W_ih", wk, 2, dm, "(3H, I)")
    _check_vec(b_ih, "b_ih", 3 * H, "(3H,)")
    _check_vec(b_hh, "b_hh", 3 * H, "(3H,)")
    _check_step_scales(s_ih, s_hh, wk, H)
    if out is None:
        n = H
        out = _empty(1, &n, cnp.NPY_FLOAT32)
    else:
        _check_vec(out, "out", H, "(H,)", True)
        # out may be h itself (the kernel steps in place), nothing else
        _no_overlap((("out", out),), (("x", x), ("h", None if out is h else h),
                                      ("W_ih", W_ih), ("W_hh", W_hh), ("b_ih", b_ih),
                                      ("b_hh", b_hh)))
    wsb = dre_gru_step_workspace_size(I, H)
    ws = _workspace(wsb)
    cdef const float *px = _f(x)
    cdef const float *ph = _f(h)
    cdef const void *pwi = _data(W_ih)
    cdef const void *pwh = _data(W_hh)
    cdef const float *pbi = _f(b_ih)
    cdef const float *pbh = _f(b_hh)
    cdef const float *psi = _f_or_null(s_ih)
    cdef const float *psh = _f_or_null(s_hh)
    cdef float *po = _f(out)
    cdef void *pw = _data(ws)
    with nogil:
        if wk == _I8:
            st = dre_gru_step_i8(I, H, px, ph, <const int8_t *>pwi, psi, <const int8_t *>pwh, psh,
                                 pbi, pbh, po, pw, wsb)
        elif wk == _F16:
            st = dre_gru_step_f16(I, H, px, ph, <const uint16_t *>pwi, <const uint16_t *>pwh,
                                  pbi, pbh, po, pw, wsb)
        else:
            st = dre_gru_step(I, H, px, ph, <const float *>pwi, <const float *>pwh,
                              pbi, pbh, po, pw, wsb)
    if st != DRE_OK:
        _raise_status(st, "gru_step")
    return out


cdef class GruStepper:
    """A GRU layer's weights, checked once, for streaming single steps.

    ``GruStepper(W_ih, W_hh, b_ih, b_hh)`` validates the weights (shapes
    (3H, I), (3H, H), (3H,), (3H,), float32, C-contiguous) and preallocates
    the step workspace, so :meth:`step` only checks `x`, `h` and `out`.
    W_ih and W_hh may both be float16 instead (IEEE binary16 storage, half
    the memory traffic per step, float32 arithmetic), or both int8 with
    per-row scales ``s_ih``, ``s_hh`` (a quarter; see :func:`gru_step`).

    The arrays are held by reference, not copied: in-place updates of them
    (for example by an optimiser during fine-tuning) are seen by later steps.

    Attributes
    ----------
    W_ih, W_hh, b_ih, b_hh : numpy.ndarray
        The weight arrays (read-only attributes).
    weight_dtype : numpy.dtype
        float32, float16 or int8: the dtype of W_ih and W_hh.
    s_ih, s_hh : numpy.ndarray or None
        Per-row scales of int8 weights.
    input_size : int
        I.
    hidden_size : int
        H.

    Notes
    -----
    Safe to share between threads: a call that finds the preallocated
    workspace in use by another thread allocates its own.
    """

    def __cinit__(self, W_ih, W_hh, b_ih, b_hh, s_ih=None, s_hh=None):
        cdef Py_ssize_t d[2]
        cdef int64_t H
        cdef _Kind wk = _weight_kind(W_ih, W_hh)
        H = _check_W_hh(W_hh, "W_hh", wk)
        d[0] = 3 * H; d[1] = -1
        _check(W_ih, "W_ih", wk, 2, d, "(3H, I)")
        _check_vec(b_ih, "b_ih", 3 * H, "(3H,)")
        _check_vec(b_hh, "b_hh", 3 * H, "(3H,)")
        _check_step_scales(s_ih, s_hh, wk, H)
        self.s_ih = s_ih
        self.s_hh = s_hh
        self._s_ih = _f_or_null(s_ih)
        self._s_hh = _f_or_null(s_hh)
        self.W_ih = W_ih
        self.W_hh = W_hh
        self.b_ih = b_ih
        self.b_hh = b_hh
        self.input_size = d[1]
        self.hidden_size = H
        self._wk = <int>wk
        self.weight_dtype = np.dtype(np.float16 if wk == _F16 else np.int8 if wk == _I8
                                     else np.float32)
        if wk == _I8:
            # packed once: dre_gru_step_i8p gives dre_gru_step_i8's bits, faster
            self._packed = (pack_rows_i8(W_ih), pack_rows_i8(W_hh))
            self._w_ih = _table_data(self._packed[0])
            self._w_hh = _table_data(self._packed[1])
        else:
            self._w_ih = _data(W_ih)
            self._w_hh = _data(W_hh)
        self._b_ih = _f(b_ih)
        self._b_hh = _f(b_hh)
        self._ws_bytes = dre_gru_step_workspace_size(self.input_size, H)
        self._ws = _workspace(self._ws_bytes)
        self._ws_ptr = _data(self._ws)
        self._busy = 0

    def step(self, x, h, out=None):
        """One step: the new hidden state ``GRU(x, h)``.

        Parameters
        ----------
        x : float32 array, shape (I,)
            Input of this step (e.g. the clicked item's embedding).
        h : float32 array, shape (H,)
            Current state.
        out : float32 array, shape (H,), optional
            Where to write the new state; may be `h` itself (in place, no
            allocation: the fastest call).

        Returns
        -------
        h_new : float32 array, shape (H,)
            `out` if given.
        """
        cdef Py_ssize_t d[1]
        cdef cnp.npy_intp n
        cdef dre_status st
        cdef void *pw
        cdef object tmp = None
        d[0] = self.input_size
        if not _ok(x, _F32, 1, d, False):
            _check(x, "x", _F32, 1, d, "(I,)")
        d[0] = self.hidden_size
        if not _ok(h, _F32, 1, d, False):
            _check(h, "h", _F32, 1, d, "(H,)")
        if out is None:
            n = self.hidden_size
            out = _empty(1, &n, cnp.NPY_FLOAT32)
        else:
            if not _ok(out, _F32, 1, d, True):
                _check(out, "out", _F32, 1, d, "(H,)", True)
            # out may be h itself (in place), nothing else (no tuples here:
            # this is the per-click hot path)
            if _overlaps(out, x):
                _overlap_error("out", "x")
            if out is not h and _overlaps(out, h):
                _overlap_error("out", "h")
            if (_overlaps(out, self.W_ih) or _overlaps(out, self.W_hh)
                    or _overlaps(out, self.b_ih) or _overlaps(out, self.b_hh)
                    or _overlaps(out, self.s_ih) or _overlaps(out, self.s_hh)):
                _overlap_error("out", "the stepper's weights")
        cdef const float *px = _f(x)
        cdef const float *ph = _f(h)
        cdef float *po = _f(out)
        # The flag is read and set with the GIL held, so two threads cannot
        # both take the shared workspace.
        if self._busy:
            tmp = _workspace(self._ws_bytes)
            pw = _data(tmp)
        else:
            self._busy = 1
            pw = self._ws_ptr
        with nogil:
            if self._wk == <int>_I8:
                st = dre_gru_step_i8p(self.input_size, self.hidden_size, px, ph,
                                      <const uint8_t *>self._w_ih, self._s_ih,
                                      <const uint8_t *>self._w_hh, self._s_hh,
                                      self._b_ih, self._b_hh, po, pw, self._ws_bytes)
            elif self._wk == <int>_F16:
                st = dre_gru_step_f16(self.input_size, self.hidden_size, px, ph,
                                      <const uint16_t *>self._w_ih, <const uint16_t *>self._w_hh,
                                      self._b_ih, self._b_hh, po, pw, self._ws_bytes)
            else:
                st = dre_gru_step(self.input_size, self.hidden_size, px, ph,
                                  <const float *>self._w_ih, <const float *>self._w_hh,
                                  self._b_ih, self._b_hh, po, pw, self._ws_bytes)
        if tmp is None:
            self._busy = 0
        if st != DRE_OK:
            _raise_status(st, "GruStepper.step")
        return out

    def __repr__(self):
        return (f"GruStepper(input_size={self.input_size}, hidden_size={self.hidden_size}, "
                f"weight_dtype={self.weight_dtype.name})")


# ---------------------------------------------------------------------------
# Dense head
# ---------------------------------------------------------------------------

cdef int _activation(object activation) except -1:
    if activation == "tanh":
        return <int>DRE_ACT_TANH
    if activation == "identity":
        return <int>DRE_ACT_IDENTITY
    raise ValueError(f"activation: expected 'tanh' or 'identity', got {activation!r}")


def head_forward(h, W_p, b_p=None, activation="tanh"):
    """Dense head ``u = act(h @ W_p.T + b_p)``, row by row.

    Parameters
    ----------
    h : float32 array, shape (N, H)
        Last-layer GRU states.
    W_p : float32 array, shape (D, H)
    b_p : float32 array, shape (D,), optional
        None: zeros.
    activation : {"tanh", "identity"}

    Returns
    -------
    u : float32 array, shape (N, D)
        User embeddings.
    """
    cdef Py_ssize_t d[2]
    cdef cnp.npy_intp shp[2]
    cdef int64_t N, H, D
    cdef size_t wsb
    cdef dre_status st
    cdef dre_activation act = <dre_activation>_activation(activation)
    d[0] = -1; d[1] = -1
    _check(h, "h", _F32, 2, d, "(N, H)")
    N = d[0]; H = d[1]
    d[0] = -1; d[1] = H
    _check(W_p, "W_p", _F32, 2, d, "(D, H)")
    D = d[0]
    if b_p is not None:
        _check_vec(b_p, "b_p", D, "(D,)")
    shp[0] = N; shp[1] = D
    u = _empty(2, shp, cnp.NPY_FLOAT32)
    wsb = dre_head_forward_workspace_size(N, H, D)
    ws = _workspace(wsb)
    cdef const float *ph = _f(h)
    cdef const float *pw_ = _f(W_p)
    cdef const float *pb = _f_or_null(b_p)
    cdef float *pu = _f(u)
    cdef void *pw = _data(ws)
    with nogil:
        st = dre_head_forward(N, H, D, ph, pw_, pb, act, pu, pw, wsb)
    if st != DRE_OK:
        _raise_status(st, "head_forward")
    return u


def head_backward(h, W_p, u, du, activation="tanh", dW_p=None, db_p=None,
                  bint need_dh=True):
    """Backward of :func:`head_forward`.

    Parameters
    ----------
    h : float32 array, shape (N, H)
    W_p : float32 array, shape (D, H)
    u : float32 array, shape (N, D)
        Forward output (the tanh derivative is taken from it).
    du : float32 array, shape (N, D)
        Loss gradient of u.
    activation : {"tanh", "identity"}
        As in the forward pass.
    dW_p : float32 array, shape (D, H), optional
        Accumulated in place (+=); zeros allocated when None.
    db_p : float32 array, shape (D,), optional
        Accumulated in place (+=); zeros allocated when None.
    need_dh : bool
        Compute dh.

    Returns
    -------
    dh : float32 array, shape (N, H), or None
        None unless `need_dh`.
    dW_p : float32 array, shape (D, H)
    db_p : float32 array, shape (D,)
    """
    cdef Py_ssize_t d[2]
    cdef cnp.npy_intp shp[2]
    cdef int64_t N, H, D
    cdef size_t wsb
    cdef dre_status st
    cdef dre_activation act = <dre_activation>_activation(activation)
    d[0] = -1; d[1] = -1
    _check(h, "h", _F32, 2, d, "(N, H)")
    N = d[0]; H = d[1]
    d[0] = -1; d[1] = H
    _check(W_p, "W_p", _F32, 2, d, "(D, H)")
    D = d[0]
    _check_mat(u, "u", N, D, "(N, D)")
    _check_mat(du, "du", N, D, "(N, D)")
    shp[0] = D; shp[1] = H
    if dW_p is None:
        dW_p = _zeros(2, shp)
    else:
        _check_mat(dW_p, "dW_p", D, H, "(D, H)", True)
    if db_p is None:
        db_p = _zeros(1, shp)
    else:
        _check_vec(db_p, "db_p", D, "(D,)", True)
    _no_overlap((("dW_p", dW_p), ("db_p", db_p)),
                (("h", h), ("W_p", W_p), ("u", u), ("du", du)))
    shp[0] = N; shp[1] = H
    dh = _empty(2, shp, cnp.NPY_FLOAT32) if need_dh else None
    wsb = dre_head_backward_workspace_size(N, H, D)
    ws = _workspace(wsb)
    cdef const float *ph = _f(h)
    cdef const float *pwp = _f(W_p)
    cdef const float *pu = _f(u)
    cdef const float *pdu = _f(du)
    cdef float *pdh = _f_or_null(dh)
    cdef float *pdw = _f(dW_p)
    cdef float *pdb = _f(db_p)
    cdef void *pw = _data(ws)
    with nogil:
        st = dre_head_backward(N, H, D, ph, pwp, act, pu, pdu, pdh, pdw, pdb, pw, wsb)
    if st != DRE_OK:
        _raise_status(st, "head_backward")
    return dh, dW_p, db_p


# ---------------------------------------------------------------------------
# Sampled losses
# ---------------------------------------------------------------------------

cdef dict _LOSSES = {"xe": DRE_LOSS_XE, "bpr-max": DRE_LOSS_BPR_MAX}


def sampled_loss(U, O_s, target_col, b_s=None, col_ids=None, logq=None, loss="xe",
                 float bpreg=0.0, bint need_grads=True, dO_s=None, db_s=None):
    """Sampled softmax cross-entropy or BPR-max over S sampled columns.

    Logits ``l[b, j] = U[b] . O_s[j] + b_s[j] - logq[j]``.  Row b's true
    next item is column ``target_col[b]``; the other columns are its
    negatives, except columns with the same id as the target when `col_ids`
    is given (a sampled copy of the target is not a negative).

    Parameters
    ----------
    U : float32 array, shape (B, D)
        User vectors (head outputs).
    O_s : float32 array, shape (S, D)
        Output-embedding rows of the sampled columns (usually the batch's
        targets, then negatives shared by the batch).
    target_col : int32 array, shape (B,)
        Column of each row's target, in [0, S); -1 skips the row.
    b_s : float32 array, shape (S,), optional
        Output bias of the columns (None: 0).
    col_ids : int32 array, shape (S,), optional
        Item id of each column, for masking copies of the target.
    logq : float32 array, shape (S,), optional
        log sampling probability of each column (logQ correction; None: none).
    loss : {"xe", "bpr-max"}
        ``"xe"``: ``logsumexp_j l[b, j] - l[b, t]``.  ``"bpr-max"``:
        GRU4Rec's BPR-max with score regularisation `bpreg`.
    bpreg : float
        BPR-max regularisation weight (ignored by "xe").
    need_grads : bool
        Compute dU, dO_s and db_s.
    dO_s : float32 array, shape (S, D), optional
        Accumulated in place (+=); zeros allocated when None.
    db_s : float32 array, shape (S,), optional
        Accumulated in place (+=); zeros allocated when None.

    Returns
    -------
    loss : float
        Mean over the non-skipped rows (0.0 if none).
    row_loss : float32 array, shape (B,)
        Per-row loss (0 for skipped rows).
    dU : float32 array, shape (B, D), or None
        Gradient of the mean loss w.r.t. U (None unless `need_grads`).
    dO_s : float32 array, shape (S, D), or None
    db_s : float32 array, shape (S,), or None

    Raises
    ------
    ValueError
        Wrong dtype, shape or layout; unknown `loss`; gradient accumulators
        given with ``need_grads=False``.
    IndexError
        A `target_col` entry outside [-1, S).
    """
    cdef Py_ssize_t d[2]
    cdef cnp.npy_intp shp[2]
    cdef int64_t B, S, D
    cdef size_t wsb
    cdef dre_status st
    cdef float loss_value = 0.0
    if loss not in _LOSSES:
        raise ValueError(f"loss: expected 'xe' or 'bpr-max', got {loss!r}")
    cdef dre_loss_kind kind = <dre_loss_kind><int>_LOSSES[loss]
    d[0] = -1; d[1] = -1
    _check(U, "U", _F32, 2, d, "(B, D)")
    B = d[0]; D = d[1]
    d[0] = -1; d[1] = D
    _check(O_s, "O_s", _F32, 2, d, "(S, D)")
    S = d[0]
    _check_idx(target_col, "target_col", B, "(B,)")
    if b_s is not None:
        _check_vec(b_s, "b_s", S, "(S,)")
    if col_ids is not None:
        _check_idx(col_ids, "col_ids", S, "(S,)")
    if logq is not None:
        _check_vec(logq, "logq", S, "(S,)")
    shp[0] = B
    row_loss = _empty(1, shp, cnp.NPY_FLOAT32)
    dU = None
    if need_grads:
        shp[0] = B; shp[1] = D
        dU = _empty(2, shp, cnp.NPY_FLOAT32)
        shp[0] = S
        if dO_s is None:
            dO_s = _zeros(2, shp)
        else:
            _check_mat(dO_s, "dO_s", S, D, "(S, D)", True)
        if db_s is None:
            db_s = _zeros(1, shp)
        else:
            _check_vec(db_s, "db_s", S, "(S,)", True)
        _no_overlap((("dO_s", dO_s), ("db_s", db_s)),
                    (("U", U), ("O_s", O_s), ("target_col", target_col), ("b_s", b_s),
                     ("col_ids", col_ids), ("logq", logq)))
    elif dO_s is not None or db_s is not None:
        raise ValueError("dO_s, db_s: gradient accumulators given but need_grads is False")
    wsb = dre_sampled_loss_workspace_size(B, S, D)
    ws = _workspace(wsb)
    cdef const float *pU = _f(U)
    cdef const float *pO = _f(O_s)
    cdef const float *pb = _f_or_null(b_s)
    cdef const int32_t *pt = _i_or_null(target_col)
    cdef const int32_t *pid = _i_or_null(col_ids)
    cdef const float *pq = _f_or_null(logq)
    cdef float *prl = _f(row_loss)
    cdef float *pdU = _f_or_null(dU)
    cdef float *pdO = _f_or_null(dO_s)
    cdef float *pdb = _f_or_null(db_s)
    cdef void *pw = _data(ws)
    with nogil:
        st = dre_sampled_loss(B, S, D, pU, pO, pb, pt, pid, pq, kind, bpreg,
                              &loss_value, prl, pdU, pdO, pdb, pw, wsb)
    if st != DRE_OK:
        _raise_status(st, "sampled_loss", "target_col", target_col, -1, S)
    return float(loss_value), row_loss, dU, dO_s, db_s


# ---------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------

cdef class PackedI8:
    """An int8 row table packed for scoring (made by :func:`pack_rows_i8`).

    The table's bytes in the order SIMD integer dot products read them
    (blocks of 16 rows, 4 columns at a time; ``csrc/include/deeprec_edge.h``,
    ``DRE_DTYPE_I8P``): :func:`score`, :func:`score_topk`,
    :func:`dequantize_rows` and ``StreamCore.topk_table`` take it wherever
    they take an int8 table, with the same per-row ``scale``, and give the
    same bits as on the unpacked table -- faster (AVX512-VNNI: 16 rows x 4
    columns per instruction).  Read-only.

    Attributes
    ----------
    shape : tuple (N, D)
        The unpacked table's shape.
    data : uint8 array
        The packed bytes (``nbytes`` = 16 * ceil(N/16) * 4 * ceil(D/4)).
    """
    cdef readonly object data
    cdef readonly int64_t n_rows
    cdef readonly int64_t n_cols

    def __init__(self, *args, **kwargs):
        raise TypeError("PackedI8 is made by pack_rows_i8(q), not directly")

    @property
    def shape(self):
        return (self.n_rows, self.n_cols)

    @property
    def nbytes(self):
        return 0 if self.data is None else self.data.nbytes

    def __repr__(self):
        return f"PackedI8(shape=({self.n_rows}, {self.n_cols}), nbytes={self.nbytes})"


def pack_rows_i8(q):
    """Pack an int8 row table for scoring (:class:`PackedI8`).

    Parameters
    ----------
    q : int8 array, shape (N, D), C-contiguous

    Returns
    -------
    PackedI8
        The same values, about the same bytes (rows padded to a multiple of
        16 and columns to a multiple of 4); score it with the table's
        per-row scales as the unpacked table.
    """
    cdef Py_ssize_t d[2]
    d[0] = -1; d[1] = -1
    _check(q, "q", _I8, 2, d, "(N, D)")
    cdef int64_t N = d[0], D = d[1]
    cdef int64_t nb = dre_packed_i8_bytes(N, D)
    if nb < 0:
        raise ValueError(f"q: a table of shape ({N}, {D}) is too large to pack")
    cdef cnp.npy_intp shp = nb
    out = _empty(1, &shp, cnp.NPY_UINT8)
    cdef const int8_t *pq = <const int8_t *>_data(q)
    cdef uint8_t *pp = <uint8_t *>_data(out)
    cdef dre_status st
    with nogil:
        st = dre_pack_rows_i8(N, D, pq, pp, nb)
    if st != DRE_OK:
        _raise_status(st, "pack_rows_i8", None, None, 0, N)
    out.flags.writeable = False
    cdef PackedI8 p = PackedI8.__new__(PackedI8)
    p.data = out
    p.n_rows = N
    p.n_cols = D
    return p


cdef inline const void *_table_data(object O) noexcept:
    """The data pointer of a row table (array or PackedI8)."""
    if type(O) is PackedI8:
        return _data((<PackedI8>O).data)
    return _data(O)


cdef _Kind _table_kind(object O) noexcept:
    """The storage of a row table: float16 or int8 arrays by their dtype,
    anything else is checked as float32."""
    if type(O) is PackedI8:
        return _I8P
    if _is_f16(O):
        return _F16
    if _is_i8(O):
        return _I8
    return _F32


cdef dre_dtype _c_dtype(_Kind k) noexcept:
    if k == _I8P:
        return DRE_DTYPE_I8P
    return DRE_DTYPE_I8 if k == _I8 else DRE_DTYPE_F16 if k == _F16 else DRE_DTYPE_F32


cdef int64_t _check_table(object O, str name, int64_t *N, int64_t *D, object scale,
                          _Kind *kind, Py_ssize_t want_n=-1, Py_ssize_t want_d=-1,
                          str sym="(N, D)") except -1:
    """A row table O [N, D] (float32, float16 or int8; want_n / want_d >= 0
    fix a size) and its optional per-row scales [N]."""
    cdef Py_ssize_t d[2]
    d[0] = want_n; d[1] = want_d
    kind[0] = _table_kind(O)
    if kind[0] == _I8P:
        if (<PackedI8>O).data is None:
            raise ValueError(f"{name}: an empty PackedI8 (make one with pack_rows_i8)")
        N[0] = (<PackedI8>O).n_rows; D[0] = (<PackedI8>O).n_cols
        if (want_n >= 0 and N[0] != want_n) or (want_d >= 0 and D[0] != want_d):
            shape = _shape_text(sym, [want_n, want_d])
            raise ValueError(f"{name}: expected a table of shape {shape}, got {O!r}")
        if scale is not None:
            _check_vec(scale, "scale", N[0], "(N,)")
        return 0
    if not _ok(O, kind[0], 2, d, False):
        shape = _shape_text(sym, [want_n, want_d])
        raise ValueError(f"{name}: expected float32, float16 or int8 array of shape {shape} "
                         f"C-contiguous, got {_describe(O)}")
    N[0] = d[0]; D[0] = d[1]
    if scale is not None:
        _check_vec(scale, "scale", N[0], "(N,)")
    return 0


cdef int64_t _check_score_args(object O, object u, object bias, object idx, object scale,
                               int64_t *N, int64_t *D, _Kind *kind) except -1:
    """Shared checks of score / score_topk; returns n (rows to score)."""
    cdef Py_ssize_t d[1]
    _check_table(O, "O", N, D, scale, kind)
    _check_vec(u, "u", D[0], "(D,)")
    if bias is not None:
        _check_vec(bias, "bias", N[0], "(N,)")
    if idx is None:
        return N[0]
    d[0] = -1
    _check(idx, "idx", _I32, 1, d, "(n,)")
    return d[0]


def score(O, u, bias=None, idx=None, scale=None):
    """Candidate scores ``dot(O[r], u) * scale[r] + bias[r]`` for the rows r in `idx`.

    Parameters
    ----------
    O : float32, float16 or int8 array, shape (N, D), or a PackedI8
        Output item embeddings, stored as they are in a model file: float16
        or int8 tables are read as they are (never inflated to float32).
    u : float32 array, shape (D,)
        User embedding.
    bias : float32 array, shape (N,), optional
        Output bias (None: 0).
    scale : float32 array, shape (N,), optional
        Per-row scales (an int8 table's quantisation scales; None: 1).  The
        score of row r is ``dot(O[r], u) * scale[r] + bias[r]``.  float32
        and float16 rows: the dot product summed in float32 over the exactly
        converted stored values, then the scale, then the bias.  int8 rows
        (an array or a :class:`PackedI8`): exactly in integers with u in
        fixed point (``U = rint(u * 2^s)``, ``max|U|`` in [2^21, 2^22]),
        ``float32(I * (scale * 2^-s)) + bias`` -- the same bits on every
        path; a non-finite u scores NaN.
    idx : int32 array, shape (n,), optional
        Rows to score, each in [0, N) (None: all N rows, n = N).

    Returns
    -------
    scores : float32 array, shape (n,)

    Raises
    ------
    IndexError
        An `idx` entry outside [0, N).
    """
    cdef int64_t N, D, n
    cdef cnp.npy_intp shp
    cdef dre_status st
    cdef _Kind kind
    n = _check_score_args(O, u, bias, idx, scale, &N, &D, &kind)
    shp = n
    scores = _empty(1, &shp, cnp.NPY_FLOAT32)
    cdef const void *pO = _table_data(O)
    cdef const float *pb = _f_or_null(bias)
    cdef const float *pu = _f(u)
    cdef const float *psc = _f_or_null(scale)
    cdef const int32_t *pi = _i_or_null(idx)
    cdef float *ps = _f(scores)
    cdef dre_dtype dt = _c_dtype(kind)
    with nogil:
        if kind == _F32 and psc == NULL:
            st = dre_score(N, D, <const float *>pO, pb, pu, pi, n, ps)
        else:
            st = dre_score_rows(N, D, dt, pO, psc, pb, pu, pi, n, ps)
    if st != DRE_OK:
        _raise_status(st, "score", "idx", idx, 0, N)
    return scores


def score_topk(O, u, k, bias=None, idx=None, exclude=None, scale=None):
    """The `k` best candidates, scored and selected in one pass.

    Scores are those of :func:`score`.  Order: higher score first; equal
    scores: lower row first; NaN scores rank below every other score.  The
    selection is exact on those scores, for every storage of `O`.

    Parameters
    ----------
    O, u, bias, scale
        As in :func:`score` (O float32, float16 or int8, read as stored).
    k : int
        Number of results wanted (>= 0).
    idx : int32 array, shape (n,), optional
        Candidate rows, each in [0, N) (None: all rows).
    exclude : uint8 or bool array, shape (N,), optional
        Nonzero marks rows never returned (e.g. items already clicked).

    Returns
    -------
    top_idx : int32 array, shape (m,)
        Rows of O, best first; ``m = min(k, number of eligible rows)``.
    top_score : float32 array, shape (m,)

    Raises
    ------
    ValueError
        Negative `k`, or a wrong array.
    IndexError
        An `idx` entry outside [0, N).
    """
    cdef int64_t N, D, n, kk
    cdef int64_t n_out = 0
    cdef Py_ssize_t d[1]
    cdef cnp.npy_intp shp
    cdef dre_status st
    cdef _Kind kind
    try:
        k = operator.index(k)
    except TypeError:
        raise ValueError(f"k: expected a non-negative integer, got {k!r}") from None
    if k < 0:
        raise ValueError(f"k: expected a non-negative integer, got {k}")
    n = _check_score_args(O, u, bias, idx, scale, &N, &D, &kind)
    if exclude is not None:
        d[0] = N
        _check(exclude, "exclude", _MASK, 1, d, "(N,)")
    kk = n if k > n else <int64_t>k
    shp = kk
    top_idx = _empty(1, &shp, cnp.NPY_INT32)
    top_score = _empty(1, &shp, cnp.NPY_FLOAT32)
    cdef const void *pO = _table_data(O)
    cdef const float *pb = _f_or_null(bias)
    cdef const float *pu = _f(u)
    cdef const float *psc = _f_or_null(scale)
    cdef const int32_t *pi = _i_or_null(idx)
    cdef const uint8_t *pe = NULL
    if exclude is not None:
        pe = <const uint8_t *>_data(exclude)
    cdef int32_t *pti = <int32_t *>_data(top_idx)
    cdef float *pts = _f(top_score)
    cdef dre_dtype dt = _c_dtype(kind)
    with nogil:
        if kind == _F32 and psc == NULL:
            st = dre_score_topk(N, D, <const float *>pO, pb, pu, pi, n, pe, kk, pti, pts, &n_out)
        else:
            st = dre_score_topk_rows(N, D, dt, pO, psc, pb, pu, pi, n, pe, kk, pti, pts, &n_out)
    if st != DRE_OK:
        _raise_status(st, "score_topk", "idx", idx, 0, N)
    if n_out != kk:
        return top_idx[:n_out].copy(), top_score[:n_out].copy()
    return top_idx, top_score


def dequantize_rows(W, idx=None, scale=None):
    """float32 rows of a row table: ``out[i] = f32(W[r]) * scale[r]``, r = idx[i].

    For the few rows a caller needs (an embedding per click, the columns of
    a sampled loss), never for a whole item table.

    Parameters
    ----------
    W : float32, float16 or int8 array, shape (N, D)
    idx : int32 array, shape (n,), optional
        Rows, each in [0, N) (None: all N rows).
    scale : float32 array, shape (N,), optional
        Per-row scales (None: 1).

    Returns
    -------
    rows : float32 array, shape (n, D)

    Raises
    ------
    IndexError
        An `idx` entry outside [0, N).
    """
    cdef int64_t N, D, n
    cdef Py_ssize_t d[1]
    cdef cnp.npy_intp shp[2]
    cdef dre_status st
    cdef _Kind kind
    _check_table(W, "W", &N, &D, scale, &kind)
    n = N
    if idx is not None:
        d[0] = -1
        _check(idx, "idx", _I32, 1, d, "(n,)")
        n = d[0]
    shp[0] = n; shp[1] = D
    out = _empty(2, shp, cnp.NPY_FLOAT32)
    cdef const void *pW = _table_data(W)
    cdef const float *psc = _f_or_null(scale)
    cdef const int32_t *pi = _i_or_null(idx)
    cdef float *po = _f(out)
    cdef dre_dtype dt = _c_dtype(kind)
    with nogil:
        st = dre_dequantize_rows(N, D, dt, pW, psc, pi, n, po)
    if st != DRE_OK:
        _raise_status(st, "dequantize_rows", "idx", idx, 0, N)
    return out


# ---------------------------------------------------------------------------
# Optimisers (in place)
# ---------------------------------------------------------------------------

cdef inline int _check_param(object a, str name) except -1:
    if _ok(a, _F32, -1, NULL, True):
        return 0
    return _bad_array(a, name, _F32, -1, NULL, "of any shape", True)


def adagrad_step(param, grad, accum, float lr, float eps=1e-6):
    """Adagrad, in place: ``accum += g**2; param -= lr * g / sqrt(accum + eps)``.

    Parameters
    ----------
    param : float32 array, any shape
        Updated in place.
    grad : float32 array, shape of `param`
    accum : float32 array, shape of `param`
        Squared-gradient accumulator, updated in place.
    lr, eps : float
    """
    cdef dre_status st
    _check_param(param, "param")
    _check_like(grad, "grad", param, "param", False)
    _check_like(accum, "accum", param, "param", True)
    _no_overlap((("param", param), ("accum", accum)), (("grad", grad),))
    cdef int64_t n = cnp.PyArray_SIZE(<cnp.ndarray>param)
    cdef float *pp = _f(param)
    cdef const float *pg = _f(grad)
    cdef float *pa = _f(accum)
    with nogil:
        st = dre_adagrad_step(n, pp, pg, pa, lr, eps)
    if st != DRE_OK:
        _raise_status(st, "adagrad_step")


cdef int64_t _step_number(object step) except -1:
    """Adam's 1-based step, any Python integer type (not a float: 2.0 is a
    mistake, inf is not a step)."""
    try:
        i = operator.index(step)
    except TypeError:
        raise ValueError(f"step: expected an integer >= 1, got {step!r}") from None
    if not 1 <= i <= 2 ** 63 - 1:
        raise ValueError(f"step: expected an integer >= 1, got {i}")
    return i


def adam_step(param, grad, m, v, step, float lr, float beta1=0.9, float beta2=0.999,
              float eps=1e-8, float weight_decay=0.0):
    """Adam, in place (bias-corrected; torch.optim.Adam semantics).

    Parameters
    ----------
    param : float32 array, any shape
        Updated in place.
    grad : float32 array, shape of `param`
    m, v : float32 arrays, shape of `param`
        First and second moment estimates, updated in place.
    step : int
        1-based step number (for the bias correction).
    lr, beta1, beta2, eps : float
    weight_decay : float
        L2 penalty: adds ``weight_decay * param`` to the gradient.
    """
    cdef dre_status st
    _check_param(param, "param")
    _check_like(grad, "grad", param, "param", False)
    _check_like(m, "m", param, "param", True)
    _check_like(v, "v", param, "param", True)
    _no_overlap((("param", param), ("m", m), ("v", v)), (("grad", grad),))
    cdef int64_t t = _step_number(step)
    cdef int64_t n = cnp.PyArray_SIZE(<cnp.ndarray>param)
    cdef float *pp = _f(param)
    cdef const float *pg = _f(grad)
    cdef float *pm = _f(m)
    cdef float *pv = _f(v)
    with nogil:
        st = dre_adam_step(n, pp, pg, pm, pv, t, lr, beta1, beta2, eps, weight_decay)
    if st != DRE_OK:
        _raise_status(st, "adam_step")


def sgd_step(param, grad, float lr, velocity=None, float momentum=0.0, bint nesterov=False):
    """SGD with momentum, in place (torch.optim.SGD semantics, dampening 0).

    ``vel = momentum * vel + g; param -= lr * (g + momentum * vel if nesterov
    else vel)``.

    Parameters
    ----------
    param : float32 array, any shape
        Updated in place.
    grad : float32 array, shape of `param`
    lr : float
    velocity : float32 array, shape of `param`, optional
        Momentum buffer, updated in place; required when ``momentum != 0``.
    momentum : float
    nesterov : bool
    """
    cdef dre_status st
    _check_param(param, "param")
    _check_like(grad, "grad", param, "param", False)
    if velocity is not None:
        _check_like(velocity, "velocity", param, "param", True)
    elif momentum != 0.0:
        raise ValueError("velocity: a float32 buffer of the shape of param is required "
                         f"when momentum != 0 (momentum={momentum})")
    _no_overlap((("param", param), ("velocity", velocity)), (("grad", grad),))
    cdef int64_t n = cnp.PyArray_SIZE(<cnp.ndarray>param)
    cdef float *pp = _f(param)
    cdef const float *pg = _f(grad)
    cdef float *pv = _f_or_null(velocity)
    with nogil:
        st = dre_sgd_step(n, pp, pg, pv, lr, momentum, nesterov)
    if st != DRE_OK:
        _raise_status(st, "sgd_step")


cdef tuple _pointer_table(object grads, bint out):
    """Check a sequence of float32 arrays; return (arrays, pointers, sizes)."""
    try:
        arrays = list(grads)
    except TypeError:
        raise ValueError(f"grads: expected a sequence of float32 arrays, "
                         f"got {_describe(grads)}") from None
    cdef Py_ssize_t i, nt = len(arrays)
    cdef cnp.npy_intp shp = nt if nt > 0 else 1
    # uintptr_t-sized integers (numpy 1.x headers have no NPY_UINTP)
    ptrs = cnp.PyArray_EMPTY(1, &shp, cnp.NPY_UINT64 if sizeof(uintptr_t) == 8 else cnp.NPY_UINT32, 0)
    sizes = cnp.PyArray_EMPTY(1, &shp, cnp.NPY_INT64, 0)
    cdef uintptr_t *pp = <uintptr_t *>_data(ptrs)
    cdef int64_t *ps = <int64_t *>_data(sizes)
    for i in range(nt):
        a = arrays[i]
        if not _ok(a, _F32, -1, NULL, out):
            _bad_array(a, f"grads[{i}]", _F32, -1, NULL, "of any shape", out)
        pp[i] = <uintptr_t>cnp.PyArray_DATA(<cnp.ndarray>a)
        ps[i] = cnp.PyArray_SIZE(<cnp.ndarray>a)
    cdef Py_ssize_t j
    if out:  # arrays scaled in place: two that overlap would be scaled twice
        for i in range(nt):
            for j in range(i + 1, nt):
                if _overlaps(arrays[i], arrays[j]):
                    _overlap_error(f"grads[{j}]", f"grads[{i}]")
    return arrays, ptrs, sizes


def global_norm(grads):
    """Global L2 norm of several arrays (accumulated in double).

    Parameters
    ----------
    grads : sequence of float32 arrays (any shapes)

    Returns
    -------
    float
        ``sqrt(sum of squares of every element)``; 0.0 for an empty sequence.
    """
    cdef double norm = 0.0
    cdef dre_status st
    arrays, ptrs, sizes = _pointer_table(grads, False)
    cdef int64_t nt = len(arrays)
    cdef const float *const *pp = <const float *const *>_data(ptrs)
    cdef const int64_t *ps = <const int64_t *>_data(sizes)
    with nogil:
        st = dre_global_norm(nt, pp, ps, &norm)
    if st != DRE_OK:
        _raise_status(st, "global_norm")
    return norm


def clip_by_global_norm(grads, float max_norm):
    """Scale the arrays in place so that their global L2 norm is <= max_norm.

    Nothing changes if the norm is already <= `max_norm`.  The arrays
    must not share memory (one listed twice, or two views of one buffer,
    would be scaled twice): that raises ValueError.

    Parameters
    ----------
    grads : sequence of writeable float32 arrays (any shapes)
    max_norm : float
        > 0.

    Returns
    -------
    float
        The global norm before clipping.
    """
    cdef double norm = 0.0
    cdef dre_status st
    if not max_norm > 0:
        raise ValueError(f"max_norm: expected a positive number, got {max_norm}")
    arrays, ptrs, sizes = _pointer_table(grads, True)
    cdef int64_t nt = len(arrays)
    cdef float *const *pp = <float *const *>_data(ptrs)
    cdef const int64_t *ps = <const int64_t *>_data(sizes)
    with nogil:
        st = dre_clip_by_global_norm(nt, pp, ps, max_norm, &norm)
    if st != DRE_OK:
        _raise_status(st, "clip_by_global_norm")
    return norm


cdef int64_t _check_rows_args(object table, object rows, object grad_rows,
                              int64_t *n_rows, int64_t *D) except -1:
    """table [n_rows, D] writeable, rows int32 [n], grad_rows [n, D]; returns n."""
    cdef Py_ssize_t d[2]
    d[0] = -1; d[1] = -1
    _check(table, "table", _F32, 2, d, "(n_rows, D)", True)
    n_rows[0] = d[0]; D[0] = d[1]
    d[0] = -1
    _check(rows, "rows", _I32, 1, d, "(n,)")
    _check_mat(grad_rows, "grad_rows", d[0], D[0], "(n, D)")
    return d[0]


def adagrad_rows(table, accum, rows, grad_rows, float lr, float eps=1e-6):
    """Sparse Adagrad on the listed rows of a table, in place.

    Parameters
    ----------
    table : float32 array, shape (n_rows, D)
    accum : float32 array, shape (n_rows, D)
    rows : int32 array, shape (n,)
        Rows to update, each in [0, n_rows), updated in list order; list each
        row once (sum duplicate gradients first) for the usual semantics.
    grad_rows : float32 array, shape (n, D)
    lr, eps : float

    Raises
    ------
    IndexError
        A `rows` entry outside [0, n_rows) (nothing is updated then).
    """
    cdef int64_t n_rows, D, n
    cdef dre_status st
    n = _check_rows_args(table, rows, grad_rows, &n_rows, &D)
    _check_mat(accum, "accum", n_rows, D, "(n_rows, D)", True)
    _no_overlap((("table", table), ("accum", accum)), (("rows", rows), ("grad_rows", grad_rows)))
    cdef float *pt = _f(table)
    cdef float *pa = _f(accum)
    cdef const int32_t *pr = _i_or_null(rows)
    cdef const float *pg = _f(grad_rows)
    with nogil:
        st = dre_adagrad_rows(n_rows, D, pt, pa, n, pr, pg, lr, eps)
    if st != DRE_OK:
        _raise_status(st, "adagrad_rows", "rows", rows, 0, n_rows)


def adam_rows(table, m, v, rows, grad_rows, step, float lr, float beta1=0.9,
              float beta2=0.999, float eps=1e-8):
    """Sparse ("lazy") Adam on the listed rows of a table, in place.

    Only the listed rows' moments are updated; the bias correction uses the
    global `step`.

    Parameters
    ----------
    table : float32 array, shape (n_rows, D)
    m, v : float32 arrays, shape (n_rows, D)
    rows : int32 array, shape (n,)
        Each in [0, n_rows); list each row once.
    grad_rows : float32 array, shape (n, D)
    step : int
        1-based global step.
    lr, beta1, beta2, eps : float

    Raises
    ------
    IndexError
        A `rows` entry outside [0, n_rows) (nothing is updated then).
    """
    cdef int64_t n_rows, D, n
    cdef dre_status st
    n = _check_rows_args(table, rows, grad_rows, &n_rows, &D)
    _check_mat(m, "m", n_rows, D, "(n_rows, D)", True)
    _check_mat(v, "v", n_rows, D, "(n_rows, D)", True)
    _no_overlap((("table", table), ("m", m), ("v", v)),
                (("rows", rows), ("grad_rows", grad_rows)))
    cdef int64_t t = _step_number(step)
    cdef float *pt = _f(table)
    cdef float *pm = _f(m)
    cdef float *pv = _f(v)
    cdef const int32_t *pr = _i_or_null(rows)
    cdef const float *pg = _f(grad_rows)
    with nogil:
        st = dre_adam_rows(n_rows, D, pt, pm, pv, n, pr, pg, t, lr, beta1, beta2, eps)
    if st != DRE_OK:
        _raise_status(st, "adam_rows", "rows", rows, 0, n_rows)


def sgd_rows(table, rows, grad_rows, float lr):
    """Sparse SGD on the listed rows: ``table[rows[i]] -= lr * grad_rows[i]``.

    Parameters
    ----------
    table : float32 array, shape (n_rows, D)
    rows : int32 array, shape (n,)
        Each in [0, n_rows).
    grad_rows : float32 array, shape (n, D)
    lr : float

    Raises
    ------
    IndexError
        A `rows` entry outside [0, n_rows) (nothing is updated then).
    """
    cdef int64_t n_rows, D, n
    cdef dre_status st
    n = _check_rows_args(table, rows, grad_rows, &n_rows, &D)
    _no_overlap((("table", table),), (("rows", rows), ("grad_rows", grad_rows)))
    cdef float *pt = _f(table)
    cdef const int32_t *pr = _i_or_null(rows)
    cdef const float *pg = _f(grad_rows)
    with nogil:
        st = dre_sgd_rows(n_rows, D, pt, n, pr, pg, lr)
    if st != DRE_OK:
        _raise_status(st, "sgd_rows", "rows", rows, 0, n_rows)


# ---------------------------------------------------------------------------
# Streaming state (StreamCore): kept in this module so it shares the helpers
# above (_check, _f, _data, _workspace, _raise_status) and the dispatch state.
# ---------------------------------------------------------------------------

include "_stream.pxi"


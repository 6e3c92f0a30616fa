# Included at the end of _core.pyx (one extension module, so one dispatch
# state shared with the other kernels).  The streaming hot path: one click
# advances every GRU layer with the batch-1 step kernel and recomputes the
# user vector, all in one call without the GIL; top-k ranks with the fused
# scoring kernel.  The Python-level Session (deeprec_edge/session.py) adds
# locking, item-id mapping and persistence on top.

from cpython.mem cimport PyMem_Malloc, PyMem_Free
from libc.string cimport memset, memcpy


cdef class StreamCore:
    """Streaming state of a stacked GRU and its dense head.

    Parameters
    ----------
    E : float32, float16 or int8 [N, e]
        Input item embeddings (a compressed table is read one row per click,
        never inflated).
    layers : sequence of (W_ih, W_hh, b_ih, b_hh) or (W_ih, W_hh, b_ih, b_hh, s_ih, s_hh)
        GRU layers (PyTorch layout, gate order r, z, n); layer 0 has input
        size ``e``, layer l input size ``H_{l-1}``.  W_ih and W_hh both
        float32, both float16, or both int8 with per-row scales s_ih, s_hh
        (float32 [3H] or None); each layer steps with the kernel of its
        storage.
    W_p, b_p : float32 [d, H_L], [d]
        Dense head ``u = act(W_p h + b_p)``.
    O, b_out : float32, float16 or int8 [N, d]; float32 [N]
        Output item table and bias: ``score(i) = dot(O_i, u) * O_scale_i + b_out_i``.
    activation : {"tanh", "identity"}
    weight_dtype : {"float32", "float16"}
        Storage of float32 GRU weight matrices for the step kernel.
        "float16" keeps an IEEE binary16 copy of every float32 W_ih and W_hh
        (half the bytes streamed per click; float32 arithmetic) -- the state
        then follows the float32 recurrence on the rounded weights.  Layers
        stored float16 or int8 are stepped as they are either way.
    E_scale, O_scale : float32 [N], optional
        Per-row scales of an int8 (or scaled float16) E and O.

    The arrays are referenced, not copied (except the float16 weight
    copies): do not modify them while the object is in use.  Not
    thread-safe by itself (Session adds a lock).
    """
    cdef object _keep          # references keeping the arrays alive
    cdef object _state         # float32 [sum(H)]: every layer's state
    cdef object _u             # float32 [d]
    cdef object _ws            # uint8 workspace of the largest step
    cdef int64_t N, e, L, d, Hsum
    cdef int64_t *ins
    cdef int64_t *hs
    cdef int64_t *offs
    cdef const void **wih
    cdef const void **whh
    cdef const float **bih
    cdef const float **bhh
    cdef const float **sih
    cdef const float **shh
    cdef int *wk                # per layer: _F32, _F16 or _I8
    cdef const void *E_p
    cdef const float *Es_p
    cdef dre_dtype E_dt
    cdef bint E_plain           # float32 without scales: the row is used in place
    cdef float *x_p             # the clicked row, dequantised
    cdef const float *Os_p
    cdef dre_dtype O_dt
    cdef object _x
    cdef const float *Wp_p
    cdef const float *bp_p
    cdef const void *O_p
    cdef const float *bo_p
    cdef float *state_p
    cdef float *u_p
    cdef void *ws_p
    cdef size_t ws_bytes
    cdef bint tanh_act
    cdef bint half
    cdef readonly object weight_dtype
    # the candidate table held by set_candidates (None: none)
    cdef object _cand_keep
    cdef int64_t C_n
    cdef dre_dtype C_dt
    cdef const void *C_p
    cdef const float *Cs_p
    cdef const float *Cb_p
    cdef const int64_t *Cid_p

    def __cinit__(self, E, layers, W_p, b_p, O, b_out, activation="tanh",
                  weight_dtype="float32", E_scale=None, O_scale=None):
        cdef Py_ssize_t dims[2]
        cdef int64_t l, inp, H, nE, dO
        cdef _Kind kind
        self.ins = NULL
        self.wih = NULL
        self.wk = NULL
        layers = list(layers)
        if len(layers) < 1:
            raise ValueError("layers: expected at least one GRU layer, got 0")
        if activation not in ("tanh", "identity"):
            raise ValueError(f"activation: expected 'tanh' or 'identity', got {activation!r}")
        self.tanh_act = activation == "tanh"
        if weight_dtype not in ("float32", "float16"):
            raise ValueError(f"weight_dtype: expected 'float32' or 'float16', got {weight_dtype!r}")
        self.half = weight_dtype == "float16"
        self.weight_dtype = weight_dtype
        _check_table(E, "E", &nE, &self.e, E_scale, &kind)
        self.N = nE
        self.E_dt = _c_dtype(kind)
        self.E_plain = kind == _F32 and E_scale is None
        self.L = len(layers)
        self.ins = <int64_t *>PyMem_Malloc(3 * self.L * sizeof(int64_t))
        self.wih = <const void **>PyMem_Malloc(6 * self.L * sizeof(void *))
        self.wk = <int *>PyMem_Malloc(self.L * sizeof(int))
        if self.ins == NULL or self.wih == NULL or self.wk == NULL:
            raise MemoryError()
        self.hs = self.ins + self.L
        self.offs = self.ins + 2 * self.L
        self.whh = self.wih + self.L
        self.bih = <const float **>(self.wih + 2 * self.L)
        self.bhh = <const float **>(self.wih + 3 * self.L)
        self.sih = <const float **>(self.wih + 4 * self.L)
        self.shh = <const float **>(self.wih + 5 * self.L)
        keep = [E, W_p, b_p, O, b_out, E_scale, O_scale]
        inp = self.e
        self.Hsum = 0
        cdef size_t ws_max = 0, ws
        for l in range(self.L):
            if len(layers[l]) not in (4, 6):
                raise ValueError(f"layers[{l}]: expected (W_ih, W_hh, b_ih, b_hh) or (W_ih, W_hh, "
                                 f"b_ih, b_hh, s_ih, s_hh), got {len(layers[l])} arrays")
            W_ih, W_hh, b_ih, b_hh = layers[l][:4]
            s_ih, s_hh = layers[l][4:] if len(layers[l]) == 6 else (None, None)
            kind = _weight_kind(W_ih, W_hh)
            dims[0] = -1; dims[1] = -1
            _check(W_hh, f"layers[{l}].W_hh", kind, 2, dims, "(3H, H)")
            H = dims[1]
            if dims[0] != 3 * H:
                raise ValueError(f"layers[{l}].W_hh: expected shape (3H, H), got {tuple(W_hh.shape)}")
            dims[0] = 3 * H; dims[1] = inp
            _check(W_ih, f"layers[{l}].W_ih", kind, 2, dims, f"(3H={3 * H}, I={inp})")
            dims[0] = 3 * H
            _check(b_ih, f"layers[{l}].b_ih", _F32, 1, dims, f"(3H={3 * H},)")
            _check(b_hh, f"layers[{l}].b_hh", _F32, 1, dims, f"(3H={3 * H},)")
            _check_step_scales(s_ih, s_hh, kind, H)
            self.ins[l] = inp
            self.hs[l] = H
            self.offs[l] = self.Hsum
            self.Hsum += H
            if self.half and kind == _F32:
                kind = _F16
                # checked as float32 above; binary16 copies, rounded to nearest even
                with np.errstate(over="ignore"):
                    W_ih = np.ascontiguousarray(W_ih.astype(np.float16))
                    W_hh = np.ascontiguousarray(W_hh.astype(np.float16))
                for a, part in ((W_ih, "W_ih"), (W_hh, "W_hh")):
                    if np.isinf(a).any():
                        raise ValueError(f"layers[{l}].{part}: a weight of magnitude >= 65520 "
                                         f"does not fit float16 (weight_dtype='float16'); "
                                         f"use weight_dtype='float32'")
            self.wk[l] = <int>kind
            if kind == _I8:  # packed once for dre_gru_step_i8p (dre_gru_step_i8's bits)
                W_ih = pack_rows_i8(W_ih); W_hh = pack_rows_i8(W_hh)
            self.wih[l] = _table_data(W_ih); self.whh[l] = _table_data(W_hh)
            self.bih[l] = _f(b_ih); self.bhh[l] = _f(b_hh)
            self.sih[l] = _f_or_null(s_ih); self.shh[l] = _f_or_null(s_hh)
            keep.extend([W_ih, W_hh, b_ih, b_hh, s_ih, s_hh])
            ws = dre_gru_step_workspace_size(inp, H)
            if ws > ws_max:
                ws_max = ws
            inp = H
        dims[0] = -1; dims[1] = inp
        _check(W_p, "W_p", _F32, 2, dims, f"(d, H={inp})")
        self.d = dims[0]
        _check(b_p, "b_p", _F32, 1, dims, f"(d={self.d},)")
        _check_table(O, "O", &nE, &dO, O_scale, &kind, self.N, self.d, "(N, d)")
        self.O_dt = _c_dtype(kind)
        dims[0] = self.N
        _check(b_out, "b_out", _F32, 1, dims, f"(N={self.N},)")
        self._keep = keep
        self.E_p = _data(E); self.Es_p = _f_or_null(E_scale)
        self.Wp_p = _f(W_p); self.bp_p = _f(b_p)
        self.O_p = _table_data(O); self.Os_p = _f_or_null(O_scale); self.bo_p = _f(b_out)
        self._x = np.zeros(max(self.e, 1), np.float32)
        self.x_p = _f(self._x)
        self._state = np.zeros(max(self.Hsum, 1), np.float32)
        self._u = np.zeros(max(self.d, 1), np.float32)
        self._ws = _workspace(ws_max)
        self.state_p = _f(self._state)
        self.u_p = _f(self._u)
        self.ws_p = _data(self._ws)
        self.ws_bytes = ws_max
        self._head()

    def __dealloc__(self):
        PyMem_Free(self.ins)
        PyMem_Free(self.wih)
        PyMem_Free(self.wk)

    cdef dre_status _head(self) noexcept nogil:
        """u = act(W_p h_L + b_p): one matrix-vector product (no packing)."""
        return dre_head_forward_row(self.hs[self.L - 1], self.d,
                                    self.state_p + self.offs[self.L - 1], self.Wp_p, self.bp_p,
                                    DRE_ACT_TANH if self.tanh_act else DRE_ACT_IDENTITY,
                                    self.u_p)

    @property
    def n_items(self):
        """Number of items N."""
        return self.N

    @property
    def dim(self):
        """User-vector size d."""
        return self.d

    def click(self, int64_t item):
        """Advance every layer by one click on dense item index ``item``.

        Raises IndexError for an index outside [0, N).
        """
        cdef int64_t l
        cdef const float *x
        cdef dre_status st = DRE_OK
        if item < 0 or item >= self.N:
            raise IndexError(f"click: item index {item} is outside [0, {self.N - 1}]")
        cdef int32_t row = <int32_t>item
        with nogil:
            if self.E_plain:
                x = <const float *>self.E_p + item * self.e
            else:  # the clicked row only
                st = dre_dequantize_rows(self.N, self.e, self.E_dt, self.E_p, self.Es_p, &row, 1,
                                         self.x_p)
                x = self.x_p
            for l in range(self.L):
                if st != DRE_OK:
                    break
                if self.wk[l] == <int>_I8:
                    st = dre_gru_step_i8p(self.ins[l], self.hs[l], x, self.state_p + self.offs[l],
                                          <const uint8_t *>self.wih[l], self.sih[l],
                                          <const uint8_t *>self.whh[l], self.shh[l],
                                          self.bih[l], self.bhh[l],
                                          self.state_p + self.offs[l], self.ws_p, self.ws_bytes)
                elif self.wk[l] == <int>_F16:
                    st = dre_gru_step_f16(self.ins[l], self.hs[l], x, self.state_p + self.offs[l],
                                          <const uint16_t *>self.wih[l],
                                          <const uint16_t *>self.whh[l], self.bih[l], self.bhh[l],
                                          self.state_p + self.offs[l], self.ws_p, self.ws_bytes)
                else:
                    st = dre_gru_step(self.ins[l], self.hs[l], x, self.state_p + self.offs[l],
                                      <const float *>self.wih[l], <const float *>self.whh[l],
                                      self.bih[l], self.bhh[l],
                                      self.state_p + self.offs[l], self.ws_p, self.ws_bytes)
                if st != DRE_OK:
                    break
                x = self.state_p + self.offs[l]
            if st == DRE_OK:
                st = self._head()
        if st != DRE_OK:
            _raise_status(st, "StreamCore.click")

    def reset(self):
        """Zero every layer's state (a new session) and recompute u."""
        memset(self.state_p, 0, self.Hsum * sizeof(float))
        self._head()

    cdef tuple _topk(self, int64_t k, int64_t N, dre_dtype dt, const void *O_p, const float *s_p,
                     const float *b_p, const int32_t *ip, int64_t n, const uint8_t *xp, str who,
                     object idx):
        """The one dre_score_topk call of topk and topk_table: outputs
        allocated for min(k, n) and trimmed to what came back."""
        cdef int64_t n_out = 0
        cdef dre_status st
        cdef int64_t kk = k if k < n else n
        cdef cnp.npy_intp m = kk
        out_i = _empty(1, &m, cnp.NPY_INT32)
        out_s = _empty(1, &m, cnp.NPY_FLOAT32)
        cdef int32_t *oi = <int32_t *>_data(out_i) if kk > 0 else NULL
        cdef float *os_ = _f(out_s) if kk > 0 else NULL
        with nogil:
            if dt == DRE_DTYPE_F32 and s_p == NULL:
                st = dre_score_topk(N, self.d, <const float *>O_p, b_p, self.u_p, ip, n, xp, kk,
                                    oi, os_, &n_out)
            else:
                st = dre_score_topk_rows(N, self.d, dt, O_p, s_p, b_p, self.u_p, ip, n, xp, kk, oi,
                                         os_, &n_out)
        if st != DRE_OK:
            _raise_status(st, who, "idx", idx, 0, N)
        if n_out < kk:
            return out_i[:n_out].copy(), out_s[:n_out].copy()
        return out_i, out_s

    def topk(self, int64_t k, idx=None, exclude=None):
        """The ``k`` best items for the current user vector.

        ``idx`` (int32 [n], None: every item) restricts the candidates;
        ``exclude`` (uint8/bool [N]) marks items never returned.  Returns
        ``(items int32 [m], scores float32 [m])``, best first, ties to the
        lower index, ``m = min(k, eligible)``.
        """
        cdef Py_ssize_t dims[1]
        cdef int64_t n = self.N
        cdef const int32_t *ip = NULL
        cdef const uint8_t *xp = NULL
        if k < 0:
            raise ValueError(f"k: expected k >= 0, got {k}")
        if idx is not None:
            dims[0] = -1
            _check(idx, "idx", _I32, 1, dims, "(n,)")
            n = dims[0]
            ip = <const int32_t *>_data(idx)
        if exclude is not None:
            dims[0] = self.N
            _check(exclude, "exclude", _MASK, 1, dims, f"(N={self.N},)")
            xp = <const uint8_t *>_data(exclude)
        return self._topk(k, self.N, self.O_dt, self.O_p, self.Os_p, self.bo_p, ip, n, xp,
                          "StreamCore.topk", idx)

    cdef int64_t _check_cand_table(self, object O_c, object b_c, object ids, object scale,
                                   _Kind *kind) except -1:
        """The checks of a candidate table (topk_table, set_candidates); returns n."""
        cdef Py_ssize_t dims[1]
        cdef int64_t n, dc
        _check_table(O_c, "O_c", &n, &dc, scale, kind, -1, self.d, "(n, d)")
        dims[0] = n
        if b_c is not None:
            _check(b_c, "b_c", _F32, 1, dims, f"(n={n},)")
        if ids is not None:
            if not (cnp.PyArray_Check(ids) and cnp.PyArray_TYPE(<cnp.ndarray>ids) == cnp.NPY_INT64
                    and cnp.PyArray_NDIM(<cnp.ndarray>ids) == 1 and ids.shape[0] == n
                    and cnp.PyArray_ISCARRAY_RO(<cnp.ndarray>ids)):
                raise ValueError(f"ids: expected int64 array of shape (n={n},) C-contiguous, "
                                 f"got {_describe(ids)}")
        return n

    cdef tuple _topk_mapped(self, int64_t k, int64_t n, dre_dtype dt, const void *O_p,
                            const float *s_p, const float *b_p, object exclude,
                            const int64_t *idp, str who):
        """_topk over a candidate table, the rows mapped through ids (in C)."""
        cdef Py_ssize_t dims[1]
        cdef const uint8_t *xp = NULL
        cdef int64_t j
        if k < 0:
            raise ValueError(f"k: expected k >= 0, got {k}")
        if exclude is not None:
            dims[0] = n
            _check(exclude, "exclude", _MASK, 1, dims, f"(n={n},)")
            xp = <const uint8_t *>_data(exclude)
        rows, scores = self._topk(k, n, dt, O_p, s_p, b_p, NULL, n, xp, who, None)
        if idp == NULL:
            return rows, scores
        cdef cnp.npy_intp m = rows.shape[0]
        out = _empty(1, &m, cnp.NPY_INT64)
        cdef int64_t *op = <int64_t *>_data(out)
        cdef const int32_t *rp = <const int32_t *>_data(rows)
        for j in range(m):
            op[j] = idp[rp[j]]
        return out, scores

    def topk_table(self, int64_t k, O_c, b_c=None, exclude=None, ids=None, scale=None):
        """The ``k`` best rows of a candidate table for the current user vector.

        ``O_c`` (float32, float16 or int8 [n, d] or a packed int8 table,
        with per-row ``scale`` float32 [n] or None) and ``b_c`` (float32 [n],
        None: zeros) are the candidates' output rows and biases, gathered
        once, in the storage of the model's table (contiguous rows stream
        faster than rows picked from the whole table);
        ``exclude`` (uint8/bool [n]) marks rows never returned.  Returns
        ``(rows, scores)`` best first -- ties to the lower row -- with rows
        replaced by ``ids[row]`` when ``ids`` (int64 [n]) is given (the
        mapping is done here, in C, not by numpy fancy indexing).
        """
        cdef _Kind kind
        cdef int64_t n = self._check_cand_table(O_c, b_c, ids, scale, &kind)
        return self._topk_mapped(k, n, _c_dtype(kind), _table_data(O_c), _f_or_null(scale),
                                 NULL if b_c is None else _f(b_c), exclude,
                                 NULL if ids is None else <const int64_t *>_data(ids),
                                 "StreamCore.topk_table")

    def set_candidates(self, O_c, b_c=None, ids=None, scale=None):
        """Hold a candidate table for :meth:`topk_candidates`: the arguments of
        :meth:`topk_table`, checked once and kept by reference (not copied;
        do not change them while held).  ``set_candidates(None)`` lets go."""
        cdef _Kind kind
        if O_c is None:
            self._cand_keep = None
            return
        cdef int64_t n = self._check_cand_table(O_c, b_c, ids, scale, &kind)
        self._cand_keep = (O_c, b_c, ids, scale)
        self.C_n = n
        self.C_dt = _c_dtype(kind)
        self.C_p = _table_data(O_c)
        self.Cs_p = _f_or_null(scale)
        self.Cb_p = NULL if b_c is None else _f(b_c)
        self.Cid_p = NULL if ids is None else <const int64_t *>_data(ids)

    def topk_candidates(self, int64_t k, exclude=None, b_c=None):
        """:meth:`topk_table` on the table held by :meth:`set_candidates`
        (only ``k``, ``exclude`` and ``b_c`` are checked per call: the
        streaming call of a session with a fixed candidate list); ``b_c``
        (float32 [n]) replaces the held biases for this call."""
        cdef Py_ssize_t dims[1]
        cdef const float *bp = self.Cb_p
        if self._cand_keep is None:
            raise ValueError("StreamCore.topk_candidates: no candidate table "
                             "(call set_candidates first)")
        if b_c is not None:
            dims[0] = self.C_n
            _check(b_c, "b_c", _F32, 1, dims, f"(n={self.C_n},)")
            bp = _f(b_c)
        return self._topk_mapped(k, self.C_n, self.C_dt, self.C_p, self.Cs_p, bp, exclude,
                                 self.Cid_p, "StreamCore.topk_candidates")

    @property
    def layer_dtypes(self):
        """Storage of each layer's weights for the step: "float32", "float16" or "int8"."""
        return [("float32", "", "", "float16", "int8")[self.wk[l]] for l in range(self.L)]

    @property
    def user_vector(self):
        """A copy of the current user vector u (float32 [d])."""
        return self._u[:self.d].copy()

    def get_state(self):
        """A copy of every layer's state, concatenated (float32 [sum H])."""
        return self._state[:self.Hsum].copy()

    def set_state(self, state):
        """Restore states saved by :meth:`get_state` (and recompute u)."""
        a = np.asarray(state)
        if a.dtype != np.float32 or a.ndim != 1 or a.shape[0] != self.Hsum:
            raise ValueError(f"state: expected float32 array of shape ({self.Hsum},), "
                             f"got {a.dtype} array of shape {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError("state: contains NaN or Inf")
        a = np.ascontiguousarray(a)
        memcpy(self.state_p, _f(a), self.Hsum * sizeof(float))
        self._head()

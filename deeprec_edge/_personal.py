"""The personal parts of a model, fitted on the device (parameter-efficient
fine-tuning).

With the GRU layers frozen, the user's history gives one hidden state ``h_r``
per next-click event ``r`` (computed once).  The personal parts change how
those states score items:

==========  ==============================================================
``offset``  a user offset ``delta`` of the head: ``u = act(W_p h + b_p + delta)``
            (d numbers; with an identity head it moves the user embedding)
``bias``    personal output biases ``beta_i`` of the items in the user's own
            history (stored as the model file's ``personal.bias``)
``repeat``  personal weights ``w`` of the repeat component
            (:mod:`deeprec_edge.repeat`): how much this user returns to her
            items, and how soon
``head``    the head matrix ``W_p`` itself (d x H numbers)
==========  ==============================================================

scored as ``s_ri = scale * (O_i . u_r + b_i + beta_i) + w . phi_ri``.  They
are the maximum a-posteriori estimate under a Gaussian prior centred on the
global model: minimise

    sum_r CE(s_r, target_r) + l2/2 * (|delta|^2 + |beta|^2 + |w - w_g|^2 + |W_p - W_p,g|^2)

(the prior's strength ``l2`` is per part), a smooth problem solved exactly
with :func:`deeprec_edge._lbfgs.minimize` over the full catalogue, or -- for
catalogues larger than ``full_softmax_limit`` -- over a fixed column set:
the targets, the user's items and ``n_negatives`` items drawn (seeded)
proportionally to popularity^alpha, with the logQ correction on the drawn
ones.  The more clicks a user has, the further the data may pull the
personal parts from the global model: that is what the prior is for.

numpy plus the C kernels' sgemm.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from . import kernels as K
from ._lbfgs import minimize
from .repeat import FEATURES, RepeatSpec, feature_dot

__all__ = ["PARTS", "PersonalData", "PersonalFit", "fit_personal", "personal_loss"]

#: The personal parts, in packing order.
PARTS: Tuple[str, ...] = ("style", "offset", "bias", "repeat", "head")
F32 = np.float32


@dataclass
class PersonalData:
    """One user's events, prepared once (frozen GRU)."""

    H: np.ndarray            #: float32 [n, H_last]: last-layer state after each input click
    targets: np.ndarray      #: int64 [n]: dense index of each event's next click
    rows: np.ndarray         #: int64 [nnz]: repeat cells (row of the event)
    cols: np.ndarray         #: int64 [nnz]: repeat cells (dense item index)
    phi: np.ndarray          #: float32 [nnz, F]: repeat features of the cells
    bias_items: np.ndarray   #: int64 [k]: the user's distinct items (personal biases)
    columns: Optional[np.ndarray] = None  #: int64 [C] scored columns (None: every item)
    logq: Optional[np.ndarray] = None     #: float32 [C]: logQ correction of the columns
    basis: Optional[np.ndarray] = None    #: float32 [d, r]: the ``style`` part's directions

    @property
    def n(self) -> int:
        return int(self.targets.shape[0])

    def subset(self, sel: np.ndarray) -> "PersonalData":
        """The events ``sel`` (sorted int indices), same columns."""
        sel = np.asarray(sel, np.int64)
        remap = np.full(self.n, -1, np.int64)
        remap[sel] = np.arange(sel.size)
        keep = remap[self.rows] >= 0
        return PersonalData(self.H[sel], self.targets[sel], remap[self.rows[keep]],
                            self.cols[keep], self.phi[keep], self.bias_items, self.columns,
                            self.logq, self.basis)


@dataclass
class PersonalFit:
    """Result of :func:`fit_personal`: the personal values (``None`` for a
    part not fitted) and the optimiser's record."""

    delta: Optional[np.ndarray] = None     #: the head offset (offset and style parts together)
    style: Optional[np.ndarray] = None     #: the style coordinates (delta includes basis @ style)
    w: Optional[np.ndarray] = None
    beta: Optional[np.ndarray] = None
    W_p: Optional[np.ndarray] = None
    loss: float = float("nan")
    info: Dict[str, object] = field(default_factory=dict)


class _Problem:
    """The objective of one user (see the module docstring)."""

    def __init__(self, data: PersonalData, params, spec: RepeatSpec, parts: Sequence[str],
                 l2: Dict[str, float], weights: Optional[np.ndarray] = None,
                 block_elems: int = 1 << 21):
        self.d = data
        self.p = params
        self.spec = spec
        self.parts = tuple(x for x in PARTS if x in parts)
        self.l2 = {k: float(l2.get(k, 0.0)) for k in PARTS}
        N = params.n_items
        cols = np.arange(N, dtype=np.int64) if data.columns is None else data.columns
        self.C = cols.size
        pos = np.full(N, -1, np.int64)
        pos[cols] = np.arange(cols.size)
        self.tcol = pos[data.targets]
        if (self.tcol < 0).any():
            raise ValueError("every target must be among the scored columns")
        self.ccol = pos[data.cols]
        keep = self.ccol >= 0
        self.rows, self.ccol, self.phi = data.rows[keep], self.ccol[keep], data.phi[keep]
        self.bcol = pos[data.bias_items]
        if (self.bcol < 0).any():
            raise ValueError("every personal-bias item must be among the scored columns")
        self.O_c = np.ascontiguousarray(params.out_table[cols])
        self.b_c = np.ascontiguousarray(params.b_out[cols])
        self.logq = None if data.logq is None else np.asarray(data.logq, F32)
        self.wts = None if weights is None else np.asarray(weights, np.float64)
        self.tanh = params.activation == "tanh"
        self.scale = F32(spec.scale)
        self.w0 = spec.weights.astype(np.float64)
        self.W0 = params.W_p.astype(np.float64)
        self.Z0 = None
        if "head" not in self.parts:
            self.Z0 = K.head_forward(np.ascontiguousarray(data.H, F32), params.W_p, params.b_p,
                                     "identity")
        self.step = max(1, block_elems // max(self.C, 1))
        dim, Hd, k, Fn = params.W_p.shape[0], params.W_p.shape[1], data.bias_items.size, len(FEATURES)
        self.basis = None
        if "style" in self.parts:
            if data.basis is None:
                raise ValueError("the style part needs PersonalData.basis (style directions)")
            self.basis = np.asarray(data.basis, np.float64)
        self.sizes = {"offset": dim, "bias": k, "repeat": Fn, "head": dim * Hd,
                      "style": 0 if self.basis is None else self.basis.shape[1]}
        self.n_theta = sum(self.sizes[x] for x in self.parts)

    # -- packing ----------------------------------------------------------
    def x0(self) -> np.ndarray:
        out = []
        for part in self.parts:
            if part == "repeat":
                out.append(self.w0)
            elif part == "head":
                out.append(self.W0.reshape(-1))
            else:
                out.append(np.zeros(self.sizes[part]))
        return np.concatenate(out) if out else np.zeros(0)

    def unpack(self, x: np.ndarray) -> Dict[str, np.ndarray]:
        out, a = {}, 0
        for part in self.parts:
            b = a + self.sizes[part]
            out[part] = x[a:b]
            a = b
        if "head" in out:
            out["head"] = out["head"].reshape(self.W0.shape)
        return out

    # -- objective ----------------------------------------------------------
    def __call__(self, x: np.ndarray, per_row: bool = False):
        # overflowing scores (a broken model) make a non-finite objective, which the
        # optimiser and the callers handle: no warnings
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return self._eval(x, per_row)

    def _eval(self, x: np.ndarray, per_row: bool):
        v = self.unpack(x)
        p, dta = self.p, self.d
        n = dta.n
        delta = v.get("offset")
        if "style" in v:
            sd = self.basis @ v["style"]
            delta = sd if delta is None else delta + sd
        w = v.get("repeat", self.w0)
        beta = v.get("bias")
        W_p = v["head"].astype(F32) if "head" in v else p.W_p
        b_c = self.b_c.copy()
        if beta is not None:
            np.add.at(b_c, self.bcol, beta.astype(F32))
        rep = feature_dot(self.phi, w).astype(F32) if self.rows.size else None
        grads = {k: np.zeros(self.sizes[k]) for k in self.parts}
        dW = np.zeros(self.W0.shape) if "head" in self.parts else None
        total = 0.0
        row_loss = np.empty(n) if per_row else None
        for a in range(0, n, self.step):
            b = min(a + self.step, n)
            Hb = np.ascontiguousarray(dta.H[a:b], F32)
            if self.Z0 is None:
                Z = K.head_forward(Hb, W_p, p.b_p, "identity")
            else:
                Z = self.Z0[a:b].copy()
            if delta is not None:
                Z += delta.astype(F32)
            U = np.tanh(Z) if self.tanh else Z
            S = K.sgemm(np.ascontiguousarray(U, F32), self.O_c, trans_b=True)
            S += b_c
            S *= self.scale
            if rep is not None:
                sel = (self.rows >= a) & (self.rows < b)
                S[self.rows[sel] - a, self.ccol[sel]] += rep[sel]
            if self.logq is not None:
                S -= self.logq
            rr = np.arange(b - a)
            m = S.max(1, keepdims=True)
            S -= m
            np.exp(S, out=S)
            z = S.sum(1, dtype=np.float64)
            st = self.tcol[a:b]
            # loss_r = log z_r - (s_t - m)  with S now exp(s - m)
            lt = np.log(np.maximum(S[rr, st].astype(np.float64), 1e-300))
            loss = np.log(z) - lt
            wt = None if self.wts is None else self.wts[a:b]
            total += float(loss.sum() if wt is None else (wt * loss).sum())
            if per_row:
                row_loss[a:b] = loss
                continue
            S *= (1.0 / z).astype(F32)[:, None]
            S[rr, st] -= F32(1.0)
            if wt is not None:
                S *= wt.astype(F32)[:, None]
            G = S                                   # d loss / d s
            if "bias" in self.parts:
                grads["bias"] += self.scale * G[:, self.bcol].sum(0, dtype=np.float64)
            if "repeat" in self.parts and self.rows.size:
                sel = (self.rows >= a) & (self.rows < b)
                g_cells = G[self.rows[sel] - a, self.ccol[sel]].astype(np.float64)
                grads["repeat"] += g_cells @ self.phi[sel].astype(np.float64)
            if "offset" in self.parts or "head" in self.parts or "style" in self.parts:
                dU = K.sgemm(G, self.O_c)
                dU *= self.scale
                dZ = dU * (1.0 - U * U) if self.tanh else dU
                if "offset" in self.parts:
                    grads["offset"] += dZ.sum(0, dtype=np.float64)
                if "style" in self.parts:
                    grads["style"] += self.basis.T @ dZ.sum(0, dtype=np.float64)
                if dW is not None:
                    dW += K.sgemm(dZ, Hb, trans_a=True).astype(np.float64)
        if per_row:
            return row_loss
        # the prior
        f = total
        for part in self.parts:
            lam = self.l2[part]
            if lam <= 0:
                continue
            if part == "repeat":
                dv = v["repeat"] - self.w0
            elif part == "head":
                dv = (v["head"] - self.W0).reshape(-1)
            else:
                dv = v[part]
            f += 0.5 * lam * float(dv @ dv)
            grads[part] += lam * dv
        if dW is not None:
            grads["head"] += dW.reshape(-1)
        g = np.concatenate([grads[k] for k in self.parts]) if self.parts else np.zeros(0)
        return f, g


def personal_loss(data: PersonalData, params, spec: RepeatSpec,
                  fit: Optional[PersonalFit] = None) -> np.ndarray:
    """Per-event cross-entropy of the global model (``fit=None``) or of the
    personal values in ``fit``, over ``data``'s columns (float64 [n])."""
    parts = [] if fit is None else [k for k, v in (("offset", fit.delta), ("bias", fit.beta),
                                                   ("repeat", fit.w), ("head", fit.W_p))
                                    if v is not None]
    prob = _Problem(data, params, spec, parts, {})
    if fit is None:
        return prob(prob.x0(), per_row=True)
    vals = {"offset": fit.delta, "bias": fit.beta, "repeat": fit.w,
            "head": None if fit.W_p is None else fit.W_p.reshape(-1)}
    x = np.concatenate([np.asarray(vals[k], np.float64).reshape(-1) for k in prob.parts]) \
        if prob.parts else np.zeros(0)
    return prob(x, per_row=True)


def fit_personal(data: PersonalData, params, spec: RepeatSpec, parts: Sequence[str],
                 l2: Dict[str, float], *, max_iter: int = 30,
                 weights: Optional[np.ndarray] = None,
                 x0: Optional[np.ndarray] = None) -> PersonalFit:
    """Fit the personal ``parts`` on ``data`` (see the module docstring).

    Returns a :class:`PersonalFit`; ``info["status"]`` is the optimiser's
    status ("non-finite" when the objective blew up: callers keep the global
    model then).  ``x0`` warm-starts from a packed vector of the same parts."""
    bad = [x for x in parts if x not in PARTS]
    if bad:
        raise ValueError(f"unknown personal part(s) {bad}; choose among {list(PARTS)}")
    prob = _Problem(data, params, spec, parts, l2, weights)
    if not prob.parts or data.n == 0:
        return PersonalFit(loss=float("nan"), info={"status": "nothing to fit", "iterations": 0})
    res = minimize(prob, prob.x0() if x0 is None else x0, max_iter=max_iter)
    v = prob.unpack(res.x)
    out = PersonalFit(loss=res.f, info={"status": res.status, "iterations": res.iterations,
                                        "evaluations": res.evaluations, "x": res.x})
    if "offset" in v or "style" in v:
        dl = np.zeros(params.W_p.shape[0]) if "offset" not in v else v["offset"].copy()
        if "style" in v:
            out.style = v["style"].astype(F32)
            dl = dl + prob.basis @ v["style"]
        out.delta = dl.astype(F32)
    if "bias" in v:
        out.beta = v["bias"].astype(F32)
    if "repeat" in v:
        out.w = v["repeat"].astype(F32)
    if "head" in v:
        out.W_p = v["head"].astype(F32)
    return out

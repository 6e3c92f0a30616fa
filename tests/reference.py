"""Float64 numpy reference implementations of every deeprec-edge kernel.

These are the test oracle: written for clarity, not speed, in float64, and
following ``csrc/include/deeprec_edge.h`` and ``docs/kernels-python.md``
literally.  Every analytic gradient here is itself checked against central
finite differences (``numerical_grad`` / ``directional_derivative``) and,
where an independent implementation exists, against torch autograd, so a
kernel is never compared with a reference that has not been proven.

Nothing here calls the package under test.
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "sigmoid", "sgemm",
    "gru_forward", "gru_backward", "gru_step",
    "head_forward", "head_backward",
    "sampled_loss", "BPR_MAX_EPS",
    "score", "topk_order", "score_topk",
    "adagrad_step", "adam_step", "sgd_step", "global_norm", "clip_by_global_norm",
    "adagrad_rows", "adam_rows", "sgd_rows",
    "numerical_grad", "directional_derivative",
]

F64 = np.float64


def _f64(a):
    return None if a is None else np.array(a, dtype=F64, copy=True)


def sigmoid(x):
    """Logistic function without overflow for any float64 input."""
    x = np.asarray(x, dtype=F64)
    e = np.exp(-np.abs(x))          # in (0, 1]: never overflows
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


# --------------------------------------------------------------------------
# SGEMM
# --------------------------------------------------------------------------

def sgemm(A, B, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, C=None):
    """C = alpha op(A) op(B) + beta C; beta == 0 ignores C (even NaN in it)."""
    A = _f64(A)
    B = _f64(B)
    opA = A.T if trans_a else A
    opB = B.T if trans_b else B
    out = alpha * (opA @ opB)
    if beta != 0.0:
        out = out + beta * _f64(C)
    return out


# --------------------------------------------------------------------------
# GRU layer (PyTorch nn.GRU semantics, gate order r, z, n)
# --------------------------------------------------------------------------

def _lengths(lengths, T, B):
    if lengths is None:
        return np.full(B, T, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    assert lengths.shape == (B,) and np.all((lengths >= 0) & (lengths <= T))
    return lengths


def gru_forward(x, W_ih, W_hh, b_ih, b_hh, h0=None, lengths=None):
    """Forward over x [T, B, I].  Returns (y [T,B,H], h_n [B,H], cache).

    Step t of sequence b runs only if t < lengths[b]; later steps keep the
    state and write zeros to y[t, b].  cache holds, per step, the previous
    state and the gate activations r, z, n and ghn = (W_hn h + b_hn).
    """
    x = _f64(x)
    W_ih, W_hh, b_ih, b_hh = map(_f64, (W_ih, W_hh, b_ih, b_hh))
    T, B, _ = x.shape
    H = W_hh.shape[1]
    lengths = _lengths(lengths, T, B)
    h = np.zeros((B, H)) if h0 is None else _f64(h0)
    y = np.zeros((T, B, H))
    cache = {k: np.zeros((T, B, H)) for k in ("h_prev", "r", "z", "n", "ghn")}
    for t in range(T):
        active = (t < lengths)[:, None]
        gi = x[t] @ W_ih.T + b_ih
        gh = h @ W_hh.T + b_hh
        r = sigmoid(gi[:, :H] + gh[:, :H])
        z = sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
        n = np.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
        h_new = (1.0 - z) * n + z * h
        cache["h_prev"][t] = h
        cache["r"][t], cache["z"][t], cache["n"][t] = r, z, n
        cache["ghn"][t] = gh[:, 2 * H:]
        y[t] = np.where(active, h_new, 0.0)
        h = np.where(active, h_new, h)
    return y, h, cache


def gru_backward(x, W_ih, W_hh, b_ih, b_hh, h0=None, lengths=None, dy=None, dh_n=None):
    """Analytic BPTT of L = sum(dy * y) + sum(dh_n * h_n).

    Returns a dict with dx [T,B,I], dh0 [B,H], dW_ih, dW_hh, db_ih, db_hh.
    dy entries at padded steps (t >= lengths[b]) are ignored; dx is zero there.
    """
    x = _f64(x)
    W_ih, W_hh = _f64(W_ih), _f64(W_hh)
    T, B, I = x.shape
    H = W_hh.shape[1]
    lengths = _lengths(lengths, T, B)
    _, _, c = gru_forward(x, W_ih, W_hh, b_ih, b_hh, h0, lengths)
    dy = np.zeros((T, B, H)) if dy is None else _f64(dy)
    dh = np.zeros((B, H)) if dh_n is None else _f64(dh_n)
    g_ = {"dx": np.zeros((T, B, I)), "dW_ih": np.zeros((3 * H, I)),
          "dW_hh": np.zeros((3 * H, H)), "db_ih": np.zeros(3 * H), "db_hh": np.zeros(3 * H)}
    for t in range(T - 1, -1, -1):
        active = (t < lengths)[:, None]
        r, z, n, ghn, hp = c["r"][t], c["z"][t], c["n"][t], c["ghn"][t], c["h_prev"][t]
        g = dh + np.where(active, dy[t], 0.0)           # dL/dh_t (total)
        dn = g * (1.0 - z)
        dz = g * (hp - n)
        dan = dn * (1.0 - n * n)                        # d pre-activation of n
        dar = dan * ghn * r * (1.0 - r)
        daz = dz * z * (1.0 - z)
        dgi = np.where(active, np.concatenate([dar, daz, dan], axis=1), 0.0)
        dgh = np.where(active, np.concatenate([dar, daz, dan * r], axis=1), 0.0)
        g_["dx"][t] = dgi @ W_ih
        g_["dW_ih"] += dgi.T @ x[t]
        g_["dW_hh"] += dgh.T @ hp
        g_["db_ih"] += dgi.sum(axis=0)
        g_["db_hh"] += dgh.sum(axis=0)
        dh = np.where(active, g * z + dgh @ W_hh, dh)
    g_["dh0"] = dh
    return g_


def gru_step(x, h, W_ih, W_hh, b_ih, b_hh):
    """One step of one sequence: x [I], h [H] -> h' [H]."""
    y, h_n, _ = gru_forward(_f64(x)[None, None, :], W_ih, W_hh, b_ih, b_hh,
                            h0=_f64(h)[None, :])
    return h_n[0]


# --------------------------------------------------------------------------
# Dense head u = act(W_p h + b_p)
# --------------------------------------------------------------------------

def _check_act(activation):
    if activation not in ("tanh", "identity"):
        raise ValueError(activation)


def head_forward(h, W_p, b_p=None, activation="tanh"):
    _check_act(activation)
    a = _f64(h) @ _f64(W_p).T
    if b_p is not None:
        a = a + _f64(b_p)
    return np.tanh(a) if activation == "tanh" else a


def head_backward(h, W_p, b_p, du, activation="tanh"):
    """Gradients of L = sum(du * u): (dh [N,H], dW_p [D,H], db_p [D])."""
    h, W_p, du = _f64(h), _f64(W_p), _f64(du)
    u = head_forward(h, W_p, b_p, activation)
    da = du * (1.0 - u * u) if activation == "tanh" else du
    return da @ W_p, da.T @ h, da.sum(axis=0)


# --------------------------------------------------------------------------
# Sampled losses
# --------------------------------------------------------------------------

BPR_MAX_EPS = 1e-24   # GRU4Rec's stabiliser inside the log


def _softmax(v):
    e = np.exp(v - v.max())
    return e / e.sum()


def sampled_loss(U, O_s, target_col, b_s=None, col_ids=None, logq=None,
                 loss="xe", bpreg=0.0):
    """Mean sampled loss over non-skipped rows and its gradients.

    Returns (loss, row_loss [B], dU [B,D], dO_s [S,D], db_s [S], dlogits [B,S]).
    Logits l[b, j] = U[b].O_s[j] + b_s[j] - logq[j].  Column j != t with
    col_ids[j] == col_ids[t] is masked out of row b.

    xe:      loss_b = logsumexp_{unmasked j} l_j - l_t  (max-shifted)
    bpr-max: w = softmax over unmasked negatives j != t;
             loss_b = -log(sum_j w_j sigmoid(l_t - l_j) + 1e-24) + bpreg * sum_j w_j l_j^2
             (GRU4Rec's bpr_max_loss_with_elu without elu, per row).  A row
             with no negatives has loss -log(1e-24) and zero gradient here
             (the header leaves that case open; tests avoid it).
    """
    if loss not in ("xe", "bpr-max"):
        raise ValueError(loss)
    U, O_s = _f64(U), _f64(O_s)
    B, D = U.shape
    S = O_s.shape[0]
    target_col = np.asarray(target_col, dtype=np.int64)
    logits = U @ O_s.T
    if b_s is not None:
        logits = logits + _f64(b_s)
    if logq is not None:
        logits = logits - _f64(logq)
    row_loss = np.zeros(B)
    dlog = np.zeros((B, S))
    valid = target_col >= 0
    n_valid = int(valid.sum())
    cols = np.arange(S)
    for b in np.flatnonzero(valid):
        t = int(target_col[b])
        mask = np.ones(S, dtype=bool)
        if col_ids is not None:
            col_ids_ = np.asarray(col_ids)
            mask &= ~((col_ids_ == col_ids_[t]) & (cols != t))
        l = logits[b]
        g = np.zeros(S)
        if loss == "xe":
            m = l[mask].max()
            e = np.where(mask, np.exp(np.where(mask, l - m, 0.0)), 0.0)
            Z = e.sum()
            row_loss[b] = m + np.log(Z) - l[t]
            g = e / Z
            g[t] -= 1.0
        else:
            neg = mask.copy()
            neg[t] = False
            ln = l[neg]
            if ln.size == 0:
                row_loss[b] = -np.log(BPR_MAX_EPS)
            else:
                w = _softmax(ln)
                s = sigmoid(l[t] - ln)
                Ssum = float((w * s).sum())
                A = Ssum + BPR_MAX_EPS
                R = float((w * ln * ln).sum())
                row_loss[b] = -np.log(A) + bpreg * R
                # d(sum_k w_k s_k)/dl_j = w_j (s_j - Ssum) - w_j s_j (1 - s_j)
                dA_neg = w * (s - Ssum) - w * s * (1.0 - s)
                dA_t = float((w * s * (1.0 - s)).sum())
                # d(sum_k w_k l_k^2)/dl_j = w_j (l_j^2 - R) + 2 w_j l_j
                dR_neg = w * (ln * ln - R) + 2.0 * w * ln
                g[neg] = -dA_neg / A + bpreg * dR_neg
                g[t] = -dA_t / A
        dlog[b] = g
    if n_valid:
        mean_loss = float(row_loss[valid].sum() / n_valid)
        dlog /= n_valid
    else:
        mean_loss = 0.0
    dU = dlog @ O_s
    dO_s = dlog.T @ U
    db_s = dlog.sum(axis=0)
    return mean_loss, row_loss, dU, dO_s, db_s, dlog


# --------------------------------------------------------------------------
# Scoring and top-k
# --------------------------------------------------------------------------

def score(O, u, bias=None, idx=None):
    O, u = _f64(O), _f64(u)
    rows = np.arange(O.shape[0]) if idx is None else np.asarray(idx, dtype=np.int64)
    s = O[rows] @ u
    if bias is not None:
        s = s + _f64(bias)[rows]
    return s


def topk_order(scores, rows):
    """Positions of `scores` in rank order: higher score first, equal scores by
    lower row number, NaN below everything (NaNs among themselves by row)."""
    scores = np.asarray(scores, dtype=F64)
    rows = np.asarray(rows, dtype=np.int64)
    nan = np.isnan(scores)
    key = np.where(nan, 0.0, -scores)   # -(-0.0) == 0.0: signed zeros tie
    return np.lexsort((rows, key, nan))


def score_topk(O, u, k, bias=None, idx=None, exclude=None, scores=None):
    """Reference top-k: (top_idx, top_score).  `scores` overrides the float64
    scores (pass exactly representable data to test ids exactly)."""
    rows = np.arange(O.shape[0]) if idx is None else np.asarray(idx, dtype=np.int64)
    s = score(O, u, bias, idx) if scores is None else np.asarray(scores, dtype=F64)
    if exclude is not None:
        keep = ~np.asarray(exclude, dtype=bool)[rows]
        rows, s = rows[keep], s[keep]
    order = topk_order(s, rows)[:max(int(k), 0)]
    return rows[order], s[order]


# --------------------------------------------------------------------------
# Optimisers (return new arrays; float64)
# --------------------------------------------------------------------------

def adagrad_step(param, grad, accum, lr, eps=1e-6):
    """acc += g^2; p -= lr * g / sqrt(acc + eps)  (eps INSIDE the sqrt)."""
    p, g, acc = _f64(param), _f64(grad), _f64(accum)
    acc = acc + g * g
    p = p - lr * g / np.sqrt(acc + eps)
    return p, acc


def adam_step(param, grad, m, v, step, lr, beta1=0.9, beta2=0.999, eps=1e-8,
              weight_decay=0.0):
    """torch.optim.Adam (L2 weight decay added to g), 1-based step."""
    p, g, m, v = _f64(param), _f64(grad), _f64(m), _f64(v)
    g = g + weight_decay * p
    m = beta1 * m + (1.0 - beta1) * g
    v = beta2 * v + (1.0 - beta2) * g * g
    mhat = m / (1.0 - beta1 ** step)
    vhat = v / (1.0 - beta2 ** step)
    p = p - lr * mhat / (np.sqrt(vhat) + eps)
    return p, m, v


def sgd_step(param, grad, lr, velocity=None, momentum=0.0, nesterov=False):
    """torch.optim.SGD, dampening 0: vel = mu vel + g; p -= lr (nesterov ? g + mu vel : vel)."""
    p, g = _f64(param), _f64(grad)
    if momentum == 0.0 and velocity is None:
        return p - lr * g, None
    vel = momentum * _f64(velocity) + g
    upd = g + momentum * vel if nesterov else vel
    return p - lr * upd, vel


def global_norm(grads):
    return float(np.sqrt(sum(float(np.sum(_f64(g) ** 2)) for g in grads)))


def clip_by_global_norm(grads, max_norm):
    """Returns (clipped grads, norm before clipping)."""
    norm = global_norm(grads)
    if norm > max_norm:
        scale = max_norm / norm
        return [_f64(g) * scale for g in grads], norm
    return [_f64(g) for g in grads], norm


def adagrad_rows(table, accum, rows, grad_rows, lr, eps=1e-6):
    """Rows updated one after another in list order (duplicates apply twice)."""
    table, accum, grad_rows = _f64(table), _f64(accum), _f64(grad_rows)
    for i, r in enumerate(np.asarray(rows)):
        table[r], accum[r] = adagrad_step(table[r], grad_rows[i], accum[r], lr, eps)
    return table, accum


def adam_rows(table, m, v, rows, grad_rows, step, lr, beta1=0.9, beta2=0.999, eps=1e-8):
    """Lazy Adam: only listed rows move; bias correction uses the global step."""
    table, m, v, grad_rows = _f64(table), _f64(m), _f64(v), _f64(grad_rows)
    for i, r in enumerate(np.asarray(rows)):
        table[r], m[r], v[r] = adam_step(table[r], grad_rows[i], m[r], v[r], step, lr,
                                         beta1, beta2, eps)
    return table, m, v


def sgd_rows(table, rows, grad_rows, lr):
    table, grad_rows = _f64(table), _f64(grad_rows)
    for i, r in enumerate(np.asarray(rows)):
        table[r] = table[r] - lr * grad_rows[i]
    return table


# --------------------------------------------------------------------------
# Finite differences (float64)
# --------------------------------------------------------------------------

def numerical_grad(f, x, eps=1e-6):
    """Central differences of scalar f at float64 array x (all entries)."""
    x = np.array(x, dtype=F64, copy=True)
    g = np.zeros_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        fp = f(x)
        flat[i] = old - eps
        fm = f(x)
        flat[i] = old
        gflat[i] = (fp - fm) / (2.0 * eps)
    return g


def directional_derivative(f, xs, vs, eps=1e-6):
    """(f(xs + eps vs) - f(xs - eps vs)) / 2 eps for a list of arrays xs."""
    plus = [np.asarray(x, F64) + eps * np.asarray(v, F64) for x, v in zip(xs, vs)]
    minus = [np.asarray(x, F64) - eps * np.asarray(v, F64) for x, v in zip(xs, vs)]
    return (f(*plus) - f(*minus)) / (2.0 * eps)

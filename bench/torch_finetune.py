"""The benchmark's peer: deeprec-edge's on-device fine-tune written in PyTorch.

The same algorithm as ``deeprec_edge._finetune.finetune_params`` with
``holdout=0`` (no early stopping), step for step, so that the two can be
timed against each other and must reach the same losses:

- frozen: the input embeddings ``E``, GRU layers 1..L-1, the output table
  ``O`` (``E`` when tied) and bias ``b``; trainable: GRU layer L and the head
  ``u = tanh(W_p h + b_p)`` (or identity);
- the frozen layers' outputs over the whole history are computed once
  (``torch.inference_mode``), windows of at most 1,024 clicks, batches of up
  to 256 windows, the k-th window of every session together ("waves"), as
  ``deeprec_edge._engine.run_segments`` does;
- the history is cut into windows of ``window`` clicks that never cross a
  session start (states reset there); a click's target is the next click of
  its session;
- each epoch first runs layer L over the whole history without gradients to
  get every window's initial state (truncated BPTT with epoch-start states),
  then goes through the windows that have a target in a shuffled order,
  ``batch_size`` windows per batch, padded to the batch's longest window
  (``nn.GRU`` over [T, B, H]; padding sits after a window's last click, so
  it changes no output or gradient that the loss uses);
- sampled softmax: the columns are every target of the batch, then
  ``n_negatives`` negatives shared by the batch, drawn with replacement
  proportionally to ``popularity ** alpha`` (floored at 1e-3 of the uniform
  mass); logits ``u . O_j + b_j - log q_j`` (logQ correction); a column
  holding the row's own target item, other than the row's target column, is
  no negative (masked); mean cross-entropy over the batch's targets;
- Adagrad ``acc += g**2; p -= lr * g / sqrt(acc + eps)`` (deeprec-edge's
  formula; ``torch.optim.Adagrad`` puts eps outside the square root), with
  torch's ``_foreach`` ops as ``torch.optim.Adagrad(foreach=True)`` does.

The random stream is numpy's ``default_rng(seed)`` consumed in the same
order as deeprec-edge's trainer (one shuffle per epoch, then one draw of the
negatives per batch), so with the same model and history both draw the same
windows and negatives and their per-epoch losses agree to float32 rounding.

Run on its own to measure peak memory in a fresh process (one thread)::

    python bench/torch_finetune.py PROBLEM.npz [--epochs 5]

prints one JSON line: ``maxrss_kb`` (``getrusage`` peak RSS at the end),
``maxrss_kb_before`` (after importing torch and loading the problem),
``seconds`` and ``losses``.  ``PROBLEM.npz`` is written by
``bench/memory_100k.py``'s ``save_problem`` (the test module does it).
This file imports numpy and torch only, never deeprec_edge.
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from types import SimpleNamespace
from typing import List, Optional

import numpy as np

F32 = np.float32


# --------------------------------------------------------------------------
# windows, targets, negatives (numpy; the same rules as deeprec-edge)
# --------------------------------------------------------------------------

# The data preparation is deeprec-edge's own (imported, not copied), so both
# implementations see exactly the same windows, targets and negatives; only
# the training arithmetic differs.
from deeprec_edge import _engine as _E  # noqa: E402

next_targets = _E.next_targets


def make_segments(n: int, session_start: Optional[np.ndarray], window: int,
                  reset_at_sessions: bool = True):
    """(start, length, prev) arrays of deeprec-edge's windows."""
    s = _E.make_segments(n, session_start, window, reset_at_sessions)
    return s.start, s.length, s.prev


def waves(prev: np.ndarray) -> List[np.ndarray]:
    """Windows grouped by depth (number of predecessors)."""
    return _E._waves(_E.Segments(np.zeros_like(prev), np.zeros_like(prev), prev))


def batch_positions(start, length, group):
    """Windows sorted by length (longest first); click positions [T, B], -1 pads."""
    g, T, lengths, pos = _E._batch_positions(_E.Segments(start, length, np.zeros_like(start)),
                                             group)
    return g, T, lengths.astype(np.int64), pos


class Sampler(_E.NegativeSampler):
    """deeprec-edge's sampler (popularity**alpha, inverse CDF) with int64 ids."""

    def __init__(self, popularity: np.ndarray, alpha: float, rng: np.random.Generator):
        super().__init__(popularity, alpha, rng=rng)
        self.n = self.p.shape[0]
        self.logp = self._logp

    def sample(self, k: int) -> np.ndarray:
        return super().sample(k).astype(np.int64)


# --------------------------------------------------------------------------
# the fine-tune
# --------------------------------------------------------------------------

def _gru(torch, W_ih, W_hh, b_ih, b_hh, requires_grad):
    H, I = W_hh.shape[1], W_ih.shape[1]
    gru = torch.nn.GRU(I, H)
    with torch.no_grad():
        for p, a in zip((gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0),
                        (W_ih, W_hh, b_ih, b_hh)):
            p.copy_(torch.from_numpy(np.ascontiguousarray(a, F32)))
    gru.requires_grad_(requires_grad)
    return gru


def _run_layers(torch, grus, inputs, start, length, prev, out=None, keep_states=False,
                max_batch=256):
    """Exact no-grad forward of stacked GRUs over windows (waves of windows,
    padded batches; a window's final state is its output at its last click)."""
    nseg = start.shape[0]
    Hs = [g.hidden_size for g in grus]
    h_end = [torch.zeros(nseg, H) for H in Hs]
    h_start = [torch.zeros(nseg, H) for H in Hs] if keep_states else None
    with torch.inference_mode():
        for wave in waves(prev):
            for c in range(0, wave.size, max_batch):
                g, T, lengths, pos = batch_positions(start, length, wave[c:c + max_batch])
                x = inputs(pos)
                pv = prev[g]
                has = np.flatnonzero(pv >= 0)
                last = torch.from_numpy(lengths - 1)
                rows = torch.arange(g.size)
                gt = torch.from_numpy(g)
                for j, gru in enumerate(grus):
                    h0 = torch.zeros(1, g.size, Hs[j])
                    if has.size:
                        h0[0, torch.from_numpy(has)] = h_end[j][torch.from_numpy(pv[has])]
                    if keep_states:
                        h_start[j][gt] = h0[0]
                    x, _ = gru(x, h0)
                    h_end[j][gt] = x[last, rows]
                if out is not None:
                    valid = pos >= 0
                    out[torch.from_numpy(pos[valid])] = x[torch.from_numpy(valid)]
    return h_start


def finetune_torch(params, items: np.ndarray, session_start: Optional[np.ndarray],
                   popularity: np.ndarray, *, epochs: int = 5, seed: int = 0, window: int = 20,
                   batch_size: int = 16, n_negatives: int = 256, alpha: float = 0.75,
                   lr: float = 0.05, eps: float = 1e-6, reset_at_sessions: bool = True,
                   torch=None):
    """Fine-tune GRU layer L and the head of ``params`` (anything with ``E,
    layers, W_p, b_p, O, b_out, activation``, float32 numpy arrays; not
    modified) on one click sequence of dense item indices.

    Returns ``(trained, losses)``: ``trained`` a dict of numpy arrays
    (``W_ih, W_hh, b_ih, b_hh, W_p, b_p``), ``losses`` the mean loss of each
    epoch."""
    if torch is None:
        import torch
    items = np.ascontiguousarray(items, np.int64)
    n = items.shape[0]
    rng = np.random.default_rng(seed)
    sampler = Sampler(popularity, alpha, rng)
    targets = next_targets(items, session_start, reset_at_sessions)

    E = torch.from_numpy(np.ascontiguousarray(params.E, F32))
    Otab = E if params.O is None else torch.from_numpy(np.ascontiguousarray(params.O, F32))
    b_out = torch.from_numpy(np.ascontiguousarray(params.b_out, F32))
    logq = torch.from_numpy(sampler.logp)
    col_off = b_out - logq                       # b_j - log q_j of every item
    items_t = torch.from_numpy(items)

    # frozen lower layers: their outputs over the whole history, once
    frozen = [_gru(torch, *layer, requires_grad=False) for layer in params.layers[:-1]]
    if frozen:
        X = torch.zeros(n, frozen[-1].hidden_size)
        s0, l0, p0 = make_segments(n, session_start, 1024, reset_at_sessions)
        _run_layers(torch, frozen, lambda pos: E[items_t[torch.from_numpy(np.maximum(pos, 0))]],
                    s0, l0, p0, out=X)
    else:
        X = E[items_t]

    gru = _gru(torch, *params.layers[-1], requires_grad=True)
    head = torch.nn.Linear(params.W_p.shape[1], params.W_p.shape[0])
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(np.ascontiguousarray(params.W_p, F32)))
        head.bias.copy_(torch.from_numpy(np.ascontiguousarray(params.b_p, F32)))
    tanh = params.activation == "tanh"
    trainable = [gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0,
                 head.weight, head.bias]
    accs = [torch.zeros_like(p) for p in trainable]

    start, length, prev = make_segments(n, session_start, window, reset_at_sessions)
    has_t = np.zeros(start.shape[0], bool)
    tpos = np.flatnonzero(targets >= 0)
    has_t[np.searchsorted(start, tpos, side="right") - 1] = True
    losses = []
    for _ in range(epochs):
        h_start = _run_layers(torch, [gru], lambda pos: X[torch.from_numpy(np.maximum(pos, 0))],
                              start, length, prev, keep_states=True)[0]
        order = np.flatnonzero(has_t)
        rng.shuffle(order)
        total, count = 0.0, 0
        for bi in range(0, order.size, batch_size):
            g, T, lengths, pos = batch_positions(start, length, order[bi:bi + batch_size])
            tgt = np.where(pos >= 0, targets[np.maximum(pos, 0)], -1).reshape(-1)
            tsel = np.flatnonzero(tgt >= 0)
            P = tsel.size
            if P == 0:
                continue
            x = X[torch.from_numpy(np.maximum(pos, 0))]
            h0 = h_start[torch.from_numpy(g)][None]
            y, _ = gru(x, h0)
            hid = y.reshape(-1, y.shape[2])[torch.from_numpy(tsel)]
            u = head(hid)
            if tanh:
                u = torch.tanh(u)
            t_items = tgt[tsel].astype(np.int64)
            cols = torch.from_numpy(np.concatenate([t_items, sampler.sample(n_negatives)]))
            logits = torch.addmm(col_off[cols], u, Otab[cols].t())
            # a sampled copy of the row's own target is no negative
            same = cols[None, :] == cols[:P, None]
            same[:, :P].fill_diagonal_(False)
            logits = logits.masked_fill(same, -math.inf)
            loss = torch.nn.functional.cross_entropy(logits, torch.arange(P))
            for p in trainable:
                p.grad = None
            loss.backward()
            with torch.no_grad():
                grads = [p.grad for p in trainable]
                torch._foreach_addcmul_(accs, grads, grads)
                denom = torch._foreach_add(accs, eps)
                torch._foreach_sqrt_(denom)
                torch._foreach_addcdiv_(trainable, grads, denom, value=-lr)
            total += float(loss.detach()) * P
            count += P
        losses.append(total / max(count, 1))
    trained = {name: p.detach().numpy().copy() for name, p in
               zip(("W_ih", "W_hh", "b_ih", "b_hh", "W_p", "b_p"), trainable)}
    return trained, losses


# --------------------------------------------------------------------------
# peak memory in a fresh process
# --------------------------------------------------------------------------

def load_problem(path: str):
    """(params, items, session_start, popularity) from a problem .npz
    (``bench/memory_100k.py``: E, O (empty when tied), b_out, W_p, b_p,
    layer{l}_{W_ih,W_hh,b_ih,b_hh}, activation, items, session_start,
    popularity)."""
    with np.load(path, allow_pickle=False) as z:
        L = int(z["n_layers"])
        O = z["O"]
        params = SimpleNamespace(
            E=z["E"], O=None if O.size == 0 else O, b_out=z["b_out"], W_p=z["W_p"],
            b_p=z["b_p"], activation=str(z["activation"]),
            layers=[[z[f"layer{l}_{k}"] for k in ("W_ih", "W_hh", "b_ih", "b_hh")]
                    for l in range(L)])
        return params, z["items"], z["session_start"], z["popularity"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="PyTorch fine-tune of a problem file; "
                                             "prints peak RSS (getrusage) as JSON")
    ap.add_argument("problem")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    params, items, sess, pop = load_problem(a.problem)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    _, losses = finetune_torch(params, items, sess, pop, epochs=a.epochs, seed=a.seed, torch=torch)
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"impl": "torch", "maxrss_kb": peak, "maxrss_kb_before": before,
                      "seconds": dt, "losses": losses, "torch": torch.__version__}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

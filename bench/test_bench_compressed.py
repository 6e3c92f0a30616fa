"""Compressed tables and weights in the kernels (issue 12's goals), each
measured against its float32 (or onnxruntime) peer in the same run:

- ``score+top20`` over 100,000 x 64: int8 rows with per-row scales, packed
  as the runtime holds a table it scores (``pack_rows_i8``, done once, as a
  ``Session`` does at load; goal: <= 1/3 of the float32 kernel's time,
  <= 0.3 ms on the issue's VM), the same int8 rows unpacked (packed 16 rows
  at a time on the fly: no goal), and float16 rows (<= 0.6 of float32);
- the batch-1 GRU step at I=128, H=256 with int8 and float16 weights
  against onnxruntime's float32 GRU (goal: >= 2x);
- ``Session.click`` + ``recommend(20)`` over 500 candidates on a compressed
  model (int8 tables and GRU; goal: <= 10 µs), beside the float32 model.

Every benchmark checks its result against float64 numpy on the values it
computed with (the dequantised ones), so a fast but wrong path fails.  The
goals go to a table printed at the end ("deeprec-edge compressed: the
issue's goals"); with ``--benchmark-disable`` (CI) only the checks run.
Times are medians (min) of the rounds.
"""
from __future__ import annotations

import functools
import importlib.util
import itertools
import os

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
F32 = np.float32
SCORE_N, SCORE_D, SCORE_K = 100_000, 64, 20
STEP = (128, 256)
N_CAND, TOP_K = 500, 20
MICRO = pytest.mark.benchmark(max_time=0.4, min_rounds=5, min_time=1e-4, warmup=True,
                              warmup_iterations=200)


def _load(name, filename):
    spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, filename))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


kb = _load("deeprec_edge_bench_kernels_for_compressed", "test_bench_kernels.py")

# --------------------------------------------------------------------------
# the goals table
# --------------------------------------------------------------------------

_T = {}            # case -> variant -> (median, min) seconds
_PLUGIN = "deeprec-edge-compressed-goals"
GOALS = [  # (case, ours, peer, peer/ours must reach, text)
    ("score", "int8", "float32", 3.0, "int8 <= 1/3 of float32"),
    ("score", "float16", "float32", 1 / 0.6, "float16 <= 0.6 of float32"),
    ("step", "int8", "onnxruntime", 2.0, "int8 step >= 2x onnxruntime"),
    ("step", "float16", "onnxruntime", 2.0, "float16 step >= 2x onnxruntime"),
]
SESSION_MAX_US = 10.0


def _times(benchmark):
    stats = getattr(benchmark, "stats", None)
    return None if stats is None else (float(stats.stats.median), float(stats.stats.min))


def _us(t):
    return f"{t * 1e6:.1f} µs" if t < 1e-3 else f"{t * 1e3:.3f} ms"


def goals_rows():
    rows = []
    for case, ours, peer, need, text in GOALS:
        a, b = _T.get(case, {}).get(ours), _T.get(case, {}).get(peer)
        if a is None or b is None:
            continue
        r = b[0] / a[0]
        rows.append([f"{case}: {ours} vs {peer}", f"{_us(a[0])} ({_us(a[1])})",
                     f"{_us(b[0])} ({_us(b[1])})", f"{r:.2f}x ({b[1] / a[1]:.2f}x)",
                     f"{text}: {'met' if r >= need else 'NOT met'}"])
    for variant, t in sorted(_T.get("session", {}).items()):
        goal = ("the uncompressed model, for reference" if variant == "float32" else
                f"<= {SESSION_MAX_US:.0f} µs: "
                f"{'met' if t[0] * 1e6 <= SESSION_MAX_US else 'NOT met'}")
        rows.append([f"session click+rank {N_CAND}: {variant}", f"{_us(t[0])} ({_us(t[1])})",
                     "—", "—", goal])
    return rows


class _GoalsPlugin:
    def pytest_terminal_summary(self, terminalreporter, exitstatus, config):
        rows = goals_rows()
        if not rows:
            return
        from deeprec_edge import kernels as K
        cols = ["case", "ours", "peer", "peer/ours", "goal (issue 12)"]
        out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        out.append(f"\nkernel path {K.active_path()}; median (min) of the rounds")
        terminalreporter.write_sep("=", "deeprec-edge compressed: the issue's goals")
        for line in out:
            terminalreporter.write_line(line)


@pytest.fixture(scope="module", autouse=True)
def _goals_table(request):
    pm = request.config.pluginmanager
    if not pm.has_plugin(_PLUGIN):
        pm.register(_GoalsPlugin(), _PLUGIN)
    yield


def _quantise(W):
    s = (np.abs(W).max(axis=1, initial=0.0) / 127.0).astype(F32)
    q = np.clip(np.rint(W / np.where(s > 0, s, 1)[:, None]), -127, 127).astype(np.int8)
    return q, s


# --------------------------------------------------------------------------
# score + top-20 over 100,000 x 64
# --------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def tables():
    O, u, b, _ = kb.score_problem()
    q, s = _quantise(O)
    return ({"float32": (O, None), "float16": (O.astype(np.float16), None), "int8": (q, s),
             "int8 unpacked": (q, s)}, u, b)


@MICRO
@pytest.mark.parametrize("variant", ["float32", "float16", "int8", "int8 unpacked"])
def test_score_topk_compressed(benchmark, request, variant):
    K = request.getfixturevalue("K")
    t, u, b = tables()
    data, scale = t[variant]
    benchmark.group = f"score+top{SCORE_K} N={SCORE_N:_} D={SCORE_D} (compressed)"
    benchmark.extra_info.update(case="score compressed", impl="ours", variant=variant,
                                kernel_path=K.active_path())
    table = K.pack_rows_i8(data) if variant == "int8" else data
    idx, scores = benchmark(K.score_topk, table, u, SCORE_K, bias=b, scale=scale)
    # exact top-k on the dequantised scores (float64), up to float32 rounding
    vals = data.astype(np.float64) * (1.0 if scale is None else scale[:, None].astype(np.float64))
    s64 = vals @ u.astype(np.float64) + b
    want = np.sort(s64)[::-1][:SCORE_K]
    np.testing.assert_allclose(np.sort(s64[idx])[::-1], want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scores, s64[idx], rtol=1e-5, atol=1e-5)
    t_ = _times(benchmark)
    if t_:
        _T.setdefault("score", {})[variant] = t_


# --------------------------------------------------------------------------
# the batch-1 GRU step at (128, 256)
# --------------------------------------------------------------------------

@MICRO
@pytest.mark.parametrize("variant", ["int8", "float16", "onnxruntime"])
def test_gru_step_compressed(benchmark, request, variant):
    I, H = STEP
    W_ih, W_hh, b_ih, b_hh = kb.gru_weights(I, H)
    x, h, _ = kb.step_problem(I, H)
    benchmark.group = f"gru step b=1 I={I} H={H} (compressed)"
    benchmark.extra_info.update(case="step compressed", impl="ours", variant=variant)
    if variant == "onnxruntime":
        sess = kb.ort_gru_session(request.getfixturevalue("ort"), I, H, 1, 1, step=True)
        x3, h3 = x.reshape(1, 1, I), h.reshape(1, 1, H)
        io, out = kb.ort_step_binding(sess, x3, h3)
        benchmark(sess.run_with_iobinding, io)
        got, weights = out.reshape(H), [W_ih, W_hh]
    else:
        K = request.getfixturevalue("K")
        out = np.empty(H, F32)
        if variant == "int8":
            (qi, si), (qh, sh) = _quantise(W_ih), _quantise(W_hh)
            st = K.GruStepper(qi, qh, b_ih, b_hh, s_ih=si, s_hh=sh)
            weights = [qi.astype(np.float64) * si[:, None], qh.astype(np.float64) * sh[:, None]]
        else:
            st = K.GruStepper(W_ih.astype(np.float16), W_hh.astype(np.float16), b_ih, b_hh)
            weights = [W_ih.astype(np.float16), W_hh.astype(np.float16)]
        got = benchmark(st.step, x, h, out=out)
    want = kb.step_reference(x, h, weights + [b_ih, b_hh])
    kb.assert_close(got, want, kb.FWD_TOL, f"{variant}: h'")
    t_ = _times(benchmark)
    if t_:
        _T.setdefault("step", {})[variant] = t_


# --------------------------------------------------------------------------
# Session.click + recommend(20) over 500 candidates, compressed model
# --------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def session_problem():
    rt = _load("deeprec_edge_bench_runtime_for_compressed", "test_bench_runtime.py")
    return rt.session_problem()


@MICRO
@pytest.mark.parametrize("variant", ["float32", "int8 tables + int8 GRU", "int4 tables + int8 GRU"])
def test_session_click_recommend_compressed(benchmark, request, variant):
    K = request.getfixturevalue("K")
    import deeprec_edge as de
    from deeprec_edge.model import compress_model
    model, cand_ids, click_ids = session_problem()
    if variant != "float32":
        tables_dt = "int8" if variant.startswith("int8") else "int4"
        model = compress_model(model, {"tables": tables_dt, "gru": "int8", "head": "int8"})
    benchmark.group = f"session click+recommend top{TOP_K} of {N_CAND} (compressed)"
    benchmark.extra_info.update(case="session compressed", impl="ours", variant=variant,
                                kernel_path=K.active_path())
    s = de.Session(model, candidates=cand_ids)
    it = itertools.cycle(click_ids)

    def click_and_recommend():
        s.click(next(it))
        return s.recommend(TOP_K)

    benchmark(click_and_recommend)
    # the same clicks on a fresh session: the scores of the returned items
    # are the float64 scores of the model's stored values
    fresh = de.Session(model, candidates=cand_ids)
    for item in click_ids[:10]:
        fresh.click(item)
    ids, scores = fresh.recommend(TOP_K)
    O = model.out_table
    rows = np.searchsorted(model.item_ids, ids)
    from deeprec_edge.quant import Compressed
    vals = (O.data[rows].astype(np.float64) * O.scale[rows, None].astype(np.float64)
            if isinstance(O, Compressed) else O[rows])
    want = vals.astype(np.float64) @ fresh.user_vector.astype(np.float64) + model.b[rows]
    np.testing.assert_allclose(scores, want, rtol=1e-5, atol=1e-5)
    assert len(set(ids.tolist())) == TOP_K
    t_ = _times(benchmark)
    if t_:
        _T.setdefault("session", {})[variant] = t_

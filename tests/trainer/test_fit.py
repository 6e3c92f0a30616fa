"""The global model's fit (trainer/fit.py) and the engine's GRU4Rec mode.

Every dataset here is generated in the test: a first-order Markov chain over
items with a planted successor structure, whose oracle Recall@20 (rank the
true next-item distribution of the last click) is known exactly.
"""

import numpy as np
import pytest

from deeprec_edge import _engine
from deeprec_edge.trainer import engine as cloud
from deeprec_edge.trainer.fit import (FitConfig, evaluate_sequence, fit, init_params,
                                      sequence_from_sessions)


# --------------------------------------------------------------------------
# planted Markov data
# --------------------------------------------------------------------------

N_ITEMS = 100
SUCC_P = (0.5, 0.25, 0.15)   # three successors per item, 10% uniform noise


def _transition_matrix(seed=0):
    rng = np.random.default_rng(seed)
    T = np.full((N_ITEMS, N_ITEMS), (1.0 - sum(SUCC_P)) / N_ITEMS)
    for i in range(N_ITEMS):
        succ = rng.choice(np.delete(np.arange(N_ITEMS), i), len(SUCC_P), replace=False)
        T[i, succ] += SUCC_P
    return T


def _sessions(T, n_sessions, seed):
    """(items, reset) of ``n_sessions`` sessions of 4..12 clicks."""
    rng = np.random.default_rng(seed)
    cdf = np.cumsum(T, 1)
    items, reset = [], []
    for _ in range(n_sessions):
        i = int(rng.integers(N_ITEMS))
        for t in range(int(rng.integers(4, 13))):
            items.append(i)
            reset.append(t == 0)
            i = min(int(np.searchsorted(cdf[i], rng.random(), side="right")), N_ITEMS - 1)
    return np.asarray(items, np.int32), np.asarray(reset)


def _oracle_recall(T, items, reset, k=20):
    """Expected Recall@k of ranking by the true next-item distribution: the
    probability mass of the k most likely items after each evaluated click."""
    pos = np.flatnonzero(~reset[1:])
    top = -np.sort(-T, 1)[:, :k].sum(1)
    return float(top[items[pos]].mean())


@pytest.fixture(scope="module")
def markov():
    T = _transition_matrix(0)
    train = _sessions(T, 1500, 1)
    valid = _sessions(T, 300, 2)
    return T, train, valid


def _config(mode):
    cfg = FitConfig(hidden=[48], tied=True)
    t = cfg.train
    t.epochs, t.batch_size, t.n_negatives, t.seed = 3, 32, 128, 0
    if mode == "gru4rec":
        # session-parallel, 1-step BPTT, BPR-max on ELU scores, no head
        cfg.head = False
        t.session_parallel, t.loss, t.elu = True, "bpr-max", 0.5
        t.bpreg, t.alpha, t.lr = 1.0, 0.5, 0.1
    else:
        # shuffled windows with epoch-start states, sampled softmax + logQ
        t.window, t.loss, t.lr = 8, "xe", 0.1
    return cfg


# --------------------------------------------------------------------------
# fit learns the planted structure
# --------------------------------------------------------------------------


@pytest.mark.heavy
@pytest.mark.parametrize("mode", ["gru4rec", "windows"])
def test_fit_reaches_oracle_recall(markov, mode):
    T, (it, rt), (iv, rv) = markov
    oracle = _oracle_recall(T, iv, rv)
    cfg = _config(mode)
    p = init_params(N_ITEMS, cfg, seed=0)
    before = evaluate_sequence(p, iv, rv, ks=(20,))["recall@20"]
    hist = fit(p, it, rt, cfg, valid=(iv, rv), progress=False, log=lambda s: None)
    after = evaluate_sequence(p, iv, rv, ks=(20,))
    assert 0.85 < oracle < 0.95
    assert before < 0.4                       # untrained: about 20 / 100
    assert after["recall@20"] > oracle - 0.04, (after, oracle)
    assert after["recall@20"] <= oracle + 0.04  # nobody beats the oracle beyond sampling noise
    # no saturated scores: conservative ties change nothing
    assert after["recall@20_cons"] == pytest.approx(after["recall@20"], abs=1e-3)
    assert len(hist["epochs"]) == 3 and hist["epochs"][-1]["loss"] < hist["epochs"][0]["loss"]


@pytest.mark.parametrize("mode", ["gru4rec", "windows"])
def test_fit_is_deterministic_for_a_seed(markov, mode):
    _, (it, rt), _ = markov
    it, rt = it[:3000], rt[:3000]

    def run(seed):
        cfg = _config(mode)
        cfg.train.epochs = 1
        cfg.train.seed = seed
        cfg.train.dropout_in = cfg.train.dropout_hidden = 0.2
        p = init_params(N_ITEMS, cfg, seed=seed)
        fit(p, it, rt, cfg, progress=False, log=lambda s: None)
        return [p.E, p.W_p, p.b_p, p.b_out] + p.layers[0]

    a, b, c = run(3), run(3), run(4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


# --------------------------------------------------------------------------
# init_params and evaluate_sequence
# --------------------------------------------------------------------------


def test_init_params_shapes_and_scales():
    cfg = FitConfig(hidden=[16, 8], tied=True)
    p = init_params(50, cfg, seed=1)
    assert p.E.shape == (50, 8) and p.O is None and p.out_table is p.E
    assert [l[0].shape for l in p.layers] == [(48, 8), (24, 16)]
    assert [l[1].shape for l in p.layers] == [(48, 16), (24, 8)]
    assert all(a.dtype == np.float32 and a.flags.c_contiguous for l in p.layers for a in l)
    assert not any(l[2].any() or l[3].any() for l in p.layers) and not p.b_out.any()
    # uniform +- sqrt(6 / (fan_in + fan_out)), per gate block
    assert np.abs(p.E).max() <= np.sqrt(6 / 58) and np.abs(p.E).max() > 0.8 * np.sqrt(6 / 58)
    assert np.abs(p.layers[1][1]).max() <= np.sqrt(6 / 16)
    assert p.W_p.shape == (8, 8) and p.activation == "tanh"
    # deterministic for a seed
    q = init_params(50, cfg, seed=1)
    assert np.array_equal(p.E, q.E) and np.array_equal(p.layers[0][0], q.layers[0][0])
    assert not np.array_equal(p.E, init_params(50, cfg, seed=2).E)
    # no head (GRU4Rec): u = h, stored as an identity head
    g = init_params(50, FitConfig(hidden=[8], head=False), seed=0)
    assert np.array_equal(g.W_p, np.eye(8, dtype=np.float32)) and not g.b_p.any()
    assert g.activation == "identity"
    # untied: a separate output table
    u = init_params(50, FitConfig(hidden=[8], tied=False, embedding=4), seed=0)
    assert u.E.shape == (50, 4) and u.O.shape == (50, 8) and u.layers[0][0].shape == (24, 4)
    with pytest.raises(ValueError, match="head=False"):
        init_params(50, FitConfig(hidden=[8], head=False, dim=4), seed=0)


def test_evaluate_sequence_ties_optimistic_and_conservative():
    # all-zero model output except the bias: items 0..9 score 1, items 10..29 score 0
    p = init_params(30, FitConfig(hidden=[4], head=False), seed=0)
    p.E[:] = 0
    p.b_out[:10] = 1.0
    items = np.array([3, 12, 15, 20, 25], np.int32)
    reset = np.array([True, False, False, True, False])
    m = evaluate_sequence(p, items, reset, ks=(5, 10, 20))
    # events: 3->12, 12->15, 20->25 (no event across the session start)
    assert m["events"] == 3
    # optimistic: a target scoring 0 ranks after the 10 items that score 1 -> rank 10
    assert m["recall@20"] == 1.0 and m["recall@10"] == 0.0
    assert m["mrr@20"] == pytest.approx(1 / 11)
    # conservative: the 19 other zero-score items rank above it too -> rank 29
    assert m["recall@20_cons"] == 0.0 and m["mrr@20_cons"] == 0.0
    # a target among the top items: ranks 0 (optimistic) or 9 (conservative)
    m = evaluate_sequence(p, np.array([12, 4], np.int32), np.array([True, False]), ks=(5, 10))
    assert m["recall@5"] == 1.0 and m["mrr@5"] == 1.0
    assert m["recall@5_cons"] == 0.0 and m["recall@10_cons"] == 1.0
    assert m["mrr@10_cons"] == pytest.approx(0.1)
    # eval_mask restricts the events; no event at all
    m = evaluate_sequence(p, items, reset, eval_mask=np.array([False, True, False, False, False]))
    assert m["events"] == 1
    assert evaluate_sequence(p, items[:1], reset[:1]) == {"events": 0}


def test_sequence_from_sessions_orders_and_flags():
    items = np.array([5, 6, 7, 8, 9])
    sess = np.array([2, 1, 2, 1, 3])
    times = np.array([10, 30, 5, 20, 0])
    # sessions in time order, ordered by their first click: 3 (t=0), 2 (t=5), 1 (t=20)
    it, reset, order = sequence_from_sessions(items, sess, times)
    assert it.tolist() == [9, 7, 5, 8, 6] and order.tolist() == [4, 2, 0, 3, 1]
    assert reset.tolist() == [True, True, False, True, False]
    users = np.array([1, 1, 1, 1, 0])
    it_u, reset_u, _ = sequence_from_sessions(items, sess, times, users=users, carry_state=True)
    assert it_u.tolist() == [9, 7, 5, 8, 6]
    assert reset_u.tolist() == [True, True, False, False, False]
    # ties of first-click times keep the key order; a single click
    it1, r1, _ = sequence_from_sessions(np.array([1, 2]), np.array([7, 3]), np.array([0, 0]))
    assert it1.tolist() == [2, 1] and r1.tolist() == [True, True]
    assert sequence_from_sessions(np.array([4]), np.array([0]), np.array([0]))[0].tolist() == [4]


# --------------------------------------------------------------------------
# GRU4Rec mode: session-parallel schedule and the loss over distinct columns
# --------------------------------------------------------------------------


def _gru4rec_iterator(lengths, B):
    """GRU4Rec's SessionDataIterator (and its reset hook), transcribed: per
    step, the input position and the state reset of every active slot."""
    offs = np.concatenate([[0], np.cumsum(lengths)])
    ns = len(lengths)
    iters = np.arange(min(B, ns))
    maxiter = iters.max()
    start, end = offs[iters].copy(), offs[iters + 1].copy()
    new = np.ones(iters.size, bool)           # H starts at zero
    steps = []
    while True:
        minlen = (end - start).min()
        for i in range(minlen - 1):
            steps.append(((start + i).tolist(), (new & (i == 0)).tolist()))
        start = start + minlen - 1
        finished = end - start <= 1
        nf = int(finished.sum())
        iters[finished] = maxiter + np.arange(1, nf + 1)
        maxiter += nf
        valid = iters < ns
        if valid.sum() == 0:
            break
        mask = finished & valid                # H[finished] = 0, then the batch shrinks
        start[mask] = offs[iters[mask]]
        end[mask] = offs[iters[mask] + 1]
        iters, start, end, new = iters[valid], start[valid], end[valid], mask[valid]
    return steps


def test_session_parallel_schedule_matches_gru4rec():
    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 9, size=57)
    reset = np.zeros(lengths.sum(), bool)
    reset[np.concatenate([[0], np.cumsum(lengths)[:-1]])] = True
    items = rng.integers(0, 20, lengths.sum()).astype(np.int32)
    targets = _engine.next_targets(items, reset)
    for B in (1, 4, 7, 100):
        sc = cloud._session_schedule(targets, reset, True, B)
        ref = _gru4rec_iterator(lengths, B)
        ours = [(sc.pos[a:b].tolist(), sc.reset[a:b].tolist())
                for a, b in zip(sc.ptr[:-1], sc.ptr[1:])]
        assert ours == ref
        assert sc.pos.size == (lengths - 1).sum()
        assert np.all(targets[sc.pos] >= 0)


def _bruteforce_gru4rec_loss(Zd, cols, B, kind, bpreg=0.0, elu=0.0, logq=0.0, alpha=0.0, pop=None):
    """GRU4Rec's losses over the duplicated columns (float64): Zd [B, U]
    distinct scores, cols [S] distinct column of each of GRU4Rec's columns
    (the batch's B targets first).  Returns the summed row losses."""
    O = Zd[:, cols]
    if kind == "xe":
        if logq:
            lp = np.log(pop[cols])
            O = O - logq * np.concatenate([lp[:B], alpha * lp[B:]])
        X = np.exp(O - O.max(1, keepdims=True))
        X /= X.sum(1, keepdims=True)
        return -np.log(np.diag(X)).sum()
    if elu:
        O = np.where(O > 0, O, elu * (np.exp(O) - 1))
    hm = 1.0 - np.eye(*O.shape)
    e = np.exp(O * hm - (O * hm).max(1, keepdims=True)) * hm
    w = e / e.sum(1, keepdims=True)
    t = np.diag(O)[:, None]
    sig = 1 / (1 + np.exp(-(t - O)))
    return (-np.log((sig * w).sum(1) + 1e-24) + bpreg * (O ** 2 * w).sum(1)).sum()


@pytest.mark.parametrize("kind,bpreg,elu,logq", [
    ("bpr-max", 1.0, 0.5, 0.0), ("bpr-max", 0.0, 0.0, 0.0), ("bpr-max", 1.9, 1.0, 0.0),
    ("xe", 0.0, 0.0, 0.0), ("xe", 0.0, 0.0, 1.0)])
def test_distinct_loss_equals_gru4rec_over_duplicated_columns(kind, bpreg, elu, logq):
    rng = np.random.default_rng(1)
    B, U = 5, 7
    targets = np.array([0, 2, 2, 5, 1])          # a repeated target
    negs = np.array([3, 3, 0, 4, 2, 2, 2, 5])     # duplicates, some equal to targets
    cols = np.concatenate([targets, negs])
    cols_u = np.append(np.unique(cols), 6)        # column 6 occurs nowhere (an input-only row)
    assert np.array_equal(cols_u, np.arange(U))
    n_tgt = np.bincount(targets, minlength=U)
    n_neg = np.bincount(negs, minlength=U)
    pop = rng.uniform(1, 50, U)
    alpha = 0.5
    Z = rng.normal(0, 1.0, (B, U))
    lt = ln = None
    if logq:
        lt = (logq * np.log(pop)).astype(np.float32)
        ln = (logq * alpha * np.log(pop)).astype(np.float32)
    row, G = cloud.distinct_loss(Z.astype(np.float32), targets, n_tgt, n_neg, kind, bpreg, elu,
                                   lt, ln, scale=0.25, ws={})
    ref = _bruteforce_gru4rec_loss(Z, cols, B, kind, bpreg, elu, logq, alpha, pop)
    assert row.sum() == pytest.approx(ref, rel=1e-4)
    # gradient: central differences of the brute force, times the scale
    eps = 1e-5
    num = np.zeros_like(Z)

    def f(Zx):
        return _bruteforce_gru4rec_loss(Zx, cols, B, kind, bpreg, elu, logq, alpha, pop)

    for i in range(B):
        for j in range(U):
            Zp, Zm = Z.copy(), Z.copy()
            Zp[i, j] += eps
            Zm[i, j] -= eps
            num[i, j] = (f(Zp) - f(Zm)) / (2 * eps)
    np.testing.assert_allclose(G, 0.25 * num, atol=2e-5, rtol=1e-3)
    assert not G[:, 6].any()


def test_session_parallel_carries_state_within_sessions():
    """A chain whose next item depends on the item *two* clicks back can only
    be learnt if the state is carried from step to step (1-step BPTT still
    trains the input->state path of the previous step)."""
    rng = np.random.default_rng(0)
    n, L = 40, 6
    items, reset = [], []
    for s in range(1200):
        a, b = rng.integers(n), rng.integers(n)
        seq = [a, b]
        while len(seq) < L:
            seq.append((seq[-2] + 7) % n)          # x_t = x_{t-2} + 7
        items += seq
        reset += [True] + [False] * (L - 1)
    items, reset = np.asarray(items, np.int32), np.asarray(reset)
    cfg = FitConfig(hidden=[48], head=False)
    t = cfg.train
    t.session_parallel, t.loss, t.elu = True, "bpr-max", 0.5
    t.epochs, t.lr, t.n_negatives = 6, 0.1, 64
    p = init_params(n, cfg, seed=0)
    fit(p, items[:6000], reset[:6000], cfg, progress=False, log=lambda s: None)
    vi, vr = items[6000:], reset[6000:]
    mask = np.zeros(vi.size, bool)
    mask[np.flatnonzero(~vr[1:])] = True
    first = np.zeros(vi.size, bool)                # the event predicting the 2nd click is random
    first[np.flatnonzero(vr)] = True
    m = evaluate_sequence(p, vi, vr, ks=(1,), eval_mask=mask & ~first)
    assert m["recall@1"] > 0.9


def test_momentum_adagrad_is_gru4rec_indexed_adagrad_m():
    """acc += g^2; mom = momentum * mom - lr * g / sqrt(acc + eps); p += mom --
    dense, and on the touched rows only for tables."""
    rng = np.random.default_rng(0)
    lr, mu, eps = 0.1, 0.4, 1e-6
    opt = cloud._CloudOptimizer("adagrad", lr, momentum=mu)
    P = rng.standard_normal((20, 6)).astype(np.float32)
    T = rng.standard_normal((20, 6)).astype(np.float32)
    rP, rT = P.astype(np.float64), T.astype(np.float64)
    accP, momP, accT, momT = (np.zeros_like(rP) for _ in range(4))
    for _ in range(15):
        g = rng.standard_normal(P.shape).astype(np.float32)
        opt.dense("P", P, g)
        accP += g.astype(np.float64) ** 2
        momP = mu * momP - lr * g / np.sqrt(accP + eps)
        rP += momP
        rows = np.unique(rng.integers(0, 20, 7)).astype(np.int32)
        gr = rng.standard_normal((rows.size, 6)).astype(np.float32)
        opt.rows("T", T, rows, gr)
        accT[rows] += gr.astype(np.float64) ** 2
        momT[rows] = mu * momT[rows] - lr * gr / np.sqrt(accT[rows] + eps)
        rT[rows] += momT[rows]
    np.testing.assert_allclose(P, rP, atol=1e-5)
    np.testing.assert_allclose(T, rT, atol=1e-5)


def test_sample_many_follows_popularity_alpha():
    pop = np.array([100.0, 10.0, 1.0, 0.0, 50.0])
    s = _engine.NegativeSampler(pop, alpha=0.5, rng=np.random.default_rng(0))
    draws = s.sample_many(400_000)
    assert draws.dtype == np.int32 and draws.min() >= 0 and draws.max() < 5
    freq = np.bincount(draws, minlength=5) / draws.size
    np.testing.assert_allclose(freq, s.p, atol=3e-3)
    assert freq[3] < 1e-3  # only the 1e-3 floor for a never-seen item
    a = _engine.NegativeSampler(pop, 0.5, rng=np.random.default_rng(7)).sample_many(50)
    b = _engine.NegativeSampler(pop, 0.5, rng=np.random.default_rng(7)).sample_many(50)
    assert np.array_equal(a, b)


def test_gru4rec_config_and_overrides():
    from deeprec_edge.trainer.fit import gru4rec_config
    cfg = gru4rec_config()
    t = cfg.train
    assert cfg.hidden == [100] and cfg.tied and not cfg.head and cfg.average_epochs == 4
    assert t.session_parallel and t.loss == "bpr-max" and t.batch_size == 32
    assert t.n_negatives == 2048 and t.epochs == 10
    c2 = gru4rec_config(epochs=3, hidden=[8], seed=5)
    assert c2.train.epochs == 3 and c2.hidden == [8] and c2.train.seed == 5
    assert gru4rec_config().train.epochs == 10  # no shared mutable defaults
    with pytest.raises(TypeError, match="no FitConfig or TrainConfig field"):
        gru4rec_config(nonsense=1)


def test_average_epochs_is_the_mean_of_the_last_epochs(markov):
    _, (it, rt), _ = markov
    it, rt = it[:2000], rt[:2000]
    cfg = _config("gru4rec")
    cfg.train.epochs, cfg.average_epochs = 3, 2
    p = init_params(N_ITEMS, cfg, seed=0)
    hist = fit(p, it, rt, cfg, progress=False, log=lambda s: None)
    assert hist["averaged_epochs"] == 2
    # the same training by hand: snapshots after epochs 2 and 3
    q = init_params(N_ITEMS, cfg, seed=0)
    tc = cfg.train
    tr = cloud.CloudTrainer(q, it, rt, tc, n_trainable=1,
                         popularity=np.bincount(it, minlength=N_ITEMS).astype(float))
    snaps = []
    for _ in range(3):
        tr.epoch()
        snaps.append(q.copy())
    for name in ("E", "b_out"):
        want = (getattr(snaps[1], name).astype(np.float64) + getattr(snaps[2], name)) / 2
        np.testing.assert_allclose(getattr(p, name), want, rtol=1e-6, atol=1e-7)
    want = (snaps[1].layers[0][1].astype(np.float64) + snaps[2].layers[0][1]) / 2
    np.testing.assert_allclose(p.layers[0][1], want, rtol=1e-6, atol=1e-7)


def test_the_device_engine_carries_no_cloud_only_training():
    """Session-parallel training, GRU4Rec's distinct-column loss, dropout and
    embedding updates live in deeprec_edge.trainer.engine, not in the
    runtime's engine (what a device runs)."""
    import dataclasses
    for name in ("distinct_loss", "_session_schedule", "_sum_rows", "_Schedule"):
        assert not hasattr(_engine, name) and hasattr(cloud, name)
    device = {f.name for f in dataclasses.fields(_engine.TrainConfig)}
    for f in ("train_embeddings", "dropout_in", "dropout_hidden", "session_parallel", "elu",
              "shuffle_sessions", "carry_dropout", "train_head"):
        assert f not in device and f in cloud.CloudTrainConfig.__dataclass_fields__
    for meth in ("_sp_step", "_epoch_session_parallel", "_distinct_loss", "_dropout_mask"):
        assert not hasattr(_engine.Trainer, meth) and hasattr(cloud.CloudTrainer, meth)
    assert not hasattr(_engine._Optimizer, "rows")

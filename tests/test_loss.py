"""Sampled losses: cross-entropy (XE) with logQ and BPR-max, GRU4Rec's recipe.

The float64 reference (reference.sampled_loss) is proven against central
finite differences, torch's cross_entropy and a literal torch transcription
of GRU4Rec's bpr_max_loss_with_elu; the float32 kernel is compared with it.
"""
import numpy as np
import pytest

import reference as ref
from conftest import (FD_EPS_F32, TOL_F32_FD, TOL_F32_LOSS, TOL_F64, TOL_FD64, assert_close,
                      f32, i32, randn)

LOSSES = ("xe", "bpr-max")

# (B, S, D): every edge size appears as B, S and D.
CASES = [
    (1, 3, 1), (3, 4, 3), (4, 5, 4), (5, 7, 5), (7, 8, 7), (8, 9, 8), (9, 15, 9),
    (15, 16, 15), (16, 17, 16), (17, 31, 17), (31, 32, 31), (32, 33, 32), (33, 63, 33),
    (8, 64, 63), (16, 65, 64), (4, 65, 65), (32, 128, 256),
]


def _problem(rng, B, S, D, *, skip=True, dup=True, logq=True, bias=True):
    """A mini-batch: row b's target is column b % S (the batch's targets come
    first), a few rows skipped (-1), col_ids with copies of targets among the
    negatives, logQ of a popularity-like distribution."""
    U = randn(rng, B, D)
    O_s = randn(rng, S, D, scale=1 / np.sqrt(D))
    target = np.arange(B) % S
    if skip and B > 2:
        target[rng.choice(B, size=max(1, B // 5), replace=False)] = -1
    col_ids = np.arange(S) + 1000
    if dup and S >= 4:
        # a few negatives are sampled copies of some row's target item
        for j in rng.choice(np.arange(1, S), size=max(1, S // 4), replace=False):
            col_ids[j] = col_ids[rng.integers(0, min(B, S))]
    b_s = randn(rng, S, scale=0.1) if bias else None
    lq = f32(np.log(rng.uniform(1e-3, 0.1, size=S))) if logq else None
    return U, O_s, i32(target), (i32(col_ids) if dup else None), b_s, lq


def _has_negatives(target, col_ids, S):
    for t in target[target >= 0]:
        n = S - 1 if col_ids is None else int(np.sum(col_ids != col_ids[t]))
        if n == 0:
            return False
    return True


# --------------------------------------------------------------------------
# The reference itself
# --------------------------------------------------------------------------

@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("bpreg", [0.0, 0.7])
def test_reference_gradients_vs_finite_differences(rng, loss, bpreg):
    B, S, D = 5, 8, 3
    U, O_s, target, col_ids, b_s, lq = _problem(rng, B, S, D)
    U, O_s, b_s = np.float64(U), np.float64(O_s), np.float64(b_s)
    _, _, dU, dO, db, _ = ref.sampled_loss(U, O_s, target, b_s, col_ids, lq, loss, bpreg)

    def f(U_, O_, b_):
        return ref.sampled_loss(U_, O_, target, b_, col_ids, lq, loss, bpreg)[0]
    assert_close(dU, ref.numerical_grad(lambda v: f(v, O_s, b_s), U), TOL_FD64, "dU")
    assert_close(dO, ref.numerical_grad(lambda v: f(U, v, b_s), O_s), TOL_FD64, "dO_s")
    assert_close(db, ref.numerical_grad(lambda v: f(U, O_s, v), b_s), TOL_FD64, "db_s")


def test_reference_xe_vs_torch_cross_entropy(rng, torch):
    B, S, D = 6, 9, 4
    U, O_s, target, col_ids, b_s, lq = _problem(rng, B, S, D)
    loss, row_loss, dU, dO, db, _ = ref.sampled_loss(U, O_s, target, b_s, col_ids, lq, "xe")
    Ut, Ot, bt = (torch.tensor(np.float64(a), requires_grad=True) for a in (U, O_s, b_s))
    logits = Ut @ Ot.T + bt - torch.from_numpy(np.float64(lq))
    valid = target >= 0
    t = target[valid]
    mask = (col_ids[None, :] == col_ids[t][:, None]) & (np.arange(S)[None, :] != t[:, None])
    lv = logits[torch.from_numpy(np.flatnonzero(valid))]
    lv = lv.masked_fill(torch.from_numpy(mask), float("-inf"))
    lt = torch.nn.functional.cross_entropy(lv, torch.from_numpy(t.astype(np.int64)))
    lt.backward()
    assert_close(loss, lt.item(), TOL_F64, "loss")
    for got, tt, name in zip((dU, dO, db), (Ut, Ot, bt), ("dU", "dO_s", "db_s")):
        assert_close(got, tt.grad.numpy(), TOL_F64, name)


@pytest.mark.parametrize("bpreg", [0.0, 1.0])
def test_reference_bpr_max_is_gru4rec(rng, torch, bpreg):
    """GRU4Rec's bpr_max_loss_with_elu (elu off), transcribed literally:
    targets on the diagonal of O [B, B + n_extra]; its sum divided by B."""
    B, S, D = 6, 10, 5
    U, O_s, _, _, b_s, _ = _problem(rng, B, S, D, dup=False, logq=False)
    target = i32(np.arange(B))
    loss, _, dU, dO, db, _ = ref.sampled_loss(U, O_s, target, b_s, None, None, "bpr-max", bpreg)

    Ut, Ot, bt = (torch.tensor(np.float64(a), requires_grad=True) for a in (U, O_s, b_s))
    O = Ut @ Ot.T + bt

    def softmax_neg(X):
        hm = 1.0 - torch.eye(*X.shape, dtype=X.dtype)
        X = X * hm
        e_x = torch.exp(X - X.max(dim=1, keepdim=True)[0]) * hm
        return e_x / e_x.sum(dim=1, keepdim=True)
    softmax_scores = softmax_neg(O)
    target_scores = torch.diag(O).reshape(B, -1)
    L = torch.sum(-torch.log(torch.sum(torch.sigmoid(target_scores - O) * softmax_scores, dim=1)
                             + 1e-24) + bpreg * torch.sum((O ** 2) * softmax_scores, dim=1))
    (L / B).backward()
    assert_close(loss, L.item() / B, TOL_F64, "bpr-max loss")
    for got, tt, name in zip((dU, dO, db), (Ut, Ot, bt), ("dU", "dO_s", "db_s")):
        assert_close(got, tt.grad.numpy(), TOL_F64, name)


# --------------------------------------------------------------------------
# Kernel vs reference
# --------------------------------------------------------------------------

def _check(K, args, loss, bpreg, what=""):
    U, O_s, target, col_ids, b_s, lq = args
    got = K.sampled_loss(U, O_s, target, b_s=b_s, col_ids=col_ids, logq=lq, loss=loss,
                         bpreg=bpreg)
    want = ref.sampled_loss(U, O_s, target, b_s, col_ids, lq, loss, bpreg)
    assert isinstance(got[0], float)
    assert_close(got[0], want[0], TOL_F32_LOSS, f"{what} loss")
    for g, w, name in zip(got[1:], want[1:5], ("row_loss", "dU", "dO_s", "db_s")):
        assert g.dtype == np.float32
        assert_close(g, w, TOL_F32_LOSS, f"{what} {name}")
    return got, want


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("B,S,D", CASES)
def test_sampled_loss_matches_reference(path, rng, K, B, S, D, loss):
    args = _problem(rng, B, S, D)
    assert _has_negatives(args[2], args[3], S)
    _check(K, args, loss, 0.5 if loss == "bpr-max" else 0.0, f"{loss} B={B} S={S} D={D}")


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("opts", [dict(logq=False), dict(bias=False), dict(dup=False),
                                  dict(skip=False, logq=False, bias=False, dup=False)])
def test_sampled_loss_optional_inputs(path, rng, K, loss, opts):
    args = _problem(rng, 9, 17, 8, **opts)
    _check(K, args, loss, 0.0, f"{loss} {opts}")


@pytest.mark.parametrize("bpreg", [0.0, 0.25, 1.0, 3.0])
def test_bpr_max_bpreg(path, rng, K, bpreg):
    _check(K, _problem(rng, 7, 12, 9), "bpr-max", bpreg, f"bpreg={bpreg}")


@pytest.mark.parametrize("loss", LOSSES)
def test_duplicate_target_columns_are_masked(path, rng, K, loss):
    """A sampled copy of the target is not a negative: its logit must not
    change row b's loss, and row b sends it no gradient."""
    B, S, D = 2, 6, 4
    U, O_s, _, _, b_s, lq = _problem(rng, B, S, D, skip=False, dup=False)
    target = i32([0, 1])
    col_ids = i32([10, 11, 12, 10, 13, 14])   # column 3 is a copy of row 0's target
    O_dirty = O_s.copy()
    O_dirty[3] = O_s[3] * 7 + 1                  # very different logit for column 3
    row0 = lambda O: K.sampled_loss(U[:1], O, target[:1], b_s=b_s, col_ids=col_ids,  # noqa: E731
                                    logq=lq, loss=loss)
    l_clean, _, _, dO_clean, db_clean = row0(O_s)
    l_dirty, _, _, _, _ = row0(O_dirty)
    assert_close(l_dirty, l_clean, TOL_F32_LOSS, "masked column changed the loss")
    assert np.all(dO_clean[3] == 0) and db_clean[3] == 0, "masked column received gradient"
    # for row 1 column 3 is an ordinary negative
    _check(K, (U, O_s, target, col_ids, b_s, lq), loss, 0.0, "mask per row")


@pytest.mark.parametrize("loss", LOSSES)
def test_skipped_rows(path, rng, K, loss):
    B, S, D = 6, 9, 5
    U, O_s, _, col_ids, b_s, lq = _problem(rng, B, S, D, skip=False)
    target = i32([0, -1, 2, -1, -1, 5])
    (l, row_loss, dU, dO, db), _ = _check(K, (U, O_s, target, col_ids, b_s, lq), loss, 0.0)
    assert np.all(row_loss[target < 0] == 0.0)
    assert np.all(dU[target < 0] == 0.0)
    # the mean is over the 3 non-skipped rows only
    keep = target >= 0
    l3 = K.sampled_loss(U[keep], O_s, target[keep], b_s=b_s, col_ids=col_ids, logq=lq,
                        loss=loss)[0]
    assert_close(l, l3, TOL_F32_LOSS, "mean over non-skipped rows")


@pytest.mark.parametrize("loss", LOSSES)
def test_all_rows_skipped(path, rng, K, loss):
    B, S, D = 4, 7, 5
    U, O_s, _, col_ids, b_s, lq = _problem(rng, B, S, D)
    dO0, db0 = randn(rng, S, D), randn(rng, S)
    dO, db = dO0.copy(), db0.copy()
    l, row_loss, dU, dO_out, db_out = K.sampled_loss(
        U, O_s, np.full(B, -1, np.int32), b_s=b_s, col_ids=col_ids, logq=lq, loss=loss,
        dO_s=dO, db_s=db)
    assert l == 0.0
    assert np.all(row_loss == 0) and np.all(dU == 0)
    assert dO_out is dO and db_out is db
    np.testing.assert_array_equal(dO, dO0)
    np.testing.assert_array_equal(db, db0)


@pytest.mark.parametrize("loss", LOSSES)
def test_gradients_accumulate(path, rng, K, loss):
    B, S, D = 5, 9, 7
    U, O_s, target, col_ids, b_s, lq = _problem(rng, B, S, D)
    dO0, db0 = randn(rng, S, D), randn(rng, S)
    dO, db = dO0.copy(), db0.copy()
    got = K.sampled_loss(U, O_s, target, b_s=b_s, col_ids=col_ids, logq=lq, loss=loss,
                         dO_s=dO, db_s=db)
    want = ref.sampled_loss(U, O_s, target, b_s, col_ids, lq, loss)
    assert got[3] is dO and got[4] is db
    assert_close(dO, dO0 + want[3], TOL_F32_LOSS, "dO_s accumulated")
    assert_close(db, db0 + want[4], TOL_F32_LOSS, "db_s accumulated")
    assert_close(got[2], want[2], TOL_F32_LOSS, "dU overwritten")


def test_need_grads_false(path, rng, K):
    U, O_s, target, col_ids, b_s, lq = _problem(rng, 5, 9, 7)
    l, row_loss, dU, dO, db = K.sampled_loss(U, O_s, target, b_s=b_s, col_ids=col_ids,
                                             logq=lq, need_grads=False)
    assert dU is None and dO is None and db is None
    want = ref.sampled_loss(U, O_s, target, b_s, col_ids, lq)
    assert_close(l, want[0], TOL_F32_LOSS, "loss")
    assert_close(row_loss, want[1], TOL_F32_LOSS, "row_loss")


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("case", ["random", "targets_best", "targets_worst"])
def test_huge_logits_are_finite_and_correct(path, rng, K, loss, case):
    """Logits of order 1e4 (exp overflows unless max-shifted).  Integer data
    make every logit exact in float32, so the float64 max-shifted reference
    is the exact answer up to the float32 exp/log."""
    B, S, D = 6, 19, 8
    U = f32(rng.integers(-100, 101, size=(B, D)))
    O_s = f32(rng.integers(-20, 21, size=(S, D)))
    target = i32(np.arange(B))
    b_s = rng.integers(-3000, 3001, size=S)
    if case != "random":   # the batch's targets far above / below every extra negative
        b_s[:B] += 30000 if case == "targets_best" else -30000
    b_s = f32(b_s)
    lq = f32(-np.arange(S, dtype=np.float32))        # integers: exact
    logits = np.float64(U) @ np.float64(O_s).T + b_s - lq
    assert np.max(np.abs(logits)) > 5e3
    got = K.sampled_loss(U, O_s, target, b_s=b_s, logq=lq, loss=loss, bpreg=0.0)
    for name, g in zip(("row_loss", "dU", "dO_s", "db_s"), got[1:]):
        assert np.all(np.isfinite(g)), f"{name} not finite with 1e4 logits"
    assert np.isfinite(got[0])
    want = ref.sampled_loss(U, O_s, target, b_s, None, lq, loss, 0.0)
    assert_close(got[0], want[0], TOL_F32_LOSS, "loss at 1e4 scale")
    for g, w, name in zip(got[1:], want[1:5], ("row_loss", "dU", "dO_s", "db_s")):
        assert_close(g, w, TOL_F32_LOSS, f"{name} at 1e4 scale")


@pytest.mark.parametrize("loss", LOSSES)
def test_kernel_gradient_vs_kernel_finite_differences(path, rng, K, loss):
    B, S, D = 7, 13, 9
    U, O_s, target, col_ids, b_s, lq = _problem(rng, B, S, D)
    bpreg = 0.5 if loss == "bpr-max" else 0.0
    _, _, dU, dO, db = K.sampled_loss(U, O_s, target, b_s=b_s, col_ids=col_ids, logq=lq,
                                      loss=loss, bpreg=bpreg)
    vs = [rng.standard_normal(a.shape) for a in (U, O_s, b_s)]

    def L(sign):
        q = [f32(a + sign * FD_EPS_F32 * v) for a, v in zip((U, O_s, b_s), vs)]
        return K.sampled_loss(q[0], q[1], target, b_s=q[2], col_ids=col_ids, logq=lq,
                              loss=loss, bpreg=bpreg, need_grads=False)[0], q
    Lp, qp = L(+1)
    Lm, qm = L(-1)
    an = sum(float(np.sum(np.float64(g) * (np.float64(a) - np.float64(b))))
             for g, a, b in zip((dU, dO, db), qp, qm))
    assert_close(Lp - Lm, an, TOL_F32_FD, f"{loss} gradient vs finite differences")


@pytest.mark.parametrize("bad", [-2, 9, 100])
def test_target_out_of_range_raises_and_leaves_outputs(path, rng, K, bad):
    B, S, D = 3, 9, 4
    U, O_s, target, _, b_s, _ = _problem(rng, B, S, D, skip=False)
    target = target.copy()
    target[1] = bad
    dO0 = randn(rng, S, D)
    dO = dO0.copy()
    with pytest.raises(IndexError):
        K.sampled_loss(U, O_s, target, b_s=b_s, dO_s=dO)
    np.testing.assert_array_equal(dO, dO0)


@pytest.mark.parametrize("loss", LOSSES)
def test_row_without_negatives(path, rng, K, loss):
    """S == 1, or every other column a copy of the target: XE's loss is 0
    (softmax over one column); BPR-max's empty sum gives -log(1e-24), the
    limit of GRU4Rec's formula; neither sends any gradient."""
    U, O_s = randn(rng, 2, 3), randn(rng, 3, 3)
    for args in [(U[:1], O_s[:1], i32([0]), None), (U, O_s, i32([0, 2]), i32([5, 5, 5]))]:
        got = K.sampled_loss(args[0], args[1], args[2], col_ids=args[3], loss=loss)
        want = ref.sampled_loss(args[0], args[1], args[2], None, args[3], None, loss)
        assert_close(got[0], want[0], TOL_F32_LOSS, "loss")
        for g in got[2:]:
            assert np.all(g == 0.0)


@pytest.mark.parametrize("loss", LOSSES)
def test_zero_embedding_size(path, K, loss):
    """D = 0: every logit is its bias; the loss is still defined."""
    U, O_s = np.zeros((3, 0), np.float32), np.zeros((5, 0), np.float32)
    b_s = f32([0.5, -1.0, 2.0, 0.0, 0.25])
    target = i32([0, 2, -1])
    got = K.sampled_loss(U, O_s, target, b_s=b_s, loss=loss)
    want = ref.sampled_loss(U, O_s, target, b_s, None, None, loss)
    assert_close(got[0], want[0], TOL_F32_LOSS, "loss (D = 0)")
    assert_close(got[4], want[4], TOL_F32_LOSS, "db_s (D = 0)")

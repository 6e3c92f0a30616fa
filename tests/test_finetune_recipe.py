"""Fine-tuning with the model's recipe (deeprec_edge.finetune): the recipe in
the file is what runs, overrides change it, a diverged fine-tune keeps the
global model and says why, the per-user check keeps the global model when
the newest clicks contradict the personal one, continual fine-tuning learns
from new clicks only."""
from __future__ import annotations

import numpy as np
import pytest

import deeprec_edge as de
from deeprec_edge.history import History
from deeprec_edge.model import model_from_params, params_of
from deeprec_edge.recipe import FinetuneRecipe
from deeprec_edge.repeat import RepeatSpec

from helpers_model import random_model

SPEC = RepeatSpec(scale=0.9, w=(1.0, 0.3, -0.2, -0.5, -1.0), memory=50)


def _model(recipe, seed=0, **kw):
    base = random_model(n_items=40, e=8, hidden=8, seed=seed, **kw)
    return model_from_params(params_of(base), base.item_ids, base.popularity,
                             config={"session_gap_seconds": 3600.0}, repeat=SPEC, recipe=recipe)


def _history(model, items, t0=1.7e9, gap=30.0):
    items = np.asarray(items, np.int32)
    ts = t0 + gap * np.arange(items.size)
    return History(items=items, item_ids=np.asarray(model.item_ids)[items], timestamps=ts,
                   session_ids=None, n_rows=items.size)


def _diff(a, b):
    return [k for k in ("head.b", "head.W", "repeat.w", "b")
            if not np.array_equal(a.to_arrays().get(k), b.to_arrays().get(k))]


def test_the_files_recipe_runs_and_overrides_change_it():
    rng = np.random.default_rng(0)
    m = _model(FinetuneRecipe(parts=("bias",), l2=1.0, holdout=0.0))
    h = _history(m, rng.integers(0, 10, 120))
    res = de.finetune(m, h)
    assert res.summary["recipe"]["parts"] == ["bias"] and res.summary["kept_global"] is None
    p = res.model
    assert p.personal_bias_index is not None and p.personal["parts"] == ["bias"]
    np.testing.assert_array_equal(p.b_p, m.b_p)                 # no offset part
    np.testing.assert_array_equal(p.repeat_w, m.repeat_w)       # no repeat part
    res2 = de.finetune(m, h, parts=("offset", "repeat"), l2=2.0)
    assert res2.summary["recipe"]["parts"] == ["offset", "repeat"]
    assert res2.summary["recipe"]["l2"] == 2.0
    assert not np.array_equal(res2.model.b_p, m.b_p)
    assert not np.array_equal(res2.model.repeat_w, m.repeat_w)
    assert res2.model.personal_bias_index is None
    none = de.finetune(m, h, parts=())
    assert none.summary["kept_global"] == "no personal parts in the recipe"
    assert _diff(none.model, m) == []
    with pytest.raises(ValueError, match="unknown part"):
        de.finetune(m, h, parts=("everything",))


def test_a_diverged_finetune_keeps_the_global_model():
    rng = np.random.default_rng(1)
    # the gru part with an absurd learning rate: NaN weights after the first epoch
    m = _model(FinetuneRecipe(parts=("gru",), holdout=0.0))
    h = _history(m, rng.integers(0, 40, 200))
    res = de.finetune(m, h, lr=1e38, optimizer="adam", epochs=3)
    g = res.summary["gru"]
    assert g["kept_global"] and "diverged" in g["kept_global"] and g["best_epoch"] == 0
    for a, b in zip(res.model.layers[-1], m.layers[-1]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(res.model.W_p, m.W_p)
    # the personal parts on a model whose scores overflow: the fit is refused
    big = _model(FinetuneRecipe(parts=("offset", "bias"), holdout=0.0), seed=2)
    big.O[...] = (rng.standard_normal(big.O.shape) * 3e38).clip(-3e38, 3e38)  # scores overflow
    res = de.finetune(big, _history(big, rng.integers(0, 40, 100)))
    assert "diverged" in res.summary["kept_global"]
    assert _diff(res.model, big) == []


def test_the_newest_clicks_decide_per_user():
    # a user who clicked items 0..4 for a long time, then only items 30..34: the personal
    # parts fitted on the old clicks push the wrong items, and the held-out newest events
    # say so -> the global model is kept
    m = _model(FinetuneRecipe(parts=("bias",), l2=0.01, holdout=0.2, min_holdout=10))
    old = np.tile(np.arange(5), 40)
    new = np.tile(np.arange(30, 35), 10)
    res = de.finetune(m, _history(m, np.concatenate([old, new])))
    s = res.summary
    assert s["personal_parts"]["heldout_events"] >= 10
    assert s["kept_global"] and "did not lower the loss" in s["kept_global"]
    assert s["personal_parts"]["heldout_loss_after"] >= s["personal_parts"]["heldout_loss_before"]
    assert _diff(res.model, m) == []
    # nothing was learned from these clicks: a later fine-tune with more of them learns
    # from all of them (they were lost to every later fine-tune)
    assert res.model.personal["last_timestamp"] is None
    assert res.model.personal["clicks_used"] == 0
    more = np.concatenate([old, new, np.tile(np.arange(30, 35), 10)])
    again = de.finetune(res.model, _history(m, more))
    assert again.summary["clicks_older_than_model"] == 0
    assert again.summary["clicks_used"] == more.size
    # a user whose habits hold: the same check lets the personal parts through
    res = de.finetune(m, _history(m, np.tile(np.arange(5), 50)))
    assert res.summary["kept_global"] is None
    assert (res.summary["personal_parts"]["heldout_loss_after"]
            < res.summary["personal_parts"]["heldout_loss_before"])


def test_continual_finetune_learns_from_new_clicks_only():
    rng = np.random.default_rng(3)
    m = _model(FinetuneRecipe(parts=("offset", "bias", "repeat"), l2=5.0, holdout=0.0))
    items = rng.integers(0, 20, 150)
    h = _history(m, items)
    first = de.finetune(m, h)
    assert first.model.personal["last_timestamp"] == h.timestamps[-1]
    with pytest.raises(ValueError, match="no new clicks"):
        de.finetune(first.model, h)
    h2 = _history(m, np.concatenate([items, rng.integers(0, 20, 30)]))
    second = de.finetune(first.model, h2)
    assert second.summary["clicks_used"] == 30 and second.summary["clicks_older_than_model"] == 150
    assert second.model.personal["finetunes"] == 2
    assert second.model.personal["base_fingerprint"] == m.fingerprint()
    # the prior of the second fit is the first personal model
    assert _diff(second.model, first.model)


@pytest.mark.parametrize("sampled", [False, True])
def test_the_held_out_check_never_sees_the_held_out_items(sampled, monkeypatch):
    """The check's fit on the older events knows only the items clicked up
    to its last target: an item the newest (held-out) events alone click
    gets no personal bias there (the fit pushed it down, biasing the check
    towards the global model) and, with sampled columns, is not a certain
    column. The final fit on every event has them all."""
    import deeprec_edge._personal as P
    from deeprec_edge._finetune import fit_parts
    calls = []
    orig = P.fit_personal
    monkeypatch.setattr(P, "fit_personal",
                        lambda data, *a, **k: calls.append(data) or orig(data, *a, **k))
    m = _model(FinetuneRecipe(parts=("bias",), l2=1.0, holdout=0.2, min_holdout=10))
    rng = np.random.default_rng(0)
    items = np.concatenate([rng.integers(0, 8, 80), rng.integers(30, 36, 20)]).astype(np.int32)
    sess = np.zeros(items.size, bool)
    sess[0] = True
    res = fit_parts(params_of(m), m.repeat, items, sess, m.recipe,
                    full_softmax_limit=10 if sampled else 8192, n_negatives=5)
    assert res.summary["heldout_events"] == 20 and len(calls) <= 2
    check = calls[0]
    late = set(range(30, 36))
    assert not late & set(check.bias_items.tolist())
    assert set(check.bias_items.tolist()) == set(items[:80].tolist())   # up to the 79th target
    if sampled:
        certain = check.columns[check.logq == 0]
        assert not late & set(certain.tolist())
    if len(calls) == 2:                                     # the final fit: every item
        assert late <= set(calls[1].bias_items.tolist())


def test_continual_gru_finetune_reads_the_older_clicks_as_context():
    """A second fine-tune of the gru part learns the new clicks from the
    states the model scores with: the older clicks are read first (the
    training started from a zero state at the first new click, so the new
    click that continues the session was not even a target)."""
    rng = np.random.default_rng(5)
    m = _model(FinetuneRecipe(parts=("gru",), holdout=0.0))
    items = rng.integers(0, 20, 100)
    h = _history(m, items)                                   # one session (30 s apart)
    first = de.finetune(m, h, epochs=1)
    h2 = _history(m, np.concatenate([items, rng.integers(0, 20, 30)]))
    second = de.finetune(first.model, h2, epochs=1, holdout=0.0)
    assert second.summary["clicks_older_than_model"] == 100
    # 30 new next clicks, the first of them continuing the older click's session
    assert second.summary["gru"]["train_events"] == 30


def test_the_summary_before_numbers_are_the_starting_model_s():
    """``recall20_before``/``mrr20_before`` are the model fine-tuning started
    from, on the held-out events; with the gru part in the recipe they were
    of the gru-trained weights (the demo prints them as "global")."""
    rng = np.random.default_rng(5)
    m = _model(FinetuneRecipe(parts=("gru", "bias"), l2=1.0, holdout=0.2, min_holdout=10))
    h = _history(m, np.tile(rng.integers(0, 12, 8), 25))
    res = de.finetune(m, h, epochs=3, lr=0.2, early_stopping=False)
    assert res.summary["epochs"] > 0                    # the gru part changed the weights
    ref = de.finetune(m, h, parts=("bias",))            # no gru part: "before" is m's
    s, r = res.summary, ref.summary
    assert s["heldout_events"] == r["heldout_events"] > 0
    assert s["recall20_before"] == r["recall20_before"]
    assert s["mrr20_before"] == r["mrr20_before"]


def test_the_gru_part_learns_from_the_newest_max_events():
    """``max_events`` bounds what every part learns from; the gru part
    trained on the whole history (unbounded time on a long one)."""
    rng = np.random.default_rng(6)
    m = _model(FinetuneRecipe(parts=("gru",), holdout=0.0, max_events=40))
    h = _history(m, rng.integers(0, 20, 300))
    g = de.finetune(m, h, epochs=1).summary["gru"]
    assert g["train_events"] == 40
    # fewer events than the bound: all of them
    g = de.finetune(m, _history(m, rng.integers(0, 20, 30)), epochs=1).summary["gru"]
    assert g["train_events"] == 29


def test_a_recipe_s_label_names_what_distinguishes_it():
    assert FinetuneRecipe(parts=()).label() == "keep the global model"
    a = FinetuneRecipe(parts=("offset", "bias", "repeat"), l2=10.0, holdout=0.0)
    b = a.with_(holdout=0.2)
    assert a.label() == "offset+bias+repeat (l2 10, holdout 0)"
    assert a.label() != b.label() != b.with_(half_life=100.0).label()


def test_with_the_gru_part_the_summary_checks_on_events_it_never_learned():
    """gru + other parts: the parts hold out 10 events, the gru part only
    the newest 6 clicks and trained on the rest -- the summary's before/after
    were measured partly on events the personal weights had learned."""
    rng = np.random.default_rng(7)
    m = _model(FinetuneRecipe(parts=("gru", "bias"), l2=1.0, holdout=0.2, min_holdout=10))
    h = _history(m, np.tile(rng.integers(0, 12, 10), 3))         # 30 clicks, one session
    res = de.finetune(m, h, epochs=3, lr=0.2, early_stopping=False)
    s = res.summary
    assert s["epochs"] > 0 and s["personal_parts"]["heldout_events"] == 10
    assert 0 < s["heldout_events"] <= s["gru"]["heldout_events"]


def test_a_kept_finetune_of_a_personal_model_keeps_its_last_timestamp():
    rng = np.random.default_rng(8)
    m = _model(FinetuneRecipe(parts=("bias",), l2=0.01, holdout=0.2, min_holdout=10))
    first = de.finetune(m, _history(m, np.tile(np.arange(5), 50)))
    assert first.summary["kept_global"] is None
    t1 = first.model.personal["last_timestamp"]
    # then habits change: the check keeps the first personal model, and its timestamp
    # (200 new clicks as before, then 50 on other items: exactly the held-out events)
    items = np.concatenate([np.tile(np.arange(5), 90), np.tile(np.arange(30, 35), 10)])
    res = de.finetune(first.model, _history(m, items))
    assert res.summary["kept_global"] and res.summary["clicks_used"] == 0
    assert res.model.personal["last_timestamp"] == t1
    assert res.model.personal["clicks_used_total"] == first.model.personal["clicks_used_total"]
    assert _diff(res.model, first.model) == []


def test_a_new_click_sharing_the_last_learned_timestamp_is_learned():
    """Day or minute stamps tie: a click added after a fine-tune, dated the
    same as its newest learned click, is new. The record counts how many
    clicks of that time were learned (``last_timestamp_clicks``); it once
    took every click of that time as old, and the new one was never learned."""
    rng = np.random.default_rng(11)
    m = _model(FinetuneRecipe(parts=("offset", "bias", "repeat"), l2=5.0, holdout=0.0))
    items = rng.integers(0, 20, 60).astype(np.int32)
    ts = 1.7e9 + 60.0 * (np.arange(60) // 3)          # three clicks per minute

    def hist(n):
        return History(items=items[:n], item_ids=np.asarray(m.item_ids)[items[:n]],
                       timestamps=ts[:n], session_ids=None, n_rows=n)

    first = de.finetune(m, hist(40))                    # 40 = 13 minutes + 1 click
    rec = first.model.personal
    assert rec["last_timestamp"] == ts[39] and rec["last_timestamp_clicks"] == 1
    second = de.finetune(first.model, hist(60))
    assert second.summary["clicks_older_than_model"] == 40
    assert second.summary["clicks_used"] == 20          # the two at ts[39]'s minute too
    assert second.model.personal["last_timestamp_clicks"] == 3
    assert second.model.personal["clicks_used_total"] == 60
    with pytest.raises(ValueError, match="no new clicks"):
        de.finetune(second.model, hist(60))
    # a file written before the key: every click of that time counts as learned
    old = dict(rec)
    del old["last_timestamp_clicks"]
    from deeprec_edge.api import _clicks_already_learned
    assert _clicks_already_learned(old, ts[:60]) == 42
    assert _clicks_already_learned(rec, ts[:60]) == 40


def test_the_gru_part_s_held_out_clicks_stay_new_for_the_next_finetune():
    """The gru part never trains on its held-out newest clicks (they pick the
    epoch); they were recorded as used, and the next continual fine-tune read
    them as context only: never learned."""
    rng = np.random.default_rng(12)
    m = _model(FinetuneRecipe(parts=("gru",), holdout=0.2))
    items = np.tile(rng.integers(0, 12, 8), 20)          # 160 clicks a model can learn
    h = _history(m, items)
    first = de.finetune(m, h, epochs=3, lr=0.2, early_stopping=False)
    g = first.summary["gru"]
    assert first.summary["epochs"] > 0 and g["heldout_events"] > 0
    n_train = g["heldout_first_target"]
    assert first.summary["clicks_used"] == n_train < 160
    assert first.summary["clicks_left_new"] == 160 - n_train
    assert first.model.personal["last_timestamp"] == h.timestamps[n_train - 1]
    # the same history again: the held-out tail is what is new now
    second = de.finetune(first.model, h, epochs=1, holdout=0.0)
    assert second.summary["clicks_older_than_model"] == n_train
    assert second.summary["clicks_used"] == 160 - n_train
    assert second.model.personal["clicks_used_total"] == 160


def test_a_history_out_of_time_order_is_learned_in_time_order():
    """A History built by hand need not be sorted: the record's last learned
    click is the newest one (it was the last row's), so fine-tuning again on
    the same clicks finds nothing new."""
    rng = np.random.default_rng(13)
    m = _model(FinetuneRecipe(parts=("offset", "bias"), l2=5.0, holdout=0.0))
    h = _history(m, rng.integers(0, 20, 60))
    order = np.arange(60)
    order[[10, 59]] = order[[59, 10]]                      # the newest click in row 10
    shuffled = History(items=h.items[order], item_ids=h.item_ids[order],
                       timestamps=h.timestamps[order], session_ids=None, n_rows=60)
    a = de.finetune(m, shuffled)
    b = de.finetune(m, h)
    assert a.model.personal["last_timestamp"] == h.timestamps.max()
    assert a.summary["clicks_used"] == 60
    assert _diff(a.model, b.model) == []                   # the same fit as the sorted history
    with pytest.raises(ValueError, match="no new clicks"):
        de.finetune(a.model, shuffled)


def test_with_the_gru_part_every_part_learns_each_click_once():
    """gru + other parts: the gru part's held-out newest clicks stay new for the
    next fine-tune. The other parts had fitted them already, and then fitted
    them again the next time. Now no part learns them the first time, and over
    two fine-tunes the parts learn every event exactly once."""
    rng = np.random.default_rng(14)
    m = _model(FinetuneRecipe(parts=("gru", "offset", "bias"), l2=1.0, holdout=0.2,
                              min_holdout=10))
    items = np.tile(rng.integers(0, 12, 8), 20)             # 160 clicks, one session
    h = _history(m, items)
    first = de.finetune(m, h, epochs=3, lr=0.2, early_stopping=False)
    s = first.summary
    n_train = s["gru"]["heldout_first_target"]
    assert s["epochs"] > 0 and s["kept_global"] is None and n_train < 160
    assert s["personal_parts"]["events"] == n_train - 1     # targets 1 .. n_train - 1
    assert s["clicks_used"] == n_train
    # the summary's held-out events are the gru part's: learned by no part
    assert s["heldout_events"] == 160 - n_train
    second = de.finetune(first.model, h, epochs=1, holdout=0.0)
    assert second.summary["personal_parts"]["events"] == 160 - n_train
    assert second.model.personal["clicks_used_total"] == 160

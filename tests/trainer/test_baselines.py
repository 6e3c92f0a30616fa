"""Next-item baselines (trainer/baselines.py) against slow references.

Every reference below is written in plain Python loops from the published
method -- GRU4Rec's ``baselines.py`` (``ItemKNN``), session-rec's
``algorithms/knn/sknn.py`` (``ContextKNN``) and ``vsknn.py``
(``VMContextKNN``), and the formulas in the module docstring -- and never
calls the vectorised code.  Scores are compared by the ranking they induce:
a strictly larger reference score must give a strictly larger score; equal
reference scores must be ordered by popularity (equal popularity: equal
scores).
"""
import math
from collections import defaultdict
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deeprec_edge.trainer import baselines as BL
from deeprec_edge.trainer.baselines import BASELINES, make_baseline
from deeprec_edge.trainer.data import Interactions


# ---------------------------------------------------------------------------
# logs and queries
# ---------------------------------------------------------------------------

def random_log(seed, n_events=80, n_items=12, n_users=6, extra_items=2, span=40_000):
    """A small log with repeats, equal times and items without any click
    (``extra_items`` codes beyond the clicked ones)."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, n_events)
    p = rng.dirichlet(np.ones(n_items) * 0.7)
    items = rng.choice(n_items, n_events, p=p)
    times = (rng.integers(0, span // 600, n_events) * 600).astype(float)   # many equal times
    return Interactions.from_arrays(users, items, times, n_items=n_items + extra_items,
                                    session_gap=3600)


def random_query(seed, n_items, length=25):
    rng = np.random.default_rng(seed + 1000)
    seq = rng.integers(0, n_items, length)
    starts = rng.random(length) < 0.25
    starts[0] = True
    return seq, starts


def sessions_of(train):
    """Training sessions in row order: (item list, last time, session number)."""
    out = []
    items, times, sess = train.items.tolist(), train.times.tolist(), train.sessions.tolist()
    for r in range(len(items)):
        if r == 0 or sess[r] != sess[r - 1]:
            out.append({"items": [], "time": None, "number": len(out)})
        out[-1]["items"].append(items[r])
        out[-1]["time"] = times[r]
    return out


def session_begin(starts, p):
    b = p
    while b > 0 and not starts[b]:
        b -= 1
    return b


# ---------------------------------------------------------------------------
# comparing rankings
# ---------------------------------------------------------------------------

def assert_same_ranking(scores, ref, pop, rtol=1e-9):
    """``scores`` (fast) against reference values ``ref`` (floats or Fractions)
    with popularity ``pop`` as the tie-break."""
    scores = np.asarray(scores)
    n = len(scores)
    exact = any(isinstance(v, Fraction) for v in ref)
    scale = max(abs(float(v)) for v in ref) or 1.0
    for j in range(n):
        for k in range(j + 1, n):
            d = ref[j] - ref[k]
            tie = d == 0 if exact else abs(d) <= rtol * scale
            sj, sk = scores[j], scores[k]
            if not tie:
                assert (sj > sk) == (d > 0) and sj != sk, \
                    f"items {j},{k}: reference {float(ref[j])!r} vs {float(ref[k])!r}, got {sj!r} vs {sk!r}"
            elif pop[j] != pop[k]:
                assert (sj > sk) == (pop[j] > pop[k]) and sj != sk, \
                    f"items {j},{k} tie at {float(ref[j])!r}: popularity {pop[j]} vs {pop[k]} " \
                    f"must order them, got {sj!r} vs {sk!r}"
            else:
                assert abs(sj - sk) <= 1e-12 * max(abs(sj), abs(sk), 1.0), \
                    f"items {j},{k}: equal reference and popularity, got {sj!r} vs {sk!r}"


# ---------------------------------------------------------------------------
# slow references
# ---------------------------------------------------------------------------

def ref_cooccurrence(train, last):
    sets = [set(s["items"]) for s in sessions_of(train)]
    return [sum(1 for s in sets if last in s and j in s) for j in range(train.n_items)]


def ref_itemknn_table(train, pop, n_sims=100, lmbd=20.0, alpha=0.5):
    """GRU4Rec ItemKNN.fit: loop over the clicks of each item."""
    N = train.n_items
    sessions = [s["items"] for s in sessions_of(train)]
    supp = [0] * N
    for s in sessions:
        for i in s:
            supp[i] += 1
    table = {}
    for i in range(N):
        iarray = [0.0] * N
        for s in sessions:
            for e in s:
                if e == i:                      # one pass per click of i
                    for j in set(s):
                        iarray[j] += 1
        iarray[i] = 0.0
        sims = []
        for j in range(N):
            norm = (supp[i] + lmbd) ** alpha * (supp[j] + lmbd) ** (1.0 - alpha)
            sims.append(iarray[j] / (norm if norm != 0 else 1.0))
        ranked = sorted(range(N), key=lambda j: (-sims[j], -pop[j], j))[:n_sims]
        table[i] = {j: sims[j] for j in ranked if sims[j] > 0}
    return table


def ref_session_knn(train, cur_clicks, *, k, sample_size, similarity, vector=False,
                    weighting="div", weighting_score="div", idf_weighting=0.0):
    """session-rec ContextKNN / VMContextKNN.predict_next for one position."""
    sessions = sessions_of(train)
    item_sets = [set(s["items"]) for s in sessions]
    cur = set(cur_clicks)
    relevant = [n for n in range(len(sessions)) if item_sets[n] & cur]
    recency = {n: (sessions[n]["time"], sessions[n]["number"]) for n in relevant}
    if sample_size and len(relevant) > sample_size:
        relevant = sorted(relevant, key=lambda n: recency[n], reverse=True)[:sample_size]
    length = len(cur_clicks)
    pos_map = {}
    for count, item in enumerate(cur_clicks, start=1):
        pos_map[item] = {"same": 1.0, "div": count / length,
                         "linear": 1 - 0.1 * (length - count) if count <= 10 else 0.0,
                         "log": 1 / math.log10((length - count) + 1.7),
                         "quadratic": (count / length) ** 2}[weighting]
    neighbours = []
    for n in relevant:
        items = item_sets[n]
        inter = cur & items
        if not vector:
            if similarity == "cosine":
                sim = len(inter) / (math.sqrt(len(cur)) * math.sqrt(len(items)))
            else:
                sim = len(inter) / len(cur | items)
        elif similarity == "vec":
            sim = sum(pos_map[i] for i in inter) / len(pos_map)
        else:
            sim = sum(pos_map[i] for i in inter) / (
                math.sqrt(sum(pos_map[i] ** 2 for i in cur)) * math.sqrt(len(items)))
        if sim > 0:
            neighbours.append((n, sim))
    neighbours.sort(key=lambda x: (x[1], recency[x[0]]), reverse=True)
    neighbours = neighbours[:k]
    n_sess = len(sessions)
    clicks = defaultdict(int)
    for s in sessions:
        for i in s["items"]:
            clicks[i] += 1
    scores = [0.0] * train.n_items
    for n, sim in neighbours:
        items = item_sets[n]
        decay = 1.0
        if vector:
            step = 1
            for item in reversed(cur_clicks):
                if item in items:
                    decay = {"same": 1.0, "div": 1 / step,
                             "linear": 1 - 0.1 * step if step <= 100 else 0.0,
                             "log": 1 / math.log10(step + 1.7),
                             "quadratic": 1 / (step * step)}[weighting_score]
                    break
                step += 1
        for item in items:
            new = sim
            if vector and idf_weighting:
                new = new + new * math.log(n_sess / clicks[item]) * idf_weighting
            scores[item] += new * decay
    return scores


def ref_recency(seq, p, n_items, decay):
    d = Fraction(decay).limit_denominator(10**6)
    out = [Fraction(0)] * n_items
    for c in range(p + 1):
        out[seq[c]] += d ** (p - c)
    return out


def reference_scores(name, opts, train, seq, starts, p, pop):
    """Reference values for the click after position ``p``."""
    if name == "popularity":
        return list(pop)
    if name == "cooccurrence":
        return ref_cooccurrence(train, int(seq[p]))
    if name == "item-knn":
        table = ref_itemknn_table(train, pop, **opts)
        row = table[int(seq[p])]
        return [row.get(j, 0.0) for j in range(train.n_items)]
    if name in ("sknn", "v-sknn"):
        o = dict(BASELINES[name]().options)
        o.update(opts)
        o.pop("sampling")
        cur = [int(x) for x in seq[session_begin(starts, p): p + 1]]
        return ref_session_knn(train, cur, vector=name == "v-sknn", **o)
    if name == "recency":
        return ref_recency([int(x) for x in seq], p, train.n_items, opts.get("decay", 0.9))
    raise AssertionError(name)


def check_against_reference(name, opts, seed, popularity=None):
    train = random_log(seed)
    seq, starts = random_query(seed, train.n_items)
    b = make_baseline(name, **opts).fit(train, popularity=popularity)
    pop = b.popularity
    positions = np.arange(len(seq))
    S = b.score(seq, starts, positions)
    assert S.shape == (len(seq), train.n_items) and S.dtype == np.float64
    assert np.all(np.isfinite(S))
    for r, p in enumerate(positions):
        ref = reference_scores(name, opts, train, seq, starts, int(p), pop)
        assert_same_ranking(S[r], ref, pop)


# ---------------------------------------------------------------------------
# every method against its reference
# ---------------------------------------------------------------------------

CASES = [
    ("popularity", {}),
    ("cooccurrence", {}),
    ("item-knn", {}),
    ("item-knn", {"n_sims": 3}),
    ("item-knn", {"n_sims": 2, "lmbd": 0.0, "alpha": 1.0}),
    ("item-knn", {"n_sims": 4, "lmbd": 3.0, "alpha": 0.2}),
    ("sknn", {}),
    ("sknn", {"k": 2, "sample_size": 3}),
    ("sknn", {"k": 3, "sample_size": 0, "similarity": "jaccard"}),
    ("v-sknn", {}),
    ("v-sknn", {"k": 2, "sample_size": 4}),
    ("v-sknn", {"k": 3, "sample_size": 5, "similarity": "cosine", "weighting": "log",
                "weighting_score": "quadratic", "idf_weighting": 1.0}),
    ("v-sknn", {"k": 4, "sample_size": 0, "weighting": "linear", "weighting_score": "linear",
                "idf_weighting": 0.0}),
    ("v-sknn", {"k": 3, "sample_size": 6, "weighting": "same", "weighting_score": "log",
                "idf_weighting": 2.0}),
    ("v-sknn", {"k": 5, "sample_size": 5, "weighting": "div", "weighting_score": "same"}),
    ("recency", {}),
    ("recency", {"decay": 0.5}),
]


@pytest.mark.parametrize("name,opts", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_reference(name, opts, seed):
    check_against_reference(name, opts, seed)


@pytest.mark.parametrize("name", list(BASELINES))
def test_matches_reference_with_given_popularity(name):
    # a popularity other than the training support (with ties and zeros)
    train = random_log(7)
    pop = np.random.default_rng(3).integers(0, 4, train.n_items).astype(float)
    check_against_reference(name, {}, 7, popularity=pop)


_opts = st.fixed_dictionaries({
    "k": st.integers(1, 6), "sample_size": st.sampled_from([0, 1, 2, 3, 5, 8]),
    "weighting": st.sampled_from(list(BL._POSITION_WEIGHTS)),
    "weighting_score": st.sampled_from(list(BL._SCORE_DECAYS)),
    "idf_weighting": st.sampled_from([0.0, 0.5, 5.0]),
    "similarity": st.sampled_from(["vec", "cosine"]),
})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), opts=_opts)
def test_vsknn_matches_reference_any_setting(seed, opts):
    check_against_reference("v-sknn", opts, seed)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 6), sample_size=st.integers(0, 6),
       similarity=st.sampled_from(["cosine", "jaccard"]))
def test_sknn_matches_reference_any_setting(seed, k, sample_size, similarity):
    check_against_reference("sknn", {"k": k, "sample_size": sample_size,
                                     "similarity": similarity}, seed)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n_sims=st.integers(1, 8),
       lmbd=st.sampled_from([0.0, 1.0, 20.0]), alpha=st.sampled_from([0.0, 0.3, 0.5, 1.0]))
def test_itemknn_matches_reference_any_setting(seed, n_sims, lmbd, alpha):
    check_against_reference("item-knn", {"n_sims": n_sims, "lmbd": lmbd, "alpha": alpha}, seed)


# ---------------------------------------------------------------------------
# the interface's promises
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(BASELINES))
def test_no_leak_from_clicks_after_the_position(name):
    train = random_log(11)
    seq, starts = random_query(11, train.n_items, length=30)
    b = make_baseline(name).fit(train)
    positions = np.arange(len(seq))
    S = b.score(seq, starts, positions)
    rng = np.random.default_rng(5)
    for p in (0, 3, 11, 20, 28):
        seq2, starts2 = seq.copy(), starts.copy()
        seq2[p + 1:] = rng.integers(0, train.n_items, len(seq) - p - 1)
        starts2[p + 1:] = rng.random(len(seq) - p - 1) < 0.5
        row = b.score(seq2, starts2, np.array([p]))[0]
        np.testing.assert_array_equal(row, S[p])
        # and a truncated sequence gives the same row
        np.testing.assert_array_equal(b.score(seq[:p + 1], starts[:p + 1], np.array([p]))[0], S[p])


@pytest.mark.parametrize("name", list(BASELINES))
def test_rows_do_not_depend_on_the_batch(name, monkeypatch):
    train = random_log(12)
    seq, starts = random_query(12, train.n_items, length=30)
    b = make_baseline(name).fit(train)
    positions = np.array([29, 3, 3, 17, 0, 8])
    S = b.score(seq, starts, positions)
    for r, p in enumerate(positions):
        np.testing.assert_array_equal(b.score(seq, starts, np.array([p]))[0], S[r])
    # one row per block, and ItemKNN's table in one-item blocks: identical
    monkeypatch.setattr(BL, "_BLOCK_ENTRIES", 1)
    b2 = make_baseline(name).fit(train)
    np.testing.assert_array_equal(b2.score(seq, starts, positions), S)


@pytest.mark.parametrize("opts", [{}, {"weighting": "linear", "weighting_score": "log"},
                                  {"similarity": "cosine", "weighting": "same"}])
def test_vsknn_exact_path_for_long_sessions_agrees(opts, monkeypatch):
    """Sessions longer than _MAX_POW4_LENGTH clicks take the exact lookup of the
    newest shared click; both paths give the same scores, and match the
    reference at and beyond the boundary."""
    train = random_log(14)
    seq, starts = random_query(14, train.n_items, length=40)
    b = make_baseline("v-sknn", k=4, sample_size=6, **opts).fit(train)
    fast = b.score(seq, starts, np.arange(len(seq)))
    monkeypatch.setattr(BL, "_MAX_POW4_LENGTH", 0)
    np.testing.assert_array_equal(b.score(seq, starts, np.arange(len(seq))), fast)
    monkeypatch.undo()
    rng = np.random.default_rng(2)
    unclicked = train.n_items - 1            # an item no training session holds
    o = dict(b.options)
    o.pop("sampling")
    for long_seq in (rng.integers(0, train.n_items, 520),
                     # the shared clicks 500 and 499 clicks back: steps near 4**-500
                     np.r_[3, 5, np.full(518, unclicked)], np.r_[5, 3, np.full(518, unclicked)]):
        long_starts = np.zeros(520, bool)
        long_starts[0] = True
        for p in (499, 519):                 # 500 clicks: the fast path; 520: the exact one
            row = b.score(long_seq, long_starts, np.array([p]))[0]
            ref = ref_session_knn(train, [int(x) for x in long_seq[:p + 1]], vector=True, **o)
            assert_same_ranking(row, ref, b.popularity)


@pytest.mark.parametrize("name", list(BASELINES))
def test_deterministic(name):
    train = random_log(13)
    seq, starts = random_query(13, train.n_items)
    a = make_baseline(name).fit(train).score(seq, starts, np.arange(len(seq)))
    b = make_baseline(name).fit(random_log(13)).score(seq.copy(), starts.copy(), np.arange(len(seq)))
    np.testing.assert_array_equal(a, b)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), name=st.sampled_from(list(BASELINES)),
       n_items=st.integers(1, 15), extra=st.integers(0, 3))
def test_scores_finite_and_distinct_popularity_leaves_no_ties(seed, name, n_items, extra):
    """Every score finite; with all popularities distinct no two items of a row
    tie, so optimistic and conservative ranks are equal."""
    rng = np.random.default_rng(seed)
    train = random_log(seed, n_items=n_items, extra_items=extra, n_events=int(rng.integers(1, 60)))
    N = train.n_items
    pop = rng.permutation(N).astype(float) * rng.choice([1.0, 1e-3, 1e6])
    seq, starts = random_query(seed, N, length=int(rng.integers(1, 20)))
    b = make_baseline(name).fit(train, popularity=pop)
    S = b.score(seq, starts, np.arange(len(seq)))
    assert np.all(np.isfinite(S))
    srt = np.sort(S, axis=1)
    assert np.all(np.diff(srt, axis=1) > 0)


def test_equal_popularity_is_the_only_source_of_ties():
    """With the training support as popularity, tied scores have equal support."""
    for name in BASELINES:
        train = random_log(21)
        seq, starts = random_query(21, train.n_items)
        b = make_baseline(name).fit(train)
        S = b.score(seq, starts, np.arange(len(seq)))
        for row in S:
            for j in range(len(row)):
                same = np.flatnonzero(row == row[j])
                assert np.all(b.popularity[same] == b.popularity[j]), name


def test_long_history_recency_does_not_underflow():
    # 0.5**1100 underflows float64; the returned value keeps the order
    train = random_log(1)
    seq = np.r_[0, np.full(1100, 1), 2].astype(np.int64)
    starts = np.zeros(len(seq), bool)
    starts[0] = True
    b = make_baseline("recency", decay=0.5).fit(train)
    row = b.score(seq, starts, np.array([len(seq) - 1]))[0]
    others = np.setdiff1d(np.arange(train.n_items), [0, 1, 2])
    assert row[2] > row[1] > row[0] > row[others].max()


# ---------------------------------------------------------------------------
# planted structure
# ---------------------------------------------------------------------------

def planted_log():
    """Sessions (a=0, b=1) repeated; b also in other sessions, so b is more
    popular than a; filler items 2..7 never with a."""
    users, items, times = [], [], []
    t = 0.0
    rng = np.random.default_rng(0)
    for s in range(12):
        sess = [0, 1] if s % 2 == 0 else list(rng.choice(np.arange(2, 8), 3, replace=False))
        if s % 3 == 0:
            sess = sess + [1]
        for it in sess:
            users.append(s % 4)
            items.append(int(it))
            times.append(t)
            t += 10.0
        t += 10_000.0
    return Interactions.from_arrays(users, items, times, n_items=8)


@pytest.mark.parametrize("name", ["item-knn", "cooccurrence", "sknn", "v-sknn"])
def test_b_follows_a(name):
    train = planted_log()
    b = make_baseline(name).fit(train)
    S = b.score(np.array([0]), np.array([True]), np.array([0]))[0]
    assert np.argmax(S[1:]) + 1 == 1, S            # b, the best item other than a
    # fillers: the popularity tie-break only (below 0.5 for integer counts)
    assert np.all(S[2:] < (0.5 if name == "cooccurrence" else 1e-6 * S[1]))
    if name in ("item-knn", "cooccurrence"):       # the last click's neighbours: b first
        assert np.argmax(S) == 1, S


def test_cooccurrence_counts_the_last_item_itself():
    train = planted_log()
    S = make_baseline("cooccurrence").fit(train).score(np.array([0]), np.array([True]),
                                                         np.array([0]))[0]
    # a is in all 6 (a, b) sessions: as many as b; filler items in none
    assert math.floor(S[0]) == math.floor(S[1]) == 6
    assert np.all(S[2:] < 1)


def test_itemknn_never_recommends_the_item_itself():
    train = planted_log()
    b = make_baseline("item-knn").fit(train)
    assert b.similarities.diagonal().max() == 0
    S = b.score(np.array([0]), np.array([True]), np.array([0]))[0]
    assert S[0] < 1e-6 * S[1]


def test_recency_ranks_the_users_items_first_most_recent_first():
    train = random_log(3)
    N = train.n_items
    pop = np.arange(N, dtype=float)[::-1].copy()   # item 0 the most popular
    # clicks: 5, 6, 7, 6, 8 -> 8 (1), 6 (0.9 + 0.729), 7 (0.81), 5 (0.6561)
    seq = np.array([5, 6, 7, 6, 8])
    S = make_baseline("recency").fit(train, popularity=pop).score(
        seq, np.ones(5, bool), np.array([4]))[0]
    order = np.argsort(-S, kind="stable")
    assert order[:4].tolist() == [6, 8, 7, 5]
    rest = [j for j in range(N) if j not in (5, 6, 7, 8)]
    assert order[4:].tolist() == sorted(rest, key=lambda j: -pop[j])


def test_session_knn_finds_the_session_that_continues_the_current_one():
    # many sessions p, q, r; current session p, q -> r is the best new item
    users, items, times = [], [], []
    t = 0.0
    for s in range(10):
        for it in ([2, 3, 4] if s % 2 == 0 else [5, 6, 2]):
            users.append(s)
            items.append(it)
            times.append(t)
            t += 1.0
        t += 10_000.0
    train = Interactions.from_arrays(users, items, times, n_items=8)
    for name in ("sknn", "v-sknn"):
        S = make_baseline(name).fit(train).score(np.array([2, 3]), np.array([True, False]),
                                                 np.array([1]))[0]
        new = [j for j in range(8) if j not in (2, 3)]
        assert max(new, key=lambda j: S[j]) == 4, name


def test_session_knn_uses_only_the_current_session():
    # an earlier session of the same user does not change the neighbours
    train = random_log(4)
    b = make_baseline("sknn").fit(train)
    seq = np.array([1, 2, 3, 4, 5])
    a = b.score(seq, np.array([True, False, True, False, False]), np.array([4]))
    c = b.score(seq[2:], np.array([True, False, False]), np.array([2]))
    np.testing.assert_array_equal(a, c)


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------

def test_registry_and_options():
    assert list(BASELINES) == ["popularity", "cooccurrence", "item-knn", "sknn", "v-sknn",
                               "recency"]
    for name, cls in BASELINES.items():
        assert cls.name == name and make_baseline(name).name == name
    assert make_baseline("item-knn").options == {"n_sims": 100, "lmbd": 20.0, "alpha": 0.5}
    assert make_baseline("sknn").options == {"k": 100, "sample_size": 500, "sampling": "recent",
                                             "similarity": "cosine"}
    assert make_baseline("v-sknn").options == {
        "k": 500, "sample_size": 5000, "sampling": "recent", "similarity": "vec",
        "weighting": "quadratic", "weighting_score": "div", "idf_weighting": 5.0}
    assert make_baseline("recency").options == {"decay": 0.9}
    with pytest.raises(ValueError, match="unknown baseline 'gru'.*popularity"):
        make_baseline("gru")
    with pytest.raises(ValueError, match="item-knn: unknown option.*neighbours.*n_sims"):
        make_baseline("item-knn", neighbours=5)
    with pytest.raises(ValueError, match="popularity: unknown option.*none"):
        make_baseline("popularity", k=1)


@pytest.mark.parametrize("name,opts,match", [
    ("item-knn", {"n_sims": 0}, "n_sims must be an integer >= 1"),
    ("item-knn", {"alpha": 1.5}, r"alpha must be in \[0.0, 1.0\]"),
    ("item-knn", {"lmbd": -1}, "lmbd must be in"),
    ("item-knn", {"lmbd": float("nan")}, "lmbd must be in"),
    ("sknn", {"k": 2.5}, "k must be an integer"),
    ("sknn", {"sampling": "random"}, "sampling must be 'recent'"),
    ("sknn", {"similarity": "vec"}, "similarity must be one of cosine, jaccard"),
    ("v-sknn", {"weighting": "exp"}, "weighting must be one of same, div, linear"),
    ("v-sknn", {"sample_size": -1}, "sample_size must be an integer >= 0"),
    ("recency", {"decay": 1.0}, r"decay must be in \(0.0, 1.0\)"),
    ("recency", {"decay": 0}, r"decay must be in \(0.0, 1.0\)"),
])
def test_bad_options(name, opts, match):
    with pytest.raises(ValueError, match=match):
        make_baseline(name, **opts)


def test_bad_inputs():
    train = random_log(0)
    N = train.n_items
    b = make_baseline("sknn")
    with pytest.raises(RuntimeError, match="call fit"):
        b.score(np.array([1]), np.array([True]), np.array([0]))
    with pytest.raises(TypeError, match="Interactions"):
        b.fit("log.csv")
    with pytest.raises(ValueError, match=rf"shape \({N},\)"):
        b.fit(train, popularity=np.ones(N + 1))
    with pytest.raises(ValueError, match="finite and >= 0"):
        b.fit(train, popularity=np.r_[np.ones(N - 1), np.nan])
    with pytest.raises(ValueError, match="finite and >= 0"):
        b.fit(train, popularity=np.r_[np.ones(N - 1), -1.0])
    b.fit(train)
    ok_s, ok_t = np.array([1, 2]), np.array([True, False])
    with pytest.raises(ValueError, match=f"item code {N}, outside the catalogue 0..{N - 1}"):
        b.score(np.array([1, N]), ok_t, np.array([0]))
    with pytest.raises(ValueError, match="integer array of item codes"):
        b.score(np.array([1.0, 2.0]), ok_t, np.array([0]))
    with pytest.raises(ValueError, match="session_start must have the shape"):
        b.score(ok_s, np.array([True]), np.array([0]))
    with pytest.raises(ValueError, match="session_start must be booleans"):
        b.score(ok_s, np.array([0.5, 1.0]), np.array([0]))
    with pytest.raises(ValueError, match=r"positions must index seq \(0..1\)"):
        b.score(ok_s, ok_t, np.array([2]))
    with pytest.raises(ValueError, match="positions must be a 1-D integer"):
        b.score(ok_s, ok_t, np.array([[0]]))
    assert b.score(ok_s, ok_t, np.zeros(0, np.int64)).shape == (0, N)
    # 0/1 integers are accepted as session starts
    np.testing.assert_array_equal(b.score(ok_s, np.array([1, 0]), np.array([1])),
                                  b.score(ok_s, ok_t, np.array([1])))


def test_empty_training_log_and_unclicked_items():
    empty = Interactions.from_arrays([], [], [], n_items=4)
    for name in BASELINES:
        S = make_baseline(name).fit(empty).score(np.array([0, 3]), np.array([True, False]),
                                                 np.array([0, 1]))
        assert S.shape == (2, 4) and np.all(np.isfinite(S))
    with pytest.raises(ValueError, match="empty item vocabulary"):
        make_baseline("popularity").fit(Interactions.from_arrays([], [], [], n_items=0))

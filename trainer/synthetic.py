"""Synthetic click logs with planted structure, so tests know the answer.

The generative process (all item/user indices here are oracle codes, which
equal the returned log's codes; catalogue ids are ``id_offset + code``):

- **Items** fall into ``K`` equal-sized clusters (a random assignment).
  Within cluster ``c`` items have popularity ``q`` (Dirichlet, sums to 1 per
  cluster).
- **Transition matrix** ``T`` (N x N, rows sum to 1): item ``i`` has
  ``n_successors`` distinct successors in its own cluster with Dirichlet
  weights ``w_i``; ``T[i] = (1 - p_noise) * sum_s w_is e(succ_is) +
  p_noise * q * 1[cluster == cluster(i)]``.
- **Users** have cluster preferences ``theta_u`` (Dirichlet with
  ``user_concentration``: small = a few favourite clusters); the user's item
  distribution is ``pi_u[j] = theta_u[cluster(j)] * q[j]``.
- **Sessions**: the first click is drawn from ``pi_u``; each next click from
  ``P(j | i, u) = (1 - p_jump) * T[i, j] + p_jump * pi_u[j]`` -- a
  first-order Markov chain (``T``) with a user-specific jump.
- **Drift** (``drift = delta > 0``): every user gets a drift cluster
  ``c*_u`` (never their favourite); clicks at or after the cutoff (the
  ``cutoff_quantile`` of all click times, computed exactly as
  :func:`~deeprec_edge.trainer.data.split_by_time` does) use
  ``theta'_u = (1 - delta) theta_u + delta e(c*_u)``.  A global model trained
  before the cutoff cannot know ``c*_u``; a personal model fine-tuned on the
  user's first post-cutoff clicks can.
- **Times**: clicks within a session are at most ``session_gap / 2`` apart,
  sessions at least ``session_gap`` apart, so the time-gap rule recovers the
  generated sessions exactly.

:class:`SyntheticOracle` gives the true next-item distribution of any
observed event and so the best achievable metrics: the *expected*
Recall@k of the oracle is the mean over events of the probability mass of
its top-k items; the empirical recall of the oracle's ranking on the
sampled events fluctuates around it (binomial noise).  Deterministic for a
seed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .data import DEFAULT_SESSION_GAP, Interactions, _Coder, time_cutoff
from .metrics import ranks_from_scores

__all__ = ["SyntheticOracle", "make_synthetic", "ShopperTruth", "make_shoppers", "StyleTruth",
           "make_styles"]


@dataclass
class SyntheticOracle:
    """The planted structure of :func:`make_synthetic` (see the module docstring)."""

    item_cluster: np.ndarray      #: (N,) int32 cluster of each item
    item_probs: np.ndarray        #: (N,) float64 q: popularity within the item's cluster
    successors: np.ndarray        #: (N, S) int32 planted successors (same cluster)
    successor_probs: np.ndarray   #: (N, S) float64 their weights (rows sum to 1)
    p_noise: float                #: share of T's row spread over the cluster by q
    p_jump: float                 #: probability of a user-preference jump per click
    user_pref: np.ndarray         #: (U, K) theta before the cutoff
    user_pref_after: np.ndarray   #: (U, K) theta at/after the cutoff (= before if no drift)
    drift_cluster: np.ndarray     #: (U,) c*_u, -1 without drift
    cutoff_time: float            #: the time quantile the drift starts at (seconds)
    item_ids: np.ndarray          #: (N,) catalogue ids of the oracle's item codes
    user_ids: np.ndarray          #: (U,) catalogue ids of the oracle's user codes

    @property
    def n_items(self) -> int:
        """Items in the world."""
        return len(self.item_cluster)

    @property
    def n_clusters(self) -> int:
        """Planted item clusters (tastes)."""
        return self.user_pref.shape[1]

    @property
    def n_users(self) -> int:
        """Users in the world."""
        return self.user_pref.shape[0]

    # -- distributions ---------------------------------------------------
    def transition_matrix(self) -> np.ndarray:
        """Dense ``T`` (N x N, float64; rows sum to 1)."""
        return self._markov_rows(np.arange(self.n_items))

    def _markov_rows(self, prev: np.ndarray) -> np.ndarray:
        N = self.n_items
        P = np.zeros((len(prev), N), np.float64)
        same = self.item_cluster[None, :] == self.item_cluster[prev][:, None]
        P += self.p_noise * same * self.item_probs[None, :]
        rows = np.repeat(np.arange(len(prev)), self.successors.shape[1])
        P[rows, self.successors[prev].ravel()] += (1.0 - self.p_noise) * self.successor_probs[prev].ravel()
        return P

    def preference(self, users: Any, times: Any, which: str = "actual") -> np.ndarray:
        """(B, K) cluster preferences.  ``which``: ``"actual"`` (drifted at or
        after the cutoff), ``"before"`` (the pre-cutoff theta at all times:
        the best a model of pre-cutoff behaviour can know) or
        ``"population"`` (the mean theta over users, non-personal)."""
        u = np.asarray(users, dtype=np.int64)
        if which == "population":
            return np.broadcast_to(self.user_pref.mean(axis=0), (len(u), self.n_clusters)).copy()
        if which == "before":
            return self.user_pref[u]
        if which != "actual":
            raise ValueError(f"which must be actual, before or population; got {which!r}")
        after = np.asarray(times, dtype=np.float64) >= self.cutoff_time
        return np.where(after[:, None], self.user_pref_after[u], self.user_pref[u])

    def next_item_probs(self, users: Any, prev_items: Any, times: Any, *,
                        which: str = "actual") -> np.ndarray:
        """(B, N) true next-click distribution given the user, the previous
        click in the session (``-1`` at a session start) and the click time."""
        prev = np.asarray(prev_items, dtype=np.int64)
        theta = self.preference(users, times, which)
        pi = theta[:, self.item_cluster] * self.item_probs[None, :]
        start = prev < 0
        P = self.p_jump * pi
        if np.any(~start):
            P[~start] += (1.0 - self.p_jump) * self._markov_rows(prev[~start])
        P[start] = pi[start]
        return P

    # -- evaluation on a log --------------------------------------------
    def _batch(self) -> int:
        """Events per block so that a (block, N) probability matrix has ~2**22 entries."""
        return max(1, (1 << 22) // max(1, self.n_items))

    def events(self, inter: Interactions, include_session_starts: bool = False
               ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(users, prev_items, times, targets)`` in oracle codes for every
        click of `inter` that has a predecessor in its session (plus session
        starts with ``prev = -1`` if asked).  Meant for unfiltered logs: after
        filtering, the observed predecessor may not be the generating one."""
        imap = _Coder(self.item_ids).lookup(inter.item_ids)
        umap = _Coder(self.user_ids).lookup(inter.user_ids)
        if np.any(imap < 0) or np.any(umap < 0):
            raise ValueError("the log has items or users the oracle does not know")
        it = imap[inter.items]
        us = umap[inter.users]
        s = inter.sessions
        has_prev = np.zeros(len(it), bool)
        has_prev[1:] = s[1:] == s[:-1]
        prev = np.full(len(it), -1, np.int64)
        prev[1:] = np.where(has_prev[1:], it[:-1], -1)
        keep = has_prev | include_session_starts
        return us[keep], prev[keep], inter.times[keep], it[keep]

    def expected_recall(self, inter: Interactions, k: int = 20, *, include_session_starts: bool = False,
                        which: str = "actual", batch_size: Optional[int] = None) -> float:
        """Mean over the events of `inter` of the oracle's top-k probability
        mass: the Recall@k the oracle achieves in expectation (and an upper
        bound for any model, in expectation)."""
        u, p, t, _ = self.events(inter, include_session_starts)
        if len(u) == 0:
            return float("nan")
        batch_size = batch_size or self._batch()
        total = 0.0
        for a in range(0, len(u), batch_size):
            P = self.next_item_probs(u[a:a + batch_size], p[a:a + batch_size], t[a:a + batch_size],
                                     which=which)
            kk = min(k, P.shape[1])
            top = -np.partition(-P, kk - 1, axis=1)[:, :kk]
            total += float(top.sum())
        return total / len(u)

    def ranks(self, inter: Interactions, *, include_session_starts: bool = False, which: str = "actual",
              ties: str = "optimistic", batch_size: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """``(ranks, users)``: the rank of each observed next click under the
        oracle's probabilities (for the empirical oracle metrics)."""
        u, p, t, y = self.events(inter, include_session_starts)
        batch_size = batch_size or self._batch()
        out = np.empty(len(u), np.int64)
        for a in range(0, len(u), batch_size):
            P = self.next_item_probs(u[a:a + batch_size], p[a:a + batch_size], t[a:a + batch_size],
                                     which=which)
            out[a:a + batch_size] = ranks_from_scores(P, y[a:a + batch_size], ties=ties)
        return out, u


def _cum_rows(p: np.ndarray) -> np.ndarray:
    c = np.cumsum(p, axis=-1)
    c /= c[..., -1:]
    c[..., -1] = 1.0
    return c


def _draw_rows(cum: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Index drawn from each row's cumulative distribution with uniforms r."""
    return np.minimum(np.count_nonzero(r[:, None] >= cum, axis=1), cum.shape[1] - 1)


def make_synthetic(n_users: int = 200, n_items: int = 300, n_clusters: int = 6, *,
                   sessions_per_user: float = 8.0, session_length: float = 6.0,
                   n_successors: int = 3, successor_concentration: float = 1.0,
                   popularity_concentration: float = 1.0, p_noise: float = 0.1,
                   p_jump: float = 0.2, user_concentration: float = 0.3, drift: float = 0.0,
                   cutoff_quantile: float = 0.8, mean_click_gap: float = 60.0,
                   time_span: float = 30 * 86_400.0, session_gap: float = DEFAULT_SESSION_GAP,
                   start_time: float = 1_600_000_000.0, id_offset: int = 1000,
                   seed: int = 0) -> Tuple[Interactions, SyntheticOracle]:
    """Generate a log and its oracle (see the module docstring).

    Sessions per user: ``1 + Poisson(sessions_per_user - 1)``; clicks per
    session: ``2 + Poisson(session_length - 2)``.  Click gaps are
    exponential (mean `mean_click_gap`, capped at ``session_gap / 2``);
    sessions start at uniform times over `time_span` seconds (so most users
    are active on both sides of the cutoff), each pushed to more than
    `session_gap` after the end of the user's previous session.  The log's
    sessions follow the time-gap rule with `session_gap`.  Item and user catalogue ids are ``id_offset + code``, so
    code/id mix-ups show.  Returns ``(interactions, oracle)``.
    """
    N, K, U, S = int(n_items), int(n_clusters), int(n_users), int(n_successors)
    if K < 1 or N < K:
        raise ValueError("need 1 <= n_clusters <= n_items")
    if N // K <= S:
        raise ValueError(f"clusters of {N // K} items cannot hold {S} distinct successors per item")
    if not (0.0 <= p_noise <= 1.0 and 0.0 <= p_jump <= 1.0 and 0.0 <= drift <= 1.0):
        raise ValueError("p_noise, p_jump and drift must be in [0, 1]")
    if sessions_per_user < 1 or session_length < 2:
        raise ValueError("sessions_per_user must be >= 1 and session_length >= 2")
    rng = np.random.default_rng(seed)

    # items, clusters, popularity within clusters
    item_cluster = rng.permutation(np.arange(N) % K).astype(np.int32)
    q = rng.gamma(popularity_concentration, 1.0, size=N) + 1e-12
    q /= np.bincount(item_cluster, weights=q, minlength=K)[item_cluster]
    members = [np.flatnonzero(item_cluster == c) for c in range(K)]

    # planted successors within the cluster
    succ = np.empty((N, S), np.int32)
    for i in range(N):
        m = members[item_cluster[i]]
        m = m[m != i]
        succ[i] = rng.choice(m, size=S, replace=False)
    w = rng.gamma(successor_concentration, 1.0, size=(N, S)) + 1e-12
    w /= w.sum(axis=1, keepdims=True)

    # users
    theta = rng.gamma(user_concentration, 1.0, size=(U, K)) + 1e-9
    theta /= theta.sum(axis=1, keepdims=True)
    if drift > 0 and K > 1:
        fav = theta.argmax(axis=1)
        dc = (fav + rng.integers(1, K, size=U)) % K        # never the favourite
        theta_after = (1.0 - drift) * theta
        theta_after[np.arange(U), dc] += drift
    else:
        dc = np.full(U, -1, np.int64)
        theta_after = theta.copy()

    # session structure and times
    n_sess = 1 + rng.poisson(sessions_per_user - 1.0, size=U)
    sess_user = np.repeat(np.arange(U), n_sess)
    n_s = len(sess_user)
    sess_len = 2 + rng.poisson(session_length - 2.0, size=n_s)
    sess_first = np.r_[0, np.cumsum(sess_len)[:-1]]
    n_ev = int(sess_len.sum())
    ev_sess = np.repeat(np.arange(n_s), sess_len)
    gaps = np.minimum(rng.exponential(mean_click_gap, size=n_ev), session_gap / 2.0)
    gaps[sess_first] = 0.0
    cg = np.cumsum(gaps)
    offset = cg - cg[sess_first][ev_sess]
    duration = offset[sess_first + sess_len - 1]
    user_first_sess = np.r_[0, np.cumsum(n_sess)[:-1]]
    # session starts: sorted uniform points over the span, pushed apart so that
    # each session starts more than session_gap after the previous one ended
    x = rng.uniform(0.0, time_span, size=n_s)
    x = x[np.lexsort((x, sess_user))]
    inc = np.empty(n_s)
    inc[1:] = duration[:-1] + session_gap + 1.0
    inc[user_first_sess] = 0.0
    ci = np.cumsum(inc)
    sess_start = start_time + x + ci - ci[user_first_sess][sess_user]
    times = sess_start[ev_sess] + offset
    ev_user = sess_user[ev_sess]
    cutoff = time_cutoff(times, cutoff_quantile)

    # items, step by step over the position in the session
    cum_theta = _cum_rows(theta)
    cum_theta_after = _cum_rows(theta_after)
    cum_succ = _cum_rows(w)
    order_in_cluster = np.argsort(item_cluster, kind="stable")      # items grouped by cluster
    cl_sorted = item_cluster[order_in_cluster]
    cq = np.cumsum(q[order_in_cluster])
    cl_start = np.searchsorted(cl_sorted, np.arange(K))
    cq_base = np.r_[0.0, cq][cl_start]
    cq_within = cq - cq_base[cl_sorted]                              # ends at ~1 per cluster
    last_of_cluster = np.r_[cl_start[1:], N] - 1
    cq_within[last_of_cluster] = 1.0
    key = cl_sorted + cq_within                                      # increasing

    def draw_in_cluster(c: np.ndarray) -> np.ndarray:
        r = rng.random(len(c))
        pos = np.searchsorted(key, c + r, side="right")
        return order_in_cluster[np.minimum(pos, N - 1)]

    # per-user cluster CDFs laid end to end (row u shifted by u): one binary
    # search per draw, O(draws) memory whatever the number of clusters
    shift = np.arange(U, dtype=np.float64)[:, None]
    flat_before = (shift + cum_theta).ravel()
    flat_after = (shift + cum_theta_after).ravel()

    def draw_pref(users: np.ndarray, tt: np.ndarray) -> np.ndarray:
        after = tt >= cutoff
        x = users + rng.random(len(users))
        pos = np.where(after, np.searchsorted(flat_after, x, side="right"),
                       np.searchsorted(flat_before, x, side="right"))
        return draw_in_cluster(np.minimum(pos - users * K, K - 1))

    items = np.empty(n_ev, np.int64)
    for t in range(int(sess_len.max())):
        act = np.flatnonzero(sess_len > t)
        ev = sess_first[act] + t
        if t == 0:
            items[ev] = draw_pref(ev_user[ev], times[ev])
            continue
        prev = items[ev - 1]
        r = rng.random(len(ev))
        jump = r < p_jump
        noise = (~jump) & (rng.random(len(ev)) < p_noise)
        markov = ~(jump | noise)
        out = np.empty(len(ev), np.int64)
        if jump.any():
            out[jump] = draw_pref(ev_user[ev[jump]], times[ev[jump]])
        if noise.any():
            out[noise] = draw_in_cluster(item_cluster[prev[noise]])
        if markov.any():
            pm = prev[markov]
            out[markov] = succ[pm, _draw_rows(cum_succ[pm], rng.random(len(pm)))]
        items[ev] = out

    item_ids = id_offset + np.arange(N, dtype=np.int64)
    user_ids = id_offset + np.arange(U, dtype=np.int64)
    inter = Interactions.from_arrays(ev_user, items, times, item_ids=item_ids, user_ids=user_ids,
                                     session_gap=session_gap)
    info: Dict[str, Any] = dict(inter.info)
    info.update(source="synthetic", seed=seed, cutoff_time=cutoff)
    inter.info = info
    oracle = SyntheticOracle(item_cluster=item_cluster, item_probs=q, successors=succ,
                             successor_probs=w, p_noise=float(p_noise), p_jump=float(p_jump),
                             user_pref=theta, user_pref_after=theta_after,
                             drift_cluster=dc.astype(np.int64), cutoff_time=cutoff,
                             item_ids=item_ids, user_ids=user_ids)
    return inter, oracle


@dataclass
class ShopperTruth:
    """The planted structure of :func:`make_shoppers`."""

    item_cluster: np.ndarray     #: (N,) cluster of each item
    home: np.ndarray             #: (U,) each user's cluster before the cutoff
    drift: np.ndarray            #: (U,) each user's cluster after the cutoff
    repeat_rate: np.ndarray      #: (U,) probability that a click returns to the user's items
    cutoff: float                #: time at which the users drift


def make_shoppers(n_users: int = 120, n_items: int = 200, n_clusters: int = 5, *,
                  clicks_per_user: int = 150, session_length: float = 6.0,
                  repeat_rates: Tuple[float, float] = (0.1, 0.8), drift_share: float = 0.6,
                  repeat_from_cutoff: bool = False,
                  cutoff_quantile: float = 0.7, time_span: float = 60 * 86_400.0,
                  session_gap: float = DEFAULT_SESSION_GAP, start_time: float = 1_600_000_000.0,
                  id_offset: int = 1000, seed: int = 0) -> Tuple[Interactions, ShopperTruth]:
    """A shopping log with planted *personal* structure of the kinds a device
    can learn (the right personal answer is known):

    - **repeat propensity**: half the users (``repeat_rates[1]``) mostly
      return to items they clicked before (chosen in proportion to their
      past clicks), the other half (``repeat_rates[0]``) mostly explore --
      a single global repeat weight fits neither half; with
      ``repeat_from_cutoff`` nobody repeats before the cutoff, so a model
      trained before it cannot know who starts to;
    - **drift**: after the cutoff (the ``cutoff_quantile`` of click times)
      a ``drift_share`` of a user's new items come from another cluster
      than her home cluster;
    - new items come from the user's current cluster, by a popularity
      shared by everyone (Dirichlet within clusters), the next one near the
      previous one (a successor structure within the cluster).

    Sessions of ``2 + Poisson(session_length - 2)`` clicks, a minute or so
    apart; sessions spread uniformly over ``time_span``.  Returns
    ``(interactions, truth)``; deterministic for a seed.
    """
    rng = np.random.default_rng(seed)
    N, K, U = int(n_items), int(n_clusters), int(n_users)
    item_cluster = rng.permutation(np.arange(N) % K).astype(np.int32)
    members = [np.flatnonzero(item_cluster == c) for c in range(K)]
    pop = rng.gamma(0.7, 1.0, size=N) + 1e-9
    home = rng.integers(0, K, size=U)
    drift = (home + rng.integers(1, K, size=U)) % K
    rate = np.where(np.arange(U) % 2 == 0, repeat_rates[1], repeat_rates[0])
    rng.shuffle(rate)
    # session start times per user, then click times
    users, items, times = [], [], []
    per_user_times = []
    for u in range(U):
        t, ts = start_time + rng.uniform(0, time_span * 0.05), []
        n = 0
        while n < clicks_per_user:
            L = int(min(2 + rng.poisson(session_length - 2.0), clicks_per_user - n))
            L = max(L, 1)
            gaps = rng.uniform(20.0, 300.0, size=L)
            gaps[0] = 0.0
            ts.extend((t + np.cumsum(gaps)).tolist())
            t = ts[-1] + session_gap * (1.5 + rng.exponential(time_span / (clicks_per_user / session_length) / session_gap))
            n += L
        per_user_times.append(np.asarray(ts[:clicks_per_user]))
    all_t = np.concatenate(per_user_times)
    cutoff = float(np.quantile(all_t, cutoff_quantile))
    for u in range(U):
        hist: Dict[int, int] = {}
        prev = None
        for t in per_user_times[u].tolist():
            r_u = 0.0 if (repeat_from_cutoff and t < cutoff) else rate[u]
            if hist and rng.random() < r_u:
                keys = np.fromiter(hist.keys(), np.int64)
                cnt = np.fromiter(hist.values(), np.float64)
                i = int(rng.choice(keys, p=cnt / cnt.sum()))
            else:
                c = home[u]
                if t >= cutoff and rng.random() < drift_share:
                    c = drift[u]
                m = members[c]
                p = pop[m].copy()
                if prev is not None and item_cluster[prev] == c:
                    near = np.abs(m - prev) <= 3 * K      # a successor neighbourhood
                    p[near] *= 4.0
                i = int(rng.choice(m, p=p / p.sum()))
            hist[i] = hist.get(i, 0) + 1
            prev = i
            users.append(u)
            items.append(i)
            times.append(t)
    inter = Interactions.from_arrays(users, items, times, item_ids=np.arange(N) + id_offset,
                                     user_ids=np.arange(U) + id_offset, session_gap=session_gap)
    return inter, ShopperTruth(item_cluster, home, drift, rate, cutoff)


@dataclass
class StyleTruth:
    """The planted structure of :func:`make_styles`."""

    item_category: np.ndarray    #: (N,) category of each item
    item_style: np.ndarray       #: (N,) style of each item
    style_before: np.ndarray     #: (U,) each user's style before the cutoff
    style_after: np.ndarray      #: (U,) each user's style after the cutoff
    cutoff: float


def make_styles(n_users: int = 200, n_categories: int = 8, n_styles: int = 4,
                items_per_cell: int = 6, *, clicks_per_user: int = 120,
                session_length: float = 5.0, p_style: float = 0.85, p_stay: float = 0.5,
                p_repeat: float = 0.15, drift_share: float = 0.5, cutoff_quantile: float = 0.7,
                time_span: float = 60 * 86_400.0, session_gap: float = DEFAULT_SESSION_GAP,
                start_time: float = 1_600_000_000.0, id_offset: int = 1000,
                seed: int = 0) -> Tuple[Interactions, StyleTruth]:
    """A log whose personal signal is a *taste* that no session reveals at
    once and no global model can know (the right personal answer is known):

    - items are (category, style) cells of ``items_per_cell`` items;
    - a session wanders over categories (stays with ``p_stay``, else a new
      random category) -- the same for everyone;
    - every user has a style: each click is in her style with ``p_style``,
      else in a random one -- a user-level preference that holds across
      categories and sessions;
    - **drift**: at the cutoff (the ``cutoff_quantile`` of click times) a
      ``drift_share`` of the users switch to another style for good;
    - **repeats**: with ``p_repeat`` a click returns to an item of the
      user's history.

    A personal model can learn the user's (new) style from her own history;
    the global model sees only the session's few clicks.  Returns
    ``(interactions, truth)``; deterministic for a seed.
    """
    rng = np.random.default_rng(seed)
    C, S, m, U = int(n_categories), int(n_styles), int(items_per_cell), int(n_users)
    N = C * S * m
    cell = np.arange(N) // m
    item_category, item_style = (cell // S).astype(np.int32), (cell % S).astype(np.int32)
    pop = rng.gamma(1.0, 1.0, size=N) + 1e-9
    style0 = rng.integers(0, S, size=U)
    switch = rng.random(U) < drift_share
    style1 = np.where(switch, (style0 + rng.integers(1, S, size=U)) % S, style0)
    per_user_times = []
    for u in range(U):
        t, ts = start_time + rng.uniform(0, time_span * 0.05), []
        while len(ts) < clicks_per_user:
            L = max(1, int(min(2 + rng.poisson(session_length - 2.0), clicks_per_user - len(ts))))
            gaps = rng.uniform(20.0, 300.0, size=L)
            gaps[0] = 0.0
            ts.extend((t + np.cumsum(gaps)).tolist())
            t = ts[-1] + session_gap * 1.5 + rng.exponential(
                time_span / (clicks_per_user / session_length))
        per_user_times.append(np.asarray(ts[:clicks_per_user]))
    cutoff = float(np.quantile(np.concatenate(per_user_times), cutoff_quantile))
    users, items, times = [], [], []
    for u in range(U):
        hist: List[int] = []
        cat = -1
        last_t = None
        for t in per_user_times[u].tolist():
            new_session = last_t is None or t - last_t > session_gap
            last_t = t
            if hist and rng.random() < p_repeat:
                i = hist[int(rng.integers(len(hist)))]
            else:
                if new_session or rng.random() >= p_stay:
                    cat = int(rng.integers(C))
                sty = style1[u] if t >= cutoff else style0[u]
                if rng.random() >= p_style:
                    sty = int(rng.integers(S))
                cand = np.flatnonzero((item_category == cat) & (item_style == sty))
                i = int(rng.choice(cand, p=pop[cand] / pop[cand].sum()))
            hist.append(i)
            users.append(u)
            items.append(i)
            times.append(t)
    inter = Interactions.from_arrays(users, items, times, item_ids=np.arange(N) + id_offset,
                                     user_ids=np.arange(U) + id_offset, session_gap=session_gap)
    return inter, StyleTruth(item_category, item_style, style0, style1, cutoff)

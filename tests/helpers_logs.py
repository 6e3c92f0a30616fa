"""Generated logs for the trainer tests (needs the trainer extra). A log whose
explicit sessions overlap in time (two tabs, two devices):
rows come in session order, so a user's times go down and up."""
import numpy as np

from deeprec_edge.trainer.data import Interactions


def overlapping_sessions(n_users: int, n_sessions: int, seed: int = 0) -> Interactions:
    """``n_users`` users with ``n_sessions`` sessions of 5 clicks each, every
    session spread over 40 days starting anywhere in 60, on 15 items."""
    rng = np.random.default_rng(seed)
    users, items, times, sess = [], [], [], []
    for u in range(n_users):
        for j in range(n_sessions):
            t0 = rng.uniform(0, 60) * 86400
            users += [u] * 5
            items += rng.integers(0, 15, 5).tolist()
            times += np.sort(t0 + rng.uniform(0, 40, size=5) * 86400).tolist()
            sess += [u * 10 + j] * 5
    inter = Interactions.from_arrays(users, items, np.array(times) + 1.6e9, sessions=sess,
                                     session_gap=None)
    assert np.any((np.diff(inter.times) < 0) & (np.diff(inter.users) == 0))
    return inter

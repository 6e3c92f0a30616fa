"""Cloud-side trainer of deeprec-edge (installed as ``deeprec_edge.trainer``).

Needs the extra: ``pip install "deeprec-edge[trainer]"`` (pandas, scipy,
tqdm).  Importing this package is cheap; the submodules load on first use:

- :mod:`.data` -- readers (generic CSV, MovieLens, YOOCHOOSE, session-rec
  TSV, Diginetica, OTTO, Tianchi, UCI Online Retail, Tmall IJCAI-15), the
  :class:`Interactions` container,
  support filtering, sessions by time gap, time splits;
- :mod:`.candidates` -- item-item CF, embedding neighbours, per-user
  candidate sets (npz / CSV) and candidate-set recall;
- :mod:`.metrics` -- ranks with both tie conventions, Recall/MRR/NDCG/MAP@k,
  per-user averages with 95% intervals;
- :mod:`.synthetic` -- generated logs with a known oracle for tests.

The names listed in ``__all__`` are re-exported lazily, e.g.
``from deeprec_edge.trainer import Interactions, read_movielens``.
"""
from __future__ import annotations

import importlib
from typing import Any, Dict, List

_LAZY: Dict[str, str] = {
    # data
    "Interactions": "data",
    "DataFormatError": "data",
    "TimeSplit": "data",
    "read_interactions": "data",
    "read_csv": "data",
    "read_movielens": "data",
    "read_yoochoose_clicks": "data",
    "read_session_tsv": "data",
    "read_diginetica": "data",
    "read_otto": "data",
    "read_tianchi": "data",
    "read_online_retail": "data",
    "read_tmall": "data",
    "sessionize": "data",
    "remove_consecutive_repeats": "data",
    "filter_support": "data",
    "filter_sessions": "data",
    "time_cutoff": "data",
    "split_by_time": "data",
    "remap_items": "data",
    "session_split_convention": "data",
    # candidates
    "ItemNeighbors": "candidates",
    "CandidateSets": "candidates",
    "item_item_cf": "candidates",
    "embedding_neighbors": "candidates",
    "user_candidates": "candidates",
    "load_candidates_npz": "candidates",
    "candidate_recall": "candidates",
    # metrics
    "ranks_from_scores": "metrics",
    "summarize": "metrics",
    "RankAccumulator": "metrics",
    # synthetic
    "make_synthetic": "synthetic",
    "SyntheticOracle": "synthetic",
}

_EXTRA_HINT = ('the trainer needs its extra dependencies: pip install "deeprec-edge[trainer]" '
               "(pandas, scipy, tqdm)")

__all__: List[str] = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        mod = importlib.import_module(f"{__name__}.{module}")
    except ModuleNotFoundError as exc:
        if exc.name in ("pandas", "scipy", "tqdm"):
            raise ImportError(f"{_EXTRA_HINT}; missing {exc.name!r}") from exc
        raise
    value = getattr(mod, name)
    globals()[name] = value
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_LAZY))

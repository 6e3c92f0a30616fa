"""What the real-data scripts of bench/ share: ``deeprec-train evaluate``'s
own reading, split and cloud models, so that a script's numbers are those of
an ``evaluate`` run with the same log and flags.  Needs the trainer extra."""
from __future__ import annotations

import os
import sys
from typing import Dict, Optional, Tuple

GRU_CLOUD = ("global", "centralized")


def log_missing(path: str) -> bool:
    """True (and a note on stderr) when ``path`` is absent: the shared
    datasets are not beside the repository, and the script skips."""
    if os.path.exists(path):
        return False
    print(f"skipped: {path} not found (the shared datasets are not beside the repository)",
          file=sys.stderr)
    return True


def evaluate_split(log: str, fmt: str, validation: bool):
    """``evaluate LOG --format FMT [--validation]``'s parsed arguments,
    settings and protocol split: ``(args, DeepRecSettings, ProtocolSplit)``."""
    import deeprec_edge.trainer.evaluate as EV
    from deeprec_edge.trainer.cli import _read, build_parser

    ea = build_parser().parse_args(["evaluate", log, "--format", fmt, "-q"])
    st = EV.DeepRecSettings(validation=validation)
    return ea, st, EV.split_protocol(_read(ea, ea.log), st)


def cloud_models(ea, sp, models_dir: Optional[str] = None, tag: str = "") -> Dict[str, object]:
    """The global and centralized models with ``evaluate``'s fit defaults.
    ``models_dir``: keep them there as ``{name}{tag}.npz`` and reuse them when
    they are of the same catalogue (the same log and split)."""
    import deeprec_edge.trainer.evaluate as EV
    from deeprec_edge.model import load_model, save_model
    from deeprec_edge.trainer.cli import _fit_config

    paths: Dict[str, str] = {}
    if models_dir:
        paths = {m: os.path.join(models_dir, f"{m}{tag}.npz") for m in GRU_CLOUD}
        if all(os.path.exists(p) for p in paths.values()):
            models = {m: load_model(p) for m, p in paths.items()}
            if [str(x) for x in models["global"].item_ids] != [str(x) for x in sp.catalogue]:
                raise SystemExit(f"{models_dir}: the saved models are of another log or split; "
                                 "remove them or name another folder")
            return models
    models, _, _ = EV.fit_models(sp, GRU_CLOUD, _fit_config(ea, "user"), log=lambda s: None,
                                 progress=False)
    if paths:
        os.makedirs(models_dir, exist_ok=True)
        for m, p in paths.items():
            save_model(models[m], p)
    return models


def add_log_arguments(ap, chosen: str) -> None:
    """The arguments every script here takes: the log, ``--format``,
    ``--validation`` (where ``chosen`` is chosen), ``--models``, ``--json``."""
    ap.add_argument("log", help="a user-level click log (as for deeprec-train evaluate)")
    ap.add_argument("--format", default="auto", help="log format (deeprec-train's --format)")
    ap.add_argument("--validation", action="store_true",
                    help=f"remove the test part first (choose {chosen} here)")
    ap.add_argument("--models", metavar="DIR",
                    help="keep (and reuse) the fitted global and centralized models here")
    ap.add_argument("--json", help="also write the numbers here")


def prepare(a) -> Optional[Tuple[object, object, Dict[str, object], object]]:
    """For parsed :func:`add_log_arguments`: ``evaluate``'s settings, split,
    cloud models and candidate sets, or None (noted on stderr) when the log
    is absent."""
    if log_missing(a.log):
        return None
    import deeprec_edge.trainer.evaluate as EV

    ea, st, sp = evaluate_split(a.log, a.format, a.validation)
    models = cloud_models(ea, sp, a.models, "_validation" if a.validation else "_test")
    return st, sp, models, EV.build_candidates(sp, models["global"], st)

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


def split_and_models(log: str, fmt: str, validation: bool,
                     models_dir: Optional[str] = None) -> Tuple[object, object, Dict[str, object]]:
    """:func:`evaluate_split` then :func:`cloud_models`: ``(settings, split, models)``."""
    ea, st, sp = evaluate_split(log, fmt, validation)
    tag = "_validation" if validation else "_test"
    return st, sp, cloud_models(ea, sp, models_dir, tag)

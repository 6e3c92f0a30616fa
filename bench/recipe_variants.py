"""Personal models under other fine-tuning settings, the cloud's models fixed.

``deeprec-train evaluate --ft-...`` refits the global and centralized models
for every setting tried; this script fits them once (``evaluate``'s own
reader, split, fit defaults and candidates) and fine-tunes every device again
for each value of one recipe field.  It prints per-user mean Recall@20 /
MRR@20 of each variant and its paired difference (95% normal interval over
users) to the global model, to the centralized model and to the model file's
own recipe.  Choose settings on a ``--validation`` run (the test part
removed), never on the test part.

    python bench/recipe_variants.py LOG [--format online-retail] [--validation]
        --vary max_events=100,500,2000 [--models DIR] [--json out.json]

``--vary FIELD=V1,V2,...`` takes a :class:`FinetuneSettings` field:
``max_events``, ``l2``, ``holdout`` or ``parts`` (``offset+bias+repeat``).
``--breakdown`` adds ``evaluate``'s breakdown by kind of test event (returns
vs items new to the user; targets whose rate rose between the cutoffs vs the
rest).  ``--models DIR`` keeps the fitted global and centralized models there and
reuses them on the next run with the same log and split.  Needs the trainer
extra; Online Retail: about 20 minutes for the models, 2 minutes per value
on a 2-core machine.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys

import numpy as np

FIELDS = {"max_events": int, "l2": float, "holdout": float,
          "parts": lambda s: tuple(p for p in s.split("+") if p)}


def _vary(text: str):
    field, _, values = text.partition("=")
    if field not in FIELDS or not values:
        raise argparse.ArgumentTypeError(
            f"--vary takes FIELD=V1,V2 with FIELD one of {sorted(FIELDS)}, got {text!r}")
    try:
        return field, [FIELDS[field](v) for v in values.split(",")]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--vary {text!r}: {e}") from None


def _paired(a: dict, b: dict):
    """Mean and 95% normal half-width of a - b over the users both have."""
    from deeprec_edge.trainer.metrics import mean_ci

    mean, lo, hi = mean_ci([a[u] - b[u] for u in sorted(set(a) & set(b))], method="normal")
    return mean, (hi - lo) / 2


def main(argv=None) -> int:
    from _protocol import GRU_CLOUD, add_log_arguments, prepare  # bench/, beside this script

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_log_arguments(ap, "settings")
    ap.add_argument("--vary", type=_vary, required=True, metavar="FIELD=V1,V2",
                    help=f"one fine-tuning field and its values; FIELD in {sorted(FIELDS)}")
    ap.add_argument("--breakdown", action="store_true",
                    help="also by kind of test event (evaluate's breakdown: returns vs items "
                         "new to the user, rising vs not)")
    a = ap.parse_args(argv)
    ready = prepare(a)
    if ready is None:
        return 0
    st, sp, models, cands = ready           # evaluate's own reading, split, fit, candidates
    import deeprec_edge.trainer.evaluate as EV
    from deeprec_edge.trainer.metrics import metric_values, per_user_mean

    quiet = lambda s: None  # noqa: E731
    tag = "validation" if a.validation else "test"
    field, values = a.vary
    st_score = copy.copy(st)
    st_score.methods, st_score.ks = ("global", "centralized", "personal"), (20,)

    def per_user(sc, m):
        acc = sc.acc[m]["full"]
        out = {}
        for metric in ("recall", "mrr"):
            u, mean = per_user_mean(metric_values(acc.optimistic, metric, 20), acc.users)
            out[f"{metric}@20"] = dict(zip(u.tolist(), mean.tolist()))
        return out

    print(f"{a.log}: {len(sp.users)} users ({tag} split); model recipe: "
          f"{models['global'].recipe.label()}")
    rows = []
    ref = None
    for v in [None] + values:
        st_v = copy.copy(st)
        st_v.finetune = EV.FinetuneSettings(**({field: v} if v is not None else {}))
        personal, _ = EV.finetune_users(sp, models["global"], st_v, cands, log=quiet,
                                        progress=False)
        sc = EV.score_users(sp, models, personal, st_score, cands, progress=False)
        vals = {m: per_user(sc, m) for m in st_score.methods}
        if ref is None:
            ref = vals
        row = {"variant": "model's recipe" if v is None else f"{field}={v}"}
        for k in ("recall@20", "mrr@20"):
            p = vals["personal"][k]
            row[k] = float(np.mean(list(p.values())))
            for other, src in (("global", vals["global"]), ("centralized", vals["centralized"]),
                               ("recipe", ref["personal"])):
                row[f"{k} - {other}"] = _paired(p, src[k])
        if a.breakdown:
            row["breakdown"] = EV.event_breakdown(sc, st_score.methods, "normal", 0)
        rows.append(row)
        g, c = (float(np.mean(list(vals[m]["recall@20"].values()))) for m in GRU_CLOUD)
        print(f"{row['variant']:>24}: personal R@20 {row['recall@20']:.4f} MRR@20 "
              f"{row['mrr@20']:.4f} | - global R {row['recall@20 - global'][0]:+.4f} "
              f"±{row['recall@20 - global'][1]:.4f} | - centralized R "
              f"{row['recall@20 - centralized'][0]:+.4f} ({row['recall@20'] / c - 1:+.1%}) | "
              f"- recipe R {row['recall@20 - recipe'][0]:+.4f} "
              f"±{row['recall@20 - recipe'][1]:.4f} MRR {row['mrr@20 - recipe'][0]:+.4f} "
              f"±{row['mrr@20 - recipe'][1]:.4f}  (global R {g:.4f}, centralized R {c:.4f})",
              flush=True)
        for kind, rec in row.get("breakdown", {}).items():
            if not rec["events"]:
                continue
            pg, pc = (rec.get(f"personal-{b}", {}).get("recall@20", {}) for b in GRU_CLOUD)
            print(f"{'':>26}{kind} ({rec['share']:.0%} of events): personal R@20 "
                  f"{rec['methods']['personal']['recall@20']['mean']:.4f}, - global "
                  f"{pg.get('mean', float('nan')):+.4f} [{pg.get('ci_low', float('nan')):+.4f}, "
                  f"{pg.get('ci_high', float('nan')):+.4f}], - centralized "
                  f"{pc.get('mean', float('nan')):+.4f}", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"log": a.log, "validation": a.validation, "users": len(sp.users),
                       "recipe": models["global"].recipe.to_dict(), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

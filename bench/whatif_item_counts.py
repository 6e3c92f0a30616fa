"""What if the cloud received anonymous per-item click counts from the devices?

The DeepRec protocol (``deeprec-train evaluate``) lets no click after the
first cutoff reach the cloud; the centralized model sees every user's clicks
up to the test part. On a log whose popularity moves between the cutoffs
(Online Retail's pre-Christmas weeks) that is where personal models fall
behind the centralized one. This script measures how much of that gap one
aggregate closes: the number of clicks on each item between the cutoffs,
summed over all devices -- no user ids, no sequences, no times.

The global model's output biases are shifted by ``beta * log(rate between /
rate before)`` (add-one smoothed rates; a logit adjustment for a change of
the item prior), then every device fine-tunes from that model exactly as in
``deeprec-train evaluate`` (same reader, split, fit settings, candidates and
recipe). Prints per-user mean Recall@20 / MRR@20 of global, centralized and
personal for each ``--betas`` value (0 = the evaluate run itself). Choose beta
on a ``--validation`` run (the test part removed), then read the test run.

    python bench/whatif_item_counts.py LOG [--format online-retail] [--validation]
        [--betas 0 0.5 1] [--json out.json]

Not a product feature: shipping it would mean devices reporting what they
clicked, which the privacy design does not allow today. The script exists so
that decision can be taken with numbers. Needs the trainer extra; about
10 minutes per beta on Online Retail on a 2-core machine.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("log", help="a user-level click log (as for deeprec-train evaluate)")
    ap.add_argument("--format", default="auto", help="log format (deeprec-train's --format)")
    ap.add_argument("--validation", action="store_true",
                    help="remove the test part first (choose beta here)")
    ap.add_argument("--betas", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    ap.add_argument("--json", help="also write the numbers here")
    a = ap.parse_args(argv)
    from _protocol import log_missing, split_and_models
    if log_missing(a.log):
        return 0
    import deeprec_edge.trainer.evaluate as EV
    from deeprec_edge.model import model_from_params, params_of

    # evaluate's own reading, split and fit defaults
    st, sp, models = split_and_models(a.log, a.format, a.validation)
    quiet = lambda s: None  # noqa: E731
    cands = EV.build_candidates(sp, models["global"], st)
    g, N = models["global"], len(sp.catalogue)
    before = sp.train.item_support().astype(np.float64)
    between = sp.central.subset(sp.central.times >= sp.cutoff).item_support().astype(np.float64)
    shift = (np.log((between + 1) / (between.sum() + N))
             - np.log((before + 1) / (before.sum() + N)))
    st_score = copy.copy(st)
    st_score.methods, st_score.ks = ("global", "centralized", "personal"), (20,)
    rows = {}
    print(f"{a.log}: {len(sp.users)} users, {int(between.sum()):,} clicks between the cutoffs"
          f"{' (validation split)' if a.validation else ''}")
    print("| beta | global R@20 | centralized R@20 | personal R@20 | global MRR@20 | "
          "centralized MRR@20 | personal MRR@20 |\n|---|---|---|---|---|---|---|")
    for beta in a.betas:
        p = copy.deepcopy(params_of(g))
        p.b_out = (p.b_out + beta * shift).astype(np.float32)
        g2 = model_from_params(p, g.item_ids, g.popularity, config=dict(g.config),
                               repeat=g.repeat, recipe=g.recipe)
        personal, _ = EV.finetune_users(sp, g2, st, cands, log=quiet, progress=False)
        sc = EV.score_users(sp, {"global": g2, "centralized": models["centralized"]}, personal,
                            st_score, cands, progress=False)
        row = {}
        for m in st_score.methods:
            s = sc.acc[m]["full"].summary(ks=(20,), ci="normal", seed=0)["optimistic"]
            row[m] = {k: s[k]["mean"] for k in ("recall@20", "mrr@20")}
        rows[str(beta)] = row
        print(f"| {beta:g} | " + " | ".join(f"{row[m][k]:.4f}" for k in ("recall@20", "mrr@20")
                                            for m in st_score.methods) + " |", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"log": a.log, "validation": a.validation, "users": len(sp.users),
                       "between_clicks": int(between.sum()), "results": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

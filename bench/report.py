"""Turn deeprec-edge benchmark results into the "ours vs peers" ratio table.

Used two ways:

- by ``bench/conftest.py`` at the end of a pytest-benchmark run (the table
  printed in the terminal summary, and written with ``--bench-table PATH``);
- on its own, over a saved run::

      pytest bench --benchmark-only --benchmark-json=out.json
      python bench/report.py out.json            # print the table
      python bench/report.py out.json -o table.md

Input: pytest-benchmark records (``--benchmark-json``'s ``"benchmarks"``
list, or ``Metadata.as_dict()``), each with ``extra_info`` set by
``test_bench_kernels.py``:

    case      the row the record belongs to ("gru fwd I=64 H=100 B=32 T=20")
    impl      "ours", "torch", "onnxruntime" or "numpy"
    variant   how it was called ("GruStepper.step", "io_binding", ...)
    flops     floating-point operations of one call (the convention is in
              bench/README.md)
    primary   (ours only) the variant the peers are compared with; another
              ours variant gets its own row "case [variant]"
    own_target (another ours variant) also show the target on its own row
    target    (primary ours, or own_target) {"peer": ..., "ratio": ...}: the issue's
              goal "peer median / ours median >= ratio", reported, never
              asserted
    kernel_path (ours only) the C kernel path that ran

Nothing here imports numpy or the package: it is plain Python.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict, Iterable, List, Mapping, Optional

#: Peer columns, in this order (only those present in the results are shown).
PEERS = ("torch", "onnxruntime", "numpy")
#: Short names in headers.
PEER_SHORT = {"torch": "torch", "onnxruntime": "ort", "numpy": "numpy"}


def _median(rec: Mapping[str, Any]) -> Optional[float]:
    """Median seconds per call of one record (nested or flat stats)."""
    stats = rec.get("stats", rec)
    if not isinstance(stats, Mapping):
        stats = getattr(stats, "__dict__", {})
    med = stats.get("median")
    return None if med is None else float(med)


def _fmt_us(seconds: float) -> str:
    us = seconds * 1e6
    if us >= 1000:
        return f"{us:,.0f}"
    if us >= 100:
        return f"{us:.0f}"
    if us >= 10:
        return f"{us:.1f}"
    return f"{us:.2f}"


def build_rows(records: Iterable[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """Group records by case: one row per ours variant, the best variant of
    each peer.  Records without ``extra_info["case"]`` are ignored."""
    cases: Dict[str, Dict[str, List[Dict[str, Any]]]] = {}
    order: List[str] = []
    for rec in records:
        info = rec.get("extra_info") or {}
        case, impl = info.get("case"), info.get("impl")
        med = _median(rec)
        if not case or not impl or med is None:
            continue
        if case not in cases:
            cases[case] = {}
            order.append(case)
        cases[case].setdefault(impl, []).append(
            {"median": med, "variant": info.get("variant", ""), "info": info})

    rows = []
    for case in order:
        impls = cases[case]
        peers = {}
        for peer in PEERS:
            entries = impls.get(peer)
            if entries:
                best = min(entries, key=lambda e: e["median"])
                peers[peer] = {"median": best["median"], "variant": best["variant"],
                               "n_variants": len({e["variant"] for e in entries})}
        ours = sorted(impls.get("ours", []), key=lambda e: not e["info"].get("primary", False))
        if not ours:
            rows.append({"case": case, "ours": None, "peers": peers, "target": None})
            continue
        for j, e in enumerate(ours):
            primary = j == 0
            flops = e["info"].get("flops")
            rows.append({
                "case": case if primary else f"{case} [{e['variant']}]",
                "ours": e["median"],
                "ours_variant": e["variant"],
                "gflops": (flops / e["median"] / 1e9) if flops else None,
                "kernel_path": e["info"].get("kernel_path"),
                "peers": peers,
                "target": e["info"].get("target") if (primary or e["info"].get("own_target"))
                else None,
            })
    return rows


def _target_cell(row: Mapping[str, Any]) -> str:
    target = row.get("target")
    if not target:
        return ""
    peer, want = target["peer"], float(target["ratio"])
    goal = f"{PEER_SHORT.get(peer, peer)}/ours >= {want:g}"
    p = row["peers"].get(peer)
    if p is None or row["ours"] is None:
        return f"{goal}: n/a ({peer} not run)"
    got = p["median"] / row["ours"]
    return f"{goal}: {'met' if got >= want else 'NOT met'} ({got:.2f}x)"


def format_table(rows: List[Mapping[str, Any]], header: Iterable[str] = ()) -> str:
    """A markdown table (readable as plain text too), preceded by `header`
    lines (machine, paths, threads) as a bullet list."""
    peers = [p for p in PEERS if any(p in r["peers"] for r in rows)]
    cols = ["case", "ours µs", "ours GFLOP/s"]
    for p in peers:
        cols += [f"{PEER_SHORT[p]} µs", f"{PEER_SHORT[p]}/ours"]
    cols.append("target (issue)")
    body = []
    for r in rows:
        ours = r["ours"]
        cells = [r["case"],
                 "—" if ours is None else _fmt_us(ours),
                 "" if r.get("gflops") is None else f"{r['gflops']:.2f}"]
        for p in peers:
            e = r["peers"].get(p)
            if e is None:
                cells += ["—", "—"]
                continue
            cell = _fmt_us(e["median"])
            if e["n_variants"] > 1:
                cell += f" ({e['variant']})"
            cells.append(cell)
            cells.append("—" if ours is None else f"{e['median'] / ours:.2f}x")
        cells.append(_target_cell(r))
        body.append(cells)
    widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c)
              for i, c in enumerate(cols)]

    def line(cells):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    out = [f"- {h}" for h in header]
    if out:
        out.append("")
    out.append(line(cols))
    out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    out += [line(b) for b in body]
    out.append("")
    out.append("Medians per call; ratio = peer median / ours median (> 1: ours is faster). "
               "A peer with several variants shows its fastest, named in brackets.")
    return "\n".join(out) + "\n"


def header_from_json(doc: Mapping[str, Any]) -> List[str]:
    """Header lines from a pytest-benchmark JSON document."""
    lines = []
    mi = doc.get("machine_info") or {}
    cpu = mi.get("cpu") or {}
    brand = cpu.get("brand_raw") or cpu.get("brand")
    if brand or mi.get("machine"):
        lines.append(f"machine: {brand or '?'} ({mi.get('machine', '?')}), "
                     f"Python {mi.get('python_version', '?')}")
    if doc.get("datetime"):
        lines.append(f"run: {doc['datetime']}")
    paths = sorted({b.get("extra_info", {}).get("kernel_path")
                    for b in doc.get("benchmarks", [])} - {None})
    if paths:
        lines.append(f"deeprec-edge kernel path: {', '.join(paths)}")
    return lines


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("json", help="a file written by pytest --benchmark-json")
    ap.add_argument("-o", "--output", help="also write the markdown table here")
    args = ap.parse_args(argv)
    with open(args.json, encoding="utf-8") as f:
        doc = json.load(f)
    text = format_table(build_rows(doc.get("benchmarks", [])), header_from_json(doc))
    sys.stdout.write(text)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Fidelity of discovered circuits on a fixed fact set nobody tuned on.

For each configuration (method x ablation) and each fact of ``bench/data/fidelity_facts.json``
(split ``bench``: LRE facts chosen by the generator's fixed rule, plus free-form prompts), it runs
the public engine (:func:`kcircuits.circuits.discover.compute_circuit`) with its defaults and reads
the circuit's faithfulness curve at 0.1, 0.2, 0.5, 1, 2, 5 and 10% of the edges. It prints, per
configuration and size:

- faithfulness F over the facts where F is defined: median, quartiles, share >= 0.8, and how
  many facts had F undefined (|m(full) - m(empty)| below the metric's floor);
- circuit Hit@10 (target in the circuit's top 10) and the full model's Hit@10;
- one random circuit of the same size per fact: its median F and its Hit@10;
- MIB's CPR (area under F) and CMD (area under |1 - F|) over log edge count, normalised by the
  log range: median over the facts.

It writes everything, per fact too, as JSON (``--json``). The default configuration is sized to
run in under 10 minutes on 2 CPU cores (one fact per relation, the free-form prompts, two worker
processes); ``--per-relation 3`` runs the whole split.

Usage: python bench/fidelity.py [--configs eap-ig-refine:patch,eap-ig:patch,eap-ig-refine:zero]
       [--split bench] [--per-relation 1] [--workers 2] [--json bench/results/fidelity.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
FACTS = HERE / "data" / "fidelity_facts.json"
FRACTIONS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1)
DEFAULT_CONFIGS = "eap-ig-refine:patch,eap-ig:patch,eap:patch,eap-ig-refine:zero"


def select_facts(split: str, per_relation: int) -> list[dict]:
    """The first ``per_relation`` facts of each relation in file order, and every free-form prompt."""
    facts = json.loads(FACTS.read_text())[split]
    seen: dict[str, int] = defaultdict(int)
    chosen = []
    for fact in facts:
        rel = fact.get("relation")
        if rel is None:
            chosen.append(fact)
        elif seen[rel] < per_relation:
            seen[rel] += 1
            chosen.append(fact)
    return chosen


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) == 1:
        return values[0], values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[1], q[2]


def _run_fact(job: tuple[str, str, dict]) -> dict:
    """One (method, ablation, fact): the curve rows of the engine's result."""
    import torch

    from kcircuits.circuits.discover import compute_circuit, curve_sizes
    from kcircuits.circuits.graph import get_graph
    from kcircuits.config import Settings
    from kcircuits.lm.loader import load_model

    torch.set_num_threads(1)
    method, ablation, fact = job
    model = _MODEL.get("m") or _MODEL.setdefault("m", load_model("smollm2-135m", Settings(device="cpu")))
    t0 = time.perf_counter()
    try:
        res = compute_circuit(model, fact["prompt"], fact["target"], method=method, ablation=ablation,
                              subject=fact.get("subject"), curve_fractions=FRACTIONS, random_seeds=1,
                              with_heads=False, max_edges_returned=0)
    except Exception as exc:  # a failed fact is reported, not hidden
        return {"method": method, "ablation": ablation, "fact": fact, "error": f"{type(exc).__name__}: {exc}"}
    by_size = {p["size"]: p for p in res["curve"]["points"]}
    rows = []
    for frac, n in zip(FRACTIONS, curve_sizes(get_graph(model.arch), FRACTIONS), strict=True):
        p = by_size.get(n)
        if p is not None:
            rows.append({"fraction": frac, "size": n, "edges": p["edges"], "faithfulness": p["faithfulness"], "hit_at_10": p["hit_at_10"],
                         "random_faithfulness": p["random"]["faithfulness_mean"],
                         "random_hit_at_10": p["random"]["hit_at_10"]})
    return {"method": method, "ablation": ablation, "fact": fact, "metric": res["metric"],
            "undefined": res["curve"]["faithfulness_undefined"], "rows": rows,
            "cpr": res["curve"]["cpr_normalised"], "cmd": res["curve"]["cmd_normalised"],
            "full_hit_at_10": res["metrics"]["hit_at_10"]["full"], "counterfactual":
            (res["counterfactual"] or {}).get("chosen"), "seconds": time.perf_counter() - t0}


_MODEL: dict = {}


def summarise(results: list[dict]) -> list[dict]:
    """Per configuration and size: the aggregate row (see the module doc)."""
    table = []
    by_config: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in results:
        by_config[(r["method"], r["ablation"])].append(r)
    for (method, ablation), rs in by_config.items():
        ok = [r for r in rs if "error" not in r]
        cprs = [r["cpr"] for r in ok if r["cpr"] is not None]
        cmds = [r["cmd"] for r in ok if r["cmd"] is not None]
        for frac in FRACTIONS:
            points = [next((p for p in r["rows"] if p["fraction"] == frac), None) for r in ok]
            points = [p for p in points if p is not None]
            faith = [p["faithfulness"] for p in points if p["faithfulness"] is not None]
            rand = [p["random_faithfulness"] for p in points if p["random_faithfulness"] is not None]
            rand_hit = [p["random_hit_at_10"] for p in points if p["random_hit_at_10"] is not None]
            q1, med, q3 = _quartiles(faith) if faith else (None, None, None)
            table.append({
                "method": method, "ablation": ablation, "fraction": frac, "facts": len(rs), "errors": len(rs) - len(ok),
                "undefined": len(points) - len(faith), "median": med, "q1": q1, "q3": q3,
                "share_ge_0_8": sum(f >= 0.8 for f in faith) / len(faith) if faith else None,
                "hit_at_10": sum(p["hit_at_10"] for p in points) / len(points) if points else None,
                "full_hit_at_10": sum(r["full_hit_at_10"] for r in ok) / len(ok) if ok else None,
                "random_median": statistics.median(rand) if rand else None,
                "random_hit_at_10": sum(rand_hit) / len(rand_hit) if rand_hit else None,
                "cpr": statistics.median(cprs) if cprs else None, "cmd": statistics.median(cmds) if cmds else None,
                "cpr_cmd_facts": len(cprs),
            })
    return table


def _fmt(x, digits: int = 2) -> str:
    return "undef" if x is None else f"{x:.{digits}f}"


def print_table(table: list[dict]) -> None:
    """The summary as a markdown table on stdout."""
    head = ("| method | ablation | edges | F median | F q1-q3 | F>=0.8 | undef | Hit@10 | full Hit@10 | "
            "random F | random Hit@10 | CPR | CMD |")
    sys.stdout.write(head + "\n")
    sys.stdout.write("|" + "---|" * (head.count("|") - 1) + "\n")
    for row in table:
        sys.stdout.write(
            f"| {row['method']} | {row['ablation']} | {row['fraction'] * 100:g}% | {_fmt(row['median'])} | "
            f"{_fmt(row['q1'])}-{_fmt(row['q3'])} | {_fmt(row['share_ge_0_8'])} | {row['undefined']}/{row['facts']} | "
            f"{_fmt(row['hit_at_10'])} | {_fmt(row['full_hit_at_10'])} | {_fmt(row['random_median'])} | "
            f"{_fmt(row['random_hit_at_10'])} | {_fmt(row['cpr'])} | {_fmt(row['cmd'])} |\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default=DEFAULT_CONFIGS, help="method:ablation, comma separated")
    parser.add_argument("--split", default="bench", choices=["bench", "dev"])
    parser.add_argument("--per-relation", type=int, default=1)
    parser.add_argument("--limit", type=int, default=None, help="first N chosen facts only (smoke runs)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", default=str(HERE / "results" / "fidelity.json"))
    args = parser.parse_args()
    configs = [tuple(c.split(":")) for c in args.configs.split(",")]
    facts = select_facts(args.split, args.per_relation)[:args.limit]
    jobs = [(m, a, f) for m, a in configs for f in facts]
    start = time.perf_counter()
    if args.workers > 1:
        with mp.get_context("spawn").Pool(args.workers) as pool:
            results = pool.map(_run_fact, jobs, chunksize=1)
    else:
        results = [_run_fact(j) for j in jobs]
    wall = time.perf_counter() - start
    table = summarise(results)
    sys.stdout.write(f"SmolLM2-135M, split {args.split}, {len(facts)} facts "
                     f"({sum(f.get('relation') is not None for f in facts)} LRE, "
                     f"{sum(f.get('relation') is None for f in facts)} free-form), {len(configs)} configurations, "
                     f"{args.workers} workers: {wall:.0f} s wall\n\n")
    print_table(table)
    for r in results:
        if "error" in r:
            sys.stdout.write(f"error: {r['method']}:{r['ablation']} {r['fact']['prompt']!r}: {r['error']}\n")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "split": args.split, "facts": len(facts),
                               "wall_s": wall, "fractions": list(FRACTIONS), "table": table, "per_fact": results},
                              indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

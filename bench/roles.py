"""Head roles validated by intervention over the fidelity fact set (``bench/data/fidelity_facts.json``).

For each fact of the split (default ``bench``): the circuit by
:func:`kcircuits.circuits.discover.compute_circuit` (default method and size: 1% of the edges), its head
roles by :func:`kcircuits.circuits.heads.annotate_circuit_roles`, then zero ablation of head outputs
(``hook_z`` of the heads set to 0 at every position, one forward) and the drop of the target's logit at the
last position, clean minus ablated:

- movers: the fact's mover-labelled heads vs ``--random`` sets of as many of the circuit's other heads
  (same circuit, not mover-labelled), on the fact itself;
- relation heads: the fact's relation-labelled heads, ablated on the relation's *other* facts, vs as many
  random other heads of the fact's circuit on those facts (they should matter for the relation, not the
  subject).

Reported: per fact the role counts and drops; the share of each role among a circuit's heads (median over
facts); the share of facts with movers where the movers' drop beats the random mean, and the effect sizes
(mean difference, and the difference over the random drops' standard deviation); label stability across one
relation's facts (mean pairwise Jaccard of the labelled head sets, per role).

Usage: python bench/roles.py [--limit N] [--relations a,b] [--method eap-ig] [--random 20] [--out file.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import time
from collections import defaultdict
from itertools import combinations
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
FACTS = HERE / "data" / "fidelity_facts.json"
ROLES = ("mover", "relation", "mixture")
log = logging.getLogger("bench.roles")


def target_logit(model, tokens: torch.Tensor, target_id: int, heads: list[str]) -> float:
    """The target's logit at the last position of ``tokens`` [1, pos] with ``heads`` zero-ablated."""
    from kcircuits.circuits.heads import parse_head_id

    by_layer: dict[int, list[int]] = defaultdict(list)
    for hid in heads:
        layer, h = parse_head_id(hid, model.arch.n_layers, model.arch.n_heads)
        by_layer[layer].append(h)

    def make(hs: list[int]):
        def hook(z, hook):  # [b, pos, H, d_head]
            z = z.clone()
            z[:, :, hs] = 0.0
            return z
        return hook

    hooks = [(f"blocks.{layer}.attn.hook_z", make(hs)) for layer, hs in by_layer.items()]
    with torch.inference_mode():
        logits = model.run_with_hooks(tokens, hooks) if hooks else model.logits(tokens)
    return float(logits[0, -1, target_id])


def drops(model, tokens: torch.Tensor, target_id: int, labelled: list[str], pool: list[str], n_random: int,
          rng: random.Random) -> dict[str, Any] | None:
    """Logit drop for ``labelled`` and for ``n_random`` same-size sets from ``pool``; None when either is empty
    or the pool is too small."""
    if not labelled or len(pool) < len(labelled):
        return None
    clean = target_logit(model, tokens, target_id, [])
    own = clean - target_logit(model, tokens, target_id, labelled)
    rand = [clean - target_logit(model, tokens, target_id, rng.sample(pool, len(labelled))) for _ in range(n_random)]
    return {"drop": own, "random": rand, "random_mean": statistics.fmean(rand),
            "random_sd": statistics.pstdev(rand) if len(rand) > 1 else 0.0}


def jaccard(a: set[str], b: set[str]) -> float | None:
    return len(a & b) / len(a | b) if a | b else None


def load_facts(split: str, relations: list[str] | None, limit: int | None, per_relation: int | None) -> list[dict]:
    facts = json.loads(FACTS.read_text())[split]
    if relations:
        facts = [f for f in facts if f["relation"] in relations]
    if per_relation:
        seen: dict[str, int] = defaultdict(int)
        kept = []
        for f in facts:
            if seen[f["relation"]] < per_relation:
                seen[f["relation"]] += 1
                kept.append(f)
        facts = kept
    return facts[:limit] if limit else facts


def run(model, facts: list[dict], method: str, n_random: int, thresholds, seed: int = 0) -> dict[str, Any]:
    from kcircuits.circuits.discover import compute_circuit
    from kcircuits.circuits.heads import annotate_circuit_roles

    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for i, fact in enumerate(facts):
        t0 = time.perf_counter()
        result = compute_circuit(model, fact["prompt"], fact["target"], method=method, subject=fact["subject"],
                                 random_seeds=0, max_edges_returned=0, curve_fractions=(0.01,))
        annotate_circuit_roles(model, result, thresholds)
        heads = result["heads"]
        labelled = {r: sorted(h for h, info in heads.items() if info["role"] == r) for r in ROLES}
        tokens = model.tokenize(fact["prompt"])
        movers = drops(model, tokens, result["target_id"], labelled["mover"],
                       sorted(set(heads) - set(labelled["mover"])), n_random, rng)
        rows.append({"relation": fact["relation"], "subject": fact["subject"], "prompt": fact["prompt"],
                     "target": fact["target"], "target_id": result["target_id"], "n_heads": len(heads),
                     "edges": result["metrics"]["edges"], "faithfulness": result["metrics"]["faithfulness"],
                     "labelled": labelled, "heads": sorted(heads), "movers": movers,
                     "seconds": time.perf_counter() - t0})
        log.info("fact %d/%d %s (%s): %d heads, %s in %.1f s", i + 1, len(facts), fact["subject"], fact["relation"],
                 len(heads), {r: len(v) for r, v in labelled.items()}, rows[-1]["seconds"])
    # relation heads on the relation's other facts
    for row in rows:
        rel = row["labelled"]["relation"]
        others = [o for o in rows if o["relation"] == row["relation"] and o is not row]
        pool = sorted(set(row["heads"]) - set(rel))
        tests = []
        for other in others:
            d = drops(model, model.tokenize(other["prompt"]), other["target_id"], rel, pool, n_random, rng)
            if d:
                tests.append({"subject": other["subject"], **d})
        row["relation_on_others"] = tests
    return summarise(rows)


def _mean(xs: list[float]) -> float | None:
    return statistics.fmean(xs) if xs else None


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    shares = {r: [len(row["labelled"][r]) / row["n_heads"] for row in rows if row["n_heads"]] for r in ROLES}
    shares["none"] = [1 - sum(len(row["labelled"][r]) for r in ROLES) / row["n_heads"] for row in rows if row["n_heads"]]
    mover_tests = [row["movers"] for row in rows if row["movers"]]
    rel_tests = [t for row in rows for t in row["relation_on_others"]]

    def effect(tests: list[dict]) -> dict[str, Any]:
        diffs = [t["drop"] - t["random_mean"] for t in tests]
        z = [(t["drop"] - t["random_mean"]) / t["random_sd"] for t in tests if t["random_sd"] > 0]
        return {"n": len(tests), "wins": sum(d > 0 for d in diffs),
                "win_share": sum(d > 0 for d in diffs) / len(diffs) if diffs else None,
                "mean_drop": _mean([t["drop"] for t in tests]), "mean_random_drop": _mean([t["random_mean"] for t in tests]),
                "mean_difference": _mean(diffs), "mean_z": _mean(z)}

    stability: dict[str, dict[str, float | None]] = {}
    by_relation: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_relation[row["relation"]].append(row)
    for relation, group in by_relation.items():
        stability[relation] = {}
        for r in ROLES:
            pairs = [jaccard(set(a["labelled"][r]), set(b["labelled"][r])) for a, b in combinations(group, 2)]
            defined = [p for p in pairs if p is not None]
            stability[relation][r] = _mean(defined)
    return {"rows": rows, "role_share_median": {r: statistics.median(v) if v else None for r, v in shares.items()},
            "role_share_max_median": max((statistics.median(shares[r]) for r in ROLES if shares[r]), default=None),
            "movers": effect(mover_tests), "relation_on_others": effect(rel_tests), "stability": stability}


def _f(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def print_report(summary: dict[str, Any], thresholds) -> None:
    print(f"thresholds: {thresholds}")
    print(f"{'relation':<24}{'subject':<22}{'heads':>6}{'mov':>5}{'rel':>5}{'mix':>5}"
          f"{'mover drop':>12}{'random':>9}{'rel drop*':>11}{'random*':>9}")
    for row in summary["rows"]:
        n = {r: len(row["labelled"][r]) for r in ROLES}
        m = row["movers"]
        o = row["relation_on_others"]
        print(f"{row['relation'][:23]:<24}{row['subject'][:21]:<22}{row['n_heads']:>6}{n['mover']:>5}{n['relation']:>5}"
              f"{n['mixture']:>5}{_f(m['drop'] if m else None):>12}{_f(m['random_mean'] if m else None):>9}"
              f"{_f(_mean([t['drop'] for t in o])):>11}{_f(_mean([t['random_mean'] for t in o])):>9}")
    print("* relation heads of the fact ablated on the relation's other facts (mean over them)")
    shares = summary["role_share_median"]
    print("median role share per circuit: " + ", ".join(f"{r} {_f(shares[r])}" for r in (*ROLES, "none")))
    for key, name in (("movers", "movers on their fact"), ("relation_on_others", "relation heads on other facts")):
        e = summary[key]
        win = "n/a" if e["win_share"] is None else f"{e['wins']}/{e['n']} ({100 * e['win_share']:.0f}%)"
        print(f"{name}: beat random same-circuit heads {win}; mean drop {_f(e['mean_drop'])} vs random "
              f"{_f(e['mean_random_drop'])} (difference {_f(e['mean_difference'])}, z {_f(e['mean_z'])})")
    print("label stability (mean pairwise Jaccard across a relation's facts):")
    for relation, st in summary["stability"].items():
        print(f"  {relation:<24}" + "  ".join(f"{r} {_f(st[r])}" for r in ROLES))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--split", default="bench", choices=["bench", "dev"])
    parser.add_argument("--relations", default=None, help="comma-separated relation names")
    parser.add_argument("--limit", type=int, default=None, help="at most this many facts")
    parser.add_argument("--per-relation", type=int, default=None, help="at most this many facts per relation")
    parser.add_argument("--method", default=None, help="discovery method (default: the engine's)")
    parser.add_argument("--random", type=int, default=20, help="random head sets per comparison")
    parser.add_argument("--significance-k", type=float, default=3.0)
    parser.add_argument("--write-top-k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=None, help="write the rows and summary as JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    from kcircuits.circuits.discover import DEFAULT_METHOD
    from kcircuits.circuits.heads import HeadRoleThresholds
    from kcircuits.config import Settings
    from kcircuits.lm.loader import load_model

    thresholds = HeadRoleThresholds(significance_k=args.significance_k, write_top_k=args.write_top_k)
    thresholds.check()
    facts = load_facts(args.split, args.relations.split(",") if args.relations else None, args.limit, args.per_relation)
    model = load_model(args.model, Settings(device=args.device))
    summary = run(model, facts, args.method or DEFAULT_METHOD, args.random, thresholds)
    print_report(summary, thresholds)
    if args.out:
        args.out.write_text(json.dumps({"model": args.model, "method": args.method or DEFAULT_METHOD,
                                        "thresholds": thresholds.__dict__, **summary}, indent=1))


if __name__ == "__main__":
    main()

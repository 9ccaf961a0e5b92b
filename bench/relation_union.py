"""Can one relation circuit be assembled from its facts' own circuits? On SmolLM2, for one LRE relation
and one ablation: each known validation fact's refined circuit (eap-ig-refine on that prompt alone, at
0.1%, 0.2% and 0.5% of the edges) is run on its own fact, then the union of the facts' circuits and the
circuits of the edges most of them share ("votes") are run on every validation and test fact. Then every
candidate the relation's own calibration chooses from (``run_relation``'s eap-ig-refine: the rankings
re-attributed on all validation facts, each circuit size up to 1% x each harmful share) is run on both
splits, to tell a poor choice among the candidates from a candidate set with nothing good in it. Prints
Hit@10 per circuit and writes JSON. It backs the README's note on zero-ablation relation rows.

Usage: python bench/relation_union.py [--relation country_capital_city] [--ablation zero] [--n 10]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FRACTIONS = (0.001, 0.002, 0.005)


def calibration_candidates(model, graph, val_batches, test_batches, ablation: str) -> list[dict]:
    """Hit@10 on both splits of every (ranking, size, harmful share) candidate of the relation's calibration."""
    import torch

    from kcircuits.circuits import relation as rel
    from kcircuits.circuits.attribution import freezes_norms
    from kcircuits.circuits.discover import curve_sizes, default_top_n
    from kcircuits.circuits.evaluate import HIT_K
    from kcircuits.circuits.refine import (
        CALIBRATION_SHARES,
        REFINE_IG_STEPS,
        ZERO_REFINE_IG_STEPS,
        mixed_mask,
        refine_ranking,
    )

    freeze = freezes_norms(ablation)
    prepared = list(rel._prepare(model, graph, val_batches, ablation, "match_nll"))
    runs = [rel.relation_runner(model, graph, prepared),
            rel.relation_runner(model, graph, list(rel._prepare(model, graph, test_batches, ablation, "match_nll")))]
    facts = rel.single_facts(model, graph, prepared, ablation, "match_nll")
    scores = rel.relation_scores(model, graph, facts, "eap-ig-mask" if freeze else "eap-ig", 5, freeze)
    rescore = rel.relation_rescore(model, graph, facts, freeze)
    top_n = default_top_n(graph)
    sizes = [n for n in curve_sizes(graph) if n < top_n] + [top_n]
    out = []
    for steps in (ZERO_REFINE_IG_STEPS if freeze else (REFINE_IG_STEPS,)):
        ranking = refine_ranking(graph, scores, rescore, higher_is_better=prepared[0].metric.higher_is_better,
                                 ig_steps=steps)
        labels = [(n, share) for n in sizes for share in CALIBRATION_SHARES]
        masks = torch.stack([mixed_mask(graph, ranking, n, share) for n, share in labels])
        val_hits, test_hits = ((run(masks)[1] <= HIT_K).float().mean(1).tolist() for run in runs)
        for (n, share), mask, v, t in zip(labels, masks, val_hits, test_hits, strict=True):
            out.append({"ig_steps": steps, "size": n, "harmful_share": share, "edges": int(mask.sum()),
                        "validation_hit_at_10": v, "test_hit_at_10": t})
    return out


def main() -> int:
    import torch

    from kcircuits.circuits import relation as rel
    from kcircuits.circuits.attribution import attribute, freezes_norms
    from kcircuits.circuits.discover import curve_sizes
    from kcircuits.circuits.evaluate import HIT_K, Normaliser, evaluate_masks
    from kcircuits.circuits.graph import get_graph
    from kcircuits.circuits.refine import CALIBRATION_SHARES, batch_rescore, refine_and_calibrate
    from kcircuits.circuits.select import prune_dangling
    from kcircuits.config import Settings
    from kcircuits.lm.loader import load_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--relation", default="country_capital_city")
    parser.add_argument("--ablation", default="zero")
    parser.add_argument("--n", type=int, default=10, help="facts per split")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=str(HERE / "results" / "relation_union.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    model = load_model("smollm2-135m", Settings(device="cpu"))
    relation = rel.load_relation(args.relation)
    graph = get_graph(model.arch, "grouped")
    val_all, test_all = rel.split_facts(rel.relation_facts(model, relation))
    val, test = rel.known_facts(model, relation, HIT_K, facts=val_all)[:args.n], test_all[:args.n]
    index = rel._length_index(model, relation) if args.ablation == "patch" else None
    val_batches, _ = rel._batches(model, relation, val, args.ablation, 8, index)
    test_batches, _ = rel._batches(model, relation, test, args.ablation, 8, index)
    freeze = freezes_norms(args.ablation)
    sizes = curve_sizes(graph, FRACTIONS)
    per_fact: list[dict] = []
    masks_per_size: list[list[torch.Tensor]] = [[] for _ in sizes]
    for batch in val_batches:
        for i, fact in enumerate(batch.facts):
            corrupt = None if batch.corrupt is None else batch.corrupt[i:i + 1]
            one = rel._Batch([fact], batch.tokens[i:i + 1], batch.target_ids[i:i + 1], corrupt)
            ablated, metric = rel._batch_setup(model, graph, one, args.ablation, "match_nll")
            scores = attribute(model, one.tokens, graph, metric, ablated, "eap-ig-mask" if freeze else "eap-ig",
                               ig_steps=5, freeze_norms=freeze)

            def run(masks, one=one, ablated=ablated, metric=metric):
                return evaluate_masks(model, one.tokens, graph, masks, ablated, metric, one.target_ids)

            ref, _ = run(torch.stack([graph.full_mask(model.device), graph.empty_mask(model.device)]))
            norm = Normaliser.of(metric, float(ref[0]), float(ref[1]))
            rescore = batch_rescore(model, one.tokens, graph, metric, ablated, freeze_norms=freeze)
            cal, _, _ = refine_and_calibrate(graph, scores, sizes, run, rescore, norm.m_full, norm.m_empty,
                                             higher_is_better=metric.higher_is_better, freeze_norms=freeze,
                                             faithfulness_of=lambda v, *_, norm=norm: norm(v))
            for k, mask in enumerate(cal.masks):
                masks_per_size[k].append(mask)
            per_fact.append({"subject": fact.subject, "faithfulness": list(cal.faithfulness), "hit": list(cal.hits)})

    def hit_at_10(batches, masks: torch.Tensor) -> list[float]:
        ranks = []
        for batch in batches:
            ablated, metric = rel._batch_setup(model, graph, batch, args.ablation, "match_nll")
            ranks.append(evaluate_masks(model, batch.tokens, graph, masks, ablated, metric, batch.target_ids)[1])
        return (torch.cat(ranks, 1) <= HIT_K).float().mean(1).tolist()

    allowed = graph.allowed(model.device)
    circuits = {}
    for size, masks in zip(sizes, masks_per_size, strict=True):
        stacked = torch.stack(masks)
        circuits[f"union of the facts' {size}-edge circuits"] = prune_dangling(stacked.any(0), graph)
        votes = stacked.float().sum(0).masked_fill(~allowed, -1.0).flatten()
        top = torch.zeros_like(votes, dtype=torch.bool)
        top[torch.topk(votes, size).indices] = True
        circuits[f"{size} most shared edges"] = prune_dangling(top.view(allowed.shape), graph)
    stacked = torch.stack(list(circuits.values()))
    val_hits, test_hits = hit_at_10(val_batches, stacked), hit_at_10(test_batches, stacked)
    candidates = calibration_candidates(model, graph, val_batches, test_batches, args.ablation)
    rows = [{"circuit": name, "edges": int(mask.sum()), "validation_hit_at_10": v, "test_hit_at_10": t}
            for (name, mask), v, t in zip(circuits.items(), val_hits, test_hits, strict=True)]
    own = [sum(f["hit"][k] for f in per_fact) / len(per_fact) for k in range(len(sizes))]
    out = [f"{args.relation}, {args.ablation} ablation, match_nll; {len(per_fact)} validation facts, "
           f"{sum(len(b.facts) for b in test_batches)} test facts",
           "each fact's own circuit, Hit@10 on its own fact: "
           + ", ".join(f"{s} edges {h:.2f}" for s, h in zip(sizes, own, strict=True)),
           f"{'circuit':<44}{'edges':>7}{'val Hit@10':>12}{'test Hit@10':>13}"]
    out += [f"{r['circuit']:<44}{r['edges']:>7}{r['validation_hit_at_10']:>12.2f}{r['test_hit_at_10']:>13.2f}"
            for r in rows]
    out.append(f"the relation calibration's candidates ({len(candidates)}: ranking IG steps x size x harmful share)")
    out.append(f"{'steps':>5}{'edges':>7}  {'val Hit@10 per share':<40}{'test Hit@10 per share':<40}")
    for steps, size in sorted({(c["ig_steps"], c["size"]) for c in candidates}):
        row = [c for c in candidates if c["ig_steps"] == steps and c["size"] == size]
        val_cells = " ".join(f"{c['validation_hit_at_10']:.1f}" for c in row)
        test_cells = " ".join(f"{c['test_hit_at_10']:.1f}" for c in row)
        out.append(f"{steps:>5}{size:>7}  {val_cells:<40}{test_cells:<40}")
    best = max(candidates, key=lambda c: (c["validation_hit_at_10"], c["test_hit_at_10"]))
    out.append(f"best on validation: {best['validation_hit_at_10']:.2f} (its test {best['test_hit_at_10']:.2f}; "
               f"{best['ig_steps']} steps, {best['size']} edges, share {best['harmful_share']:.2f}); shares "
               + " ".join(f"{x:.2f}" for x in CALIBRATION_SHARES))
    out.append(f"{time.perf_counter() - start:.0f} s")
    sys.stdout.write("\n".join(out) + "\n")
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "relation": args.relation,
                                "ablation": args.ablation, "sizes": sizes, "per_fact": per_fact,
                                "own_fact_hit_at_10": own, "rows": rows,
                                "calibration_candidates": candidates}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

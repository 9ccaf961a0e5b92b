"""The paper's edit findings on LRE edits, ROME against FT-M (METHODS section 6).

Fixed rule for the edits: facts of the bench split (bench/data/fidelity_facts.json) taken round-robin
over its relations in file order (each relation's first fact, then each one's second, ...), using only
relations of the split with at least two different answers (free-form prompts, which name no subject, are
skipped); the new target is the answer of the next
fact of the same relation (cyclically) whose first token differs. Per edit (the
product's comparison, :class:`kcircuits.services.edit_comparison.EditComparison`, run inline): the first block after which the new target's
logit-lens rank at the last token is <= 10, relative to the edited layer; whether a mover head (reads
the subject, gains the new target in any spelling) appears; for other subjects of the relation and
other facts about the subject, whether the answer changes and whether a mover carries the new
target. On the first ``--circuits`` ROME edits, the fair pre/post circuits (default method and size,
one counterfactual) and their diff. One process, one thread:

    python bench/edit_analysis.py --n 20 --circuits 10 --out bench/results/edit_analysis.json
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path

import torch

FACTS = Path(__file__).resolve().parent / "data" / "fidelity_facts.json"


def choose_edits(model, facts: list[dict], n: int) -> list[dict]:
    """The first ``n`` edits by the module's rule: {"prompt", "subject", "old", "new", "relation"}."""
    by_rel: dict[str, list[dict]] = {}
    for fact in facts:
        if not fact.get("subject") or not fact.get("relation"):
            continue  # free-form prompts have no subject span to edit
        by_rel.setdefault(fact["relation"], []).append(fact)
    by_rel = {r: fs for r, fs in by_rel.items() if len({model.first_token_id(f["target"]) for f in fs}) > 1}
    edits, depth = [], 0
    while len(edits) < n and any(depth < len(fs) for fs in by_rel.values()):
        for rel, fs in by_rel.items():
            if depth >= len(fs) or len(edits) >= n:
                continue
            fact, first = fs[depth], model.first_token_id(fs[depth]["target"])
            later = fs[depth + 1:] + fs[:depth]
            new = next(f["target"] for f in later if model.first_token_id(f["target"]) != first)
            edits.append({"prompt": fact["prompt"], "subject": fact["subject"], "old": fact["target"],
                          "new": new, "relation": rel})
        depth += 1
    return edits


def _mean(values: list) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.fmean(vals) if vals else None


def _fmt(x, pct: bool = False) -> str:
    if x is None:
        return "undef"
    return f"{100 * x:.0f}%" if pct else f"{x:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--methods", default="rome,ft-m")
    parser.add_argument("--circuits", type=int, default=10, help="ROME edits whose pre/post circuits are computed")
    parser.add_argument("--rome-prefixes", type=int, default=4, help="ROME n_prefixes (10 is the default; 4 for time)")
    parser.add_argument("--out", default="bench/results/edit_analysis.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    from kcircuits.config import get_settings
    from kcircuits.editing.session import EditRequest, edit_and_evaluate
    from kcircuits.lm.loader import load_model
    from kcircuits.services.edit_comparison import EditComparison

    t_start = time.perf_counter()
    settings = get_settings()
    model = load_model(args.model, settings)
    edits = choose_edits(model, json.loads(FACTS.read_text())["bench"], args.n)
    params = {"rome": {"n_prefixes": args.rome_prefixes}}
    report: dict = {"model": args.model, "revision": model.revision, "n_edits": len(edits), "params": params,
                    "methods": {}, "circuits": []}
    for method in args.methods.split(","):
        rows = []
        for i, e in enumerate(edits):
            t0 = time.perf_counter()
            req = EditRequest(model=args.model, method=method, prompt=e["prompt"], subject=e["subject"],
                              target=e["new"], params=params.get(method, {}))
            edited, result = edit_and_evaluate(model, req, settings)
            with_circuits = method == "rome" and i < args.circuits
            comparison = EditComparison(
                request=req, old_target=result["old_target"], layer=result["layer"], settings=settings,
                side_items=result["evaluation"]["locality"]["items"],
                with_circuits=with_circuits).run_inline(model, edited)
            an = comparison["analysis"]
            row = {**e, "efficacy": result["evaluation"]["efficacy"]["success"], "layer": result["layer"],
                   "first_top_block": an["lens"]["first_top_block_post"], "offset": an["lens"]["offset"],
                   "mover_switch": an["mover"]["switched"], "movers": [m["node"] for m in an["mover"]["heads"]],
                   "side": an["side_effects"]["summary"]}
            if with_circuits:
                cmpn = comparison["circuit"]
                row["circuit"] = {"method": comparison["method"], "sides": cmpn["sides"],
                                  "comparable": cmpn["comparable"], "reason": cmpn["reason"],
                                  "same_counterfactual": cmpn["same_counterfactual"],
                                  "n_added": (cmpn["diff"] or {}).get("n_added"),
                                  "n_removed": (cmpn["diff"] or {}).get("n_removed"),
                                  "n_reweighted": (cmpn["diff"] or {}).get("n_reweighted"),
                                  "size_rule": cmpn["size_rule"]}
            row["seconds"] = round(time.perf_counter() - t0, 1)
            rows.append(row)
            del edited
            print(json.dumps({"method": method, **{k: v for k, v in row.items() if k != "side"}}), flush=True)
        report["methods"][method] = rows

    print(f"\nedit analysis, {args.model}, {len(edits)} LRE edits (bench split), "
          f"ROME n_prefixes={args.rome_prefixes}; lens top-10 at the last token; {time.perf_counter() - t_start:.0f} s")
    head = ("method", "efficacy", "offset mean", "offset median", "offset=0", "offset>0", "never top10",
            "mover switch", "nbr changed", "nbr mover new", "subj changed", "subj mover new")
    print(" | ".join(head))
    summary = {}
    for method, rows in report["methods"].items():
        offs = [r["offset"] for r in rows if r["offset"] is not None]
        side = {k: {m: _mean([r["side"][k][m] for r in rows]) for m in ("changed_rate", "mover_carries_new_rate")}
                for k in ("neighbour", "same_subject")}
        s = {"efficacy": _mean([float(r["efficacy"]) for r in rows]),
             "offset_mean": _mean(offs), "offset_median": statistics.median(offs) if offs else None,
             "offset_zero": sum(o == 0 for o in offs) / len(rows), "offset_pos": sum(o > 0 for o in offs) / len(rows),
             "never": sum(r["offset"] is None for r in rows) / len(rows),
             "mover_switch": _mean([float(r["mover_switch"]) for r in rows]), "side": side}
        summary[method] = s
        print(" | ".join([method, _fmt(s["efficacy"], True), _fmt(s["offset_mean"]), _fmt(s["offset_median"]),
                          _fmt(s["offset_zero"], True), _fmt(s["offset_pos"], True), _fmt(s["never"], True),
                          _fmt(s["mover_switch"], True),
                          _fmt(side["neighbour"]["changed_rate"], True), _fmt(side["neighbour"]["mover_carries_new_rate"], True),
                          _fmt(side["same_subject"]["changed_rate"], True),
                          _fmt(side["same_subject"]["mover_carries_new_rate"], True)]))
    circ = [r for r in report["methods"].get("rome", []) if "circuit" in r]
    if circ:
        print(f"\nROME pre/post circuits on the first {len(circ)} edits (default method, one counterfactual; the "
              "product's size rule: 1% of the edges, both sides grown to the first curve size where both hold "
              "when a side is below 0.8): prompt | at 1%: pre edges/faith, post edges/faith | used size | "
              "pre edges/faith | post edges/faith | added | removed | reweighted")

        def faithful(side: dict | None) -> bool:
            return bool(side) and side["edges"] > 0 and side["faithfulness"] is not None and side["faithfulness"] >= 0.8

        ok = ok_default = 0
        for r in circ:
            c = r["circuit"]
            pre, post = c["sides"]["pre"], c["sides"]["post"]
            grown = (c.get("size_rule") or {}).get("grown_from")
            at_default = grown or {"pre": pre, "post": post}
            good = faithful(pre) and faithful(post) and bool(c["n_added"]) and bool(c["n_removed"])
            ok += good
            ok_default += good and grown is None  # a grown pair had an unfaithful side at 1%
            used = (c.get("size_rule") or {}).get("used") or "1%"

            def side_text(side: dict | None) -> str:
                return "none" if side is None else f"{side['edges']}/{_fmt(side['faithfulness'])}"

            print(f"{r['prompt'][:40]!r} | {side_text(at_default['pre'])}, {side_text(at_default['post'])} | {used} | "
                  f"{side_text(pre)} | {side_text(post)} | {c['n_added']} | {c['n_removed']} | {c['n_reweighted']}"
                  f"{'' if c['comparable'] else ' | not diffed: ' + str(c['reason'])}")
        print(f"must-show (both non-empty, faithfulness >= 0.8, added and removed edges): {ok}/{len(circ)} with the "
              f"size rule; {ok_default}/{len(circ)} at 1% of the edges")
        summary["circuits_ok"] = f"{ok}/{len(circ)}"
        summary["circuits_ok_at_default_size"] = f"{ok_default}/{len(circ)}"
    report["summary"] = summary
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

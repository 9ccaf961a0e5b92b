"""Parameter-level mask circuits (Ge, Rudzicz, Zhu; METHODS section 7) on SmolLM2-135M.

Uses the engine (kcircuits.circuits.masks) directly: one hard-concrete mask per (relation, density),
over every parameter but the token embedding / unembedding (tied in SmolLM2; kept outside the mask,
so densities are shares of the gated parameters), warm-started by iterative Taylor pruning (the
engine's default; ``--warm-start none`` for the uniform start), then

- faithfulness of each mask, of its complement and of a random mask of the same density: mean
  KL(full || masked) and top-1 agreement with the full model, on the training prompts and on
  held-out prompts of the same relation;
- circuit-aware editing: fine-tune one fact to a new target inside the mask, its complement, a
  random mask of the same density and the full model (same steps, lr); post-edit NLL of the new
  target (median over the edited facts) and locality (share of held-out prompts of the relation
  whose top-1 is unchanged);
- module composition (share of the embedding / attention / MLP / LayerNorm parameters inside each
  mask), overlap matrices of the relations' masks at each density next to random masks;
- cost: one training step / one forward+backward of the model (gradients to every parameter) on
  the same batches, both measured in this run, the warm start's time, and the wall time of a 5% mask.

Fixed rules:
- relations: the first ``--n-relations`` factual LRE relations in file order (alphabetical) that
  have at least ``--n-train + --n-heldout`` known facts (answer's first token in the model's
  top-10) among their first ``--max-candidates`` samples; the first ``--n-train`` known facts
  (file order) train the mask, the next ``--n-heldout`` are held out.
- edits: the first ``--n-edit`` training facts of each relation; the new target is the object of
  the next known fact of the relation (cyclic) whose first token differs from the fact's answer.
  Locality prompts: the relation's held-out facts.
- random masks: ``random_mask(layout, density, seed=1000 + relation index)``.

Defaults (2026-12-03): 20 training steps at lr 0.1 after the warm start. The warm start's rate and
loss and the lr were tuned on the training prompts of city_in_country only (lr 0.1 and 0.3 gave the
same 5% mask after 24 steps); the held-out prompts were not used to choose anything. Default run
(one thread of a shared 2-core machine; wall time in bench/results/masks.md):

    PYTHONPATH=backend /work/main/.venv/bin/python bench/masks.py --out bench/results/masks.json

Smoke run: ``--steps 2 --n-train 4 --n-heldout 4 --n-edit 1 --edit-steps 1 --n-relations 2``.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path

import torch

from timing import median_time

log = logging.getLogger("bench.masks")

PAPER = {  # Ge, Rudzicz, Zhu (METHODS section 7)
    "edit_nll": {(0.05, "mask"): 9.37, (0.05, "complement"): 0.0098, (0.5, "mask"): 7.78, (0.5, "complement"): 0.0126},
    "overlap": {"random@0.05": 0.05, "circuits@0.5": 0.60},
    "composition@0.05": {"layernorm": 0.37, "attention": "0.04-0.05", "mlp": "0.04-0.05"},
}
KINDS = ("embedding", "attention", "mlp", "layernorm")
CONDITIONS = ("mask", "complement", "random", "full")


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-2 and value != 0 else f"{value:.{digits}f}"
    return str(value)


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


# -- selection --------------------------------------------------------------------------------------
def pick_relations(model, n_relations: int, n_train: int, n_heldout: int, max_candidates: int) -> tuple[list, list]:
    """(chosen [(relation, known facts)], log of every relation looked at) per the docstring's rule."""
    from kcircuits.circuits.relation import known_facts, load_relation, relation_facts, relation_files

    chosen, seen = [], []
    for name in relation_files():
        rel = load_relation(name)
        if rel.category != "factual":
            continue
        facts = relation_facts(model, rel)[:max_candidates]
        known = known_facts(model, rel, facts=facts)
        ok = len(known) >= n_train + n_heldout
        seen.append({"relation": name, "candidates": len(facts), "known": len(known), "chosen": ok})
        log.info("relation %s: %d known of %d candidates%s", name, len(known), len(facts), " (chosen)" if ok else "")
        if ok:
            chosen.append((rel, known))
        if len(chosen) == n_relations:
            break
    return chosen, seen


def new_target(facts: list, i: int) -> str | None:
    """The object of the next fact (cyclic) whose first token differs from fact i's answer."""
    for k in range(1, len(facts)):
        other = facts[(i + k) % len(facts)]
        if other.target_id != facts[i].target_id:
            return other.target
    return None


# -- timing -----------------------------------------------------------------------------------------
def forward_backward(model, task, full: list[torch.Tensor]) -> None:
    """One forward+backward of the unmasked model on the task's batches, gradients to every parameter
    (the reference cost of a training step; the loaded weights are not touched)."""
    from kcircuits.circuits import masks as M

    leaves = {n: p.detach().requires_grad_(True) for n, p in model.bridge.named_parameters()}
    with torch.enable_grad():
        loss = sum(M.faithfulness_loss(M.run_with(model, leaves, ids)[:, -1], lp, "kl") * ids.shape[0]
                   for (ids, _), lp in zip(task.batches, full, strict=True)) / len(task.prompts)
        loss.backward()


def summarise_overlap(ov: dict, circuits: set[str]) -> dict[str, float | None]:
    """Mean off-diagonal overlap between circuits, between random masks, and circuit -> random."""
    names = ov["names"]

    def mean(rows_circuit: bool, cols_circuit: bool) -> float | None:
        vals = [ov["matrix"][i][j] for i, a in enumerate(names) for j, b in enumerate(names)
                if i != j and (a in circuits) == rows_circuit and (b in circuits) == cols_circuit
                and ov["matrix"][i][j] is not None]
        return sum(vals) / len(vals) if vals else None

    return {"circuit_circuit": mean(True, True), "random_random": mean(False, False),
            "circuit_random": mean(True, False)}


# -- tables -----------------------------------------------------------------------------------------
def faithfulness_table(masks: list[dict]) -> str:
    lines = ["| relation | density | split | n | KL warm start | top-1 warm start | KL mask | top-1 mask | "
             "acc mask / full | KL complement | top-1 complement | KL random | top-1 random |", "|---" * 13 + "|"]
    for m in masks:
        for split in ("train", "heldout"):
            f = m["faithfulness"][split]
            lines.append(f"| {m['relation']} | {m['density']:.2f} | {split} | {f['n']} | {_fmt(f['start']['kl'])} | "
                         f"{_fmt(f['start']['top1_agreement'], 2)} | {_fmt(f['mask']['kl'])} | "
                         f"{_fmt(f['mask']['top1_agreement'], 2)} | {_fmt(f['mask']['accuracy'], 2)} / "
                         f"{_fmt(f['mask']['full_accuracy'], 2)} | {_fmt(f['complement']['kl'])} | "
                         f"{_fmt(f['complement']['top1_agreement'], 2)} | {_fmt(f['random']['kl'])} | "
                         f"{_fmt(f['random']['top1_agreement'], 2)} |")
    return "\n".join(lines)


def edit_table(summary: dict, densities: list[float]) -> str:
    lines = ["| density | fine-tuned parameters | n edits | median NLL pre | median post-edit NLL | paper median "
             "post-edit NLL | median locality |", "|---" * 7 + "|"]
    for d in densities:
        for c in CONDITIONS:
            s = summary[f"{d}"][c]
            paper = PAPER["edit_nll"].get((d, c))
            label = "full model" if c == "full" else c
            lines.append(f"| {d:.2f} | {label} | {s['n']} | {_fmt(s['nll_pre'])} | {_fmt(s['nll_post'])} | "
                         f"{_fmt(paper, 4) if paper is not None else '-'} | {_fmt(s['locality'], 2)} |")
    return "\n".join(lines)


def composition_table(masks: list[dict], randoms: dict) -> str:
    lines = ["| mask | density | " + " | ".join(KINDS) + " |", "|---" * (len(KINDS) + 2) + "|"]

    def row(name, d, comp):
        lines.append(f"| {name} | {d:.2f} | " + " | ".join(_fmt(comp.get(k, {}).get("share_inside"), 3) for k in KINDS)
                     + " |")

    for m in masks:
        row(m["relation"], m["density"], m["composition"])
    for d, comp in randoms.items():
        row("random", float(d), comp)
    p = PAPER["composition@0.05"]
    lines.append("| paper (Ge et al., 5% circuits) | 0.05 | - | " + " | ".join(str(p[k]) for k in ("attention", "mlp",
                                                                                            "layernorm")) + " |")
    return "\n".join(lines) + ("\n\n(share of each module type's parameters inside the mask; the embedding, tied to the "
                               "unembedding, is always kept: outside the mask, 1.000 by construction)")


def overlap_table(ov: dict) -> str:
    names = ov["names"]
    lines = ["| |i∩j|/|i| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for n, row in zip(names, ov["matrix"], strict=True):
        lines.append(f"| {n} | " + " | ".join(_fmt(v, 3) for v in row) + " |")
    return "\n".join(lines)


def overlap_summary_table(summaries: dict) -> str:
    lines = ["| density | mean circuit-circuit overlap | mean random-random overlap | mean circuit-random overlap | "
             "paper |", "|---" * 5 + "|"]
    for d, s in summaries.items():
        paper = {"0.05": "random ~0.05", "0.5": "circuits ~0.60"}.get(d, "-")
        lines.append(f"| {float(d):.2f} | {_fmt(s['circuit_circuit'])} | {_fmt(s['random_random'])} | "
                     f"{_fmt(s['circuit_random'])} | {paper} |")
    return "\n".join(lines)


def timing_table(t: dict) -> str:
    lines = ["| quantity | value |", "|---|---|",
             f"| prompts per step (batches) | {t['prompts_per_step']} ({t['batches_per_step']}) |",
             f"| one forward+backward of the model (median of 3) | {t['forward_backward_s']:.2f} s |",
             f"| one mask training step (median over masks, final eval removed) | {t['step_s']:.2f} s |",
             *(f"| warm start of a {float(d):.0%} mask ({w['rounds']} pruning rounds, median over relations) | "
               f"{w['s']:.1f} s |" for d, w in t["warm_start"].items()),
             f"| step / forward+backward | {t['step_over_forward_backward']:.2f}x |",
             f"| wall time of a 5% mask ({t['steps']} steps, median over relations) | {_fmt(t['mask_5pct_wall_s'], 1)} s |",
             f"| threads / device | {t['threads']} / {t['device']} |"]
    return "\n".join(lines)


# -- main -------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--densities", default="0.05,0.5", help="comma-separated target densities")
    parser.add_argument("--n-relations", type=int, default=3)
    parser.add_argument("--n-train", type=int, default=6)
    parser.add_argument("--n-heldout", type=int, default=6)
    parser.add_argument("--max-candidates", type=int, default=40, help="samples per relation checked for being known")
    parser.add_argument("--steps", type=int, default=20, help="mask training steps")
    parser.add_argument("--lr", type=float, default=0.1, help="Adam lr on the gate logits")
    parser.add_argument("--lam", type=float, default=10.0)
    parser.add_argument("--init", type=float, default=3.0, help="initial logit of open gates (3.0: about 5%% of them closed per sample)")
    parser.add_argument("--warm-start", default="taylor", choices=["taylor", "none"])
    parser.add_argument("--warm-rate", type=float, default=0.16, help="share of the open parameters pruned per warm-start round")
    parser.add_argument("--loss", default="kl", choices=["kl", "ce"])
    parser.add_argument("--eval-every", type=int, default=0, help="curve point every N steps (0: only at the end)")
    parser.add_argument("--n-edit", type=int, default=2, help="edited facts per relation")
    parser.add_argument("--edit-steps", type=int, default=5)
    parser.add_argument("--edit-lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="bench/results/masks.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    from kcircuits.circuits import masks as M
    from kcircuits.config import get_settings
    from kcircuits.lm.loader import load_model

    start = time.perf_counter()
    densities = [float(x) for x in args.densities.split(",")]
    model = load_model(args.model, get_settings())
    lay = M.layout(model.bridge)
    chosen, seen = pick_relations(model, args.n_relations, args.n_train, args.n_heldout, args.max_candidates)
    if not chosen:
        raise SystemExit("no relation has enough known facts")

    masks, step_times, walls, fb_times, edits = [], [], [], [], []
    warm_times: dict[float, list[float]] = {d: [] for d in densities}
    circuit_masks: dict[float, dict[str, torch.Tensor]] = {d: {} for d in densities}
    random_masks: dict[float, dict[str, torch.Tensor]] = {d: {} for d in densities}
    batch_info = None
    for r_index, (rel, known) in enumerate(chosen):
        train, held = known[:args.n_train], known[args.n_train:args.n_train + args.n_heldout]
        task = M.make_task(model, rel.name, [f.prompt for f in train], [f.target for f in train])
        held_task = M.make_task(model, rel.name + ":heldout", [f.prompt for f in held], [f.target for f in held])
        full_train, full_held = M.full_logprobs(model, task), M.full_logprobs(model, held_task)
        fb = median_time(lambda t=task, f=full_train: forward_backward(model, t, f))
        fb_times.append(fb)
        batch_info = batch_info or (len(task.prompts), len(task.batches))
        log.info("%s: forward+backward %.2f s on %d prompts", rel.name, fb, len(task.prompts))
        for d in densities:
            params = M.MaskParams(target=d, steps=args.steps, lr=args.lr, lam=args.lam, init=args.init,
                                  loss=args.loss, warm_start=args.warm_start, warm_rate=args.warm_rate)
            t0 = time.perf_counter()
            res = M.train_mask(model, task, params, eval_every=args.eval_every or args.steps)
            wall = time.perf_counter() - t0
            mask = res["mask"]
            t1 = time.perf_counter()
            ev_train = M.evaluate_mask(model, task, mask, lay, full_train)
            eval_s = time.perf_counter() - t1
            n_evals = len(res["curves"]["step"])
            step_s = max(0.0, res["train_s"] - n_evals * eval_s) / res["steps_run"]
            step_times.append(step_s)
            warm_times[d].append(res["warm_start_s"])
            if abs(d - 0.05) < 1e-9:
                walls.append(wall)
            rand = M.random_mask(lay, d, seed=1000 + r_index)
            circuit_masks[d][rel.name] = mask
            random_masks[d][f"random{r_index}"] = rand
            faith = {}
            for split, t, full in (("train", task, full_train), ("heldout", held_task, full_held)):
                faith[split] = {"n": len(t.prompts),
                                "start": M.evaluate_mask(model, t, res["start_mask"], lay, full),
                                "mask": ev_train if split == "train" else M.evaluate_mask(model, t, mask, lay, full),
                                "complement": M.evaluate_mask(model, t, ~mask, lay, full),
                                "random": M.evaluate_mask(model, t, rand, lay, full)}
            log.info("%s @%.2f: density %.4f, train KL %.3f top1 %.2f, heldout KL %.3f top1 %.2f, %.1f s (step %.2f s)",
                     rel.name, d, M.density(mask, lay), ev_train["kl"], ev_train["top1_agreement"],
                     faith["heldout"]["mask"]["kl"], faith["heldout"]["mask"]["top1_agreement"], wall, step_s)
            masks.append({"relation": rel.name, "density": d, "achieved_density": M.density(mask, lay),
                          "curves": res["curves"], "nonfinite_grad_steps": res.get("nonfinite_grad_steps"), "wall_s": wall,
                          "train_s": res["train_s"], "step_s": step_s, "warm_start_s": res["warm_start_s"],
                          "faithfulness": faith, "composition": M.composition(mask, lay),
                          "random_composition": M.composition(rand, lay)})
        # circuit-aware editing
        check = [(f.prompt, f.target) for f in held]
        for i, fact in enumerate(train[:args.n_edit]):
            tgt = new_target(known, i)
            if tgt is None:
                continue
            runs = {"full": M.edit_under_mask(model, fact.prompt, tgt, None, lay, steps=args.edit_steps, lr=args.edit_lr,
                                              check=check)}
            for d in densities:
                conds = {"mask": circuit_masks[d][rel.name], "complement": ~circuit_masks[d][rel.name],
                         "random": random_masks[d][f"random{r_index}"]}
                for c, m in conds.items():
                    runs[f"{d}:{c}"] = M.edit_under_mask(model, fact.prompt, tgt, m, lay, steps=args.edit_steps,
                                                         lr=args.edit_lr, check=check)
            for key, res in runs.items():
                res.pop("params")
                edits.append({"relation": rel.name, "prompt": fact.prompt, "target": fact.target, "new_target": tgt,
                              "condition": key, **{k: res[k] for k in ("nll_pre", "nll_post", "locality", "density",
                                                                        "losses")}})
            log.info("edit %r -> %r: %s", fact.prompt, tgt,
                     ", ".join(f"{k} {v['nll_post']:.3f}" for k, v in runs.items()))

    edit_summary = {}
    for d in densities:
        edit_summary[f"{d}"] = {}
        for c in CONDITIONS:
            key = "full" if c == "full" else f"{d}:{c}"
            rows = [e for e in edits if e["condition"] == key]
            edit_summary[f"{d}"][c] = {"n": len(rows), "nll_pre": _median([e["nll_pre"] for e in rows]),
                                       "nll_post": _median([e["nll_post"] for e in rows]),
                                       "locality": _median([e["locality"] for e in rows if e["locality"] is not None])}
    overlaps, overlap_summary = {}, {}
    for d in densities:
        both = {**circuit_masks[d], **random_masks[d]}
        ov = M.overlap_matrix(both, lay)
        overlaps[f"{d}"] = ov
        overlap_summary[f"{d}"] = summarise_overlap(ov, set(circuit_masks[d]))
    random_comp = {f"{d}": M.composition(next(iter(random_masks[d].values())), lay) for d in densities}
    fb_med = statistics.median(fb_times)
    step_med = statistics.median(step_times)
    timing = {"forward_backward_s": fb_med, "step_s": step_med, "step_over_forward_backward": step_med / fb_med,
              "mask_5pct_wall_s": _median(walls), "steps": args.steps, "threads": args.threads,
              "warm_start": {f"{d}": {"s": _median(warm_times[d]), "rounds": M.prune_rounds(d, args.warm_rate)
                                      if args.warm_start == "taylor" else 0} for d in densities},
              "device": str(model.device), "prompts_per_step": batch_info[0], "batches_per_step": batch_info[1],
              "total_s": time.perf_counter() - start}

    sections = [("Faithfulness (KL(full || masked), top-1 agreement with the full model)", faithfulness_table(masks)),
                (f"Circuit-aware editing ({args.edit_steps} Adam steps, lr {args.edit_lr}; locality on held-out "
                 "prompts of the relation)", edit_table(edit_summary, densities)),
                ("Module composition", composition_table(masks, random_comp))]
    for d in densities:
        sections.append((f"Overlap at density {d:.2f} (row-normalised)", overlap_table(overlaps[f"{d}"])))
    sections += [("Overlap summary", overlap_summary_table(overlap_summary)), ("Cost", timing_table(timing))]
    text = "\n\n".join(f"### {title}\n\n{body}" for title, body in sections)
    text += f"\n\nModel {args.model} (revision {model.revision}); relations looked at: " + ", ".join(
        f"{s['relation']} {s['known']}/{s['candidates']}{'*' if s['chosen'] else ''}" for s in seen) + \
        f" (known/candidates, * chosen). Total wall time {timing['total_s']:.0f} s."
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {"config": vars(args), "revision": model.revision, "n_gates": lay.n_gates, "n_params": lay.n_params,
              "relations_seen": seen, "masks": masks, "edits": edits, "edit_summary": edit_summary,
              "overlaps": overlaps, "overlap_summary": overlap_summary, "random_composition": random_comp,
              "timing": timing, "paper": {"edit_nll": {f"{d}:{c}": v for (d, c), v in PAPER["edit_nll"].items()},
                                          "overlap": PAPER["overlap"], "composition@0.05": PAPER["composition@0.05"]}}
    out.write_text(json.dumps(report, indent=1))
    out.with_suffix(".md").write_text(text + "\n")


if __name__ == "__main__":
    main()

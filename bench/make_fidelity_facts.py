"""Build the fidelity benchmark's fact set (bench/data/fidelity_facts.json) by a fixed rule.

Rule (model-dependent only through "does the model know it"):
- LRE relations of the factual, commonsense and linguistic categories, in the package's order;
- a fact is the relation's zero-shot prompt for one sample, answered by the first token of
  " " + object; it is *known* when that token is the model's top-1 at the last position;
- samples are scanned in file order (at most ``--scan`` per relation); the first ``--per-relation``
  known facts form the benchmark split, the next ``--dev`` known facts a separate development split
  (methods are tuned on dev, reported on bench);
- a relation is used when it yields a full benchmark split and its samples' answers start with at
  least two different tokens (a same-relation counterfactual with another answer can exist; the
  year relations, whose answers all start with " 1", are left out by this);
- free-form prompts outside LRE (written here, below) are kept when the model's top-1 is the
  intended answer.

Run: python bench/make_fidelity_facts.py  (SmolLM2, about a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from kcircuits.circuits.relation import CATEGORIES, last_logits, list_relations, load_relation, relation_facts

OUT = Path(__file__).resolve().parent / "data" / "fidelity_facts.json"

#: Prompts outside LRE (kind, prompt, answer). Written for this benchmark; none appears in an issue.
FREE_FORM = [
    ("landmark", "The Golden Gate Bridge is located in the city of", " San"),
    ("landmark", "The Statue of Liberty stands in the city of", " New"),
    ("landmark", "Big Ben is a clock tower in the city of", " London"),
    ("landmark", "The Brandenburg Gate is a monument in the city of", " Berlin"),
    ("landmark", "The Kremlin is a fortress in the city of", " Moscow"),
    ("landmark", "The Sydney Opera House is in the country of", " Australia"),
    ("person", "Albert Einstein was a famous", " physicist"),
    ("person", "William Shakespeare was a famous English", " playwright"),
    ("person", "Wolfgang Amadeus Mozart was a famous", " composer"),
    ("person", "Neil Armstrong was the first person to walk on the", " moon"),
    ("science", "Water freezes at a temperature of zero degrees", " Celsius"),
    ("science", "The chemical symbol for sodium is", " Na"),
    ("science", "The planet closest to the Sun is", " Mercury"),
    ("colour", "The colour of a ripe banana is", " yellow"),
    ("colour", "On a clear day the sky is", " blue"),
    ("antonym", "The opposite of hot is", " cold"),
    ("antonym", "The opposite of up is", " down"),
    ("geography", "The longest river in Egypt is the", " Nile"),
    ("geography", "Mount Everest is the highest mountain in the", " world"),
    ("language", "In Brazil, most people speak", " Portuguese"),
    ("animal", "A baby cat is called a", " kitten"),
    ("animal", "The largest animal on Earth is the blue", " whale"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--per-relation", type=int, default=3)
    parser.add_argument("--dev", type=int, default=3)
    parser.add_argument("--scan", type=int, default=200)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    from kcircuits.config import Settings
    from kcircuits.lm.loader import load_model

    torch.set_num_threads(2)
    model = load_model(args.model, Settings(device="cpu"))
    bench, dev, relations = [], [], []
    want = args.per_relation + args.dev
    for info in list_relations():
        if info["category"] not in CATEGORIES[:3]:
            continue
        relation = load_relation(info["name"])
        facts = relation_facts(model, relation)[: args.scan]
        if len({f.target_id for f in facts}) < 2:
            continue
        top1 = last_logits(model, [f.prompt for f in facts]).argmax(-1).tolist()
        known = [f for f, t in zip(facts, top1, strict=True) if t == f.target_id][:want]
        if len(known) < args.per_relation:
            continue
        relations.append(relation.name)
        rows = [{"relation": relation.name, "category": relation.category, "subject": f.subject,
                 "prompt": f.prompt, "target": f.target, "object": f.object} for f in known]
        bench += rows[: args.per_relation]
        dev += rows[args.per_relation:]
    prompts = [p for _, p, _ in FREE_FORM]
    top1 = last_logits(model, prompts).argmax(-1).tolist()
    free = [{"relation": None, "category": f"free:{kind}", "subject": None, "prompt": prompt, "target": target,
             "object": target.strip()}
            for (kind, prompt, target), t in zip(FREE_FORM, top1, strict=True) if model.first_token_id(target) == t]
    # free-form prompts alternate between the splits so both see some
    bench += free[0::2]
    dev += free[1::2]
    data = {"model": args.model, "revision": model.revision, "rule": __doc__.split("Rule")[1].split("Run:")[0].strip(),
            "relations": relations, "bench": bench, "dev": dev}
    args.out.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    print(f"{len(bench)} bench facts and {len(dev)} dev facts from {len(relations)} relations "
          f"(+{len(free)} free-form kept of {len(FREE_FORM)}) -> {args.out}")


if __name__ == "__main__":
    main()

"""Knowledge-editing rates on LRE facts: efficacy, generalisation and locality per method.

Counterfactual edits in the CounterFact style: for facts of an LRE relation that the model knows
(the answer's first token is its top-1 on the relation's first zero-shot template), the new target
is the next known fact's answer. Generalisation prompts are the relation's other templates;
locality prompts are other subjects of the relation, other facts about the subject and fixed
unrelated prompts (see kcircuits.editing.evaluate).

    python bench/edit_rates.py --model smollm2-135m --relation country_capital_city --n 10 \
        --methods ft-m,rome --out bench/results/edit_rates.json
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch


def known_facts(model, relation: dict, n: int) -> list[tuple[str, str, str]]:
    """(prompt, subject, answer) for up to n + 1 facts whose answer is the model's top-1."""
    from kcircuits.editing.evaluate import top1

    template = relation["prompt_templates_zs"][0]
    out = []
    for sample in relation["samples"]:
        prompt, answer = template.format(sample["subject"]), " " + sample["object"]
        if top1(model, prompt) == model.first_token_id(answer):
            out.append((prompt, sample["subject"], answer))
        if len(out) > n:
            break
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--relation", default="country_capital_city")
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--methods", default="ft-m,rome")
    parser.add_argument("--params", default="{}", help="JSON per method, e.g. '{\"rome\": {\"n_prefixes\": 4}}'")
    parser.add_argument("--out", default="bench/results/edit_rates.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(2)
    from kcircuits.config import get_settings
    from kcircuits.editing.evaluate import lre_relations
    from kcircuits.editing.session import EditRequest, edit_and_evaluate
    from kcircuits.lm.loader import load_model

    settings = get_settings()
    model = load_model(args.model, settings)
    relation = next(r for r in lre_relations() if r["_file"].endswith(args.relation))
    facts = known_facts(model, relation, args.n)
    extra = json.loads(args.params)
    report: dict = {"model": args.model, "revision": model.revision, "relation": args.relation,
                    "n_facts": min(args.n, len(facts) - 1) if len(facts) > 1 else 0, "methods": {}}
    for method in args.methods.split(","):
        rows = []
        for i, (prompt, subject, answer) in enumerate(facts[: args.n]):
            new = facts[(i + 1) % len(facts)][2]
            req = EditRequest(model=args.model, method=method, prompt=prompt, subject=subject, target=new,
                              params=extra.get(method, {}))
            t0 = time.perf_counter()
            _, result = edit_and_evaluate(model, req, settings)
            ev = result["evaluation"]
            row = {"prompt": prompt, "old": answer, "new": new, "efficacy": ev["efficacy"]["success"],
                   "generalisation": ev["generalisation"]["rate"], "locality": ev["locality"]["rate"],
                   "new_prob": ev["efficacy"]["new_prob"], "layer": result["layer"],
                   "covariance": result["covariance"], "seconds": round(time.perf_counter() - t0, 1)}
            rows.append(row)
            print(json.dumps({"method": method, **row}), flush=True)
        n = len(rows)
        report["methods"][method] = {
            "efficacy": sum(r["efficacy"] for r in rows) / n,
            "generalisation": sum(r["generalisation"] for r in rows) / n,
            "locality": sum(r["locality"] for r in rows) / n,
            "layer": rows[0]["layer"], "covariance": rows[0]["covariance"], "facts": rows,
        }
        print(json.dumps({k: v for k, v in report["methods"][method].items() if k != "facts"} | {"method": method}),
              flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

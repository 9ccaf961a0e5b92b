"""Edit evaluation: efficacy, generalisation, locality and the probability shift of old/new targets.

Answers are scored by their first token (as in the paper). Generalisation prompts are the other LRE
templates of the same relation when the edit prompt is an LRE template filled with the subject,
plus any paraphrases the user gives. Locality prompts are other facts about the same subject (other
LRE relations listing it), a few other subjects of the matched relation, fixed unrelated prompts
and any the user gives; an item passes when its top-1 token is unchanged by the edit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch

from kcircuits.circuits.relation import relation_files
from kcircuits.editing.rome import pad_rows
from kcircuits.lm.loader import LoadedModel

UNRELATED = [
    "The capital of France is",
    "The largest planet in the solar system is",
    "Water is made of hydrogen and",
    "The first president of the United States was",
    "The chemical symbol for gold is",
]


@lru_cache(maxsize=1)
def lre_relations() -> tuple[dict, ...]:
    """All LRE relation files as raw JSON (factual first), each with its ``_file`` as category/stem."""
    out = []
    for path in relation_files().values():
        data = json.loads(path.read_text())
        data["_file"] = f"{path.parent.name}/{path.stem}"
        out.append(data)
    return tuple(out)


def relation_templates(relation: dict) -> list[str]:
    return list(dict.fromkeys([*relation.get("prompt_templates", []), *relation.get("prompt_templates_zs", [])]))


def match_lre(prompt: str, subject: str) -> tuple[dict, str] | None:
    """The LRE relation and template with ``template.format(subject) == prompt`` (spaces trimmed)."""
    want = prompt.strip()
    for relation in lre_relations():
        for template in relation_templates(relation):
            if template.format(subject).strip() == want:
                return relation, template
    return None


@dataclass
class EvalPlan:
    """Prompts to score before and after an edit and the token ids that matter."""

    prompt: str
    subject: str
    target: str
    new_id: int
    old_id: int
    old_target: str
    relation: str | None = None
    paraphrases: list[str] = field(default_factory=list)
    locality: list[dict[str, str]] = field(default_factory=list)  # {"prompt", "kind"[, "subject"]}
    #: why there are no LRE paraphrases (None when the prompt matched a relation with other templates)
    paraphrase_note: str | None = None

    def prompts(self) -> list[str]:
        return [self.prompt, *self.paraphrases, *(item["prompt"] for item in self.locality)]


def top1(model: LoadedModel, prompt: str) -> int:
    with torch.no_grad():
        return int(model.logits(model.tokenize(prompt))[0, -1].argmax())


def plan_evaluation(model: LoadedModel, prompt: str, subject: str, target: str, *,
                    paraphrases: list[str] | None = None, locality_prompts: list[str] | None = None,
                    max_neighbours: int = 3, max_same_subject: int = 4) -> EvalPlan:
    """Build the evaluation prompts; the old target is the unedited model's top-1 on ``prompt``."""
    old_id = top1(model, prompt)
    plan = EvalPlan(prompt, subject, target, model.first_token_id(target), old_id,
                    model.tokenizer.decode([old_id]))
    para: list[str] = []
    loc: list[dict[str, str]] = []
    matched = match_lre(prompt, subject)
    if matched:
        relation, template = matched
        plan.relation = relation["name"]
        para += [t.format(subject) for t in relation_templates(relation) if t.format(subject).strip() != prompt.strip()]
        others = [s["subject"] for s in relation["samples"] if s["subject"] != subject and s["subject"] not in prompt]
        loc += [{"prompt": template.format(s), "kind": "neighbour", "subject": s}
                for s in list(dict.fromkeys(others))[:max_neighbours]]
        if not para:
            plan.paraphrase_note = f"LRE relation {relation['name']!r} has no other template for this prompt"
    else:
        plan.paraphrase_note = (f"the prompt is no LRE template filled with the subject {subject!r}, so there are "
                                "no built-in paraphrases; give your own")
    same = []
    for relation in lre_relations():
        if matched and relation["name"] == matched[0]["name"]:
            continue
        if any(s["subject"] == subject for s in relation["samples"]):
            same.append({"prompt": relation_templates(relation)[0].format(subject), "kind": "same_subject",
                         "subject": subject})
    loc += same[:max_same_subject]
    loc += [{"prompt": p, "kind": "unrelated"} for p in UNRELATED]
    para += list(paraphrases or [])
    loc += [{"prompt": p, "kind": "user"} for p in (locality_prompts or [])]
    plan.paraphrases = list(dict.fromkeys(p for p in para if p.strip() and p != prompt))
    seen = set(plan.paraphrases) | {prompt}
    plan.locality = [item for item in loc if not (item["prompt"] in seen or seen.add(item["prompt"]))]
    return plan


def measure(model: LoadedModel, plan: EvalPlan) -> list[dict[str, Any]]:
    """For each of ``plan.prompts()``: top-1 token and the new/old targets' prob and rank (1-based)."""
    rows = [model.tokenize(p)[0].tolist() for p in plan.prompts()]
    batch = pad_rows(model, rows, [len(r) - 1 for r in rows])
    with torch.no_grad():
        logits = model.logits(batch.tokens)
    last = logits[torch.arange(len(rows)), torch.tensor(batch.lookup)].float()  # [n, vocab]
    probs = last.softmax(-1)
    out = []
    for i in range(len(rows)):
        row = {"top_id": int(probs[i].argmax())}
        row["top"] = model.tokenizer.decode([row["top_id"]])
        row["top_prob"] = float(probs[i, row["top_id"]])
        for name, tid in (("new", plan.new_id), ("old", plan.old_id)):
            row[f"{name}_prob"] = float(probs[i, tid])
            row[f"{name}_rank"] = int((last[i] > last[i, tid]).sum()) + 1
        out.append(row)
    return out


def _rate(items: list[dict]) -> float | None:
    return round(sum(it["success"] for it in items) / len(items), 4) if items else None


def evaluation(plan: EvalPlan, pre: list[dict], post: list[dict]) -> dict[str, Any]:
    """The contract's ``evaluation`` object from the pre- and post-edit measurements."""
    n_para = len(plan.paraphrases)
    gen = [{"prompt": p, "success": b["new_rank"] == 1, "new_rank": b["new_rank"], "new_prob": b["new_prob"],
            "pre_new_rank": a["new_rank"], "post_top": b["top"]}
           for p, a, b in zip(plan.paraphrases, pre[1:1 + n_para], post[1:1 + n_para], strict=True)]
    loc = [{"prompt": item["prompt"], "kind": item["kind"], "subject": item.get("subject"), "success": a["top_id"] == b["top_id"],
            "pre": {"token": a["top"], "prob": a["top_prob"]}, "post": {"token": b["top"], "prob": b["top_prob"]}}
           for item, a, b in zip(plan.locality, pre[1 + n_para:], post[1 + n_para:], strict=True)]
    a, b = pre[0], post[0]
    return {
        "efficacy": {"success": b["new_rank"] == 1, "new_prob": b["new_prob"], "old_prob": b["old_prob"],
                     "new_rank": b["new_rank"], "old_rank": b["old_rank"], "post_top": b["top"]},
        "generalisation": {"rate": _rate(gen), "items": gen, "relation": plan.relation,
                           "reason": None if gen else (plan.paraphrase_note or "no paraphrases")},
        "locality": {"rate": _rate(loc), "items": loc},
        "prob_shift": {"old": {"pre": a["old_prob"], "post": b["old_prob"]},
                       "new": {"pre": a["new_prob"], "post": b["new_prob"]}},
    }

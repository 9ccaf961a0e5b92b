"""Counterfactual prompts for patching: the same relation and template, another subject whose
answer is a different valid object of the same kind, and that answer as the foil.

How candidates are found, in order (the first source that yields a valid candidate wins):

1. ``template``: the prompt is an LRE template of relation R filled with subject S (any of R's
   templates, whitespace trimmed). Candidates: R's other subjects in the same template.
2. ``subject``: S is a sample subject of LRE relations (its prompt is the user's own wording).
   Candidates: the other subjects of those relations, swapped into the prompt.
3. ``answer class``: the target is the first token of an object of LRE relations (e.g. " Paris"
   for capitals and headquarters). Candidates: those relations' subjects, swapped in.
4. ``aligned subjects``: any factual or commonsense LRE subject, swapped in.

A candidate must keep the token count and the subject's token positions (patching is position by
position). The candidates of a source run a few at a time, in the relation's sample order, until
``k`` of kind ``known`` are found (at most ``MAX_CANDIDATES``). Each gets the model's
top-1 token on its prompt, ``y'``. The kinds, best first:

- ``known``: y' is the first token of the candidate's own object, and differs from the target.
  The model knows that counterfactual fact.
- ``same kind``: y' is the first token of some object of the source's relations, and differs
  from the target: a valid answer of the same kind.
- ``other`` (last resort, only for source 4, which scans a pool three times wider): y' is a
  whole-word token (a space, then at least three letters) other than the target, of no known
  kind. Better than no counterfactual: the fallback, zero ablation, keeps no answer on SmolLM2.

The candidates of these two kinds are ordered by kind, then by the counterfactual margin
logit(y') - logit(target) on the candidate's prompt (a candidate that moves the model furthest
from the target first). The foil of a candidate is its y'; a foil equal to the target is never
accepted. When no source yields a valid candidate, the result is None (the caller states the
fallback it uses).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import torch

from kcircuits.circuits.relation import list_relations, load_relation
from kcircuits.circuits.subject import subject_positions

if TYPE_CHECKING:
    from kcircuits.lm.loader import LoadedModel

__all__ = ["Candidate", "CounterfactualChoice", "find_counterfactuals", "match_template", "relations_of"]

KINDS = ("known", "same kind", "other")
SOURCES = ("template", "subject", "answer class", "aligned subjects")
#: Most candidates scored per source (one forward of [n, pos] tokens).
MAX_CANDIDATES = 16


@dataclass(frozen=True)
class Candidate:
    """One counterfactual prompt, scored on the model."""

    prompt: str
    subject: str
    relation: str | None
    foil_id: int
    foil: str
    foil_prob: float  # p(foil | counterfactual prompt)
    target_prob: float  # p(target | counterfactual prompt)
    margin: float  # logit(foil) - logit(target) on the counterfactual prompt
    kind: str  # "known" | "same kind"
    own_object: str | None  # the candidate subject's object in its relation

    def why(self) -> str:
        what = {"known": f"the model answers {self.foil!r} (its own object {self.own_object!r})",
                "same kind": f"the model answers {self.foil!r}, an object of the same kind",
                "other": f"the model answers {self.foil!r} (not an answer of the target's kind)"}[self.kind]
        rel = f" of {self.relation}" if self.relation else ""
        return (f"subject {self.subject!r}{rel}: {what} with p={self.foil_prob:.2f}, "
                f"target p={self.target_prob:.3f}")


@dataclass(frozen=True)
class CounterfactualChoice:
    """The chosen counterfactuals (best first) and every valid candidate, with how they were found."""

    chosen: tuple[Candidate, ...]
    candidates: tuple[Candidate, ...]
    source: str  # one of SOURCES
    relation: str | None  # the relation matched by template or subject, if any
    subject: str

    @property
    def reason(self) -> str:
        first = self.chosen[0]
        how = {"template": f"the prompt is a template of {self.relation}; another subject of that relation",
               "subject": f"{self.subject!r} is a subject of {self.relation}; another subject of that relation",
               "answer class": "the target is an object of LRE relations; a subject of those relations",
               "aligned subjects": "no relation matched; an LRE subject with the same token shape"}[self.source]
        return f"{how}: {first.why()}"


# LRE indexes (model independent) -----------------------------------------------------------
@lru_cache(maxsize=1)
def _subject_index() -> dict[str, tuple[str, ...]]:
    """LRE subject -> names of the relations that list it."""
    index: dict[str, list[str]] = {}
    for rel in list_relations():
        for subject, _ in load_relation(rel["name"]).samples:
            index.setdefault(subject, []).append(rel["name"])
    return {s: tuple(dict.fromkeys(names)) for s, names in index.items()}


def relations_of(subject: str) -> tuple[str, ...]:
    """Names of the LRE relations that have ``subject`` as a sample subject."""
    return _subject_index().get(subject, ())


def match_template(prompt: str, subject: str | None = None) -> tuple[str, str, str] | None:
    """(relation, template, subject) when ``prompt`` is an LRE template filled with one subject.

    With ``subject`` given, only that filling counts; otherwise the filling must be one of the
    relation's sample subjects. Factual relations are tried first, then commonsense, linguistic, bias.
    """
    want = prompt.strip()
    for rel in list_relations():
        relation = load_relation(rel["name"])
        for template in relation.templates:
            head, sep, tail = template.partition("{}")
            if not sep or not want.startswith(head.strip()) or not want.endswith(tail.strip()):
                continue
            if subject is not None:
                if template.format(subject).strip() == want:
                    return relation.name, template, subject
                continue
            middle = want[len(head.lstrip()):len(want) - len(tail.rstrip())] if tail.strip() else want[len(head.lstrip()):]
            if any(s == middle for s, _ in relation.samples):
                return relation.name, template, middle
    return None


def _pool(names: Sequence[str]) -> list[tuple[str, str, str]]:
    """(subject, object, relation) of the named relations, each subject once."""
    seen: set[str] = set()
    out = []
    for name in names:
        for subject, obj in load_relation(name).samples:
            if subject not in seen:
                seen.add(subject)
                out.append((subject, obj, name))
    return out


@lru_cache(maxsize=4)
def _object_tokens(tokenizer) -> dict[str, dict[int, str]]:
    """Per relation: first token id of " " + object -> that object (for one tokenizer)."""
    out: dict[str, dict[int, str]] = {}
    for rel in list_relations():
        objects = dict.fromkeys(obj for _, obj in load_relation(rel["name"]).samples)
        first = tokenizer([" " + o for o in objects], add_special_tokens=False)["input_ids"]
        out[rel["name"]] = {ids[0]: obj for ids, obj in zip(first, objects, strict=True) if ids}
    return out


def answer_relations(model: LoadedModel, target_id: int) -> tuple[str, ...]:
    """LRE relations with an object whose first token is ``target_id``."""
    return tuple(name for name, tokens in _object_tokens(model.tokenizer).items() if target_id in tokens)


def _class_tokens(model: LoadedModel, names: Sequence[str]) -> set[int]:
    """First tokens of every object of the named relations."""
    index = _object_tokens(model.tokenizer)
    return {t for name in names for t in index[name]}


# scoring ------------------------------------------------------------------------------------
def _aligned_prompts(model: LoadedModel, prompt: str, subject: str, pool: list[tuple[str, str, str]], target_id: int,
                     limit: int) -> list[tuple[str, str, str, str]]:
    """(prompt, subject, object, relation) for pool subjects that keep the token shape (token count
    and the subject's token positions), at most ``limit``, in pool order. One batched tokenisation."""
    at = prompt.index(subject)
    positions = subject_positions(model, prompt, subject)
    shift = model.tokenize(prompt).shape[1] - len(model.tokenizer(prompt, add_special_tokens=False)["input_ids"])
    n = model.tokenize(prompt).shape[1] - shift
    objects = _object_tokens(model.tokenizer)
    rows = []
    for other, obj, relation in pool:
        if other == subject or other in subject or subject in other:
            continue
        if next((t for t, o in objects[relation].items() if o == obj), None) == target_id:
            continue  # its own answer is the target: no counterfactual
        rows.append((prompt[:at] + other + prompt[at + len(subject):], other, obj, relation))
    if not rows:
        return []
    enc = model.tokenizer([r[0] for r in rows], add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for (candidate, other, obj, relation), ids, offsets in zip(rows, enc["input_ids"], enc["offset_mapping"],
                                                              strict=True):
        if len(ids) != n:
            continue
        end = at + len(other)
        span = [i + shift for i, (a, b) in enumerate(offsets) if a < end and b > at and b > a]
        if span != positions:
            continue
        out.append((candidate, other, obj, relation))
        if len(out) >= limit:
            break
    return out


def _word_like(text: str) -> bool:
    return text.startswith(" ") and len(text.strip()) >= 3 and text.strip().isalpha()


def _last_logits(model: LoadedModel, tokens: torch.Tensor) -> torch.Tensor:
    """Logits at the last position only [n, V] (the unembedding of other positions is skipped)."""
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, ["ln_final.hook_in"])
        final = cache["ln_final.hook_in"][:, -1:]
        return model.unembed_final(final)[:, 0].float()


def _score(model: LoadedModel, target_id: int, aligned: list[tuple[str, str, str, str]], class_ids: set[int],
           allow_other: bool = False, enough: int = 1, batch: int = 4) -> list[Candidate]:
    """Valid candidates (kinds ``known``, ``same kind``, and ``other`` when allowed), best first.

    Candidates run ``batch`` at a time, in pool order, until ``enough`` of kind ``known`` are found
    (most prompts need one batch; the rest stay unscored).
    """
    out: list[Candidate] = []
    for start in range(0, len(aligned), batch):
        chunk = aligned[start:start + batch]
        logits = _last_logits(model, torch.cat([model.tokenize(p) for p, _, _, _ in chunk]))  # [n, V]
        probs = logits.softmax(-1)
        top = logits.argmax(-1).tolist()
        for i, (prompt, subject, obj, relation) in enumerate(chunk):
            foil = top[i]
            if foil == target_id:
                continue
            own = model.first_token_id(" " + obj)
            text = model.token_strings([foil])[0]
            kind = "known" if foil == own else ("same kind" if foil in class_ids else None)
            if kind is None and allow_other and _word_like(text):
                kind = "other"
            if kind is None:
                continue
            out.append(Candidate(prompt, subject, relation, foil, text, float(probs[i, foil]),
                                 float(probs[i, target_id]), float(logits[i, foil] - logits[i, target_id]),
                                 kind, obj))
        if sum(c.kind == "known" for c in out) >= enough:
            break
    out.sort(key=lambda c: (KINDS.index(c.kind), -c.margin))
    return out


def find_counterfactuals(model: LoadedModel, prompt: str, subject: str, target_id: int, *, k: int = 1,
                         max_candidates: int = MAX_CANDIDATES) -> CounterfactualChoice | None:
    """Counterfactuals for ``prompt`` -> ``target_id`` with ``subject`` swapped (see module doc).

    Returns the ``k`` best (fewer when fewer are valid) and all valid candidates of the first
    source that has any; None when no source has one.
    """
    if subject not in prompt or k < 1:
        return None
    matched = match_template(prompt, subject)
    names_by_source: list[tuple[str, tuple[str, ...]]] = []
    if matched:
        names_by_source.append(("template", (matched[0],)))
    own = relations_of(subject)
    if own:
        names_by_source.append(("subject", own))
    by_answer = answer_relations(model, target_id)
    if by_answer:
        names_by_source.append(("answer class", by_answer))
    broad = tuple(r["name"] for r in list_relations() if r["category"] in ("factual", "commonsense"))
    names_by_source.append(("aligned subjects", broad))
    class_ids = _class_tokens(model, by_answer) if by_answer else set()
    tried: set[tuple[str, ...]] = set()
    for source, names in names_by_source:
        if names in tried:
            continue
        tried.add(names)
        ids = _class_tokens(model, names) if source in ("template", "subject") else class_ids
        last = source == "aligned subjects"  # the last resort: a wider pool, any word-like answer
        aligned = _aligned_prompts(model, prompt, subject, _pool(names), target_id,
                                   max_candidates * (3 if last else 1))
        valid = _score(model, target_id, aligned, ids, allow_other=last, enough=k)
        if valid:
            relation = names[0] if source in ("template", "subject") else None
            return CounterfactualChoice(tuple(valid[:k]), tuple(valid), source, relation, subject)
    return None


def candidate_for_prompt(model: LoadedModel, prompt: str, corrupt_prompt: str, target_id: int) -> tuple[int, float]:
    """(top-1 token id, its probability) of a user-given counterfactual prompt (the foil it implies)."""
    with torch.no_grad():
        logits = model.logits(model.tokenize(corrupt_prompt))[0, -1].float()
    probs = logits.softmax(-1)
    row = logits.clone()
    row[target_id] = float("-inf")
    foil = int(logits.argmax()) if int(logits.argmax()) != target_id else int(row.argmax())
    return foil, float(probs[foil])

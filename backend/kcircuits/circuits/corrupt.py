"""Corrupted prompts built automatically: swap the subject for another subject of the same LRE
relation whose prompt has the same token length (positions stay aligned), else fall back to zero
ablation. Subject detection and positions come from :mod:`kcircuits.circuits.subject` and
:mod:`kcircuits.circuits.relation` (character offsets).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from kcircuits.circuits.relation import list_relations, load_relation, subject_positions
from kcircuits.circuits.subject import guess_subject

__all__ = ["CorruptPrompt", "auto_corrupt", "find_subject_positions", "guess_subject", "relations_of"]


def find_subject_positions(model, prompt: str, subject: str) -> list[int]:
    """Token positions (BOS included in the count) whose characters overlap ``subject`` in ``prompt``."""
    return subject_positions(model, prompt, subject)


@dataclass(frozen=True)
class CorruptPrompt:
    prompt: str
    subject: str  # the substituted subject
    relation: str


@lru_cache(maxsize=1)
def _subject_index() -> dict[str, tuple[str, ...]]:
    """LRE subject -> names of the relations that contain it."""
    index: dict[str, list[str]] = {}
    for rel in list_relations():
        for subject, _ in load_relation(rel["name"]).samples:
            index.setdefault(subject, []).append(rel["name"])
    return {s: tuple(dict.fromkeys(names)) for s, names in index.items()}


def relations_of(subject: str) -> tuple[str, ...]:
    """Names of the LRE relations that have ``subject`` as a sample subject."""
    return _subject_index().get(subject, ())


def auto_corrupt(model, prompt: str, subject: str) -> CorruptPrompt | None:
    """The first other subject of one of ``subject``'s relations (different object preferred)
    whose substitution keeps the prompt's token count and the subject's positions; None if none."""
    if subject not in prompt:
        return None
    n = model.tokenize(prompt).shape[1]
    positions = subject_positions(model, prompt, subject)
    for name in relations_of(subject):
        relation = load_relation(name)
        objects = dict(relation.samples)
        own = objects.get(subject)
        ordered = sorted(relation.samples, key=lambda s: (s[1] == own, s[0]))  # different answers first
        for other, _ in ordered:
            if other == subject:
                continue
            candidate = prompt.replace(subject, other, 1)
            if model.tokenize(candidate).shape[1] != n:
                continue
            if subject_positions(model, candidate, other) != positions:
                continue
            return CorruptPrompt(candidate, other, name)
    return None

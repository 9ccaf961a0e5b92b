"""Corrupted prompts built automatically: swap the subject for another subject of the same LRE
relation whose prompt has the same token length (positions stay aligned). A subject that is in no
LRE relation (e.g. "Eiffel Tower") is swapped for a factual LRE subject of the same token shape,
chosen in one batched forward as the one that most lowers the target's log-probability. When no
candidate fits, the caller falls back to zero ablation. Positions come from
:func:`kcircuits.circuits.subject.subject_positions` (character offsets).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from kcircuits.circuits.relation import list_relations, load_relation
from kcircuits.circuits.subject import subject_positions

__all__ = ["CorruptPrompt", "auto_corrupt", "relations_of"]


@dataclass(frozen=True)
class CorruptPrompt:
    prompt: str
    subject: str  # the substituted subject
    relation: str
    how: str = "same relation"  # or "target drop" (subject in no LRE relation)


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


def _aligned(model, prompt: str, subject: str, other: str, n: int, positions: list[int]) -> str | None:
    """``prompt`` with ``other`` in place of ``subject`` when token count and subject positions hold."""
    candidate = prompt.replace(subject, other, 1)
    if model.tokenize(candidate).shape[1] != n or subject_positions(model, candidate, other) != positions:
        return None
    return candidate


@lru_cache(maxsize=1)
def _factual_subjects() -> tuple[tuple[str, str], ...]:
    """(subject, relation) over the factual LRE relations, each subject once, sorted."""
    seen: dict[str, str] = {}
    for rel in list_relations():
        if rel["category"] == "factual":
            for subject, _ in load_relation(rel["name"]).samples:
                seen.setdefault(subject, rel["name"])
    return tuple(sorted(seen.items()))


def _by_target_drop(model, prompt: str, subject: str, target_id: int, n: int, positions: list[int],
                    max_candidates: int) -> CorruptPrompt | None:
    """Among aligned factual subjects, the one whose prompt gives ``target_id`` the lowest log-prob."""
    found: list[tuple[str, str, str]] = []
    for other, relation in _factual_subjects():
        if other == subject or other in subject or subject in other:
            continue
        candidate = _aligned(model, prompt, subject, other, n, positions)
        if candidate is not None:
            found.append((candidate, other, relation))
            if len(found) >= max_candidates:
                break
    if not found:
        return None
    tokens = torch.cat([model.tokenize(c) for c, _, _ in found])  # [k, n]
    with torch.no_grad():
        logprobs = model.bridge(tokens)[:, -1].float().log_softmax(-1)[:, target_id]  # [k]
    best = int(logprobs.argmin())
    candidate, other, relation = found[best]
    return CorruptPrompt(candidate, other, relation, how="target drop")


def auto_corrupt(model, prompt: str, subject: str, target_id: int | None = None,
                 max_candidates: int = 32) -> CorruptPrompt | None:
    """A corrupted prompt for ``prompt`` with ``subject`` swapped (see module doc); None if none fits.

    Same relation first (the first other subject with a different object, then any); for a subject
    in no LRE relation and a known ``target_id``, the aligned factual subject with the lowest
    target log-prob among the first ``max_candidates`` (one forward of [k, n] tokens).
    """
    if subject not in prompt:
        return None
    n = model.tokenize(prompt).shape[1]
    positions = subject_positions(model, prompt, subject)
    names = relations_of(subject)
    for name in names:
        relation = load_relation(name)
        own = dict(relation.samples).get(subject)
        ordered = sorted(relation.samples, key=lambda s: (s[1] == own, s[0]))  # different answers first
        for other, _ in ordered:
            if other != subject:
                candidate = _aligned(model, prompt, subject, other, n, positions)
                if candidate is not None:
                    return CorruptPrompt(candidate, other, name)
    if names or target_id is None:
        return None
    return _by_target_drop(model, prompt, subject, target_id, n, positions, max_candidates)

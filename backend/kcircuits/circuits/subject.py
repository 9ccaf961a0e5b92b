"""Finding the subject of a factual prompt when the user names none.

Order: the longest LRE subject that occurs in the prompt; else the longest run of capitalised
words that is not the sentence's first word alone (e.g. "The Eiffel Tower is ..." -> "Eiffel Tower").
:func:`subject_positions` maps a subject span to token positions by character offsets; it is the one
place that does so (discovery, corrupted prompts, lens, ROME keys).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import TYPE_CHECKING

from kcircuits.errors import BadRequest

if TYPE_CHECKING:
    from kcircuits.lm.loader import LoadedModel

__all__ = ["guess_subject", "resolve_subject", "subject_positions"]

_WORD = re.compile(r"[A-Z][\w'\-\.]*(?:\s+(?:of|de|the|and|[A-Z][\w'\-\.]*))*")
_STOP_FIRST = {"The", "A", "An", "In", "On", "At", "What", "Which", "Who", "Where", "When", "This", "That"}


@lru_cache(maxsize=1)
def _lre_subjects() -> tuple[str, ...]:
    from kcircuits.circuits.relation import list_relations, load_relation

    subjects = {s for rel in list_relations() for s, _ in load_relation(rel["name"]).samples if len(s) >= 3}
    return tuple(sorted(subjects, key=len, reverse=True))


def guess_subject(prompt: str) -> str | None:
    """The most likely subject span of ``prompt`` (text), or None."""
    for subject in _lre_subjects():
        index = prompt.find(subject)
        if index >= 0 and _word_bounded(prompt, index, len(subject)):
            return subject
    best = None
    for match in _WORD.finditer(prompt):
        span = match.group(0).strip()
        words = span.split()
        if match.start() == 0 and words and words[0] in _STOP_FIRST:
            words = words[1:]
        while words and words[-1] in {"of", "de", "the", "and"}:
            words = words[:-1]
        if words and (best is None or len(" ".join(words)) > len(best)):
            best = " ".join(words)
    return best


def _word_bounded(text: str, start: int, length: int) -> bool:
    before = text[start - 1] if start > 0 else " "
    after = text[start + length] if start + length < len(text) else " "
    return not before.isalnum() and not after.isalnum()


def resolve_subject(model: LoadedModel, prompt: str, subject: str | None) -> tuple[str | None, list[int], bool]:
    """(subject text, token positions, auto-detected?) — a given subject must occur in the prompt."""
    auto = subject is None
    text = guess_subject(prompt) if auto else subject
    if not text:
        return None, [], auto
    return text, subject_positions(model, prompt, text), auto


def subject_positions(model: LoadedModel, text: str, subject: str, start: int = 0) -> list[int]:
    """Token positions in ``model.tokenize(text)`` (BOS counted when the model prepends one) whose
    characters overlap the first occurrence of ``subject`` at or after character ``start``."""
    if not subject.strip():
        raise BadRequest("subject is empty")
    a = text.find(subject, start)
    if a < 0:
        raise BadRequest(f"subject {subject!r} does not occur in the prompt")
    b = a + len(subject)
    enc = model.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    shift = model.tokenize(text).shape[1] - len(enc["input_ids"])
    positions = [i + shift for i, (s, e) in enumerate(enc["offset_mapping"]) if s < b and e > a and e > s]
    if not positions:
        raise BadRequest(f"subject {subject!r} maps to no token")
    return positions

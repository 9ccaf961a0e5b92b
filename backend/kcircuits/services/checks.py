"""Input checks every transport shares: prompt and token limits (settings-driven)."""

from __future__ import annotations

from kcircuits.config import Settings
from kcircuits.errors import BadRequest

#: Prompt-like fields checked by :func:`check_prompt`; the OpenAPI schema shows their limits.
PROMPT_FIELDS = ("prompt", "corrupt_prompt", "paraphrases", "locality_prompts")


def check_prompt(prompt: str, settings: Settings, field: str = "prompt") -> str:
    """Non-empty and within the character limit (tokens are checked after tokenisation)."""
    if not prompt or not prompt.strip():
        raise BadRequest(f"{field} is empty")
    if len(prompt) > settings.max_prompt_chars:
        raise BadRequest(f"{field} has {len(prompt)} characters; the limit is {settings.max_prompt_chars}")
    return prompt


def check_prompts(spec: object, settings: Settings) -> None:
    """:func:`check_prompt` on every :data:`PROMPT_FIELDS` field ``spec`` has (strings or lists of them)."""
    for field in PROMPT_FIELDS:
        value = getattr(spec, field, None)
        if isinstance(value, list | tuple):
            for i, text in enumerate(value):
                check_prompt(text, settings, f"{field}[{i}]")
        elif value is not None:
            check_prompt(value, settings, field)


def check_tokens(n_tokens: int, settings: Settings, field: str = "prompt") -> None:
    if n_tokens > settings.max_prompt_tokens:
        raise BadRequest(f"{field} has {n_tokens} tokens; the limit is {settings.max_prompt_tokens}")


def check_top_k(top_k: int, settings: Settings) -> int:
    if not 1 <= top_k <= settings.max_top_k:
        raise BadRequest(f"top_k must be between 1 and {settings.max_top_k}")
    return top_k


def n_edges(model_id: str, settings: Settings, kv_mode: str = "grouped") -> int:
    """Edge count of the model's computation graph (registry facts, no weights)."""
    from kcircuits.circuits.graph import get_graph
    from kcircuits.lm.registry import get_spec

    return get_graph(get_spec(model_id, settings).arch, kv_mode).n_edges

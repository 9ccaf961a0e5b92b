"""Request checks shared by routes: model/session resolution and prompt limits."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Request
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from kcircuits.config import Settings
from kcircuits.errors import BadRequest
from kcircuits.lm.registry import get_spec

#: Request bodies: unknown fields refused, no NaN/Infinity, and no lax coercion ("5" or true is
#: not an integer).
WIRE = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)
#: Fields checked by :func:`check_prompt`: the OpenAPI schema shows the configured limits for them.
PROMPT_FIELDS = ("prompt", "corrupt_prompt", "paraphrases", "locality_prompts")


def _integral(value: Any) -> Any:
    """JSON has one number type: 238.0 is the integer 238 (as JSON Schema's ``integer`` says);
    238.5, "5" and true stay what they are and strict validation refuses them."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


#: A wire integer: strict (no "5", no true), but an integral JSON number such as 3.0 is accepted.
Int = Annotated[int, BeforeValidator(_integral)]


def bounded_int(ge: int | None = None, le: int | None = None) -> Any:
    """:data:`Int` with its bounds inside, where the schema shows them as minimum/maximum (bounds
    given on an ``Int | None`` field or a list item would reach the schema as raw ``ge``/``le``)."""
    return Annotated[int, Field(ge=ge, le=le), BeforeValidator(_integral)]


def model_key(request: Request, model_id: str | None, session: str | None) -> str:
    """The worker key to run on: an edit session's copy, or a registry model id (validated)."""
    settings: Settings = request.app.state.settings
    if session:
        from kcircuits.editing.session import resolve_model_key

        return resolve_model_key(request.app.state, model_id, session)
    model_id = model_id or settings.default_model
    get_spec(model_id, settings)  # unknown ids -> 404 listing the known ids
    return model_id


def check_prompt(prompt: str, settings: Settings, field: str = "prompt") -> str:
    """Non-empty and within the character limit (tokens are checked after tokenisation)."""
    if not prompt or not prompt.strip():
        raise BadRequest(f"{field} is empty")
    if len(prompt) > settings.max_prompt_chars:
        raise BadRequest(f"{field} has {len(prompt)} characters; the limit is {settings.max_prompt_chars}")
    return prompt


def check_prompts(body: BaseModel, settings: Settings) -> None:
    """:func:`check_prompt` on every :data:`PROMPT_FIELDS` field ``body`` has (strings or lists of them)."""
    for field in PROMPT_FIELDS:
        value = getattr(body, field, None)
        if isinstance(value, list):
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

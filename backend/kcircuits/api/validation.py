"""Wire conventions of request bodies, and model/session resolution (prompt checks: services.checks)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Request
from pydantic import BeforeValidator, ConfigDict, Field

from kcircuits.config import Settings
from kcircuits.lm.registry import get_spec

#: Request bodies: unknown fields refused, no NaN/Infinity, and no lax coercion ("5" or true is
#: not an integer).
WIRE = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


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

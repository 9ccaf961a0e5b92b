"""Logit lens endpoint: parse -> :class:`LensSpec` -> :func:`services.capabilities.lens`."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from kcircuits.api.deps import StoreDep, WorkerDep
from kcircuits.api.errors import ERROR_RESPONSES
from kcircuits.api.validation import WIRE, Int, model_key
from kcircuits.api.wire import LensOut
from kcircuits.services import capabilities
from kcircuits.services.executor import WorkerExecutor
from kcircuits.services.specs import LensSpec

router = APIRouter(prefix="/api", tags=["lens"])


class LensIn(BaseModel):
    model_config = WIRE

    model: str | None = Field(None, max_length=200, description="registry id; default: the server's")
    prompt: str = Field(..., max_length=100_000)
    target: str | None = Field(None, min_length=1, max_length=200, description='answer text, e.g. " Paris" (first token scored)')
    subject: str | None = Field(None, max_length=500, description="subject span; auto-detected when null")
    top_k: Int = LensSpec.top_k
    ln_mode: Literal["recompute", "cached"] = LensSpec.ln_mode
    kl: bool = LensSpec.kl
    session: str | None = Field(None, max_length=100, description="edit session id")
    save: bool = Field(LensSpec.save, description="store the trace (content-addressed) and return its id; "
                                                  "the live lens leaves this off")


@router.post("/lens", responses=ERROR_RESPONSES, response_model=LensOut, response_model_exclude_unset=True)
def lens(body: LensIn, request: Request, worker: WorkerDep, store: StoreDep) -> dict:
    """Logit lens: top-k tokens per layer boundary (L+1 rows) and position, target curves.
    With ``save``, the trace is stored (kind ``lens``) and carries ``id`` and ``provenance``."""
    spec = capabilities.to_spec(LensSpec, body)
    spec.check(worker.settings)  # before resolving the model: a bad prompt is named first
    key = model_key(request, body.model, body.session)
    return capabilities.lens(spec, WorkerExecutor(worker, key), store)

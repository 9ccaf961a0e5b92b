"""Logit lens and per-node projection endpoints."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from kcircuits.api.deps import SettingsDep, StoreDep, WorkerDep
from kcircuits.api.errors import ERROR_RESPONSES
from kcircuits.api.storing import stored_or_computed
from kcircuits.api.validation import WIRE, Int, check_prompt, check_tokens, check_top_k, model_key
from kcircuits.config import Settings

router = APIRouter(prefix="/api", tags=["lens"])


class LensIn(BaseModel):
    model_config = WIRE

    model: str | None = Field(None, max_length=200, description="registry id; default: the server's")
    prompt: str = Field(..., max_length=100_000)
    target: str | None = Field(None, min_length=1, max_length=200, description='answer text, e.g. " Paris" (first token scored)')
    subject: str | None = Field(None, max_length=500, description="subject span; auto-detected when null")
    top_k: Int = 5
    ln_mode: Literal["recompute", "cached"] = "recompute"
    kl: bool = False
    session: str | None = Field(None, max_length=100, description="edit session id")
    save: bool = Field(False, description="store the trace (content-addressed) and return its id; "
                                          "the live lens leaves this off")


def compute_lens(model, body: LensIn, settings: Settings) -> dict:
    """Runs in the worker: tokenise, resolve subject/target, one lens pass -> wire dict."""
    from kcircuits.circuits.lens import LensRequest, logit_lens
    from kcircuits.circuits.subject import resolve_subject

    tokens = model.tokenize(body.prompt)
    check_tokens(tokens.shape[1], settings)
    subject, positions, auto = resolve_subject(model, body.prompt, body.subject)
    target_id = model.first_token_id(body.target) if body.target is not None else None
    lens = logit_lens(model, tokens, LensRequest(top_k=body.top_k, target_id=target_id,
                                                 subject_positions=tuple(positions), ln_mode=body.ln_mode,
                                                 kl=body.kl))
    if lens["target"] is not None:
        lens["target"] = {"text": body.target, "token": model.token_strings([target_id])[0], "id": target_id,
                          **lens["target"]}
    return {
        "model": model.spec.id, "revision": model.revision, "prompt": body.prompt,
        "tokens": model.token_strings(tokens[0]), "token_ids": tokens[0].tolist(),
        "n_layers": model.arch.n_layers, **lens,
        "subject": {"text": subject, "positions": positions, "auto": auto} if subject else None,
        "ln_mode": body.ln_mode, "session": body.session,
    }


@router.post("/lens", responses=ERROR_RESPONSES)
def lens(body: LensIn, request: Request, settings: SettingsDep, worker: WorkerDep, store: StoreDep) -> dict:
    """Logit lens: top-k tokens per layer boundary (L+1 rows) and position, target curves.
    With ``save``, the trace is stored (kind ``lens``) and carries ``id`` and ``provenance``."""
    check_prompt(body.prompt, settings)
    check_top_k(body.top_k, settings)
    key = model_key(request, body.model, body.session)
    compute = lambda: worker.run(key, lambda model: compute_lens(model, body, settings))  # noqa: E731
    if not body.save:
        return compute()
    request_dict = {**body.model_dump(exclude={"model", "save"}), "model": body.model or settings.default_model,
                    "method": "logit_lens"}
    return stored_or_computed(store, worker, key, "lens", request_dict, lambda: {"kind": "lens", **compute()})

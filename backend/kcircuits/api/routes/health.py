"""Liveness, readiness and service facts."""

from __future__ import annotations

from fastapi import APIRouter, Request

from kcircuits import __version__
from kcircuits.api.deps import SettingsDep, WorkerDep
from kcircuits.api.wire import HealthOut, InfoOut, ReadyOut
from kcircuits.errors import NotReady

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthOut)
def healthz() -> dict:
    """Alive (the process answers)."""
    return {"status": "ok"}


@router.get("/readyz", response_model=ReadyOut, responses={503: {"description": "default model not loaded yet"}})
def readyz(request: Request, settings: SettingsDep) -> dict:
    """Ready when the default model is loaded in the worker."""
    model_id = settings.default_model
    if model_id in request.app.state.load_errors:
        raise NotReady(f"default model {model_id!r} failed to load: {request.app.state.load_errors[model_id]}", 30)
    if model_id not in request.app.state.ready_models:
        raise NotReady(f"default model {model_id!r} is loading")
    return {"status": "ready", "model": model_id}


@router.get("/info", response_model=InfoOut)
def info(request: Request, settings: SettingsDep, worker: WorkerDep) -> dict:
    """Model, device, limits and version: what a client needs to shape requests."""
    import torch

    from kcircuits.lm.loader import resolve_device

    return {
        "version": __version__,
        "default_model": settings.default_model,
        "loaded_models": worker.loaded(),
        "ready_models": sorted(request.app.state.ready_models),
        "device": str(resolve_device(settings.device)),
        "cuda_available": torch.cuda.is_available(),
        "dtype": settings.dtype,
        "limits": {
            "max_prompt_chars": settings.max_prompt_chars,
            "max_prompt_tokens": settings.max_prompt_tokens,
            "max_top_k": settings.max_top_k,
            "max_body_bytes": settings.max_body_bytes,
            "queue_size": settings.queue_size,
        },
        "queue_depth": worker.queue_depth(),
    }

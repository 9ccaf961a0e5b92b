"""The model registry as seen by clients."""

from __future__ import annotations

from fastapi import APIRouter, Request

from kcircuits.api.deps import SettingsDep
from kcircuits.api.wire import ModelsOut
from kcircuits.lm.registry import all_specs

router = APIRouter(prefix="/api", tags=["models"])


@router.get("/models", response_model=ModelsOut)
def list_models(request: Request, settings: SettingsDep) -> dict:
    """Known model ids with architecture facts, and which are loaded."""
    ready = request.app.state.ready_models
    return {
        "default": settings.default_model,
        "models": [{**spec.to_dict(), "loaded": spec.id in ready} for spec in all_specs(settings).values()],
    }

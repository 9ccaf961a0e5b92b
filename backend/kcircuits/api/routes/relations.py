"""The LRE relations shipped with the package (for relation runs, started as ``relation`` jobs)."""

from __future__ import annotations

from fastapi import APIRouter

from kcircuits.api.errors import ERROR_RESPONSES
from kcircuits.api.wire import RelationListOut

router = APIRouter(prefix="/api", tags=["relations"])


@router.get("/relations", responses=ERROR_RESPONSES, response_model=RelationListOut)
def list_relations() -> dict:
    """Every relation: name, category, template, sample count and properties."""
    from kcircuits.circuits.relation import list_relations as relations

    return {"items": relations()}

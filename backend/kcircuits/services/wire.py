"""Typed wire models of results, shared by the services (which check results against them) and
the API (which declares them as ``response_model``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class HeadRoleOut(BaseModel):
    """One circuit head's role scores (``result.heads[head_id]``)."""

    role: Literal["mover", "relation", "mixture"] | None
    significant: bool
    significance: dict[Literal["dla", "attribution"], float | None]
    subject_attention: float
    relation_attention: float
    subject_dla_share: float
    relation_dla_share: float
    dla: float
    subject_dla: float
    relation_dla: float
    attribution: float | None
    target_rank: int
    subject_rank: int | None
    top_tokens: list[str]
    top_token_ids: list[int]
    suppressed_tokens: list[str]


class RolesOut(BaseModel):
    """How a result's head roles were decided (``result.roles``)."""

    thresholds: dict[str, float]
    significance: str
    mover: str
    relation: str
    mixture: str
    relation_positions: list[int]
    relation_tokens: list[str]
    counts: dict[str, int]


class TopTokenOut(BaseModel):
    """A circuit node's top lens token at the last position (``result.nodes[i].top_token``): its
    output read through the final norm and the unembedding; ``logit`` is that token's direct logit."""

    token: str
    id: int
    logit: float

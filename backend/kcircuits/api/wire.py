"""Typed response models of the routes whose shapes are fixed (jobs, edit sessions' handles,
graph sizes, health). Results themselves keep their science-built shapes (see services.wire)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel


class ErrorOut(BaseModel):
    type: str
    message: str


class JobOut(BaseModel):
    """A job's public state; ``result`` only on GET of a live job, ``result_id`` on a stored one."""

    id: str
    kind: str
    params: dict[str, Any]
    status: Literal["queued", "running", "cancelling", "succeeded", "failed", "cancelled", "interrupted"]
    progress: float
    message: str | None
    error: ErrorOut | None
    created_at: float
    finished_at: float | None
    result: Any = None
    result_id: str | None = None


class JobListOut(BaseModel):
    items: list[JobOut]


class EditCreatedOut(BaseModel):
    session_id: str
    job_id: str


class EditClosedOut(BaseModel):
    session_id: str
    closed: bool


class GraphStatsOut(BaseModel):
    """Node and edge counts of a model's computation graph."""

    model: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    kv_mode: str
    total_nodes: int
    total_edges: int
    n_senders: int
    n_receivers: int
    input_convention: str


class HealthOut(BaseModel):
    status: Literal["ok"]


class ReadyOut(BaseModel):
    status: Literal["ready"]
    model: str

"""Node details for the UI's node panel: a head's attention pattern, what its output promotes,
its role scores; an MLP's top tokens. By prompt (POST) or for a stored circuit (GET).
parse -> spec -> :mod:`kcircuits.services.capabilities`."""

from __future__ import annotations

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, Field

from kcircuits.api.deps import StoreDep, WorkerDep
from kcircuits.api.errors import ERROR_RESPONSES
from kcircuits.api.validation import WIRE, Int, model_key
from kcircuits.api.wire import NodeDetailOut, ProjectOut
from kcircuits.circuits.graph import ANY_NODE_PATTERN, NODE_PATTERN
from kcircuits.services import capabilities
from kcircuits.services.executor import WorkerExecutor
from kcircuits.services.specs import NodeDetailSpec, ProjectSpec

router = APIRouter(prefix="/api", tags=["nodes"])


class ProjectIn(BaseModel):
    model_config = WIRE

    model: str | None = Field(None, max_length=200)
    prompt: str = Field(..., max_length=100_000)
    node: str = Field(..., max_length=50, pattern=NODE_PATTERN)
    position: Int = ProjectSpec.position
    k: Int = ProjectSpec.k
    session: str | None = Field(None, max_length=100)


class DetailIn(BaseModel):
    model_config = WIRE

    model: str | None = Field(None, max_length=200)
    prompt: str = Field(..., max_length=100_000)
    node: str = Field(..., max_length=50, pattern=ANY_NODE_PATTERN)
    target: str | None = Field(None, min_length=1, max_length=200)
    subject: str | None = Field(None, max_length=500)
    k: Int = NodeDetailSpec.k
    session: str | None = Field(None, max_length=100)


@router.post("/nodes/project", responses=ERROR_RESPONSES, response_model=ProjectOut)
def project(body: ProjectIn, request: Request, worker: WorkerDep) -> dict:
    """Top tokens one head's or MLP's output promotes and suppresses at a position."""
    spec = capabilities.to_spec(ProjectSpec, body)
    spec.check(worker.settings)  # before resolving the model: a bad prompt is named first
    return capabilities.project(spec, WorkerExecutor(worker, model_key(request, body.model, body.session)))


@router.post("/nodes/detail", responses=ERROR_RESPONSES, response_model=NodeDetailOut)
def detail(body: DetailIn, request: Request, worker: WorkerDep) -> dict:
    """The node panel's content for a node of the circuit of ``prompt``."""
    spec = capabilities.to_spec(NodeDetailSpec, body)
    spec.check(worker.settings)
    return capabilities.node_detail(spec, WorkerExecutor(worker, model_key(request, body.model, body.session)))


@router.get("/circuits/{circuit_id}/nodes/{node}", responses=ERROR_RESPONSES, response_model=NodeDetailOut)
def stored_circuit_node(circuit_id: str, request: Request, worker: WorkerDep, store: StoreDep,
                        node: str = Path(..., max_length=50, pattern=ANY_NODE_PATTERN)) -> dict:
    """Node detail for a stored circuit (its model, prompt, target and subject)."""
    circuit = capabilities.stored_circuit(store, circuit_id)
    key = model_key(request, circuit["model"], (circuit.get("params") or {}).get("session"))
    return capabilities.stored_node_detail(circuit, node, WorkerExecutor(worker, key))

"""Node details for the UI's node panel: a head's attention pattern, what its output promotes,
its role scores; an MLP's top tokens. By prompt (POST) or for a stored circuit (GET)."""

from __future__ import annotations

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, Field

from kcircuits.api.deps import SettingsDep, StoreDep, WorkerDep
from kcircuits.api.errors import ERROR_RESPONSES
from kcircuits.api.validation import WIRE, Int, model_key
from kcircuits.api.wire import NodeDetailOut, ProjectOut
from kcircuits.config import Settings
from kcircuits.errors import NotFound
from kcircuits.services.checks import check_prompt, check_tokens, check_top_k
from kcircuits.store.ids import is_valid_id

router = APIRouter(prefix="/api", tags=["nodes"])
#: A node id in the canonical form results use (no leading zeros: "a0.h00" would not match the
#: keys of a head's scores): head "a<layer>.h<head>" or MLP "m<layer>".
NODE_ID = r"^(a(0|[1-9][0-9]{0,5})\.h(0|[1-9][0-9]{0,5})|m(0|[1-9][0-9]{0,5}))$"
#: The detail panel also shows the graph's two ends.
DETAIL_NODE_ID = NODE_ID[:-2] + "|input|logits)$"


class ProjectIn(BaseModel):
    model_config = WIRE

    model: str | None = Field(None, max_length=200)
    prompt: str = Field(..., max_length=100_000)
    node: str = Field(..., max_length=50, pattern=NODE_ID)
    position: Int = -1
    k: Int = 10
    session: str | None = Field(None, max_length=100)


class DetailIn(BaseModel):
    model_config = WIRE

    model: str | None = Field(None, max_length=200)
    prompt: str = Field(..., max_length=100_000)
    node: str = Field(..., max_length=50, pattern=DETAIL_NODE_ID)
    target: str | None = Field(None, min_length=1, max_length=200)
    subject: str | None = Field(None, max_length=500)
    k: Int = 10
    session: str | None = Field(None, max_length=100)


def node_detail(model, body: DetailIn, settings: Settings, population: list[str] | None = None,
                attribution: dict[str, float] | None = None, thresholds=None) -> dict:
    """Runs in the worker. Head: pattern [q][k], promoted/suppressed tokens, role scores (its
    significance judged among ``population``, default every head, with ``attribution``). MLP:
    promoted/suppressed tokens at the last position. input/logits: just the kind."""
    from kcircuits.circuits.heads import HeadRoleThresholds, head_detail, relation_positions
    from kcircuits.circuits.lens import parse_node, project_node
    from kcircuits.circuits.subject import resolve_subject

    if body.node in {"input", "logits"}:
        return {"node": body.node, "kind": body.node}
    kind, layer, head = parse_node(model, body.node)
    tokens = model.tokenize(body.prompt)
    check_tokens(tokens.shape[1], settings)
    if kind == "mlp":
        return project_node(model, tokens, body.node, -1, body.k)
    _, subject_pos, _ = resolve_subject(model, body.prompt, body.subject)
    target_id = model.first_token_id(body.target) if body.target else None
    detail = head_detail(model, tokens, body.node, subject_positions=subject_pos if target_id is not None else None,
                         target_id=target_id, k=body.k, population=population, attribution=attribution,
                         thresholds=thresholds or HeadRoleThresholds())
    scores = detail.get("role_scores") or {}
    return {
        "node": body.node, "kind": "head", "layer": layer, "head": head, "tokens": detail["tokens"],
        "pattern": detail["pattern"], "subject_positions": subject_pos,
        "relation_positions": relation_positions(model, tokens, subject_pos),
        "promoted": detail["promoted"], "suppressed": detail["suppressed"],
        "dla_by_source": detail.get("dla_by_source"), "role": scores.get("role"),
        "scores": {key: scores.get(key) for key in ("subject_attention", "relation_attention",
                                                    "subject_dla_share", "relation_dla_share", "dla",
                                                    "attribution", "target_rank", "subject_rank")},
        "significant": scores.get("significant"), "significance": scores.get("significance"),
    }


@router.post("/nodes/project", responses=ERROR_RESPONSES, response_model=ProjectOut)
def project(body: ProjectIn, request: Request, settings: SettingsDep, worker: WorkerDep) -> dict:
    """Top tokens one head's or MLP's output promotes and suppresses at a position."""
    from kcircuits.circuits.lens import project_node

    check_prompt(body.prompt, settings)
    check_top_k(body.k, settings)
    key = model_key(request, body.model, body.session)

    def run(model):
        tokens = model.tokenize(body.prompt)
        check_tokens(tokens.shape[1], settings)
        return project_node(model, tokens, body.node, body.position, body.k)

    return worker.run(key, run)


@router.post("/nodes/detail", responses=ERROR_RESPONSES, response_model=NodeDetailOut)
def detail(body: DetailIn, request: Request, settings: SettingsDep, worker: WorkerDep) -> dict:
    """The node panel's content for a node of the circuit of ``prompt``."""
    check_prompt(body.prompt, settings)
    check_top_k(body.k, settings)
    key = model_key(request, body.model, body.session)
    return worker.run(key, lambda model: node_detail(model, body, settings))


@router.get("/circuits/{circuit_id}/nodes/{node}", responses=ERROR_RESPONSES, response_model=NodeDetailOut)
def stored_circuit_node(circuit_id: str, request: Request, settings: SettingsDep,
                        worker: WorkerDep, store: StoreDep,
                        node: str = Path(..., max_length=50, pattern=DETAIL_NODE_ID)) -> dict:
    """Node detail for a stored circuit (its model, prompt, target and subject)."""
    if not is_valid_id(circuit_id):
        raise NotFound(f"no circuit with id {circuit_id[:80]!r}")
    circuit = store.get(circuit_id) if store is not None else None
    if circuit is None:
        raise NotFound(f"no circuit with id {circuit_id!r}")
    subject = (circuit.get("subject") or {}).get("text")
    heads = [n for n in circuit.get("nodes") or [] if n.get("kind") == "head"]
    population = [n["id"] for n in heads if n.get("in_circuit")] or None
    attribution = {n["id"]: float(n.get("score") or 0.0) for n in heads}
    stored = (circuit.get("roles") or {}).get("thresholds")
    thresholds = _thresholds(stored) if stored else None
    body = DetailIn(model=circuit["model"], prompt=circuit["prompt"], node=node, target=circuit.get("target"),
                    subject=subject, session=(circuit.get("params") or {}).get("session"))
    key = model_key(request, body.model, body.session)
    return worker.run(key, lambda model: node_detail(model, body, settings, population, attribution, thresholds))


def _thresholds(stored: dict):
    from kcircuits.circuits.heads import HeadRoleThresholds

    known = HeadRoleThresholds.__dataclass_fields__
    return HeadRoleThresholds(**{k: v for k, v in stored.items() if k in known})

"""Circuit discovery by gradient attribution (eap, eap-ig, clean-corrupted) or exact patching, and
graph sizes from registry facts. ACDC runs as a background job (not here)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from kcircuits.api.deps import SettingsDep, StoreDep, WorkerDep
from kcircuits.api.errors import ERROR_RESPONSES
from kcircuits.api.storing import stored_or_computed
from kcircuits.api.validation import WIRE, Int, bounded_int, check_prompt, check_tokens, model_key
from kcircuits.circuits.discover import REFINE_METHOD
from kcircuits.config import Settings
from kcircuits.errors import BadRequest

router = APIRouter(prefix="/api", tags=["circuits"])


class RoleThresholdsIn(BaseModel):
    """Thresholds of the head-role rules (see :mod:`kcircuits.circuits.heads`)."""

    model_config = WIRE

    significance_k: float = Field(3.0, ge=0, le=100, description="MADs above the median |score| of the circuit's heads")
    mover_attention: float = Field(0.3, ge=0, le=1, description="subject attention of a mover")
    relation_attention: float = Field(0.3, ge=0, le=1, description="attention to the relation's content tokens")
    write_top_k: Int = Field(10, ge=1, le=1000, description="a mover's target or subject token rank in its output")
    min_population: Int = Field(8, ge=3, le=10_000,
                                description="fewer circuit heads: significance among all the model's heads")

    def thresholds(self):
        from kcircuits.circuits.heads import HeadRoleThresholds

        return HeadRoleThresholds(**self.model_dump())


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


def with_roles(model: Any, result: dict, roles: RoleThresholdsIn | None = None) -> dict:
    """Runs in the worker: the circuit result's head roles with significance and the nodes' top
    lens tokens (in place), checked against the wire models."""
    from kcircuits.circuits.heads import annotate_circuit_roles

    annotate_circuit_roles(model, result, (roles or RoleThresholdsIn()).thresholds())
    for node in result["nodes"]:
        top = node.get("top_token")
        node["top_token"] = None if top is None else TopTokenOut.model_validate(top).model_dump()
    result["heads"] = {hid: HeadRoleOut.model_validate(info).model_dump() for hid, info in result["heads"].items()}
    result["roles"] = RolesOut.model_validate(result["roles"]).model_dump()
    return result


class CircuitIn(BaseModel):
    """One circuit request. Selection: ``top_n`` or ``threshold`` (default: top 1% of the edges)."""

    # The schema says what _selection refuses: not both top_n and threshold, and a threshold only
    # with a method other than eap-ig-refine (the default when method is absent).
    model_config = ConfigDict(**WIRE, json_schema_extra={"allOf": [
        {"not": {"required": ["top_n", "threshold"],
                 "properties": {"top_n": {"type": "integer"}, "threshold": {"type": "number"}}}},
        {"anyOf": [{"not": {"required": ["threshold"], "properties": {"threshold": {"type": "number"}}}},
                   {"required": ["method"], "properties": {"method": {"not": {"const": REFINE_METHOD}}}}]}]})

    model: str | None = Field(None, max_length=200, description="registry id; default: the server's")
    prompt: str = Field(..., max_length=100_000)
    target: str = Field(..., min_length=1, max_length=200, description='answer text, e.g. " Paris" (first token)')
    method: Literal["eap-ig-refine", "eap-ig", "eap", "eap-ig-mask", "clean-corrupted", "exact"] = Field(
        REFINE_METHOD,
                        description="eap-ig-refine (default: re-attributed and calibrated) | eap-ig | eap | "
                                    "eap-ig-mask | clean-corrupted | exact (acdc: a job)")
    ablation: Literal["patch", "zero", "mean"] = "patch"
    metric: Literal["logit_diff", "logprob", "prob", "match_nll", "kl"] | None = Field(
        None, description="default: logit_diff under patching, match_nll under zero or mean ablation")
    corrupt_prompt: str | None = Field(None, max_length=100_000,
                                       description="patching input; when null, counterfactuals of the prompt's own "
                                                   "relation and template with another known answer as the foil")
    counterfactuals: Int = Field(1, ge=1, le=8, description="automatic counterfactuals averaged (a batch)")
    subject: str | None = Field(None, max_length=500, description="subject span; auto-detected when null")
    foil: str | None = Field(None, min_length=1, max_length=200, description="logit_diff foil; default: the corrupted answer")
    top_n: bounded_int(ge=0) | None = None
    threshold: float | None = Field(None, ge=0)
    greedy: bool = False
    ig_steps: Int = Field(5, ge=1, le=64)
    kv_mode: Literal["grouped", "ungrouped"] = "grouped"
    max_edges_returned: Int = Field(3000, ge=0, le=20_000)
    random_seeds: Int = Field(3, ge=0, le=10)
    with_heads: bool = True
    roles: RoleThresholdsIn = Field(default_factory=RoleThresholdsIn, description="head-role thresholds")
    session: str | None = Field(None, max_length=100, description="edit session id")

    @model_validator(mode="before")
    @classmethod
    def _acdc_is_a_job(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("method") == "acdc":
            raise ValueError("acdc runs one forward per edge: start it as a job (POST /api/jobs, kind 'acdc')")
        return data

    @model_validator(mode="after")
    def _selection(self) -> CircuitIn:
        if self.top_n is not None and self.threshold is not None:
            raise ValueError("give top_n or threshold, not both")
        if self.threshold is not None and self.method == REFINE_METHOD:
            raise ValueError(f"threshold selects by one pass's scores: use top_n with {REFINE_METHOD}, "
                             "or another method")
        return self


def _graph_for(model_id: str, settings: Settings, kv_mode: str = "grouped"):
    from kcircuits.circuits.graph import get_graph
    from kcircuits.lm.registry import get_spec

    return get_graph(get_spec(model_id, settings).arch, kv_mode)


def _check(body: CircuitIn, settings: Settings, model_id: str) -> None:
    """Cheap checks before any model work (registry facts only)."""
    from kcircuits.circuits.attribution import EXACT_MAX_EDGES
    check_prompt(body.prompt, settings)
    if body.corrupt_prompt is not None:
        check_prompt(body.corrupt_prompt, settings, "corrupt_prompt")
    graph = _graph_for(model_id, settings, body.kv_mode)
    if body.top_n is not None and body.top_n > graph.n_edges:
        raise BadRequest(f"top_n is {body.top_n}; the graph has {graph.n_edges} edges")
    if body.method == "exact" and graph.n_edges > EXACT_MAX_EDGES:
        raise BadRequest(f"exact patching runs one forward per edge: {graph.n_edges} edges exceed the limit of "
                         f"{EXACT_MAX_EDGES}; use eap-ig (or an acdc job)")


def run_circuit(model: Any, body: CircuitIn, settings: Settings) -> dict:
    """Runs in the worker: token limits, then :func:`compute_circuit`."""
    from kcircuits.circuits.discover import compute_circuit

    check_tokens(model.tokenize(body.prompt).shape[1], settings)
    args = body.model_dump(exclude={"model", "session", "roles"})
    result = compute_circuit(model, **args)
    if body.with_heads:
        with_roles(model, result, body.roles)
    result["session"] = body.session
    return result


@router.post("/circuits", responses=ERROR_RESPONSES)
def circuits(body: CircuitIn, request: Request, settings: SettingsDep, worker: WorkerDep, store: StoreDep) -> dict:
    """Discover a circuit for ``prompt`` -> ``target``: nodes, scored edges, faithfulness, Hit@10."""
    key = model_key(request, body.model, body.session)
    model_id = body.model or settings.default_model
    _check(body, settings, model_id)
    request_dict = {"model": model_id, **body.model_dump(exclude={"model"})}
    return stored_or_computed(store, worker, key, "circuit", request_dict,
                              lambda: worker.run(key, lambda model: run_circuit(model, body, settings)))


@router.get("/circuits/graph-stats", responses=ERROR_RESPONSES)
def graph_stats(settings: SettingsDep, model: str | None = Query(None, max_length=200),
                kv_mode: Literal["grouped", "ungrouped"] = "grouped") -> dict:
    """Node and edge counts of a model's computation graph (registry facts; no weights loaded)."""
    model_id = model or settings.default_model
    graph = _graph_for(model_id, settings, kv_mode)
    return {"model": model_id, **graph.stats()}

"""Circuit discovery by gradient attribution (eap, eap-ig, clean-corrupted) or exact patching, and
graph sizes from registry facts. ACDC runs as a background job (not here)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from kcircuits.api.deps import SettingsDep, StoreDep, WorkerDep
from kcircuits.api.errors import ERROR_RESPONSES
from kcircuits.api.validation import WIRE, Int, bounded_int, model_key
from kcircuits.api.wire import CircuitOut, GraphStatsOut
from kcircuits.circuits.discover import REFINE_METHOD
from kcircuits.config import Settings
from kcircuits.services import capabilities
from kcircuits.services.capabilities import run_circuit  # the model step (tests slow it down)
from kcircuits.services.executor import WorkerExecutor
from kcircuits.services.specs import (
    CIRCUIT_METHODS,
    COUNTERFACTUALS_MAX,
    IG_STEPS_MAX,
    RANDOM_SEEDS_MAX,
    CircuitSpec,
    selection_error,
)

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
    method: Literal[CIRCUIT_METHODS] = Field(
        CircuitSpec.method,
                        description="eap-ig-refine (default: re-attributed and calibrated) | eap-ig | eap | "
                                    "eap-ig-mask | clean-corrupted | exact (acdc: a job)")
    ablation: Literal["patch", "zero", "mean"] = CircuitSpec.ablation
    metric: Literal["logit_diff", "logprob", "prob", "match_nll", "kl"] | None = Field(
        None, description="default: logit_diff under patching, match_nll under zero or mean ablation")
    corrupt_prompt: str | None = Field(None, max_length=100_000,
                                       description="patching input; when null, counterfactuals of the prompt's own "
                                                   "relation and template with another known answer as the foil")
    counterfactuals: Int = Field(CircuitSpec.counterfactuals, ge=1, le=COUNTERFACTUALS_MAX, description="automatic counterfactuals averaged (a batch)")
    subject: str | None = Field(None, max_length=500, description="subject span; auto-detected when null")
    foil: str | None = Field(None, min_length=1, max_length=200, description="logit_diff foil; default: the corrupted answer")
    top_n: bounded_int(ge=0) | None = None
    threshold: float | None = Field(None, ge=0)
    greedy: bool = False
    ig_steps: Int = Field(CircuitSpec.ig_steps, ge=1, le=IG_STEPS_MAX)
    kv_mode: Literal["grouped", "ungrouped"] = "grouped"
    max_edges_returned: Int = Field(CircuitSpec.max_edges_returned, ge=0, le=20_000)
    random_seeds: Int = Field(CircuitSpec.random_seeds, ge=0, le=RANDOM_SEEDS_MAX)
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
        if (error := selection_error(self.top_n, self.threshold, self.method)) is not None:
            raise ValueError(error)
        return self


def _graph_for(model_id: str, settings: Settings, kv_mode: str = "grouped"):
    from kcircuits.circuits.graph import get_graph
    from kcircuits.lm.registry import get_spec

    return get_graph(get_spec(model_id, settings).arch, kv_mode)


@router.post("/circuits", responses=ERROR_RESPONSES, response_model=CircuitOut, response_model_exclude_unset=True)
def circuits(body: CircuitIn, request: Request, worker: WorkerDep, store: StoreDep) -> dict:
    """Discover a circuit for ``prompt`` -> ``target``: nodes, scored edges, faithfulness, Hit@10."""
    key = model_key(request, body.model, body.session)
    return capabilities.circuit(capabilities.to_spec(CircuitSpec, body), WorkerExecutor(worker, key), store,
                                run=lambda model, spec, settings, _: run_circuit(model, spec, settings))


@router.get("/circuits/graph-stats", responses=ERROR_RESPONSES, response_model=GraphStatsOut)
def graph_stats(settings: SettingsDep, model: str | None = Query(None, max_length=200),
                kv_mode: Literal["grouped", "ungrouped"] = "grouped") -> dict:
    """Node and edge counts of a model's computation graph (registry facts; no weights loaded)."""
    model_id = model or settings.default_model
    graph = _graph_for(model_id, settings, kv_mode)
    return {"model": model_id, **graph.stats()}

"""Slow work as jobs: POST /api/jobs (202 + id), GET status, SSE events, DELETE cancels.

Kinds: ``acdc`` (exact ACDC as the paper ran it), ``relation`` (LRE relation run, Table 1 row),
``sweep`` (circuit size vs faithfulness and Hit@10), ``neurons`` (knowledge neurons of a fact),
``neurons-compare`` (KN localisation on facts vs syntax; see routes/neurons.py), ``mask-train``
(a parameter mask of a task, resumable) and ``mask-edit`` (four-way circuit-aware editing; see
routes/masks.py). Each kind has a pydantic params model; the
body runs its model work through the worker at background priority.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal, Union

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, create_model

from kcircuits.api.deps import JobsDep, StoreDep
from kcircuits.api.errors import ERROR_RESPONSES
from kcircuits.api.routes.masks import MaskEditIn, MaskTrainIn
from kcircuits.api.routes.neurons import CompareIn, NeuronsIn
from kcircuits.api.validation import WIRE, Int, bounded_int, model_key
from kcircuits.api.wire import JobEventOut, JobListOut, JobOut, inline_schema
from kcircuits.circuits.discover import DEFAULT_SWEEP_SIZES
from kcircuits.errors import NotFound, shown
from kcircuits.jobs import JobContext
from kcircuits.services import capabilities
from kcircuits.services.checks import check_prompts
from kcircuits.services.executor import WorkerExecutor
from kcircuits.services.specs import (
    COUNTERFACTUALS_MAX,
    IG_STEPS_MAX,
    MAX_ACDC_EDGES,
    RANDOM_SEEDS_MAX,
    RELATION_METHODS,
    RELATION_N_MAX,
    RELATION_N_MIN,
    SWEEP_METHODS,
    AcdcSpec,
    MaskEditSpec,
    MaskTrainSpec,
    NeuronsCompareSpec,
    NeuronsSpec,
    RelationSpec,
    SweepSpec,
)

router = APIRouter(prefix="/api/jobs", tags=["jobs"])


class AcdcParams(BaseModel):
    model_config = WIRE

    model: str | None = Field(None, max_length=200)
    prompt: str = Field(..., max_length=100_000)
    target: str = Field(..., min_length=1, max_length=200)
    subject: str | None = Field(None, max_length=500)
    tau: float = AcdcSpec.tau
    ablation: Literal["zero", "patch", "mean"] = AcdcSpec.ablation
    metric: Literal["match_nll", "logit_diff", "logprob", "kl"] = AcdcSpec.metric
    corrupt_prompt: str | None = Field(None, max_length=100_000)
    kv_mode: Literal["grouped", "ungrouped"] = "grouped"
    session: str | None = Field(None, max_length=100)
    max_edges: Int = Field(AcdcSpec.max_edges, ge=1, le=MAX_ACDC_EDGES,
                           description="refuse graphs larger than this (one forward per edge)")
    counterfactuals: Int = Field(AcdcSpec.counterfactuals, ge=1, le=COUNTERFACTUALS_MAX,
                                 description="automatic counterfactuals averaged (patching without corrupt_prompt)")
    random_seeds: Int = Field(AcdcSpec.random_seeds, ge=0, le=RANDOM_SEEDS_MAX,
                              description="random circuits of the same size (the random baseline)")


class RelationParams(BaseModel):
    model_config = WIRE

    model: str | None = Field(None, max_length=200)
    relation: str = Field(..., max_length=200)
    n: Int = Field(RelationSpec.n, ge=RELATION_N_MIN, le=RELATION_N_MAX)
    method: Literal[RELATION_METHODS] = RelationSpec.method
    ablation: Literal["patch", "zero", "mean"] = RelationSpec.ablation
    top_n: bounded_int(ge=1) | None = Field(None, description="circuit size in edges (default 1% of the graph)")
    k: Int = Field(RelationSpec.k, ge=1, le=1_000_000, description="Hit@k")
    known_k: bounded_int(ge=1, le=1_000_000) | None = Field(None,
                                description="a fact is known when its answer ranks in the top known_k (default k)")
    session: str | None = Field(None, max_length=100)


class SweepParams(BaseModel):
    model_config = WIRE

    model: str | None = Field(None, max_length=200)
    prompt: str = Field(..., max_length=100_000)
    target: str = Field(..., min_length=1, max_length=200)
    subject: str | None = Field(None, max_length=500)
    method: Literal[SWEEP_METHODS] = SweepSpec.method
    ablation: Literal["zero", "patch", "mean"] = SweepSpec.ablation
    metric: Literal["logit_diff", "logprob", "prob", "match_nll", "kl"] | None = None
    corrupt_prompt: str | None = Field(None, max_length=100_000)
    sizes: list[bounded_int(ge=0)] | None = Field(
        None, min_length=1, max_length=50,
        description=f"edge counts; default {list(DEFAULT_SWEEP_SIZES)}, those above the graph's edge count dropped")
    ig_steps: Int = Field(SweepSpec.ig_steps, ge=1, le=IG_STEPS_MAX)
    kv_mode: Literal["grouped", "ungrouped"] = "grouped"
    session: str | None = Field(None, max_length=100)


def _job_in(kind: str, params: type[BaseModel]) -> type[BaseModel]:
    """The POST body of one job kind: ``{"kind": kind, "params": params}``."""
    return create_model(f"{''.join(p.title() for p in kind.split('-'))}JobIn", __config__=WIRE,
                        kind=(Literal[kind], ...), params=(params, ...))


@dataclass(frozen=True)
class JobKind:
    """A job kind: its wire params, its spec and the service that runs it; ``model_of(spec, store)``
    names the model when the params leave it out and the default is not the server's (a mask edit
    runs on its mask's model)."""

    params: type[BaseModel]
    spec: type
    service: Callable[[Any, Any, Any], dict]  # (spec, executor, store) -> result
    model_of: Callable[[Any, Any], str] | None = None


KINDS: dict[str, JobKind] = {
    "acdc": JobKind(AcdcParams, AcdcSpec, capabilities.acdc),
    "relation": JobKind(RelationParams, RelationSpec, capabilities.relation),
    "sweep": JobKind(SweepParams, SweepSpec, capabilities.sweep),
    "neurons": JobKind(NeuronsIn, NeuronsSpec, capabilities.neurons),
    "neurons-compare": JobKind(CompareIn, NeuronsCompareSpec, capabilities.neurons_compare),
    "mask-train": JobKind(MaskTrainIn, MaskTrainSpec, capabilities.mask_train),
    "mask-edit": JobKind(MaskEditIn, MaskEditSpec, capabilities.mask_edit,
                         model_of=lambda spec, store: capabilities.mask_model(store, spec.mask_id)),
}
#: POST /api/jobs: ``kind`` picks the params model (documented per kind in the schema).
JobIn = Annotated[Union[tuple(_job_in(name, kind.params) for name, kind in KINDS.items())],  # noqa: UP007
                  Field(discriminator="kind")]


def job_body(kind: JobKind, spec: Any, worker: Any, key: str, store: Any) -> Callable[[JobContext], dict]:
    """The job: ``kind``'s service on ``spec`` with the job's context (progress, cancel), on the
    worker at background priority, behind the store."""
    return lambda ctx: kind.service(spec, WorkerExecutor(worker, key, ctx), store)


@router.post("", status_code=202, responses=ERROR_RESPONSES, response_model=JobOut, response_model_exclude_unset=True)
def create_job(body: JobIn, request: Request, jobs: JobsDep, store: StoreDep) -> dict:
    """Start a slow computation; poll GET /api/jobs/{id} or stream /events."""
    kind, params = KINDS[body.kind], body.params
    worker = request.app.state.worker
    spec = capabilities.to_spec(kind.spec, params)
    if kind.model_of is not None and spec.model is None:
        spec = replace(spec, model=kind.model_of(spec, store))
    check_prompts(spec, worker.settings)
    key = model_key(request, spec.model, getattr(params, "session", None))
    spec.check(worker.settings)  # up front: a bad request now, not a failed job later
    job = jobs.create(body.kind, job_body(kind, spec, worker, key, store), params=params.model_dump())
    return job.public(with_result=False)


@router.get("", responses=ERROR_RESPONSES, response_model=JobListOut, response_model_exclude_unset=True)
def list_jobs(jobs: JobsDep) -> dict:
    return {"items": [job.public(with_result=False) for job in jobs.list()]}


@router.get("/{job_id}", responses=ERROR_RESPONSES, response_model=JobOut, response_model_exclude_unset=True)
def get_job(job_id: str, jobs: JobsDep, store: StoreDep) -> dict:
    """Status, progress and (when succeeded) the result; jobs from before a restart come from
    the store (status as last recorded; one cut off by the restart is ``interrupted``)."""
    try:
        return jobs.get(job_id).public()
    except NotFound:
        return _stored_job(job_id, store)


def _stored_job(job_id: str, store: Any) -> dict:
    """A job of an earlier process, from the store (NotFound when unknown)."""
    stored = store.get_job(job_id) if store is not None and len(job_id) <= 64 else None
    if stored is None:
        raise NotFound(f"no job with id {shown(job_id)}")
    return stored


@router.delete("/{job_id}", responses=ERROR_RESPONSES, response_model=JobOut, response_model_exclude_unset=True)
def cancel_job(job_id: str, jobs: JobsDep, store: StoreDep) -> dict:
    """Cancel: the job stops at its next step (cooperative). A job of an earlier process is
    already over (interrupted or finished): its record is returned as it is."""
    try:
        return jobs.cancel(job_id).public(with_result=False)
    except NotFound:
        return _stored_job(job_id, store)


async def _sse(events: AsyncIterator[dict | None]) -> AsyncIterator[str]:
    async for event in events:
        if event is None:
            yield ": ping\n\n"
            continue
        data = {k: v for k, v in event.items() if k != "event"}
        yield f"event: {event['event']}\ndata: {json.dumps(data)}\n\n"


#: Each event of the stream, described inline (a ``model`` here would be filed under application/json).
EVENT_SCHEMA = inline_schema(JobEventOut)


@router.get("/{job_id}/events", response_class=StreamingResponse, responses={**ERROR_RESPONSES, 200: {
    "description": "server-sent events", "content": {"text/event-stream": {"schema": EVENT_SCHEMA}}}})
async def job_events(job_id: str, jobs: JobsDep) -> StreamingResponse:
    """Server-sent events: queued, running, progress (done/total), then a terminal event.
    Served on the event loop: an open stream holds no thread."""
    jobs.get(job_id)  # 404 before the stream starts (aevents() is lazy)
    events = jobs.aevents(job_id)
    return StreamingResponse(_sse(events), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

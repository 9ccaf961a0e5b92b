"""Slow work as jobs: POST /api/jobs (202 + id), GET status, SSE events, DELETE cancels.

Kinds: ``acdc`` (exact ACDC as the paper ran it), ``relation`` (LRE relation run, Table 1 row),
``sweep`` (circuit size vs faithfulness and Hit@10), ``neurons`` (knowledge neurons of a fact) and
``neurons-compare`` (KN localisation on facts vs syntax; see routes/neurons.py). Each kind has a pydantic params model; the
body runs its model work through the worker at background priority.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from kcircuits.api.deps import JobsDep, StoreDep
from kcircuits.api.errors import ERROR_RESPONSES
from kcircuits.api.routes.neurons import CompareIn, NeuronsIn, check_compare, check_neurons
from kcircuits.api.storing import stored_or_computed
from kcircuits.api.validation import WIRE, Int, bounded_int, check_prompts, model_key
from kcircuits.circuits.discover import DEFAULT_SWEEP_SIZES
from kcircuits.errors import BadRequest, NotFound, shown
from kcircuits.jobs import JobContext
from kcircuits.lm.worker import BACKGROUND

router = APIRouter(prefix="/api/jobs", tags=["jobs"])
#: The largest ``max_edges`` an ACDC request may name (above every supported model's graph).
MAX_ACDC_EDGES = 10_000_000


class AcdcParams(BaseModel):
    model_config = WIRE

    model: str | None = Field(None, max_length=200)
    prompt: str = Field(..., max_length=100_000)
    target: str = Field(..., min_length=1, max_length=200)
    subject: str | None = Field(None, max_length=500)
    tau: float = 0.01
    ablation: Literal["zero", "patch", "mean"] = "zero"
    metric: Literal["match_nll", "logit_diff", "logprob", "kl"] = "match_nll"
    corrupt_prompt: str | None = Field(None, max_length=100_000)
    kv_mode: Literal["grouped", "ungrouped"] = "grouped"
    session: str | None = Field(None, max_length=100)
    max_edges: Int = Field(20_000, ge=1, le=MAX_ACDC_EDGES,
                           description="refuse graphs larger than this (one forward per edge)")


class RelationParams(BaseModel):
    model_config = WIRE

    model: str | None = Field(None, max_length=200)
    relation: str = Field(..., max_length=200)
    n: Int = Field(10, ge=2, le=500)
    method: Literal["eap-ig-refine", "eap-ig", "eap"] = "eap-ig-refine"
    ablation: Literal["patch", "zero", "mean"] = "patch"
    top_n: bounded_int(ge=1) | None = Field(None, description="circuit size in edges (default 1% of the graph)")
    k: Int = Field(10, ge=1, le=1_000_000, description="Hit@k")
    known_k: bounded_int(ge=1, le=1_000_000) | None = Field(None,
                                description="a fact is known when its answer ranks in the top known_k (default k)")
    session: str | None = Field(None, max_length=100)


class SweepParams(BaseModel):
    model_config = WIRE

    model: str | None = Field(None, max_length=200)
    prompt: str = Field(..., max_length=100_000)
    target: str = Field(..., min_length=1, max_length=200)
    subject: str | None = Field(None, max_length=500)
    method: Literal["eap-ig-refine", "eap-ig", "eap"] = "eap-ig-refine"
    ablation: Literal["zero", "patch", "mean"] = "patch"
    metric: Literal["logit_diff", "logprob", "prob", "match_nll", "kl"] | None = None
    corrupt_prompt: str | None = Field(None, max_length=100_000)
    sizes: list[bounded_int(ge=0)] | None = Field(
        None, min_length=1, max_length=50,
        description=f"edge counts; default {list(DEFAULT_SWEEP_SIZES)}, those above the graph's edge count dropped")
    ig_steps: Int = Field(5, ge=1, le=64)
    kv_mode: Literal["grouped", "ungrouped"] = "grouped"
    session: str | None = Field(None, max_length=100)


class AcdcJobIn(BaseModel):
    model_config = WIRE

    kind: Literal["acdc"]
    params: AcdcParams


class RelationJobIn(BaseModel):
    model_config = WIRE

    kind: Literal["relation"]
    params: RelationParams


class SweepJobIn(BaseModel):
    model_config = WIRE

    kind: Literal["sweep"]
    params: SweepParams


class NeuronsJobIn(BaseModel):
    model_config = WIRE

    kind: Literal["neurons"]
    params: NeuronsIn


class NeuronsCompareJobIn(BaseModel):
    model_config = WIRE

    kind: Literal["neurons-compare"]
    params: CompareIn


#: POST /api/jobs: ``kind`` picks the params model (documented per kind in the schema).
JobIn = Annotated[AcdcJobIn | RelationJobIn | SweepJobIn | NeuronsJobIn | NeuronsCompareJobIn,
                  Field(discriminator="kind")]
Body = Callable[[JobContext], Any]


@dataclass(frozen=True)
class JobKind:
    params: type[BaseModel]
    build: Callable[[Request, Any, str], Body]  # (request, params, worker key) -> job body
    stored_as: str  # the store's result kind (content-addressed, so the same request is not recomputed)
    method: str | None = None  # recorded in the id input when the params do not name one
    not_in_id: tuple[str, ...] = ()  # params that do not change the result
    check: Callable[[Any, Any], None] | None = None  # (params, settings) -> None; raises BadRequest up front


def _stored(request: Request, store: Any, kind: JobKind, params: BaseModel, key: str, body: Body) -> Body:
    """``body`` behind the result store: a request seen before returns its stored result (with
    ``id``, ``provenance``, ``cached``); a new one is computed, then stored. Cancelled or failed
    runs store nothing."""
    worker = request.app.state.worker
    settings = request.app.state.settings
    request_dict = {**params.model_dump(exclude={"model", *kind.not_in_id}),
                    "model": params.model or settings.default_model}
    if kind.method and "method" not in request_dict:
        request_dict["method"] = kind.method
    return lambda ctx: stored_or_computed(store, worker, key, kind.stored_as, request_dict, lambda: body(ctx),
                                          priority=BACKGROUND)


class _Steps:
    """A job's callbacks inside its worker task, called between batches: each one checks the
    cancel flag and lets queued interactive requests run first (the job holds no hooks then)."""

    def __init__(self, ctx: JobContext, worker: Any):
        self.ctx, self.worker = ctx, worker

    def cancel(self) -> None:
        self.worker.yield_to_interactive()
        self.ctx.check_cancel()

    def progress(self, done: int, total: int, message: str = "") -> None:
        self.cancel()
        self.ctx.progress(done / total if total else 0.0, message, done=done, total=total)


def _on_worker(request: Request, key: str, compute: Callable[[Any, _Steps], dict]) -> Body:
    """A job body that runs ``compute(model, steps)`` on the model's worker at background priority."""
    worker = request.app.state.worker

    def body(ctx: JobContext) -> dict:
        steps = _Steps(ctx, worker)
        return worker.run(key, lambda model: compute(model, steps), priority=BACKGROUND, timeout=24 * 3600)
    return body


def _acdc_body(request: Request, params: AcdcParams, key: str) -> Body:
    from kcircuits.api.routes.circuits import with_roles
    from kcircuits.circuits.acdc import acdc_circuit

    return _on_worker(request, key, lambda model, steps: with_roles(model, acdc_circuit(
        model, params.prompt, params.target, tau=params.tau, ablation=params.ablation,
        metric=params.metric, corrupt_prompt=params.corrupt_prompt, subject=params.subject,
        kv_mode=params.kv_mode, progress=steps.progress, cancel=steps.cancel)))


def _relation_body(request: Request, params: RelationParams, key: str) -> Body:
    from kcircuits.circuits.relation import run_relation

    return _on_worker(request, key, lambda model, steps: run_relation(
        model, params.relation, n=params.n, method=params.method, top_n=params.top_n, ablation=params.ablation,
        k=params.k, known_k=params.known_k, progress=steps.progress, cancel=steps.cancel))


def _sweep_body(request: Request, params: SweepParams, key: str) -> Body:
    from kcircuits.circuits.discover import sweep_circuit

    return _on_worker(request, key, lambda model, steps: sweep_circuit(
        model, params.prompt, params.target, method=params.method, ablation=params.ablation, metric=params.metric,
        corrupt_prompt=params.corrupt_prompt, subject=params.subject,
        sizes=params.sizes or _default_sizes(model.arch, params.kv_mode),
        ig_steps=params.ig_steps, kv_mode=params.kv_mode, progress=steps.progress))


def _n_edges(params: BaseModel, settings, kv_mode: str = "grouped") -> int:
    """Edge count of the computation graph of the params' model (registry facts, no weights)."""
    from kcircuits.circuits.graph import get_graph
    from kcircuits.lm.registry import get_spec

    return get_graph(get_spec(params.model or settings.default_model, settings).arch, kv_mode=kv_mode).n_edges


def _neurons_body(request: Request, params: NeuronsIn, key: str) -> Body:
    from kcircuits.api.routes.neurons import run_neurons

    settings = request.app.state.settings
    return _on_worker(request, key, lambda model, steps: run_neurons(model, params, settings, progress=steps.progress))


def _compare_body(request: Request, params: CompareIn, key: str) -> Body:
    from kcircuits.api.routes.neurons import run_compare

    return _on_worker(request, key, lambda model, steps: run_compare(model, params, progress=steps.progress,
                                                                     cancel=steps.cancel))


def _check_relation(params: RelationParams, settings) -> None:
    """An unknown relation or a circuit larger than the graph is a bad request now, not a
    failed job later."""
    from kcircuits.circuits.relation import load_relation

    try:
        load_relation(params.relation)
    except NotFound as exc:
        raise BadRequest(f"params.relation: {exc.message}") from None
    if params.top_n is not None and params.top_n > (n_edges := _n_edges(params, settings)):
        raise BadRequest(f"params.top_n is {params.top_n}; the graph has {n_edges} edges")


def _default_sizes(arch, kv_mode: str) -> list[int]:
    """The default sweep sizes that fit the graph, and the whole graph."""
    from kcircuits.circuits.graph import get_graph

    n_edges = get_graph(arch, kv_mode).n_edges
    return sorted({n for n in DEFAULT_SWEEP_SIZES if n < n_edges} | {n_edges})


def _check_sweep(params: SweepParams, settings) -> None:
    """Every circuit size asked for lies within the graph."""
    n_edges = _n_edges(params, settings, params.kv_mode)
    if params.sizes is not None and max(params.sizes) > n_edges:
        raise BadRequest(f"params.sizes: {max(params.sizes)} is above the graph's {n_edges} edges")


def _check_acdc_size(params: AcdcParams, settings) -> None:
    """ACDC costs one forward per evaluated edge: refuse graphs above ``max_edges`` up front."""
    n_edges = _n_edges(params, settings, params.kv_mode)
    if n_edges > params.max_edges:
        raise BadRequest(f"ACDC on this model evaluates up to {n_edges} edges, above max_edges={params.max_edges}; "
                         "raise max_edges to run it anyway, or use EAP / EAP-IG")


KINDS: dict[str, JobKind] = {
    "acdc": JobKind(AcdcParams, _acdc_body, "circuit", method="acdc", not_in_id=("max_edges",),
                    check=_check_acdc_size),
    "relation": JobKind(RelationParams, _relation_body, "relation", check=_check_relation),
    "sweep": JobKind(SweepParams, _sweep_body, "sweep", check=_check_sweep),
    "neurons": JobKind(NeuronsIn, _neurons_body, "neurons", method="ig", check=check_neurons),
    "neurons-compare": JobKind(CompareIn, _compare_body, "neurons_compare", method="ig", check=check_compare),
}


@router.post("", status_code=202, responses=ERROR_RESPONSES)
def create_job(body: JobIn, request: Request, jobs: JobsDep, store: StoreDep) -> dict:
    """Start a slow computation; poll GET /api/jobs/{id} or stream /events."""
    kind, params = KINDS[body.kind], body.params
    settings = request.app.state.settings
    check_prompts(params, settings)
    key = model_key(request, params.model, params.session)
    if kind.check is not None:
        kind.check(params, settings)
    run = _stored(request, store, kind, params, key, kind.build(request, params, key))
    job = jobs.create(body.kind, run, params=params.model_dump())
    return job.public(with_result=False)


@router.get("", responses=ERROR_RESPONSES)
def list_jobs(jobs: JobsDep) -> dict:
    return {"items": [job.public(with_result=False) for job in jobs.list()]}


@router.get("/{job_id}", responses=ERROR_RESPONSES)
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


@router.delete("/{job_id}", responses=ERROR_RESPONSES)
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


@router.get("/{job_id}/events", responses={**ERROR_RESPONSES, 200: {"content": {"text/event-stream": {}}}})
async def job_events(job_id: str, jobs: JobsDep) -> StreamingResponse:
    """Server-sent events: queued, running, progress (done/total), then a terminal event.
    Served on the event loop: an open stream holds no thread."""
    jobs.get(job_id)  # 404 before the stream starts (aevents() is lazy)
    events = jobs.aevents(job_id)
    return StreamingResponse(_sse(events), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

"""Knowledge editing sessions: POST starts an edit job on a copy of the model; GET shows the
evaluation; /compare shows pre vs post lens, the fair circuit comparison and every head's output
diff; DELETE frees the copy."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from kcircuits.api.deps import JobsDep, SettingsDep, StoreDep, WorkerDep
from kcircuits.api.errors import ERROR_RESPONSES
from kcircuits.api.validation import WIRE, Int
from kcircuits.api.wire import EditClosedOut, EditComparisonOut, EditCreatedOut, EditListOut, EditSessionOut
from kcircuits.circuits.discover import DEFAULT_METHOD, DISCOVERY_METHODS
from kcircuits.config import Settings
from kcircuits.editing.compare import CompareThresholds
from kcircuits.editing.session import EditRequest, EditSession, SessionManager, get_manager
from kcircuits.errors import BadRequest
from kcircuits.lm.registry import get_spec
from kcircuits.lm.worker import INTERACTIVE
from kcircuits.services.checks import check_prompt
from kcircuits.services.edit_comparison import EditComparison
from kcircuits.services.executor import stored_or_computed

router = APIRouter(prefix="/api/edits", tags=["edits"])
_PARAM_KEYS = {
    "rome": {"clamp", "n_prefixes", "prefix_len", "v_lr", "v_steps", "v_weight_decay", "kl_factor",
             "covariance", "cov_tokens", "shrinkage", "seed"},
    "ft-m": {"lr", "steps", "norm_constraint"},
    "ft-l": {"lr", "steps", "norm_constraint"},
}


class EditIn(BaseModel):
    model_config = WIRE

    model: str | None = Field(None, max_length=200, description="registry id; default: the server's")
    method: Literal["rome", "ft-m", "ft-l"]
    prompt: str = Field(..., max_length=100_000, description='edit prompt, e.g. "The Eiffel Tower is located in the city of"')
    subject: str = Field(..., min_length=1, max_length=500, pattern=r"\S", description="subject span inside the prompt")
    target: str = Field(..., min_length=1, max_length=200, pattern=r"\S", description='new answer, e.g. " Rome"')
    layer: Int | None = Field(None, description="edited layer; default: the model's registry default")
    params: dict[str, float | int | str] = Field(
        default_factory=dict, description="method hyperparameters (the method's own keys; see the enum)",
        json_schema_extra={"propertyNames": {"enum": sorted(set().union(*_PARAM_KEYS.values()))}})
    paraphrases: list[str] = Field(default_factory=list, max_length=10, description="extra generalisation prompts")
    locality_prompts: list[str] = Field(default_factory=list, max_length=10, description="extra locality prompts")


def _validate(body: EditIn, settings: Settings) -> EditRequest:
    model_id = body.model or settings.default_model
    spec = get_spec(model_id, settings)
    check_prompt(body.prompt, settings)
    if not body.subject.strip():
        raise BadRequest("subject is empty")
    if body.subject not in body.prompt:
        raise BadRequest(f"subject {body.subject!r} does not occur in the prompt")
    if not body.target.strip():
        raise BadRequest("target is empty")
    if body.layer is not None and not 0 <= body.layer < spec.arch.n_layers:
        raise BadRequest(f"layer {body.layer} out of range for {model_id} (0..{spec.arch.n_layers - 1})")
    unknown = set(body.params) - _PARAM_KEYS[body.method]
    if unknown:
        raise BadRequest(f"unknown {body.method} parameter(s) {sorted(unknown)}; allowed: {sorted(_PARAM_KEYS[body.method])}")
    for name, prompts in (("paraphrases", body.paraphrases), ("locality_prompts", body.locality_prompts)):
        for prompt in prompts:
            check_prompt(prompt, settings, field=name)
    return EditRequest(model=model_id, method=body.method, prompt=body.prompt, subject=body.subject,
                       target=body.target, layer=body.layer, params=dict(body.params),
                       paraphrases=list(body.paraphrases), locality_prompts=list(body.locality_prompts))


def _manager(request: Request) -> SessionManager:
    return get_manager(request.app.state)


@router.post("", status_code=202, responses=ERROR_RESPONSES, response_model=EditCreatedOut)
def create_edit(body: EditIn, request: Request, settings: SettingsDep, jobs: JobsDep) -> JSONResponse:
    """Start an edit: 202 with the session id and the job that performs and evaluates the edit."""
    req = _validate(body, settings)
    manager = _manager(request)
    session = manager.create(req)

    def job_body(ctx) -> dict:
        return manager.run_edit(session, progress=ctx.progress, cancel=ctx.check_cancel)

    try:
        job = jobs.create("edit", job_body, params={**body.model_dump(), "session_id": session.session_id})
    except Exception:
        manager.close(session.session_id)
        raise
    session.job_id = job.id
    return JSONResponse({"session_id": session.session_id, "job_id": job.id}, status_code=202)


@router.get("", responses=ERROR_RESPONSES, response_model=EditListOut)
def list_edits(request: Request) -> dict:
    """Open edit sessions, newest first."""
    return {"items": [s.summary() for s in _manager(request).list()]}


@router.get("/{session_id}", responses=ERROR_RESPONSES, response_model=EditSessionOut)
def get_edit(session_id: str, request: Request) -> dict:
    """One session: status, evaluation (efficacy, generalisation, locality, prob shift), covariance."""
    return _manager(request).get(session_id).summary()


@router.delete("/{session_id}", responses=ERROR_RESPONSES, response_model=EditClosedOut)
def close_edit(session_id: str, request: Request) -> dict:
    """Close the session and free its edited copy."""
    _manager(request).close(session_id)
    return {"session_id": session_id, "closed": True}


#: discovery methods a comparison may use (ACDC runs as a job, not here)
COMPARE_METHODS = tuple(m for m in DISCOVERY_METHODS if m != "acdc")
CompareMethod = Literal[COMPARE_METHODS]  # the schema lists them


@router.get("/{session_id}/compare", responses=ERROR_RESPONSES, response_model=EditComparisonOut,
             response_model_exclude_unset=True)
def compare_edit(session_id: str, request: Request, settings: SettingsDep, worker: WorkerDep, store: StoreDep,
                 method: CompareMethod = Query(DEFAULT_METHOD, description="discovery method of both sides"),
                 top_n: int | None = Query(None, ge=0, le=100_000, description="circuit size of both sides"),
                 reweight_rel: float = Query(CompareThresholds.reweight_rel, gt=0, le=1,
                                             description="reweighted: |delta score| above this x max |score|"),
                 unchanged_rel: float = Query(CompareThresholds.head_unchanged_rel, ge=0, le=10,
                                              description="unchanged head: |delta out| below this x |out pre|"),
                 min_faithfulness: float = Query(CompareThresholds.min_faithfulness, ge=0, le=1,
                                                 description="a side below this faithfulness is not diffed")) -> dict:
    """Pre vs post: lens curves (new and old target), the fair circuit comparison (one counterfactual
    and foil picked on the base model, the same method and size on both sides; each side's
    faithfulness; an edge-score diff only when both sides are usable) and every head's output diff.
    Computed on first request, memoised in the session and stored (kind ``edit_comparison``,
    content-addressed by the edit request, the comparison's method, size and thresholds, and the
    base model's revision), so its permalink outlives the session."""
    if method not in COMPARE_METHODS:
        raise BadRequest(f"unknown method {method!r} for a comparison; choose one of {list(COMPARE_METHODS)}")
    thresholds = CompareThresholds(min_faithfulness=min_faithfulness, reweight_rel=reweight_rel,
                                   head_unchanged_rel=unchanged_rel)
    manager = _manager(request)
    session = manager.get(session_id)
    edit_key = manager.model_key(None, session_id)  # NotReady until the edit has finished
    memo_key = f"{method}:{top_n}:{reweight_rel}:{unchanged_rel}:{min_faithfulness}"
    if memo_key in session.compare:
        return session.compare[memo_key]
    req = session.request
    # the id input: the whole edit request (method and params renamed edit_*) and the comparison's settings
    edit = asdict(req)
    edit["edit_method"], edit["edit_params"] = edit.pop("method"), edit.pop("params")
    request_dict = {**edit, "method": method, "top_n": top_n, "thresholds": thresholds.as_dict()}
    result = stored_or_computed(store, worker, req.model, "edit_comparison", request_dict,
                                lambda: _compare(session, edit_key, settings, worker, method, top_n, thresholds))
    result = {**result, "session_id": session_id}  # a stored comparison may come from an earlier session
    session.compare[memo_key] = result
    return result


def _compare(session: EditSession, edit_key: str, settings: Settings, worker: Any, method: str,
             top_n: int | None, thresholds: CompareThresholds) -> dict:
    """The comparison, each step in the worker that owns its model."""
    comparison = EditComparison(
        request=session.request, old_target=session.old_target, layer=session.layer, settings=settings,
        side_items=((session.evaluation or {}).get("locality") or {}).get("items", []), method=method,
        top_n=top_n, thresholds=thresholds, session_id=session.session_id)
    return comparison.run(lambda step: worker.run(session.request.model, step, priority=INTERACTIVE),
                          lambda step: worker.run(edit_key, step, priority=INTERACTIVE))

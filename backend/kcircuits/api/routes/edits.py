"""Knowledge editing sessions: POST starts an edit job on a copy of the model; GET shows the
evaluation; /compare shows pre vs post lens, circuit diff and head outputs; DELETE frees the copy."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from kcircuits.api.deps import JobsDep, SettingsDep, StoreDep, WorkerDep
from kcircuits.api.errors import ERROR_RESPONSES
from kcircuits.api.storing import stored_or_computed
from kcircuits.api.validation import WIRE, Int, check_prompt
from kcircuits.config import Settings
from kcircuits.editing.session import EditRequest, EditSession, SessionManager, get_manager
from kcircuits.errors import BadRequest
from kcircuits.lm.registry import get_spec
from kcircuits.lm.worker import INTERACTIVE

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


@router.post("", status_code=202, responses=ERROR_RESPONSES)
def create_edit(body: EditIn, request: Request, settings: SettingsDep, jobs: JobsDep) -> JSONResponse:
    """Start an edit: 202 with the session id and the job that performs and evaluates the edit."""
    req = _validate(body, settings)
    manager = _manager(request)
    session = manager.create(req)

    def job_body(ctx) -> dict:
        return manager.run_edit(session, progress=ctx.progress, check_cancel=ctx.check_cancel)

    try:
        job = jobs.create("edit", job_body, params={**body.model_dump(), "session_id": session.session_id})
    except Exception:
        manager.close(session.session_id)
        raise
    session.job_id = job.id
    return JSONResponse({"session_id": session.session_id, "job_id": job.id}, status_code=202)


@router.get("", responses=ERROR_RESPONSES)
def list_edits(request: Request) -> dict:
    """Open edit sessions, newest first."""
    return {"items": [s.summary() for s in _manager(request).list()]}


@router.get("/{session_id}", responses=ERROR_RESPONSES)
def get_edit(session_id: str, request: Request) -> dict:
    """One session: status, evaluation (efficacy, generalisation, locality, prob shift), covariance."""
    return _manager(request).get(session_id).summary()


@router.delete("/{session_id}", responses=ERROR_RESPONSES)
def close_edit(session_id: str, request: Request) -> dict:
    """Close the session and free its edited copy."""
    _manager(request).close(session_id)
    return {"session_id": session_id, "closed": True}


def _lens(model, session: EditSession, target: str, settings: Settings) -> dict:
    from kcircuits.api.routes.lens import LensIn, compute_lens

    req = session.request
    body = LensIn(prompt=req.prompt, target=target, subject=req.subject, top_k=5,
                  session=session.session_id if model.revision.endswith(session.session_id) else None)
    return compute_lens(model, body, settings)


def _side(model, session: EditSession, circuit_target: str, method: str, top_n: int | None,
          settings: Settings) -> dict[str, Any]:
    """Runs in the worker: lens for the new and old targets, and the circuit for ``circuit_target``."""
    from kcircuits.circuits.discover import compute_circuit

    req = session.request
    lens_new = _lens(model, session, req.target, settings)
    lens_old = _lens(model, session, session.old_target, settings)
    from kcircuits.api.routes.circuits import with_roles

    circuit = with_roles(model, compute_circuit(model, req.prompt, circuit_target, method=method, subject=req.subject,
                                                top_n=top_n))
    return {"lens": lens_new, "lens_old": lens_old, "circuit": circuit}


@router.get("/{session_id}/compare", responses=ERROR_RESPONSES)
def compare_edit(session_id: str, request: Request, settings: SettingsDep, worker: WorkerDep, store: StoreDep,
                 method: Literal["eap", "eap-ig"] = "eap",
                 top_n: int | None = Query(None, ge=1, le=100_000)) -> dict:
    """Lens (new and old target curves), circuit diff and circuit heads' outputs, pre vs post.
    Computed on first request, memoised in the session and stored (kind ``edit_comparison``,
    content-addressed by the edit request, the comparison's method and size, and the base
    model's revision), so its permalink outlives the session."""
    manager = _manager(request)
    session = manager.get(session_id)
    edit_key = manager.model_key(None, session_id)  # NotReady until the edit has finished
    memo_key = f"{method}:{top_n}"
    if memo_key in session.compare:
        return session.compare[memo_key]
    req = session.request
    # the id input: the whole edit request (method and params renamed edit_*) and the comparison's method and size
    edit = asdict(req)
    edit["edit_method"], edit["edit_params"] = edit.pop("method"), edit.pop("params")
    request_dict = {**edit, "method": method, "top_n": top_n}
    result = stored_or_computed(store, worker, req.model, "edit_comparison", request_dict,
                                lambda: _compare(session, edit_key, settings, worker, method, top_n))
    result = {**result, "session_id": session_id}  # a stored comparison may come from an earlier session
    session.compare[memo_key] = result
    return result


def _compare(session: EditSession, edit_key: str, settings: Settings, worker: Any, method: str,
             top_n: int | None) -> dict:
    from kcircuits.editing import compare as cmp

    req = session.request
    session_id = session.session_id
    pre = worker.run(req.model, lambda m: _side(m, session, session.old_target, method, top_n, settings),
                     priority=INTERACTIVE)
    post = worker.run(edit_key, lambda m: _side(m, session, req.target, method, top_n, settings),
                      priority=INTERACTIVE)
    heads = cmp.circuit_heads(pre["circuit"], post["circuit"])
    pre_heads = worker.run(req.model, lambda m: cmp.head_outputs(m, req.prompt, heads))
    post_heads = worker.run(edit_key, lambda m: cmp.head_outputs(m, req.prompt, heads))
    pre_curves, post_curves = cmp.curves(pre["lens"], pre["lens_old"]), cmp.curves(post["lens"], post["lens_old"])
    result = {
        "kind": "edit_comparison", "session_id": session_id, "method": method, "top_n": top_n,
        "lens": {"pre": pre["lens"], "post": post["lens"],
                 "curves": {name: {"pre": pre_curves[name], "post": post_curves[name]} for name in ("new", "old")}},
        "circuit": {"pre": pre["circuit"], "post": post["circuit"],
                    "targets": {"pre": session.old_target, "post": req.target},
                    "diff": cmp.circuit_diff(pre["circuit"], post["circuit"])},
        "heads": cmp.head_diff(heads, pre_heads, post_heads),
    }
    return result

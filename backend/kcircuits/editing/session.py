"""Edit sessions: each holds an edited COPY of a model, registered in the worker as ``edit:{id}``.

The base model is never modified: the copy is a deep copy of the model (its HF weights
included, :meth:`LoadedModel.copy`) made inside a worker task, and every edit step runs on the copy. Requests name a session
(``"session": id``) to run on the copy; :func:`resolve_model_key` maps (model, session) to the
worker key. Sessions expire after ``settings.edit_session_ttl_s``; at most
``settings.max_edit_sessions`` hold a copy at once; closing or expiry unregisters the copy.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kcircuits.config import Settings
from kcircuits.editing import METHODS
from kcircuits.errors import BadRequest, CancelFn, KCircuitsError, NotFound, NotReady, TooMany, shown
from kcircuits.lm.loader import LoadedModel
from kcircuits.lm.worker import BACKGROUND, ModelWorker

log = logging.getLogger(__name__)
STEP_TIMEOUT_S = 3600.0


@dataclass
class EditRequest:
    model: str
    method: str
    prompt: str
    subject: str
    target: str
    layer: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    paraphrases: list[str] = field(default_factory=list)
    locality_prompts: list[str] = field(default_factory=list)


@dataclass
class EditSession:
    session_id: str
    request: EditRequest
    created_at: float
    expires_at: float
    status: str = "pending"  # pending | running | ready | failed | closed
    job_id: str | None = None
    old_target: str | None = None
    layer: int | None = None
    evaluation: dict[str, Any] | None = None
    edit: dict[str, Any] | None = None
    error: dict[str, str] | None = None
    compare: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"edit:{self.session_id}"

    def summary(self) -> dict[str, Any]:
        req = self.request
        return {
            "session_id": self.session_id, "model": req.model, "method": req.method, "prompt": req.prompt,
            "subject": req.subject, "target": req.target, "old_target": self.old_target,
            "layer": self.layer if self.layer is not None else req.layer, "status": self.status,
            "job_id": self.job_id, "evaluation": self.evaluation,
            "covariance": (self.edit or {}).get("covariance"), "edit": self.edit, "error": self.error,
            "created_at": self.created_at, "expires_at": self.expires_at,
        }


def copy_model(model: LoadedModel, session_id: str) -> LoadedModel:
    """An independent deep copy of ``model`` (:meth:`LoadedModel.copy`) for edit session ``session_id``."""
    return model.copy(f"{model.revision}+edit:{session_id}")


def edit_model(model: LoadedModel, req: EditRequest, settings: Settings | None = None) -> dict[str, Any]:
    """Apply ``req``'s edit to ``model`` IN PLACE (a copy). Returns the method's summary."""
    from kcircuits.circuits.subject import subject_positions
    from kcircuits.editing.ft import FtParams, apply_ft
    from kcircuits.editing.rome import RomeParams, apply_rome

    subject_positions(model, req.prompt, req.subject)
    params = dict(req.params)
    if req.layer is not None:
        params["layer"] = req.layer
    if req.method == "rome":
        return apply_rome(model, req.prompt, req.subject, req.target, RomeParams.from_dict(params, model), settings)
    if req.method in ("ft-m", "ft-l"):
        return apply_ft(model, req.prompt, req.target, FtParams.from_dict(params, model), req.method)
    raise BadRequest(f"unknown edit method {req.method!r}; choose one of {list(METHODS)}")


def edit_and_evaluate(base: LoadedModel, req: EditRequest, settings: Settings | None = None,
                      session_id: str = "local") -> tuple[LoadedModel, dict[str, Any]]:
    """One-shot edit outside the server (CLI, benchmarks): copy, measure, edit, measure.
    Returns the edited copy and a summary with ``evaluation`` and ``edit``."""
    from kcircuits.editing.evaluate import evaluation, measure, plan_evaluation

    edited = copy_model(base, session_id)
    plan = plan_evaluation(edited, req.prompt, req.subject, req.target,
                           paraphrases=req.paraphrases, locality_prompts=req.locality_prompts)
    pre = measure(edited, plan)
    info = edit_model(edited, req, settings)
    post = measure(edited, plan)
    return edited, {"model": req.model, "method": req.method, "prompt": req.prompt, "subject": req.subject,
                    "target": req.target, "old_target": plan.old_target, "layer": info.get("layer"),
                    "covariance": info.get("covariance"), "evaluation": evaluation(plan, pre, post), "edit": info}


class SessionManager:
    """Thread-safe registry of edit sessions on one model worker."""

    def __init__(self, worker: ModelWorker, settings: Settings):
        self.worker, self.settings = worker, settings
        self._sessions: dict[str, EditSession] = {}
        self._lock = threading.Lock()

    # bookkeeping ---------------------------------------------------------------------------
    def _active(self) -> int:
        return sum(1 for s in self._sessions.values() if s.status in ("pending", "running", "ready"))

    def create(self, req: EditRequest) -> EditSession:
        """Reserve a session slot (raises :class:`TooMany` when ``max_edit_sessions`` are held)."""
        if req.method not in METHODS:
            raise BadRequest(f"unknown edit method {req.method!r}; choose one of {list(METHODS)}")
        self.sweep()
        now = time.time()
        with self._lock:
            if self._active() >= self.settings.max_edit_sessions:
                raise TooMany(f"all {self.settings.max_edit_sessions} edit sessions are in use; close one "
                           "(DELETE /api/edits/{id}) or wait until one expires", retry_after_s=30)
            session = EditSession(uuid.uuid4().hex[:16], req, now, now + self.settings.edit_session_ttl_s)
            self._sessions[session.session_id] = session
        return session

    def sweep(self) -> None:
        """Close every expired session."""
        now = time.time()
        with self._lock:
            expired = [s for s in self._sessions.values() if s.expires_at <= now]
        for session in expired:
            self._drop(session)

    def _drop(self, session: EditSession) -> None:
        with self._lock:
            self._sessions.pop(session.session_id, None)
            session.status = "closed"
        self.worker.unregister(session.key)

    def get(self, session_id: str) -> EditSession:
        self.sweep()
        with self._lock:
            session = self._sessions.get(session_id)
        if session is None:
            raise NotFound(f"no edit session {shown(session_id)} (unknown, closed or expired)")
        return session

    def list(self) -> list[EditSession]:
        self.sweep()
        with self._lock:
            return sorted(self._sessions.values(), key=lambda s: s.created_at, reverse=True)

    def close(self, session_id: str) -> EditSession:
        session = self.get(session_id)
        self._drop(session)
        return session

    def close_all(self) -> None:
        for session in self.list():
            self._drop(session)

    def model_key(self, model_id: str | None, session_id: str | None) -> str:
        """The worker key for ``model_id`` or, with a session, for its edited copy."""
        if not session_id:
            if not model_id:
                raise BadRequest("no model given")
            return model_id
        session = self.get(session_id)
        if model_id and model_id != session.request.model:
            raise BadRequest(f"edit session {shown(session_id)} is on model {session.request.model!r}, not {shown(model_id)}")
        if session.status != "ready":
            if session.status == "failed":
                raise BadRequest(f"edit session {session_id!r} failed: {(session.error or {}).get('message')}")
            raise NotReady(f"edit session {session_id!r} is {session.status}; retry when it is ready")
        return session.key

    # the edit ------------------------------------------------------------------------------
    def run_edit(self, session: EditSession, progress: Callable[[float, str], None] | None = None,
                 cancel: CancelFn | None = None) -> dict[str, Any]:
        """Copy the base model, evaluate, edit the copy, evaluate again (worker steps, background)."""
        from kcircuits.editing.evaluate import evaluation, measure, plan_evaluation

        req = session.request
        progress = progress or (lambda frac, msg: None)
        cancel = cancel or (lambda: None)

        def step(key: str, fn: Callable[[LoadedModel], Any]) -> Any:
            cancel()
            if session.status == "closed":
                raise NotFound(f"edit session {session.session_id!r} was closed")
            return self.worker.run(key, fn, priority=BACKGROUND, timeout=STEP_TIMEOUT_S)

        session.status = "running"
        try:
            progress(0.05, "copying the model")
            copied = step(req.model, lambda base: copy_model(base, session.session_id))
            if session.status == "closed":
                raise NotFound(f"edit session {session.session_id!r} was closed")
            self.worker.register(session.key, copied, pinned=True)
            progress(0.2, "measuring the unedited model")

            def before(model: LoadedModel):
                plan = plan_evaluation(model, req.prompt, req.subject, req.target,
                                       paraphrases=req.paraphrases, locality_prompts=req.locality_prompts)
                return plan, measure(model, plan)

            plan, pre = step(session.key, before)
            session.old_target = plan.old_target
            progress(0.35, f"applying {req.method}")
            session.edit = step(session.key, lambda model: edit_model(model, req, self.settings))
            session.layer = session.edit.get("layer")
            progress(0.85, "measuring the edited model")
            post = step(session.key, lambda model: measure(model, plan))
            session.evaluation = evaluation(plan, pre, post)
            session.status = "ready"
        except BaseException as exc:
            if session.status != "closed":
                session.status = "failed"
                session.error = ({"type": exc.kind, "message": exc.message} if isinstance(exc, KCircuitsError)
                                 else {"type": "internal_error", "message": f"{type(exc).__name__}: {exc}"})
            self.worker.unregister(session.key)
            raise
        return session.summary()


def get_manager(state: Any) -> SessionManager:
    """The app's SessionManager on ``state.edit_sessions`` (created on first use)."""
    manager = getattr(state, "edit_sessions", None)
    if manager is None:
        manager = SessionManager(state.worker, state.settings)
        state.edit_sessions = manager
    return manager


def resolve_model_key(app_state_or_sessions: Any, model_id: str | None, session_id: str | None) -> str:
    """Worker key for a request naming ``model_id`` and optionally an edit ``session_id``.

    Accepts ``app.state`` or a :class:`SessionManager`. Raises NotFound for unknown or expired
    sessions, NotReady while the edit is still running, BadRequest for a model mismatch.
    """
    if not session_id:
        if not model_id:
            raise BadRequest("no model given")
        return model_id
    if isinstance(app_state_or_sessions, SessionManager):
        manager = app_state_or_sessions
    else:
        manager = getattr(app_state_or_sessions, "edit_sessions", None)
        if manager is None:
            raise NotFound(f"no edit session {shown(session_id)} (unknown, closed or expired)")
    return manager.model_key(model_id, session_id)

"""create_app(): settings, model worker, job manager and store live on ``app.state``.

The lifespan starts the worker and boots the default model in it (``/readyz`` answers 503 until
then). Handlers never run torch on the event loop: they submit to the worker.
"""

from __future__ import annotations

import importlib
import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, Response

from kcircuits import __version__
from kcircuits.api.errors import ERROR_RESPONSES, install_error_handlers
from kcircuits.api.middleware import BodyLimitMiddleware, CatchAllMiddleware, SecurityHeadersMiddleware
from kcircuits.config import Settings, get_settings
from kcircuits.errors import KCircuitsError
from kcircuits.jobs import JobManager
from kcircuits.lm.worker import ModelWorker
from kcircuits.services.checks import PROMPT_FIELDS

log = logging.getLogger(__name__)

#: Route modules under kcircuits.api.routes, each with a ``router``.
ROUTE_MODULES = ["health", "models", "lens", "nodes", "jobs", "results", "edits", "circuits", "relations", "neurons", "masks"]
CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
       "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


def _preload(app: FastAPI) -> None:
    settings: Settings = app.state.settings
    worker: ModelWorker = app.state.worker
    wanted = [settings.default_model] + [m.strip() for m in settings.preload_models.split(",") if m.strip()]
    for model_id in dict.fromkeys(wanted):
        future = worker.submit(model_id, lambda model: model.spec.id, block=True, priority=0)
        future.add_done_callback(lambda f, mid=model_id: _mark_ready(app, mid, f))


def _mark_ready(app: FastAPI, model_id: str, future) -> None:
    if future.exception() is not None:
        log.error("could not load %s: %s", model_id, future.exception())
        exc = future.exception()
        app.state.load_errors[model_id] = exc.message if isinstance(exc, KCircuitsError) else type(exc).__name__
    else:
        app.state.ready_models.add(model_id)


def create_app(settings: Settings | None = None, worker: ModelWorker | None = None,
               preload: bool = True, store=None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.worker.start()
        if app.state.store is None:
            app.state.store = _open_store(settings)
        if app.state.store is not None and hasattr(app.state.store, "record_job"):
            orphaned = app.state.store.interrupt_orphaned_jobs()  # no job of an earlier process still runs
            if orphaned:
                log.warning("marked %d job(s) of an earlier process as interrupted", orphaned)
            app.state.jobs.listeners.append(_job_recorder(app.state.store))
        if preload:
            _preload(app)
        yield
        app.state.jobs.shutdown()
        sessions = getattr(app.state, "edit_sessions", None)
        if sessions is not None:  # free the edited copies before the worker goes
            sessions.close_all()
        app.state.worker.stop()

    app = FastAPI(title="kcircuits", version=__version__, lifespan=lifespan,
                  description="Knowledge circuits in transformer language models.")
    app.state.settings = settings
    app.state.worker = worker or ModelWorker(settings)
    app.state.jobs = JobManager()
    app.state.store = store
    app.state.ready_models = set()
    app.state.load_errors = {}
    if worker is not None:
        app.state.ready_models.update(worker.loaded())
    install_error_handlers(app)

    # inner to outer: count body bytes (413), answer 500s without dropping keep-alive, headers on all
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(CatchAllMiddleware)
    app.add_middleware(SecurityHeadersMiddleware, headers={
        "Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"})

    for name in ROUTE_MODULES:
        module = importlib.import_module(f"kcircuits.api.routes.{name}")
        app.include_router(module.router, responses=ERROR_RESPONSES if module.router.prefix.startswith("/api") else None)
    _mount_frontend(app, settings.static_dir)
    _document_limits(app, settings)
    return app


def _document_limits(app: FastAPI, settings: Settings) -> None:
    """The OpenAPI schema shows the prompt limits this server enforces (its settings), not the
    models' static ceilings: at least one non-space character, at most ``max_prompt_chars``."""
    build = app.openapi

    def limit(prop: dict) -> None:
        for branch in prop.get("anyOf", [prop]):
            if branch.get("type") == "array":
                limit(branch.get("items", {}))
            elif branch.get("type") == "string":
                branch.update(minLength=1, maxLength=settings.max_prompt_chars, pattern=r"\S")

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = build()
            for component in schema.get("components", {}).get("schemas", {}).values():
                for name, prop in component.get("properties", {}).items():
                    if name in PROMPT_FIELDS:
                        limit(prop)
        return app.openapi_schema

    app.openapi = openapi


def _job_recorder(store):
    """A job listener persisting each state change (the store throttles progress-only writes)."""

    def record(job) -> None:
        data = job.public(with_result=False)
        if isinstance(job.result, dict) and job.result.get("id"):
            data["result_id"] = job.result["id"]
        store.record_job(data)

    return record


def _open_store(settings: Settings):
    """The result store, when the store package is present (None otherwise)."""
    try:
        from kcircuits.store import open_store
    except ImportError:
        return None
    return open_store(settings)


def _mount_frontend(app: FastAPI, static_dir: Path) -> None:
    """Serve the built frontend from the same origin; unknown non-API paths get the SPA shell."""
    from fastapi.staticfiles import StaticFiles

    assets = static_dir / "assets"
    if assets.is_dir():
        app.mount("/assets", StaticFiles(directory=assets), name="assets")

    @app.get("/", include_in_schema=False)
    def index() -> Response:
        page = static_dir / "index.html"
        if page.exists():
            return FileResponse(page, media_type="text/html")
        return Response("<!doctype html><title>kcircuits</title><p>frontend not built: run make serve",
                        media_type="text/html")

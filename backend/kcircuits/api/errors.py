"""One error envelope for every failure: ``{"error": {"type", "message"}}``; no stack traces."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from kcircuits.errors import (
    BadRequest,
    Busy,
    KCircuitsError,
    ModelUnavailable,
    NotFound,
    NotReady,
    TooMany,
)

log = logging.getLogger(__name__)

#: Documented on every API route (OpenAPI ``responses``).
ERROR_RESPONSES = {
    400: {"description": "Malformed request body (invalid JSON or encoding)"},
    404: {"description": "Unknown id or model"},
    409: {"description": "Model known but not loadable here"},
    413: {"description": "Request body too large"},
    422: {"description": "Invalid request: the message names the field and the problem"},
    429: {"description": "A quota (open edit sessions, queued jobs) is used up: free one, or retry after Retry-After seconds"},
    503: {"description": "Busy or not ready: retry after the Retry-After header's seconds"},
}


#: HTTP status of each domain error (most specific class first; the base class: 500).
STATUS: tuple[tuple[type[KCircuitsError], int], ...] = (
    (TooMany, 429), (Busy, 503), (NotReady, 503), (BadRequest, 422), (NotFound, 404), (ModelUnavailable, 409))


def status_of(exc: KCircuitsError) -> int:
    return next((status for cls, status in STATUS if isinstance(exc, cls)), 500)


#: Longest error message sent; longer ones (echoing hostile input) are cut.
MAX_MESSAGE_CHARS = 500


def error_body(kind: str, message: str) -> dict:
    return {"error": {"type": kind, "message": message}}


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        msg = err.get("msg", "invalid").removeprefix("Value error, ")
        if err.get("type") == "json_invalid":
            return "request body is not valid JSON"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts) or "invalid request"


def _capped(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    return message if len(message) <= limit else message[: limit - 3] + "..."


def allowed_methods(request: Request) -> set[str]:
    """The methods the OpenAPI schema lists for every path template matching the request's
    path (so /api/jobs answers GET and POST, not only its first route's method)."""
    table = getattr(request.app.state, "path_methods", None)
    if table is None:
        table = [(compile_path(path)[0], {method.upper() for method in ops})
                 for path, ops in request.app.openapi()["paths"].items()]
        request.app.state.path_methods = table
    methods = {m for regex, ms in table if regex.match(request.url.path) for m in ms}
    return methods | {"HEAD"} if "GET" in methods else methods


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(KCircuitsError)
    async def _domain(_: Request, exc: KCircuitsError) -> JSONResponse:
        headers = {}
        if isinstance(exc, Busy | NotReady):
            headers["Retry-After"] = str(exc.retry_after_s)
        return JSONResponse(error_body(exc.kind, _capped(exc.message)), status_code=status_of(exc), headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        message = _describe_validation(exc)
        status = 400 if message == "request body is not valid JSON" else 422
        return JSONResponse(error_body("invalid_request", message), status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        kind = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(exc.status_code, "http_error")
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:  # every method of every route on this path, not just the first route's
            allowed = allowed_methods(request)
            if request.method == "OPTIONS":
                return Response(status_code=204, headers={"Allow": ", ".join(sorted(allowed | {"OPTIONS"}))})
            headers["Allow"] = ", ".join(sorted(allowed))
        return JSONResponse(error_body(kind, str(exc.detail)), status_code=exc.status_code, headers=headers)

    @app.exception_handler(TimeoutError)
    async def _timeout(_: Request, exc: TimeoutError) -> JSONResponse:
        return JSONResponse(error_body("timeout", "the model did not answer in time; retry later (a result still being "
                                                       "computed is kept, and the same request then reads it)"),
                            status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(error_body("internal_error", "internal error"), status_code=500)

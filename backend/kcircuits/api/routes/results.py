"""Stored results, permalinks (/c/{id}, /v/{short}), saved views and export.

Ids are validated before any lookup (64 hex characters); nothing here builds a file path from
a request. The /c/{id} page is the static SPA shell: no result text is ever put into HTML on the
server, the page fetches /api/results/{id} as JSON.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, Field
from starlette.convertors import Convertor, register_url_convertor

from kcircuits.api.deps import StoreDep
from kcircuits.api.errors import ERROR_RESPONSES
from kcircuits.api.validation import WIRE
from kcircuits.api.wire import (
    AnyResultOut,
    CircuitOut,
    ResultListOut,
    ResultStatsOut,
    SavedOut,
    ViewCreatedOut,
    ViewOut,
)
from kcircuits.errors import NotFound, NotReady
from kcircuits.export import MEDIA_TYPES, export_circuit
from kcircuits.store.ids import ID_PATTERN, is_valid_id

NOT_FOUND_PAGE = ("<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>Not found - kcircuits</title>"
                  "<h1>Circuit not found</h1><p>This link is malformed or points to a result this server "
                  "does not have.</p><p><a href=\"/\">Open the dashboard</a></p></html>")
SHELL_FALLBACK = ("<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>kcircuits</title>"
                  "<p>frontend not built: run make serve</p></html>")


class HexIdConvertor(Convertor):
    """Path segment of exactly 64 lowercase hex characters (other segments fall through)."""

    regex = ID_PATTERN

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("hexid", HexIdConvertor())
router = APIRouter(tags=["results"])
#: Paging bounds: SQLite (and PostgreSQL) integers are 64-bit; anything above this is refused with 422.
MAX_OFFSET = 1_000_000_000


class SaveIn(BaseModel):
    model_config = WIRE

    title: str | None = Field(None, max_length=200)


class ViewIn(BaseModel):
    model_config = WIRE

    result_id: str = Field(..., max_length=64, description="content id of a stored result")
    state: dict[str, Any] = Field(default_factory=dict, description="view state (threshold, node, step...)")


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def json_response(data: Any, status_code: int = 200) -> Response:
    """JSON (non-finite floats become null, which strict JSON requires)."""
    try:
        text = json.dumps(data, ensure_ascii=False, allow_nan=False)
    except ValueError:
        text = json.dumps(_finite(data), ensure_ascii=False, allow_nan=False)
    return Response(text, status_code=status_code, media_type="application/json")


def _store(store: Any) -> Any:
    if store is None:
        raise NotReady("the result store is not available")
    return store


def _load(store: Any, result_id: str, kind: str | None = None) -> dict[str, Any]:
    if not is_valid_id(result_id):
        raise NotFound("malformed result id: expected 64 lowercase hex characters")
    result = _store(store).get(result_id)
    if result is None or (kind is not None and result.get("kind", result["provenance"].get("kind")) != kind):
        raise NotFound("no stored result with this id")
    return result


@router.get("/api/results", responses=ERROR_RESPONSES, response_model=ResultListOut)
def list_results(store: StoreDep,
                 model: Annotated[str | None, Query(max_length=200)] = None,
                 method: Annotated[str | None, Query(max_length=32)] = None,
                 kind: Annotated[str | None, Query(max_length=32)] = None,
                 q: Annotated[str | None, Query(max_length=200, description="substring of prompt/model/method/title")] = None,
                 saved: bool | None = None,
                 limit: Annotated[int, Query(ge=1, le=500)] = 50,
                 offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0) -> dict:
    """Recent and saved results, newest first: ``{"items", "total"}``."""
    return _store(store).search(model=model, method=method, kind=kind, q=q, saved=saved,
                                limit=limit, offset=offset)


@router.get("/api/results/stats", responses=ERROR_RESPONSES, response_model=ResultStatsOut)
def result_stats(store: StoreDep) -> dict:
    """Counts: stored results, results computed by this process, store hits since start."""
    store = _store(store)
    return {"total": store.count(), "computed_results": store.computed_results, "cache_hits": store.cache_hits}


@router.get("/api/results/{result_id}", responses=ERROR_RESPONSES, response_model=AnyResultOut)
def get_result(result_id: str, store: StoreDep) -> Response:
    """One stored result (any kind) with ``id`` and ``provenance``."""
    return json_response(_load(store, result_id))


@router.get("/api/circuits/{result_id:hexid}", responses=ERROR_RESPONSES, response_model=CircuitOut)
def get_circuit(result_id: str, store: StoreDep) -> Response:
    """One stored circuit result."""
    return json_response(_load(store, result_id, kind="circuit"))


@router.post("/api/results/{result_id}/save", responses=ERROR_RESPONSES, response_model=SavedOut)
def save_result(result_id: str, store: StoreDep, body: Annotated[SaveIn | None, Body()] = None) -> dict:
    """Keep a result in the saved list, optionally with a title."""
    _load(store, result_id)
    saved = store.save(result_id, body.title if body else None)
    return {"id": saved["id"], "saved": True, "title": saved["title"]}


#: The export's files: the stored result itself as JSON, text (GraphML, DOT, SVG) or a PNG.
EXPORT_CONTENT = {media: {"schema": {"$ref": "#/components/schemas/AnyResultOut"} if fmt == "json"
                          else {"type": "string", "format": "binary" if fmt == "png" else None}}
                  for fmt, media in MEDIA_TYPES.items()}
for _content in EXPORT_CONTENT.values():
    _content["schema"] = {k: v for k, v in _content["schema"].items() if v is not None}


@router.get("/api/results/{result_id}/export", response_class=Response, responses={
    **ERROR_RESPONSES, 200: {"description": "the file (attachment)", "content": EXPORT_CONTENT}})
def export_result(result_id: str, store: StoreDep,
                  format: Literal["json", "graphml", "dot", "png", "svg"] = "json") -> Response:
    """Download a stored result as JSON, GraphML, DOT (circuits), PNG or SVG (circuits, matplotlib)."""
    data = export_circuit(_load(store, result_id), format)
    filename = f"kcircuits-{result_id[:12]}.{format}"
    return Response(data, media_type=MEDIA_TYPES[format],
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


@router.post("/api/views", responses=ERROR_RESPONSES, response_model=ViewCreatedOut)
def create_view(body: ViewIn, store: StoreDep) -> dict:
    """Store a long view state server-side: ``{"short", "url": "/v/{short}"}``."""
    _load(store, body.result_id)
    short = store.put_view(body.result_id, body.state)
    return {"short": short, "url": f"/v/{short}"}


@router.get("/api/views/{short}", responses=ERROR_RESPONSES, response_model=ViewOut)
def get_view(short: str, store: StoreDep) -> dict:
    """``{"result_id", "state"}`` of a stored view."""
    view = _store(store).get_view(short)
    if view is None:
        raise NotFound("no stored view with this code")
    return view


def state_query(state: dict[str, Any]) -> str:
    """View state as a URL query: booleans as 1/0, objects and lists as JSON, nulls left out."""
    pairs = []
    for key, value in state.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = int(value)
        elif isinstance(value, dict | list):
            value = json.dumps(value, separators=(",", ":"))
        pairs.append((key, str(value)))
    return urlencode(pairs)


def _not_found_page() -> HTMLResponse:
    return HTMLResponse(NOT_FOUND_PAGE, status_code=404)


@router.get("/v/{short}", include_in_schema=False)
def open_view(short: str, store: StoreDep) -> Response:
    """Redirect a short view link to the permalink with its state in the query."""
    view = _store(store).get_view(short)
    if view is None:
        return _not_found_page()
    query = state_query(view["state"])
    return RedirectResponse(f"/c/{view['result_id']}" + (f"?{query}" if query else ""), status_code=302)


@router.get("/c/{result_id}", include_in_schema=False)
def permalink(result_id: str, store: StoreDep, request: Request) -> Response:
    """The dashboard shell for a permalink (404 page for malformed ids; shell with 404 for unknown)."""
    if not is_valid_id(result_id):
        return _not_found_page()
    status = 200 if store is not None and store.exists(result_id) else 404
    page = request.app.state.settings.static_dir / "index.html"
    if page.is_file():
        return FileResponse(page, media_type="text/html", status_code=status)
    return HTMLResponse(SHELL_FALLBACK, status_code=status)

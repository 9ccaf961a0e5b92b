"""Every route's 2xx response is described by a schema: a JSON body by a model (a ``$ref`` or an
object with properties, never a bare ``{}`` or ``additionalProperties``), a file or an event stream
by its declared media types."""

from __future__ import annotations

import pytest

from kcircuits.api.app import create_app
from kcircuits.config import Settings

#: The non-JSON responses, documented by their media types (operation -> the media types it declares).
NON_JSON = {
    ("get", "/api/jobs/{job_id}/events"): {"text/event-stream"},
    ("get", "/api/results/{result_id}/export"): {"application/json", "application/graphml+xml",
                                                 "text/vnd.graphviz", "image/png", "image/svg+xml"},
}


@pytest.fixture(scope="module")
def schema() -> dict:
    app = create_app(Settings(default_model="tiny-gpt2", test_models=True), preload=False)
    return app.openapi()


def _resolve(schema: dict, node: dict) -> dict:
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def _described(schema: dict, node: dict) -> bool:
    """A ``$ref`` to a model with properties (or a union of such models), or an object with properties."""
    node = _resolve(schema, node)
    branches = node.get("oneOf") or node.get("anyOf")
    if branches:
        return all(_described(schema, b) for b in branches)
    return bool(node.get("properties"))


def _operations(schema: dict):
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            yield method, path, op


def test_every_2xx_json_response_has_a_model(schema):
    untyped = []
    for method, path, op in _operations(schema):
        if (method, path) in NON_JSON:
            continue
        ok = [code for code in op["responses"] if code.startswith("2")]
        assert ok, f"{method.upper()} {path} documents no 2xx response"
        for code in ok:
            content = op["responses"][code].get("content", {})
            assert set(content) == {"application/json"}, f"{method.upper()} {path} {code}: {sorted(content)}"
            if not _described(schema, content["application/json"].get("schema", {})):
                untyped.append(f"{method.upper()} {path} {code}")
    assert not untyped, f"2xx responses without a response model: {untyped}"


@pytest.mark.parametrize(("operation", "media_types"), NON_JSON.items(), ids=lambda x: " ".join(x) if isinstance(x, tuple) else "")
def test_non_json_responses_declare_their_media_types(schema, operation, media_types):
    method, path = operation
    content = schema["paths"][path][method]["responses"]["200"]["content"]
    assert set(content) == media_types
    for media, body in content.items():
        node = body.get("schema")
        assert node, f"{media} of {method.upper()} {path} has no schema"
        if media == "application/json":
            assert _described(schema, node)


def test_the_strict_unions_stay_unambiguous(schema):
    """Stored results are a union by kind: every modelled kind is one branch, and the catch-all
    branch for other kinds refuses the modelled ones (so exactly one branch matches)."""
    from kcircuits.api.wire import RESULT_KINDS

    union = _resolve(schema, {"$ref": "#/components/schemas/AnyResultOut"})
    branches = [_resolve(schema, b) for b in union["oneOf"]]
    kinds = {}
    for branch in branches:
        kind = branch["properties"].get("kind", {})
        kinds[branch["title"]] = kind.get("const") or kind.get("enum") or kind.get("not") or kind.get("anyOf")
    assert kinds["OtherResultOut"] == {"enum": list(RESULT_KINDS)}
    consts = [branch["properties"]["kind"].get("const") for branch in branches if "kind" in branch["properties"]]
    for kind in RESULT_KINDS:
        assert kind in consts, f"result kind {kind!r} has no model in AnyResultOut"

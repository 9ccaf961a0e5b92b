"""The hand-written TypeScript client stays in step with the OpenAPI schema: every route it calls
exists there with the same method, and every JSON body field it may send for the main POST
routes is a property the schema accepts (the API rejects unknown fields)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "frontend" / "src" / "api" / "client.ts"
TYPES = ROOT / "frontend" / "src" / "api" / "types.ts"
CALL = re.compile(r'this\.request\(\s*"(GET|POST|DELETE)",\s*[`"]([^`"$?]+(?:\$\{[^}]*\}[^`"$?]*)*)')


def _normalise(path: str) -> str:
    """'/api/jobs/${encodeURIComponent(id)}' and '/api/jobs/{job_id}' -> '/api/jobs/{}'."""
    path = path.split("${query(", 1)[0]  # the query string helper
    path = re.sub(r"\$\{[^}]*\}", "{}", path)
    return re.sub(r"\{[^}]*\}", "{}", path).rstrip("/")


def _interface_fields(name: str) -> set[str]:
    body = re.search(r"export interface " + name + r"\s*\{(.*?)\n\}", TYPES.read_text(), re.S)
    assert body, f"interface {name} not found in types.ts"
    return set(re.findall(r"^\s+(\w+)\??:", body.group(1), re.M))


def test_every_client_route_is_in_the_schema(client):
    spec = client.get("/openapi.json").json()
    routes = {(method.upper(), _normalise(path)) for path, ops in spec["paths"].items() for method in ops}
    calls = {(m, _normalise(p)) for m, p in CALL.findall(CLIENT.read_text())}
    assert len(calls) >= 15, calls
    missing = sorted(c for c in calls if c not in routes)
    assert not missing, f"client calls routes the API does not have: {missing}"


def test_request_types_match_schema_bodies(client):
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for interface, path in [("LensRequest", "/api/lens"), ("EditRequest", "/api/edits")]:
        ref = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        accepted = set(schemas[ref.rsplit("/", 1)[1]]["properties"])
        extra = _interface_fields(interface) - accepted
        assert not extra, f"{interface} has fields {sorted(extra)} that {path} rejects"

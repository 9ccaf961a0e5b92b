"""The TypeScript client stays in step with the OpenAPI schema: every route it calls exists there
with the same method, and each request type is an alias of the generated schema of its route's
body, so a body field the API rejects cannot be typed."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "frontend" / "src" / "api" / "client.ts"
TYPES = ROOT / "frontend" / "src" / "api" / "types.ts"
CALL = re.compile(r'this\.request\(\s*"(GET|POST|DELETE)",\s*[`"]([^`"$?]+(?:\$\{[^}]*\}[^`"$?]*)*)')
ALIAS = re.compile(r'^export type (\w+Request) = Schemas\["(\w+)"\];', re.M)
REQUEST_ROUTES = {
    "LensRequest": "/api/lens",
    "ProjectRequest": "/api/nodes/project",
    "CircuitRequest": "/api/circuits",
    "NodeDetailRequest": "/api/nodes/detail",
    "EditRequest": "/api/edits",
}


def _normalise(path: str) -> str:
    """'/api/jobs/${encodeURIComponent(id)}' and '/api/jobs/{job_id}' -> '/api/jobs/{}'."""
    path = path.split("${query(", 1)[0]  # the query string helper
    path = re.sub(r"\$\{[^}]*\}", "{}", path)
    return re.sub(r"\{[^}]*\}", "{}", path).rstrip("/")


def test_every_client_route_is_in_the_schema(client):
    spec = client.get("/openapi.json").json()
    routes = {(method.upper(), _normalise(path)) for path, ops in spec["paths"].items() for method in ops}
    calls = {(m, _normalise(p)) for m, p in CALL.findall(CLIENT.read_text())}
    assert len(calls) >= 15, calls
    missing = sorted(c for c in calls if c not in routes)
    assert not missing, f"client calls routes the API does not have: {missing}"


def test_request_types_match_schema_bodies(client):
    spec = client.get("/openapi.json").json()
    aliases = dict(ALIAS.findall(TYPES.read_text()))
    for alias, path in REQUEST_ROUTES.items():
        assert alias in aliases, f"types.ts does not alias {alias} to a generated schema"
        ref = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        body = ref.rsplit("/", 1)[1]
        assert aliases[alias] == body, f"{alias} aliases {aliases[alias]}, but {path} takes {body}"

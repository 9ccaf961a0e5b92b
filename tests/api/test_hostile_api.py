"""Hostile input, as an outside campaign sent it (issue 15): every case is a clear 4xx, never a
500, and a failure never costs the client its keep-alive connection."""

from __future__ import annotations

import pytest

from .live import raw_exchange


def _get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode()


@pytest.mark.parametrize("query, needle", [
    ("offset=9223372036854775808", "offset"),
    ("offset=99999999999999999999999999", "offset"),
    ("offset=-1", "offset"),
    ("limit=9223372036854775808", "limit"),
    ("limit=0", "limit"),
    ("limit=1e3", "limit"),
])
def test_results_paging_out_of_range_is_422(live_server, query, needle):
    _, address = live_server
    (status, _, body), (after, _, _) = raw_exchange(address, [_get(f"/api/results?{query}"), _get("/healthz")])
    assert status == 422 and needle in body.decode(), body
    assert after == 200


def test_largest_documented_offset_is_served(live_server):
    app, address = live_server
    spec = app.openapi()["paths"]["/api/results"]["get"]["parameters"]
    maximum = next(p for p in spec if p["name"] == "offset")["schema"]["maximum"]
    [(status, _, body)] = raw_exchange(address, [_get(f"/api/results?offset={maximum}")])
    assert status == 200 and b'"items":[]' in body


def test_a_500_keeps_the_connection_alive(live_server, monkeypatch):
    app, address = live_server

    def broken(**_):
        raise RuntimeError("boom")

    monkeypatch.setattr(app.state.store, "search", broken)
    (status, headers, body), (after, _, _) = raw_exchange(address, [_get("/api/results"), _get("/healthz")])
    assert status == 500 and b"internal_error" in body and b"boom" not in body
    assert headers.get("connection") != "close" and headers["x-content-type-options"] == "nosniff"
    assert after == 200


def _chunked_post(address, path: str, total: int, finish: bool, chunk: int = 65536) -> int:
    """POST ``total`` bytes chunked (no Content-Length); without ``finish`` the body never ends,
    so only a server that counts bytes as they come can answer. Returns the status."""
    import socket

    with socket.create_connection(address, timeout=5) as conn:
        conn.sendall(f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n".encode())
        body = b'{"result_id": "' + b"a" * max(0, total - 20) + b'"}'
        try:
            for start in range(0, len(body), chunk):
                part = body[start:start + chunk]
                conn.sendall(b"%x\r\n" % len(part) + part + b"\r\n")
            if finish:
                conn.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered early and closed: read its answer
        status_line = conn.makefile("rb").readline()
    return int(status_line.split()[1])


@pytest.mark.parametrize("total, finish, expected", [
    (3_000_000, False, 413),  # over the limit, never-ending: answered as soon as the limit is passed
    (1_000_100, True, 413),  # just over
    (200, True, 422),  # small chunked bodies are read as usual (result_id over 64 characters)
])
def test_chunked_bodies_are_bounded(live_server, total, finish, expected):
    _, address = live_server
    assert _chunked_post(address, "/api/views", total, finish) == expected


def test_declared_length_over_limit_is_413_before_reading(live_server):
    _, address = live_server
    raw = b"POST /api/views HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 5000000\r\n\r\n{"
    [(status, headers, body)] = raw_exchange(address, [raw])
    assert status == 413 and b"too_large" in body and "content-security-policy" in headers


# --- the schema tells the truth -------------------------------------------------------------

PROMPT_SCHEMAS = [("LensIn", "prompt"), ("CircuitIn", "prompt"), ("CircuitIn", "corrupt_prompt"),
                  ("EditIn", "prompt"), ("AcdcParams", "prompt"), ("SweepParams", "prompt")]


def _string_schema(prop: dict) -> dict:
    return next((s for s in prop.get("anyOf", [prop]) if s.get("type") == "string"), prop)


@pytest.mark.parametrize("schema, field", PROMPT_SCHEMAS)
def test_prompt_limits_in_the_schema_are_the_real_ones(client, api_settings, schema, field):
    prop = _string_schema(client.get("/openapi.json").json()["components"]["schemas"][schema]["properties"][field])
    assert prop["maxLength"] == api_settings.max_prompt_chars and prop["minLength"] == 1, prop


@pytest.mark.parametrize("prompt, status", [("", 422), ("   ", 422), ("x" * 501, 422), ("Paris", 200)])
def test_prompt_limits_as_enforced(client, prompt, status):
    res = client.post("/api/lens", json={"prompt": prompt, "top_k": 2})
    assert res.status_code == status, res.text


@pytest.mark.parametrize("top_k", ["5", True, 5.5, "five", None])
def test_top_k_is_a_strict_integer(client, top_k):
    res = client.post("/api/lens", json={"prompt": "Paris is", "top_k": top_k})
    assert res.status_code == 422 and "top_k" in res.json()["error"]["message"], res.text


@pytest.mark.parametrize("body, needle", [
    ({"kind": "sweep", "params": {}}, "prompt"),
    ({"kind": "acdc", "params": {"prompt": "x", "max_edges": "9"}}, "max_edges"),
    ({"kind": "relation", "params": {"relation": "x", "n": "12"}}, "params.n"),
])
def test_job_params_are_validated_as_the_schema_says(client, body, needle):
    res = client.post("/api/jobs", json=body)
    assert res.status_code == 422 and needle in res.json()["error"]["message"], res.text


def test_job_params_are_in_the_schema(client):
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/api/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    text = str(body) + str({k: v for k, v in spec["components"]["schemas"].items() if k.endswith("JobIn")})
    for params in ("AcdcParams", "RelationParams", "SweepParams"):
        assert params in text
    assert set(spec["components"]["schemas"]["SweepParams"]["required"]) == {"prompt", "target"}


@pytest.mark.parametrize("path, methods", [
    ("/api/jobs", {"GET", "POST"}),
    ("/api/jobs/" + "a" * 32, {"GET", "DELETE"}),
    ("/api/edits", {"GET", "POST"}),
    ("/api/lens", {"POST"}),
])
def test_options_and_405_list_every_method_of_the_path(client, path, methods):
    options = client.options(path)
    assert options.status_code == 204 and methods | {"OPTIONS"} <= set(options.headers["allow"].split(", "))
    wrong = client.put(path, json={})
    assert wrong.status_code == 405 and methods <= set(wrong.headers["allow"].split(", "))
    assert wrong.json()["error"]["type"] == "method_not_allowed"


@pytest.mark.parametrize("method, path", [
    ("GET", "/api/jobs/{id}"), ("DELETE", "/api/jobs/{id}"), ("GET", "/api/jobs/{id}/events"),
    ("GET", "/api/edits/{id}"), ("DELETE", "/api/edits/{id}"), ("GET", "/api/edits/{id}/compare"),
    ("GET", "/api/results/{id}"), ("GET", "/api/views/{id}"), ("GET", "/api/circuits/{id}/nodes/a0.h0"),
])
def test_errors_do_not_echo_huge_ids(client, method, path):
    res = client.request(method, path.format(id="x" * 10_000))
    assert 400 <= res.status_code < 500 and len(res.json()["error"]["message"]) < 300, res.text[:400]


def test_model_load_errors_hide_upstream_connection_text(client):
    res = client.post("/api/lens", json={"model": "gpt2", "prompt": "Paris is"})  # hub model, offline
    assert res.status_code == 409, res.text
    message = res.json()["error"]["message"]
    assert "gpt2" in message and "huggingface" not in message.lower() and "http" not in message.lower()


# --- huge and negative integers in every integer field --------------------------------------

EIFFEL = {"prompt": "The Eiffel Tower is in", "target": " Paris"}
INT_FIELDS = [
    ("/api/lens", {"prompt": "Paris is"}, "top_k"),
    ("/api/nodes/project", {"prompt": "Paris is", "node": "a0.h0"}, "position"),
    ("/api/nodes/project", {"prompt": "Paris is", "node": "a0.h0"}, "k"),
    ("/api/nodes/detail", {"prompt": "Paris is", "node": "a0.h0"}, "k"),
    ("/api/circuits", {**EIFFEL, "method": "eap"}, "top_n"),
    ("/api/circuits", {**EIFFEL, "method": "eap"}, "ig_steps"),
    ("/api/circuits", {**EIFFEL, "method": "eap"}, "max_edges_returned"),
    ("/api/circuits", {**EIFFEL, "method": "eap"}, "random_seeds"),
    ("/api/edits", {**EIFFEL, "method": "ft-m", "subject": "Eiffel Tower", "target": " Rome"}, "layer"),
    ("/api/jobs:acdc", EIFFEL, "max_edges"),
    ("/api/jobs:relation", {"relation": "country_capital_city"}, "n"),
    ("/api/jobs:relation", {"relation": "country_capital_city"}, "top_n"),
    ("/api/jobs:relation", {"relation": "country_capital_city"}, "k"),
    ("/api/jobs:sweep", EIFFEL, "ig_steps"),
]


@pytest.mark.parametrize("value", [2**63, 2**80, -(2**63), -1])
@pytest.mark.parametrize("path, body, field", INT_FIELDS, ids=[f"{p}.{f}" for p, _, f in INT_FIELDS])
def test_out_of_range_integers_are_4xx(client, path, body, field, value):
    if value == -1 and field == "position":
        pytest.skip("-1 is a valid position (the last)")
    if path.startswith("/api/jobs:"):
        path, body = "/api/jobs", {"kind": path.split(":")[1], "params": {**body, field: value}}
    else:
        body = {**body, field: value}
    res = client.post(path, json=body)
    assert 400 <= res.status_code < 500, (path, field, value, res.status_code, res.text[:300])
    assert field in res.json()["error"]["message"], res.text[:300]


@pytest.mark.parametrize("sizes", [[2**63], [2**80], [10**9]])
def test_sweep_sizes_beyond_the_graph_are_4xx(client, sizes):
    res = client.post("/api/jobs", json={"kind": "sweep", "params": {**EIFFEL, "sizes": sizes}})
    assert res.status_code == 422 and "sizes" in res.json()["error"]["message"], res.text[:300]


@pytest.mark.parametrize("url", [
    "/api/results?q=%ED%A0%80", "/api/results?q=%00", "/api/results?model=%FF%FE", "/api/results?saved=maybe",
    "/api/results?limit=%00", "/api/jobs/%ED%A0%80", "/api/jobs/%00", "/api/edits/%FF", "/api/views/%ED%A0%80",
    "/api/results/%00/export", "/api/circuits/graph-stats?model=%ED%A0%80",
    "/api/circuits/" + "a" * 64 + "/nodes/%ED%A0%80", "/api/results/..%2F..%2Fetc%2Fpasswd",
])
def test_hostile_paths_and_queries_get_the_envelope(client, url):
    res = client.get(url)
    assert res.status_code in (200, 404, 422), (url, res.status_code, res.text[:200])
    body = res.json()
    assert ("error" in body) == (res.status_code != 200), body


@pytest.mark.parametrize("body", [
    '{"prompt": "ab\\ud800cd"}',  # a lone surrogate: not a string
    '{"prompt": "\\u00b3S\\uda9a\\udc0b\\u05a1", "target": "\\u0015\\"\\u00ca", "threshold": 0.0, "method": "eap"}',
    '{"prompt": "a", "target": " b", "method": "eap", "top_n": 1e400}',
    '{"prompt": "a", "target": " b", "method": "eap", "threshold": NaN}',
])
def test_hostile_circuit_bodies_never_500(client, body):
    res = client.post("/api/circuits", content=body, headers={"content-type": "application/json"})
    assert res.status_code in (200, 400, 422), res.text[:300]

"""Stored results over HTTP: list/search, save, export, views, permalinks and hostile ids."""

from __future__ import annotations

import io
import json
from urllib.parse import parse_qs, urlsplit

import networkx as nx
import pytest
from fastapi.testclient import TestClient

from kcircuits.api.app import ROUTE_MODULES

REV = "sha256:" + "ef" * 32
HOSTILE_PROMPT = '<script>alert(1)</script><img src=x onerror="alert(2)"> The Eiffel Tower is in'


def _circuit(prompt: str, method: str = "eap") -> dict:
    """A minimal circuit result in the wire format (2 layers, 1 head)."""
    nodes = [{"id": "input", "kind": "input", "layer": None, "head": None, "role": None, "score": 0.0,
              "in_circuit": True},
             {"id": "a0.h0", "kind": "head", "layer": 0, "head": 0, "role": "mover", "score": 0.5, "in_circuit": True},
             {"id": "m1", "kind": "mlp", "layer": 1, "head": None, "role": None, "score": 0.25, "in_circuit": True},
             {"id": "logits", "kind": "logits", "layer": None, "head": None, "role": None, "score": 1.0,
              "in_circuit": True}]
    edges = [{"source": "input", "target": "a0.h0", "slot": "q", "receiver": "a0.h0<q>", "score": 0.75,
              "in_circuit": True},
             {"source": "a0.h0", "target": "m1", "slot": "mlp_in", "receiver": "m1", "score": -0.5, "in_circuit": True},
             {"source": "m1", "target": "logits", "slot": "logits", "receiver": "logits", "score": 0.125,
              "in_circuit": True}]
    return {"schema_version": 1, "kind": "circuit", "model": "tiny-gpt2", "revision": REV, "prompt": prompt,
            "target": " Paris", "method": method, "graph": {"n_layers": 2, "n_heads": 1}, "nodes": nodes,
            "edges": edges, "metrics": {"faithfulness": 0.9}}


@pytest.fixture
def client(api_settings):
    """The real app with an empty worker: these routes never run a model (no model boot needed)."""
    from kcircuits.api.app import create_app
    from kcircuits.lm.worker import ModelWorker

    app = create_app(api_settings, worker=ModelWorker(api_settings), preload=False)
    with TestClient(app) as test_client:
        yield test_client


def _put(client, prompt=HOSTILE_PROMPT, method="eap") -> dict:
    circuit = _circuit(prompt, method)
    request = {"model": "tiny-gpt2", "prompt": prompt, "target": " Paris", "method": method}
    return client.app.state.store.get_or_compute("circuit", request, REV, lambda: circuit)


def test_get_list_save_and_stats(client):
    stored = _put(client)
    rid = stored["id"]
    other = _put(client, prompt="Rome is the capital of", method="eap-ig")
    body = client.get(f"/api/results/{rid}").json()
    assert {k: v for k, v in body.items() if k not in ("id", "provenance", "saved", "title")} == \
        _circuit(HOSTILE_PROMPT)
    assert body["id"] == rid and body["provenance"]["revision"] == REV
    assert client.get(f"/api/circuits/{rid}").json() == body
    listed = client.get("/api/results").json()
    assert listed["total"] == 2 and {i["id"] for i in listed["items"]} == {rid, other["id"]}
    assert [i["id"] for i in client.get("/api/results", params={"q": "rome"}).json()["items"]] == [other["id"]]
    assert client.get("/api/results", params={"method": "eap"}).json()["total"] == 1
    assert client.get("/api/results", params={"model": "tiny-llama"}).json()["total"] == 0
    assert client.get("/api/results", params={"limit": 0}).status_code == 422
    saved = client.post(f"/api/results/{rid}/save", json={"title": "Eiffel"})
    assert saved.status_code == 200 and saved.json() == {"id": rid, "saved": True, "title": "Eiffel"}
    assert client.post(f"/api/results/{other['id']}/save").json()["saved"] is True
    assert client.get("/api/results", params={"saved": True}).json()["total"] == 2
    assert client.post(f"/api/results/{rid}/save", json={"bogus": 1}).status_code == 422
    stats = client.get("/api/results/stats").json()
    assert stats == {"total": 2, "computed_results": 2, "cache_hits": 0}
    _put(client)
    assert client.get("/api/results/stats").json()["cache_hits"] == 1


def test_unknown_ids_are_404_with_the_error_envelope(client):
    for path in ("/api/results/" + "a" * 64, "/api/circuits/" + "a" * 64, "/api/results/" + "a" * 64 + "/export",
                 "/api/views/abcdefabcdef"):
        res = client.get(path)
        assert res.status_code == 404 and res.json()["error"]["type"] == "not_found", path
    assert client.post("/api/results/" + "a" * 64 + "/save", json={}).status_code == 404
    lens = client.app.state.store.get_or_compute("lens", {"model": "tiny-gpt2", "prompt": "p"}, REV, lambda: {"layers": []})
    assert client.get(f"/api/results/{lens['id']}").status_code == 200
    assert client.get(f"/api/circuits/{lens['id']}").status_code == 404  # not a circuit


def test_export_formats(client):
    rid = _put(client)["id"]
    res = client.get(f"/api/results/{rid}/export", params={"format": "graphml"})
    assert res.status_code == 200 and res.headers["content-type"].startswith("application/graphml+xml")
    assert f"kcircuits-{rid[:12]}.graphml" in res.headers["content-disposition"]
    graph = nx.read_graphml(io.StringIO(res.text), force_multigraph=True)
    assert graph.number_of_edges() == 3 and set(graph.nodes) == {"input", "a0.h0", "m1", "logits"}
    dot = client.get(f"/api/results/{rid}/export", params={"format": "dot"}).text
    assert dot.startswith("digraph") and '"a0.h0" -> "m1"' in dot
    exported = client.get(f"/api/results/{rid}/export").json()
    assert exported == client.get(f"/api/results/{rid}").json()
    assert client.get(f"/api/results/{rid}/export", params={"format": "exe"}).status_code == 422
    lens = client.app.state.store.get_or_compute("lens", {"model": "tiny-gpt2", "prompt": "q"}, REV, lambda: {"layers": []})
    assert client.get(f"/api/results/{lens['id']}/export", params={"format": "dot"}).status_code == 422


def test_views_and_short_links(client):
    rid = _put(client)["id"]
    state = {"threshold": 0.05, "node": "a0.h0", "step": 2, "labels": True, "show_all": False, "hidden": None}
    made = client.post("/api/views", json={"result_id": rid, "state": state})
    assert made.status_code == 200
    short = made.json()["short"]
    assert made.json()["url"] == f"/v/{short}"
    assert client.get(f"/api/views/{short}").json() == {"result_id": rid, "state": state}
    res = client.get(f"/v/{short}", follow_redirects=False)
    assert res.status_code == 302
    location = urlsplit(res.headers["location"])
    assert location.path == f"/c/{rid}"
    assert parse_qs(location.query) == {"threshold": ["0.05"], "node": ["a0.h0"], "step": ["2"], "labels": ["1"],
                                        "show_all": ["0"]}
    assert client.get(res.headers["location"]).status_code == 200
    assert client.post("/api/views", json={"result_id": "b" * 64, "state": {}}).status_code == 404
    assert client.post("/api/views", json={"result_id": "../../etc/passwd", "state": {}}).status_code == 404
    assert client.post("/api/views", json={"result_id": rid, "state": [1]}).status_code == 422
    assert client.post("/api/views", json={"result_id": rid, "state": {}, "x": 1}).status_code == 422
    missing = client.get("/v/zzzzzzzzzzzz", follow_redirects=False)
    assert missing.status_code == 404 and "not found" in missing.text.lower()


HOSTILE_IDS = ["../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "..\\..\\etc\\passwd",
               "A" * 10_240, "0" * 63, "g" * 64, "0" * 65, "%00", "index.html", "static", "' OR 1=1 --"]


@pytest.mark.parametrize("prefix", ["/c/", "/api/results/", "/api/circuits/", "/v/", "/api/views/"])
def test_hostile_ids_never_read_files_or_crash(client, prefix):
    _put(client)
    for bad in HOSTILE_IDS:
        res = client.get(prefix + bad, follow_redirects=False)
        assert res.status_code in (404, 422), (prefix, bad[:20], res.status_code)
        assert "root:" not in res.text and "[tool." not in res.text
        assert len(res.content) < 5_000  # the id is never echoed back
    for bad in HOSTILE_IDS[:4]:
        assert client.get(f"/api/results/{bad}/export").status_code in (404, 422)
        assert client.post(f"/api/results/{bad}/save", json={}).status_code in (404, 405, 422)


def test_permalink_shell_is_static_and_never_interpolates(client):
    rid = _put(client)["id"]
    other = _put(client, prompt="plain prompt")["id"]
    res = client.get(f"/c/{rid}", params={"threshold": "<script>x</script>"})
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/html")
    assert "<script>alert" not in res.text and "onerror" not in res.text and "<script>x" not in res.text
    assert res.text == client.get(f"/c/{other}").text  # one static shell for every id
    assert "Content-Security-Policy" in res.headers
    unknown = client.get("/c/" + "c" * 64)
    assert unknown.status_code == 404 and unknown.text == res.text  # the SPA shows its own message
    malformed = client.get("/c/not-an-id")
    assert malformed.status_code == 404 and "not found" in malformed.text.lower()
    api = client.get(f"/api/results/{rid}")
    assert api.headers["content-type"] == "application/json"
    assert api.json()["prompt"] == HOSTILE_PROMPT
    assert json.loads(api.text)["provenance"]["request"]["prompt"] == HOSTILE_PROMPT


def test_graph_stats_not_shadowed(client):
    """/api/circuits/graph-stats reaches E1's route whatever the router order (ids are 64 hex only)."""
    if "circuits" not in ROUTE_MODULES:
        pytest.skip("routes/circuits.py (E1) not registered yet")
    res = client.get("/api/circuits/graph-stats", params={"model": "tiny-gpt2"})
    assert res.status_code == 200 and res.json()["model"] == "tiny-gpt2" and res.json()["total_edges"] > 0
    missing = client.get("/api/circuits/" + "0" * 64)
    assert missing.status_code == 404 and missing.json()["error"]["message"] == "no stored result with this id"


def test_jobs_are_persisted_by_the_app(client):
    """The app's job listener records each job's state in the store (status, progress, error)."""
    import time

    jobs, store = client.app.state.jobs, client.app.state.store

    def body(ctx):
        ctx.progress(0.5, "half")
        return {"id": "d" * 64, "kind": "circuit"}

    def failing(ctx):
        raise ValueError("boom")

    ok, bad = jobs.create("sweep", body, {"n": 1}), jobs.create("sweep", failing, {})
    deadline = time.time() + 20
    while time.time() < deadline and not all(
            (store.get_job(j.id) or {}).get("status") in ("succeeded", "failed") for j in (ok, bad)):
        time.sleep(0.05)
    done = store.get_job(ok.id)
    assert done["status"] == "succeeded" and done["progress"] == 1.0 and done["result_id"] == "d" * 64
    assert done["params"] == {"n": 1} and done["finished_at"] >= done["created_at"]
    failed = store.get_job(bad.id)
    assert failed["status"] == "failed" and failed["error"]

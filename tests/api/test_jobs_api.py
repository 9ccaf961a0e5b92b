"""Jobs over HTTP: 202 + id, status, SSE progress events, cancel, bad params."""

from __future__ import annotations

import json
import time

EIFFEL = {"prompt": "The Eiffel Tower is located in the city of", "target": " Paris"}


def _wait(client, job_id, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] in {"succeeded", "failed", "cancelled"}:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish")


def _events(client, job_id):
    events = []
    with client.stream("GET", f"/api/jobs/{job_id}/events") as res:
        assert res.status_code == 200 and res.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in res.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
    return events


def test_acdc_job_runs_with_progress_events(client):
    res = client.post("/api/jobs", json={"kind": "acdc", "params": {**EIFFEL, "model": "tiny-gpt2", "tau": 0.05}})
    assert res.status_code == 202, res.text
    job_id = res.json()["id"]
    job = _wait(client, job_id)
    assert job["status"] == "succeeded", job
    result = job["result"]
    assert result["method"] == "acdc" and result["graph"]["total_edges"] == 110
    assert result["metrics"]["edges"] == sum(e["in_circuit"] for e in result["edges"])
    events = _events(client, job_id)  # replayed from the start, ends after the terminal event
    names = [name for name, _ in events]
    assert names[0] == "queued" and names[-1] == "succeeded" and "progress" in names
    done = [data["done"] for name, data in events if name == "progress"]
    assert done and done == sorted(done)


def test_cancel_acdc_job_on_larger_model(client):
    """ACDC on a GPT-2-small-shaped random model evaluates ~32k edges: cancel lands mid-run."""
    params = {**EIFFEL, "model": "gpt2-small-random", "tau": -1e9, "max_edges": 40_000}
    job_id = client.post("/api/jobs", json={"kind": "acdc", "params": params}).json()["id"]
    deadline = time.monotonic() + 120
    while client.get(f"/api/jobs/{job_id}").json()["progress"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    cancel = client.delete(f"/api/jobs/{job_id}")
    assert cancel.status_code == 200 and cancel.json()["status"] in {"cancelling", "cancelled"}
    job = _wait(client, job_id)
    assert job["status"] == "cancelled" and job["result"] is None and 0 < job["progress"] < 1.0
    # the worker is free again: an interactive request is served
    assert client.post("/api/lens", json={"prompt": "hello"}).status_code == 200


def test_bad_job_requests(client):
    assert client.post("/api/jobs", json={"kind": "mystery", "params": {}}).status_code == 422
    res = client.post("/api/jobs", json={"kind": "acdc", "params": {"prompt": "x"}})
    assert res.status_code == 422 and "target" in res.json()["error"]["message"]
    res = client.post("/api/jobs", json={"kind": "acdc", "params": {**EIFFEL, "bogus": 1}})
    assert res.status_code == 422 and "bogus" in res.json()["error"]["message"]
    res = client.post("/api/jobs", json={"kind": "acdc", "params": {**EIFFEL, "model": "nope"}})
    assert res.status_code == 404
    assert client.get("/api/jobs/" + "f" * 32).status_code == 404
    assert client.get("/api/jobs/" + "f" * 32 + "/events").status_code == 404
    assert client.delete("/api/jobs/../../etc/passwd").status_code == 404


def test_sweep_job_spans_empty_to_full_circuit(client):
    """Size 0 is the empty circuit and size = every edge the full one. The tiny random model's
    answer barely moves under zero ablation, so faithfulness is undefined at every size, and the
    result says why instead of printing a ratio of noise."""
    params = {**EIFFEL, "model": "tiny-gpt2", "method": "eap", "ablation": "zero", "metric": "logit_diff",
              "sizes": [0, 5, 20, 110]}
    res = client.post("/api/jobs", json={"kind": "sweep", "params": params})
    assert res.status_code == 202, res.text
    job = _wait(client, res.json()["id"])
    assert job["status"] == "succeeded", job
    rows = job["result"]["rows"]
    assert [r["top_n"] for r in rows] == [0, 5, 20, 110]
    assert rows[0]["edges"] == 0 and rows[-1]["edges"] == 110
    assert "faithfulness" in job["result"]["curve"]["faithfulness_undefined"]
    assert all(r["faithfulness"] is None for r in rows)
    assert [r["edges"] for r in rows] == sorted(r["edges"] for r in rows)
    bad = client.post("/api/jobs", json={"kind": "sweep", "params": {**params, "sizes": [-1]}})
    assert bad.status_code == 422 and "sizes" in bad.json()["error"]["message"]


def test_relation_job_gives_the_table_row(client):
    """A relation job returns the same Table 1 row as the engine; the relations list names it."""
    relations = client.get("/api/relations").json()["items"]
    assert any(r["name"] == "country_capital_city" and r["category"] == "factual" for r in relations)
    params = {"model": "tiny-gpt2", "relation": "country_capital_city", "n": 3, "ablation": "zero",
              "top_n": 110, "k": 25_000, "known_k": 50_257}
    res = client.post("/api/jobs", json={"kind": "relation", "params": params})
    assert res.status_code == 202, res.text
    job = _wait(client, res.json()["id"])
    assert job["status"] == "succeeded", job
    row = job["result"]
    assert row["kind"] == "relation_row" and row["n_validation"] == 3 and row["n_test"] == 3
    assert row["edges"] == 110 and row["test"]["circuit"] == row["test"]["original"]  # the full circuit
    bad = client.post("/api/jobs", json={"kind": "relation", "params": {**params, "relation": "no_such"}})
    assert bad.status_code == 422 and "no_such" in bad.json()["error"]["message"]


def test_job_results_are_stored_and_not_recomputed(client):
    """Job results go to the content-addressed store: the same sweep twice gives the same id, the
    second from the store; an ACDC circuit gets a permalink like any circuit."""
    params = {**EIFFEL, "model": "tiny-gpt2", "method": "eap", "ablation": "zero", "sizes": [5, 50]}
    first = _wait(client, client.post("/api/jobs", json={"kind": "sweep", "params": params}).json()["id"])
    second = _wait(client, client.post("/api/jobs", json={"kind": "sweep", "params": params}).json()["id"])
    assert first["status"] == second["status"] == "succeeded"
    assert first["result"]["cached"] is False and second["result"]["cached"] is True
    assert first["result"]["id"] == second["result"]["id"]
    assert second["result"]["rows"] == first["result"]["rows"]
    stored = client.get(f"/api/results/{first['result']['id']}").json()
    assert stored["kind"] == "sweep" and stored["rows"] == first["result"]["rows"]
    other = _wait(client, client.post("/api/jobs", json={"kind": "sweep", "params": {**params, "sizes": [5]}}).json()["id"])
    assert other["result"]["id"] != first["result"]["id"]

    acdc = _wait(client, client.post("/api/jobs", json={"kind": "acdc", "params": {
        **EIFFEL, "model": "tiny-gpt2", "tau": 0.05}}).json()["id"])
    circuit_id = acdc["result"]["id"]
    permalink = client.get(f"/api/circuits/{circuit_id}").json()
    assert permalink["method"] == "acdc" and permalink["provenance"]["method"] == "acdc"
    assert [e["source"] for e in permalink["edges"]] == [e["source"] for e in acdc["result"]["edges"]]
    assert client.get(f"/api/jobs/{acdc['id']}").json()["result"]["id"] == circuit_id

"""Health, models, lens over HTTP; bad input gets a 4xx that names the problem, never a 500."""

from __future__ import annotations

import pytest


def test_health_ready_info_models(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["model"] == "tiny-gpt2"
    info = client.get("/info").json()
    assert info["default_model"] == "tiny-gpt2" and info["limits"]["max_prompt_chars"] == 500
    ids = {m["id"] for m in client.get("/api/models").json()["models"]}
    assert {"smollm2-135m", "gpt2", "gpt2-medium", "tinyllama", "tiny-gpt2"} <= ids


def test_lens_shape_and_target(client):
    res = client.post("/api/lens", json={"prompt": "The Eiffel Tower is located in the city of",
                                         "target": " Paris", "top_k": 3, "kl": True})
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["model"] == "tiny-gpt2" and body["tokens"][0] == "<|endoftext|>"
    assert len(body["layers"]) == 3 and len(body["layers"][0]["positions"]) == len(body["tokens"])
    assert len(body["layers"][0]["positions"][0]["top"]) == 3
    assert body["target"]["token"] == " Paris" and len(body["target"]["rank"]) == 3
    assert body["subject"]["text"] == "Eiffel Tower" and body["subject"]["auto"] is True
    positions = body["subject"]["positions"]
    assert "".join(body["tokens"][i] for i in positions).strip() == "Eiffel Tower"
    assert positions == list(range(positions[0], positions[-1] + 1)) and positions[0] == 2  # after BOS, "The"
    assert body["target"]["subject_rank"] is not None


def test_lens_on_second_model_and_csp(client):
    res = client.post("/api/lens", json={"prompt": "hello world", "model": "tiny-llama"})
    assert res.status_code == 200 and res.json()["model"] == "tiny-llama"
    assert "default-src 'self'" in res.headers["content-security-policy"]


@pytest.mark.parametrize(
    ("payload", "status", "needle"),
    [
        ({"prompt": ""}, 422, "prompt is empty"),
        ({"prompt": "   "}, 422, "prompt is empty"),
        ({"prompt": "x" * 100_000}, 422, "limit is 500"),
        ({"prompt": "word " * 90}, 422, "tokens; the limit is 64"),
        ({"prompt": "hi", "model": "no-such-model"}, 404, "known ids"),
        ({"prompt": "hi", "top_k": 10**9}, 422, "top_k"),
        ({"prompt": "hi", "top_k": 0}, 422, "top_k"),
        ({"prompt": "hi", "surprise": 1}, 422, "surprise"),
        ({"prompt": "hi", "ln_mode": "weird"}, 422, "ln_mode"),
        ({"prompt": "hi", "subject": "absent"}, 422, "does not occur in the prompt"),
        ({"prompt": "hi", "target": ""}, 422, "target"),
        ({}, 422, "prompt"),
    ],
)
def test_bad_lens_input(client, payload, status, needle):
    res = client.post("/api/lens", json=payload)
    assert res.status_code == status, res.text
    err = res.json()["error"]
    assert needle in err["message"], err


def test_invalid_json_and_big_body(client):
    res = client.post("/api/lens", content=b"{not json", headers={"content-type": "application/json"})
    assert res.status_code == 400 and "not valid JSON" in res.json()["error"]["message"]
    res = client.post("/api/lens", content=b"x" * 1_100_000, headers={"content-type": "application/json"})
    assert res.status_code == 413


def test_unknown_route_is_json_404(client):
    res = client.get("/api/nope")
    assert res.status_code == 404 and res.json()["error"]["type"] == "not_found"


def test_saved_lens_trace_gets_a_permalink(client):
    body = {"model": "tiny-gpt2", "prompt": "The capital of France is", "target": " Paris", "top_k": 3}
    live = client.post("/api/lens", json=body).json()
    assert "id" not in live  # the live lens stores nothing
    saved = client.post("/api/lens", json={**body, "save": True}).json()
    assert saved["cached"] is False and saved["kind"] == "lens" and saved["provenance"]["kind"] == "lens"
    assert saved["layers"] == live["layers"] and saved["target"] == live["target"]
    again = client.post("/api/lens", json={**body, "save": True}).json()
    assert again["id"] == saved["id"] and again["cached"] is True
    stored = client.get(f"/api/results/{saved['id']}").json()
    assert stored["kind"] == "lens" and stored["layers"] == live["layers"]
    other = client.post("/api/lens", json={**body, "top_k": 4, "save": True}).json()
    assert other["id"] != saved["id"]

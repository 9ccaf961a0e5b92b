"""Node panel endpoints: head detail (pattern, tokens, role scores), MLP projection, bad nodes."""

from __future__ import annotations

import pytest


def test_head_detail(client):
    res = client.post("/api/nodes/detail", json={"prompt": "The Eiffel Tower is located in the city of",
                                                 "target": " Paris", "node": "a1.h2", "k": 4})
    assert res.status_code == 200, res.text
    body = res.json()
    n = len(body["tokens"])
    assert body["kind"] == "head" and body["layer"] == 1 and body["head"] == 2
    assert len(body["pattern"]) == n and all(len(row) == n for row in body["pattern"])
    for q, row in enumerate(body["pattern"]):  # causal, normalised attention
        assert abs(sum(row) - 1) < 1e-4 and all(p == 0 for p in row[q + 1:])
    assert body["subject_positions"] and not set(body["subject_positions"]) & set(body["relation_positions"])
    assert 0 not in body["relation_positions"]  # BOS excluded
    assert len(body["promoted"]) == 4 and set(body["scores"]) == {
        "subject_attention", "relation_attention", "subject_dla_share", "relation_dla_share", "dla", "attribution",
        "target_rank", "subject_rank"}
    assert isinstance(body["significant"], bool) and set(body["significance"]) == {"dla", "attribution"}
    assert body["role"] is None or body["significant"]
    expected = sum(body["pattern"][-1][p] for p in body["subject_positions"])
    assert abs(body["scores"]["subject_attention"] - expected) < 1e-5


def test_mlp_and_special_nodes(client):
    mlp = client.post("/api/nodes/detail", json={"prompt": "one two three", "node": "m0"}).json()
    assert mlp["kind"] == "mlp" and len(mlp["promoted"]) == 10
    assert client.post("/api/nodes/detail", json={"prompt": "x", "node": "logits"}).json()["kind"] == "logits"
    bad = client.post("/api/nodes/detail", json={"prompt": "x", "node": "<script>"})
    assert bad.status_code == 422 and "node: String should match pattern" in bad.json()["error"]["message"]


def test_stored_circuit_node_unknown_ids(client):
    for circuit_id in ["0" * 64, "../../etc/passwd", "x" * 10_000]:
        res = client.get(f"/api/circuits/{circuit_id}/nodes/a0.h0")
        assert res.status_code in (404, 422), (circuit_id[:20], res.status_code)


def test_node_projection(client):
    res = client.post("/api/nodes/project", json={"prompt": "one two three", "node": "a1.h2", "k": 3})
    assert res.status_code == 200 and len(res.json()["promoted"]) == 3
    bad = client.post("/api/nodes/project", json={"prompt": "one two", "node": "a7.h0"})
    assert bad.status_code == 422 and "a7.h0" in bad.json()["error"]["message"]


def test_stored_circuit_node_role_matches_the_circuit(client):
    """A stored circuit's node panel judges significance among the circuit's heads, as the circuit did."""
    out = client.post("/api/circuits", json={"prompt": "The capital of France is the city of", "target": " Paris",
                                            "method": "eap", "top_n": 40, "random_seeds": 0,
                                            "roles": {"significance_k": 1.0}}).json()
    assert out.get("id"), "the API test client stores results"
    for hid, info in out["heads"].items():
        body = client.get(f"/api/circuits/{out['id']}/nodes/{hid}").json()
        assert body["role"] == info["role"] and body["significant"] == info["significant"], hid
        assert body["scores"]["target_rank"] == info["target_rank"]
        assert body["scores"]["attribution"] == pytest.approx(info["attribution"])

"""POST /api/circuits and GET /api/circuits/graph-stats over HTTP."""

from __future__ import annotations

import pytest

PROMPT = "The capital of France is the city of"
CORRUPT = "The capital of Spain is the city of"


def test_graph_stats_from_registry_facts(client):
    res = client.get("/api/circuits/graph-stats", params={"model": "gpt2-medium"})
    assert res.status_code == 200, res.text
    body = res.json()
    assert (body["total_nodes"], body["total_edges"]) == (410, 231_877) and body["model"] == "gpt2-medium"
    llama = client.get("/api/circuits/graph-stats", params={"model": "tiny-llama", "kv_mode": "ungrouped"}).json()
    grouped = client.get("/api/circuits/graph-stats", params={"model": "tiny-llama"}).json()
    assert llama["total_edges"] == 110 and grouped["total_edges"] == 82
    assert client.get("/api/circuits/graph-stats", params={"model": "nope"}).status_code == 404


def test_circuit_round_trip_and_cache(client):
    body = {"prompt": PROMPT, "target": " Paris", "corrupt_prompt": CORRUPT, "method": "eap", "top_n": 10,
            "random_seeds": 1, "max_edges_returned": 20}
    res = client.post("/api/circuits", json=body)
    assert res.status_code == 200, res.text
    out = res.json()
    assert out["kind"] == "circuit" and out["model"] == "tiny-gpt2" and out["method"] == "eap"
    assert out["graph"]["total_edges"] == 110 and out["corrupt_prompt"] == CORRUPT
    assert out["metrics"]["edges"] <= 10 and len(out["edges"]) >= 20
    assert {"nodes", "edges", "metrics", "heads", "timings", "subject"} <= set(out)
    again = client.post("/api/circuits", json=body).json()
    if "cached" in out:  # a store is attached: the second identical request is served from it
        assert again["cached"] is True and again["id"] == out["id"]
    assert again["metrics"] == out["metrics"]


def test_circuit_head_roles_carry_scores_and_their_thresholds(client):
    body = {"prompt": PROMPT, "target": " Paris", "corrupt_prompt": CORRUPT, "method": "eap", "top_n": 40,
            "random_seeds": 0, "max_edges_returned": 0, "roles": {"significance_k": 1.5, "write_top_k": 20}}
    res = client.post("/api/circuits", json=body)
    assert res.status_code == 200, res.text
    out = res.json()
    assert out["roles"]["thresholds"]["significance_k"] == 1.5 and out["roles"]["thresholds"]["write_top_k"] == 20
    assert out["roles"]["relation_tokens"] == [" capital", " city"]
    circuit_heads = {n["id"] for n in out["nodes"] if n["kind"] == "head" and n["in_circuit"]}
    assert set(out["heads"]) == circuit_heads and out["roles"]["counts"]["total"] == len(circuit_heads)
    for hid, info in out["heads"].items():
        assert {"target_rank", "subject_rank", "significant", "significance", "dla", "attribution"} <= set(info)
        assert info["role"] is None or info["significant"]
        assert next(n for n in out["nodes"] if n["id"] == hid)["role"] == info["role"]
    for node in out["nodes"]:  # top lens tokens on the circuit's heads and MLPs only
        top = node["top_token"]
        if node["in_circuit"] and node["kind"] in ("head", "mlp"):
            assert set(top) == {"token", "id", "logit"} and isinstance(top["token"], str)
        else:
            assert top is None
    for bad, needle in [({"significance_k": -1}, "significance_k"), ({"mover_attention": 2}, "mover_attention"),
                        ({"nope": 1}, "nope")]:
        res = client.post("/api/circuits", json={**body, "roles": bad})
        assert res.status_code == 422 and needle in res.text, res.text


def test_exact_on_small_graph_and_llama(client):
    res = client.post("/api/circuits", json={"prompt": PROMPT, "target": " Paris", "method": "exact",
                                             "ablation": "zero", "top_n": 5, "random_seeds": 0,
                                             "with_heads": False, "model": "tiny-llama"})
    assert res.status_code == 200, res.text
    assert res.json()["graph"]["total_edges"] == 82 and res.json()["method"] == "exact"


@pytest.mark.parametrize("patch,needle", [
    ({"prompt": ""}, "prompt"),
    ({"target": ""}, "target"),
    ({"method": "magic"}, "method"),
    ({"method": "acdc"}, "job"),
    ({"ablation": "blur"}, "ablation"),
    ({"top_n": 111}, "top_n"),
    ({"top_n": 5, "threshold": 0.1}, "top_n or threshold"),
    ({"corrupt_prompt": "Too short"}, "tokens"),
    ({"kv_mode": "ungrouped", "model": "tiny-llama"}, "grouped"),
    ({"unknown_field": 1}, "unknown_field"),
    ({"ig_steps": 0}, "ig_steps"),
    ({"prompt": "x" * 501}, "limit"),
])
def test_bad_requests_are_422_with_a_message(client, patch, needle):
    body = {"prompt": PROMPT, "target": " Paris", "top_n": 5, "random_seeds": 0, **patch}
    res = client.post("/api/circuits", json=body)
    assert res.status_code == 422, res.text
    assert needle in res.text


def test_exact_refused_on_large_graph(client):
    res = client.post("/api/circuits", json={"prompt": PROMPT, "target": " Paris", "method": "exact",
                                             "model": "gpt2-small-random"})
    assert res.status_code == 422 and "exact" in res.json()["error"]["message"]

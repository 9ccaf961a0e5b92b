"""Knowledge neurons over HTTP: the neurons and neurons-compare jobs, hook-only edits, bad input."""

from __future__ import annotations

import time

import pytest
import torch
from tests.api.test_jobs_api import _events, _wait

FACT = {"prompt": "The capital of France is", "target": " Paris"}


def _job(client, kind, params):
    res = client.post("/api/jobs", json={"kind": kind, "params": params})
    assert res.status_code == 202, res.text
    return res.json()["id"]


def test_neurons_job_reports_kns_with_every_threshold_and_is_stored(client):
    params = {**FACT, "model": "tiny-gpt2", "paraphrases": ["The capital city of France is"], "steps": 4,
              "threshold": 0.3, "share": 1.0, "top_k": 5}
    job_id = _job(client, "neurons", params)
    job = _wait(client, job_id)
    assert job["status"] == "succeeded", job
    result = job["result"]
    assert result["kind"] == "neurons" and len(result["prompts"]) == 2
    assert result["params"].items() >= {"steps": 4, "threshold": 0.3, "share": 1.0, "baseline": "zero", "path": "joint"}.items()
    assert len(result["top"]) == 5 and all("promotes" in n for n in result["top"])
    assert all(n["share"] == 1.0 for n in result["neurons"])
    assert len(result["chart"]) == 2 * 32 and len(result["layer_histogram"]) == 2
    names = [name for name, _ in _events(client, job_id)]
    assert "progress" in names and names[-1] == "succeeded"
    stored = client.get(f"/api/results/{result['id']}").json()
    assert stored["kind"] == "neurons" and stored["neurons"] == result["neurons"]
    again = _wait(client, _job(client, "neurons", params))["result"]
    assert again["id"] == result["id"] and again["cached"]


def test_neurons_job_with_relation_templates_and_circuit(client):
    params = {**FACT, "model": "tiny-llama", "relation": "country_capital_city", "subject": "France", "steps": 2,
              "with_circuit": True, "circuit_top_n": 20}
    job = _wait(client, _job(client, "neurons", params))
    assert job["status"] == "succeeded", job
    result = job["result"]
    prompts = [p["prompt"] for p in result["prompts"]]
    assert prompts[0] == FACT["prompt"] and len(prompts) == len(set(prompts)) >= 4
    side = result["circuit"]
    assert side["metrics"]["edges"] >= 1 and set(side["effect_share_edges"]) == {"head", "mlp", "input"}


@pytest.mark.parametrize("params,status,fragment", [
    ({"threshold": 0}, 422, "params.threshold"),
    ({"steps": 0}, 422, "params.steps"),
    ({"relation": "no_such_relation", "subject": "France"}, 422, "relation"),
    ({"relation": "country_capital_city"}, 422, "subject"),
    ({"paraphrases": [""]}, 422, "params.paraphrases"),
    ({"path": "diagonal"}, 422, "params.path"),
    ({"paraphrases": ["x" * 600]}, 422, "paraphrases[0]"),
])
def test_neurons_job_bad_params_are_named(client, params, status, fragment):
    res = client.post("/api/jobs", json={"kind": "neurons", "params": {**FACT, "model": "tiny-gpt2", **params}})
    assert res.status_code == status, res.text
    assert fragment in res.json()["error"]["message"]


def test_compare_job_on_syntax_pairs(client):
    params = {"model": "tiny-gpt2", "n_facts": 1, "n_syntax": 2, "max_prompts": 2, "steps": 2}
    job = _wait(client, _job(client, "neurons-compare", params))
    assert job["status"] == "succeeded", job
    result = job["result"]
    assert result["kind"] == "neurons_compare" and "syntax" in result["summary"]
    assert result["summary"]["syntax"]["n_groups"] == len([r for r in result["rows"] if r["kind"] == "syntax"]) == 2
    assert result["params"]["threshold"] == 0.2 and result["params"]["phenomena"] == ["det_noun", "subj_verb"]
    bad = client.post("/api/jobs", json={"kind": "neurons-compare", "params": {"n_facts": 0, "n_syntax": 0}})
    assert bad.status_code == 422 and "nothing to compare" in bad.json()["error"]["message"]
    bad = client.post("/api/jobs", json={"kind": "neurons-compare", "params": {"relations": ["nope"]}})
    assert bad.status_code == 422 and "relations[0]" in bad.json()["error"]["message"]


def test_compare_job_cancels_mid_run(client):
    params = {"model": "gpt2-small-random", "n_facts": 0, "n_syntax": 40, "steps": 8}
    job_id = _job(client, "neurons-compare", params)
    deadline = time.monotonic() + 120
    while client.get(f"/api/jobs/{job_id}").json()["progress"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.delete(f"/api/jobs/{job_id}").status_code == 200
    job = _wait(client, job_id)
    assert job["status"] == "cancelled" and job["result"] is None and 0 < job["progress"] < 1


def test_edit_route_reports_before_after_and_leaves_weights_alone(client, tiny_gpt2):
    before = {k: v.clone() for k, v in tiny_gpt2.bridge.state_dict().items()}
    body = {**FACT, "model": "tiny-gpt2", "neurons": ["L1.N3", "L0.N10"], "mode": "suppress",
            "relation": "country_capital_city", "subject": "France", "positions": "all"}
    res = client.post("/api/neurons/edit", json=body)
    assert res.status_code == 200, res.text
    out = res.json()
    assert out["kind"] == "neuron_edit" and out["neurons"] == ["L1.N3", "L0.N10"]
    main = out["prompt"]
    assert {"prob", "rank", "top1"} <= set(main["before"]) and {"prob", "rank"} <= set(main["after"])
    assert out["prob_change"] == pytest.approx(main["after"]["prob"] - main["before"]["prob"])
    kinds = {r["kind"] for r in out["rows"]}
    assert {"paraphrase", "other_fact", "unrelated"} <= kinds
    assert out["summary"]["other_fact"]["n"] == 5
    assert all(torch.equal(v, tiny_gpt2.bridge.state_dict()[k]) for k, v in before.items())
    cached = client.post("/api/neurons/edit", json=body).json()
    assert cached["id"] == out["id"] and cached["cached"]


@pytest.mark.parametrize("patch,status,fragment", [
    ({"neurons": ["L7.N1"]}, 422, "outside"),
    ({"neurons": ["m3"]}, 422, "neurons.0: String should match pattern"),
    ({"neurons": []}, 422, "neurons"),
    ({"mode": "erase"}, 422, "mode"),
    ({"relation": "country_capital_city", "subject": "Atlantis"}, 422, "Atlantis"),
    ({"model": "no-such-model"}, 404, "no-such-model"),
    ({"prompt": "x" * 600}, 422, "prompt"),
])
def test_edit_route_bad_input(client, patch, status, fragment):
    res = client.post("/api/neurons/edit", json={**FACT, "model": "tiny-gpt2", "neurons": ["L0.N1"], **patch})
    assert res.status_code == status, res.text
    assert fragment in res.json()["error"]["message"]


def test_syntax_pairs_route(client):
    res = client.get("/api/neurons/syntax", params={"phenomenon": "det_noun", "limit": 3})
    assert res.status_code == 200
    data = res.json()
    assert len(data["items"]) == 3 and data["total"] == 320
    assert all(i["phenomenon"] == "det_noun" for i in data["items"])
    assert client.get("/api/neurons/syntax", params={"limit": 0}).status_code == 422

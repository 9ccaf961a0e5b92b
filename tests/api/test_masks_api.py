"""Parameter masks over HTTP: the mask-train job (curves in its events, stored and unpackable,
cancel and resume from its checkpoint), bad input, the four-way mask-edit job, overlap, and the
comparison with an edge circuit."""

from __future__ import annotations

import time

import pytest
import torch
from tests.api.test_jobs_api import _events, _wait

from kcircuits.circuits import masks as M

TRAIN = {"model": "tiny-llama", "relation": "country_capital_city", "n": 4, "density": 0.25, "steps": 10,
         "eval_every": 5}


def _job(client, kind, params):
    res = client.post("/api/jobs", json={"kind": kind, "params": params})
    assert res.status_code == 202, res.text
    return res.json()["id"]


def _train(client, **patch):
    job_id = _job(client, "mask-train", {**TRAIN, **patch})
    job = _wait(client, job_id)
    assert job["status"] == "succeeded", job
    return job_id, job["result"]


def test_train_job_streams_curves_and_stores_an_unpackable_mask(client, tiny_llama):
    job_id, result = _train(client)
    assert result["kind"] == "mask" and result["curves"]["step"] == [5, 10]
    progress = [data for name, data in _events(client, job_id) if name == "progress"]
    assert [p["curve"]["step"] for p in progress] == [5, 10] and [p["done"] for p in progress] == [5, 10]
    assert [p["curve"]["loss"] for p in progress] == result["curves"]["loss"]
    assert [p["curve"]["faithfulness_kl"] for p in progress] == result["curves"]["faithfulness_kl"]
    assert progress[-1]["progress"] == 1.0 and 0 < progress[0]["progress"] < 1
    stored = client.get(f"/api/masks/stored/{result['id']}").json()
    assert stored["bits"] == result["bits"] and stored["kind"] == "mask"
    lay = M.layout(tiny_llama.bridge)
    mask = M.unpack_mask(stored["bits"], stored["n_gates"])
    assert stored["n_gates"] == lay.n_gates and stored["layout"] == lay.fingerprint()
    assert M.density(mask, lay) == pytest.approx(stored["density"]) and stored["density"] <= 0.25 + 1e-6
    task = M.relation_task(tiny_llama, "country_capital_city", n=4)
    assert task.prompts == stored["task"]["prompts"]
    assert M.evaluate_mask(tiny_llama, task, mask, lay)["kl"] == pytest.approx(stored["faithfulness"]["kl"], rel=1e-4)
    shares = stored["composition"]
    assert sum(v["share_of_mask"] for v in shares.values() if not v["always_kept"]) == pytest.approx(1.0)
    assert shares["embedding"]["always_kept"] and shares["embedding"]["share_inside"] == 1.0
    assert stored["n_params"] == lay.n_params and stored["params"]["warm_start"] == "taylor"
    heads = [c for c in stored["components"] if c["kind"] == "head"]
    assert len(heads) == 2 * 4 and {c["kind"] for c in stored["components"]} == {"head", "kv", "mlp"}
    timing = stored["timing"]
    assert timing["steps_run"] == 10 and timing["resumed_from_step"] == 0 and timing["forward_backward_s"] > 0
    assert client.get(f"/api/results/{result['id']}").json()["bits"] == result["bits"]
    again = _wait(client, _job(client, "mask-train", TRAIN))["result"]
    assert again["id"] == result["id"] and again["cached"]


def test_train_job_cancels_and_the_same_spec_resumes_from_its_checkpoint(client):
    params = {**TRAIN, "steps": 80, "eval_every": 2}
    job_id = _job(client, "mask-train", params)
    deadline = time.monotonic() + 60
    while client.get(f"/api/jobs/{job_id}").json()["progress"] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert client.delete(f"/api/jobs/{job_id}").status_code == 200
    job = _wait(client, job_id)
    assert job["status"] == "cancelled" and job["result"] is None and 0 < job["progress"] < 1
    _, resumed = _train(client, steps=80, eval_every=2)
    timing = resumed["timing"]
    assert timing["resumed_from_step"] >= 2 and timing["steps_run"] == 80 - timing["resumed_from_step"]
    assert resumed["curves"]["step"] == list(range(2, 81, 2))


@pytest.mark.parametrize("patch,fragment", [
    ({"model": "tiny-gpt2"}, "Llama-family"),
    ({"relation": None}, "exactly one task"),
    ({"phenomenon": "det_noun"}, "exactly one task"),
    ({"relation": "no_such_relation"}, "relation"),
    ({"density": 1.0}, "params.density"),
    ({"density": 0}, "params.density"),
    ({"steps": 0}, "params.steps"),
    ({"loss": "mse"}, "params.loss"),
    ({"eval_every": 20}, "eval_every"),
    ({"n": 0}, "params.n"),
])
def test_train_job_bad_params_are_named(client, patch, fragment):
    res = client.post("/api/jobs", json={"kind": "mask-train", "params": {**TRAIN, **patch}})
    assert res.status_code == 422, res.text
    assert fragment in res.json()["error"]["message"]


def test_syntax_task_trains(client):
    _, result = _train(client, relation=None, phenomenon="det_noun", n=3, steps=2, eval_every=1)
    assert result["task"]["kind"] == "syntax" and result["task"]["name"] == "syntax:det_noun"
    assert len(result["task"]["prompts"]) == 3 and result["curves"]["step"] == [1, 2]


def test_edit_job_four_ways_changes_nothing_outside_each_set(client, tiny_llama):
    _, mask = _train(client)
    before = {k: v.clone() for k, v in tiny_llama.bridge.state_dict().items()}
    params = {"mask_id": mask["id"], "prompt": "The Eiffel Tower is in", "target": " Rome", "steps": 3, "lr": 0.01}
    job_id = _job(client, "mask-edit", params)
    job = _wait(client, job_id)
    assert job["status"] == "succeeded", job
    out = job["result"]
    assert out["model"] == "tiny-llama" and [r["variant"] for r in out["rows"]] == ["inside", "complement", "random", "full"]
    rows = {r["variant"]: r for r in out["rows"]}
    assert rows["inside"]["density"] == pytest.approx(mask["density"])
    assert rows["random"]["density"] == pytest.approx(mask["density"], abs=1e-3)
    assert rows["complement"]["density"] == pytest.approx(1 - mask["density"]) and rows["full"]["density"] == 1.0
    for row in rows.values():
        assert row["changed_blocks"] > 0 and row["changed_outside"] == 0
        assert row["nll_post"] < row["nll_pre"] and len(row["losses"]) == 3
        assert 0 <= row["locality"] <= 1
    assert rows["inside"]["changed_blocks"] <= round(mask["density"] * mask["n_gates"]) + mask["n_gates"] // 2
    assert len({r["nll_pre"] for r in rows.values()}) == 1
    assert all(torch.equal(v, tiny_llama.bridge.state_dict()[k]) for k, v in before.items())
    assert [n for n, _ in _events(client, job_id)].count("progress") == 5
    assert client.get(f"/api/masks/edits/{out['id']}").json()["rows"] == out["rows"]
    bad = client.post("/api/jobs", json={"kind": "mask-edit", "params": {**params, "mask_id": "0" * 64}})
    assert bad.status_code == 404 and "mask_id" in bad.json()["error"]["message"]
    bad = client.post("/api/jobs", json={"kind": "mask-edit", "params": {**params, "model": "tiny-gpt2"}})
    assert bad.status_code == 422 and "Llama-family" in bad.json()["error"]["message"]


def test_overlap_diagonal_is_one_and_random_masks_sit_at_their_density(client):
    _, a = _train(client)
    _, b = _train(client, density=0.05, seed=1)
    res = client.post("/api/masks/overlap", json={"mask_ids": [a["id"], b["id"]]})
    assert res.status_code == 200, res.text
    out = res.json()
    assert out["model"] == "tiny-llama" and out["mask_ids"] == [a["id"], b["id"]]
    assert out["matrix"][0][0] == 1.0 and out["matrix"][1][1] == 1.0
    assert out["densities"] == pytest.approx([a["density"], b["density"]])
    # |A ∩ B| / |A| * |A| = |A ∩ B| = |B ∩ A| / |B| * |B|
    assert out["matrix"][0][1] * a["density"] == pytest.approx(out["matrix"][1][0] * b["density"], rel=1e-6)
    assert out["random_matrix"][0][1] == pytest.approx(b["density"], abs=0.03)
    assert out["random_matrix"][1][0] == pytest.approx(a["density"], abs=0.03)
    same = client.post("/api/masks/overlap", json={"mask_ids": [a["id"], a["id"]]})
    assert same.status_code == 422 and "each mask once" in same.json()["error"]["message"]
    missing = client.post("/api/masks/overlap", json={"mask_ids": [a["id"], "f" * 64]})
    assert missing.status_code == 404 and "mask_ids[1]" in missing.json()["error"]["message"]
    assert client.get(f"/api/masks/stored/{'f' * 64}").status_code == 404


def test_components_marked_by_the_edge_circuit(client):
    _, mask = _train(client)
    circuit = client.post("/api/circuits", json={"model": "tiny-llama", "prompt": "The capital of France is",
                                                 "target": " Paris", "method": "eap", "top_n": 12})
    assert circuit.status_code == 200, circuit.text
    circuit = circuit.json()
    res = client.post("/api/masks/components", json={"mask_id": mask["id"], "circuit_id": circuit["id"]})
    assert res.status_code == 200, res.text
    out = res.json()
    nodes = {n["id"] for n in circuit["nodes"] if n.get("in_circuit") and n["kind"] in ("head", "mlp")}
    assert set(out["circuit_nodes"]) == nodes
    for c in out["components"]:
        assert c["in_circuit"] == (c["id"] in nodes if c["kind"] != "kv" else None)
    heads = [c for c in out["components"] if c["kind"] == "head"]
    inside = [c["density"] for c in heads if c["in_circuit"]]
    summary = out["summary"]["head"]
    assert summary["n_in_circuit"] == len(inside) and summary["n_outside"] == len(heads) - len(inside)
    if inside:
        assert summary["mean_density_in_circuit"] == pytest.approx(sum(inside) / len(inside))
    bad = client.post("/api/masks/components", json={"mask_id": circuit["id"], "circuit_id": circuit["id"]})
    assert bad.status_code == 404 and "mask_id" in bad.json()["error"]["message"]

"""Edit sessions over HTTP on the tiny random models: create (job), inspect, compare, use, close."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from kcircuits.api.app import create_app
from kcircuits.lm.worker import ModelWorker

PROMPT = "The Eiffel Tower is located in the city of"
EDIT = {"model": "tiny-gpt2", "method": "ft-m", "prompt": PROMPT, "subject": "Eiffel Tower", "target": " Rome",
        "layer": 0, "params": {"lr": 0.01, "norm_constraint": 0.01, "steps": 10}}


def _wait(client, job_id):
    job = client.app.state.jobs.wait(job_id, timeout=300)
    assert job.status == "succeeded", job.error
    return job


def _start(client, body):
    resp = client.post("/api/edits", json=body)
    assert resp.status_code == 202, resp.text
    data = resp.json()
    assert set(data) == {"session_id", "job_id"}
    return data


def test_edit_lifecycle_compare_and_session_use(client):
    base_lens = client.post("/api/lens", json={"model": "tiny-gpt2", "prompt": PROMPT, "target": " Rome"}).json()
    ids = _start(client, EDIT)
    sid = ids["session_id"]
    _wait(client, ids["job_id"])
    info = client.get(f"/api/edits/{sid}").json()
    assert info["status"] == "ready" and info["method"] == "ft-m" and info["layer"] == 0
    assert info["session_id"] == sid and info["target"] == " Rome" and info["old_target"]
    ev = info["evaluation"]
    assert set(ev) == {"efficacy", "generalisation", "locality", "prob_shift"}
    assert set(ev["efficacy"]) >= {"success", "new_prob", "old_prob", "new_rank"}
    assert ev["prob_shift"]["new"]["post"] > ev["prob_shift"]["new"]["pre"]
    assert ev["locality"]["rate"] is not None and ev["locality"]["items"]
    assert info["expires_at"] > info["created_at"]
    assert [s["session_id"] for s in client.get("/api/edits").json()["items"]] == [sid]
    # other endpoints run on the edited copy when they name the session
    edited_lens = client.post("/api/lens", json={"prompt": PROMPT, "target": " Rome", "session": sid}).json()
    assert edited_lens["session"] == sid
    assert edited_lens["target"]["prob"][-1] > base_lens["target"]["prob"][-1]
    assert edited_lens["target"]["prob"][-1] == pytest.approx(ev["prob_shift"]["new"]["post"], rel=1e-4)
    again = client.post("/api/lens", json={"model": "tiny-gpt2", "prompt": PROMPT, "target": " Rome"}).json()
    assert again["target"]["prob"] == base_lens["target"]["prob"]  # base unchanged
    # comparison: lens curves, the fair circuit pair, head outputs; memoised
    cmp = client.get(f"/api/edits/{sid}/compare", params={"top_n": 20})
    assert cmp.status_code == 200, cmp.text
    data = cmp.json()
    curves = data["lens"]["curves"]
    assert set(curves) == {"new", "old"} and set(curves["new"]) == {"pre", "post"}
    assert curves["new"]["post"]["prob"] == edited_lens["target"]["prob"]
    assert curves["new"]["pre"]["prob"] == pytest.approx(base_lens["target"]["prob"])
    _check_fair_circuits(data, info)
    _check_head_rows(data, info)
    _check_analysis(data, info)
    assert client.app.state.edit_sessions.get(sid).compare  # memoised
    assert client.get(f"/api/edits/{sid}/compare", params={"top_n": 20}).json() == data
    # stored: a permalink that outlives the session, and no recompute for the same edit
    assert data["cached"] is False and data["provenance"]["kind"] == "edit_comparison"
    stored = client.get(f"/api/results/{data['id']}").json()
    assert stored["kind"] == "edit_comparison" and stored["circuit"]["diff"] == data["circuit"]["diff"]
    # closing frees the session; later use is a 404
    assert client.delete(f"/api/edits/{sid}").json() == {"session_id": sid, "closed": True}
    assert client.get(f"/api/edits/{sid}").status_code == 404
    assert client.post("/api/lens", json={"prompt": PROMPT, "session": sid}).status_code == 404
    assert client.delete(f"/api/edits/{sid}").status_code == 404
    assert client.get(f"/api/results/{data['id']}").status_code == 200


def _check_fair_circuits(data: dict, info: dict) -> None:
    """Same method (the default), size and counterfactual on both sides; side states; a score diff
    only when both sides are usable."""
    circ = data["circuit"]
    pre, post = circ["pre"], circ["post"]
    assert data["method"] == pre["method"] == post["method"] == "eap-ig-refine"
    assert pre["target"] == info["old_target"] and post["target"] == " Rome"
    assert pre["params"]["top_n"] == post["params"]["top_n"] == 20
    assert pre["ablation"] == post["ablation"] == circ["counterfactual"]["ablation"]
    assert pre["corrupt_prompt"] == post["corrupt_prompt"] == circ["counterfactual"]["corrupt_prompt"]
    assert pre["params"]["foil"] == post["params"]["foil"] and circ["same_counterfactual"] is True
    assert data["thresholds"]["reweight_rel"] == 0.1 and data["thresholds"]["min_faithfulness"] == 0.8
    for name in ("pre", "post"):
        side = circ["sides"][name]
        assert side["faithfulness"] == circ[name]["metrics"]["faithfulness"]
        assert side["usable"] == (side["reason"] is None)
    if circ["comparable"]:
        pre_in = {f"{e['source']}->{e['receiver']}" for e in pre["edges"] if e["in_circuit"]}
        post_in = {f"{e['source']}->{e['receiver']}" for e in post["edges"] if e["in_circuit"]}
        assert set(circ["diff"]["added"]) == post_in - pre_in and set(circ["diff"]["removed"]) == pre_in - post_in
    else:
        assert circ["diff"] is None and circ["reason"]


def _check_head_rows(data: dict, info: dict) -> None:
    """Every head, largest change first; FT-M at layer 0 leaves layer-0 heads (before the MLP) unchanged."""
    heads = data["heads"]
    rows = heads["rows"]
    assert len(rows) == 2 * 4 and {r["node"] for r in rows} == {f"a{la}.h{hd}" for la in range(2) for hd in range(4)}
    assert [r["change"] for r in rows] == sorted((r["change"] for r in rows), reverse=True)
    assert all(not r["changed"] for r in rows if r["layer"] == 0)
    assert heads["n_changed"] == sum(r["changed"] for r in rows) >= 1 and rows[0]["changed"]
    assert set(rows[0]["marks"]) >= {"new", "old", "subject_entered", "subject_left"}
    assert len(rows[0]["top"]["pre"]) == len(rows[0]["top"]["post"]) == 10
    assert set(rows[0]["dla"]) == {"new", "old"} and "mover" in heads["rule"]


def _check_analysis(data: dict, info: dict) -> None:
    """The "why": lens ranks agree with the lens curves, the edited layer and method are the edit's,
    side effects are measured on the evaluation's same-relation / same-subject prompts."""
    an = data["analysis"]
    assert an["edit_method"] == "ft-m" and an["edit_layer"] == info["layer"]
    assert an["lens"]["ranks_post"] == data["lens"]["curves"]["new"]["post"]["rank"]
    assert an["lens"]["ranks_pre"] == data["lens"]["curves"]["new"]["pre"]["rank"]
    assert an["mover"]["switched"] == bool(an["mover"]["heads"])
    assert set(an["mover"]["heads"][i]["node"] for i in range(len(an["mover"]["heads"]))) <= set(data["heads"]["movers"])
    sides = {it["prompt"] for it in info["evaluation"]["locality"]["items"] if it["kind"] in ("neighbour", "same_subject")}
    assert {it["prompt"] for it in an["side_effects"]["items"]} <= sides
    for it in an["side_effects"]["items"]:
        loc = next(x for x in info["evaluation"]["locality"]["items"] if x["prompt"] == it["prompt"])
        assert it["changed"] == (not loc["success"]) and it["answer_post"] == loc["post"]["token"]


def test_compare_shows_the_empty_state_and_rejects_bad_settings(client):
    ids = _start(client, EDIT)
    sid = ids["session_id"]
    _wait(client, ids["job_id"])
    data = client.get(f"/api/edits/{sid}/compare", params={"method": "eap", "top_n": 0}).json()
    circ = data["circuit"]
    assert circ["post"]["metrics"]["edges"] == 0 and not circ["sides"]["post"]["usable"]
    assert "empty" in circ["sides"]["post"]["reason"] and circ["diff"] is None and not circ["comparable"]
    for params, needle in (({"method": "acdc"}, "eap-ig-refine"), ({"method": "bogus"}, "query.method"),
                           ({"reweight_rel": 0}, "reweight_rel"), ({"top_n": -1}, "top_n")):
        resp = client.get(f"/api/edits/{sid}/compare", params=params)
        assert resp.status_code == 422, resp.text
        assert needle in resp.text
    client.delete(f"/api/edits/{sid}")


@pytest.mark.parametrize(("patch", "needle"), [
    ({"method": "memit"}, "method"),
    ({"subject": "  "}, "subject"),
    ({"subject": "Colosseum"}, "does not occur"),
    ({"layer": 7}, "out of range"),
    ({"params": {"bogus": 1}}, "bogus"),
    ({"extra": 1}, "extra"),
    ({"model": "no-such-model"}, "no-such-model"),
    ({"target": ""}, "target"),
])
def test_bad_requests(client, patch, needle):
    resp = client.post("/api/edits", json={**EDIT, **patch})
    assert resp.status_code in (404, 422), resp.text
    assert needle in resp.json()["error"]["message"]
    assert client.get("/api/edits").json()["items"] == []


def test_unknown_session_and_capacity(api_settings, tiny_gpt2):
    settings = api_settings.model_copy(update={"max_edit_sessions": 1})
    worker = ModelWorker(settings)
    worker.register("tiny-gpt2", tiny_gpt2)
    with TestClient(create_app(settings, worker=worker, preload=False), raise_server_exceptions=False) as client:
        assert client.get("/api/edits/nope").status_code == 404
        assert client.get("/api/edits/nope/compare").status_code == 404
        first = _start(client, EDIT)
        full = client.post("/api/edits", json=EDIT)
        assert full.status_code == 429 and full.headers["retry-after"] and "edit sessions" in full.json()["error"]["message"]
        _wait(client, first["job_id"])
        client.delete(f"/api/edits/{first['session_id']}")
        second = _start(client, {**EDIT, "method": "rome", "params": {"n_prefixes": 2, "prefix_len": 4,
                                                                       "cov_tokens": 128}})
        _wait(client, second["job_id"])
        got = client.get(f"/api/edits/{second['session_id']}").json()
        assert got["covariance"].startswith("generated") and got["status"] == "ready"

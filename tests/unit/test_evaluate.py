"""Metrics, circuit evaluation (faithfulness, Hit@10, random circuits, sweep) and compute_circuit."""

from __future__ import annotations

import json

import pytest
import torch

from kcircuits.circuits.attribution import ablated_outputs_for
from kcircuits.circuits.discover import compute_circuit
from kcircuits.circuits.evaluate import evaluate_circuit, random_circuit, sweep, target_ranks
from kcircuits.circuits.graph import get_graph
from kcircuits.circuits.metrics import make_metric
from kcircuits.circuits.select import prune_dangling
from kcircuits.circuits.testing import planted_copy_model
from kcircuits.errors import BadRequest
from kcircuits.lm.registry import ArchFacts


@pytest.fixture(scope="module")
def planted():
    return planted_copy_model()


def test_metrics_match_hand_computation():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 11, generator=gen)
    clean = torch.randn(2, 3, 11, generator=gen)
    last, lp = logits[:, -1], torch.log_softmax(logits[:, -1], -1)
    clp = torch.log_softmax(clean[:, -1], -1)
    tgt, foil = torch.tensor([4, 7]), torch.tensor([1, 2])
    ar = torch.arange(2)
    assert torch.allclose(make_metric("logit_diff", tgt, foil_ids=foil)(logits),
                          (last[ar, tgt] - last[ar, foil]).mean())
    assert torch.allclose(make_metric("logprob", tgt)(logits), lp[ar, tgt].mean())
    assert torch.allclose(make_metric("prob", tgt)(logits), lp[ar, tgt].exp().mean())
    assert torch.allclose(make_metric("match_nll", tgt, clean_logits=clean)(logits), (clp[ar, tgt] - lp[ar, tgt]).mean())
    kl = (clp.exp() * (clp - lp)).sum(-1).mean()
    assert torch.allclose(make_metric("kl", tgt, clean_logits=clean)(logits), kl)
    assert float(make_metric("kl", tgt, clean_logits=clean)(clean)) == pytest.approx(0, abs=1e-6)
    # a mask batch [M, b, pos, V] repeats the prompts
    batch = torch.stack([logits, clean])
    per = make_metric("logprob", tgt).per_example(batch)
    assert per.shape == (4,) and torch.allclose(per[:2], lp[ar, tgt])
    with pytest.raises(BadRequest):
        make_metric("logit_diff", tgt)
    with pytest.raises(BadRequest):
        make_metric("accuracy", tgt)
    ranks = target_ranks(logits, tgt)
    assert ranks.tolist() == [int((last[i] > last[i, tgt[i]]).sum()) + 1 for i in range(2)]


def _planted_setup(planted):
    model = planted.model
    g = get_graph(model.arch)
    tokens = model.tokenize(planted.prompt)
    ablated = ablated_outputs_for(model, tokens, g, "patch", model.tokenize(planted.corrupt_prompt))
    target = torch.tensor([model.first_token_id(planted.target)])
    metric = make_metric("logit_diff", target, foil_ids=[model.first_token_id(" Rome")])
    return model, g, tokens, ablated, target, metric


def test_evaluate_planted_circuit_against_random(planted):
    model, g, tokens, ablated, target, metric = _planted_setup(planted)
    mask = g.empty_mask()
    for eid in planted.edge_ids:
        sender, receiver = eid.split("->")
        mask[g.node_index[sender], g.receiver_index[receiver]] = True
    out = evaluate_circuit(model, tokens, g, mask, ablated, metric, target, random_seeds=6)
    assert out["edges"] == 3 and out["nodes"] == 3  # input, the head, logits
    assert out["faithfulness"] == pytest.approx(1.0, abs=0.02)
    hits = out["hit_at_10"]
    assert (hits["full"], hits["circuit"]) == (1, 1)
    assert hits["random"] <= 0.5  # a random 3-edge circuit rarely holds both planted inputs
    assert out["target_rank"]["circuit"] == 1 and out["target_rank"]["empty"] > 10
    assert all(n >= 3 for n in out["random_edges"])
    full = evaluate_circuit(model, tokens, g, g.full_mask(), ablated, metric, target, random_seeds=0)
    assert full["faithfulness"] == pytest.approx(1.0, abs=1e-4) and full["edge_fraction"] == 1.0
    empty = evaluate_circuit(model, tokens, g, g.empty_mask(), ablated, metric, target, random_seeds=0)
    assert empty["faithfulness"] == pytest.approx(0.0, abs=1e-4) and empty["hit_at_10"]["circuit"] == 0


@pytest.mark.parametrize("n", [1, 5, 40])
def test_random_circuits_are_connected_and_sized(n):
    g = get_graph(ArchFacts(3, 4, 2, 64, 256, 100, "llama"))
    for seed in range(3):
        mask = random_circuit(g, n, seed)
        assert torch.equal(prune_dangling(mask, g), mask)  # no dangling node
        assert int(mask.sum()) >= n
        assert mask[:, g.receiver_index["logits"]].any()
    assert not torch.equal(random_circuit(g, n, 0), random_circuit(g, n, 1)) or n == 1


def test_sweep_rows(planted):
    model, g, tokens, ablated, target, metric = _planted_setup(planted)
    scores = torch.zeros(g.n_senders, g.n_receivers)
    for rank, eid in enumerate(planted.edge_ids):
        sender, receiver = eid.split("->")
        scores[g.node_index[sender], g.receiver_index[receiver]] = 10.0 - rank
    rows = sweep(model, tokens, g, scores, ablated, metric, target, [1, 3, g.n_edges])
    assert [r["top_n"] for r in rows] == [1, 3, g.n_edges]
    assert rows[1]["faithfulness"] == pytest.approx(1.0, abs=0.02) and rows[1]["hit_at_10"] == 1.0
    assert rows[2]["faithfulness"] == pytest.approx(1.0, abs=1e-4)
    assert rows[0]["edges"] == 0  # one edge alone (input->head<k>) is dangling


def test_compute_circuit_wire_format(planted):
    result = compute_circuit(planted.model, planted.prompt, planted.target, method="eap-ig",
                             corrupt_prompt=planted.corrupt_prompt, top_n=3, random_seeds=2)
    json.dumps(result)  # JSON-serialisable
    assert result["kind"] == "circuit" and result["schema_version"] == 1
    g = result["graph"]
    assert (g["total_nodes"], g["total_edges"]) == (12, 110) and g["kv_mode"] == "grouped"
    assert result["subject"] == {"text": "France", "positions": [4]}
    in_edges = {(e["source"], e["receiver"]) for e in result["edges"] if e["in_circuit"]}
    assert in_edges == {("input", "a1.h2<k>"), ("input", "a1.h2<v>"), ("a1.h2", "logits")}
    assert len(result["edges"]) == 110
    assert [abs(e["score"]) for e in result["edges"]] == sorted((abs(e["score"]) for e in result["edges"]), reverse=True)
    nodes = {n["id"]: n for n in result["nodes"]}
    assert nodes["a1.h2"]["in_circuit"] and nodes["a1.h2"]["role"] == "mover"
    assert not nodes["m0"]["in_circuit"]
    m = result["metrics"]
    assert m["edges"] == 3 and m["nodes"] == 3 and m["hit_at_10"]["circuit"] == 1
    assert m["faithfulness"] == pytest.approx(1.0, abs=0.02)
    assert set(result["timings"]) >= {"attribution_s", "evaluation_s", "total_s"}


def test_compute_circuit_fallbacks_and_validation(tiny_gpt2):
    result = compute_circuit(tiny_gpt2, "The Eiffel Tower is located in the city of", " Paris", method="eap-ig",
                             top_n=5, random_seeds=1, with_heads=False, max_edges_returned=10)
    # a random model answers no city on any subject swap: no counterfactual of the same kind, so
    # zero ablation with MatchNLL, and the result says so
    assert result["subject"]["text"] == "Eiffel Tower"
    assert result["ablation"] == "zero" and "zero ablation" in result["params"]["corrupt_source"]
    assert result["metric"] == "match_nll" and result["params"]["metric_requested"] == "logit_diff"
    assert result["counterfactual"] is None and result["corrupt_prompt"] is None
    assert len(result["edges"]) >= 10
    odd = "Zqxjkvbwpfzq Xkcdqwmvz Qqwwppvvxxkk Jjjzzzqqq is located in the city of"
    result = compute_circuit(tiny_gpt2, odd, " Paris", subject="Zqxjkvbwpfzq Xkcdqwmvz Qqwwppvvxxkk Jjjzzzqqq", top_n=5,
                             method="eap-ig", random_seeds=1, with_heads=False, max_edges_returned=10)
    assert result["ablation"] == "zero"  # no subject of that token shape: zero ablation, and it says so
    assert "zero" in result["params"]["corrupt_source"]
    for kwargs, message in [
        (dict(prompt="  ", target=" Paris"), "prompt"),
        (dict(prompt="The city of", target=""), "target"),
        (dict(prompt="The city of", target=" Paris", method="magic"), "method"),
        (dict(prompt="The city of", target=" Paris", method="acdc"), "job"),
        (dict(prompt="The city of", target=" Paris", ablation="blur"), "ablation"),
        (dict(prompt="The city of", target=" Paris", corrupt_prompt="The town"), "tokens"),
        (dict(prompt="The city of", target=" Paris", top_n=10**6), "top_n"),
        (dict(prompt="The city of", target=" Paris", subject="Rome"), "subject"),
    ]:
        with pytest.raises(BadRequest, match=message):
            compute_circuit(tiny_gpt2, **kwargs)

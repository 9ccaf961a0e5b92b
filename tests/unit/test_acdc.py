"""ACDC: the paper's order and rules, fast == reference, a planted circuit, progress and cancel."""

from __future__ import annotations

import math

import pytest
import torch

from kcircuits.circuits.acdc import acdc
from kcircuits.circuits.patching import run_with_edge_ablation
from kcircuits.errors import Cancelled

PROMPT = "The capital of France is the city of"


def _setup(model, prompt: str = PROMPT):
    return model.tokenize(prompt), model.first_token_id(" Paris")


@pytest.mark.parametrize("fast", [True, False])
def test_tau_plus_inf_removes_every_evaluated_edge(tiny_gpt2, fast):
    tokens, target = _setup(tiny_gpt2)
    res = acdc(tiny_gpt2, tokens, target, math.inf, fast=fast)
    g = res.graph
    # the logits receiver comes first; once its edges are gone every node is dead and all other
    # receivers are dropped without evaluation
    assert res.evaluated == res.removed == g.n_senders
    assert res.kept == 0 and not res.edge_mask.any()
    assert res.skipped == g.n_edges - g.n_senders
    assert len(res.metric_trace) == res.evaluated
    assert not torch.isnan(res.effects[:, -1]).any() and torch.isnan(res.effects[:, :-1]).all()


def test_tau_minus_inf_keeps_every_edge(tiny_llama):
    tokens, target = _setup(tiny_llama, "The capital of France is")
    res = acdc(tiny_llama, tokens, target, -math.inf, fast=True)
    g = res.graph
    assert res.evaluated == g.n_edges and res.removed == 0 and res.skipped == 0
    assert torch.equal(res.edge_mask, g.edge_mask_allowed)
    assert res.metric_final == pytest.approx(0.0, abs=1e-5)
    assert res.forwards < g.n_edges / 4  # speculation: all keeps predicted by EAP's finite scores


def _oracle_effects(model, tokens, target, res, edges):
    """Effect of removing edge (s, r) from the final circuit, by independent full forwards."""
    from kcircuits.circuits.metrics import make_metric

    zero = torch.zeros(1, 1, res.graph.n_senders, model.arch.d_model)
    with torch.no_grad():
        clean = model.bridge(tokens)
        metric = make_metric("match_nll", [target], clean_logits=clean)
        base = float(metric(run_with_edge_ablation(model, tokens, res.graph, res.edge_mask, zero)))
        out = []
        for s, r in edges:
            mask = res.edge_mask.clone()
            mask[s, r] = False
            out.append(float(metric(run_with_edge_ablation(model, tokens, res.graph, mask, zero))) - base)
    return base, out


@pytest.mark.parametrize("fixture,tau,prompt", [("tiny_gpt2", 0.01, PROMPT),
                                                ("tiny_llama", 0.003, "The capital of France is")])
def test_fast_equals_reference(fixture, tau, prompt, request):
    model = request.getfixturevalue(fixture)
    tokens, target = _setup(model, prompt)
    calls = []
    fast = acdc(model, tokens, target, tau, fast=True, progress=lambda d, t, m: calls.append((d, t)))
    plain = acdc(model, tokens, target, tau, fast=False)
    assert 0 < fast.kept < fast.graph.n_edges and fast.removed > 0  # a mixed result
    assert torch.equal(fast.edge_mask, plain.edge_mask)
    assert (fast.evaluated, fast.skipped, fast.removed) == (plain.evaluated, plain.skipped, plain.removed)
    assert fast.evaluated + fast.skipped == fast.graph.n_edges
    torch.testing.assert_close(fast.effects, plain.effects, equal_nan=True, atol=1e-4, rtol=0)
    assert fast.metric_final == pytest.approx(plain.metric_final, abs=1e-4)
    assert fast.forwards < plain.forwards
    assert calls[-1] == (fast.graph.n_edges, fast.graph.n_edges)
    # the final circuit's metric is what a fresh run of the kept edges gives, and every kept edge
    # was evaluated (kept edges cost >= tau when they were tried)
    base, _ = _oracle_effects(model, tokens, target, plain, [])
    assert plain.metric_final == pytest.approx(base, abs=1e-4)
    kept = plain.edge_mask.nonzero().tolist()
    assert all(plain.effects[s, r] >= tau for s, r in kept)


def test_planted_circuit_is_recovered():
    from kcircuits.circuits.testing import planted_copy_model

    pc = planted_copy_model()
    model = pc.model
    tokens, corrupt = model.tokenize(pc.prompt), model.tokenize(pc.corrupt_prompt)
    res = acdc(model, tokens, model.first_token_id(pc.target), 0.05, ablation="patch", corrupt_tokens=corrupt)
    g = res.graph
    kept = sorted(g.edge_id(s, r) for s, r in res.edge_mask.nonzero().tolist())
    assert kept == sorted(pc.edge_ids)


@pytest.mark.parametrize("fast", [False, True])
def test_cancel_is_checked_between_steps_and_propagates(tiny_gpt2, fast):
    tokens, target = _setup(tiny_gpt2)
    calls = []

    def cancel_on_third_check():
        calls.append(1)
        if len(calls) == 3:
            raise Cancelled()

    with pytest.raises(Cancelled):
        acdc(tiny_gpt2, tokens, target, 0.001, fast=fast, cancel=cancel_on_third_check)
    assert len(calls) == 3  # checked before each step, and nothing ran past the raise

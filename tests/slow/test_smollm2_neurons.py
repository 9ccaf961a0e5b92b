"""Real SmolLM2-135M: knowledge neurons of a capital fact, their suppression, IG completeness and cost."""

from __future__ import annotations

import time

import pytest
import torch

from kcircuits.circuits.neurons import (
    IGParams,
    KNParams,
    compare_localisation,
    edit_request,
    fact_prompts,
    find_neurons,
    integrated_gradients,
    last_hidden,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def capital(smollm2):
    prompts = fact_prompts(smollm2, "country_capital_city", "France", max_prompts=3)
    return prompts, find_neurons(smollm2, prompts, ig=IGParams(steps=20), kn=KNParams(threshold=0.2, share=0.5))


def test_capital_fact_has_knowledge_neurons(smollm2, capital):
    prompts, result = capital
    assert [t for _, t in prompts] == [" Paris"] * 3
    assert all(row["rank"] == 1 for row in result["prompts"][:1])  # the model knows it on the first template
    assert 1 <= len(result["neurons"]) <= 500
    assert all(n["share"] >= 0.5 for n in result["neurons"])
    for row in result["prompts"]:
        assert row["completeness_gap"] == pytest.approx(row["attr_sum"] - (row["prob"] - row["baseline_prob"]))


def test_ig_completeness_with_enough_steps(smollm2, capital):
    """On "The capital city of France is" the joint path's sum is -0.16 at m = 20 against
    P - P(baseline) = 0.64 (P rises steeply from ~1e-8 with every last-position unit zeroed); at
    m = 160 it is within 3% (measured 0.25%; 0.3-1.7% on the other templates)."""
    target = smollm2.first_token_id(" Paris")
    res = integrated_gradients(smollm2, smollm2.tokenize("The capital city of France is"), target,
                               IGParams(steps=160, batch_size=32))
    assert float(res["attr"].sum()) == pytest.approx(res["prob"] - res["baseline_prob"], rel=0.03)


def test_suppressing_the_kns_lowers_p_answer(smollm2, capital):
    prompts, result = capital
    ids = [n["id"] for n in result["neurons"]]
    down = edit_request(smollm2, ids, "suppress", prompts[0][0], " Paris", relation="country_capital_city", subject="France")
    assert down["prompt"]["after"]["prob"] < 0.5 * down["prompt"]["before"]["prob"]
    # doubling the same set need not raise P (measured: 0.96 -> 0.75); only that it acts is checked
    up = edit_request(smollm2, ids, "enhance", prompts[0][0], " Paris")
    assert up["prompt"]["before"]["prob"] == down["prompt"]["before"]["prob"]
    assert up["prompt"]["after"]["prob"] != up["prompt"]["before"]["prob"]
    assert down["summary"]["other_fact"]["n"] == 5 and down["summary"]["unrelated"]["n"] >= 3


def test_ig_cost_over_one_forward(smollm2):
    tokens = smollm2.tokenize("The capital of France is the city of")
    target = smollm2.first_token_id(" Paris")
    last_hidden(smollm2, tokens)
    t0 = time.perf_counter()
    last_hidden(smollm2, tokens)
    t_fwd = time.perf_counter() - t0
    t0 = time.perf_counter()
    integrated_gradients(smollm2, tokens, target, IGParams(steps=20))
    ratio = (time.perf_counter() - t0) / t_fwd
    assert ratio < 200, ratio  # one batched forward + backward of 21 rows (measured about 7x on 1 thread)


def test_facts_vs_syntax_comparison_runs(smollm2):
    torch.manual_seed(0)
    out = compare_localisation(smollm2, 2, 2, ig=IGParams(steps=8), max_prompts=2)
    assert out["summary"]["facts"]["n_groups"] == 2 and out["summary"]["syntax"]["n_groups"] == 2
    assert len(out["summary"]["facts"]["layer_histogram"]) == smollm2.arch.n_layers

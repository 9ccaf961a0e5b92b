"""Knowledge neurons against oracles: IG completeness, the hook point of a hidden unit, a planted
neuron that carries a fact, hook-only edits that leave the weights bit-identical."""

from __future__ import annotations

import pytest
import torch

from kcircuits.circuits.neurons import (
    IGParams,
    KNParams,
    concentration,
    edit_hooks,
    edit_neurons,
    find_neurons,
    hidden_hook,
    integrated_gradients,
    kn_candidates,
    parse_neuron,
)
from kcircuits.circuits.testing import planted_neuron_model
from kcircuits.errors import BadRequest

PROMPT = "The Eiffel Tower is in the city of"


@pytest.fixture(scope="module")
def planted():
    return planted_neuron_model()


def _zeroed_prob(model, tokens, target_id, layers):
    """P(target) with the last-position hidden units of ``layers`` set to 0 (the IG baseline)."""
    def zero(x, hook):
        x = x.clone()
        x[:, -1] = 0.0
        return x
    with torch.no_grad():
        logits = model.run_with_hooks(tokens, [(hidden_hook(layer), zero) for layer in layers], last_only=True)
    return float(logits[0, -1].float().softmax(-1)[target_id])


@pytest.mark.parametrize("model_name", ["tiny_gpt2", "tiny_llama"])
def test_ig_completeness_joint_and_per_layer(request, model_name):
    model = request.getfixturevalue(model_name)
    tokens = model.tokenize(PROMPT)
    target = model.first_token_id(" Paris")
    joint = integrated_gradients(model, tokens, target, IGParams(steps=64, path="joint", batch_size=24))
    layers = list(range(model.arch.n_layers))
    gap = joint["prob"] - _zeroed_prob(model, tokens, target, layers)
    assert abs(gap) > 1e-8
    assert joint["baseline_prob"] == pytest.approx(joint["prob"] - gap, abs=1e-9)
    assert float(joint["attr"].sum()) == pytest.approx(gap, rel=2e-2)
    per_layer = integrated_gradients(model, tokens, target, IGParams(steps=64, path="layer", batch_size=50))
    for layer in layers:
        gap_l = per_layer["prob"] - _zeroed_prob(model, tokens, target, [layer])
        assert float(per_layer["attr"][layer].sum()) == pytest.approx(gap_l, rel=2e-2, abs=1e-9)


def test_ig_completeness_gets_better_with_steps(planted):
    model = planted.model
    tokens, target = model.tokenize(planted.prompts[0]), model.first_token_id(planted.target)
    gap = (integrated_gradients(model, tokens, target, IGParams(steps=1))["prob"]
           - _zeroed_prob(model, tokens, target, range(model.arch.n_layers)))
    errors = [abs(float(integrated_gradients(model, tokens, target, IGParams(steps=m))["attr"].sum()) - gap)
              for m in (1, 4, 32)]
    assert errors[2] < errors[1] < errors[0]
    assert errors[2] < 1e-2 * abs(gap)


def test_batch_size_does_not_change_attribution(tiny_gpt2):
    tokens = tiny_gpt2.tokenize(PROMPT)
    target = tiny_gpt2.first_token_id(" Paris")
    a = integrated_gradients(tiny_gpt2, tokens, target, IGParams(steps=6, path="layer", batch_size=5))["attr"]
    b = integrated_gradients(tiny_gpt2, tokens, target, IGParams(steps=6, path="layer", batch_size=64))["attr"]
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-10)


@pytest.mark.parametrize("model_name", ["tiny_gpt2", "tiny_llama"])
def test_hidden_hook_is_the_input_of_the_output_projection(request, model_name):
    model = request.getfixturevalue(model_name)
    seen = {}
    mlp = model.bridge.blocks[1].mlp.original_component
    proj = mlp.c_proj if model.arch.family == "gpt2" else mlp.down_proj
    handle = proj.register_forward_pre_hook(lambda mod, args: seen.setdefault("x", args[0].detach().clone()))
    try:
        with torch.no_grad():
            _, cache = model.bridge.run_with_cache(model.tokenize(PROMPT), names_filter=lambda n: n == hidden_hook(1))
    finally:
        handle.remove()
    assert cache[hidden_hook(1)].shape[-1] == model.arch.d_mlp
    torch.testing.assert_close(cache[hidden_hook(1)], seen["x"])


def test_planted_neuron_is_found_first_and_kept_by_the_filters(planted):
    result = find_neurons(planted.model, [(p, planted.target) for p in planted.prompts], ig=IGParams(steps=20),
                          kn=KNParams(threshold=0.2, share=0.5))
    planted_id = f"L{planted.layer}.N{planted.index}"
    for row in result["prompts"]:
        assert row["top"][0]["id"] == planted_id
        assert row["prob"] > 0.9
    assert [n["id"] for n in result["neurons"]] == [planted_id]
    assert result["neurons"][0]["share"] == 1.0
    assert " Paris" in result["neurons"][0]["promotes"]
    assert result["layer_histogram"] == [0, 1]
    assert result["params"]["threshold"] == 0.2 and result["params"]["share"] == 0.5
    assert result["params"]["steps"] == 20 and result["params"]["baseline"] == "zero"


def test_suppressing_the_planted_neuron_removes_the_fact_and_enhancing_raises_it(planted):
    model, neuron = planted.model, [(planted.layer, planted.index)]
    down = edit_neurons(model, neuron, "suppress", planted.prompts[0], planted.target,
                        paraphrases=[(p, planted.target) for p in planted.prompts[1:]])
    assert down["prompt"]["before"]["rank"] == 1
    assert down["prompt"]["after"]["prob"] < 0.01 and down["prompt"]["after"]["rank"] > 1
    assert down["prompt"]["top1_flipped"]
    assert down["summary"]["paraphrase"]["top1_flip_rate"] == 1.0
    up = edit_neurons(model, neuron, "enhance", planted.prompts[0], planted.target)
    assert up["prompt"]["after"]["prob"] > up["prompt"]["before"]["prob"]
    # a neuron that does not carry the fact changes nothing measurable
    other = edit_neurons(model, [(1, (planted.index + 1) % model.arch.d_mlp)], "suppress", planted.prompts[0], planted.target)
    assert other["prompt"]["after"]["rank"] == 1


def test_edits_leave_the_model_bit_identical(tiny_llama):
    before = {k: v.clone() for k, v in tiny_llama.bridge.state_dict().items()}
    tokens = tiny_llama.tokenize(PROMPT)
    with torch.no_grad():
        clean = tiny_llama.bridge(tokens)
        edited = tiny_llama.run_with_hooks(tokens, edit_hooks([(0, 3), (1, 7)], "suppress", "all"))
    assert not torch.equal(clean, edited)
    edit_neurons(tiny_llama, [(0, 3), (1, 7)], "enhance", PROMPT, " Paris", unrelated=["Water is made of"])
    after = tiny_llama.bridge.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    with torch.no_grad():
        assert torch.equal(tiny_llama.bridge(tokens), clean)


def test_edit_hooks_zero_and_double_only_the_chosen_units():
    x = torch.arange(24, dtype=torch.float32).reshape(1, 3, 8) + 1
    (_, zero), = edit_hooks([(0, 2), (0, 5)], "suppress", "last")
    (_, double), = edit_hooks([(0, 2)], "enhance", "all")
    z, d = zero(x), double(x)
    assert z[0, -1, 2] == 0 and z[0, -1, 5] == 0 and torch.equal(z[0, :2], x[0, :2])
    assert torch.equal(d[..., 2], 2 * x[..., 2]) and torch.equal(d[..., 3], x[..., 3])


def test_kn_threshold_and_concentration_closed_forms():
    attr = torch.tensor([[1.0, 0.25, -3.0], [0.1, 0.5, 0.0]])
    assert kn_candidates(attr, 0.2) == {(0, 0), (0, 1), (1, 1)}
    assert kn_candidates(attr, 0.3) == {(0, 0), (1, 1)}
    assert kn_candidates(-attr.abs(), 0.2) == set()
    c = concentration(attr, k=2)
    assert c["top_k_share"] == pytest.approx(1.5 / 1.85)
    assert c["effective_neurons"] == pytest.approx(1.85 ** 2 / (1 + 0.0625 + 0.01 + 0.25))


def test_share_filter_counts_prompts(planted):
    prompts = [(p, planted.target) for p in planted.prompts] + [(planted.corrupt_prompt, planted.target)]
    kept = find_neurons(planted.model, prompts, ig=IGParams(steps=4), kn=KNParams(share=1.0), with_tokens=False)
    assert kept["params"]["min_prompts"] == 4
    assert all(n["share"] == 1.0 for n in kept["neurons"])


def test_bad_inputs_are_named(tiny_gpt2):
    with pytest.raises(BadRequest, match="steps"):
        IGParams(steps=0).check()
    with pytest.raises(BadRequest, match="threshold"):
        KNParams(threshold=0).check()
    with pytest.raises(BadRequest, match="outside"):
        parse_neuron(tiny_gpt2, "L9.N1")
    with pytest.raises(BadRequest, match="L<layer>"):
        parse_neuron(tiny_gpt2, "mlp3")
    assert parse_neuron(tiny_gpt2, "l1.n5") == (1, 5)
    with pytest.raises(BadRequest, match="no neurons"):
        edit_neurons(tiny_gpt2, [], "suppress", PROMPT, " Paris")
    with pytest.raises(BadRequest, match="mode"):
        edit_hooks([(0, 1)], "erase")


def test_committed_syntax_pairs_are_the_generators_output():
    import importlib.util
    from pathlib import Path

    from kcircuits.circuits.neurons import syntax_items

    path = Path(__file__).resolve().parents[2] / "bench" / "make_syntax_pairs.py"
    spec = importlib.util.spec_from_file_location("make_syntax_pairs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert list(syntax_items()) == module.build()
    phenomena = {item["phenomenon"] for item in syntax_items()}
    assert phenomena == {"det_noun", "subj_verb"}
    for item in syntax_items():
        assert item["target"] != item["foil"]
        if item["phenomenon"] == "det_noun":
            plural = item["prompt"].split()[-1] in ("these", "those")
            assert (item["number"] == "pl") == plural


def test_syntax_groups_keep_only_pairs_the_model_gets_right(tiny_gpt2):
    from kcircuits.circuits.neurons import _last_logits, syntax_groups

    groups = syntax_groups(tiny_gpt2, 6, max_prompts=2)
    assert groups and {g.phenomenon for g in groups} <= {"det_noun", "subj_verb"}
    for group in groups:
        assert 1 <= len(group.prompts) <= 2
        for prompt, target in group.prompts:
            logits = _last_logits(tiny_gpt2, prompt, [])
            assert logits[tiny_gpt2.first_token_id(target)] > logits[tiny_gpt2.first_token_id(group.foil)]
    with pytest.raises(BadRequest, match="phenomena"):
        syntax_groups(tiny_gpt2, 2, phenomena=("negation",))


def test_summary_row_closed_form():
    from kcircuits.circuits.neurons import summarise

    def row(hist, n, share, flip, pair):
        edit = {"top1_flipped": flip, "pair_flipped": pair, "relative_change": -0.5}
        return {"layer_histogram": hist, "n_neurons": n, "concentration": {"top_k_share": share, "effective_neurons": 2.0},
                "edits": {"suppress": edit if n else None, "enhance": edit if n else None}}

    s = summarise([row([1, 2], 3, 0.5, True, False), row([0, 0], 0, 0.3, False, None)], 2)
    assert s["layer_histogram"] == [1, 2] and s["mean_kn_layer"] == pytest.approx(2 / 3)
    assert s["mean_kns"] == 1.5 and s["with_kns"] == 0.5 and s["top10_share"] == pytest.approx(0.4)
    assert s["suppress"] == {"n": 1, "top1_flip_rate": 1.0, "pair_flip_rate": 0.0, "mean_relative_change": -0.5}


def test_relation_context_has_paraphrases_symmetry_and_unrelated(tiny_gpt2):
    from kcircuits.circuits.neurons import relation_context
    from kcircuits.circuits.relation import load_relation

    ctx = relation_context(tiny_gpt2, "country_capital_city", "France")
    assert ctx["paraphrases"] and all("France" in p and t == " Paris" for p, t in ctx["paraphrases"])
    assert ctx["symmetric"] == [] and all("France" not in p for p, _ in ctx["others"])
    assert "The capital of France is" not in ctx["unrelated"] and ctx["unrelated"]
    antonym = load_relation("adj_antonym")
    subject, obj = antonym.samples[0]
    sym = relation_context(tiny_gpt2, "adj_antonym", subject)["symmetric"]
    assert sym and all(obj in p and t == " " + subject for p, t in sym)
    with pytest.raises(BadRequest, match="not a sample"):
        relation_context(tiny_gpt2, "country_capital_city", "Atlantis")


def test_beside_circuit_closed_form():
    from kcircuits.circuits.neurons import beside_circuit

    circuit = {"nodes": [{"id": "input", "kind": "input", "layer": None}, {"id": "a0.h0", "kind": "head", "layer": 0, "score": 2.0,
                          "in_circuit": True},
                         {"id": "m0", "kind": "mlp", "layer": 0, "score": -1.0, "in_circuit": True},
                         {"id": "m1", "kind": "mlp", "layer": 1, "score": 0.5, "in_circuit": False},
                         {"id": "logits", "kind": "logits", "layer": None}],
               "edges": [{"source": "a0.h0", "target": "logits", "score": -3.0, "in_circuit": True},
                         {"source": "m0", "target": "logits", "score": 1.0, "in_circuit": True},
                         {"source": "input", "target": "m0", "score": 0.5, "in_circuit": False}]}
    neurons = {"neurons": [{"id": "L0.N3", "layer": 0, "attr": 0.5}, {"id": "L1.N1", "layer": 1, "attr": 0.25}]}
    out = beside_circuit(circuit, neurons)
    assert [(m["node"], m["in_circuit"], m["kns"]) for m in out["mlps"]] == [("m0", True, ["L0.N3"]), ("m1", False, ["L1.N1"])]
    assert out["kn_share_in_circuit"] == 0.5 and out["circuit_mlps_with_kns"] == 1
    assert out["effect_share_edges"] == {"head": 0.75, "mlp": 0.25, "input": 0.0}
    assert out["effect_share_nodes"]["head"] == pytest.approx(2 / 3)


def test_planted_neuron_sits_in_the_circuits_mlp(planted):
    from kcircuits.circuits.neurons import neurons_with_circuit

    out = neurons_with_circuit(planted.model, planted.prompts[0], planted.target, paraphrases=planted.prompts[1:],
                               ig=IGParams(steps=8), circuit_top_n=10)
    side = out["circuit"]
    assert side["n_kns"] == 1 and side["kn_share_in_circuit"] == 1.0
    assert [m["node"] for m in side["mlps"] if m["in_circuit"] and m["kns"]] == [f"m{planted.layer}"]
    assert side["effect_share_edges"]["head"] > 0 and side["effect_share_edges"]["mlp"] > 0


def test_cli_neurons_find_edit_compare():
    import json

    from typer.testing import CliRunner

    from kcircuits.cli import app

    runner = CliRunner()
    found = runner.invoke(app, ["neurons", "The capital of France is", "--target", " Paris", "--model", "tiny-gpt2",
                                "--steps", "2", "--paraphrase", "The capital city of France is", "--json"])
    assert found.exit_code == 0, found.output
    data = json.loads(found.output)
    assert [p["prompt"] for p in data["prompts"]] == ["The capital of France is", "The capital city of France is"]
    assert data["params"]["steps"] == 2 and data["top"]
    neuron = data["top"][0]["id"]
    edited = runner.invoke(app, ["neurons", "edit", "The capital of France is", "--target", " Paris", "--model",
                                 "tiny-gpt2", "--neuron", neuron, "--mode", "enhance", "--json"])
    assert edited.exit_code == 0, edited.output
    out = json.loads(edited.output)
    assert out["neurons"] == [neuron] and out["mode"] == "enhance" and out["summary"]["unrelated"]["n"] >= 1
    text = runner.invoke(app, ["neurons", "compare", "--model", "tiny-gpt2", "--n-facts", "0", "--n-syntax", "1",
                               "--steps", "1", "--max-prompts", "1"])
    assert text.exit_code == 0 and "syntax" in text.output and "KN layers" in text.output
    bad = runner.invoke(app, ["neurons", "edit", "x", "--target", " y", "--model", "tiny-gpt2", "--neuron", "L9.N1"])
    assert bad.exit_code == 2 and "outside this model" in bad.output

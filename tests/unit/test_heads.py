"""Head roles: attention masses, exact per-source DLA, lens tokens and the role rules."""

from __future__ import annotations

import pytest
import torch

from kcircuits.circuits.heads import (
    HeadRoleThresholds,
    _ranks,
    _role,
    annotate_circuit_roles,
    classify_heads,
    head_detail,
    parse_head_id,
    per_source_outputs,
    readout_matrix,
    relation_positions,
    significant_mask,
)
from kcircuits.circuits.subject import subject_positions
from kcircuits.circuits.testing import planted_roles_model
from kcircuits.errors import BadRequest

PROMPT = "The capital of France is the city of"
SUBJECT = "France"


def _pattern_override(layer_head: int, weights: dict[int, float]):
    """A hook that sets one head's last-row attention to ``weights`` {key position: mass}."""

    def hook(pattern, hook):
        pattern = pattern.clone()
        pattern[:, layer_head, -1, :] = 0.0
        for pos, w in weights.items():
            pattern[:, layer_head, -1, pos] = w
        return pattern

    return hook


@pytest.mark.parametrize("fixture", ["tiny_gpt2", "tiny_llama"])
def test_forced_attention_gives_subject_and_relation_scores(fixture, request):
    model = request.getfixturevalue(fixture)
    tokens = model.tokenize(PROMPT)
    subj = subject_positions(model, PROMPT, SUBJECT)
    assert model.token_strings(tokens[0, subj]) == [" France"]
    rel = relation_positions(model, tokens, subj)
    assert model.token_strings(tokens[0, rel]) == [" capital", " city"]
    function_pos = [p for p in range(1, tokens.shape[1]) if p not in subj and p not in rel]
    hooks = [
        ("blocks.1.attn.hook_pattern", _pattern_override(2, {subj[0]: 1.0})),
        ("blocks.0.attn.hook_pattern", _pattern_override(1, {p: 1.0 / len(rel) for p in rel})),
        # function words and the attending position itself are no relation tokens
        ("blocks.0.attn.hook_pattern", _pattern_override(3, {p: 1.0 / len(function_pos) for p in function_pos})),
    ]
    target = model.first_token_id(" Paris")
    with model.bridge.hooks(fwd_hooks=hooks):
        roles = classify_heads(model, tokens, subj, target)
    assert len(roles) == 8
    mover, relation, function = roles["a1.h2"], roles["a0.h1"], roles["a0.h3"]
    assert mover["subject_attention"] == pytest.approx(1.0)
    assert mover["subject_dla_share"] == pytest.approx(1.0)
    assert relation["relation_attention"] == pytest.approx(1.0)
    assert relation["subject_attention"] == pytest.approx(0.0)
    assert relation["relation_dla_share"] == pytest.approx(1.0)
    assert function["relation_attention"] == 0.0 and function["subject_attention"] == 0.0
    # a head that attends only to BOS has no subject or relation attention, hence no role
    with model.bridge.hooks(fwd_hooks=[("blocks.1.attn.hook_pattern", _pattern_override(0, {0: 1.0}))]):
        bos_head = classify_heads(model, tokens, subj, target)["a1.h0"]
    assert bos_head["role"] is None and bos_head["subject_attention"] == 0.0 and bos_head["relation_attention"] == 0.0


@pytest.mark.parametrize("fixture", ["tiny_gpt2", "tiny_llama"])
def test_per_source_outputs_sum_to_hook_result(fixture, request):
    model = request.getfixturevalue(fixture)
    tokens = model.tokenize(PROMPT)
    _, cache = model.bridge.run_with_cache(tokens)
    for layer in range(model.arch.n_layers):
        parts = per_source_outputs(model, cache, layer, -1)  # [H, k, d]
        assert parts.shape == (model.arch.n_heads, tokens.shape[1], model.arch.d_model)
        torch.testing.assert_close(parts.sum(1), cache[f"blocks.{layer}.attn.hook_result"][0, -1].float(),
                                   atol=1e-5, rtol=1e-4)
        # one hand-computed term: head 3 (kv group 1 on the GQA model), source 2
        group = 3 // (model.arch.n_heads // model.arch.n_kv_heads)
        v = cache[f"blocks.{layer}.attn.hook_v"][0, 2, group]
        expected = cache[f"blocks.{layer}.attn.hook_pattern"][0, 3, -1, 2] * (v @ model.bridge.blocks[layer].attn.W_O[3])
        torch.testing.assert_close(parts[3, 2], expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("fixture", ["tiny_gpt2", "tiny_llama"])
def test_dla_matches_removing_the_head_from_the_final_residual(fixture, request):
    """Oracle: subtract the head's output from the final residual at the last position with the
    final-norm scale frozen; the drop of the centred target logit is the head's DLA."""
    model = request.getfixturevalue(fixture)
    tokens = model.tokenize(PROMPT)
    target = model.first_token_id(" Paris")
    L = model.arch.n_layers
    roles = classify_heads(model, tokens, subject_positions(model, PROMPT, SUBJECT), target)
    _, cache = model.bridge.run_with_cache(tokens)
    scale = cache["ln_final.hook_scale"]

    def centred(logits):
        last = logits[0, -1].float()
        return float(last[target] - last.mean())

    base = centred(model.bridge(tokens))
    for layer, h in [(L - 1, 0), (0, 3)]:
        head_out = cache[f"blocks.{layer}.attn.hook_result"][0, -1, h]

        def remove(resid, hook, head_out=head_out):
            resid = resid.clone()
            resid[0, -1] -= head_out
            return resid

        hooks = [(f"blocks.{L - 1}.hook_resid_post", remove), ("ln_final.hook_scale", lambda x, hook: scale)]
        ablated = centred(model.bridge.run_with_hooks(tokens, fwd_hooks=hooks))
        assert roles[f"a{layer}.h{h}"]["dla"] == pytest.approx(base - ablated, abs=2e-5, rel=1e-3)
        parts = roles[f"a{layer}.h{h}"]
        subj = subject_positions(model, PROMPT, SUBJECT)
        rel = relation_positions(model, tokens, subj)
        by_source = _dla_by_source(model, cache, layer, h, target)
        assert parts["subject_dla"] == pytest.approx(float(by_source[subj].sum()), abs=1e-6)
        assert parts["relation_dla"] == pytest.approx(float(by_source[rel].sum()), abs=1e-6)
        assert parts["dla"] == pytest.approx(float(by_source.sum()), abs=1e-6)


def _dla_by_source(model, cache, layer, h, target):
    scale = cache["ln_final.hook_scale"][0, -1].float()
    u = readout_matrix(model, torch.tensor([target]), centre_vocab=True)[:, 0]
    return (per_source_outputs(model, cache, layer, -1)[h] / scale) @ u


def test_role_rules_and_thresholds():
    t = HeadRoleThresholds()
    assert _role(True, 0.5, 0.1, writes=True, t=t) == "mover"
    assert _role(True, 0.5, 0.1, writes=False, t=t) is None  # a mover must write target or subject
    assert _role(False, 0.9, 0.0, writes=True, t=t) is None  # not significant
    assert _role(True, 0.1, 0.6, writes=False, t=t) == "relation"
    assert _role(False, 0.1, 0.6, writes=False, t=t) is None
    assert _role(True, 0.4, 0.4, writes=True, t=t) == "mixture"
    assert _role(True, 0.4, 0.4, writes=False, t=t) == "relation"
    assert _role(True, 0.29, 0.1, writes=True, t=t) is None
    assert _role(True, 0.29, 0.1, writes=True, t=HeadRoleThresholds(mover_attention=0.25)) == "mover"
    with pytest.raises(BadRequest):
        HeadRoleThresholds(relation_attention=1.5).check()


def test_significance_is_median_plus_k_mads():
    # median 3, MAD 1: threshold 3 + 3 * 1 = 6
    sig, z = significant_mask([1, -2, 3, 4, -100], k=3)
    assert sig == [False, False, False, False, True] and z == [-2.0, -1.0, 0.0, 1.0, 97.0]
    assert significant_mask([1, -2, 3, 4, 6], k=3)[0] == [False] * 5  # not strictly above
    assert significant_mask([1, -2, 3, 4, 6], k=2.9)[0] == [False] * 4 + [True]
    # MAD 0: strictly above the median; fewer than three values: nothing
    assert significant_mask([0, 1, 1, 1, 10], k=3) == ([False, False, False, False, True], [None] * 5)
    assert significant_mask([0.0, 5.0], k=0)[0] == [False, False]


def test_ranks_count_ties_against_the_token():
    lens = torch.tensor([[0.0, 3.0, 1.0, 3.0], [0.0, 0.0, 0.0, 0.0]])
    assert _ranks(lens, [1, 2, 0]).tolist() == [[2, 3, 4], [4, 4, 4]]


def test_relation_positions_skip_subject_self_sink_and_function_words(tiny_gpt2):
    model = tiny_gpt2
    tokens = model.tokenize(PROMPT)  # BOS The capital of France is the city of
    subj = subject_positions(model, PROMPT, SUBJECT)
    assert relation_positions(model, tokens, subj) == [2, 7]
    assert relation_positions(model, tokens, subj, position=7) == [2]  # not the attending position
    no_bos = model.tokenizer("capital of France is the city of", add_special_tokens=False)["input_ids"]
    assert relation_positions(model, torch.tensor([no_bos]), [2]) == [5]  # position 0 is the sink


def test_planted_mover_and_relation_heads_are_the_only_labelled():
    """Oracle: a hand-built model whose planted heads have known roles; decoys that attend to the
    subject without writing it or the answer, to function words, or with no effect get none."""
    planted = planted_roles_model()
    model = planted.model
    tokens = model.tokenize(planted.prompt)
    subj = subject_positions(model, planted.prompt, planted.subject)
    roles = classify_heads(model, tokens, subj, model.first_token_id(planted.target))
    assert {hid: info["role"] for hid, info in roles.items() if info["role"]} == {
        planted.mover: "mover", planted.relation: "relation"}
    assert roles[planted.mover]["subject_attention"] > 0.9 and roles[planted.mover]["target_rank"] == 1
    assert roles[planted.relation]["relation_attention"] > 0.9
    # the decoys: two are significant (so the other rules reject them), one is not
    assert roles["a0.h3"]["significant"] and roles["a1.h0"]["significant"]
    assert roles["a1.h0"]["subject_attention"] > 0.9 and roles["a1.h0"]["target_rank"] > 10
    assert roles["a1.h5"]["subject_attention"] > 0.9 and not roles["a1.h5"]["significant"]
    # random heads are not significant
    assert sum(info["significant"] for info in roles.values()) == 4
    # stricter thresholds: no labels; a looser write rule does not make a1.h0 a mover
    strict = classify_heads(model, tokens, subj, model.first_token_id(planted.target),
                            thresholds=HeadRoleThresholds(significance_k=1e9))
    assert not any(info["role"] for info in strict.values())


def test_circuit_result_roles_record_scores_and_thresholds():
    from kcircuits.circuits.discover import compute_circuit

    planted = planted_roles_model()
    model = planted.model
    result = compute_circuit(model, planted.prompt, planted.target, method="eap-ig", ablation="zero",
                             subject=planted.subject, top_n=200, random_seeds=0, ig_steps=2)
    thresholds = HeadRoleThresholds(significance_k=2.5, write_top_k=5)
    annotate_circuit_roles(model, result, thresholds)
    heads = result["heads"]
    circuit_heads = {n["id"] for n in result["nodes"] if n["kind"] == "head" and n["in_circuit"]}
    assert set(heads) == circuit_heads and {planted.mover, planted.relation} <= circuit_heads
    assert heads[planted.mover]["role"] == "mover" and heads[planted.relation]["role"] == "relation"
    assert {h for h, info in heads.items() if info["role"]} == {planted.mover, planted.relation}
    node_roles = {n["id"]: n["role"] for n in result["nodes"] if n["kind"] == "head"}
    assert all(node_roles[h] == info["role"] for h, info in heads.items())
    assert all(heads[h]["attribution"] is not None for h in heads)
    roles = result["roles"]
    assert roles["thresholds"]["significance_k"] == 2.5 and roles["thresholds"]["write_top_k"] == 5
    assert roles["relation_tokens"] == [" capital", " city"]
    assert roles["counts"]["mover"] == 1 and roles["counts"]["relation"] == 1
    assert roles["counts"]["total"] == len(heads)


def test_head_detail_and_bad_ids(tiny_gpt2):
    model = tiny_gpt2
    tokens = model.tokenize(PROMPT)
    subj = subject_positions(model, PROMPT, SUBJECT)
    target = model.first_token_id(" Paris")
    detail = head_detail(model, tokens, "a1.h3", subj, target, k=5)
    n = tokens.shape[1]
    assert len(detail["pattern"]) == n and all(len(row) == n for row in detail["pattern"])
    assert all(abs(sum(row) - 1) < 1e-5 for row in detail["pattern"])
    assert len(detail["promoted"]) == 5 and len(detail["suppressed"]) == 5
    assert detail["promoted"][0]["score"] >= detail["promoted"][-1]["score"]
    assert detail["role_scores"]["top_token_ids"] == [r["id"] for r in detail["promoted"]]
    assert sum(detail["dla_by_source"]) == pytest.approx(detail["role_scores"]["dla"], abs=1e-6)
    assert parse_head_id("a1.h3") == (1, 3)
    for bad in ("a9.h0", "m1", "a1.h4", "x"):
        with pytest.raises(BadRequest):
            head_detail(model, tokens, bad)


def _result_for(model, prompt: str, target: str, in_circuit) -> dict:
    """A minimal circuit result over ``model``'s graph nodes, ``in_circuit(node_id)`` marking the circuit."""
    from kcircuits.circuits.graph import get_graph

    nodes = [{**n, "role": None, "score": 0.0, "in_circuit": bool(in_circuit(n["id"]))}
             for n in get_graph(model.arch).nodes]
    return {"prompt": prompt, "target_id": model.first_token_id(target), "subject": None, "nodes": nodes}


def _count_forwards():
    """A forward hook on the embedding counting forwards: (hooks, counter)."""
    calls = []
    return [("hook_embed", lambda x, hook: calls.append(1))], calls


def test_node_top_tokens_of_planted_head_and_mlp():
    from kcircuits.circuits.lens import apply_cached_final_norm
    from kcircuits.circuits.testing import planted_copy_model, planted_neuron_model

    planted = planted_copy_model()
    model = planted.model
    result = _result_for(model, planted.prompt, planted.target, lambda nid: nid not in ("a0.h0", "m0"))
    hooks, calls = _count_forwards()
    with model.bridge.hooks(fwd_hooks=hooks):
        annotate_circuit_roles(model, result)
    assert len(calls) == 1  # one forward for roles and top tokens together
    by_id = {n["id"]: n for n in result["nodes"]}
    top = by_id[planted.head_id]["top_token"]
    assert top["token"] == planted.target and top["id"] == model.first_token_id(planted.target)
    assert by_id["a0.h0"]["top_token"] is None and by_id["m0"]["top_token"] is None
    assert by_id["input"]["top_token"] is None and by_id["logits"]["top_token"] is None
    assert by_id["m1"]["top_token"] is not None and by_id["a0.h1"]["top_token"] is not None
    # oracle for the logit: the final norm (cached scale) is affine, so a component's direct logit is
    # unembed(norm(out)) - unembed(norm(0)) through lens.apply_cached_final_norm
    tokens = model.tokenize(planted.prompt)
    name = f"blocks.{planted.layer}.attn.hook_result"
    _, cache = model.bridge.run_with_cache(tokens, names_filter=lambda n: n in (name, "ln_final.hook_scale"))
    out, scale = cache[name][0, -1, planted.head], cache["ln_final.hook_scale"][0, -1]
    direct = (apply_cached_final_norm(model, out, scale) - apply_cached_final_norm(model, 0 * out, scale)) @ model.W_U
    assert top["logit"] == pytest.approx(float(direct.max()), rel=1e-4, abs=1e-5)
    assert int(direct.argmax()) == top["id"]
    # an MLP node: the planted neuron's layer writes the answer
    neuron = planted_neuron_model()
    result = _result_for(neuron.model, neuron.prompts[0], neuron.target, lambda nid: nid == f"m{neuron.layer}")
    annotate_circuit_roles(neuron.model, result)
    tops = {n["id"]: n["top_token"] for n in result["nodes"] if n["top_token"]}
    assert list(tops) == [f"m{neuron.layer}"] and tops[f"m{neuron.layer}"]["token"] == neuron.target
    assert result["heads"] == {}

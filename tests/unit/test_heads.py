"""Head roles: attention masses, exact per-source DLA, lens tokens and the role rules."""

from __future__ import annotations

import pytest
import torch

from kcircuits.circuits.heads import (
    HeadRoleThresholds,
    _role,
    classify_heads,
    head_detail,
    parse_head_id,
    per_source_outputs,
    readout_matrix,
)
from kcircuits.circuits.subject import subject_positions
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
def test_forced_attention_gives_mover_and_relation_labels(fixture, request):
    model = request.getfixturevalue(fixture)
    tokens = model.tokenize(PROMPT)
    subj = subject_positions(model, PROMPT, SUBJECT)
    assert model.token_strings(tokens[0, subj]) == [" France"]
    relation_pos = [p for p in range(1, tokens.shape[1]) if p not in subj]
    hooks = [
        ("blocks.1.attn.hook_pattern", _pattern_override(2, {subj[0]: 1.0})),
        ("blocks.0.attn.hook_pattern", _pattern_override(1, {p: 1.0 / len(relation_pos) for p in relation_pos})),
    ]
    target = model.first_token_id(" Paris")
    with model.bridge.hooks(fwd_hooks=hooks):
        roles = classify_heads(model, tokens, subj, target)
    assert len(roles) == 8
    mover, relation = roles["a1.h2"], roles["a0.h1"]
    assert mover["subject_attention"] == pytest.approx(1.0)
    assert mover["subject_dla_share"] == pytest.approx(1.0)
    assert mover["role"] == "mover"
    assert relation["relation_attention"] == pytest.approx(1.0)
    assert relation["subject_attention"] == pytest.approx(0.0)
    assert relation["relation_dla_share"] == pytest.approx(1.0)
    assert relation["role"] == "relation"
    # a head that attends only to BOS has no subject or relation role
    with model.bridge.hooks(fwd_hooks=[("blocks.1.attn.hook_pattern", _pattern_override(0, {0: 1.0}))]):
        bos_head = classify_heads(model, tokens, subj, target, head_ids=["a1.h0"])["a1.h0"]
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
        assert parts["subject_dla"] + parts["relation_dla"] == pytest.approx(
            parts["dla"] - _bos_dla(model, cache, layer, h, target), abs=1e-6)


def _bos_dla(model, cache, layer, h, target):
    scale = cache["ln_final.hook_scale"][0, -1].float()
    u = readout_matrix(model, torch.tensor([target]), centre_vocab=True)[:, 0]
    return float((per_source_outputs(model, cache, layer, -1)[h, 0] / scale) @ u)


def test_role_rules_and_thresholds():
    t = HeadRoleThresholds()
    assert _role(0.5, 0.1, 0.2, 0.1, lens_hit=True, t=t) == "mover"
    assert _role(0.5, 0.1, 0.6, 0.1, lens_hit=False, t=t) == "mover"
    assert _role(0.5, 0.1, 0.2, 0.1, lens_hit=False, t=t) is None
    assert _role(0.1, 0.6, 0.1, 0.7, lens_hit=False, t=t) == "relation"
    assert _role(0.2, 0.2, 0.3, 0.3, lens_hit=False, t=t) == "mixture"
    assert _role(0.2, 0.2, 0.3, 0.2, lens_hit=False, t=t) is None
    assert _role(0.29, 0.1, 0.9, 0.0, lens_hit=True, t=t) is None
    assert _role(0.29, 0.1, 0.9, 0.0, lens_hit=True, t=HeadRoleThresholds(mover_attention=0.25)) == "mover"


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

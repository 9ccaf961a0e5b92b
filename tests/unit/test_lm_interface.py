"""The model interface (kcircuits.lm.interface): the science reaches the bridge only through it, and
each method gives the numbers the raw bridge / HF model gives."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import kcircuits

PACKAGE = Path(kcircuits.__file__).parent
PROMPT = "The Eiffel Tower is located in the city of"


@pytest.fixture(params=["tiny_gpt2", "tiny_llama"])
def model(request):
    return request.getfixturevalue(request.param)


def test_no_science_module_reaches_the_bridge():
    reach = re.compile(r"\.bridge\b")
    offenders = [f"{path.relative_to(PACKAGE)}:{n}: {line.strip()}"
                 for sub in ("circuits", "editing") for path in sorted((PACKAGE / sub).glob("*.py"))
                 for n, line in enumerate(path.read_text().splitlines(), start=1) if reach.search(line)]
    assert offenders == []


def test_the_probe_would_see_a_reach():
    assert re.search(r"\.bridge\b", "logits = model.bridge(tokens)")


def test_forwards_match_the_bridge(model):
    tokens = model.tokenize(PROMPT)
    with torch.no_grad():
        raw = model.bridge(tokens)
        logits, cache = model.run_with_cache(tokens, ["blocks.0.hook_resid_pre", "ln_final.hook_scale"])
        last = model.run_with_hooks(tokens, [], last_only=True)
    assert raw.shape == (1, tokens.shape[1], model.arch.d_vocab)
    torch.testing.assert_close(model.logits(tokens), raw, rtol=0, atol=0)
    torch.testing.assert_close(logits, raw, rtol=1e-5, atol=1e-5)
    assert set(cache.keys()) == {"blocks.0.hook_resid_pre", "ln_final.hook_scale"}
    assert cache["ln_final.hook_scale"].shape == (1, tokens.shape[1], 1)
    assert last.shape == (1, 1, model.arch.d_vocab)
    torch.testing.assert_close(last[:, 0], raw[:, -1], rtol=1e-5, atol=1e-5)


def test_a_hook_changes_the_forward(model):
    tokens = model.tokenize(PROMPT)
    zero = [(f"blocks.{model.arch.n_layers - 1}.hook_mlp_out", lambda x, hook: torch.zeros_like(x))]
    with torch.no_grad():
        hooked = model.run_with_hooks(tokens, zero)
        plain = model.logits(tokens)
    assert (hooked - plain).abs().max() > 1e-4


def test_unembed_final_equals_the_forwards_logits(model):
    tokens = model.tokenize(PROMPT)
    final = f"blocks.{model.arch.n_layers - 1}.hook_resid_post"
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens, [final])
        out = model.unembed_final(cache[final][:, -1:])  # [1, 1, V]
        via_hf = model.unembed(model.final_norm(cache[final][:, -1]))  # the HF modules, no hooks
    torch.testing.assert_close(out[:, 0], logits[:, -1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(via_hf, logits[:, -1], rtol=1e-4, atol=1e-4)


def test_run_blocks_from_a_cached_residual_reproduces_the_forward(model):
    tokens = model.tokenize(PROMPT)
    last = model.arch.n_layers - 1
    names = ["blocks.1.hook_resid_pre", f"blocks.{last}.hook_resid_post", *model.block_input_names]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names)
        seen = []
        with model.hooks([("blocks.1.hook_mlp_out", lambda x, hook: seen.append(x.shape))]):
            out = model.run_blocks(cache["blocks.1.hook_resid_pre"].repeat(3, 1, 1), 1, cache)
    assert seen == [(3, tokens.shape[1], model.arch.d_model)]  # the hook fired, on the batch of 3
    torch.testing.assert_close(out, cache[f"blocks.{last}.hook_resid_post"].repeat(3, 1, 1), rtol=1e-5, atol=1e-5)
    assert set(model.block_input_names) == ({"rotary_emb.hook_cos", "rotary_emb.hook_sin"}
                                            if model.arch.family == "llama" else set())


def test_weights_against_the_hf_model(model):
    hf = model.hf_model
    assert model.norm_kind == ("layernorm" if model.arch.family == "gpt2" else "rmsnorm")
    torch.testing.assert_close(model.W_U, hf.lm_head.weight.T, rtol=0, atol=0)
    tokens = model.tokenize(PROMPT)
    layer = model.arch.n_layers - 1
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, [f"blocks.{layer}.mlp.hook_post", f"blocks.{layer}.hook_mlp_out",
                                                 f"blocks.{layer}.attn.hook_z", f"blocks.{layer}.attn.hook_result"])
    # MLP: out = post @ W_out (+ bias), and the HF module in its stated layout holds the same matrix
    module = model.mlp_out_component(layer)
    bias = getattr(module, "bias", None)
    want = cache[f"blocks.{layer}.mlp.hook_post"] @ model.mlp_W_out(layer) + (0 if bias is None else bias)
    torch.testing.assert_close(want, cache[f"blocks.{layer}.hook_mlp_out"], rtol=1e-4, atol=1e-5)
    layout = model.mlp_out_layout(layer)
    assert layout == ("in_out" if model.arch.family == "gpt2" else "out_in")
    stored = module.weight if layout == "in_out" else module.weight.T
    torch.testing.assert_close(stored, model.mlp_W_out(layer), rtol=0, atol=0)
    # attention: per-head result = z_h @ W_O[h]
    W_O = model.attn_W_O(layer)
    assert W_O.shape == (model.arch.n_heads, model.arch.d_model // model.arch.n_heads, model.arch.d_model)
    per_head = torch.einsum("bphe,hed->bphd", cache[f"blocks.{layer}.attn.hook_z"], W_O)
    torch.testing.assert_close(per_head, cache[f"blocks.{layer}.attn.hook_result"], rtol=1e-4, atol=1e-5)


def test_named_parameters_and_submodule_agree(model):
    name, param = next(iter(model.named_parameters()))
    path, attr = name.rsplit(".", 1)
    assert getattr(model.submodule(path), attr) is param


def test_copy_is_independent_even_after_a_gradient_forward(tiny_gpt2):
    tokens = tiny_gpt2.tokenize(PROMPT)
    with torch.enable_grad():  # GPT-2's attention then keeps a non-leaf pattern, which deepcopy refuses
        delta = torch.zeros(tiny_gpt2.arch.d_model, requires_grad=True)
        tiny_gpt2.run_with_hooks(tokens, [("blocks.0.hook_resid_pre", lambda x, hook: x + delta)]).sum().backward()
    copied = tiny_gpt2.copy(f"{tiny_gpt2.revision}+test")
    assert copied.revision.endswith("+test") and copied.tokenizer is tiny_gpt2.tokenizer
    with torch.no_grad():
        before = tiny_gpt2.logits(tokens)
        copied.mlp_out_component(0).weight.mul_(3.0)
        assert (copied.logits(tokens) - before).abs().max() > 1e-3
        torch.testing.assert_close(tiny_gpt2.logits(tokens), before, rtol=0, atol=0)


def test_norm_scales_sees_every_norm_call_and_edits_them(model):
    """The provider sees each norm call in forward order (per block: ln1 on the residual, its
    q/k/v forks, ln2; then ln_final); returning the scale itself changes nothing, doubling every
    scale changes the logits."""
    from kcircuits.circuits.graph import get_graph
    from kcircuits.circuits.patching import run_with_edge_ablation

    tokens = model.tokenize(PROMPT)
    g = get_graph(model.arch)
    zero = torch.zeros(1, 1, g.n_senders, model.arch.d_model)
    seen: list[tuple[int, ...]] = []

    def record(scale):
        seen.append(tuple(scale.shape))
        return scale

    with torch.no_grad():
        plain = run_with_edge_ablation(model, tokens, g, g.full_mask(), zero)
        with model.norm_scales(record):
            same = run_with_edge_ablation(model, tokens, g, g.full_mask(), zero)
        with model.norm_scales(lambda s: 2 * s):
            doubled = run_with_edge_ablation(model, tokens, g, g.full_mask(), zero)
    torch.testing.assert_close(same, plain, rtol=1e-4, atol=1e-4)
    assert (doubled - plain).abs().max() > 1e-3
    pos = tokens.shape[1]
    kv = model.arch.n_kv_heads
    per_block = [(1, pos, 1), (pos * model.arch.n_heads, 1), (pos * kv, 1), (pos * kv, 1), (1, pos, 1)]
    assert seen == per_block * model.arch.n_layers + [(1, pos, 1)]

"""Edge-level patching invariants (METHODS §3) on tiny GPT-2 and tiny Llama (GQA)."""

from __future__ import annotations

import pytest
import torch

from kcircuits.circuits.graph import get_graph
from kcircuits.circuits.patching import mean_ablation, run_with_edge_ablation, sender_outputs
from kcircuits.errors import BadRequest

CLEAN = "The Eiffel Tower is in the city of"
CORRUPT = "The Colosseum is in the city of"


@pytest.fixture(params=["tiny_gpt2", "tiny_llama"])
def model(request):
    return request.getfixturevalue(request.param)


def _logits(model, tokens):
    with torch.no_grad():
        return model.bridge(tokens)


def test_sender_outputs_sum_to_final_residual(model):
    g = get_graph(model.arch)
    tokens = model.tokenize(CLEAN)
    out = sender_outputs(model, tokens, g)
    _, cache = model.bridge.run_with_cache(tokens)
    assert out.shape == (1, tokens.shape[1], g.n_senders, model.arch.d_model)
    resid = cache[f"blocks.{g.n_layers - 1}.hook_resid_post"]
    assert torch.allclose(out.sum(2), resid, atol=1e-4)  # random models: zero biases


def test_full_mask_is_clean_and_empty_mask_is_corrupted(model):
    g = get_graph(model.arch)
    clean, corrupt = model.tokenize(CLEAN), model.tokenize(CORRUPT)
    assert clean.shape == corrupt.shape
    ablated = sender_outputs(model, corrupt, g)
    clean_logits, corrupt_logits = _logits(model, clean), _logits(model, corrupt)
    assert (clean_logits - corrupt_logits).abs().max() > 0.1  # the invariant below is not vacuous
    with torch.no_grad():
        full = run_with_edge_ablation(model, clean, g, g.full_mask(), ablated)
        empty = run_with_edge_ablation(model, clean, g, g.empty_mask(), ablated)
    torch.testing.assert_close(full, clean_logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(empty, corrupt_logits, atol=1e-4, rtol=0)


def test_mask_batch_equals_single_runs(model):
    g = get_graph(model.arch)
    clean, corrupt = model.tokenize(CLEAN), model.tokenize(CORRUPT)
    ablated = sender_outputs(model, corrupt, g)
    gen = torch.Generator().manual_seed(0)
    masks = torch.rand(3, g.n_senders, g.n_receivers, generator=gen) < 0.5
    with torch.no_grad():
        batch = run_with_edge_ablation(model, clean, g, masks, ablated)
        singles = [run_with_edge_ablation(model, clean, g, m, ablated) for m in masks]
    assert batch.shape[:2] == (3, 1)
    for i in range(3):
        torch.testing.assert_close(batch[i], singles[i], atol=1e-4, rtol=0)
    assert (singles[0] - singles[1]).abs().max() > 1e-3


def test_single_edge_ablation_matches_manual_patch(tiny_gpt2):
    """Ablating input->logits only shifts the final residual by (corrupt - clean) embeddings."""
    model = tiny_gpt2
    g = get_graph(model.arch)
    clean, corrupt = model.tokenize(CLEAN), model.tokenize(CORRUPT)
    ablated = sender_outputs(model, corrupt, g)
    clean_out = sender_outputs(model, clean, g)
    mask = g.full_mask()
    mask[0, g.receiver_index["logits"]] = False
    delta = ablated[:, :, 0] - clean_out[:, :, 0]
    with torch.no_grad():
        got = run_with_edge_ablation(model, clean, g, mask, ablated)
        want = model.bridge.run_with_hooks(clean, fwd_hooks=[("ln_final.hook_in", lambda x, hook: x + delta)])
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


def test_zero_and_mean_ablation_and_float_mask_grad(tiny_gpt2):
    model = tiny_gpt2
    g = get_graph(model.arch)
    clean = model.tokenize(CLEAN)
    outs = sender_outputs(model, clean, g)
    zeros = torch.zeros_like(outs)
    with torch.no_grad():
        z = run_with_edge_ablation(model, clean, g, g.empty_mask(), zeros)
        mu = run_with_edge_ablation(model, clean, g, g.empty_mask(), mean_ablation(outs))
    # empty circuit under zero ablation: every receiver sees only biases (zero in random models)
    want = model.bridge.run_with_hooks(clean, fwd_hooks=[("ln_final.hook_in", lambda x, hook: x * 0)])
    torch.testing.assert_close(z, want, atol=1e-4, rtol=0)
    assert not torch.allclose(mu, z)
    weights = torch.full((g.n_senders, g.n_receivers), 0.5, requires_grad=True)
    logits = run_with_edge_ablation(model, clean, g, weights, zeros)
    logits[0, -1, 0].backward()
    assert weights.grad is not None and weights.grad.abs().sum() > 0


def test_length_mismatch_is_refused(tiny_gpt2):
    g = get_graph(tiny_gpt2.arch)
    ablated = sender_outputs(tiny_gpt2, tiny_gpt2.tokenize("Short"), g)
    with pytest.raises(BadRequest, match="same number of tokens"):
        run_with_edge_ablation(tiny_gpt2, tiny_gpt2.tokenize(CLEAN), g, g.full_mask(), ablated)

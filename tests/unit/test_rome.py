"""ROME on tiny random models: the rank-one update maps k* to v* exactly and touches one matrix."""

from __future__ import annotations

import pytest
import torch

from kcircuits.editing.covariance import layer_covariance
from kcircuits.editing.rome import (
    RomeParams,
    apply_rome,
    compute_key,
    mlp_out,
    rome_update,
    subject_positions,
)
from kcircuits.editing.session import copy_model
from kcircuits.errors import BadRequest

PROMPT = "The Eiffel Tower is located in the city of"


@pytest.mark.parametrize("name", ["tiny_gpt2", "tiny_llama"])
def test_update_maps_key_to_value_with_rank_one(name, request):
    model = copy_model(request.getfixturevalue(name), "t")
    k_star = compute_key(model, 1, PROMPT, "Eiffel Tower", ["Hello there", "A b c"])
    out = mlp_out(model, 1)
    before = out.weight.detach().clone()
    gen = torch.Generator().manual_seed(0)
    v_star = torch.randn(model.arch.d_model, generator=gen)
    cov = torch.randn(model.arch.d_mlp, model.arch.d_mlp, generator=gen)
    u = torch.linalg.solve(cov @ cov.T + torch.eye(model.arch.d_mlp), k_star)
    upd = rome_update(model, 1, k_star, v_star, u / u.norm())
    with torch.no_grad():
        assert torch.allclose(out.apply(k_star), v_star, atol=1e-4)
        delta = out.weight - before
    assert torch.allclose(delta, upd, atol=1e-6)
    assert torch.linalg.matrix_rank(delta.double(), rtol=1e-6) == 1
    assert delta.abs().max() > 0
    # the bridge's forward really uses the edited HF weight: hook_mlp_out at a key matches apply()
    tokens = model.tokenize(PROMPT)
    _, cache = model.bridge.run_with_cache(tokens, names_filter=lambda n: n in
                                           ("blocks.1.mlp.hook_post", "blocks.1.hook_mlp_out"))
    assert torch.allclose(out.apply(cache["blocks.1.mlp.hook_post"]), cache["blocks.1.hook_mlp_out"], atol=1e-5)


def test_weight_layouts(tiny_gpt2, tiny_llama):
    assert mlp_out(tiny_gpt2, 0).layout == "in_out"  # Conv1D [d_mlp, d_model]
    assert mlp_out(tiny_llama, 0).layout == "out_in"  # Linear [d_model, d_mlp]
    assert tuple(mlp_out(tiny_llama, 0).weight.shape) == (64, 256)


def test_subject_positions(tiny_gpt2):
    toks = tiny_gpt2.token_strings(tiny_gpt2.tokenize(PROMPT))
    pos = subject_positions(tiny_gpt2, PROMPT, "Eiffel Tower")
    assert "".join(toks[p] for p in pos).strip() == "Eiffel Tower"
    with pytest.raises(BadRequest):
        subject_positions(tiny_gpt2, PROMPT, "Colosseum")
    with pytest.raises(BadRequest):
        subject_positions(tiny_gpt2, PROMPT, "  ")


@pytest.mark.parametrize("name", ["tiny_gpt2", "tiny_llama"])
def test_apply_rome_end_to_end_only_one_matrix_changes(name, request, tmp_path):
    from kcircuits.config import Settings

    base = request.getfixturevalue(name)
    model = copy_model(base, "t")
    before = {k: v.detach().clone() for k, v in model.bridge.original_model.named_parameters()}
    settings = Settings(cache_dir=tmp_path)
    # layer 0: in a 2-layer model only layer 0's output at the subject can reach the last position
    # random weights give a tiny |v_init|, so ROME's decay term |delta|/|v_init|^2 would dominate: off here
    params = RomeParams.from_dict({"layer": 0, "n_prefixes": 2, "prefix_len": 4, "cov_tokens": 256,
                                   "v_weight_decay": 0.0, "clamp": 20.0}, model)
    info = apply_rome(model, PROMPT, "Eiffel Tower", " Rome", params, settings)
    assert info["covariance"].startswith("generated: ") and info["layer"] == 0
    assert list((tmp_path / "rome").glob("*.pt"))  # cached on disk
    after = dict(model.bridge.original_model.named_parameters())
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) == 1 and ".0." in changed[0] and ("c_proj" in changed[0] or "down_proj" in changed[0])
    # the delta at the MLP output pushes towards " Rome": its log-prob rises on the edit prompt
    rome = model.first_token_id(" Rome")
    with torch.no_grad():
        lp_pre = base.bridge(base.tokenize(PROMPT))[0, -1].log_softmax(-1)[rome]
        lp_post = model.bridge(model.tokenize(PROMPT))[0, -1].log_softmax(-1)[rome]
    assert lp_post > lp_pre
    assert info["v_losses"][-1] < info["v_losses"][0]


def test_covariance_none_and_bad_params(tiny_gpt2, tmp_path):
    from kcircuits.config import Settings

    cov = layer_covariance(tiny_gpt2, 0, "none", settings=Settings(cache_dir=tmp_path))
    k = torch.randn(tiny_gpt2.arch.d_mlp)
    assert torch.equal(cov.solve(k, 0.1), k) and cov.describe(0.1).startswith("none")
    with pytest.raises(BadRequest):
        RomeParams.from_dict({"layer": 2}, tiny_gpt2)
    with pytest.raises(BadRequest):
        RomeParams.from_dict({"bogus": 1}, tiny_gpt2)
    with pytest.raises(BadRequest):
        layer_covariance(tiny_gpt2, 0, "file", settings=Settings(cache_dir=tmp_path))


def test_covariance_from_operator_text_file(tiny_gpt2, tmp_path):
    """Source "file": keys come from the operator's text, the second call reads the disk cache."""
    from kcircuits.config import Settings

    text = tmp_path / "corpus.txt"
    text.write_text("The Eiffel Tower is in Paris. The Colosseum is in Rome. " * 20)
    settings = Settings(cache_dir=tmp_path / "cache", edit_covariance_text=text)
    cov = layer_covariance(tiny_gpt2, 0, "file", n_tokens=256, settings=settings)
    assert cov.source == "file" and 0 < cov.n_tokens <= 256 and "corpus.txt" in cov.describe(0.1)
    assert cov.moment.shape == (tiny_gpt2.arch.d_mlp, tiny_gpt2.arch.d_mlp)
    assert torch.allclose(cov.moment, cov.moment.T, atol=1e-5)
    again = layer_covariance(tiny_gpt2, 0, "file", n_tokens=256, settings=settings)
    assert torch.equal(again.moment, cov.moment) and len(list((tmp_path / "cache").rglob("*.pt"))) == 1

"""Logit lens: shapes, LN-mode agreement at the last row, target ranks against a brute-force oracle."""

from __future__ import annotations

import pytest
import torch

from kcircuits.circuits.lens import LensRequest, logit_lens, parse_node, project_node, residual_rows
from kcircuits.errors import BadRequest


@pytest.fixture(params=["tiny_gpt2", "tiny_llama"])
def model(request):
    return request.getfixturevalue(request.param)


def test_rows_and_final_row_matches_model_logits(model):
    tokens = model.tokenize("The Eiffel Tower is located in the city of")
    rows, scale, logits = residual_rows(model, tokens)
    assert rows.shape == (model.arch.n_layers + 1, tokens.shape[1], model.arch.d_model)
    out = logit_lens(model, tokens, LensRequest(top_k=3))
    assert len(out["layers"]) == model.arch.n_layers + 1
    assert all(len(layer["positions"]) == tokens.shape[1] for layer in out["layers"])
    final_top = out["layers"][-1]["positions"][-1]["top"][0]
    assert final_top["id"] == int(logits[-1].argmax())
    assert final_top["prob"] == pytest.approx(float(logits[-1].softmax(-1).max()), rel=1e-4)
    assert out["prediction"]["id"] == final_top["id"]


def test_ln_modes_agree_at_last_layer_only(model):
    tokens = model.tokenize("Hello there, general Kenobi")
    target = model.first_token_id(" Paris")
    rec = logit_lens(model, tokens, LensRequest(top_k=5, target_id=target, ln_mode="recompute"))
    cac = logit_lens(model, tokens, LensRequest(top_k=5, target_id=target, ln_mode="cached"))
    assert rec["target"]["rank"][-1] == cac["target"]["rank"][-1]
    assert rec["target"]["prob"][-1] == pytest.approx(cac["target"]["prob"][-1], rel=1e-4)
    early = [abs(a - b) for a, b in zip(rec["target"]["prob"][:-1], cac["target"]["prob"][:-1], strict=True)]
    assert max(early) > 0  # the modes really differ before the last row


def test_target_rank_matches_brute_force(tiny_gpt2):
    model = tiny_gpt2
    tokens = model.tokenize("The capital of France is")
    target = model.first_token_id(" Paris")
    out = logit_lens(model, tokens, LensRequest(top_k=1, target_id=target, subject_positions=(4,), kl=True))
    rows, _, _ = residual_rows(model, tokens)
    norm = model.bridge.ln_final.original_component
    with torch.inference_mode():
        logits = (norm(rows) @ model.bridge.W_U + model.bridge.b_U)[:, -1]
    expected = [int((row > row[target]).sum()) + 1 for row in logits]
    assert out["target"]["rank"] == expected
    assert len(out["target"]["subject_rank"]) == model.arch.n_layers + 1
    assert out["layers"][-1]["positions"][-1]["kl"] == pytest.approx(0.0, abs=1e-6)
    assert out["layers"][0]["positions"][-1]["kl"] > 0


def test_project_node_and_bad_nodes(tiny_llama):
    tokens = tiny_llama.tokenize("one two three")
    out = project_node(tiny_llama, tokens, "a1.h3", k=4)
    assert len(out["promoted"]) == len(out["suppressed"]) == 4
    assert out["promoted"][0]["score"] >= out["promoted"][-1]["score"]
    assert parse_node(tiny_llama, "m1") == ("mlp", 1, None)
    for bad in ["a9.h0", "a0.h4", "m2", "x", "a.h", "logits"]:
        with pytest.raises(BadRequest):
            parse_node(tiny_llama, bad)

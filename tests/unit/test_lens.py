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


def _assert_same_lens(a: dict, b: dict) -> None:
    """Equal ids and ranks; probabilities and KL equal up to float rounding (a longer prompt runs
    the earlier positions through differently shaped kernels, which moves the last bits)."""
    assert a["prediction"]["id"] == b["prediction"]["id"]
    assert a["target"]["rank"] == b["target"]["rank"] and a["target"]["subject_rank"] == b["target"]["subject_rank"]
    assert a["target"]["prob"] == pytest.approx(b["target"]["prob"], rel=1e-4, abs=1e-7)
    for la, lb in zip(a["layers"], b["layers"], strict=True):
        for pa, pb in zip(la["positions"], lb["positions"], strict=True):
            assert [t["id"] for t in pa["top"]] == [t["id"] for t in pb["top"]]
            assert [t["prob"] for t in pa["top"]] == pytest.approx([t["prob"] for t in pb["top"]], rel=1e-4, abs=1e-7)
            assert pa["kl"] == pytest.approx(pb["kl"], rel=1e-3, abs=1e-6)


@pytest.mark.parametrize("ln_mode", ["recompute", "cached"])
def test_prefix_cache_while_typing_equals_fresh_lens(model, ln_mode, monkeypatch):
    """Typing word by word: each cached answer equals an uncached one (up to float rounding), and
    only the positions not seen before are unembedded (subject curves come from the cache)."""
    from kcircuits.circuits import lens as lens_mod

    cache = lens_mod.PrefixCache()
    unembedded: list[int] = []
    real = lens_mod._row_logits

    def counting(m, rows, scale, mode):
        unembedded.append(rows.shape[1])
        return real(m, rows, scale, mode)

    monkeypatch.setattr(lens_mod, "_row_logits", counting)
    words = "The Eiffel Tower is located in the city of".split(" ")
    target = model.first_token_id(" Paris")
    seen = 0
    for n in range(1, len(words) + 1):
        tokens = model.tokenize(" ".join(words[:n]))
        subject = (1,) if tokens.shape[1] > 2 else ()
        req = LensRequest(top_k=4, target_id=target, subject_positions=subject, ln_mode=ln_mode, kl=True)
        unembedded.clear()
        got = logit_lens(model, tokens, req, cache=cache)
        assert unembedded == [tokens.shape[1] - seen]  # the target's per-position curves are cached too
        _assert_same_lens(got, logit_lens(model, tokens, req, cache=None))
        seen = tokens.shape[1]
    other = LensRequest(top_k=4, target_id=model.first_token_id(" Rome"), subject_positions=(1, 2), ln_mode=ln_mode, kl=True)
    _assert_same_lens(logit_lens(model, tokens, other, cache=cache), logit_lens(model, tokens, other, cache=None))
    unembedded.clear()
    logit_lens(model, model.tokenize("The Colosseum"), LensRequest(top_k=4, ln_mode=ln_mode, kl=True), cache=cache)
    assert unembedded == [model.tokenize("The Colosseum").shape[1] - (1 if model.spec.prepend_bos else 0) - 1]

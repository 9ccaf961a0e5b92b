"""FT-M / FT-L on tiny models: only the chosen matrix moves, within the norm constraint."""

from __future__ import annotations

import pytest
import torch

from kcircuits.editing.ft import FtParams, apply_ft
from kcircuits.editing.session import copy_model
from kcircuits.errors import BadRequest

PROMPT = "The Eiffel Tower is located in the city of"


@pytest.mark.parametrize(("name", "mode"), [("tiny_gpt2", "ft-m"), ("tiny_llama", "ft-m"), ("tiny_gpt2", "ft-l")])
def test_ft_changes_only_chosen_layer_within_constraint(name, mode, request):
    base = request.getfixturevalue(name)
    model = copy_model(base, "t")
    before = {k: v.detach().clone() for k, v in model.bridge.original_model.named_parameters()}
    params = FtParams.from_dict({"layer": 1, "norm_constraint": 1e-3, "lr": 1e-2, "steps": 10}, model)
    info = apply_ft(model, PROMPT, " Rome Italy", params, mode)
    after = dict(model.bridge.original_model.named_parameters())
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) == 1 and ".1." in changed[0]
    assert "c_proj" in changed[0] or "down_proj" in changed[0]
    diff = (after[changed[0]] - before[changed[0]]).abs().max()
    assert 0 < diff <= 1e-3 + 1e-6 and info["max_abs_change"] == pytest.approx(float(diff))
    assert info["losses"][-1] < info["losses"][0]  # the loss decreases
    assert all(not p.requires_grad for p in model.bridge.parameters())
    assert all(not p.requires_grad for p in base.bridge.parameters())


def test_ft_l_scores_only_last_prompt_position(tiny_gpt2):
    model = copy_model(tiny_gpt2, "t")
    info = apply_ft(model, PROMPT, " Rome Italy", FtParams.from_dict({"layer": 0, "steps": 1}, model), "ft-l")
    rome = model.first_token_id(" Rome")
    with torch.no_grad():
        expected = -tiny_gpt2.bridge(tiny_gpt2.tokenize(PROMPT))[0, -1].log_softmax(-1)[rome]
    assert info["losses"][0] == pytest.approx(float(expected), abs=1e-4)


def test_ft_bad_params(tiny_gpt2):
    with pytest.raises(BadRequest):
        FtParams.from_dict({"layer": 9}, tiny_gpt2)
    with pytest.raises(BadRequest):
        FtParams.from_dict({"norm_constraint": 0}, tiny_gpt2)
    with pytest.raises(BadRequest):
        apply_ft(copy_model(tiny_gpt2, "t"), PROMPT, " Rome", FtParams.from_dict({}, tiny_gpt2), "ft-x")

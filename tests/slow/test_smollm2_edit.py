"""Real SmolLM2-135M: ROME and FT-M move the Eiffel Tower to Rome; France keeps Paris."""

from __future__ import annotations

import pytest
import torch

from kcircuits.editing.evaluate import top1
from kcircuits.editing.session import EditRequest, edit_and_evaluate

pytestmark = pytest.mark.slow
PROMPT = "The Eiffel Tower is located in the city of"


def _edit(smollm2, method):
    req = EditRequest(model="smollm2-135m", method=method, prompt=PROMPT, subject="Eiffel Tower", target=" Rome")
    return edit_and_evaluate(smollm2, req)


def test_rome_eiffel_to_rome_keeps_france(smollm2):
    base_logits = smollm2.bridge(smollm2.tokenize("The capital of France is")).detach().clone()
    assert top1(smollm2, PROMPT) == smollm2.first_token_id(" Paris")
    edited, result = _edit(smollm2, "rome")
    ev = result["evaluation"]
    assert result["old_target"] == " Paris" and result["layer"] == smollm2.spec.edit.rome_layer
    assert ev["efficacy"]["success"] and ev["efficacy"]["new_rank"] == 1
    assert top1(edited, PROMPT) == smollm2.first_token_id(" Rome")
    assert top1(edited, "The capital of France is") == smollm2.first_token_id(" Paris")  # locality
    assert ev["prob_shift"]["old"]["post"] < ev["prob_shift"]["old"]["pre"]
    assert result["covariance"].startswith("generated")
    assert torch.equal(smollm2.bridge(smollm2.tokenize("The capital of France is")), base_logits)


def test_ft_m_reaches_efficacy(smollm2):
    edited, result = _edit(smollm2, "ft-m")
    assert result["evaluation"]["efficacy"]["success"]
    assert top1(edited, PROMPT) == smollm2.first_token_id(" Rome")
    assert result["edit"]["max_abs_change"] <= result["edit"]["params"]["norm_constraint"] + 1e-6  # fp32 rounding

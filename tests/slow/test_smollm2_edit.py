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


def test_rome_head_diff_leads_with_changed_heads_above_the_edit(smollm2):
    """Heads at or below the edited layer read nothing the edit changed (the MLP edit acts after them at
    its layer); above it, a head that reads the subject loses the old answer from its top tokens."""
    from tests.unit.edit_support import compare_inline

    edited, result = _edit(smollm2, "rome")
    diff = compare_inline(smollm2, edited, PROMPT, "Eiffel Tower", " Rome", result["old_target"])["heads"]
    rows = diff["rows"]
    layer = result["layer"]
    assert all(not r["changed"] for r in rows if r["layer"] <= layer)
    assert rows[0]["changed"] and rows[0]["layer"] > layer and diff["n_changed"] > 0
    assert [r["change"] for r in rows] == sorted((r["change"] for r in rows), reverse=True)
    readers = [r for r in rows if r["changed"] and r["subject_attention"]["post"] >= 0.3]
    assert any(r["marks"]["old"] == "left" for r in readers)

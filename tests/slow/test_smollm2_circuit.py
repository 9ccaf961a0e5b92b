"""A real circuit on SmolLM2-135M: Eiffel Tower -> Paris (EAP-IG, corrupted-input patching).

Measured (CPU): the top 700 edges (~1% of 70,651; 629 after pruning) keep faithfulness ~0.95 and
Hit@10 = 1 (target rank 1), random connected circuits of the same size get faithfulness ~0.00
and Hit@10 = 0 (rank ~159, the corrupted run's rank of " Paris").
"""

from __future__ import annotations

import pytest

PROMPT = "The Eiffel Tower is located in the city of"
CORRUPT = "The Colosseum is located in the city of"  # same token count; the model answers " Rome"


@pytest.mark.slow
def test_eiffel_tower_circuit(smollm2):
    from kcircuits.circuits.discover import compute_circuit

    result = compute_circuit(smollm2, PROMPT, " Paris", method="eap-ig", ablation="patch", corrupt_prompt=CORRUPT,
                             top_n=700, random_seeds=3, with_heads=False, max_edges_returned=1000)
    m = result["metrics"]
    assert result["graph"]["total_edges"] == 70_651
    assert result["subject"]["text"] == "Eiffel Tower"
    assert m["edge_fraction"] <= 0.02
    assert m["faithfulness"] >= 0.5
    assert m["hit_at_10"]["full"] == 1 and m["hit_at_10"]["circuit"] == 1
    assert m["hit_at_10"]["random"] == 0.0
    assert all(abs(f) < 0.2 for f in result["random"]["faithfulness"])
    assert all(abs(e - m["edges"]) <= 30 for e in result["random"]["edges"])  # same size (+ < one path)

"""bench/roles.py: head ablation, the random comparison and the summary, on the planted roles model."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import pytest

from kcircuits.circuits.heads import HeadRoleThresholds
from kcircuits.circuits.testing import planted_roles_model

_SPEC = importlib.util.spec_from_file_location("bench_roles", Path(__file__).parents[2] / "bench" / "roles.py")
roles = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(roles)


@pytest.fixture(scope="module")
def planted():
    return planted_roles_model()


def test_zero_ablating_the_planted_mover_removes_the_answer(planted):
    model = planted.model
    tokens = model.tokenize(planted.prompt)
    target = model.first_token_id(planted.target)
    clean = roles.target_logit(model, tokens, target, [])
    assert roles.target_logit(model, tokens, target, []) == clean
    mover_drop = clean - roles.target_logit(model, tokens, target, [planted.mover])
    random_drop = clean - roles.target_logit(model, tokens, target, ["a1.h7"])  # a small random head
    assert mover_drop > 1.0 and abs(random_drop) < 0.1 * mover_drop
    d = roles.drops(model, tokens, target, [planted.mover], ["a1.h6", "a1.h7", "a0.h0"], 4, random.Random(0))
    assert d["drop"] == pytest.approx(mover_drop) and len(d["random"]) == 4 and d["drop"] > max(d["random"])
    assert roles.drops(model, tokens, target, [], ["a1.h6"], 4, random.Random(0)) is None


def test_run_and_summary_on_planted_facts(planted):
    fact = {"relation": "capital", "subject": planted.subject, "prompt": planted.prompt, "target": planted.target}
    summary = roles.run(planted.model, [fact, dict(fact)], "eap-ig", 3, HeadRoleThresholds())
    assert all(planted.mover in row["labelled"]["mover"] for row in summary["rows"])
    assert summary["movers"]["n"] == 2 and summary["movers"]["win_share"] == 1.0
    assert summary["stability"]["capital"]["mover"] == 1.0
    assert roles.jaccard({"a", "b"}, {"b", "c"}) == pytest.approx(1 / 3) and roles.jaccard(set(), set()) is None

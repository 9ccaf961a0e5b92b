"""``kcircuits edit``: the head-output diff and, with --circuits, the fair circuit comparison."""

from __future__ import annotations

import json

import pytest
from tests.unit.cli_support import cli_app_with_model
from typer.testing import CliRunner

from kcircuits.circuits.testing import planted_copy_model


@pytest.fixture(scope="module")
def planted():
    return planted_copy_model()


@pytest.fixture
def app(monkeypatch, planted):
    from kcircuits.cli import edit as cli_module

    return cli_app_with_model(monkeypatch, cli_module, planted.model)


def _args(planted, *extra: str) -> list[str]:
    return ["edit", "--method", "ft-m", "--prompt", planted.prompt, "--subject", planted.subject, "--target", " London",
            "--layer", "0", *extra]


def test_edit_prints_changed_heads_and_fair_circuits(app, planted):
    runner = CliRunner()
    res = runner.invoke(app, _args(planted, "--json", "--circuits", "--circuit-method", "eap", "--top-n", "3"))
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    comparison = out["comparison"]
    rows = comparison["heads"]["rows"]
    assert len(rows) == 2 * 4 and all(not r["changed"] for r in rows if r["layer"] == 0)  # before the edited MLP
    circ = comparison["circuit"]
    assert comparison["method"] == "eap" and circ["pre"]["target"] == out["old_target"] and circ["post"]["target"] == " London"
    assert circ["pre"]["corrupt_prompt"] == circ["post"]["corrupt_prompt"] == circ["counterfactual"]["corrupt_prompt"]
    assert circ["pre"]["ablation"] == circ["post"]["ablation"] and circ["same_counterfactual"]
    text = runner.invoke(app, _args(planted, "--circuits", "--circuit-method", "eap", "--top-n", "3"))
    assert text.exit_code == 0, text.output
    assert "head outputs (last position):" in text.output and "unchanged" in text.output
    assert "counterfactual picked on the base model" in text.output
    for name in ("pre", "post"):
        side = circ["sides"][name]
        assert f"{name}: {side['edges']} edges, faithfulness" in text.output
        assert side["usable"] or f"NOT USABLE: {side['reason']}" in text.output
    assert ("no diff: " in text.output) == (circ["diff"] is None)
    # the "why": the lens block of the new target, the mover switch, side effects (same wording as the view)
    lens = comparison["analysis"]["lens"]
    where = "never in the top" if lens["first_top_block_post"] is None else f"after block {lens['first_top_block_post']}"
    assert f"new target in the lens top-{lens['top_k']} at the last token: {where}" in text.output
    assert "mover switch: " in text.output and "side effects, other subjects, same relation" in text.output
    bad = runner.invoke(app, _args(planted, "--reweight-rel", "0"))
    assert bad.exit_code != 0 and "reweight-rel" in bad.output

"""``kcircuits circuit ... --roles``: the labelled-head table on the planted roles model."""

from __future__ import annotations

import json

import pytest
from tests.unit.cli_support import cli_app_with_model
from typer.testing import CliRunner

from kcircuits.circuits.testing import planted_roles_model


@pytest.fixture(scope="module")
def planted():
    return planted_roles_model()


@pytest.fixture
def app(monkeypatch, planted):
    from kcircuits.cli import circuits as cli_module

    return cli_app_with_model(monkeypatch, cli_module, planted.model)


def _args(planted, *extra: str) -> list[str]:
    return ["circuit", planted.prompt, "--target", planted.target, "--subject", planted.subject, "--ablation", "zero",
            "--metric", "logprob", "--top-n", "200", "--random-seeds", "0", "--ig-steps", "2", *extra]


def test_roles_table_lists_the_labelled_heads(app, planted):
    runner = CliRunner()
    res = runner.invoke(app, _args(planted, "--roles", "--significance-k", "2.5"))
    assert res.exit_code == 0, res.output
    table = res.output.split("top tokens", 1)[1]
    rows = [line.split() for line in table.splitlines() if line.strip()]
    assert {(r[0], r[1]) for r in rows} == {(planted.mover, "mover"), (planted.relation, "relation")}
    assert "2.5 * MAD" in res.output and "[' capital', ' city']" in res.output
    res = runner.invoke(app, _args(planted, "--json", "--significance-k", "2.5", "--write-top-k", "3"))
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["roles"]["thresholds"]["significance_k"] == 2.5 and out["roles"]["thresholds"]["write_top_k"] == 3
    assert {h for h, info in out["heads"].items() if info["role"]} == {planted.mover, planted.relation}
    # without --roles the table is not printed
    plain = runner.invoke(app, _args(planted))
    assert plain.exit_code == 0 and "A_subj" not in plain.output

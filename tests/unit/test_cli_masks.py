"""``kcircuits mask``: train on the tiny Llama through the local store, then overlap and edit the
stored masks by id; bad input and GPT-2 are refused with a message."""

from __future__ import annotations

import json

import pytest
from tests.unit.cli_support import cli_app_with_model
from typer.testing import CliRunner

TRAIN = ["mask", "train", "--relation", "country_capital_city", "--n", "3", "--steps", "4", "--eval-every", "2"]


@pytest.fixture
def app(monkeypatch, tiny_llama):
    from kcircuits.cli import masks as cli_module

    return cli_app_with_model(monkeypatch, cli_module, tiny_llama)


def _train(runner, app, *extra: str) -> dict:
    res = runner.invoke(app, [*TRAIN, "--model", "tiny-llama", *extra, "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def test_train_then_overlap_and_edit_by_id(app):
    runner = CliRunner()
    a = _train(runner, app, "--density", "0.25")
    b = _train(runner, app, "--density", "0.05", "--seed", "1")
    assert a["kind"] == "mask" and a["curves"]["step"] == [2, 4] and a["density"] <= 0.25 + 1e-6
    text = runner.invoke(app, [*TRAIN, "--model", "tiny-llama", "--density", "0.25"])
    assert text.exit_code == 0, text.output
    assert f"id {a['id']}" in text.output and "final density" in text.output
    for kind in a["composition"]:
        assert kind in text.output
    out = runner.invoke(app, ["mask", "overlap", a["id"], b["id"], "--json"])
    assert out.exit_code == 0, out.output
    matrix = json.loads(out.output)
    assert matrix["matrix"][0][0] == 1.0 and matrix["mask_ids"] == [a["id"], b["id"]]
    table = runner.invoke(app, ["mask", "overlap", a["id"], b["id"]])
    assert table.exit_code == 0 and "1.000" in table.output and f"{a['density']:.4f}" in table.output
    edit = runner.invoke(app, ["mask", "edit", a["id"], "--prompt", "The Eiffel Tower is in", "--target", " Rome",
                               "--steps", "2", "--lr", "0.01"])
    assert edit.exit_code == 0, edit.output
    for variant in ("inside", "complement", "random", "full"):
        assert variant in edit.output


def test_bad_input_is_named(app):
    runner = CliRunner()
    res = runner.invoke(app, ["mask", "train", "--model", "tiny-llama", "--density", "1.5", "--relation", "country_capital_city"])
    assert res.exit_code == 2 and "density" in res.output
    res = runner.invoke(app, ["mask", "train", "--model", "tiny-gpt2", "--relation", "country_capital_city"])
    assert res.exit_code == 2 and "Llama-family" in res.output
    res = runner.invoke(app, ["mask", "overlap", "0" * 64, "1" * 64])
    assert res.exit_code == 2 and "no stored mask" in res.output

"""The API and the CLI read their defaults and limits from one definition (kcircuits.services.specs):
the settings that used to differ by transport (issue 11's table) agree here, read from both."""

from __future__ import annotations

import pytest
import typer.main
from pydantic import ValidationError
from typer.testing import CliRunner

from kcircuits.api.routes.circuits import CircuitIn
from kcircuits.api.routes.jobs import AcdcParams, RelationParams, SweepParams
from kcircuits.api.routes.lens import LensIn
from kcircuits.api.routes.neurons import NeuronsIn
from kcircuits.cli import app
from kcircuits.errors import BadRequest
from kcircuits.services import specs


def _cli_param(path: list[str], name: str) :
    command = typer.main.get_command(app)
    for part in path:
        command = command.commands[part]
    return next(p for p in command.params if p.name == name)


def _api_bound(model, name: str, bound: str):
    """A pydantic field's ``ge``/``le`` (from its metadata, wherever the Annotated put it)."""
    for item in model.model_fields[name].metadata:
        if hasattr(item, bound):
            return getattr(item, bound)
        for inner in getattr(item, "metadata", ()):
            if hasattr(inner, bound):
                return getattr(inner, bound)
    raise AssertionError(f"{model.__name__}.{name} has no {bound}")


def test_ig_steps_cap_is_one_number():
    assert _api_bound(CircuitIn, "ig_steps", "le") == specs.IG_STEPS_MAX
    assert _api_bound(SweepParams, "ig_steps", "le") == specs.IG_STEPS_MAX
    assert _cli_param(["circuit"], "ig_steps").max == specs.IG_STEPS_MAX
    assert _cli_param(["sweep"], "ig_steps").max == specs.IG_STEPS_MAX
    assert CircuitIn.model_fields["ig_steps"].default == _cli_param(["circuit"], "ig_steps").default \
        == specs.CircuitSpec.ig_steps


def test_random_seeds_cap_is_one_number():
    assert _api_bound(CircuitIn, "random_seeds", "le") == specs.RANDOM_SEEDS_MAX
    assert _cli_param(["circuit"], "random_seeds").max == specs.RANDOM_SEEDS_MAX
    assert CircuitIn.model_fields["random_seeds"].default == _cli_param(["circuit"], "random_seeds").default


def test_sweep_method_default_agrees():
    assert SweepParams.model_fields["method"].default == _cli_param(["sweep"], "method").default \
        == specs.SweepSpec.method


def test_relation_n_default_and_bounds_agree():
    assert RelationParams.model_fields["n"].default == _cli_param(["relation"], "n").default == specs.RelationSpec.n
    assert _api_bound(RelationParams, "n", "ge") == _cli_param(["relation"], "n").min == specs.RELATION_N_MIN
    assert RelationParams.model_fields["method"].default == _cli_param(["relation"], "method").default


def test_neuron_and_lens_defaults_agree():
    for name in ("steps", "path", "threshold", "share", "top_k"):
        assert NeuronsIn.model_fields[name].default == _cli_param(["neurons", "find"], name).default \
            == getattr(specs.NeuronsSpec, name), name
    assert _api_bound(NeuronsIn, "steps", "le") == _cli_param(["neurons", "find"], "steps").max
    for name in ("top_k", "ln_mode"):
        assert LensIn.model_fields[name].default == _cli_param(["lens"], name).default == getattr(specs.LensSpec, name)


def test_acdc_ablation_default_agrees(monkeypatch):
    """The CLI's ``circuit --method acdc`` without --ablation runs the spec's ablation, as the job does."""
    import kcircuits.cli.circuits as cli_circuits

    seen = {}

    def capture(service, spec, label, loader=None):
        seen["spec"] = spec
        raise typer.Exit(0)

    monkeypatch.setattr(cli_circuits, "run_service", capture)
    result = CliRunner().invoke(app, ["circuit", "The capital of France is", "-t", " Paris", "--method", "acdc"])
    assert result.exit_code == 0, result.output
    assert isinstance(seen["spec"], specs.AcdcSpec)
    assert seen["spec"].ablation == AcdcParams.model_fields["ablation"].default == specs.AcdcSpec.ablation
    assert seen["spec"].metric == AcdcParams.model_fields["metric"].default
    # the batch options reach the ACDC spec, with the job's defaults and limits
    for name in ("counterfactuals", "random_seeds"):
        assert getattr(seen["spec"], name) == AcdcParams.model_fields[name].default == getattr(specs.AcdcSpec, name)
        assert _api_bound(AcdcParams, name, "le") == _cli_param(["circuit"], name).max
    CliRunner().invoke(app, ["circuit", "The capital of France is", "-t", " Paris", "--method", "acdc",
                             "--counterfactuals", "3", "--random-seeds", "5"])
    assert (seen["spec"].counterfactuals, seen["spec"].random_seeds) == (3, 5)
    with pytest.raises(BadRequest, match="counterfactuals must be between 1 and 8"):
        specs.check_batch_sizes(specs.AcdcSpec(prompt="p", target=" t", counterfactuals=9))
    # every other method keeps the circuit default
    CliRunner().invoke(app, ["circuit", "The capital of France is", "-t", " Paris", "--method", "eap"])
    assert seen["spec"].ablation == CircuitIn.model_fields["ablation"].default == specs.CircuitSpec.ablation


def test_top_n_or_threshold_checked_once():
    body = {"prompt": "The capital of France is", "target": " Paris", "method": "eap", "top_n": 5, "threshold": 0.1}
    with pytest.raises(ValidationError, match="not both"):
        CircuitIn.model_validate(body)
    result = CliRunner().invoke(app, ["circuit", body["prompt"], "-t", body["target"], "--method", "eap",
                                      "--top-n", "5", "--threshold", "0.1"])
    assert result.exit_code == 2
    assert specs.selection_error(5, 0.1, "eap") in result.output
    assert specs.selection_error(5, None, "eap") is None


def test_cli_imports_nothing_from_the_api_but_serve():
    """The CLI reaches the engine through the services; only ``serve`` (which starts the app) imports the API."""
    import ast
    from pathlib import Path

    import kcircuits.cli

    offenders = []
    for path in Path(kcircuits.cli.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        allowed = {id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and f.name == "serve"
                   for n in ast.walk(f)}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("kcircuits.api") \
                    and id(node) not in allowed:
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []


def test_mask_defaults_and_bounds_agree():
    from kcircuits.api.routes.masks import MaskEditIn, MaskTrainIn

    for name in ("n", "density", "steps", "lr", "lam", "loss", "seed", "eval_every", "warm_start"):
        assert MaskTrainIn.model_fields[name].default == _cli_param(["mask", "train"], name).default \
            == getattr(specs.MaskTrainSpec, name), name
    assert _api_bound(MaskTrainIn, "steps", "le") == _cli_param(["mask", "train"], "steps").max == specs.MASK_STEPS_MAX
    assert _api_bound(MaskTrainIn, "n", "le") == _cli_param(["mask", "train"], "n").max == specs.MASK_TASK_N_MAX
    for name in ("steps", "lr", "seed"):
        assert MaskEditIn.model_fields[name].default == _cli_param(["mask", "edit"], name).default \
            == getattr(specs.MaskEditSpec, name), name
    assert _api_bound(MaskEditIn, "steps", "le") == _cli_param(["mask", "edit"], "steps").max

"""A Typer app holding one CLI command group whose model loader returns a given (planted) model."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import typer


def cli_app_with_model(monkeypatch, cli_module: ModuleType, model: Any) -> typer.Typer:
    """``cli_module``'s commands registered on a fresh app, loading ``model`` for any model id."""
    monkeypatch.setattr(cli_module, "load", lambda model_id: model)
    app = typer.Typer()
    app.callback()(lambda: None)
    cli_module.register(app)
    return app

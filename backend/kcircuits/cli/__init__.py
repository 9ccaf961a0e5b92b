"""The ``kcircuits`` command line. Torch and the engine are imported lazily inside commands.

Feature modules under kcircuits.cli each expose ``register(app)`` and are listed here.
"""

from __future__ import annotations

import importlib
import logging

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Explore knowledge circuits in transformer language models.")

#: Modules under kcircuits.cli that add commands to ``app``.
COMMAND_MODULES = ["core", "store", "relation", "edit", "circuits", "neurons", "masks"]


def _register_all() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(f"kcircuits.cli.{name}").register(app)


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress to stderr.")) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


_register_all()


def main() -> None:
    app()

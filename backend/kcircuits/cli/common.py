"""Helpers shared by CLI commands: output, errors, model loading."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import typer

from kcircuits.errors import KCircuitsError


def emit_json(data: Any) -> None:
    """Write ``data`` as JSON to stdout."""
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


def fail(exc: KCircuitsError) -> None:
    """Print a domain error on stderr and exit 2."""
    typer.echo(f"error: {exc.message}", err=True)
    raise typer.Exit(2)


@contextmanager
def domain_errors() -> Iterator[None]:
    """Inside the block, a domain error (bad input, unknown id...) becomes a message and exit 2."""
    try:
        yield
    except KCircuitsError as exc:
        fail(exc)


def emit(result: Any, as_json: bool, printer: Callable[[Any], None]) -> None:
    """Print ``result`` as JSON (``--json``) or through the command's human-readable ``printer``."""
    if as_json:
        emit_json(result)
    else:
        printer(result)


def load(model_id: str | None):
    """Boot ``model_id`` (or the default) for a one-shot CLI command."""
    from kcircuits.config import get_settings
    from kcircuits.lm.loader import load_model

    settings = get_settings()
    try:
        return load_model(model_id or settings.default_model, settings)
    except KCircuitsError as exc:
        fail(exc)


def open_store():
    """The local result store (the one the server uses), or None when it cannot be opened."""
    import logging

    from kcircuits.config import get_settings

    try:
        from kcircuits.store import open_store as _open

        return _open(get_settings())
    except Exception:  # noqa: BLE001 - the command still runs, uncached
        logging.getLogger(__name__).warning("result store unavailable; computing without it", exc_info=True)
        return None


def run_service(service: Callable[[Any, Any, Any], Any], spec: Any, label: str,
                loader: Callable[[str | None], Any] | None = None) -> Any:
    """``service(spec, executor, store)`` inline on the spec's model (booted by ``loader``, default
    :func:`load`), with a progress bar and the local store (cache hits; the result's ``id`` can be
    exported)."""
    from kcircuits.config import get_settings
    from kcircuits.services.executor import InlineExecutor

    settings = get_settings()
    spec.check(settings)  # bad input is named before the model loads
    loaded = (loader or load)(spec.model)
    with progress_bar(label) as report:
        return service(spec, InlineExecutor(loaded, settings, report), open_store())


@contextmanager
def progress_bar(label: str) -> Iterator[Callable[[int, int, str], None]]:
    """A stderr progress bar (tqdm) for the engine's ``progress(done, total, message)`` callback."""
    from tqdm import tqdm

    bar = tqdm(total=1, desc=label, file=sys.stderr, leave=False, dynamic_ncols=True,
               disable=not sys.stderr.isatty())  # a bar on a terminal only, not in logs or pipes

    def report(done: int, total: int, message: str = "") -> None:
        if total and bar.total != total:
            bar.total = total
        bar.n = done
        bar.set_postfix_str(message[:40], refresh=False)
        bar.refresh()
    try:
        yield report
    finally:
        bar.close()


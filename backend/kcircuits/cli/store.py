"""Store commands: ``export ID --format ...``, ``import FILE``, ``results`` (the local store)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from kcircuits.cli.common import emit_json, fail
from kcircuits.errors import BadRequest, KCircuitsError, NotFound


def _open():
    from kcircuits.config import get_settings
    from kcircuits.store import open_store

    return open_store(get_settings())


def export(result_id: str = typer.Argument(..., help="content id of a stored result"),
           fmt: str = typer.Option("json", "--format", "-f", help="json | graphml | dot | png | svg"),
           out: Path | None = typer.Option(None, "--out", "-o", help="file to write (default: stdout)")) -> None:
    """Write a stored result as JSON, GraphML, DOT, PNG or SVG."""
    from kcircuits.export import export_circuit

    store = _open()
    try:
        result = store.get(result_id)
        if result is None:
            raise NotFound(f"no stored result with id {result_id[:80]!r}")
        data = export_circuit(result, fmt)
    except KCircuitsError as exc:
        fail(exc)
    finally:
        store.close()
    if out is not None:
        if isinstance(data, bytes):
            out.write_bytes(data)
        else:
            out.write_text(data, encoding="utf-8")
        typer.echo(str(out), err=True)
    elif isinstance(data, bytes):
        if sys.stdout.isatty():
            fail(BadRequest(f"{fmt} is binary: pass --out FILE"))
        sys.stdout.buffer.write(data)
    else:
        typer.echo(data, nl=not data.endswith("\n"))


def import_(file: Path = typer.Argument(..., exists=True, dir_okay=False, help="a JSON export")) -> None:
    """Store a result exported by "kcircuits export ID --format json" (its id is checked)."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        fail(BadRequest(f"{file} is not JSON: {exc}"))
    store = _open()
    try:
        stored = store.import_result(data)
    except KCircuitsError as exc:
        fail(exc)
    finally:
        store.close()
    typer.echo(stored["id"])


def results(model: str | None = typer.Option(None, "--model", help="only this model id"),
            q: str | None = typer.Option(None, "--q", help="substring of prompt, model, method or title"),
            method: str | None = typer.Option(None, "--method"),
            saved: bool = typer.Option(False, "--saved", help="only saved results"),
            limit: int = typer.Option(20, "--limit"),
            as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """List stored results, newest first."""
    store = _open()
    try:
        found = store.search(model=model, q=q, method=method, saved=True if saved else None, limit=limit)
    finally:
        store.close()
    if as_json:
        emit_json(found)
        return
    for item in found["items"]:
        mark = "*" if item["saved"] else " "
        prompt = (item["prompt"] or "").replace("\n", " ")[:60]
        typer.echo(f"{mark} {item['id']}  {item['created_at'][:19]}  {item['kind']:<8} {item['model'] or '':<16} "
                   f"{item['method'] or '':<7} {prompt}")
    typer.echo(f"{len(found['items'])} of {found['total']}", err=True)


def register(app: typer.Typer) -> None:
    app.command("export")(export)
    app.command("import")(import_)
    app.command("results")(results)

"""Core commands: models, lens, serve."""

from __future__ import annotations

import typer

from kcircuits.cli.common import domain_errors, emit, emit_json, load, run_service
from kcircuits.services.specs import LensSpec


def models(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List the model registry (ids, sources, shapes)."""
    from kcircuits.config import get_settings
    from kcircuits.lm.registry import all_specs

    settings = get_settings()
    specs = all_specs(settings)
    if as_json:
        emit_json({"default": settings.default_model, "models": [s.to_dict() for s in specs.values()]})
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("id", "source", "layers", "heads", "kv", "d_model", "description")
    for spec in specs.values():
        mark = " (default)" if spec.id == settings.default_model else ""
        a = spec.arch
        table.add_row(spec.id + mark, spec.source, str(a.n_layers), str(a.n_heads), str(a.n_kv_heads),
                      str(a.d_model), spec.description)
    Console().print(table)


def lens(
    prompt: str = typer.Argument(..., help="The prompt, e.g. 'The capital of France is'."),
    model: str = typer.Option(None, "--model", "-m", help="Registry id (default: the configured default)."),
    target: str = typer.Option(None, "--target", "-t", help='Answer to track, e.g. " Paris".'),
    subject: str = typer.Option(None, "--subject", help="Subject span (auto-detected when omitted)."),
    top_k: int = typer.Option(LensSpec.top_k, "--top-k", "-k", min=1, max=100),
    ln_mode: str = typer.Option(LensSpec.ln_mode, "--ln-mode", help="recompute | cached"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (model, tokens, layers, target)."),
) -> None:
    """Logit lens: the top tokens at every layer and position, and the target's rank per layer."""
    from kcircuits.services import capabilities

    with domain_errors():
        spec = LensSpec(prompt=prompt, model=model, target=target, subject=subject, top_k=top_k, ln_mode=ln_mode)
        result = run_service(capabilities.lens, spec, "lens", load)
    emit(result, as_json, _print_lens)


def _print_lens(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()
    tokens = result["tokens"]
    table = Table(title=f"logit lens: {result['model']}", show_lines=False)
    table.add_column("layer")
    for tok in tokens:
        table.add_column(Text(repr(tok)), overflow="fold")
    target = result.get("target")
    if target:
        table.add_column(Text(f"rank {target['token']!r}"))
        table.add_column(Text(f"p {target['token']!r}"))
    for i, layer in enumerate(result["layers"]):
        cells = [Text(f"{p['top'][0]['token']!r} {p['top'][0]['prob']:.2f}") for p in layer["positions"]]
        extra = [str(target["rank"][i]), f"{target['prob'][i]:.3f}"] if target else []
        table.add_row(layer["label"], *cells, *extra)
    console.print(table)
    pred = result["prediction"]
    console.print(Text(f"prediction: {pred['token']!r} (p={pred['prob']:.3f})"))


def serve(
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
    model: str = typer.Option(None, "--model", "-m", help="Default model to boot (overrides settings)."),
) -> None:
    """Start the dashboard and API (one process, one model worker)."""
    import os

    import uvicorn

    from kcircuits.config import get_settings

    if model:
        os.environ["KCIRCUITS_DEFAULT_MODEL"] = model
        get_settings.cache_clear()
    settings = get_settings()
    from kcircuits.api.app import create_app

    typer.echo(f"kcircuits: serving on http://{host}:{port} (default model {settings.default_model})", err=True)
    uvicorn.run(create_app(settings), host=host, port=port, workers=1, log_level=settings.log_level.lower())


def register(app: typer.Typer) -> None:
    app.command("models")(models)
    app.command("lens")(lens)
    app.command("serve")(serve)

"""``kcircuits edit``: apply ROME / FT-M / FT-L to a copy of a model and report the evaluation."""

from __future__ import annotations

import typer

from kcircuits.cli.common import domain_errors, emit, load


def edit(
    method: str = typer.Option("rome", "--method", help="rome | ft-m | ft-l"),
    prompt: str = typer.Option(..., "--prompt", "-p", help='Edit prompt, e.g. "The Eiffel Tower is located in the city of".'),
    subject: str = typer.Option(..., "--subject", "-s", help='Subject span inside the prompt, e.g. "Eiffel Tower".'),
    target: str = typer.Option(..., "--target", "-t", help='New answer, e.g. " Rome".'),
    model: str = typer.Option(None, "--model", "-m", help="Registry id (default: the configured default)."),
    layer: int = typer.Option(None, "--layer", "-l", help="Edited layer (default: the model's registry default)."),
    heads: int = typer.Option(5, "--heads", help="How many most-changed heads to show."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (evaluation, edit, changed heads)."),
) -> None:
    """Edit a fact on a copy of the model: efficacy, generalisation, locality, most changed heads."""
    from kcircuits.config import get_settings
    from kcircuits.editing import METHODS
    from kcircuits.editing.compare import changed_heads
    from kcircuits.editing.session import EditRequest, edit_and_evaluate
    from kcircuits.errors import BadRequest

    settings = get_settings()
    with domain_errors():
        if method not in METHODS:
            raise BadRequest(f"unknown method {method!r}; choose one of {list(METHODS)}")
        base = load(model)
        req = EditRequest(model=base.spec.id, method=method, prompt=prompt, subject=subject, target=target,
                          layer=layer)
        edited, result = edit_and_evaluate(base, req, settings)
        result["changed_heads"] = changed_heads(base, edited, prompt, k=heads)
    emit(result, as_json, _print)


def _print(result: dict) -> None:
    ev = result["evaluation"]
    eff, gen, loc, shift = ev["efficacy"], ev["generalisation"], ev["locality"], ev["prob_shift"]
    typer.echo(f"{result['method']} on {result['model']} layer {result['layer']}: "
               f"{result['prompt']!r} {result['old_target']!r} -> {result['target']!r}")
    if result.get("covariance"):
        typer.echo(f"covariance: {result['covariance']}")
    typer.echo(f"efficacy:       {'yes' if eff['success'] else 'no'} (new rank {eff['new_rank']}, "
               f"p(new) {shift['new']['pre']:.4f} -> {shift['new']['post']:.4f}, "
               f"p(old) {shift['old']['pre']:.4f} -> {shift['old']['post']:.4f})")

    def rate(part: dict) -> str:
        return "n/a" if part["rate"] is None else f"{part['rate']:.2f} ({len(part['items'])} prompts)"

    typer.echo(f"generalisation: {rate(gen)}")
    for item in gen["items"]:
        typer.echo(f"  {'ok ' if item['success'] else 'no '} {item['prompt']!r} -> {item['post_top']!r}")
    typer.echo(f"locality:       {rate(loc)}")
    for item in loc["items"]:
        typer.echo(f"  {'ok ' if item['success'] else 'no '} {item['prompt']!r}: "
                   f"{item['pre']['token']!r} -> {item['post']['token']!r}")
    typer.echo("most changed heads (last position):")
    for row in result.get("changed_heads", []):
        pre = ", ".join(repr(t["token"]) for t in row["pre"]["promoted"][:3])
        post = ", ".join(repr(t["token"]) for t in row["post"]["promoted"][:3])
        typer.echo(f"  {row['node']:>8}  change {row['change']:.2f}  promotes [{pre}] -> [{post}]")


def register(app: typer.Typer) -> None:
    app.command("edit")(edit)

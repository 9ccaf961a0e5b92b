"""``kcircuits edit``: apply ROME / FT-M / FT-L to a copy of a model and report the evaluation."""

from __future__ import annotations

import typer

from kcircuits.cli.common import domain_errors, emit, load
from kcircuits.editing.compare import CompareThresholds


def edit(
    method: str = typer.Option("rome", "--method", help="rome | ft-m | ft-l"),
    prompt: str = typer.Option(..., "--prompt", "-p", help='Edit prompt, e.g. "The Eiffel Tower is located in the city of".'),
    subject: str = typer.Option(..., "--subject", "-s", help='Subject span inside the prompt, e.g. "Eiffel Tower".'),
    target: str = typer.Option(..., "--target", "-t", help='New answer, e.g. " Rome".'),
    model: str = typer.Option(None, "--model", "-m", help="Registry id (default: the configured default)."),
    layer: int = typer.Option(None, "--layer", "-l", help="Edited layer (default: the model's registry default)."),
    heads: int = typer.Option(5, "--heads", help="How many most-changed heads to show."),
    circuits: bool = typer.Option(False, "--circuits", help="Also the fair pre/post circuit comparison (slower)."),
    circuit_method: str = typer.Option(None, "--circuit-method", help="Discovery method of both circuits "
                                       "(default: the engine's, eap-ig-refine)."),
    top_n: int = typer.Option(None, "--top-n", help="Circuit size of both sides (default: the engine's)."),
    reweight_rel: float = typer.Option(CompareThresholds.reweight_rel, "--reweight-rel", help="Reweighted edge: |delta score| > this x max |score|."),
    unchanged_rel: float = typer.Option(CompareThresholds.head_unchanged_rel, "--unchanged-rel", help="Unchanged head: |delta out| < this x |out pre|."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (evaluation, edit, head diff, circuits)."),
) -> None:
    """Edit a fact on a copy of the model: efficacy, generalisation, locality, the heads whose
    output changed most (and, with --circuits, the fair pre/post circuit comparison)."""
    from kcircuits.config import get_settings
    from kcircuits.editing import METHODS
    from kcircuits.editing.compare import edit_circuits, edit_head_diff
    from kcircuits.editing.session import EditRequest, edit_and_evaluate
    from kcircuits.errors import BadRequest

    settings = get_settings()
    with domain_errors():
        if method not in METHODS:
            raise BadRequest(f"unknown method {method!r}; choose one of {list(METHODS)}")
        base = load(model)
        req = EditRequest(model=base.spec.id, method=method, prompt=prompt, subject=subject, target=target,
                          layer=layer)
        if not 0 < reweight_rel <= 1 or unchanged_rel < 0:
            raise BadRequest("--reweight-rel must lie in (0, 1] and --unchanged-rel be >= 0")
        thresholds = CompareThresholds(reweight_rel=reweight_rel, head_unchanged_rel=unchanged_rel)
        edited, result = edit_and_evaluate(base, req, settings)
        result["heads"] = edit_head_diff(base, edited, prompt, subject, target, result["old_target"], thresholds)
        result["heads"]["shown"] = heads
        if circuits:
            result["circuits"] = edit_circuits(base, edited, prompt, subject, target, result["old_target"],
                                               circuit_method, top_n, thresholds)
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
    _print_heads(result["heads"])
    if result.get("circuits"):
        _print_circuits(result["circuits"])


def _print_heads(heads: dict) -> None:
    typer.echo(f"head outputs (last position): {heads['n_changed']} changed, {heads['n_unchanged']} unchanged "
               f"({heads['rule']['unchanged']})")
    for row in [r for r in heads["rows"] if r["changed"]][:heads["shown"]]:
        pre = ", ".join(repr(t["token"]) for t in row["top"]["pre"][:3])
        post = ", ".join(repr(t["token"]) for t in row["top"]["post"][:3])
        marks = row["marks"]
        tags = [f"{name} target {marks[name]}" for name in ("new", "old") if marks.get(name) in ("entered", "left")]
        tags += [f"subject {t!r} {how}" for how in ("entered", "left") for t in marks[f"subject_{how}"]]
        if row["mover"]:
            tags.append("MOVER")
        dla = row["dla"]["new"]
        typer.echo(f"  {row['node']:>8}  |d out| {row['change']:.3f} ({row['rel_change']:.0%})  "
                   f"DLA(new) {dla['pre']:+.3f} -> {dla['post']:+.3f}  [{pre}] -> [{post}]"
                   + (f"  {'; '.join(tags)}" if tags else ""))
    if heads["movers"]:
        typer.echo(f"mover pattern ({heads['rule']['mover']}): {', '.join(heads['movers'])}")


def _print_circuits(out: dict) -> None:
    cf, comparison = out["counterfactual"], out["comparison"]
    typer.echo(f"circuits ({out['method']}, top_n {out['top_n'] or 'default'}); counterfactual picked on the base "
               f"model: {cf['corrupt_prompt']!r} foil {cf['foil']!r} ({cf['ablation']}; {cf['note']})")
    for name in ("pre", "post"):
        side = comparison["sides"][name]
        faith = "n/a" if side["faithfulness"] is None else f"{side['faithfulness']:.2f}"
        state = "ok" if side["usable"] else f"NOT USABLE: {side['reason']}"
        grow = f" (try --top-n {side['grow_top_n']})" if side["grow_top_n"] else ""
        typer.echo(f"  {name:>4}: {side['edges']} edges, faithfulness {faith}, {state}{grow}")
    diff = comparison["diff"]
    if diff is None:
        typer.echo(f"  no diff: {comparison['reason']}")
        return
    typer.echo(f"  diff: added {diff['n_added']}, removed {diff['n_removed']}, reweighted {diff['n_reweighted']}, "
               f"shared {diff['shared']} ({diff['rule']})")


def register(app: typer.Typer) -> None:
    app.command("edit")(edit)

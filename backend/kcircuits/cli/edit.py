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
    from kcircuits.editing.session import EditRequest, edit_and_evaluate
    from kcircuits.errors import BadRequest
    from kcircuits.services.edit_comparison import EditComparison

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
        comparison = EditComparison(
            request=req, old_target=result["old_target"], layer=result["layer"], settings=settings,
            side_items=result["evaluation"]["locality"]["items"], method=circuit_method, top_n=top_n,
            thresholds=thresholds, with_circuits=circuits).run_inline(base, edited)
        result["comparison"] = comparison
    emit(result, as_json, lambda r: _print(r, heads))


def _print(result: dict, n_heads: int) -> None:
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
    comparison = result["comparison"]
    _print_heads(comparison["heads"], n_heads)
    _print_analysis(comparison["analysis"])
    if comparison["circuit"] is not None:
        _print_circuits(comparison)


def _print_heads(heads: dict, shown: int) -> None:
    typer.echo(f"head outputs (last position): {heads['n_changed']} changed, {heads['n_unchanged']} unchanged "
               f"({heads['rule']['unchanged']})")
    for row in [r for r in heads["rows"] if r["changed"]][:shown]:
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


def _print_analysis(analysis: dict) -> None:
    """The "why" under the numbers: the lens layer of the new target, the mover switch, side effects."""
    lens, mover = analysis["lens"], analysis["mover"]
    block = lens["first_top_block_post"]
    where = "never in the top" if block is None else f"after block {block}"
    offset = "undefined" if lens["offset"] is None else f"{lens['offset']:+d}"
    typer.echo(f"new target in the lens top-{lens['top_k']} at the last token: {where} "
               f"(edited layer {analysis['edit_layer']}, offset {offset})"
               + (f"; {lens['note']}" if lens["note"] else ""))
    if lens["paper"]:
        typer.echo(f"  paper: {lens['paper']}")
    movers = ", ".join(h["node"] for h in mover["heads"]) or "none"
    typer.echo(f"mover switch: {'yes' if mover['switched'] else 'no'} (movers carrying the new target: {movers})")

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.0%}"

    for kind, label in (("neighbour", "other subjects, same relation"), ("same_subject", "same subject, other facts")):
        s = analysis["side_effects"]["summary"].get(kind)
        if s is None or not s["n"]:
            typer.echo(f"side effects, {label}: no prompts")
            continue
        typer.echo(f"side effects, {label} ({s['n']} prompts): answer changed {pct(s['changed_rate'])}, "
                   f"became the new target {pct(s['became_new_rate'])}, a mover carries the new target "
                   f"{pct(s['mover_carries_new_rate'])}")
    for item in analysis["side_effects"]["items"]:
        if item["changed"] or item["mover_carries_new"]:
            typer.echo(f"  {item['prompt']!r}: {item['answer_pre']!r} -> {item['answer_post']!r}"
                       + (f" (movers {', '.join(item['movers'])})" if item["mover_carries_new"] else ""))


def _print_circuits(comparison: dict) -> None:
    circuit = comparison["circuit"]
    cf = circuit["counterfactual"]
    typer.echo(f"circuits ({comparison['method']}, top_n {comparison['top_n'] or 'default'}); counterfactual "
               f"picked on the base model: {cf['corrupt_prompt']!r} foil {cf['foil']!r} ({cf['ablation']}; "
               f"{cf['note']})")
    for name in ("pre", "post"):
        side = circuit["sides"][name]
        faith = "n/a" if side["faithfulness"] is None else f"{side['faithfulness']:.2f}"
        state = "ok" if side["usable"] else f"NOT USABLE: {side['reason']}"
        grow = f" (try --top-n {side['grow_top_n']})" if side["grow_top_n"] else ""
        typer.echo(f"  {name:>4}: {side['edges']} edges, faithfulness {faith}, {state}{grow}")
    diff = circuit["diff"]
    if diff is None:
        typer.echo(f"  no diff: {circuit['reason']}")
        return
    typer.echo(f"  diff: added {diff['n_added']}, removed {diff['n_removed']}, reweighted {diff['n_reweighted']}, "
               f"shared {diff['shared']} ({diff['rule']})")


def register(app: typer.Typer) -> None:
    app.command("edit")(edit)

"""``kcircuits neurons``: knowledge neurons of a fact (IG over MLP hidden units, KN filters),
``neurons edit`` (suppress / enhance by hooks) and ``neurons compare`` (facts vs syntax, Niu et al.).

``kcircuits neurons PROMPT --target T`` is short for ``kcircuits neurons find PROMPT --target T``.
"""

from __future__ import annotations

import typer
from typer.core import TyperGroup

from kcircuits.cli.common import domain_errors, emit, load, run_service
from kcircuits.services.specs import NEURON_STEPS_MAX, NeuronEditSpec, NeuronsCompareSpec, NeuronsSpec


class _FindByDefault(TyperGroup):
    """A first argument that names no subcommand is a prompt for ``find``."""

    def parse_args(self, ctx, args):
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["find", *args]
        return super().parse_args(ctx, args)


neurons_app = typer.Typer(cls=_FindByDefault, no_args_is_help=True,
                          help="Knowledge neurons: find (default), edit, compare.")


@neurons_app.command("find")
def find(
    prompt: str = typer.Argument(..., help='Prompt, e.g. "The capital of France is".'),
    target: str = typer.Option(..., "--target", "-t", help='Answer, e.g. " Paris" (its first token).'),
    model: str = typer.Option(None, "--model", "-m", help="Registry id (default: the configured default)."),
    paraphrase: list[str] = typer.Option([], "--paraphrase", help="Another prompt of the same fact (repeatable)."),
    relation: str = typer.Option(None, "--relation", "-r", help="LRE relation: its templates filled with --subject."),
    subject: str = typer.Option(None, "--subject", "-s", help="Subject for the relation's templates."),
    steps: int = typer.Option(NeuronsSpec.steps, "--steps", min=1, max=NEURON_STEPS_MAX, help="IG steps m."),
    path: str = typer.Option(NeuronsSpec.path, "--path", help="joint (all layers together) | layer (Dai et al.)"),
    threshold: float = typer.Option(NeuronsSpec.threshold, "--threshold", help="Fraction of the per-prompt max attribution."),
    share: float = typer.Option(NeuronsSpec.share, "--share", help="Fraction of the prompts a KN must appear in."),
    top_k: int = typer.Option(NeuronsSpec.top_k, "--top-k", min=1, help="Top neurons listed."),
    circuit: bool = typer.Option(False, "--circuit", help="Also discover the circuit and set the KNs beside it."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Integrated gradients of P(target) over every MLP hidden unit; the KNs after both filters."""
    from kcircuits.services import capabilities

    with domain_errors():
        spec = NeuronsSpec(prompt=prompt, target=target, model=model, steps=steps, path=path, threshold=threshold,
                           share=share, paraphrases=list(paraphrase), relation=relation, subject=subject,
                           top_k=top_k, with_circuit=circuit)
        result = run_service(capabilities.neurons, spec, "neurons", load)
    emit(result, as_json, _print_find)


def _print_find(result: dict) -> None:
    p = result["params"]
    typer.echo(f"{result['model']}: IG m={p['steps']} ({p['path']}, baseline 0), KN threshold {p['threshold']} "
               f"of the max, shared by >= {p['min_prompts']} of {len(result['prompts'])} prompts")
    for row in result["prompts"]:
        typer.echo(f"  P={row['prob']:.4g} rank {row['rank']:>5}  sum(attr)={row['attr_sum']:.4g} (IG gap {row['completeness_gap']:+.3g})  {row['prompt']!r}")
    typer.echo(f"knowledge neurons ({len(result['neurons'])}):")
    for n in result["neurons"][:30]:
        typer.echo(f"  {n['id']:>12}  attr {n['attr']:.4g}  share {n['share']:.2f}  promotes {n.get('promotes', [])[:5]}")
    typer.echo(f"layer histogram: {result['layer_histogram']}")
    side = result.get("circuit")
    if side:
        shares = side["effect_share_edges"]
        typer.echo(f"circuit: {side['circuit_mlps']} MLP nodes, {side['circuit_mlps_with_kns']} hold KNs; "
                   f"{side['kns_in_circuit_mlps']}/{side['n_kns']} KNs inside circuit MLPs; effect via heads "
                   f"{_pct(shares['head'])}, MLPs {_pct(shares['mlp'])}, input {_pct(shares['input'])}")


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


@neurons_app.command("edit")
def edit(
    prompt: str = typer.Argument(..., help="Prompt of the fact."),
    target: str = typer.Option(..., "--target", "-t", help="Its answer."),
    neuron: list[str] = typer.Option(..., "--neuron", "-n", help='Neuron id "L<layer>.N<index>" (repeatable).'),
    mode: str = typer.Option(NeuronEditSpec.mode, "--mode", help="suppress (zero) | enhance (double)"),
    positions: str = typer.Option(NeuronEditSpec.positions, "--positions", help="last | all"),
    model: str = typer.Option(None, "--model", "-m", help="Registry id (default: the configured default)."),
    relation: str = typer.Option(None, "--relation", "-r", help="LRE relation: paraphrases and other facts."),
    subject: str = typer.Option(None, "--subject", "-s", help="The fact's subject in the relation."),
    paraphrase: list[str] = typer.Option([], "--paraphrase", help="Another prompt of the same fact (repeatable)."),
    foil: str = typer.Option(None, "--foil", help="Minimal-pair foil: report whether target vs foil flips."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Suppress or enhance neurons with hooks (weights untouched): before/after on the fact and beyond."""
    from kcircuits.services import capabilities

    with domain_errors():
        spec = NeuronEditSpec(prompt=prompt, target=target, neurons=list(neuron), model=model, mode=mode,
                              positions=positions, relation=relation, subject=subject,
                              paraphrases=list(paraphrase), foil=foil)
        result = run_service(capabilities.neuron_edit, spec, "neuron edit", load)
    emit(result, as_json, _print_edit)


def _print_edit(result: dict) -> None:
    main = result["prompt"]
    b, a = main["before"], main["after"]
    typer.echo(f"{result['mode']} {len(result['neurons'])} neurons ({result['positions']} position): {main['prompt']!r}")
    typer.echo(f"  P({main['target']!r}) {b['prob']:.4g} -> {a['prob']:.4g}, rank {b['rank']} -> {a['rank']}, "
               f"top-1 {b['top1']!r} -> {a['top1']!r}{' (flipped)' if main['top1_flipped'] else ''}")
    for kind, s in result["summary"].items():
        if s:
            probs = (f", mean P {s['mean_prob_before']:.4f} -> {s['mean_prob_after']:.4f}"
                     if "mean_prob_before" in s else "")
            typer.echo(f"  {kind:<11} n={s['n']}: top-1 flip rate {s['top1_flip_rate']:.2f}, mean KL {s['mean_kl']:.4f}{probs}")


@neurons_app.command("compare")
def compare(
    model: str = typer.Option(None, "--model", "-m", help="Registry id (default: the configured default)."),
    n_facts: int = typer.Option(NeuronsCompareSpec.n_facts, "--n-facts", min=0, help="Known LRE facts."),
    n_syntax: int = typer.Option(NeuronsCompareSpec.n_syntax, "--n-syntax", min=0, help="Syntax groups (det_noun, subj_verb)."),
    max_prompts: int = typer.Option(NeuronsCompareSpec.max_prompts, "--max-prompts", min=1, help="Paraphrase prompts per group."),
    steps: int = typer.Option(NeuronsSpec.steps, "--steps", min=1, max=NEURON_STEPS_MAX, help="IG steps m."),
    threshold: float = typer.Option(NeuronsSpec.threshold, "--threshold", help="Fraction of the per-prompt max attribution."),
    share: float = typer.Option(NeuronsSpec.share, "--share", help="Fraction of the prompts a KN must appear in."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Niu et al.'s comparison: KN localisation and edit flip rates on facts vs syntax minimal pairs."""
    from kcircuits.services import capabilities

    with domain_errors():
        spec = NeuronsCompareSpec(model=model, steps=steps, threshold=threshold, share=share, n_facts=n_facts,
                                  n_syntax=n_syntax, max_prompts=max_prompts)
        result = run_service(capabilities.neurons_compare, spec, "neurons compare", load)
    emit(result, as_json, _print_compare)


def _print_compare(result: dict) -> None:
    for name, s in result["summary"].items():
        sup, enh = s["suppress"], s["enhance"]
        typer.echo(f"{name:<18} groups {s['n_groups']:>3}  KNs/group {_num(s['mean_kns'])}  mean layer "
                   f"{_num(s['mean_kn_layer'])}  top-10 share {_num(s['top10_share'], 2)}  suppress flips "
                   f"{_num(sup['top1_flip_rate'], 2)}  enhance flips {_num(enh['top1_flip_rate'], 2)}")
        typer.echo(f"{'':<18} KN layers {s['layer_histogram']}")


def _num(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def register(app: typer.Typer) -> None:
    app.add_typer(neurons_app, name="neurons")

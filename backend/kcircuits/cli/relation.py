"""``kcircuits relation NAME``: one relation circuit and its Hit@10 (the paper's Table 1 row)."""

from __future__ import annotations

import typer

from kcircuits.cli.common import domain_errors, emit, emit_json, load, run_service
from kcircuits.services.specs import RELATION_N_MAX, RELATION_N_MIN, RelationSpec


def relation(
    name: str = typer.Argument(..., help="LRE relation, e.g. country_capital_city ('list' lists them)."),
    model: str = typer.Option(None, "--model", "-m", help="Registry id (default: the configured default)."),
    n: int = typer.Option(RelationSpec.n, "--n", min=RELATION_N_MIN, max=RELATION_N_MAX, help="Most facts per split (validation and test)."),
    method: str = typer.Option(RelationSpec.method, "--method", help="eap-ig-refine | eap-ig | eap"),
    top_n: int = typer.Option(None, "--top-n", min=1, help="Circuit size in edges (default 1% of the graph)."),
    ablation: str = typer.Option(RelationSpec.ablation, "--ablation", help="patch (subject swap) | zero | mean"),
    k: int = typer.Option(RelationSpec.k, "--k", min=1, help="Hit@k and the known-fact filter."),
    filter_test: bool = typer.Option(False, "--filter-test", help="Also keep only known facts in the test split."),
    as_json: bool = typer.Option(False, "--json", help="Print the row as JSON."),
) -> None:
    """Discover one circuit per relation on validation facts, report Hit@k on validation and test."""
    from kcircuits.circuits.relation import list_relations
    from kcircuits.services import capabilities

    if name == "list":
        rows = list_relations()
        if as_json:
            emit_json(rows)
        else:
            for row in rows:
                typer.echo(f"{row['category']:<12}{row['name']:<34}{row['n_samples']:>6}  {row['template']}")
        return
    with domain_errors():
        spec = RelationSpec(relation=name, model=model, n=n, method=method, top_n=top_n, ablation=ablation, k=k,
                            filter_test=filter_test)
        row = run_service(capabilities.relation, spec, name, load)
    emit(row, as_json, _print_row)


def _print_row(row: dict) -> None:
    from kcircuits.circuits.relation import format_table

    typer.echo(format_table([row]))
    t = row["timings"]
    typer.echo(f"\n{row['model']}: {row['edges']} of {row['total_edges']} edges ({100 * row['edge_fraction']:.2f}%), "
               f"{row['n_validation_known']}/{row['n_validation_split']} validation facts known (top {row['known_k']}); "
               f"{t['total_s']:.1f} s")


def register(app: typer.Typer) -> None:
    app.command("relation")(relation)

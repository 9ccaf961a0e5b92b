"""``kcircuits graph-stats`` (registry facts only) and ``kcircuits circuit PROMPT --target TEXT``."""

from __future__ import annotations

from pathlib import Path

import typer

from kcircuits.circuits.heads import HeadRoleThresholds
from kcircuits.cli.common import domain_errors, emit, load, run_service
from kcircuits.errors import BadRequest
from kcircuits.services.specs import (
    IG_STEPS_MAX,
    MAX_ACDC_EDGES,
    RANDOM_SEEDS_MAX,
    AcdcSpec,
    CircuitSpec,
    SweepSpec,
    selection_error,
)

# Options shared by the circuit commands (typer reads them as parameter metadata).
TARGET_OPTION = typer.Option(..., "--target", "-t", help='Answer text, e.g. " Paris" (first token scored).')
MODEL_OPTION = typer.Option(None, "--model", "-m", help="Registry id (default: the configured default).")
ABLATION_OPTION = typer.Option(None, "--ablation", help="patch | zero | mean (default: patch; acdc: zero)")
CORRUPT_OPTION = typer.Option(None, "--corrupt", help="Corrupted prompt (same token count) for patching.")
SUBJECT_OPTION = typer.Option(None, "--subject", help="Subject span (auto-detected when omitted).")


def graph_stats(
    model: str = typer.Option(None, "--model", "-m", help="Registry id (default: every registered model)."),
    kv_mode: str = typer.Option("grouped", "--kv-mode", help="grouped | ungrouped (k/v per kv group or per head)"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Node and edge counts of the computation graph (no weights are loaded)."""
    from kcircuits.circuits.graph import get_graph
    from kcircuits.config import get_settings
    from kcircuits.lm.registry import all_specs, get_spec

    settings = get_settings()
    with domain_errors():
        specs = [get_spec(model, settings)] if model else list(all_specs(settings).values())
        rows = [{"model": s.id, **get_graph(s.arch, kv_mode).stats()} for s in specs]
    emit(rows[0] if model else rows, as_json, lambda _: _print_graph_stats(rows))


def _print_graph_stats(rows: list[dict]) -> None:
    typer.echo(f"{'model':<22}{'L':>4}{'H':>4}{'G':>4}{'nodes':>8}{'edges':>12}  kv_mode")
    for r in rows:
        typer.echo(f"{r['model']:<22}{r['n_layers']:>4}{r['n_heads']:>4}{r['n_kv_heads']:>4}"
                   f"{r['total_nodes']:>8}{r['total_edges']:>12,}  {r['kv_mode']}")


def circuit(
    prompt: str = typer.Argument(..., help="The prompt, e.g. 'The Eiffel Tower is located in the city of'."),
    target: str = TARGET_OPTION,
    model: str = MODEL_OPTION,
    method: str = typer.Option(CircuitSpec.method, "--method",
                               help="eap-ig-refine | eap-ig | eap | eap-ig-mask | clean-corrupted | exact | acdc"),
    ablation: str = ABLATION_OPTION,
    metric: str = typer.Option(None, "--metric", help="logit_diff | logprob | prob | match_nll | kl "
                                                      "(default: logit_diff for patch, match_nll otherwise)"),
    corrupt: str = CORRUPT_OPTION,
    counterfactuals: int = typer.Option(CircuitSpec.counterfactuals, "--counterfactuals", min=1, max=8,
                                        help="Automatic counterfactuals averaged (when --corrupt is not given)."),
    subject: str = SUBJECT_OPTION,
    top_n: int = typer.Option(None, "--top-n", min=0, help="Keep the n best edges (default 1% of the graph)."),
    threshold: float = typer.Option(None, "--threshold", min=0.0, help="Keep edges with |score| >= T."),
    tau: float = typer.Option(AcdcSpec.tau, "--tau", help="ACDC threshold (method acdc)."),
    ig_steps: int = typer.Option(CircuitSpec.ig_steps, "--ig-steps", min=1, max=IG_STEPS_MAX),
    random_seeds: int = typer.Option(CircuitSpec.random_seeds, "--random-seeds", min=0, max=RANDOM_SEEDS_MAX),
    roles: bool = typer.Option(False, "--roles", help="Print a table of the labelled heads with their role scores."),
    significance_k: float = typer.Option(HeadRoleThresholds.significance_k, "--significance-k", min=0.0,
                                         help="Role significance: MADs above the median |score| of the circuit's heads."),
    write_top_k: int = typer.Option(HeadRoleThresholds.write_top_k, "--write-top-k", min=1,
                                    help="A mover's target or subject token must rank within this in its output."),
    as_json: bool = typer.Option(False, "--json", help="Print the full result as JSON."),
    out: Path = typer.Option(None, "--out", help="Write the result: .json, or .graphml / .dot / .svg / .png via export."),
) -> None:
    """Discover a circuit and report its size, faithfulness and Hit@10 (full / circuit / random),
    and its head roles (``--roles``: a table of the labelled heads with their scores)."""
    from dataclasses import asdict

    from kcircuits.services import capabilities
    from kcircuits.services.specs import AcdcSpec, CircuitSpec

    with domain_errors():
        thresholds = HeadRoleThresholds(significance_k=significance_k, write_top_k=write_top_k)
        thresholds.check()
        if method == "acdc":
            spec = AcdcSpec(prompt=prompt, target=target, model=model, subject=subject, tau=tau,
                            ablation=ablation or AcdcSpec.ablation, metric=metric or AcdcSpec.metric,
                            corrupt_prompt=corrupt, max_edges=MAX_ACDC_EDGES, counterfactuals=counterfactuals,
                            random_seeds=random_seeds)
            result = run_service(capabilities.acdc, spec, "acdc", load)
        else:
            if (error := selection_error(top_n, threshold, method)) is not None:
                raise BadRequest(error)
            spec = CircuitSpec(prompt=prompt, target=target, model=model, method=method,
                               ablation=ablation or CircuitSpec.ablation, metric=metric, corrupt_prompt=corrupt,
                               counterfactuals=counterfactuals, subject=subject, top_n=top_n, threshold=threshold,
                               ig_steps=ig_steps, random_seeds=random_seeds,
                               roles={k: v for k, v in asdict(thresholds).items() if k != "lens_k"})
            result = run_service(capabilities.circuit, spec, method, load)
        if out is not None:
            _write(result, out)
    emit(result, as_json, _summary_with_roles if roles else _summary)


def sweep(
    prompt: str = typer.Argument(..., help="The prompt."),
    target: str = TARGET_OPTION,
    model: str = MODEL_OPTION,
    method: str = typer.Option(SweepSpec.method, "--method", help="eap-ig-refine | eap-ig | eap"),
    ablation: str = ABLATION_OPTION,
    metric: str = typer.Option(None, "--metric", help="logit_diff | logprob | prob | match_nll | kl"),
    corrupt: str = CORRUPT_OPTION,
    subject: str = SUBJECT_OPTION,
    sizes: str = typer.Option(None, "--sizes", help="Comma-separated top-n edge counts (default: six sizes from 10 to 3000)."),
    ig_steps: int = typer.Option(SweepSpec.ig_steps, "--ig-steps", min=1, max=IG_STEPS_MAX),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Circuit size vs faithfulness and Hit@10 (one attribution, one evaluation per size)."""
    from kcircuits.services import capabilities

    with domain_errors():
        try:
            size_list = [int(s) for s in (sizes or "").split(",") if s.strip()] or None  # None: the default sizes
        except ValueError:
            raise BadRequest(f"--sizes must be comma-separated integers, got {sizes!r}") from None
        spec = SweepSpec(prompt=prompt, target=target, model=model, method=method,
                         ablation=ablation or SweepSpec.ablation, metric=metric, corrupt_prompt=corrupt,
                         subject=subject, sizes=size_list, ig_steps=ig_steps)
        result = run_service(capabilities.sweep, spec, "sweep", load)
    emit(result, as_json, _print_sweep)


def _print_sweep(result: dict) -> None:
    typer.echo(f"{result['model']}: {result['method']} / {result['ablation']} / {result['metric']}; "
               f"of {result['graph']['total_edges']:,} edges")
    typer.echo(f"{'top_n':>8}{'edges':>8}{'fraction':>10}{'faithful':>10}{'Hit@10':>8}{'rank':>6}")
    for r in result["rows"]:
        faith = "n/a" if r["faithfulness"] is None else f"{r['faithfulness']:.3f}"
        typer.echo(f"{r['top_n']:>8}{r['edges']:>8}{100 * r['edge_fraction']:>9.2f}%{faith:>10}"
                   f"{r['hit_at_10']:>8.0f}{r['target_rank']:>6}")


def _write(result: dict, path: Path) -> None:
    suffix = path.suffix.lower().lstrip(".")
    if suffix == "json":
        import json

        path.write_text(json.dumps(result, indent=2, ensure_ascii=False))
        return
    try:
        from kcircuits.export import export_circuit
    except ImportError as exc:
        raise BadRequest(f"export to .{suffix} is not available; use --out FILE.json") from exc
    data = export_circuit(result, suffix)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data)


def _print_roles(result: dict) -> None:
    """The labelled heads (strongest direct effect first) with their role scores."""
    record = result.get("roles") or {}
    counts = record.get("counts") or {}
    labelled = sorted(((h, info) for h, info in (result.get("heads") or {}).items() if info.get("role")),
                      key=lambda item: -abs(item[1]["dla"]))
    typer.echo(f"head roles ({counts.get('total', 0)} circuit heads: " + ", ".join(
        f"{counts.get(r, 0)} {r}" for r in ("mover", "relation", "mixture", "none")) + ")")
    typer.echo(f"  significance: {record.get('significance', '')}")
    typer.echo(f"  relation tokens: {record.get('relation_tokens', [])}")
    if not labelled:
        typer.echo("  no head passes the role rules")
        return
    typer.echo(f"  {'head':<9}{'role':<10}{'A_subj':>7}{'A_rel':>7}{'DLA':>9}{'attrib':>9}{'sig':>7}"
               f"{'tgt_rk':>8}{'subj_rk':>8}  top tokens")
    for hid, info in labelled:
        sig = max((z for z in info["significance"].values() if z is not None), default=None)
        attribution = info.get("attribution")
        typer.echo(f"  {hid:<9}{info['role']:<10}{info['subject_attention']:>7.2f}{info['relation_attention']:>7.2f}"
                   f"{info['dla']:>+9.3f}{'' if attribution is None else format(attribution, '.3f'):>9}"
                   f"{'' if sig is None else format(sig, '.1f'):>7}{info['target_rank']:>8}"
                   f"{info['subject_rank'] if info['subject_rank'] is not None else '-':>8}  "
                   + " ".join(repr(t) for t in info["top_tokens"][:4]))


def _summary_with_roles(result: dict) -> None:
    _summary(result)
    _print_roles(result)


def _summary(result: dict) -> None:
    m = result["metrics"]
    g = result["graph"]
    hits = m["hit_at_10"]
    faith = "n/a" if m["faithfulness"] is None else f"{m['faithfulness']:.3f}"
    typer.echo(f"{result['model']}: {result['method']} / {result['ablation']} / {result['metric']}; "
               f"corrupt: {result['corrupt_prompt']!r}")
    chosen = (result.get("counterfactual") or {}).get("chosen") or []
    for cf in chosen:
        typer.echo(f"  counterfactual: {cf['why']}")
    if m.get("faithfulness_undefined"):
        typer.echo(f"faithfulness undefined: {m['faithfulness_undefined']}")
    typer.echo(f"circuit: {m['edges']} of {g['total_edges']:,} edges ({100 * m['edge_fraction']:.2f}%), "
               f"{m['nodes']} of {g['total_nodes']} nodes")
    typer.echo(f"faithfulness {faith}  (metric full {m['metric_full']:.3f}, circuit {m['metric_circuit']:.3f}, "
               f"empty {m['metric_empty']:.3f})")
    random_hit = "n/a" if hits["random"] is None else f"{hits['random']:.2f}"
    typer.echo(f"Hit@10 full {hits['full']}  circuit {hits['circuit']}  random {random_hit}; "
               f"target rank full {m['target_rank']['full']}, circuit {m['target_rank']['circuit']}, "
               f"random {m['target_rank']['random']}")
    curve = result.get("curve", {})
    if curve.get("points"):
        typer.echo("curve: " + "  ".join(
            f"{p['edges']}e F={'n/a' if p['faithfulness'] is None else format(p['faithfulness'], '.2f')}"
            for p in curve["points"]) + (f"  CPR {curve['cpr_normalised']:.2f} CMD {curve['cmd_normalised']:.2f}"
                                         if curve.get("cpr_normalised") is not None else ""))
    top = [e for e in result["edges"] if e["in_circuit"]][:10]
    for e in top:
        typer.echo(f"  {e['source']:>8} -> {e['receiver']:<12} {e['score']:+.4f}")
    roles = {hid: h["role"] for hid, h in result.get("heads", {}).items() if h.get("role")}
    if roles:
        typer.echo("head roles: " + ", ".join(f"{h}={r}" for h, r in sorted(roles.items())))
    typer.echo(f"{result['timings']['total_s']:.1f} s")


def register(app: typer.Typer) -> None:
    app.command("graph-stats")(graph_stats)
    app.command("circuit")(circuit)
    app.command("sweep")(sweep)

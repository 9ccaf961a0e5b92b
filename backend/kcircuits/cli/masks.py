"""``kcircuits mask``: parameter-level masks (Ge, Rudzicz, Zhu; METHODS 7): ``train`` a mask of a
relation or syntax task, ``edit`` a fact four ways under a stored mask, ``overlap`` of stored masks."""

from __future__ import annotations

import typer

from kcircuits.cli.common import domain_errors, emit, load, open_store, run_service
from kcircuits.services.specs import (
    MASK_EDIT_STEPS_MAX,
    MASK_STEPS_MAX,
    MASK_TASK_N_MAX,
    MASK_TASK_N_MIN,
    MaskEditSpec,
    MaskOverlapSpec,
    MaskTrainSpec,
)

mask_app = typer.Typer(no_args_is_help=True, help="Parameter masks: train, edit (four ways), overlap.")


@mask_app.command("train")
def train(
    relation: str = typer.Option(None, "--relation", "-r", help="LRE relation: its known facts are the task."),
    phenomenon: str = typer.Option(None, "--phenomenon", help="Syntax minimal pairs: det_noun | subj_verb."),
    model: str = typer.Option(None, "--model", "-m", help="Registry id, Llama family (default: the configured default)."),
    n: int = typer.Option(MaskTrainSpec.n, "--n", min=MASK_TASK_N_MIN, max=MASK_TASK_N_MAX, help="Prompts of the task."),
    density: float = typer.Option(MaskTrainSpec.density, "--density", help="Target share of parameters (0.05 ... 0.5)."),
    steps: int = typer.Option(MaskTrainSpec.steps, "--steps", min=1, max=MASK_STEPS_MAX, help="Training steps."),
    lr: float = typer.Option(MaskTrainSpec.lr, "--lr", help="Adam learning rate of the gate logits."),
    lam: float = typer.Option(MaskTrainSpec.lam, "--lam", help="Weight of the density penalty."),
    loss: str = typer.Option(MaskTrainSpec.loss, "--loss", help="kl (to the full model) | ce (to its top-1)."),
    seed: int = typer.Option(MaskTrainSpec.seed, "--seed", min=0),
    eval_every: int = typer.Option(MaskTrainSpec.eval_every, "--eval-every", min=1, help="Steps between curve points."),
    warm_start: str = typer.Option(MaskTrainSpec.warm_start, "--warm-start",
                                   help="taylor (first-order pruning opens the initial gates) | none (all open)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Learn a hard-concrete mask of the task at the target density; resumes from its checkpoint."""
    from kcircuits.services import capabilities

    with domain_errors():
        spec = MaskTrainSpec(model=model, relation=relation, phenomenon=phenomenon, n=n, density=density, steps=steps,
                             lr=lr, lam=lam, loss=loss, seed=seed, eval_every=eval_every, warm_start=warm_start)
        result = run_service(capabilities.mask_train, spec, "mask train", load)
    emit(result, as_json, _print_train)


def _print_train(result: dict) -> None:
    p, f, t = result["params"], result["faithfulness"], result["timing"]
    typer.echo(f"{result['model']}: mask of {result['task']['name']} ({len(result['task']['prompts'])} prompts), "
               f"target density {p['target']:.3f} of the gated parameters, {p['steps']} steps, loss {p['loss']}, "
               f"lr {p['lr']}, lam {p['lam']}, warm start {p['warm_start']}")
    typer.echo(f"id {result['id']}")
    curves = result["curves"]
    typer.echo(f"{'step':>7} {'loss':>10} {'E[density]':>11} {'KL(mask)':>10}")
    shown = sorted({0, len(curves["step"]) // 2, len(curves["step"]) - 1}) if curves["step"] else []
    for i in shown:
        typer.echo(f"{curves['step'][i]:>7} {curves['loss'][i]:>10.4g} {curves['density'][i]:>11.4f} "
                   f"{curves['faithfulness_kl'][i]:>10.4g}")
    typer.echo(f"final density {result['density']:.4f}; faithfulness KL {f['kl']:.4g}, top-1 agreement "
               f"{f['top1_agreement']:.2f}, accuracy {f['accuracy']:.2f} (full model {f['full_accuracy']:.2f})")
    typer.echo(f"{'module':<10} {'share inside':>12} {'share of mask':>14} {'params':>10}")
    for kind, s in result["composition"].items():
        kept = "  (always kept, not gated)" if s.get("always_kept") else ""
        typer.echo(f"{kind:<10} {_num(s['share_inside'], 3):>12} {_num(s['share_of_mask'], 3):>14} {s['n_params']:>10}{kept}")
    ratio = t["step_over_forward_backward"]
    resumed = f", resumed from step {t['resumed_from_step']}" if t["resumed_from_step"] else ""
    typer.echo(f"timing: {t['step_s'] * 1000:.1f} ms/step over {t['steps_run']} steps{resumed}; one forward+backward "
               f"{t['forward_backward_s'] * 1000:.1f} ms (x{_num(ratio, 2)})")


@mask_app.command("edit")
def edit(
    mask_id: str = typer.Argument(..., help="Id of a stored mask (from mask train)."),
    prompt: str = typer.Option(..., "--prompt", "-p", help="Prompt of the new fact."),
    target: str = typer.Option(..., "--target", "-t", help='New answer, e.g. " Rome" (its first token).'),
    model: str = typer.Option(None, "--model", "-m", help="Registry id (default: the mask's model)."),
    steps: int = typer.Option(MaskEditSpec.steps, "--steps", min=1, max=MASK_EDIT_STEPS_MAX, help="Fine-tuning steps."),
    lr: float = typer.Option(MaskEditSpec.lr, "--lr", help="Adam learning rate."),
    seed: int = typer.Option(MaskEditSpec.seed, "--seed", min=0, help="Seed of the random mask."),
    locality: list[str] = typer.Option([], "--locality", help="Locality prompt (repeatable; default: the mask's task and unrelated prompts)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Fine-tune the fact inside the mask, its complement, a random mask of its density and the whole model."""
    from kcircuits.services import capabilities

    with domain_errors():
        model = model or capabilities.mask_model(open_store(), mask_id)
        spec = MaskEditSpec(mask_id=mask_id, prompt=prompt, target=target, model=model, steps=steps, lr=lr, seed=seed,
                            locality_prompts=list(locality) or None)
        result = run_service(capabilities.mask_edit, spec, "mask edit", load)
    emit(result, as_json, _print_edit)


def _print_edit(result: dict) -> None:
    typer.echo(f"{result['model']}: {result['prompt']!r} -> {result['target']!r}, {result['steps']} steps, "
               f"lr {result['lr']}, locality on {len(result['locality_prompts'])} prompts")
    typer.echo(f"{'edit in':<11} {'density':>8} {'NLL pre':>8} {'NLL post':>9} {'locality':>9} {'blocks moved':>13} {'outside':>8}")
    for r in result["rows"]:
        typer.echo(f"{r['variant']:<11} {r['density']:>8.4f} {r['nll_pre']:>8.3f} {r['nll_post']:>9.3f} "
                   f"{_num(r['locality'], 2):>9} {r['changed_blocks']:>13} {r['changed_outside']:>8}")


@mask_app.command("overlap")
def overlap(
    mask_ids: list[str] = typer.Argument(..., help="Ids of two or more stored masks of one model."),
    model: str = typer.Option(None, "--model", "-m", help="Registry id (default: the first mask's model)."),
    seed: int = typer.Option(MaskOverlapSpec.seed, "--seed", min=0, help="Random masks use seeds seed + i."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """The overlap matrix |Ci ∩ Cj| / |Ci| beside random masks of the same densities."""
    from kcircuits.services import capabilities

    with domain_errors():
        model = model or capabilities.mask_model(open_store(), mask_ids[0])
        spec = MaskOverlapSpec(mask_ids=list(mask_ids), model=model, seed=seed)
        result = run_service(capabilities.mask_overlap, spec, "mask overlap", load)
    emit(result, as_json, _print_overlap)


def _print_overlap(result: dict) -> None:
    labels = [f"{i}:{label}"[:18] for i, label in enumerate(result["labels"])]
    typer.echo(f"{result['model']}: |Ci ∩ Cj| / |Ci| (row i), random masks of the same densities in brackets")
    typer.echo(f"{'':<18} {'density':>8} " + " ".join(f"{i:>15}" for i in range(len(labels))))
    for i, label in enumerate(labels):
        cells = " ".join(f"{_num(m, 3):>6} [{_num(r, 3):>6}]" for m, r in
                         zip(result["matrix"][i], result["random_matrix"][i], strict=True))
        typer.echo(f"{label:<18} {result['densities'][i]:>8.4f} {cells}")


def _num(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def register(app: typer.Typer) -> None:
    app.add_typer(mask_app, name="mask")

"""One service function per capability: ``(spec, executor, store) -> result``.

The API's routes and jobs and the CLI's commands call these; the executor decides where the model
work runs (the ModelWorker, or inline), the store (or None) makes results content-addressed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kcircuits.services.checks import check_tokens
from kcircuits.services.executor import Executor, Steps
from kcircuits.services.specs import (
    AcdcSpec,
    CircuitSpec,
    LensSpec,
    MaskComponentsSpec,
    MaskEditSpec,
    MaskOverlapSpec,
    MaskTrainSpec,
    NeuronEditSpec,
    NeuronsCompareSpec,
    NeuronsSpec,
    NodeDetailSpec,
    ProjectSpec,
    RelationSpec,
    SweepSpec,
)
from kcircuits.services.wire import (
    HeadRoleOut,
    MaskComponentsOut,
    MaskEditOut,
    MaskOut,
    MaskOverlapOut,
    RolesOut,
    TopTokenOut,
)

if TYPE_CHECKING:
    from kcircuits.lm.loader import LoadedModel


def compute_lens(model: LoadedModel, spec: LensSpec, settings: Any) -> dict:
    """Runs with the model: tokenise, resolve subject/target, one lens pass."""
    from kcircuits.circuits.lens import LensRequest, logit_lens
    from kcircuits.circuits.subject import resolve_subject

    tokens = model.tokenize(spec.prompt)
    check_tokens(tokens.shape[1], settings)
    subject, positions, auto = resolve_subject(model, spec.prompt, spec.subject)
    target_id = model.first_token_id(spec.target) if spec.target is not None else None
    lens = logit_lens(model, tokens, LensRequest(top_k=spec.top_k, target_id=target_id,
                                                 subject_positions=tuple(positions), ln_mode=spec.ln_mode,
                                                 kl=spec.kl))
    if lens["target"] is not None:
        lens["target"] = {"text": spec.target, "token": model.token_strings([target_id])[0], "id": target_id,
                          **lens["target"]}
    return {
        "model": model.spec.id, "revision": model.revision, "prompt": spec.prompt,
        "tokens": model.token_strings(tokens[0]), "token_ids": tokens[0].tolist(),
        "n_layers": model.arch.n_layers, **lens,
        "subject": {"text": subject, "positions": positions, "auto": auto} if subject else None,
        "ln_mode": spec.ln_mode, "session": spec.session,
    }


def lens(spec: LensSpec, executor: Executor, store: Any) -> dict:
    """Logit lens; with ``save``, stored (kind ``lens``) with ``id`` and ``provenance``."""
    settings = executor.settings
    spec.check(settings)
    compute = lambda: executor.run(lambda model, _: compute_lens(model, spec, settings))  # noqa: E731
    if not spec.save:
        return compute()
    return executor.stored(store, "lens", spec.request(settings), lambda: {"kind": "lens", **compute()})


def with_roles(model: LoadedModel, result: dict, thresholds: Any = None) -> dict:
    """Runs with the model: the circuit result's head roles with significance and the nodes' top
    lens tokens (in place), checked against the wire models."""
    from kcircuits.circuits.heads import HeadRoleThresholds, annotate_circuit_roles

    annotate_circuit_roles(model, result, thresholds or HeadRoleThresholds())
    for node in result["nodes"]:
        top = node.get("top_token")
        node["top_token"] = None if top is None else TopTokenOut.model_validate(top).model_dump()
    result["heads"] = {hid: HeadRoleOut.model_validate(info).model_dump() for hid, info in result["heads"].items()}
    result["roles"] = RolesOut.model_validate(result["roles"]).model_dump()
    return result


def run_circuit(model: LoadedModel, spec: CircuitSpec, settings: Any, steps: Steps | None = None) -> dict:
    """Runs with the model: token limits, the circuit, its head roles."""
    from kcircuits.circuits.discover import compute_circuit

    check_tokens(model.tokenize(spec.prompt).shape[1], settings)
    args = {k: getattr(spec, k) for k in ("prompt", "target", "method", "ablation", "metric", "corrupt_prompt",
                                          "counterfactuals", "subject", "foil", "top_n", "threshold", "greedy",
                                          "ig_steps", "kv_mode", "max_edges_returned", "random_seeds", "with_heads")}
    result = compute_circuit(model, **args, progress=steps.progress if steps is not None else None,
                             cancel=steps.cancel if steps is not None else None)
    if spec.with_heads:
        with_roles(model, result, spec.thresholds())
    result["session"] = spec.session
    return result


def circuit(spec: CircuitSpec, executor: Executor, store: Any, run: Callable[..., dict] | None = None) -> dict:
    """A circuit for ``prompt`` -> ``target``: nodes, scored edges, faithfulness, Hit@10 (kind
    ``circuit``); ``run(model, spec, settings, steps)`` is the model step (default :func:`run_circuit`)."""
    settings = executor.settings
    spec.check(settings)
    run = run or run_circuit
    return executor.stored(store, "circuit", spec.request(settings),
                           lambda: executor.run(lambda model, steps: run(model, spec, settings, steps)))


def acdc(spec: AcdcSpec, executor: Executor, store: Any) -> dict:
    """Exact ACDC as the paper ran it (one forward per edge), in the circuit format (kind ``circuit``)."""
    from kcircuits.circuits.acdc import acdc_circuit

    settings = executor.settings
    spec.check(settings)

    def compute(model: LoadedModel, steps: Steps) -> dict:
        check_tokens(model.tokenize(spec.prompt).shape[1], settings)
        return with_roles(model, acdc_circuit(
            model, spec.prompt, spec.target, tau=spec.tau, ablation=spec.ablation, metric=spec.metric,
            corrupt_prompt=spec.corrupt_prompt, subject=spec.subject, kv_mode=spec.kv_mode,
            counterfactuals=spec.counterfactuals, random_seeds=spec.random_seeds,
            progress=steps.progress, cancel=steps.cancel))

    return executor.stored(store, "circuit", spec.request(settings), lambda: executor.run(compute))


def default_sweep_sizes(arch: Any, kv_mode: str) -> list[int]:
    """The default sweep sizes that fit the graph, and the whole graph."""
    from kcircuits.circuits.discover import DEFAULT_SWEEP_SIZES
    from kcircuits.circuits.graph import get_graph

    n_edges = get_graph(arch, kv_mode).n_edges
    return sorted({n for n in DEFAULT_SWEEP_SIZES if n < n_edges} | {n_edges})


def sweep(spec: SweepSpec, executor: Executor, store: Any) -> dict:
    """Circuit size vs faithfulness and Hit@10 (kind ``sweep``)."""
    from kcircuits.circuits.discover import sweep_circuit

    settings = executor.settings
    spec.check(settings)

    def compute(model: LoadedModel, steps: Steps) -> dict:
        return sweep_circuit(model, spec.prompt, spec.target, method=spec.method, ablation=spec.ablation,
                             metric=spec.metric, corrupt_prompt=spec.corrupt_prompt, subject=spec.subject,
                             sizes=spec.sizes or default_sweep_sizes(model.arch, spec.kv_mode),
                             ig_steps=spec.ig_steps, kv_mode=spec.kv_mode, progress=steps.progress,
                             cancel=steps.cancel)

    return executor.stored(store, "sweep", spec.request(settings), lambda: executor.run(compute))


def relation(spec: RelationSpec, executor: Executor, store: Any) -> dict:
    """One LRE relation's circuit and its Hit@k on validation and test (kind ``relation``)."""
    from kcircuits.circuits.relation import run_relation

    settings = executor.settings
    spec.check(settings)

    def compute(model: LoadedModel, steps: Steps) -> dict:
        return run_relation(model, spec.relation, n=spec.n, method=spec.method, top_n=spec.top_n,
                            ablation=spec.ablation, k=spec.k, known_k=spec.known_k, filter_test=spec.filter_test,
                            progress=steps.progress, cancel=steps.cancel)

    return executor.stored(store, "relation", spec.request(settings), lambda: executor.run(compute))


def neurons(spec: NeuronsSpec, executor: Executor, store: Any) -> dict:
    """Knowledge neurons: IG over every MLP hidden unit, the KN filters, optionally the circuit (kind ``neurons``)."""
    from kcircuits.circuits.neurons import (
        IGParams,
        KNParams,
        find_neurons,
        neurons_with_circuit,
        request_prompts,
    )

    settings = executor.settings
    spec.check(settings)

    def compute(model: LoadedModel, steps: Steps) -> dict:
        prompts = request_prompts(model, spec.prompt, spec.target, spec.paraphrases, spec.relation, spec.subject)
        for text, _ in prompts:
            check_tokens(model.tokenize(text).shape[1], settings)
        ig, kn = IGParams(steps=spec.steps, path=spec.path), KNParams(spec.threshold, spec.share)
        if spec.with_circuit:
            result = neurons_with_circuit(model, prompts[0][0], spec.target, paraphrases=[p for p, _ in prompts[1:]],
                                          ig=ig, kn=kn, top_k=spec.top_k, circuit_top_n=spec.circuit_top_n,
                                          progress=steps.progress, cancel=steps.cancel)
        else:
            result = find_neurons(model, prompts, ig=ig, kn=kn, top_k=spec.top_k, progress=steps.progress,
                                  cancel=steps.cancel)
        return {"kind": "neurons", "prompt": spec.prompt, "target": spec.target, "relation": spec.relation,
                "subject": spec.subject, "session": spec.session, **result}

    return executor.stored(store, "neurons", spec.request(settings), lambda: executor.run(compute))


def neurons_compare(spec: NeuronsCompareSpec, executor: Executor, store: Any) -> dict:
    """Niu et al.'s facts-vs-syntax comparison of KN localisation (kind ``neurons_compare``)."""
    from kcircuits.circuits.neurons import DEFAULT_RELATIONS, IGParams, KNParams, compare_localisation

    settings = executor.settings
    spec.check(settings)

    def compute(model: LoadedModel, steps: Steps) -> dict:
        result = compare_localisation(model, spec.n_facts, spec.n_syntax,
                                      ig=IGParams(steps=spec.steps, path=spec.path),
                                      kn=KNParams(spec.threshold, spec.share), max_prompts=spec.max_prompts,
                                      relations=spec.relations or DEFAULT_RELATIONS, phenomena=spec.phenomena,
                                      progress=steps.progress, cancel=steps.cancel)
        return {"kind": "neurons_compare", **result}

    return executor.stored(store, "neurons_compare", spec.request(settings), lambda: executor.run(compute))


def neuron_edit(spec: NeuronEditSpec, executor: Executor, store: Any) -> dict:
    """Suppress or enhance neurons by hooks (weights untouched): before/after (kind ``neuron_edit``)."""
    from kcircuits.circuits.neurons import edit_request

    settings = executor.settings
    spec.check(settings)

    def compute(model: LoadedModel, _: Steps) -> dict:
        check_tokens(model.tokenize(spec.prompt).shape[1], settings)
        result = edit_request(model, spec.neurons, spec.mode, spec.prompt, spec.target, positions=spec.positions,
                              relation=spec.relation, subject=spec.subject, paraphrases=spec.paraphrases,
                              unrelated=spec.unrelated, foil=spec.foil)
        return {"kind": "neuron_edit", "model": model.spec.id, "target": spec.target, "relation": spec.relation,
                "subject": spec.subject, "session": spec.session, **result}

    return executor.stored(store, "neuron_edit", spec.request(settings), lambda: executor.run(compute))


def project(spec: ProjectSpec, executor: Executor) -> dict:
    """Top tokens one head's or MLP's output promotes and suppresses at a position."""
    from kcircuits.circuits.lens import project_node

    settings = executor.settings
    spec.check(settings)

    def compute(model: LoadedModel, _: Steps) -> dict:
        tokens = model.tokenize(spec.prompt)
        check_tokens(tokens.shape[1], settings)
        return project_node(model, tokens, spec.node, spec.position, spec.k)

    return executor.run(compute)


def compute_node_detail(model: LoadedModel, spec: NodeDetailSpec, settings: Any, population: list[str] | None = None,
                        attribution: dict[str, float] | None = None, thresholds: Any = None) -> dict:
    """Runs with the model. Head: pattern [q][k], promoted/suppressed tokens, role scores (its
    significance judged among ``population``, default every head, with ``attribution``). MLP:
    promoted/suppressed tokens at the last position. input/logits: just the kind."""
    from kcircuits.circuits.heads import HeadRoleThresholds, head_detail, relation_positions
    from kcircuits.circuits.lens import parse_node, project_node
    from kcircuits.circuits.subject import resolve_subject

    if spec.node in {"input", "logits"}:
        return {"node": spec.node, "kind": spec.node}
    kind, layer, head = parse_node(model, spec.node)
    tokens = model.tokenize(spec.prompt)
    check_tokens(tokens.shape[1], settings)
    if kind == "mlp":
        return project_node(model, tokens, spec.node, -1, spec.k)
    _, subject_pos, _ = resolve_subject(model, spec.prompt, spec.subject)
    target_id = model.first_token_id(spec.target) if spec.target else None
    detail = head_detail(model, tokens, spec.node, subject_positions=subject_pos if target_id is not None else None,
                         target_id=target_id, k=spec.k, population=population, attribution=attribution,
                         thresholds=thresholds or HeadRoleThresholds())
    scores = detail.get("role_scores") or {}
    return {
        "node": spec.node, "kind": "head", "layer": layer, "head": head, "tokens": detail["tokens"],
        "pattern": detail["pattern"], "subject_positions": subject_pos,
        "relation_positions": relation_positions(model, tokens, subject_pos),
        "promoted": detail["promoted"], "suppressed": detail["suppressed"],
        "dla_by_source": detail.get("dla_by_source"), "role": scores.get("role"),
        "scores": {key: scores.get(key) for key in ("subject_attention", "relation_attention",
                                                    "subject_dla_share", "relation_dla_share", "dla",
                                                    "attribution", "target_rank", "subject_rank")},
        "significant": scores.get("significant"), "significance": scores.get("significance"),
    }


def node_detail(spec: NodeDetailSpec, executor: Executor) -> dict:
    """The node panel's content for a node of the circuit of ``spec.prompt``."""
    settings = executor.settings
    spec.check(settings)
    return executor.run(lambda model, _: compute_node_detail(model, spec, settings))


def stored_circuit(store: Any, circuit_id: str) -> dict:
    """The stored circuit ``circuit_id``; NotFound for a malformed, unknown or non-circuit id."""
    from kcircuits.errors import NotFound
    from kcircuits.store.ids import is_valid_id

    if not is_valid_id(circuit_id):
        raise NotFound(f"no circuit with id {circuit_id[:80]!r}")
    circuit = store.get(circuit_id) if store is not None else None
    if circuit is None:
        raise NotFound(f"no circuit with id {circuit_id!r}")
    return circuit


def stored_node_detail(circuit: dict, node: str, executor: Executor) -> dict:
    """Node detail for a node of a stored circuit (its prompt, target and subject; head roles judged
    among the circuit's heads with their attribution, under the circuit's role thresholds)."""
    from kcircuits.circuits.heads import HeadRoleThresholds
    from kcircuits.errors import BadRequest

    if len(node) > 50:
        raise BadRequest("node id too long")
    heads = [n for n in circuit.get("nodes") or [] if n.get("kind") == "head"]
    population = [n["id"] for n in heads if n.get("in_circuit")] or None
    attribution = {n["id"]: float(n.get("score") or 0.0) for n in heads}
    stored = (circuit.get("roles") or {}).get("thresholds")
    known = HeadRoleThresholds.__dataclass_fields__
    thresholds = HeadRoleThresholds(**{k: v for k, v in stored.items() if k in known}) if stored else None
    spec = NodeDetailSpec(prompt=circuit["prompt"], node=node, model=circuit["model"], target=circuit.get("target"),
                          subject=(circuit.get("subject") or {}).get("text"),
                          session=(circuit.get("params") or {}).get("session"))
    settings = executor.settings
    return executor.run(lambda model, _: compute_node_detail(model, spec, settings, population, attribution,
                                                             thresholds))


def to_spec(cls: type, data: Any) -> Any:
    """The spec ``cls`` from a pydantic request (its fields that the spec has)."""
    from dataclasses import fields

    dumped = data.model_dump() if hasattr(data, "model_dump") else dict(data)
    return cls(**{f.name: dumped[f.name] for f in fields(cls) if f.name in dumped})


# -- parameter masks (circuits/masks.py; METHODS 7) -------------------------------------------------
MASK_EDIT_VARIANTS = ("inside", "complement", "random", "full")


def stored_mask(store: Any, mask_id: str, field: str = "mask_id") -> dict:
    """The stored mask record ``mask_id`` (kind ``mask``); NotFound when unknown or another kind."""
    from kcircuits.errors import NotFound
    from kcircuits.store.ids import is_valid_id

    record = store.get(mask_id) if store is not None and is_valid_id(mask_id) else None
    if record is None or record.get("kind") != "mask":
        raise NotFound(f"{field}: no stored mask with id {mask_id[:80]!r}")
    return record


def mask_model(store: Any, mask_id: str) -> str:
    """The model a stored mask was trained on (the default model of requests that use it)."""
    return stored_mask(store, mask_id)["model"]


def _mask_on(model: Any, record: dict) -> tuple[Any, Any]:
    """(layout, bool mask [n_gates]) of a stored mask on ``model``; BadRequest when the mask
    belongs to another model or parameter layout."""
    from kcircuits.circuits import masks as M
    from kcircuits.errors import BadRequest

    if record["model"] != model.spec.id:
        raise BadRequest(f"mask {record['id'][:12]} was trained on {record['model']!r}, not {model.spec.id!r}")
    lay = M.layout(model.bridge)
    if record["layout"] != lay.fingerprint() or record["n_gates"] != lay.n_gates:
        raise BadRequest(f"mask {record['id'][:12]} has another parameter layout than {model.spec.id!r}")
    return lay, M.unpack_mask(record["bits"], lay.n_gates)


def _checkpoint_path(settings: Any, store: Any, request: dict, revision: str) -> Any:
    """Where a mask run's checkpoint lives: the data dir, keyed by the request's content id (the
    same spec after a crash resumes from it)."""
    from kcircuits.store import ids

    key = store.content_id("mask", request, revision) if store is not None else \
        ids.hash_key({"kind": "mask", "request": request, "revision": revision})
    folder = settings.data_dir / "mask-checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{key}.pt"


def train_mask_result(model: Any, spec: MaskTrainSpec, steps: Steps, checkpoint: Any = None) -> dict:
    """Runs with the model: the task, the trained mask (progress events carry each evaluation's
    loss, expected density and faithfulness KL; cancel between steps), its faithfulness, module
    composition, per-head / per-MLP densities and timing, as a :class:`MaskOut` record."""
    from kcircuits.circuits import masks as M

    M.check_family(model)
    if spec.relation is not None:
        task = M.relation_task(model, spec.relation, n=spec.n)
    else:
        task = M.syntax_task(model, spec.phenomenon, n=spec.n)

    def progress(done: int, total: int, point: dict) -> None:
        steps.progress(done, total, f"step {done}/{total}: loss {point['loss']:.4g}, density {point['density']:.3f}",
                       curve=point)

    trained = M.train_mask(model, task, spec.params(), progress=progress, cancel=steps.cancel,
                           checkpoint=str(checkpoint) if checkpoint else None, eval_every=spec.eval_every)
    lay, mask = trained["layout"], trained["mask"]
    record = M.mask_record(trained, model)
    record.pop("id", None)  # the store's content id is the mask's id
    fb = M.forward_backward_s(model, task)
    resumed = spec.steps - trained["steps_run"]
    return MaskOut.model_validate({
        **record, "kind": "mask", "n_params": lay.n_params,
        "task": {"name": task.name, "kind": "relation" if spec.relation is not None else "syntax",
                 "relation": spec.relation, "phenomenon": spec.phenomenon, "prompts": task.prompts,
                 "targets": task.targets},
        "faithfulness": M.evaluate_mask(model, task, mask, lay),
        "components": M.component_rows(M.component_density(mask, lay, model)),
        "timing": {"train_s": trained["train_s"], "step_s": trained["step_s"], "steps_run": trained["steps_run"],
                   "resumed_from_step": resumed, "forward_backward_s": fb,
                   "step_over_forward_backward": trained["step_s"] / fb if fb > 0 else None},
    }).model_dump()


def mask_train(spec: MaskTrainSpec, executor: Executor, store: Any) -> dict:
    """Train a parameter mask of a relation or syntax task (kind ``mask``); resumable: a checkpoint
    in the data dir keyed by the request's content id, removed once the mask is done."""
    settings = executor.settings
    spec.check(settings)
    request = spec.request(settings)

    def compute(model: Any, steps: Steps) -> dict:
        checkpoint = _checkpoint_path(settings, store, request, model.revision)
        result = train_mask_result(model, spec, steps, checkpoint)
        checkpoint.unlink(missing_ok=True)
        return result

    return executor.stored(store, "mask", request, lambda: executor.run(compute))


def _locality_prompts(spec: MaskEditSpec, record: dict) -> list[str]:
    """The edit's locality prompts: as given, else the mask's task prompts (other facts of the
    relation, other pairs) and fixed unrelated prompts, the edited prompt left out."""
    from kcircuits.editing.evaluate import UNRELATED
    from kcircuits.services.specs import MASK_LOCALITY_MAX

    if spec.locality_prompts is not None:
        return list(spec.locality_prompts)
    prompts = [p for p in dict.fromkeys([*record["task"]["prompts"], *UNRELATED]) if p != spec.prompt]
    return prompts[:MASK_LOCALITY_MAX]


def mask_edit(spec: MaskEditSpec, executor: Executor, store: Any) -> dict:
    """Circuit-aware editing (kind ``mask_edit``): fine-tune the fact inside the stored mask, in its
    complement, in a random mask of the same density and in the whole model (same steps and lr);
    post-edit NLL of the new target and locality of each."""
    import torch

    from kcircuits.circuits import masks as M

    settings = executor.settings
    spec.check(settings)
    record = stored_mask(store, spec.mask_id)
    locality = _locality_prompts(spec, record)

    def compute(model: Any, steps: Steps) -> dict:
        lay, mask = _mask_on(model, record)
        for i, text in enumerate([spec.prompt, *locality]):
            check_tokens(model.tokenize(text).shape[1], settings, "prompt" if i == 0 else f"locality_prompts[{i - 1}]")
        base = dict(model.bridge.named_parameters())
        sets = {"inside": mask, "complement": ~mask,
                "random": M.random_mask(lay, M.density(mask, lay), seed=spec.seed), "full": None}
        rows = []
        for i, variant in enumerate(MASK_EDIT_VARIANTS):
            steps.progress(i, len(MASK_EDIT_VARIANTS), f"fine-tuning {variant}")
            chosen = sets[variant]
            res = M.edit_under_mask(model, spec.prompt, spec.target, chosen, lay, steps=spec.steps, lr=spec.lr,
                                    check=[(p, "") for p in locality])
            changed = M.changed_gates(res.pop("params"), base, lay)
            outside = changed & ~chosen if chosen is not None else torch.zeros_like(changed)
            rows.append({"variant": variant, "density": res["density"], "nll_pre": res["nll_pre"],
                         "nll_post": res["nll_post"], "locality": res["locality"], "losses": res["losses"],
                         "changed_blocks": int(changed.sum()), "changed_outside": int(outside.sum())})
        steps.progress(len(MASK_EDIT_VARIANTS), len(MASK_EDIT_VARIANTS), "done")
        return MaskEditOut.model_validate({
            "kind": "mask_edit", "model": model.spec.id, "mask_id": spec.mask_id, "prompt": spec.prompt,
            "target": spec.target, "steps": spec.steps, "lr": spec.lr, "seed": spec.seed,
            "locality_prompts": locality, "rows": rows}).model_dump()

    return executor.stored(store, "mask_edit", spec.request(settings), lambda: executor.run(compute))


def mask_overlap(spec: MaskOverlapSpec, executor: Executor, store: Any) -> dict:
    """The overlap matrix of stored masks (same model and layout) beside random masks of the same
    densities; computed, not stored (cheap)."""
    from kcircuits.circuits import masks as M

    settings = executor.settings
    spec.check(settings)
    records = [stored_mask(store, mid, f"mask_ids[{i}]") for i, mid in enumerate(spec.mask_ids)]

    def compute(model: Any, _: Steps) -> dict:
        pairs = [_mask_on(model, r) for r in records]
        lay = pairs[0][0]
        masks = {r["id"]: m for r, (_, m) in zip(records, pairs, strict=True)}
        densities = [M.density(m, lay) for m in masks.values()]
        randoms = {f"random{i}": M.random_mask(lay, d, seed=spec.seed + i) for i, d in enumerate(densities)}
        return MaskOverlapOut.model_validate({
            "model": model.spec.id, "mask_ids": list(masks), "labels": [r["task"]["name"] for r in records],
            "densities": densities, "matrix": M.overlap_matrix(masks, lay)["matrix"],
            "random_matrix": M.overlap_matrix(randoms, lay)["matrix"], "seed": spec.seed}).model_dump()

    return executor.run(compute)


def mask_components(spec: MaskComponentsSpec, store: Any) -> dict:
    """A stored mask's per-head / per-MLP densities, each marked in or out of a stored edge
    circuit (its in-circuit head and MLP nodes), with mean densities inside and outside."""
    from kcircuits.errors import BadRequest

    record = stored_mask(store, spec.mask_id)
    circuit = stored_circuit(store, spec.circuit_id)
    if not isinstance(circuit.get("nodes"), list):
        raise BadRequest(f"circuit_id: result {spec.circuit_id[:12]} is not an edge circuit")
    if circuit.get("model") != record["model"]:
        raise BadRequest(f"circuit_id: the circuit is of {circuit.get('model')!r}, the mask of {record['model']!r}")
    nodes = {n["id"] for n in circuit["nodes"] if n.get("in_circuit") and n.get("kind") in ("head", "mlp")}
    components = [{**c, "in_circuit": c["id"] in nodes if c["kind"] in ("head", "mlp") else None}
                  for c in record["components"]]
    summary = {}
    for kind in ("head", "mlp"):
        inside = [c["density"] for c in components if c["kind"] == kind and c["in_circuit"]]
        outside = [c["density"] for c in components if c["kind"] == kind and not c["in_circuit"]]
        summary[kind] = {"n_in_circuit": len(inside), "n_outside": len(outside),
                         "mean_density_in_circuit": sum(inside) / len(inside) if inside else None,
                         "mean_density_outside": sum(outside) / len(outside) if outside else None}
    return MaskComponentsOut.model_validate({
        "mask_id": spec.mask_id, "circuit_id": spec.circuit_id, "model": record["model"],
        "mask_density": record["density"], "circuit_nodes": sorted(nodes), "components": components,
        "summary": summary}).model_dump()

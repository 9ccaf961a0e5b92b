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
    NeuronEditSpec,
    NeuronsCompareSpec,
    NeuronsSpec,
    NodeDetailSpec,
    ProjectSpec,
    RelationSpec,
    SweepSpec,
)
from kcircuits.services.wire import HeadRoleOut, RolesOut, TopTokenOut

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

"""One call from a prompt to a circuit in the wire format (docs: common circuit result).

:func:`prepare` resolves tokens, target, subject, corrupted input, ablation values and metric;
:func:`build_result` turns scores and a circuit mask into the result dict (also used by ACDC);
:func:`compute_circuit` runs attribution (eap, eap-ig, clean-corrupted, exact), selection,
evaluation and head roles.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from kcircuits.circuits.attribution import ABLATIONS, METHODS, ablated_outputs_for, attribute
from kcircuits.circuits.corrupt import auto_corrupt
from kcircuits.circuits.evaluate import evaluate_circuit
from kcircuits.circuits.graph import Graph, get_graph
from kcircuits.circuits.metrics import METRICS, Metric, make_metric
from kcircuits.circuits.patching import check_supported, sender_outputs
from kcircuits.circuits.select import circuit_nodes, select
from kcircuits.errors import BadRequest

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
#: Default circuit size when neither top_n nor threshold is given: 1% of the edges (at least 10).
DEFAULT_EDGE_FRACTION = 0.01
#: Circuit sizes (top-n edges) of a sweep when none are given.
DEFAULT_SWEEP_SIZES = (10, 30, 100, 300, 1000, 3000)


def default_top_n(graph: Graph) -> int:
    return min(graph.n_edges, max(10, math.ceil(DEFAULT_EDGE_FRACTION * graph.n_edges)))


@dataclass
class CircuitSetup:
    """Everything a discovery method needs for one prompt (tensors on the model's device)."""

    graph: Graph
    prompt: str
    target: str
    target_id: int
    tokens: torch.Tensor  # [1, pos]
    subject: str | None
    subject_positions: list[int]
    ablation: str
    corrupt_prompt: str | None
    ablated: torch.Tensor  # [1|b, 1|pos, n_s, d]
    clean_outputs: torch.Tensor  # [1, pos, n_s, d]
    clean_logits: torch.Tensor  # [1, pos, V]
    metric: Metric
    foil_id: int | None
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def target_ids(self) -> torch.Tensor:
        return torch.tensor([self.target_id], device=self.tokens.device)


def _top_other(logits: torch.Tensor, target_id: int) -> int:
    """The best token at the last position other than the target."""
    row = logits[0, -1].float().clone()
    row[target_id] = float("-inf")
    return int(row.argmax())


def prepare(model: Any, prompt: str, target: str, *, ablation: str = "patch", metric: str = "logit_diff",
            corrupt_prompt: str | None = None, subject: str | None = None, kv_mode: str = "grouped",
            foil: str | None = None) -> CircuitSetup:
    """Validate the request and compute clean/ablated sender outputs and the metric."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise BadRequest("prompt must be a non-empty string")
    if not isinstance(target, str) or not target.strip():
        raise BadRequest("target must be a non-empty string (e.g. ' Paris', with its leading space)")
    if ablation not in ABLATIONS:
        raise BadRequest(f"unknown ablation {ablation!r}; choose one of {list(ABLATIONS)}")
    if metric not in METRICS:
        raise BadRequest(f"unknown metric {metric!r}; choose one of {list(METRICS)}")
    if corrupt_prompt is not None and ablation != "patch":
        raise BadRequest("a corrupted prompt is only used with ablation='patch'")
    graph = get_graph(model.arch, kv_mode)
    check_supported(graph)
    from kcircuits.circuits.subject import resolve_subject

    tokens = model.tokenize(prompt)
    target_id = model.first_token_id(target)
    subject_text, positions, auto = resolve_subject(model, prompt, subject)
    notes: dict[str, Any] = {"subject_auto": auto}
    if ablation == "patch" and corrupt_prompt is None:
        found = auto_corrupt(model, prompt, subject_text, target_id) if subject_text else None
        if found is None:
            notes.update(ablation_requested="patch", corrupt_source="none found: zero ablation instead")
            ablation = "zero"
        else:
            corrupt_prompt = found.prompt
            notes.update(corrupt_source=f"auto ({found.how})", corrupt_subject=found.subject,
                         corrupt_relation=found.relation)
    elif corrupt_prompt is not None:
        notes["corrupt_source"] = "given"
    clean_outputs, clean_logits = sender_outputs(model, tokens, graph, return_logits=True)
    corrupt_logits = None
    if ablation == "patch":
        corrupt_tokens = model.tokenize(corrupt_prompt)
        if corrupt_tokens.shape != tokens.shape:
            raise BadRequest(f"the corrupted prompt has {corrupt_tokens.shape[1]} tokens and the prompt "
                             f"{tokens.shape[1]}: they must be equal (positions are patched one to one)")
        ablated, corrupt_logits = sender_outputs(model, corrupt_tokens, graph, return_logits=True)
    else:
        ablated = ablated_outputs_for(model, tokens, graph, ablation, clean_outputs=clean_outputs)
    foil_id = None
    if metric == "logit_diff":
        if foil is not None:
            foil_id = model.first_token_id(foil)
        elif corrupt_logits is not None and int(corrupt_logits[0, -1].argmax()) != target_id:
            foil_id = int(corrupt_logits[0, -1].argmax())
        else:
            foil_id = _top_other(clean_logits, target_id)
        if foil_id == target_id:
            raise BadRequest("the foil token equals the target token")
    metric_obj = make_metric(metric, [target_id], foil_ids=None if foil_id is None else [foil_id],
                             clean_logits=clean_logits)
    return CircuitSetup(graph, prompt, target, target_id, tokens, subject_text, positions, ablation, corrupt_prompt,
                        ablated, clean_outputs, clean_logits, metric_obj, foil_id, notes)


def _edges_out(graph: Graph, scores: torch.Tensor, mask: torch.Tensor, limit: int) -> list[dict]:
    """The top ``limit`` edges by |score| plus every circuit edge, sorted by |score|."""
    allowed = graph.allowed(scores.device)
    mag = scores.abs().float().masked_fill(~allowed, float("-inf")).flatten()
    k = min(limit, graph.n_edges)
    chosen = torch.zeros_like(mag, dtype=torch.bool)
    if k:
        chosen[torch.topk(mag, k).indices] = True
    chosen |= mask.flatten().to(chosen.device)
    idx = torch.nonzero(chosen).flatten()
    idx = idx[torch.argsort(mag[idx], descending=True)]
    flat_scores, flat_mask = scores.flatten()[idx].tolist(), mask.flatten()[idx.to(mask.device)].tolist()
    n_r = graph.n_receivers
    out = []
    for i, sc, inc in zip(idx.tolist(), flat_scores, flat_mask, strict=True):
        rec = graph.edge_record(i // n_r, i % n_r)
        rec.update(score=float(sc), in_circuit=bool(inc))
        out.append(rec)
    return out


def _node_scores(graph: Graph, scores: torch.Tensor) -> list[float]:
    """Node importance: sum of |score| over its out-edges (logits: over its in-edges)."""
    mag = scores.abs().float() * graph.allowed(scores.device)
    per_sender = mag.sum(1).tolist()
    return per_sender + [float(mag[:, graph.receiver_index["logits"]].sum())]


def _head_roles(model: Any, setup: CircuitSetup, head_ids: list[str]) -> dict[str, dict]:
    try:
        from kcircuits.circuits.heads import classify_heads
    except ImportError:  # head roles are optional
        return {}
    if not head_ids:
        return {}
    roles = classify_heads(model, setup.tokens, setup.subject_positions, setup.target_id, head_ids)
    keep = ("role", "subject_attention", "relation_attention", "subject_dla_share", "relation_dla_share", "top_tokens")
    return {hid: {k: info.get(k) for k in keep} for hid, info in roles.items()}


def build_result(model: Any, setup: CircuitSetup, scores: torch.Tensor, mask: torch.Tensor, method: str,
                 params: dict[str, Any], *, timings: dict[str, float] | None = None, max_edges_returned: int = 3000,
                 random_seeds: int = 3, with_heads: bool = True) -> dict:
    """The wire-format circuit result for a circuit ``mask`` [n_s, n_r] with edge ``scores``."""
    graph = setup.graph
    t0 = time.perf_counter()
    metrics = evaluate_circuit(model, setup.tokens, graph, mask, setup.ablated, setup.metric, setup.target_ids,
                               random_seeds=random_seeds)
    t_eval = time.perf_counter() - t0
    in_nodes = circuit_nodes(mask, graph).tolist()
    heads_in = [graph.node_ids[i] for i, inc in enumerate(in_nodes) if inc and graph.nodes[i]["kind"] == "head"]
    t1 = time.perf_counter()
    heads = _head_roles(model, setup, heads_in) if with_heads else {}
    t_heads = time.perf_counter() - t1
    node_scores = _node_scores(graph, scores)
    nodes = [{**node, "role": heads.get(node["id"], {}).get("role"), "score": node_scores[i], "in_circuit": in_nodes[i]}
             for i, node in enumerate(graph.nodes)]
    timings = dict(timings or {})
    timings.update(evaluation_s=t_eval, heads_s=t_heads)
    timings["total_s"] = timings.get("total_s", 0.0) + t_eval + t_heads
    return {
        "schema_version": SCHEMA_VERSION, "kind": "circuit",
        "model": model.spec.id, "revision": model.revision, "prompt": setup.prompt, "target": setup.target,
        "target_id": setup.target_id, "tokens": model.token_strings(setup.tokens),
        "subject": {"text": setup.subject, "positions": setup.subject_positions} if setup.subject else None,
        "method": method, "ablation": setup.ablation, "metric": setup.metric.name,
        "corrupt_prompt": setup.corrupt_prompt,
        "params": {**params, "foil_id": setup.foil_id,
                   "foil": model.token_strings([setup.foil_id])[0] if setup.foil_id is not None else None,
                   "metric_higher_is_better": setup.metric.higher_is_better, **setup.notes},
        "graph": {k: v for k, v in graph.stats().items() if k not in ("n_senders", "n_receivers")},
        "nodes": nodes,
        "edges": _edges_out(graph, scores, mask, max_edges_returned),
        "metrics": {k: v for k, v in metrics.items() if k not in ("random_edges", "random_faithfulness")},
        "random": {"edges": metrics["random_edges"], "faithfulness": metrics["random_faithfulness"]},
        "heads": heads,
        "timings": timings,
    }


def compute_circuit(model: Any, prompt: str, target: str, method: str = "eap", ablation: str = "patch",
                    metric: str = "logit_diff", corrupt_prompt: str | None = None, subject: str | None = None,
                    top_n: int | None = None, threshold: float | None = None, ig_steps: int = 5,
                    kv_mode: str = "grouped", max_edges_returned: int = 3000, random_seeds: int = 3,
                    with_heads: bool = True, greedy: bool = False, foil: str | None = None) -> dict:
    """Discover, select and evaluate the circuit of ``prompt`` -> ``target`` (wire format dict)."""
    if method == "acdc":
        raise BadRequest("acdc runs one forward per edge: start it as a background job")
    if method not in METHODS:
        raise BadRequest(f"unknown method {method!r}; choose one of {list(METHODS)} (or acdc as a job)")
    if not 1 <= ig_steps <= 64:
        raise BadRequest("ig_steps must lie in 1..64")
    if random_seeds < 0 or random_seeds > 20:
        raise BadRequest("random_seeds must lie in 0..20")
    if max_edges_returned < 0:
        raise BadRequest("max_edges_returned must be >= 0")
    start = time.perf_counter()
    setup = prepare(model, prompt, target, ablation=ablation, metric=metric, corrupt_prompt=corrupt_prompt,
                    subject=subject, kv_mode=kv_mode, foil=foil)
    graph = setup.graph
    if top_n is not None and not 0 <= top_n <= graph.n_edges:
        raise BadRequest(f"top_n must lie in 0..{graph.n_edges} (the graph's edge count)")
    t0 = time.perf_counter()
    scores = attribute(model, setup.tokens, graph, setup.metric, setup.ablated, method, ig_steps=ig_steps,
                       clean_outputs=setup.clean_outputs)
    t_attr = time.perf_counter() - t0
    if top_n is None and threshold is None:
        top_n = default_top_n(graph)
    mask = select(scores, graph, top_n=top_n, threshold=threshold, greedy=greedy)
    params = {"selection": "threshold" if threshold is not None else ("greedy" if greedy else "top_n"),
              "top_n": top_n, "threshold": threshold, "greedy": greedy, "ig_steps": ig_steps if method == "eap-ig" else None,
              "kv_mode": kv_mode, "max_edges_returned": max_edges_returned, "random_seeds": random_seeds,
              "score_meaning": "first-order estimate of metric(edge ablated) - metric(clean)"}
    timings = {"attribution_s": t_attr, "total_s": time.perf_counter() - start}
    return build_result(model, setup, scores, mask, method, params, timings=timings,
                        max_edges_returned=max_edges_returned, random_seeds=random_seeds, with_heads=with_heads)


def sweep_circuit(model: Any, prompt: str, target: str, method: str = "eap", ablation: str = "patch",
                  metric: str = "logit_diff", corrupt_prompt: str | None = None, subject: str | None = None,
                  sizes: list[int] | None = None, ig_steps: int = 5, kv_mode: str = "grouped",
                  progress: Any = None) -> dict:
    """Circuit size vs faithfulness and Hit@10: attribute once, then evaluate top-n circuits.

    Returns ``{"rows": [{top_n, edges, edge_fraction, faithfulness, hit_at_10, target_rank}], ...}``
    with one row per size (sizes above the graph's edge count are clipped to it).
    """
    from kcircuits.circuits.evaluate import sweep

    if method not in METHODS:
        raise BadRequest(f"unknown method {method!r} for a sweep; choose one of {list(METHODS)}")
    sizes = sorted(set(sizes or DEFAULT_SWEEP_SIZES))
    if not sizes or sizes[0] < 0 or len(sizes) > 50:
        raise BadRequest("sizes must be 1..50 non-negative edge counts")
    start = time.perf_counter()
    report = progress or (lambda done, total, message="": None)
    setup = prepare(model, prompt, target, ablation=ablation, metric=metric, corrupt_prompt=corrupt_prompt,
                    subject=subject, kv_mode=kv_mode)
    graph = setup.graph
    report(0, 2, "attributing edges")
    scores = attribute(model, setup.tokens, graph, setup.metric, setup.ablated, method, ig_steps=ig_steps,
                       clean_outputs=setup.clean_outputs)
    report(1, 2, f"evaluating {len(sizes)} circuit sizes")
    rows = sweep(model, setup.tokens, graph, scores, setup.ablated, setup.metric, setup.target_ids,
                 [min(n, graph.n_edges) for n in sizes])
    report(2, 2, "done")
    return {
        "schema_version": SCHEMA_VERSION, "kind": "sweep", "model": model.spec.id, "revision": model.revision,
        "prompt": prompt, "target": target, "method": method, "ablation": setup.ablation,
        "metric": setup.metric.name, "corrupt_prompt": setup.corrupt_prompt,
        "graph": {k: v for k, v in graph.stats().items() if k not in ("n_senders", "n_receivers")},
        "params": {"ig_steps": ig_steps if method == "eap-ig" else None, "kv_mode": kv_mode, **setup.notes},
        "rows": rows, "timings": {"total_s": time.perf_counter() - start},
    }

"""One call from a prompt to a circuit result (a JSON-able dict).

:func:`prepare` resolves tokens, target, subject, the counterfactual input (or zero / mean
ablation values) and the metric; :func:`build_result` turns scores and a circuit mask into the
result (also used by ACDC); :func:`compute_circuit` runs attribution, selection, the faithfulness
curve over sizes and head roles.

Methods: ``eap``, ``eap-ig``, ``eap-ig-mask``, ``clean-corrupted``, ``exact`` (one attribution pass,
then top-n / threshold / greedy selection), and ``eap-ig-refine`` (the default): EAP-IG, then
re-attribution inside shrinking circuits and a calibration of each size by real patched runs
(:mod:`kcircuits.circuits.refine`).

Every result carries its faithfulness curve: the circuit of each size in ``CURVE_FRACTIONS`` (and
the requested size), with faithfulness (or why it is undefined), Hit@10, the target's rank and a
random connected circuit of the same size, plus MIB's CPR and CMD over the curve.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from kcircuits.circuits.attribution import ABLATIONS, METHODS, ablated_outputs_for, attribute, freezes_norms
from kcircuits.circuits.counterfactual import CounterfactualChoice, candidate_for_prompt, find_counterfactuals
from kcircuits.circuits.evaluate import HIT_K, Normaliser, area_summaries, evaluate_masks, random_circuit
from kcircuits.circuits.graph import Graph, get_graph
from kcircuits.circuits.heads import annotate_circuit_roles
from kcircuits.circuits.metrics import METRICS, Metric, make_metric
from kcircuits.circuits.patching import check_supported, sender_outputs
from kcircuits.circuits.refine import batch_rescore, refine_and_calibrate
from kcircuits.circuits.select import circuit_nodes, select
from kcircuits.errors import BadRequest, CancelFn
from kcircuits.store.ids import SCHEMA_VERSION

if TYPE_CHECKING:
    from kcircuits.lm.loader import LoadedModel

log = logging.getLogger(__name__)

#: Default circuit size when neither top_n nor threshold is given: 1% of the edges (at least 10).
DEFAULT_EDGE_FRACTION = 0.01
#: Circuit sizes (top-n edges) of a sweep when none are given.
DEFAULT_SWEEP_SIZES = (10, 30, 100, 300, 1000, 3000)
#: The fidelity-grade method (see the module doc).
REFINE_METHOD = "eap-ig-refine"
DEFAULT_METHOD = REFINE_METHOD
DISCOVERY_METHODS = (*METHODS, REFINE_METHOD)
#: Sizes (fractions of the graph's edges) of every result's faithfulness curve: MIB's up to 10%.
CURVE_FRACTIONS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1)
#: The metric used when none is given: logit difference against the counterfactual's answer
#: under patching; MatchNLL (the Knowledge Circuits paper's) under zero and mean ablation.
DEFAULT_METRIC = {"patch": "logit_diff", "zero": "match_nll", "mean": "match_nll"}
MAX_COUNTERFACTUALS = 8

ProgressFn = Callable[[int, int, str], None]


def default_top_n(graph: Graph) -> int:
    return min(graph.n_edges, max(10, math.ceil(DEFAULT_EDGE_FRACTION * graph.n_edges)))


def curve_sizes(graph: Graph, fractions: Sequence[float] = CURVE_FRACTIONS) -> list[int]:
    """Edge counts of the curve's circuits (each at least 1, at most the graph)."""
    return sorted({min(graph.n_edges, max(1, round(f * graph.n_edges))) for f in fractions})


@dataclass
class CircuitSetup:
    """Everything a discovery method needs for one prompt (tensors on the model's device).

    With k counterfactuals the clean prompt is repeated k times: ``tokens`` [k, pos], ``ablated``
    [k, pos, n_s, d] (one counterfactual per row), ``foil_ids`` [k]; zero / mean ablation: k = 1.
    """

    graph: Graph
    prompt: str
    target: str
    target_id: int
    tokens: torch.Tensor  # [k, pos]
    subject: str | None
    subject_positions: list[int]
    ablation: str
    corrupt_prompts: list[str]
    ablated: torch.Tensor  # [1|k, 1|pos, n_s, d]
    clean_outputs: torch.Tensor  # [k, pos, n_s, d]
    clean_logits: torch.Tensor  # [k, pos, V]
    metric: Metric
    foil_ids: list[int] | None
    counterfactual: CounterfactualChoice | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def target_ids(self) -> torch.Tensor:
        return torch.full((self.tokens.shape[0],), self.target_id, device=self.tokens.device, dtype=torch.long)

    @property
    def corrupt_prompt(self) -> str | None:
        return self.corrupt_prompts[0] if self.corrupt_prompts else None

    @property
    def foil_id(self) -> int | None:
        return self.foil_ids[0] if self.foil_ids else None


def _top_other(logits: torch.Tensor, target_id: int) -> int:
    """The best token at the last position other than the target."""
    row = logits[0, -1].float().clone()
    row[target_id] = float("-inf")
    return int(row.argmax())


def _counterfactual_record(model: LoadedModel, choice: CounterfactualChoice, limit: int = 8) -> dict[str, Any]:
    def one(c) -> dict[str, Any]:
        return {"prompt": c.prompt, "subject": c.subject, "relation": c.relation, "foil": c.foil, "foil_id": c.foil_id,
                "foil_prob": c.foil_prob, "target_prob": c.target_prob, "margin": c.margin, "kind": c.kind,
                "own_object": c.own_object, "why": c.why()}

    return {"source": choice.source, "relation": choice.relation, "subject": choice.subject, "reason": choice.reason,
            "chosen": [one(c) for c in choice.chosen], "candidates": [one(c) for c in choice.candidates[:limit]]}


def prepare(model: LoadedModel, prompt: str, target: str, *, ablation: str = "patch", metric: str | None = None,
            corrupt_prompt: str | None = None, subject: str | None = None, kv_mode: str = "grouped",
            foil: str | None = None, counterfactuals: int = 1) -> CircuitSetup:
    """Validate the request and compute clean/ablated sender outputs and the metric.

    Patching without a ``corrupt_prompt`` picks ``counterfactuals`` prompts by
    :func:`kcircuits.circuits.counterfactual.find_counterfactuals`; when there is none, zero
    ablation is used instead and ``notes`` say so. A given ``corrupt_prompt`` gets the model's
    answer on it as the foil (unless ``foil`` is given).
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise BadRequest("prompt must be a non-empty string")
    if not isinstance(target, str) or not target.strip():
        raise BadRequest("target must be a non-empty string (e.g. ' Paris', with its leading space)")
    if ablation not in ABLATIONS:
        raise BadRequest(f"unknown ablation {ablation!r}; choose one of {list(ABLATIONS)}")
    metric = metric or DEFAULT_METRIC[ablation]
    if metric not in METRICS:
        raise BadRequest(f"unknown metric {metric!r}; choose one of {list(METRICS)}")
    if corrupt_prompt is not None and ablation != "patch":
        raise BadRequest("a corrupted prompt is only used with ablation='patch'")
    if not 1 <= counterfactuals <= MAX_COUNTERFACTUALS:
        raise BadRequest(f"counterfactuals must lie in 1..{MAX_COUNTERFACTUALS}")
    graph = get_graph(model.arch, kv_mode)
    check_supported(graph)
    from kcircuits.circuits.subject import resolve_subject

    tokens = model.tokenize(prompt)
    target_id = model.first_token_id(target)
    subject_text, positions, auto = resolve_subject(model, prompt, subject)
    notes: dict[str, Any] = {"subject_auto": auto}
    choice: CounterfactualChoice | None = None
    corrupt_prompts: list[str] = []
    foil_ids: list[int] | None = None
    if ablation == "patch" and corrupt_prompt is None:
        choice = find_counterfactuals(model, prompt, subject_text, target_id, k=counterfactuals) if subject_text else None
        if choice is None:
            notes.update(ablation_requested="patch",
                         corrupt_source="none found: zero ablation instead (no subject swap keeps the token "
                                        "positions and gives another answer of the same kind)")
            ablation = "zero"
            if metric == "logit_diff" and foil is None:
                metric = DEFAULT_METRIC["zero"]
                notes["metric_requested"] = "logit_diff"
        else:
            corrupt_prompts = [c.prompt for c in choice.chosen]
            foil_ids = [c.foil_id for c in choice.chosen]
            notes.update(corrupt_source=f"auto ({choice.source})", corrupt_subject=choice.chosen[0].subject,
                         corrupt_relation=choice.chosen[0].relation, counterfactual_reason=choice.reason)
    elif corrupt_prompt is not None:
        corrupt_prompts = [corrupt_prompt]
        notes["corrupt_source"] = "given"
    clean_outputs, clean_logits = sender_outputs(model, tokens, graph, return_logits=True)
    k = max(1, len(corrupt_prompts)) if ablation == "patch" else 1
    if ablation == "patch":
        corrupt_tokens = torch.cat([model.tokenize(p) for p in corrupt_prompts])
        if corrupt_tokens.shape[1] != tokens.shape[1]:
            raise BadRequest(f"the corrupted prompt has {corrupt_tokens.shape[1]} tokens and the prompt "
                             f"{tokens.shape[1]}: they must be equal (positions are patched one to one)")
        ablated = sender_outputs(model, corrupt_tokens, graph)
        if foil_ids is None and metric == "logit_diff" and foil is None:
            foil_ids = [candidate_for_prompt(model, prompt, corrupt_prompts[0], target_id)[0]]
    else:
        ablated = ablated_outputs_for(model, tokens, graph, ablation, clean_outputs=clean_outputs)
    if metric == "logit_diff":
        if foil is not None:
            foil_ids = [model.first_token_id(foil)] * k
        elif foil_ids is None:
            foil_ids = [_top_other(clean_logits, target_id)]
        if target_id in foil_ids:
            raise BadRequest("the foil token equals the target token")
    else:
        foil_ids = None
    tokens_k, clean_k, logits_k = tokens.repeat(k, 1), clean_outputs.repeat(k, 1, 1, 1), clean_logits.repeat(k, 1, 1)
    metric_obj = make_metric(metric, [target_id] * k, foil_ids=foil_ids, clean_logits=logits_k)
    return CircuitSetup(graph, prompt, target, target_id, tokens_k, subject_text, positions, ablation, corrupt_prompts,
                        ablated, clean_k, logits_k, metric_obj, foil_ids, choice, notes)


def _edges_out(graph: Graph, scores: torch.Tensor, mask: torch.Tensor, limit: int,
               point_masks: Sequence[torch.Tensor] = ()) -> list[dict]:
    """The top ``limit`` edges by |score| plus every circuit edge, sorted by |score|. With
    ``point_masks`` each edge lists the indices of the curve points whose circuits hold it."""
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
    member = [p.flatten().to(idx.device)[idx].tolist() for p in point_masks]
    n_r = graph.n_receivers
    out = []
    for j, (i, sc, inc) in enumerate(zip(idx.tolist(), flat_scores, flat_mask, strict=True)):
        rec = graph.edge_record(i // n_r, i % n_r)
        rec.update(score=float(sc), in_circuit=bool(inc))
        if point_masks:
            rec["curve_points"] = [p for p, m in enumerate(member) if m[j]]
        out.append(rec)
    return out


def _node_scores(graph: Graph, scores: torch.Tensor) -> list[float]:
    """Node importance: sum of |score| over its out-edges (logits: over its in-edges)."""
    mag = scores.abs().float() * graph.allowed(scores.device)
    per_sender = mag.sum(1).tolist()
    return per_sender + [float(mag[:, graph.receiver_index["logits"]].sum())]


@dataclass(frozen=True)
class CurvePoint:
    """One circuit size of the faithfulness curve (its random baseline alongside)."""

    edges: int
    mask: torch.Tensor  # [n_s, n_r] bool
    metric_value: float
    ranks: list[int]  # [k] 1-based target rank per prompt row
    harmful_share: float | None = None  # eap-ig-refine's calibration
    random_values: tuple[float, ...] = ()
    random_ranks: tuple[list[int], ...] = ()
    random_edges: tuple[int, ...] = ()
    size: int | None = None  # the size asked for (selection may keep fewer edges: no dangling ones)


class _Runner:
    """Batched circuit runs for one setup, counting the masks it ran."""

    def __init__(self, model: LoadedModel, setup: CircuitSetup):
        self.model, self.setup, self.masks_run = model, setup, 0

    def __call__(self, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """masks [M, n_s, n_r] -> (metric [M], ranks [M, k])."""
        s = self.setup
        self.masks_run += masks.shape[0]
        return evaluate_masks(self.model, s.tokens, s.graph, masks.to(self.model.device), s.ablated, s.metric,
                              s.target_ids)


@dataclass(frozen=True)
class Reference:
    """The full and the empty circuit of a setup: the faithfulness normaliser and their target
    ranks [2, k] (row 0 full, row 1 empty)."""

    normaliser: Normaliser
    ranks: torch.Tensor


def _reference(run: _Runner, setup: CircuitSetup) -> Reference:
    graph, dev = setup.graph, setup.tokens.device
    values, ranks = run(torch.stack([graph.full_mask(dev), graph.empty_mask(dev)]))
    return Reference(Normaliser.of(setup.metric, float(values[0]), float(values[1])), ranks)


def _curve(model: LoadedModel, setup: CircuitSetup, run: _Runner, normaliser: Normaliser, sizes: list[int],
           masks: list[torch.Tensor], shares: Sequence[float | None], values: Sequence[float] | None,
           random_seeds: dict[int, int], seed0: int = 0) -> list[CurvePoint]:
    """Curve points for circuits ``masks`` (one per size); runs the circuits whose metric is not yet
    known and ``random_seeds[size]`` random circuits of each size, in one batch."""
    graph, dev = setup.graph, model.device
    randoms = {i: [random_circuit(graph, int(m.sum()), seed0 + j, dev) for j in range(random_seeds.get(n, 1))]
               for i, (n, m) in enumerate(zip(sizes, masks, strict=True)) if int(m.sum())}
    batch = [m.to(dev) for m in masks] + [r for i in sorted(randoms) for r in randoms[i]]
    vals, ranks = run(torch.stack(batch))
    points, offset = [], len(masks)
    for i, (n, mask, share) in enumerate(zip(sizes, masks, shares, strict=True)):
        rs = randoms.get(i, [])
        r_vals = tuple(float(v) for v in vals[offset:offset + len(rs)])
        r_ranks = tuple(ranks[offset + j].tolist() for j in range(len(rs)))
        offset += len(rs)
        points.append(CurvePoint(int(mask.sum()), mask, float(vals[i]) if values is None else float(values[i]),
                                 ranks[i].tolist(), share, r_vals, r_ranks, tuple(int(r.sum()) for r in rs), n))
    return points


def _hit(ranks: Sequence[int]) -> float:
    return sum(r <= HIT_K for r in ranks) / len(ranks) if ranks else 0.0


def _point_record(graph: Graph, normaliser: Normaliser, p: CurvePoint, requested: bool) -> dict[str, Any]:
    random_faith = [normaliser(v) for v in p.random_values]
    defined = [f for f in random_faith if f is not None]
    return {"edges": p.edges, "size": p.size, "edge_fraction": p.edges / graph.n_edges, "requested": requested,
            "faithfulness": normaliser(p.metric_value), "metric": p.metric_value, "hit_at_10": _hit(p.ranks),
            "target_rank": p.ranks[0], "harmful_share": p.harmful_share,
            "random": {"edges": list(p.random_edges), "faithfulness": random_faith,
                       "faithfulness_mean": sum(defined) / len(defined) if defined else None,
                       "hit_at_10": (sum(_hit(r) for r in p.random_ranks) / len(p.random_ranks)
                                     if p.random_ranks else None)}}


def build_result(model: LoadedModel, setup: CircuitSetup, scores: torch.Tensor, mask: torch.Tensor, method: str,
                 params: dict[str, Any], *, timings: dict[str, float] | None = None, max_edges_returned: int = 3000,
                 random_seeds: int = 3, with_heads: bool = True, points: list[CurvePoint] | None = None,
                 reference: Reference | None = None, run: _Runner | None = None) -> dict:
    """The circuit result for a circuit ``mask`` [n_s, n_r] with edge ``scores`` [n_s, n_r].

    ``points``: the faithfulness curve (the requested circuit among them, or it is added); without
    them the curve holds the requested circuit alone (ACDC's single threshold)."""
    graph = setup.graph
    t0 = time.perf_counter()
    run = run or _Runner(model, setup)
    ref = reference or _reference(run, setup)
    normaliser = ref.normaliser
    mask = mask.to(model.device)
    points = list(points or [])
    if not any(torch.equal(p.mask.to(mask.device), mask) for p in points):
        points += _curve(model, setup, run, normaliser, [int(mask.sum())], [mask], [None], None,
                         {int(mask.sum()): random_seeds})
    points.sort(key=lambda p: p.edges)
    chosen = next(p for p in points if torch.equal(p.mask.to(mask.device), mask))
    full_ranks = ref.ranks
    t_eval = time.perf_counter() - t0
    in_nodes = circuit_nodes(mask, graph).tolist()
    heads_in = [graph.node_ids[i] for i, inc in enumerate(in_nodes) if inc and graph.nodes[i]["kind"] == "head"]
    node_scores = _node_scores(graph, scores)
    nodes = [{**node, "role": None, "score": node_scores[i], "in_circuit": in_nodes[i]}
             for i, node in enumerate(graph.nodes)]
    timings = dict(timings or {})
    timings.update(evaluation_s=timings.get("evaluation_s", 0.0) + t_eval)
    timings["total_s"] = timings.get("total_s", 0.0) + t_eval
    curve_rows = [_point_record(graph, normaliser, p, p is chosen) for p in points]
    summaries = area_summaries([r["edges"] for r in curve_rows], [r["faithfulness"] for r in curve_rows])
    faith = normaliser(chosen.metric_value)
    n_nodes = int(sum(in_nodes))
    random_row = _point_record(graph, normaliser, chosen, True)["random"]
    one = setup.tokens.shape[0] == 1
    metrics = {
        "edges": chosen.edges, "nodes": n_nodes, "edge_fraction": chosen.edges / graph.n_edges,
        "node_fraction": n_nodes / graph.n_nodes, "faithfulness": faith,
        "faithfulness_undefined": normaliser.undefined_reason,
        "metric_full": normaliser.m_full, "metric_circuit": chosen.metric_value, "metric_empty": normaliser.m_empty,
        "hit_at_10": {"full": _hit(full_ranks[0].tolist()), "circuit": _hit(chosen.ranks),
                      "random": random_row["hit_at_10"]},
        "target_rank": {"full": int(full_ranks[0, 0]), "circuit": chosen.ranks[0], "empty": int(full_ranks[1, 0]),
                        "random": [r[0] for r in chosen.random_ranks]},
        "harmful_share": chosen.harmful_share,
    }
    if one:  # a single prompt: hits are 0 or 1
        metrics["hit_at_10"].update(full=int(metrics["hit_at_10"]["full"]), circuit=int(metrics["hit_at_10"]["circuit"]))
    result = {
        "schema_version": SCHEMA_VERSION, "kind": "circuit",
        "model": model.spec.id, "revision": model.revision, "prompt": setup.prompt, "target": setup.target,
        "target_id": setup.target_id, "tokens": model.token_strings(setup.tokens[0]),
        "subject": {"text": setup.subject, "positions": setup.subject_positions} if setup.subject else None,
        "method": method, "ablation": setup.ablation, "metric": setup.metric.name,
        "corrupt_prompt": setup.corrupt_prompt, "corrupt_prompts": setup.corrupt_prompts,
        "counterfactual": (_counterfactual_record(model, setup.counterfactual) if setup.counterfactual else None),
        "params": {**params, "foil_id": setup.foil_id,
                   "foil": model.token_strings([setup.foil_id])[0] if setup.foil_id is not None else None,
                   "foils": model.token_strings(setup.foil_ids) if setup.foil_ids else None,
                   "metric_higher_is_better": setup.metric.higher_is_better,
                   "faithfulness_min_signal": normaliser.min_signal, **setup.notes},
        "graph": {**{k: v for k, v in graph.stats().items() if k not in ("n_senders", "n_receivers")},
                  "shared_receivers": graph.shared_receivers},
        "nodes": nodes,
        "edges": _edges_out(graph, scores, mask, max_edges_returned, [p.mask for p in points]),
        "metrics": metrics,
        "random": {"edges": random_row["edges"], "faithfulness": random_row["faithfulness"]},
        "curve": {"points": curve_rows, **summaries, "faithfulness_undefined": normaliser.undefined_reason},
        "heads": {},
        "timings": timings,
    }
    if with_heads and heads_in:  # roles with significance among the circuit's heads (circuits.heads)
        t1 = time.perf_counter()
        annotate_circuit_roles(model, result)
        timings["heads_s"] = time.perf_counter() - t1
        timings["total_s"] += timings["heads_s"]
    return result


def _check_request(method: str, ig_steps: int, random_seeds: int, max_edges_returned: int) -> None:
    if method == "acdc":
        raise BadRequest("acdc runs one forward per edge: start it as a background job")
    if method not in DISCOVERY_METHODS:
        raise BadRequest(f"unknown method {method!r}; choose one of {list(DISCOVERY_METHODS)} (or acdc as a job)")
    if not 1 <= ig_steps <= 64:
        raise BadRequest("ig_steps must lie in 1..64")
    if random_seeds < 0 or random_seeds > 20:
        raise BadRequest("random_seeds must lie in 0..20")
    if max_edges_returned < 0:
        raise BadRequest("max_edges_returned must be >= 0")


def compute_circuit(model: LoadedModel, prompt: str, target: str, method: str = DEFAULT_METHOD, ablation: str = "patch",
                    metric: str | None = None, corrupt_prompt: str | None = None, subject: str | None = None,
                    top_n: int | None = None, threshold: float | None = None, ig_steps: int = 5,
                    kv_mode: str = "grouped", max_edges_returned: int = 3000, random_seeds: int = 3,
                    with_heads: bool = True, greedy: bool = False, foil: str | None = None,
                    counterfactuals: int = 1, curve_fractions: Sequence[float] = CURVE_FRACTIONS,
                    progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> dict:
    """Discover, select and evaluate the circuit of ``prompt`` -> ``target`` (see the module doc);
    ``cancel()`` is called between the steps."""
    _check_request(method, ig_steps, random_seeds, max_edges_returned)

    def report(done: int, total: int, message: str) -> None:
        if cancel is not None:
            cancel()
        if progress is not None:
            progress(done, total, message)

    start = time.perf_counter()
    report(0, 4, "preparing the inputs")
    setup = prepare(model, prompt, target, ablation=ablation, metric=metric, corrupt_prompt=corrupt_prompt,
                    subject=subject, kv_mode=kv_mode, foil=foil, counterfactuals=counterfactuals)
    graph = setup.graph
    if top_n is not None and not 0 <= top_n <= graph.n_edges:
        raise BadRequest(f"top_n must lie in 0..{graph.n_edges} (the graph's edge count)")
    if threshold is not None and (top_n is not None or method == REFINE_METHOD):
        raise BadRequest("threshold selects by one pass's scores: give top_n or threshold (not both), and not "
                         f"with {REFINE_METHOD}")
    report(1, 4, "attributing edges")
    t0 = time.perf_counter()
    freeze = freezes_norms(setup.ablation)
    base_method = ("eap-ig-mask" if freeze else "eap-ig") if method == REFINE_METHOD else method
    scores = attribute(model, setup.tokens, graph, setup.metric, setup.ablated, base_method, ig_steps=ig_steps,
                       clean_outputs=setup.clean_outputs, freeze_norms=freeze)
    run = _Runner(model, setup)
    ref = _reference(run, setup)
    normaliser = ref.normaliser
    if threshold is not None:
        requested = int(select(scores, graph, threshold=threshold).sum())
    else:
        requested = default_top_n(graph) if top_n is None else top_n
    sizes = sorted(set(curve_sizes(graph, curve_fractions)) | {requested})
    if method == REFINE_METHOD:
        report(2, 4, "re-attributing inside shrinking circuits and calibrating each size by real runs")
        t_attr = time.perf_counter() - t0  # the first pass; re-attribution counts with the evaluation
        t1 = time.perf_counter()
        rescore = batch_rescore(model, setup.tokens, graph, setup.metric, setup.ablated, freeze_norms=freeze)
        cal, ranking_per_size, ig_used = refine_and_calibrate(
            graph, scores, sizes, run, rescore, normaliser.m_full, normaliser.m_empty,
            higher_is_better=setup.metric.higher_is_better, freeze_norms=freeze,
            faithfulness_of=lambda v, *_: normaliser(v), cancel=cancel)
        masks, shares, values = list(cal.masks), list(cal.shares), list(cal.metric_values)
        at = sizes.index(requested)
        sign = -1.0 if setup.metric.higher_is_better else 1.0
        shown = sign * ranking_per_size[at].context_for(requested)  # scores where the requested circuit runs
    else:
        t_attr = time.perf_counter() - t0
        t1 = time.perf_counter()
        masks = [select(scores, graph, top_n=n, greedy=greedy) if threshold is None or n != requested
                 else select(scores, graph, threshold=threshold) for n in sizes]
        shares, values, at, shown = [None] * len(sizes), None, sizes.index(requested), scores
    report(3, 4, "evaluating the faithfulness curve")
    points = _curve(model, setup, run, normaliser, sizes, masks, shares, values,
                    {n: (random_seeds if n == requested else min(1, random_seeds)) for n in sizes})
    t_curve = time.perf_counter() - t1
    params = {"selection": ("calibrated" if method == REFINE_METHOD else
                            "threshold" if threshold is not None else ("greedy" if greedy else "top_n")),
              "top_n": requested if threshold is None else None, "threshold": threshold, "greedy": greedy,
              "ig_steps": ig_steps if method in ("eap-ig", "eap-ig-mask", REFINE_METHOD) else None,
              "kv_mode": kv_mode, "max_edges_returned": max_edges_returned, "random_seeds": random_seeds,
              "counterfactuals": len(setup.corrupt_prompts) if setup.ablation == "patch" else 0,
              "curve_fractions": list(curve_fractions), "masks_run": run.masks_run,
              "attribution_norms": ("scales floored where each path's upper end runs" if freeze and
                                    base_method == "eap-ig-mask" else "live"),
              "refine_ig_steps": ig_used if method == REFINE_METHOD else None,
              "score_meaning": ("first-order estimate of metric(edge ablated) - metric(clean)" if method != REFINE_METHOD
                                else "first-order estimate of metric(edge ablated) - metric(circuit), where the "
                                     "requested circuit runs")}
    timings = {"attribution_s": t_attr, "evaluation_s": t_curve, "total_s": time.perf_counter() - start}
    report(4, 4, "done")
    return build_result(model, setup, shown, points[at].mask, method, params, timings=timings,
                        max_edges_returned=max_edges_returned, random_seeds=random_seeds, with_heads=with_heads,
                        points=points, reference=ref, run=run)


def sweep_circuit(model: LoadedModel, prompt: str, target: str, method: str = DEFAULT_METHOD, ablation: str = "patch",
                  metric: str | None = None, corrupt_prompt: str | None = None, subject: str | None = None,
                  sizes: list[int] | None = None, ig_steps: int = 5, kv_mode: str = "grouped",
                  progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> dict:
    """Circuit size vs faithfulness and Hit@10 for the given sizes (edge counts): the circuit
    result's curve at those sizes, as rows ``{top_n, edges, edge_fraction, faithfulness,
    hit_at_10, target_rank, random_faithfulness, random_hit_at_10}``."""
    sizes = sorted(set(sizes or DEFAULT_SWEEP_SIZES))
    if not sizes or sizes[0] < 0 or len(sizes) > 50:
        raise BadRequest("sizes must be 1..50 non-negative edge counts")
    start = time.perf_counter()
    graph = get_graph(model.arch, kv_mode)
    clipped = [min(n, graph.n_edges) for n in sizes]
    fractions = [n / graph.n_edges for n in clipped if n > 0] or [1 / graph.n_edges]
    result = compute_circuit(model, prompt, target, method=method, ablation=ablation, metric=metric,
                             corrupt_prompt=corrupt_prompt, subject=subject, ig_steps=ig_steps, kv_mode=kv_mode,
                             top_n=max(max(clipped), 1), with_heads=False, random_seeds=1, max_edges_returned=0,
                             curve_fractions=fractions, progress=progress, cancel=cancel)
    rows = []
    m = result["metrics"]
    for n in clipped:
        if n == 0:  # the empty circuit
            rows.append({"top_n": 0, "edges": 0, "edge_fraction": 0.0,
                         "faithfulness": None if m["faithfulness_undefined"] else 0.0,
                         "hit_at_10": float(m["target_rank"]["empty"] <= HIT_K), "target_rank": m["target_rank"]["empty"],
                         "random_faithfulness": None, "random_hit_at_10": None, "harmful_share": None})
            continue
        points = result["curve"]["points"]
        point = next((p for p in points if p["size"] == n), None) or min(
            points, key=lambda r: abs(r["edge_fraction"] * graph.n_edges - n))
        rows.append({"top_n": n, "edges": point["edges"], "edge_fraction": point["edge_fraction"],
                     "faithfulness": point["faithfulness"], "hit_at_10": point["hit_at_10"],
                     "target_rank": point["target_rank"], "random_faithfulness": point["random"]["faithfulness_mean"],
                     "random_hit_at_10": point["random"]["hit_at_10"], "harmful_share": point["harmful_share"]})
    return {
        "schema_version": SCHEMA_VERSION, "kind": "sweep", "model": model.spec.id, "revision": model.revision,
        "prompt": prompt, "target": target, "method": method, "ablation": result["ablation"],
        "metric": result["metric"], "corrupt_prompt": result["corrupt_prompt"],
        "graph": result["graph"], "params": {"ig_steps": result["params"]["ig_steps"], "kv_mode": kv_mode,
                                             **{k: v for k, v in result["params"].items() if k.startswith("corrupt")}},
        "rows": rows, "curve": {k: v for k, v in result["curve"].items() if k != "points"},
        "timings": {"total_s": time.perf_counter() - start},
    }

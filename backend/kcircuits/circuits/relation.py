"""LRE relations (Hernandez et al., MIT): loading, known-fact filtering, splits and the
relation-level circuit experiment of the Knowledge Circuits paper (Table 1 layout).

Prompt of a fact: ``prompt_templates_zs[0].format(subject)``; answer: the first token of
``" " + object`` (METHODS section 2.1). Discovery runs on a validation split, evaluation on a
disjoint test split; the split is decided on the raw samples (model-independent, by a stable hash
of the subject) and the known-fact filter (answer in the model's top-k) is applied inside each split.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from kcircuits.circuits.evaluate import vocab_ranks as target_ranks  # [n, V], [n] -> [n] 1-based ranks
from kcircuits.errors import BadRequest, CancelFn, NotFound

if TYPE_CHECKING:
    from kcircuits.lm.loader import LoadedModel

log = logging.getLogger(__name__)

LRE_DIR = Path(__file__).resolve().parent.parent / "data" / "lre"
CATEGORIES = ("factual", "commonsense", "linguistic", "bias")

ProgressFn = Callable[[int, int, str], None]


@dataclass(frozen=True)
class Relation:
    """One LRE relation file. ``template`` is the zero-shot template used for prompts."""

    name: str
    category: str
    template: str
    prompt_templates: tuple[str, ...]
    properties: dict[str, Any]
    samples: tuple[tuple[str, str], ...]  # (subject, object)
    zs_templates: tuple[str, ...] = ()

    @property
    def templates(self) -> tuple[str, ...]:
        """Every template of the relation, zero-shot ones first, each once."""
        return tuple(dict.fromkeys((*self.zs_templates, *self.prompt_templates)))

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "category": self.category, "template": self.template,
                "n_samples": len(self.samples), **{k: v for k, v in self.properties.items()}}


@dataclass(frozen=True)
class Fact:
    """One (subject, object) sample turned into a prompt and a first-token answer."""

    subject: str
    object: str
    prompt: str
    target: str
    target_id: int


@lru_cache(maxsize=1)
def relation_files() -> dict[str, Path]:
    """Every LRE relation file by stem, category by category (factual first): the one reader of the LRE folder."""
    files = {}
    for category in CATEGORIES:
        for path in sorted((LRE_DIR / category).glob("*.json")):
            files[path.stem] = path
    return files


def list_relations() -> list[dict[str, Any]]:
    """Every relation's summary: name, category, template, n_samples and its properties."""
    return [load_relation(name).summary() for name in relation_files()]


@lru_cache(maxsize=64)
def load_relation(name: str) -> Relation:
    """The relation called ``name`` (file stem or the ``name`` field); NotFound otherwise."""
    files = relation_files()
    path = files.get(name) or files.get(name.strip().replace(" ", "_"))
    if path is None:
        raise NotFound(f"unknown relation {name!r}; known: {', '.join(sorted(files))}")
    data = json.loads(path.read_text())
    templates = data.get("prompt_templates_zs") or data["prompt_templates"]
    samples = tuple((s["subject"], s["object"]) for s in data["samples"])
    return Relation(name=path.stem, category=path.parent.name, template=templates[0],
                    prompt_templates=tuple(data["prompt_templates"]), properties=dict(data["properties"]),
                    samples=samples, zs_templates=tuple(data.get("prompt_templates_zs") or ()))


def make_fact(model: LoadedModel, relation: Relation, subject: str, obj: str) -> Fact:
    """Prompt and answer token of one sample for ``model``'s tokenizer."""
    target = " " + obj
    return Fact(subject, obj, relation.template.format(subject), target, model.first_token_id(target))


def relation_facts(model: LoadedModel, relation: Relation) -> list[Fact]:
    """All samples of ``relation`` as facts (duplicate subjects kept once, first object wins)."""
    seen: set[str] = set()
    facts = []
    for subject, obj in relation.samples:
        if subject in seen:
            continue
        seen.add(subject)
        facts.append(make_fact(model, relation, subject, obj))
    return facts


def _split_key(subject: str) -> int:
    return int.from_bytes(hashlib.sha256(subject.encode("utf-8")).digest()[:8], "big")


def split_facts(facts: Sequence[Fact], validation_fraction: float = 0.5) -> tuple[list[Fact], list[Fact]]:
    """Deterministic disjoint (validation, test) split by a stable hash of the subject.

    The order inside each split is the hash order, so ``[:n]`` picks a reproducible subset.
    """
    if not 0.0 < validation_fraction < 1.0:
        raise BadRequest("validation_fraction must lie strictly between 0 and 1")
    ordered = sorted(facts, key=lambda f: _split_key(f.subject))
    cut = max(1, round(len(ordered) * validation_fraction)) if len(ordered) > 1 else len(ordered)
    return ordered[:cut], ordered[cut:]


def _length_groups(model: LoadedModel, prompts: Sequence[str]) -> dict[int, list[tuple[int, torch.Tensor]]]:
    """Prompts grouped by token length: {length: [(index, ids [pos])]} (exact batching, no padding)."""
    groups: dict[int, list[tuple[int, torch.Tensor]]] = {}
    for i, prompt in enumerate(prompts):
        ids = model.tokenize(prompt)[0]
        groups.setdefault(int(ids.shape[0]), []).append((i, ids))
    return groups


@torch.no_grad()
def last_logits(model: LoadedModel, prompts: Sequence[str], batch_size: int = 32) -> torch.Tensor:
    """Logits at the last position of each prompt [n, d_vocab] (float32, on the model's device).

    Prompts of equal token length are batched together, so no padding or masking is involved.
    """
    out: torch.Tensor | None = None
    for _, members in sorted(_length_groups(model, prompts).items()):
        for start in range(0, len(members), batch_size):
            chunk = members[start:start + batch_size]
            logits = model.logits(torch.stack([ids for _, ids in chunk]))[:, -1].float()
            if out is None:
                out = torch.empty(len(prompts), logits.shape[-1], device=logits.device)
            out[[i for i, _ in chunk]] = logits
    if out is None:
        return torch.empty(0, model.arch.d_vocab, device=model.device)
    return out


def known_facts(model: LoadedModel, relation: Relation | str, k: int = 10, facts: Sequence[Fact] | None = None,
                batch_size: int = 32) -> list[Fact]:
    """The facts whose answer token ranks within the model's top-``k`` at the last position."""
    relation = load_relation(relation) if isinstance(relation, str) else relation
    facts = list(facts) if facts is not None else relation_facts(model, relation)
    if not facts:
        return []
    ranks = target_ranks(last_logits(model, [f.prompt for f in facts], batch_size), [f.target_id for f in facts])
    return [f for f, r in zip(facts, ranks.tolist(), strict=True) if r <= k]


def same_length_subjects(model: LoadedModel, relation: Relation | str, subject: str, *, differ_in_object: bool = True) -> list[str]:
    """Other subjects of ``relation`` whose prompt has the same token length as ``subject``'s.

    Used to build corrupted inputs by subject swap (token positions stay aligned). With
    ``differ_in_object`` only subjects with a different answer token are returned.
    """
    relation = load_relation(relation) if isinstance(relation, str) else relation
    objects = dict(relation.samples)
    if subject not in objects:
        objects[subject] = ""
    n = model.tokenize(relation.template.format(subject)).shape[1]
    answer = model.first_token_id(" " + objects[subject]) if objects[subject] else None
    out = []
    for other, obj in relation.samples:
        if other == subject or other in out:
            continue
        if model.tokenize(relation.template.format(other)).shape[1] != n:
            continue
        if differ_in_object and answer is not None and model.first_token_id(" " + obj) == answer:
            continue
        out.append(other)
    return out


# the relation experiment (Table 1 of the Knowledge Circuits paper) ----------------------------
RELATION_METHODS = ("eap-ig-refine", "eap-ig", "eap")

def _length_index(model: LoadedModel, relation: Relation) -> dict[int, list[tuple[str, int]]]:
    """{prompt token length: [(subject, answer id)]} over all samples (for subject swaps)."""
    index: dict[int, list[tuple[str, int]]] = {}
    seen: set[str] = set()
    for subject, obj in relation.samples:
        if subject in seen:
            continue
        seen.add(subject)
        n = int(model.tokenize(relation.template.format(subject)).shape[1])
        index.setdefault(n, []).append((subject, model.first_token_id(" " + obj)))
    return index


def _swap_partner(model: LoadedModel, relation: Relation, fact: Fact, index: dict[int, list[tuple[str, int]]]) -> str | None:
    """Another subject with the same prompt length and a different answer token: the next one
    after the fact's own subject in a stable hash order (so facts do not all share one partner)."""
    n = int(model.tokenize(fact.prompt).shape[1])
    pool = sorted(index.get(n, []), key=lambda sa: _split_key(sa[0]))
    if not pool:
        return None
    mine = _split_key(fact.subject)
    start = next((i for i, (subject, _) in enumerate(pool) if _split_key(subject) > mine), 0)
    for k in range(len(pool)):
        subject, answer = pool[(start + k) % len(pool)]
        if subject != fact.subject and answer != fact.target_id:
            return subject
    return None


@dataclass
class _Batch:
    """Facts of one prompt length, ready for attribution / evaluation."""

    facts: list[Fact]
    tokens: torch.Tensor  # [b, pos]
    target_ids: torch.Tensor  # [b]
    corrupt: torch.Tensor | None = None  # [b, pos] (patch ablation)


def _batches(model: LoadedModel, relation: Relation, facts: Sequence[Fact], ablation: str, batch_size: int,
             index: dict[int, list[tuple[str, int]]] | None) -> tuple[list[_Batch], int]:
    """Equal-length batches; with patch ablation facts without a swap partner are dropped (count)."""
    dropped = 0
    groups: dict[int, list[tuple[Fact, str | None]]] = {}
    for fact in facts:
        partner = None
        if ablation == "patch":
            partner = _swap_partner(model, relation, fact, index or {})
            if partner is None:
                dropped += 1
                continue
        groups.setdefault(int(model.tokenize(fact.prompt).shape[1]), []).append((fact, partner))
    out = []
    for _, members in sorted(groups.items()):
        for start in range(0, len(members), batch_size):
            chunk = members[start:start + batch_size]
            tokens = torch.cat([model.tokenize(f.prompt) for f, _ in chunk])
            corrupt = (torch.cat([model.tokenize(relation.template.format(p)) for _, p in chunk])
                       if ablation == "patch" else None)
            out.append(_Batch([f for f, _ in chunk], tokens,
                              torch.tensor([f.target_id for f, _ in chunk], device=model.device), corrupt))
    return out, dropped


def _batch_setup(model: LoadedModel, graph, batch: _Batch, ablation: str, metric: str):
    """(ablated outputs [b or 1, pos or 1, n_s, d], metric) of one batch."""
    from kcircuits.circuits.attribution import ablated_outputs_for
    from kcircuits.circuits.metrics import make_metric

    with torch.no_grad():
        clean_logits = model.logits(batch.tokens)
    ablated = ablated_outputs_for(model, batch.tokens, graph, ablation, batch.corrupt)
    foil = None
    if metric == "logit_diff":  # foil: the best other token of the clean run
        row = clean_logits[:, -1].float().clone()
        row[torch.arange(row.shape[0]), batch.target_ids] = float("-inf")
        foil = row.argmax(-1)
    return ablated, make_metric(metric, batch.target_ids, foil_ids=foil, clean_logits=clean_logits)


@dataclass
class _Prepared:
    """A batch with its ablated outputs [b or 1, pos or 1, n_s, d] and metric, built once and
    shared by the attribution, the calibration and the evaluation."""

    batch: _Batch
    ablated: torch.Tensor
    metric: Any


def _prepare(model: LoadedModel, graph, batches: Iterable[_Batch], ablation: str, metric: str) -> Iterator[_Prepared]:
    """Each batch prepared, lazily (a split used once need not hold all its ablated outputs)."""
    for batch in batches:
        yield _Prepared(batch, *_batch_setup(model, graph, batch, ablation, metric))


def _evaluate_split(model: LoadedModel, graph, prepared: Iterable[_Prepared], mask: torch.Tensor,
                    randoms: list[torch.Tensor], k: int, tick) -> dict[str, Any]:
    """Hit@k of the full model, the circuit and the random circuits over the prepared batches."""
    from kcircuits.circuits.evaluate import evaluate_masks

    masks = torch.stack([graph.full_mask(model.device), mask.to(model.device), *[r.to(model.device) for r in randoms]])
    ranks = []
    for p in prepared:
        _, r = evaluate_masks(model, p.batch.tokens, graph, masks, p.ablated, p.metric, p.batch.target_ids)
        ranks.append(r)  # [M, b]
        tick(len(p.batch.facts))
    if not ranks:
        return {"n": 0, "original": None, "circuit": None, "random": None}
    hits = (torch.cat(ranks, 1) <= k).float()  # [M, n]
    return {"n": int(hits.shape[1]), "original": float(hits[0].mean()), "circuit": float(hits[1].mean()),
            "random": float(hits[2:].mean()) if randoms else None}


#: A relation circuit "hits" in calibration when it keeps this share of the full model's
#: validation Hit@10 (the Table 1 target: circuit >= 0.9 x original).
RELATION_HIT_SHARE = 0.9


def single_facts(model: LoadedModel, graph, prepared: Sequence[_Prepared], ablation: str, metric: str) -> list[_Prepared]:
    """Each fact of the prepared batches as its own prepared batch of one (for per-fact scores)."""
    singles = []
    for p in prepared:
        b = p.batch
        for i, fact in enumerate(b.facts):
            corrupt = None if b.corrupt is None else b.corrupt[i:i + 1]
            singles.append(_Batch([fact], b.tokens[i:i + 1], b.target_ids[i:i + 1], corrupt))
    return list(_prepare(model, graph, singles, ablation, metric))


def _fact_scaled_mean(per_fact: Iterable[torch.Tensor]) -> torch.Tensor:
    """Mean over facts of scores [n_s, n_r], each fact's divided by its own largest |score| (so the
    facts the circuit serves worst, with the largest loss and gradients, do not set the ranking alone)."""
    total, n = None, 0
    for x in per_fact:
        x = x.float() / x.float().abs().max().clamp(min=1e-12)
        total = x if total is None else total + x.to(total.device)
        n += 1
    return total / n


def relation_scores(model: LoadedModel, graph, facts: Sequence[_Prepared], method: str, ig_steps: int,
                    freeze_norms: bool, on_fact: Callable[[int], None] | None = None) -> torch.Tensor:
    """First-pass attribution scores [n_s, n_r] of ``method``: the fact-scaled mean
    (:func:`_fact_scaled_mean`) over ``facts`` (one-fact batches, :func:`single_facts`);
    ``on_fact(1)`` after each fact."""
    from kcircuits.circuits.attribution import attribute

    def per_fact():
        for p in facts:
            yield attribute(model, p.batch.tokens, graph, p.metric, p.ablated, method, ig_steps=ig_steps,
                            freeze_norms=freeze_norms)
            if on_fact is not None:
                on_fact(1)
    return _fact_scaled_mean(per_fact())


def relation_rescore(model: LoadedModel, graph, facts: Sequence[_Prepared], freeze_norms: bool):
    """The relation's :data:`kcircuits.circuits.refine.Rescore`: ``eap-ig-mask`` scores [n_s, n_r],
    the fact-scaled mean over ``facts`` (one-fact batches)."""
    from kcircuits.circuits.attribution import mask_ig_scores

    def rescore(base: torch.Tensor, steps: int) -> torch.Tensor:
        return _fact_scaled_mean(mask_ig_scores(model, p.batch.tokens, graph, p.metric, p.ablated, steps, base=base,
                                                freeze_norms=freeze_norms) for p in facts)
    return rescore


def relation_runner(model: LoadedModel, graph, prepared: Sequence[_Prepared]):
    """``run(masks [M, n_s, n_r]) -> (fact-weighted mean metric [M], target ranks [M, n_facts])`` over
    the prepared batches (the ``evaluate`` of :func:`kcircuits.circuits.refine.calibrated_masks`)."""
    from kcircuits.circuits.evaluate import evaluate_masks

    n_facts = sum(len(p.batch.facts) for p in prepared)

    def run(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        values, ranks = [], []
        for p in prepared:
            v, r = evaluate_masks(model, p.batch.tokens, graph, masks.to(model.device), p.ablated, p.metric,
                                  p.batch.target_ids)
            values.append(v * len(p.batch.facts))  # v is the batch mean
            ranks.append(r)
        return torch.stack(values).sum(0) / n_facts, torch.cat(ranks, 1)
    return run


def _refined_relation_circuit(model: LoadedModel, graph, prepared: list[_Prepared], facts: list[_Prepared],
                              scores: torch.Tensor, top_n: int, ablation: str,
                              cancel: CancelFn | None) -> tuple[torch.Tensor, dict[str, Any]]:
    """eap-ig-refine for a relation, on every validation fact: the re-attributions average the
    ``eap-ig-mask`` scores of the validation facts (``facts``: one-fact batches), each fact scaled to
    its own largest |score| (:func:`_fact_scaled_mean`), and the calibration runs each candidate on
    all of them (``prepared``: the batches) (fact-weighted mean metric; a candidate hits
    when it keeps ``RELATION_HIT_SHARE`` of the full model's validation Hit@10). The curve's
    sizes up to ``top_n`` are calibrated in order, so the carry rule of circuits.refine applies;
    the row's circuit is the one of ``top_n``. ``scores`` [n_s, n_r]: the first pass averaged over
    every validation fact. Returns (mask [n_s, n_r] bool, calibration details)."""
    from kcircuits.circuits.attribution import freezes_norms
    from kcircuits.circuits.discover import curve_sizes
    from kcircuits.circuits.evaluate import HIT_K, Normaliser
    from kcircuits.circuits.refine import refine_and_calibrate

    freeze = freezes_norms(ablation)
    n_facts = sum(len(p.batch.facts) for p in prepared)
    rescore, run = relation_rescore(model, graph, facts, freeze), relation_runner(model, graph, prepared)
    ref, ref_ranks = run(torch.stack([graph.full_mask(model.device), graph.empty_mask(model.device)]))
    metric = prepared[0].metric  # every batch's metric is of the same kind
    normaliser = Normaliser.of(metric, float(ref[0]), float(ref[1]))
    hit_share = RELATION_HIT_SHARE * int((ref_ranks[0] <= HIT_K).sum()) / ref_ranks[0].numel()
    sizes = [size for size in curve_sizes(graph) if size < top_n] + [top_n]
    cal, _, _ = refine_and_calibrate(graph, scores, sizes, run, rescore, normaliser.m_full, normaliser.m_empty,
                                     higher_is_better=metric.higher_is_better, freeze_norms=freeze,
                                     faithfulness_of=lambda v, *_: normaliser(v), cancel=cancel, hit_share=hit_share)
    return cal.masks[-1], {"facts": n_facts, "sizes": list(cal.sizes), "harmful_share": cal.shares[-1],
                           "hit_share_required": hit_share, "hits_required_share_on_validation": cal.hits[-1],
                           "validation_share_kept": cal.kept[-1],
                           "faithfulness_on_validation": cal.faithfulness[-1],
                           "faithfulness_per_size": list(cal.faithfulness),
                           "faithfulness_undefined": normaliser.undefined_reason}


def run_relation(model: LoadedModel, name: str, n: int | None = 20, method: str = "eap-ig-refine", *, top_n: int | None = None,
                 k: int = 10, ablation: str = "patch", metric: str = "match_nll", ig_steps: int = 5,
                 random_seeds: int = 3, validation_fraction: float = 0.5, filter_test: bool = False,
                 greedy: bool = False, kv_mode: str = "grouped", batch_size: int = 8, known_k: int | None = None,
                 progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> dict[str, Any]:
    """One relation circuit and its Hit@k on validation and test facts (paper's Table 1 row).

    Discovery: the known validation facts (answer in the model's top-``k``; at most ``n``) are
    attributed one by one (eap or eap-ig), the scores averaged over facts with each fact scaled to
    its own largest |score| (:func:`_fact_scaled_mean`), and
    ONE relation circuit of ``top_n`` edges (default 1% of the graph, pruned of dangling nodes)
    selected: by |score| (eap, eap-ig), or re-attributed and calibrated by patched runs on all
    validation facts (eap-ig-refine, the default; see circuits.refine and
    ``_refined_relation_circuit``). Evaluation: Hit@k of the original model, the circuit
    alone (edges outside it ablated) and random connected circuits of the same size on the
    validation facts and on at most ``n`` test facts (all of them, or only the known ones with
    ``filter_test``). ``known_k`` (default ``k``): the rank a fact's answer needs to count as
    known. ``ablation``: patch (default: subject swap with a same-length subject of the relation
    whose answer differs; facts without one are dropped and counted), zero (the paper's ACDC
    setting; first-order EAP scores under zero ablation pick poor circuits: on SmolLM2 a 1% circuit
    keeps Hit@10 0.0 where patching gives 0.9-1.0), or mean.
    ``progress(done, total, message)``; ``cancel()`` (:data:`kcircuits.errors.CancelFn`) is called
    between steps (a partial row means nothing: its Cancelled propagates).
    """
    from kcircuits.circuits.attribution import freezes_norms
    from kcircuits.circuits.discover import default_top_n
    from kcircuits.circuits.evaluate import random_circuit
    from kcircuits.circuits.graph import get_graph
    from kcircuits.circuits.select import circuit_nodes, select

    if method not in RELATION_METHODS:
        raise BadRequest(f"method must be one of {list(RELATION_METHODS)} (ACDC runs per prompt: see circuits.acdc)")
    if n is not None and n < 1:
        raise BadRequest("n must be >= 1")
    if ablation not in ("zero", "mean", "patch"):
        raise BadRequest("ablation must be zero, mean or patch")
    t0 = time.perf_counter()
    relation = load_relation(name)
    graph = get_graph(model.arch, kv_mode)
    facts = relation_facts(model, relation)
    val_all, test_all = split_facts(facts, validation_fraction)
    known_k = k if known_k is None else known_k
    val_known = known_facts(model, relation, known_k, facts=val_all)
    val = val_known[:n]
    test = (known_facts(model, relation, known_k, facts=test_all) if filter_test else test_all)[:n]
    if not val:
        raise BadRequest(f"{model.spec.id} knows none of the {len(val_all)} validation facts of {relation.name} "
                         f"(answer in its top {known_k}); nothing to discover a circuit from")
    index = _length_index(model, relation) if ablation == "patch" else None
    val_batches, val_dropped = _batches(model, relation, val, ablation, batch_size, index)
    test_batches, test_dropped = _batches(model, relation, test, ablation, batch_size, index)
    n_val = sum(len(b.facts) for b in val_batches)
    n_test = sum(len(b.facts) for b in test_batches)
    if n_val == 0:
        raise BadRequest("no validation fact has a same-length subject to swap in; use ablation='zero'")
    total = 2 * n_val + n_test
    done = 0

    def tick(count: int, message: str = "") -> None:
        nonlocal done
        done += count
        if progress is not None:
            progress(done, total, message)
        if cancel is not None:
            cancel()

    if cancel is not None:
        cancel()
    t_attr = time.perf_counter()
    freeze = freezes_norms(ablation)
    base_method = ("eap-ig-mask" if freeze else "eap-ig") if method == "eap-ig-refine" else method
    val_prepared = list(_prepare(model, graph, val_batches, ablation, metric))
    val_facts = single_facts(model, graph, val_prepared, ablation, metric)
    scores = relation_scores(model, graph, val_facts, base_method, ig_steps, freeze,
                             lambda count: tick(count, f"attributing {relation.name}"))
    top_n = default_top_n(graph) if top_n is None else top_n
    if not 0 < top_n <= graph.n_edges:
        raise BadRequest(f"top_n must lie in 1..{graph.n_edges}")
    calibration = None
    if method == "eap-ig-refine":
        mask, calibration = _refined_relation_circuit(model, graph, val_prepared, val_facts, scores, top_n, ablation,
                                                      cancel)
    else:
        mask = select(scores, graph, top_n=top_n, greedy=greedy)
    del val_facts
    t_attr = time.perf_counter() - t_attr
    n_edges = int(mask.sum())
    randoms = [random_circuit(graph, n_edges, seed, model.device) for seed in range(random_seeds)] if n_edges else []
    t_eval = time.perf_counter()
    val_hits = _evaluate_split(model, graph, val_prepared, mask, randoms, k, lambda c: tick(c, "evaluating (validation)"))
    del val_prepared
    test_hits = _evaluate_split(model, graph, _prepare(model, graph, test_batches, ablation, metric), mask, randoms, k,
                                lambda c: tick(c, "evaluating (test)"))
    t_eval = time.perf_counter() - t_eval
    n_nodes = int(circuit_nodes(mask, graph).sum())
    return {
        "kind": "relation_row", "relation": relation.name, "category": relation.category,
        "template": relation.template, "model": model.spec.id, "revision": model.revision,
        "method": method, "ablation": ablation, "metric": metric, "k": k, "top_n": top_n,
        "n_samples": len(facts), "n_validation_split": len(val_all), "n_validation_known": len(val_known), "known_k": known_k,
        "n_validation": n_val, "n_test": n_test, "dropped_no_swap": val_dropped + test_dropped,
        "filter_test": filter_test,
        "edges": n_edges, "nodes": n_nodes, "edge_fraction": n_edges / graph.n_edges, "total_edges": graph.n_edges,
        "random_edges": [int(r.sum()) for r in randoms],
        "validation": val_hits, "test": test_hits,
        "circuit_edges": [graph.edge_id(s, r) for s, r in mask.nonzero().tolist()],
        "timings": {"attribution_s": t_attr, "evaluation_s": t_eval, "total_s": time.perf_counter() - t0},
        "params": {"n": n, "ig_steps": ig_steps if method != "eap" else None, "random_seeds": random_seeds,
                   "validation_fraction": validation_fraction, "greedy": greedy, "kv_mode": kv_mode,
                   "calibration": calibration,
                   "discovery": ("one circuit per relation: attribution scores averaged over validation facts, each "
                                 "fact scaled to its largest |score|"
                                 + ("; re-attributed and calibrated on all validation facts (hit: "
                                    f"{RELATION_HIT_SHARE:g} x the full model's Hit@10)"
                                    if method == "eap-ig-refine" else ""))},
    }


def _fmt(x: float | None) -> str:
    return "  -  " if x is None else f"{x:5.2f}"


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Paper-style text table (Table 1: type, relation, #edges, Hit@10 val/test original, circuit, random)."""
    head = (f"{'type':<12}{'relation':<32}{'#edge':>7}{'nodes':>7} | {'val n':>5} {'orig':>5} {'circ':>5} {'rand':>5}"
            f" | {'test n':>6} {'orig':>5} {'circ':>5} {'rand':>5}")
    lines = [head, "-" * len(head)]
    for row in rows:
        v, t = row["validation"], row["test"]
        lines.append(f"{row['category']:<12}{row['relation'][:31]:<32}{row['edges']:>7}{row['nodes']:>7} | "
                     f"{v['n']:>5} {_fmt(v['original'])} {_fmt(v['circuit'])} {_fmt(v['random'])} | "
                     f"{t['n']:>6} {_fmt(t['original'])} {_fmt(t['circuit'])} {_fmt(t['random'])}")
    if len(rows) > 1:
        def mean(split: str, key: str) -> float | None:
            vals = [r[split][key] for r in rows if r[split][key] is not None]
            return sum(vals) / len(vals) if vals else None

        edges = sum(r["edges"] for r in rows) / len(rows)
        lines.append("-" * len(head))
        lines.append(f"{'average':<44}{edges:>7.0f}{'':>7} | {'':>5} {_fmt(mean('validation', 'original'))} "
                     f"{_fmt(mean('validation', 'circuit'))} {_fmt(mean('validation', 'random'))} | {'':>6} "
                     f"{_fmt(mean('test', 'original'))} {_fmt(mean('test', 'circuit'))} {_fmt(mean('test', 'random'))}")
    return "\n".join(lines)

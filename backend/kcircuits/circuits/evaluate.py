"""Evaluating circuits (METHODS §3): circuit-only runs, faithfulness, Hit@10 against random
circuits of the same size, and size sweeps. Masks run batched (several per forward).

- faithfulness F = (m(C) - m(empty)) / (m(full) - m(empty)) (Hanna et al.). It is *undefined*
  (None, with the reason) when |m(full) - m(empty)| is below the metric's ``MIN_SIGNAL`` (the
  ablated model already does, or fails, the task as the full one does: a ratio of noise), or when
  the empty circuit does the task better than the full model (then "recovering" it has no sign).
- CPR / CMD (MIB circuit track): areas under F and under |1 - F| over log edge counts, also
  divided by the log range so graphs of different sizes compare.
- Hit@10: the target's 1-based rank at the last position <= 10, averaged over prompts.
- Random circuits: unions of random paths from the input to the logits (so they are connected
  and nothing dangles) until they reach the circuit's edge count; one per seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from kcircuits.circuits.graph import Graph
from kcircuits.circuits.patching import mask_batch_size, run_with_edge_ablation
from kcircuits.circuits.select import circuit_nodes, prune_dangling, select_top_n

if TYPE_CHECKING:
    from kcircuits.lm.loader import LoadedModel

HIT_K = 10


def target_ranks(logits: torch.Tensor, target_ids: torch.Tensor, position: int = -1) -> torch.Tensor:
    """1-based ranks of the targets at ``position``: logits [..., b, pos, V], target_ids [b] -> [..., b]."""
    return vocab_ranks(logits[..., position, :], target_ids)


def vocab_ranks(logits: torch.Tensor, target_ids) -> torch.Tensor:
    """1-based rank of each target among the vocabulary: logits [..., V], target_ids [...] -> [...].

    Ties count against the target (rank = number of logits >= the target's): a flat output, such
    as a fully ablated model's, ranks the target last, not first."""
    row = logits.float()
    tgt = torch.as_tensor(target_ids, device=row.device).long().expand(row.shape[:-1])
    picked = row.gather(-1, tgt.unsqueeze(-1))
    return (row >= picked).sum(-1)


@torch.no_grad()
def evaluate_masks(model: LoadedModel, tokens: torch.Tensor, graph: Graph, masks: torch.Tensor, ablated: torch.Tensor,
                   metric, target_ids: torch.Tensor, batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run each mask [M, n_s, n_r]: (metric per mask [M], target ranks [M, b])."""
    values, ranks = [], []
    b = tokens.shape[0]
    last = metric.position == -1
    batch_size = batch_size or mask_batch_size(model, tokens, graph=graph, logit_positions=1 if last else None)
    for i in range(0, masks.shape[0], batch_size):
        logits = run_with_edge_ablation(model, tokens, graph, masks[i:i + batch_size], ablated,
                                        last_only=last)  # [m, b, pos or 1, V]
        values.append(metric.per_example(logits.reshape(-1, *logits.shape[2:])).view(-1, b).mean(1))
        ranks.append(target_ranks(logits, target_ids))
    return torch.cat(values).float().cpu(), torch.cat(ranks).cpu()


def random_circuit(graph: Graph, n_edges: int, seed: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """A connected random circuit with at least ``n_edges`` edges (exceeding it by less than one path).

    Union of random paths walked back from the logits: at each node a random receiver slot of it,
    then a random upstream sender of that slot, until the input. Every node on a path has an
    in-edge and an out-edge, so nothing dangles.
    """
    gen = torch.Generator().manual_seed(seed)
    feeds: dict[int, list[int]] = {}
    for r in range(graph.n_receivers):
        for node in graph.receiver_heads(r):
            feeds.setdefault(node, []).append(r)
    n_up = graph.n_up.tolist()
    want = min(n_edges, graph.n_edges)
    edges: set[tuple[int, int]] = set()
    tries = 0
    while len(edges) < want and tries < 100 * (want + 1):
        tries += 1
        node = graph.logits_index
        while node != 0:
            slots = feeds[node]
            r = slots[int(torch.randint(len(slots), (1,), generator=gen))]
            s = int(torch.randint(n_up[r], (1,), generator=gen))
            edges.add((s, r))
            node = s
    mask = torch.zeros(graph.n_senders, graph.n_receivers, dtype=torch.bool)
    if edges:
        idx = torch.tensor(sorted(edges))
        mask[idx[:, 0], idx[:, 1]] = True
    return mask.to(device)


#: Smallest |m(full) - m(empty)| faithfulness divides by, in each metric's own units (ours; a
#: logit or nat difference of 0.5, a probability of 0.02, a KL of 0.05 nats).
MIN_SIGNAL = {"logit_diff": 0.5, "logprob": 0.5, "match_nll": 0.5, "prob": 0.02, "kl": 0.05}


@dataclass(frozen=True)
class Normaliser:
    """Faithfulness of circuit metric values against the full and the empty circuit."""

    m_full: float
    m_empty: float
    metric: str
    higher_is_better: bool
    min_signal: float

    @classmethod
    def of(cls, metric, m_full: float, m_empty: float, min_signal: float | None = None) -> Normaliser:
        floor = MIN_SIGNAL.get(metric.name, 1e-9) if min_signal is None else min_signal
        return cls(float(m_full), float(m_empty), metric.name, bool(metric.higher_is_better), float(floor))

    @property
    def undefined_reason(self) -> str | None:
        gap = self.m_full - self.m_empty
        if not math.isfinite(gap):
            return "the metric is not finite on the full or the empty circuit"
        if abs(gap) < self.min_signal:
            return (f"{self.metric}: full model {self.m_full:.3g} and empty circuit {self.m_empty:.3g} differ by "
                    f"{abs(gap):.3g}, below {self.min_signal:g}: the ablation leaves no signal to recover")
        if (gap < 0) == self.higher_is_better:
            return (f"{self.metric}: the empty circuit ({self.m_empty:.3g}) does the task better than the full "
                    f"model ({self.m_full:.3g}); faithfulness has no meaning here")
        return None

    def __call__(self, m_circuit: float) -> float | None:
        if self.undefined_reason is not None or not math.isfinite(m_circuit):
            return None
        return (m_circuit - self.m_empty) / (self.m_full - self.m_empty)


def faithfulness(m_circuit: float, m_full: float, m_empty: float) -> float | None:
    """(m(C) - m(empty)) / (m(full) - m(empty)); None when the denominator is (numerically) 0.
    Use :class:`Normaliser` for the metric-aware rule with reasons."""
    denom = m_full - m_empty
    if not math.isfinite(denom) or abs(denom) < 1e-9:
        return None
    return (m_circuit - m_empty) / denom


def area_summaries(edge_counts: list[int], faith: list[float | None]) -> dict[str, float | None]:
    """MIB's CPR (area under F) and CMD (area under |1 - F|) over x = log(edge count), by
    trapezoids, and both divided by the x range. None when a point's F is undefined or fewer than
    two distinct sizes are given."""
    points = sorted({(n, f) for n, f in zip(edge_counts, faith, strict=True) if n > 0})
    if len(points) < 2 or any(f is None for _, f in points) or len({n for n, _ in points}) != len(points):
        return {"cpr": None, "cmd": None, "cpr_normalised": None, "cmd_normalised": None}
    xs = [math.log(n) for n, _ in points]
    fs = [f for _, f in points]
    cpr = sum((xs[i + 1] - xs[i]) * (fs[i] + fs[i + 1]) / 2 for i in range(len(xs) - 1))
    cmd = sum((xs[i + 1] - xs[i]) * (abs(1 - fs[i]) + abs(1 - fs[i + 1])) / 2 for i in range(len(xs) - 1))
    span = xs[-1] - xs[0]
    return {"cpr": cpr, "cmd": cmd, "cpr_normalised": cpr / span, "cmd_normalised": cmd / span}


def evaluate_circuit(model: LoadedModel, tokens: torch.Tensor, graph: Graph, mask: torch.Tensor, ablated: torch.Tensor,
                     metric, target_ids: torch.Tensor, *, random_seeds: int = 3, seed0: int = 0) -> dict:
    """Metrics of one circuit: sizes, faithfulness, metric values, Hit@10 and ranks (full, circuit,
    random circuits of the same edge count)."""
    dev = model.device
    mask = mask.to(dev)
    n_edges = int(mask.sum())
    randoms = [random_circuit(graph, n_edges, seed0 + k, dev) for k in range(random_seeds)] if n_edges else []
    masks = torch.stack([graph.full_mask(dev), graph.empty_mask(dev), mask, *randoms])
    values, ranks = evaluate_masks(model, tokens, graph, masks, ablated, metric, target_ids)
    hits = (ranks <= HIT_K).float().mean(1)  # [M]
    one = tokens.shape[0] == 1  # a single prompt: hits are 0 or 1
    m_full, m_empty, m_circ = (float(v) for v in values[:3])
    n_nodes = int(circuit_nodes(mask, graph).sum())
    return {
        "edges": n_edges, "nodes": n_nodes,
        "edge_fraction": n_edges / graph.n_edges, "node_fraction": n_nodes / graph.n_nodes,
        "faithfulness": faithfulness(m_circ, m_full, m_empty),
        "metric_full": m_full, "metric_circuit": m_circ, "metric_empty": m_empty,
        "hit_at_10": {"full": int(hits[0]) if one else float(hits[0]),
                      "circuit": int(hits[2]) if one else float(hits[2]),
                      "random": float(hits[3:].mean()) if randoms else None},
        "target_rank": {"full": int(ranks[0, 0]), "circuit": int(ranks[2, 0]), "empty": int(ranks[1, 0]),
                        "random": [int(r) for r in ranks[3:, 0]]},
        "random_edges": [int(r.sum()) for r in randoms],
        "random_faithfulness": [faithfulness(float(v), m_full, m_empty) for v in values[3:]],
    }


def sweep(model: LoadedModel, tokens: torch.Tensor, graph: Graph, scores: torch.Tensor, ablated: torch.Tensor, metric,
          target_ids: torch.Tensor, sizes: list[int]) -> list[dict]:
    """Circuit size (top-n then pruned) vs faithfulness and Hit@10: one row per size."""
    dev = model.device
    masks = [prune_dangling(select_top_n(scores, graph, min(n, graph.n_edges)), graph) for n in sizes]
    stacked = torch.stack([graph.full_mask(dev), graph.empty_mask(dev), *[m.to(dev) for m in masks]])
    values, ranks = evaluate_masks(model, tokens, graph, stacked, ablated, metric, target_ids)
    m_full, m_empty = float(values[0]), float(values[1])
    rows = []
    for i, (n, m) in enumerate(zip(sizes, masks, strict=True)):
        rows.append({"top_n": n, "edges": int(m.sum()), "edge_fraction": int(m.sum()) / graph.n_edges,
                     "faithfulness": faithfulness(float(values[i + 2]), m_full, m_empty),
                     "hit_at_10": float((ranks[i + 2] <= HIT_K).float().mean()),
                     "target_rank": int(ranks[i + 2, 0])})
    return rows

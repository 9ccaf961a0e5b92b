"""Faithful circuits from attribution scores: re-attribution inside shrinking circuits, then a
calibration of each circuit size by real patched runs (the ``eap-ig-refine`` method).

Why: a single attribution pass scores every edge in the context of the *full* model. A circuit of
1% of the edges runs in a very different context (99% of the edges ablated), and there the
first-order estimates mislead: on SmolLM2, top-n circuits by |EAP-IG| keep about half the logit
difference at 1% and barely more at 10%. Two steps fix most of it:

1. **Re-attribution** (:func:`refine_ranking`). Start from the ``sizes[0]`` most helpful edges of
   the first pass; at each next size, score every edge again with ``eap-ig-mask`` along the path
   from the empty circuit to the current circuit (so the scores are taken where that circuit
   runs) and keep the most helpful ones. The result is a ranking: edges that survive into smaller
   circuits come first; within a level, by their helpfulness in that level's context.
2. **Calibration** (:func:`calibrated_masks`). A circuit of only helpful edges over-shoots: it
   leaves out the edges that hold the answer back in the full model, so its metric exceeds the
   full model's (faithfulness well above 1). The circuit of size n therefore takes its top
   ``(1 - share) * n`` helpful edges and the ``share * n`` most harmful edges (in the context of
   that size), for a few shares; each candidate runs for real (batched) and the one whose
   faithfulness is closest to 1 is kept (among those that keep the target in the top 10, when
   any does); where it crosses 1 between two shares, three shares
   in between are tried as well. Sizes go up in order, and the circuit chosen at the
   previous size, grown by the ranking to this size, is one more candidate (so a larger circuit
   does not lose what made a smaller one faithful). When no circuit of a size holds (target in
   the top 10 and |F - 1| <= ``CARRY_TOLERANCE``) and the smaller chosen circuit does better, that
   circuit is kept unchanged: a size is a budget, the best circuit found with at most n edges (its
   edge count says how many it has). The chosen share is recorded per size.

"Helpful" is oriented by the metric: an edge helps when ablating it lowers a higher-is-better
metric (score < 0) or raises a loss (score > 0). Masks are [n_senders, n_receivers] bool.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from kcircuits.circuits.attribution import mask_ig_scores
from kcircuits.circuits.graph import Graph
from kcircuits.circuits.select import prune_dangling
from kcircuits.errors import CancelFn

if TYPE_CHECKING:
    from kcircuits.lm.loader import LoadedModel

#: Circuit sizes (fractions of the graph's edges) at which edges are re-attributed, largest first.
REFINE_FRACTIONS = (0.1, 0.05, 0.02, 0.01, 0.005, 0.002)
#: Shares of harmful edges tried for each circuit size.
CALIBRATION_SHARES = (0.0, 0.03, 0.07, 0.12, 0.2, 0.3, 0.45)
REFINE_IG_STEPS = 2
#: Under zero ablation (norm scales floored) the mask path is rough and which facts a ranking
#: serves depends on its IG steps: one ranking per step count, and each size keeps the best
#: calibrated circuit of any (:func:`best_per_size`).
ZERO_REFINE_IG_STEPS = (2, 5)
#: Where faithfulness crosses 1 between two shares, these fractions of the gap are tried too.
REFINE_STEPS_BETWEEN = (0.25, 0.5, 0.75)
#: A circuit of a size "holds" when it keeps the target in the top 10 and |F - 1| is at most this;
#: when none does, the smaller chosen circuit is kept if it is closer to F = 1 (module doc).
CARRY_TOLERANCE = 0.2

#: ``rescore(base [n_s, n_r] bool, ig_steps) -> scores [n_s, n_r]``: the ``eap-ig-mask`` scores of
#: every edge along the path to the circuit ``base`` (one batch: :func:`batch_rescore`; a relation
#: averages them over all its validation batches).
Rescore = Callable[[torch.Tensor, int], torch.Tensor]


def helpfulness(scores: torch.Tensor, higher_is_better: bool) -> torch.Tensor:
    """Scores [n_s, n_r] oriented so that larger = the edge does more of the task."""
    return -scores.float() if higher_is_better else scores.float()


def _top(key: torch.Tensor, allowed: torch.Tensor, n: int) -> torch.Tensor:
    """The n allowed edges with the largest key (ties by index): [n_s, n_r] bool."""
    flat = key.masked_fill(~allowed, float("-inf")).flatten()
    out = torch.zeros_like(flat, dtype=torch.bool)
    n = min(n, int(allowed.sum()))
    if n > 0:
        out[torch.topk(flat, n).indices] = True
    return out.view(allowed.shape)


@dataclass(frozen=True)
class Ranking:
    """Edge order for circuits of any size, with the helpfulness of edges in each level's context.

    ``order`` [n_s, n_r] float: larger first (-inf off the allowed edges). ``levels``: edge counts
    of the circuits whose context was scored (largest first); ``contexts[i]`` [n_s, n_r]: the
    helpfulness of every edge in the circuit of ``levels[i]`` edges (``contexts[0]``: the full model).
    """

    order: torch.Tensor
    levels: tuple[int, ...]
    contexts: tuple[torch.Tensor, ...]

    def context_for(self, n: int) -> torch.Tensor:
        """Helpfulness in the context of the smallest scored circuit that has at least ``n`` edges."""
        best = self.contexts[0]
        for level, ctx in zip(self.levels, self.contexts[1:], strict=False):
            if level >= n:
                best = ctx
        return best


def batch_rescore(model: LoadedModel, tokens: torch.Tensor, graph: Graph, metric, ablated: torch.Tensor, *,
                  freeze_norms: bool) -> Rescore:
    """The :data:`Rescore` of one batch: ``eap-ig-mask`` over tokens [b, pos] with ablated outputs
    [b or 1, pos or 1, n_s, d]; ``freeze_norms``: the norm scales frozen (zero ablation, see
    ``mask_ig_scores``)."""
    def rescore(base: torch.Tensor, steps: int) -> torch.Tensor:
        return mask_ig_scores(model, tokens, graph, metric, ablated, steps, base=base, freeze_norms=freeze_norms)
    return rescore


def refine_ranking(graph: Graph, scores: torch.Tensor, rescore: Rescore, *, higher_is_better: bool,
                   fractions: Sequence[float] = REFINE_FRACTIONS, ig_steps: int = REFINE_IG_STEPS,
                   cancel: CancelFn | None = None) -> Ranking:
    """Re-attribute inside shrinking circuits (module doc, step 1). scores [n_s, n_r] from a first
    pass over the full model; ``rescore`` (:data:`Rescore`, e.g. :func:`batch_rescore`) scores
    every edge along the path to each circuit, once per fraction after the first, with
    ``ig_steps`` steps."""
    allowed = graph.allowed(scores.device)
    base = helpfulness(scores, higher_is_better)
    sizes = [max(1, round(f * graph.n_edges)) for f in fractions]
    level = torch.zeros_like(base)  # how deep an edge survived
    within = _unit(base)  # its helpfulness where it was last scored, mapped into [0, 1)
    circuit = prune_dangling(_top(base, allowed, sizes[0]), graph)
    level[circuit] = 1
    levels, contexts = [], [base]
    for depth, n in enumerate(sizes[1:], start=2):
        if cancel is not None:
            cancel()
        ctx = helpfulness(rescore(circuit, ig_steps), higher_is_better).to(scores.device)
        levels.append(int(circuit.sum()))
        contexts.append(ctx)
        within = torch.where(circuit, _unit(ctx), within)
        circuit = prune_dangling(_top(ctx.masked_fill(~circuit, float("-inf")), allowed, n), graph)
        level[circuit] = depth
    order = (level + within).masked_fill(~allowed, float("-inf"))
    return Ranking(order, tuple(levels), tuple(contexts))


def _unit(x: torch.Tensor) -> torch.Tensor:
    """Order-preserving map of finite values into [0, 1)."""
    lo, hi = float(x.min()), float(x.max())
    return (x - lo) / (hi - lo + 1e-12) * 0.999


def mixed_mask(graph: Graph, ranking: Ranking, n: int, harmful_share: float) -> torch.Tensor:
    """Circuit of about ``n`` edges: the top ``(1 - share) n`` of the ranking and the ``share n``
    most harmful other edges in the context of that size, pruned of dangling nodes."""
    allowed = graph.allowed(ranking.order.device)
    n_harmful = round(harmful_share * n)
    helpful = _top(ranking.order, allowed, n - n_harmful)
    if n_harmful:
        harm = -ranking.context_for(n)
        harm = harm.masked_fill(helpful | (harm <= 0), float("-inf"))
        helpful = helpful | (_top(harm, allowed, n_harmful) & torch.isfinite(harm))
    return prune_dangling(helpful, graph)


@dataclass(frozen=True)
class Calibrated:
    """The chosen circuit per size: ``masks[i]`` [n_s, n_r] bool for ``sizes[i]`` with its harmful
    share, metric value, faithfulness (None when undefined), whether it hits (:func:`calibrated_masks`)
    and the share of rows whose target it keeps in the top 10 (``kept``; empty: taken from ``hits``)."""

    sizes: tuple[int, ...]
    shares: tuple[float, ...]
    masks: tuple[torch.Tensor, ...]
    metric_values: tuple[float, ...]
    faithfulness: tuple[float | None, ...]
    hits: tuple[bool, ...] = ()
    kept: tuple[float, ...] = ()

    def kept_share(self, i: int) -> float:
        return self.kept[i] if self.kept else float(self.hits[i])


def holds(hit: bool, faithfulness: float | None) -> bool:
    """Whether a calibrated circuit holds: target in the top 10 and |F - 1| <= ``CARRY_TOLERANCE``."""
    return bool(hit) and faithfulness is not None and abs(faithfulness - 1.0) <= CARRY_TOLERANCE


def best_per_size(calibrations: Sequence[Calibrated]) -> list[int]:
    """For each size, the index of the calibration (of several rankings, same sizes) whose circuit
    does best: one that holds (target in the top 10, |F - 1| <= ``CARRY_TOLERANCE``) with the
    most edges (the nearest the size asked for); else the target kept first (a hit, then the most
    rows kept), then faithfulness closest to 1 (defined before undefined); ties to the earlier
    calibration."""

    def key(c: Calibrated, i: int) -> tuple:
        f = c.faithfulness[i]
        if holds(c.hits[i], f):
            return (0, -int(c.masks[i].sum()), abs(f - 1.0))
        return (1, not c.hits[i], -c.kept_share(i), f is None, abs(f - 1.0) if f is not None else 0.0)

    return [min(range(len(calibrations)), key=lambda k: (key(calibrations[k], i), k))
            for i in range(len(calibrations[0].sizes))]


def calibrated_masks(graph: Graph, ranking: Ranking, sizes: Sequence[int], evaluate: Callable[[torch.Tensor], torch.Tensor],
                     m_full: float, m_empty: float, shares: Sequence[float] = CALIBRATION_SHARES,
                     faithfulness_of: Callable[[float, float, float], float | None] | None = None,
                     hit_share: float = 1.0) -> Calibrated:
    """For each size, the candidate (one per harmful share) whose faithfulness is closest to 1.

    ``evaluate(masks [M, n_s, n_r]) -> (metric per mask [M], target ranks [M, b])`` runs the
    circuits. A candidate "hits" when it keeps the target in the top ``HIT_K`` on at least
    ``hit_share`` of the rows (default: every row); hitting candidates are preferred, and among
    them the faithfulness closest to 1; when none hits, the candidates keeping the most rows, then
    the faithfulness closest to 1 (with one row, as for one prompt and one counterfactual, that is
    the faithfulness alone). ``m_full`` / ``m_empty``: the
    metric of the full and the empty circuit. When faithfulness is undefined (full and empty
    agree), the helpful-only candidate is kept.
    """
    from kcircuits.circuits.evaluate import faithfulness as default_faithfulness

    faith = faithfulness_of or default_faithfulness
    shares = sorted(float(x) for x in shares)
    tried = [[(share, mixed_mask(graph, ranking, n, share)) for share in shares] for n in sizes]
    values, kept = _run(evaluate, [m for row in tried for _, m in row])
    per = len(shares)
    # a row: (harmful share, mask, metric value, share of rows whose target stays in the top HIT_K)
    rows = [[(share, mask, v, k) for (share, mask), v, k in zip(row, values[i * per:(i + 1) * per],
                                                                kept[i * per:(i + 1) * per], strict=True)]
            for i, row in enumerate(tried)]

    def hits(k: float) -> bool:
        return k >= hit_share - 1e-6  # shares are ratios of small counts: 9/10 meets 0.9

    # finer shares where faithfulness crosses 1 between two neighbouring shares (one more batch)
    finer = []
    for i in range(len(sizes)):
        fs = [faith(v, m_full, m_empty) for _, _, v, _ in rows[i]]
        for k in range(len(shares) - 1):
            a, b = fs[k], fs[k + 1]
            if a is not None and b is not None and (a - 1.0) * (b - 1.0) < 0:
                lo, hi = shares[k], shares[k + 1]
                finer += [(i, lo + (hi - lo) * t) for t in REFINE_STEPS_BETWEEN]
                break
    if finer:
        masks = [mixed_mask(graph, ranking, sizes[i], share) for i, share in finer]
        for (i, share), mask, v, k in zip(finer, masks, *_run(evaluate, masks), strict=True):
            rows[i].append((share, mask, v, k))
    chosen_masks, chosen_shares, chosen_values, chosen_faith, chosen_kept = [], [], [], [], []
    for i, n in enumerate(sizes):
        if i and chosen_faith[-1] is not None and n > int(chosen_masks[-1].sum()):
            # the smaller chosen circuit grown by the ranking: keeps what made it faithful
            grown = grow_mask(graph, ranking, chosen_masks[-1], n)
            (grown_value,), (grown_kept,) = _run(evaluate, [grown])
            rows[i].append((chosen_shares[-1], grown, grown_value, grown_kept))
        faiths = [faith(v, m_full, m_empty) for _, _, v, _ in rows[i]]
        defined = [k for k, f in enumerate(faiths) if f is not None]
        j = min(defined, key=lambda k: (not hits(rows[i][k][3]), 0.0 if hits(rows[i][k][3]) else -rows[i][k][3],
                                        abs(faiths[k] - 1.0))) if defined else 0
        hit_j, f_j = hits(rows[i][j][3]), faiths[j]
        if i and hits(chosen_kept[-1]) and chosen_faith[-1] is not None and not holds(hit_j, f_j) and (
                not hit_j or f_j is None or abs(chosen_faith[-1] - 1.0) < abs(f_j - 1.0)):
            # no circuit of this size holds but the smaller chosen one does: a size is a budget, so
            # it is kept as it is (more edges can hurt, above all under zero ablation)
            rows[i].append((chosen_shares[-1], chosen_masks[-1], chosen_values[-1], chosen_kept[-1]))
            faiths.append(chosen_faith[-1])
            j = len(rows[i]) - 1
        share, mask, value, k = rows[i][j]
        f = faiths[j]
        share, value = float(share), float(value)
        chosen_kept.append(k)
        chosen_masks.append(mask)
        chosen_shares.append(share)
        chosen_values.append(value)
        chosen_faith.append(f)
    return Calibrated(tuple(int(n) for n in sizes), tuple(chosen_shares), tuple(chosen_masks), tuple(chosen_values),
                      tuple(chosen_faith), tuple(hits(k) for k in chosen_kept), tuple(float(k) for k in chosen_kept))


def _run(evaluate: Callable, masks: list[torch.Tensor]) -> tuple[list[float], list[float]]:
    """Per mask: the metric value and the share of rows that keep the target in the top ``HIT_K``."""
    from kcircuits.circuits.evaluate import HIT_K

    values, ranks = evaluate(torch.stack(masks))
    # the share as an exact ratio of counts (a float32 mean makes 9/10 0.89999998, below a required 0.9)
    return [float(v) for v in values], [int((r <= HIT_K).sum()) / r.numel() for r in ranks]


def grow_mask(graph: Graph, ranking: Ranking, mask: torch.Tensor, n: int) -> torch.Tensor:
    """``mask`` [n_s, n_r] with the best-ranked other edges added up to about ``n`` edges, pruned
    of dangling nodes (a superset of the pruned ``mask``)."""
    allowed = graph.allowed(ranking.order.device) & ~mask.to(ranking.order.device)
    extra = _top(ranking.order, allowed, max(0, n - int(mask.sum())))
    return prune_dangling(mask.to(extra.device) | extra, graph)


def refine_and_calibrate(graph: Graph, scores: torch.Tensor, sizes: Sequence[int],
                         evaluate: Callable[[torch.Tensor], torch.Tensor], rescore: Rescore, m_full: float,
                         m_empty: float, *, higher_is_better: bool, freeze_norms: bool,
                         faithfulness_of: Callable[[float, float, float], float | None] | None = None,
                         cancel: CancelFn | None = None, hit_share: float = 1.0) -> tuple[Calibrated, list[Ranking], list[int]]:
    """Both steps of the module doc for every ranking the setting uses (one; under zero ablation,
    with ``freeze_norms``, one per ``ZERO_REFINE_IG_STEPS``): the merged calibration (per size, the
    best circuit of any ranking, :func:`best_per_size`), and per size the ranking it took and that
    ranking's IG steps. ``rescore``: :func:`refine_ranking` (one batch: :func:`batch_rescore`; a
    relation averages over its validation batches); ``evaluate`` and ``hit_share``:
    :func:`calibrated_masks`. ``cancel()`` runs between the re-attributions and before the calibration."""
    steps = ZERO_REFINE_IG_STEPS if freeze_norms else (REFINE_IG_STEPS,)
    rankings = [refine_ranking(graph, scores, rescore, higher_is_better=higher_is_better, ig_steps=k, cancel=cancel)
                for k in steps]
    if cancel is not None:
        cancel()
    cals = [calibrated_masks(graph, r, sizes, evaluate, m_full, m_empty, faithfulness_of=faithfulness_of,
                             hit_share=hit_share)
            for r in rankings]
    pick = best_per_size(cals)

    def take(field: str) -> tuple:
        return tuple(getattr(cals[k], field)[i] for i, k in enumerate(pick))

    merged = Calibrated(tuple(int(n) for n in sizes), take("shares"), take("masks"), take("metric_values"),
                        take("faithfulness"), take("hits"), take("kept"))
    return merged, [rankings[k] for k in pick], [steps[k] for k in pick]

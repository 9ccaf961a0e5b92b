"""ACDC as the Knowledge Circuits paper ran it (METHODS section 2.1): exact, edge by edge.

Order: receivers in reverse topological order (logits first, then per layer from the last: the
MLP input, the v, k and q inputs from the highest index down); for each receiver its senders
from the latest to the earliest. For each edge: remove it, run the model, effect = metric after -
metric now; if effect < tau the edge stays removed (and metric now becomes metric after), else it
is restored. A receiver whose node has no outgoing edge left has all its incoming edges dropped
without evaluation (exact: a node whose every output is ablated cannot influence anything).

Two implementations with the same decisions:

- ``fast=False`` (reference): one full forward (:func:`run_with_edge_ablation`) per evaluated edge.
- ``fast=True``: (1) nothing upstream of the receiver's layer has changed when its edges are
  evaluated (those receivers come later in the order), so the run starts from the cached clean
  residual at that layer with the cached clean sender outputs (blocks called directly); the
  logits receiver needs no block at all; (2) the final norm and unembedding run for the last
  position only; (3) speculation: one batched forward
  evaluates a best-first tree of possible next evaluations: each node is "remove edge e from the
  state reached by assumed decisions on the edges before it", its two children follow the two
  possible decisions on e, weighted by a predictor (EAP: removed iff the first-order estimate of
  the effect is < tau) and its running accuracy. The results are then replayed along the real
  decisions from the root, stopping where the tree has no node for the real decision; every
  result used was therefore computed on exactly the state the sequential algorithm has at that
  point. Batched and truncated forwards can differ from the reference in the last float bits;
  when an effect lies within ``tie_eps`` of tau the decision is re-made with reference forwards.
  Decisions can then only differ on an effect closer to tau than float rounding (e.g. tau = 0
  with edges of exactly zero effect).

Metric: ``match_nll`` (default; per answer token, not divided by the prompt length: tau values
from the reference code correspond to about tau * (S - 1) here), or any name of
:mod:`kcircuits.circuits.metrics` oriented as a loss (higher-is-better metrics are negated so that
"effect < tau" always means "removing the edge costs less than tau").
Cancellation: ``cancel()`` (:data:`kcircuits.errors.CancelFn`) is called between batches (fast) or
edges (plain); the :class:`~kcircuits.errors.Cancelled` it raises propagates.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from kcircuits.circuits.attribution import ablated_outputs_for
from kcircuits.circuits.graph import Graph, get_graph
from kcircuits.circuits.metrics import make_metric
from kcircuits.circuits.patching import (
    SenderRecorder,
    check_supported,
    receiver_hooks,
    run_with_edge_ablation,
    sender_hooks,
)
from kcircuits.errors import BadRequest, CancelFn

if TYPE_CHECKING:
    from kcircuits.lm.loader import LoadedModel

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, str], None]


@dataclass
class AcdcResult:
    """Outcome of one ACDC run. Masks and scores are CPU tensors [n_senders, n_receivers].

    ``effects``: metric change when the edge was evaluated (NaN when it was not). ``metric_trace``:
    metric now after each evaluated edge. ``metric_*`` are in the oriented (loss) convention.
    """

    graph: Graph
    edge_mask: torch.Tensor
    effects: torch.Tensor
    tau: float
    metric: str
    ablation: str
    evaluated: int = 0
    skipped: int = 0
    removed: int = 0
    metric_full: float = 0.0
    metric_final: float = 0.0
    metric_trace: list[float] = field(default_factory=list)
    forwards: int = 0
    tie_checks: int = 0
    fast: bool = True
    elapsed_s: float = 0.0

    @property
    def kept(self) -> int:
        """Edges left in the circuit."""
        return int(self.edge_mask.sum())

    def summary(self) -> dict[str, Any]:
        return {"tau": self.tau, "metric": self.metric, "ablation": self.ablation, "edges": self.kept,
                "evaluated": self.evaluated, "skipped": self.skipped, "removed": self.removed,
                "total_edges": self.graph.n_edges, "metric_full": self.metric_full,
                "metric_final": self.metric_final, "forwards": self.forwards, "tie_checks": self.tie_checks,
                "fast": self.fast, "elapsed_s": self.elapsed_s}


# the sequential walk ------------------------------------------------------------------------
class _Walk:
    """Cursor over ACDC's sequence of events: ("skip", r) drops receiver r's incoming edges;
    ("eval", r, s) evaluates edge s -> r. Pure function of the mask state and the cursor."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.order = list(range(graph.n_receivers - 1, -1, -1))
        self.n_up = graph.n_up.tolist()
        self.heads = [graph.receiver_heads(r) if graph.receivers[r]["slot"] != "logits" else []
                      for r in range(graph.n_receivers)]

    def start(self) -> tuple[int, int | None]:
        return (0, None)

    def next(self, mask: torch.Tensor, cur: tuple[int, int | None]):
        """(event, cursor after the event) or (None, cur) at the end. Applies skips to ``mask``."""
        ri, s = cur
        if ri >= len(self.order):
            return None, cur
        r = self.order[ri]
        if s is None:
            nodes = self.heads[r]
            if nodes and not bool(mask[nodes].any()):
                mask[: self.n_up[r], r] = False
                return ("skip", r), (ri + 1, None)
            s = self.n_up[r] - 1
        nxt = (ri, s - 1) if s > 0 else (ri + 1, None)
        return ("eval", r, s), nxt


# evaluation -----------------------------------------------------------------------------------
class _Evaluator:
    """Computes the oriented metric of edge masks: reference (one full forward per mask) or fast
    (batched, started at the first layer with an ablated receiver, last position only)."""

    def __init__(self, model: LoadedModel, tokens: torch.Tensor, graph: Graph, metric, sign: float, ablated: torch.Tensor):
        self.model, self.tokens, self.graph, self.metric, self.sign = model, tokens, graph, metric, sign
        self.ablated = ablated  # [b', pos', n_s, d]
        self.forwards = 0
        self._clean: dict[str, Any] | None = None
        self._buffers: dict[Any, Any] = {}

    # reference
    def plain(self, mask: torch.Tensor) -> float:
        self.forwards += 1
        with torch.no_grad():
            logits = run_with_edge_ablation(self.model, self.tokens, self.graph, mask, self.ablated)
        return self.sign * float(self.metric(logits))

    # fast
    def _clean_cache(self) -> dict[str, Any]:
        if self._clean is None:
            L = self.graph.n_layers
            wanted = {f"blocks.{i}.hook_resid_pre" for i in range(L)} | {f"blocks.{L - 1}.hook_resid_post"}
            wanted |= set(self.model.block_input_names)
            store: dict[str, torch.Tensor] = {}

            def keeper(name):
                def keep(x, hook):  # hook.name may be an alias's canonical name
                    store[name] = x.detach()
                    return x

                return keep

            rec = SenderRecorder(self.graph, *self.tokens.shape, self.model.arch.d_model, self.model.device,
                                 self.model.dtype, grad=False)
            hooks = sender_hooks(self.graph, rec.store) + [(name, keeper(name)) for name in sorted(wanted)]
            with torch.no_grad():
                self.model.run_with_hooks(self.tokens, hooks)
            self._clean = {"senders": rec.all().clone(), **store}  # senders [n_s, b, pos, d]
        return self._clean

    def _recorder(self, M: int, n0: int) -> SenderRecorder:
        """A recorder for M masks whose first ``n0`` senders hold the clean outputs. Buffers are
        reused between calls: a run from layer l only overwrites senders from layer l on, and ACDC
        moves from late to early layers, so the clean prefix rarely needs a fresh copy."""
        b, pos = self.tokens.shape
        rec = SenderRecorder(self.graph, M * b, pos, self.model.arch.d_model, self.model.device,
                             self.model.dtype, grad=False)  # fresh state; torch.empty is cheap
        buf, clean_upto = self._buffers.get(M, (rec.buf, 0))
        if clean_upto < n0:
            buf[clean_upto:n0] = self._clean_cache()["senders"][clean_upto:n0].repeat(1, M, 1, 1)
        rec.buf, rec.filled = buf, n0
        self._buffers[M] = (buf, n0)  # senders from n0 on are overwritten by this run
        return rec

    def finals(self, masks: torch.Tensor) -> torch.Tensor:
        """Input of the final norm at the last position for each mask in ``masks`` [M, n_s, n_r]
        (bool), from one batched run: [M, b, d]."""
        graph, model = self.graph, self.model
        clean = self._clean_cache()
        M = masks.shape[0]
        b, pos = self.tokens.shape
        dtype = model.dtype
        w = (~masks).to(dtype)
        flags = torch.stack([w[:, : g.n_up, g.start:g.stop].ne(0).any() for g in graph.receiver_groups]).tolist()
        L = graph.n_layers
        layers = [g.layer if g.layer is not None else L for g, f in zip(graph.receiver_groups, flags, strict=True) if f]
        start = min(layers) if layers else L
        n0 = graph.layer_n_up(start) if start < L else graph.n_senders
        ablated = self.ablated.to(device=model.device, dtype=dtype).permute(2, 0, 1, 3)  # [n_s, b', pos', d]
        rec = self._recorder(M, n0)
        with torch.no_grad():
            if start < L:
                self.forwards += 1
                active = [f and g.slot != "logits" for g, f in zip(graph.receiver_groups, flags, strict=True)]
                hooks = [h for h in sender_hooks(graph, rec.store) if not h[0].startswith("blocks.0.hook_resid_pre")]
                hooks += receiver_hooks(graph, w, ablated, rec, M, active)
                x = clean[f"blocks.{start}.hook_resid_pre"].repeat(M, 1, 1)
                with model.hooks(hooks):
                    x = model.run_blocks(x, start, clean)
                final = x[:, -1]  # [M*b, d]
            else:
                final = clean[f"blocks.{L - 1}.hook_resid_post"][:, -1].repeat(M, 1)
            # logits receiver: in = actual + sum_u w_u (ablated_u - actual_u), last position only
            r = graph.n_receivers - 1
            wl = w[:, :, r]  # [M, n_s]
            act = rec.buf[:, :, -1].reshape(graph.n_senders, M, b, -1)  # [n_s, M, b, d]
            abl = ablated[:, :, -1].expand(graph.n_senders, b, -1)  # [n_s, b, d]
            corr = torch.einsum("ubd,mu->mbd", abl, wl) - torch.einsum("umbd,mu->mbd", act, wl)
            final = final + corr.reshape(M * b, -1)
        return final.reshape(M, b, -1)

    def metric_of(self, finals: torch.Tensor) -> list[float]:
        """Oriented metric from final residuals at the last position [N, b, d] (final norm and
        unembedding of the last position only)."""
        N, b, _ = finals.shape
        with torch.no_grad():
            logits = self.model.unembed_final(finals.reshape(N * b, 1, -1))
            per = self.metric.per_example(logits).reshape(N, b).mean(1)
        return (self.sign * per).tolist()

    def fast(self, masks: torch.Tensor) -> list[float]:
        """Oriented metric of each mask in ``masks`` [M, n_s, n_r] (bool) in one batched run."""
        return self.metric_of(self.finals(masks))


def _oriented_metric(model: LoadedModel, tokens: torch.Tensor, target_ids: torch.Tensor, name: str, foil_ids=None):
    with torch.no_grad():
        clean_logits = model.logits(tokens)
    metric = make_metric(name, target_ids, foil_ids=foil_ids, clean_logits=clean_logits)
    return metric, (-1.0 if metric.higher_is_better else 1.0)


def _targets(target_ids, b: int, device) -> torch.Tensor:
    t = torch.as_tensor(target_ids, dtype=torch.long).reshape(-1)
    if t.numel() == 1 and b > 1:
        t = t.repeat(b)
    if t.numel() != b:
        raise ValueError(f"{t.numel()} targets for {b} prompts")
    return t.to(device)


class _Throttle:
    def __init__(self, progress: ProgressFn | None, total: int, every_s: float = 0.25):
        self.progress, self.total, self.every_s, self.last = progress, total, every_s, 0.0

    def __call__(self, done: int, message: str, force: bool = False) -> None:
        now = time.monotonic()
        if self.progress is not None and (force or now - self.last >= self.every_s):
            self.last = now
            self.progress(done, self.total, message)


def acdc(model: LoadedModel, tokens: torch.Tensor, target_ids, tau: float, *, ablation: str = "zero",
         metric: str = "match_nll", corrupt_tokens: torch.Tensor | None = None, foil_ids=None,
         kv_mode: str = "grouped", progress: ProgressFn | None = None, cancel: CancelFn | None = None,
         fast: bool = True, batch_size: int = 16, tie_eps: float | None = None,
         predictor: str = "eap") -> AcdcResult:
    """Run ACDC on ``tokens`` [b, pos] (prompts of equal length) with answers ``target_ids`` [b].

    ``ablation``: zero (the paper's), mean, or patch (needs ``corrupt_tokens`` [b, pos]).
    ``batch_size``: most candidate masks per batched forward (fast only). ``tie_eps``: band around
    tau where fast decisions are re-made with reference forwards (default 1e-4 for float32).
    ``predictor`` (fast only; affects speed, never the result): how speculation guesses each
    decision: "eap" (removed iff the EAP estimate of the effect is < tau; one forward+backward)
    or "remove" (always removed).
    Returns an :class:`AcdcResult`; ``cancel()`` is called between steps (module docstring).
    """
    if tokens.dim() != 2:
        raise ValueError("tokens must be [batch, pos]")
    if math.isnan(tau):
        raise BadRequest("tau must be a number")
    t0 = time.perf_counter()
    graph = get_graph(model.arch, kv_mode)
    check_supported(graph)
    tokens = tokens.to(model.device)
    targets = _targets(target_ids, tokens.shape[0], model.device)
    metric_fn, sign = _oriented_metric(model, tokens, targets, metric, foil_ids)
    ablated = ablated_outputs_for(model, tokens, graph, ablation,
                                  None if corrupt_tokens is None else corrupt_tokens.to(model.device))
    ev = _Evaluator(model, tokens, graph, metric_fn, sign, ablated)
    if tie_eps is None:
        tie_eps = 1e-4 if model.dtype == torch.float32 else 1e-2
    mask = graph.full_mask(model.device)
    result = AcdcResult(graph, mask, torch.full((graph.n_senders, graph.n_receivers), float("nan")), float(tau),
                        metric, ablation, fast=fast)
    metric_now = ev.fast(mask[None])[0] if fast else ev.plain(mask)
    result.metric_full = metric_now
    walk = _Walk(graph)
    throttle = _Throttle(progress, graph.n_edges)
    if fast:
        predicted = _predict_removed(ev, result.tau, predictor)
        _run_fast(ev, walk, mask, metric_now, result, throttle, cancel, batch_size, tie_eps, predicted)
    else:
        _run_plain(ev, walk, mask, metric_now, result, throttle, cancel)
    result.edge_mask = mask.cpu()
    result.forwards = ev.forwards
    result.elapsed_s = time.perf_counter() - t0
    throttle(result.evaluated + result.skipped, "done", force=True)
    return result


def _predict_removed(ev: _Evaluator, tau: float, predictor: str) -> torch.Tensor:
    """[n_s, n_r] bool guesses of ACDC's decisions (speculation only)."""
    graph = ev.graph
    if predictor == "remove":
        return torch.ones(graph.n_senders, graph.n_receivers, dtype=torch.bool)
    if predictor != "eap":
        raise BadRequest(f"unknown predictor {predictor!r}; choose eap or remove")
    from kcircuits.circuits.attribution import gradient_scores

    scores = gradient_scores(ev.model, ev.tokens, graph, ev.metric, ev.ablated, [1.0])
    return (ev.sign * scores.float() < tau).cpu()


def _run_plain(ev: _Evaluator, walk: _Walk, mask, metric_now, result: AcdcResult, throttle, cancel) -> None:
    cur = walk.start()
    while True:
        if cancel is not None:
            cancel()
        event, cur = walk.next(mask, cur)
        if event is None:
            break
        if event[0] == "skip":
            result.skipped += walk.n_up[event[1]]
            continue
        _, r, s = event
        mask[s, r] = False
        after = ev.plain(mask)
        effect = after - metric_now
        metric_now = _decide(result, mask, r, s, effect, after, metric_now)
        throttle(result.evaluated + result.skipped, f"{result.evaluated} edges evaluated")
    result.metric_final = metric_now


def _decide(result: AcdcResult, mask, r: int, s: int, effect: float, after: float, metric_now: float) -> float:
    """Record one evaluated edge; mask[s, r] is False on entry. Returns the new metric now."""
    result.evaluated += 1
    result.effects[s, r] = effect
    if effect < result.tau:
        result.removed += 1
        metric_now = after
    else:
        mask[s, r] = True
    result.metric_trace.append(metric_now)
    return metric_now


@dataclass
class _Node:
    """One speculated evaluation: the skips walked before it, its edge (s -> r), the state before
    removing the edge, the cursor after it, and its path probability."""

    skips: list[int]
    r: int
    s: int
    before: torch.Tensor
    cursor: tuple[int, int | None]
    prob: float
    children: dict[bool, _Node] = field(default_factory=dict)
    metric: float | None = None


def _next_node(walk: _Walk, state: torch.Tensor, cur, prob: float) -> _Node | None:
    """Walk from ``state`` (modified in place by skips) to the next evaluation."""
    skips = []
    while True:
        event, cur = walk.next(state, cur)
        if event is None:
            return None
        if event[0] == "skip":
            skips.append(event[1])
            continue
        return _Node(skips, event[1], event[2], state, cur, prob)


def _plan(walk: _Walk, mask, cur, width: int, predict_removed: torch.Tensor, accuracy: float) -> _Node | None:
    """Best-first tree of up to ``width`` speculated evaluations from the real state: a node's
    children follow its two possible decisions, weighted by the predictor's running accuracy."""
    root = _next_node(walk, mask.clone(), cur, 1.0)
    if root is None:
        return None
    frontier, count = [root], 1
    while frontier and count < width:
        best = max(range(len(frontier)), key=lambda k: frontier[k].prob)
        node = frontier.pop(best)
        predicted = bool(predict_removed[node.s, node.r])
        for removed in (predicted, not predicted):
            if count >= width:
                break
            state = node.before.clone()
            state[node.s, node.r] = not removed
            p = node.prob * (accuracy if removed == predicted else 1.0 - accuracy)
            child = _next_node(walk, state, node.cursor, p)
            if child is not None:
                node.children[removed] = child
                frontier.append(child)
                count += 1
    return root


def _tree_nodes(root: _Node) -> list[_Node]:
    out, stack = [], [root]
    while stack:
        node = stack.pop()
        out.append(node)
        stack.extend(node.children.values())
    return out


def _run_fast(ev: _Evaluator, walk: _Walk, mask, metric_now, result: AcdcResult, throttle, cancel,
              batch_size, tie_eps, predict_removed: torch.Tensor) -> None:
    """Speculative batches: a best-first tree of possible next evaluations (``predict_removed``
    [n_s, n_r] bool guides it) evaluated in one forward, then replayed along the real decisions."""
    cur = walk.start()
    hits, seen = 3.0, 4.0
    while True:
        if cancel is not None:
            cancel()
        root = _plan(walk, mask, cur, max(1, batch_size), predict_removed, hits / seen)
        if root is None:
            for r in _drain(walk, mask, cur):
                result.skipped += walk.n_up[r]
            break
        nodes = _tree_nodes(root)
        evals = torch.stack([n.before for n in nodes])
        for k, n in enumerate(nodes):
            evals[k, n.s, n.r] = False
        # one unembedding for the whole tree: memory-bound, so about the cost of a single row
        for n, value in zip(nodes, ev.fast(evals), strict=True):
            n.metric = value
        node: _Node | None = root
        while node is not None:
            for r in node.skips:
                event, cur = walk.next(mask, cur)
                assert event == ("skip", r), event
                result.skipped += walk.n_up[r]
            event, cur = walk.next(mask, cur)
            assert event == ("eval", node.r, node.s), (event, node.r, node.s)
            s, r = node.s, node.r
            mask[s, r] = False
            after = node.metric
            effect = after - metric_now
            if abs(effect - result.tau) <= tie_eps:
                result.tie_checks += 1
                before_plain = ev.plain(mask_with(mask, s, r, True))
                after = ev.plain(mask)
                effect = after - before_plain
            metric_now = _decide(result, mask, r, s, effect, after, metric_now)
            removed = not bool(mask[s, r])
            hits += float(removed == bool(predict_removed[s, r]))
            seen += 1.0
            node = node.children.get(removed)
        throttle(result.evaluated + result.skipped, f"{result.evaluated} edges evaluated")
    result.metric_final = metric_now


def _drain(walk: _Walk, mask, cur) -> list[int]:
    """Trailing skips after the last evaluation."""
    out = []
    while True:
        event, cur = walk.next(mask, cur)
        if event is None:
            return out
        out.append(event[1])


def mask_with(mask: torch.Tensor, s: int, r: int, value: bool) -> torch.Tensor:
    out = mask.clone()
    out[s, r] = value
    return out


def acdc_circuit(model: LoadedModel, prompt: str, target: str, tau: float = 0.01, *, ablation: str = "zero",
                 metric: str | None = None, corrupt_prompt: str | None = None, subject: str | None = None,
                 kv_mode: str = "grouped", progress: ProgressFn | None = None, cancel: CancelFn | None = None,
                 fast: bool = True, batch_size: int = 16, max_edges_returned: int = 3000, random_seeds: int = 3,
                 with_heads: bool = True, foil: str | None = None, counterfactuals: int = 1) -> dict:
    """ACDC on one prompt, returned in the circuit wire format (``method: "acdc"``).

    Edge ``score``: the metric change measured when the edge was tried (in the metric's own
    orientation; 0 for edges dropped without evaluation). ``params.acdc`` holds the run's counts.
    """
    from kcircuits.circuits.discover import build_result, prepare

    start = time.perf_counter()
    setup = prepare(model, prompt, target, ablation=ablation, metric=metric, corrupt_prompt=corrupt_prompt,
                    subject=subject, kv_mode=kv_mode, foil=foil, counterfactuals=counterfactuals)
    corrupt_tokens = (torch.cat([model.tokenize(p) for p in setup.corrupt_prompts])
                      if setup.ablation == "patch" else None)
    res = acdc(model, setup.tokens, setup.target_ids, tau, ablation=setup.ablation, metric=setup.metric.name,
               corrupt_tokens=corrupt_tokens, foil_ids=setup.foil_ids or None,
               kv_mode=kv_mode, progress=progress, cancel=cancel, fast=fast, batch_size=batch_size)
    sign = -1.0 if setup.metric.higher_is_better else 1.0
    scores = (sign * res.effects.nan_to_num(0.0)).to(model.device)
    params = {"tau": float(tau), "kv_mode": kv_mode, "fast": fast, "batch_size": batch_size,
              "max_edges_returned": max_edges_returned, "random_seeds": random_seeds,
              "metric_normalisation": "per answer token (not divided by the prompt length)",
              "score_meaning": "metric change when ACDC tried removing the edge (0: dropped unevaluated)",
              "acdc": res.summary()}
    timings = {"attribution_s": res.elapsed_s, "total_s": time.perf_counter() - start}
    return build_result(model, setup, scores, res.edge_mask.to(model.device), "acdc", params, timings=timings,
                        max_edges_returned=max_edges_returned, random_seeds=random_seeds, with_heads=with_heads)

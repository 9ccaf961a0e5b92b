"""Edge attribution for all edges at once (METHODS §2.2-2.3), on the model's device.

score(u -> r) = sum_{batch, pos, d} (z'_u - z_u) * avg_alpha dM/d(in_r) evaluated at input
x_alpha = x' + alpha (x - x'), the first-order estimate of M(edge ablated) - M(clean).

- ``eap``: alpha = 1 (the clean run). Cost: one forward with grad + one backward (+ the
  ablated/corrupted forward that produced z').
- ``eap-ig`` (inputs variant, Hanna et al. 2024): alphas at the midpoints (k + 1/2)/m, k < m, of
  the path from the ablated input (corrupted / zero / mean embeddings) to the clean input; the m
  steps run as one batch. Completeness: the input node's scores sum to ~ M(x') - M(x).
- ``clean-corrupted``: alphas {0, 1} (average of the gradients at both ends).
- ``eap-ig-mask``: integrated gradients along the *edge-mask* path: every edge is kept with the
  same weight alpha (midpoints of m steps), so each receiver sees
  ``alpha * actual_in + (1 - alpha) * ablated_in`` with the actual values recomputed in that pass.
  score(u -> r) = avg_alpha (z'_u - z^alpha_u) . dM/d(in_r). Completeness: the scores sum to
  ~ M(empty circuit) - M(full circuit), the very denominator of faithfulness, whatever the
  ablation (patch, zero, mean). Input interpolation (``eap-ig``) cannot express zero ablation:
  a pre-norm model sees a scaled input almost as the clean one.
  Nor can the uniform mask path on its own: scaling every input of a pre-norm receiver by alpha
  changes nothing after the norm, so under zero ablation the path is flat until alpha is near 0
  and the scores miss almost all of M(empty) - M(full). With ``freeze_norms`` each norm divides
  by max(its own scale, the scale it has at the path's upper end: the full model, or ``base``).
  Small inputs are then not scaled back up (the path is linear through the norm there) while
  large ones are still normalised (a pure frozen scale lets SmolLM2's massive activations grow
  without bound mid-path: inf, then NaN). The ends are exact: alpha = 1 is the real run, and at
  alpha = 0 every ablated input is 0 and a norm of 0 is 0 either way; so completeness holds for
  the real M(empty) - M(base). Used for zero ablation.
- ``exact``: true patching of every edge alone (one masked run per edge, batched): the oracle.

Gradients are taken w.r.t. activations (parameters stay frozen): the input node's output
(``blocks.0.hook_resid_pre``) is replaced by a leaf that requires grad, and each receiver hook
registers a tensor hook whose one einsum scores every upstream edge of that receiver group.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from kcircuits.circuits.graph import Graph
from kcircuits.circuits.patching import (
    Hook,
    check_supported,
    mask_batch_size,
    run_with_edge_ablation,
    sender_hooks,
    sender_outputs,
)
from kcircuits.errors import BadRequest

if TYPE_CHECKING:
    from kcircuits.lm.loader import LoadedModel

METHODS = ("eap", "eap-ig", "eap-ig-mask", "clean-corrupted", "exact")
ABLATIONS = ("patch", "zero", "mean")
#: The exact oracle runs one masked forward per edge; refuse larger graphs by default.
EXACT_MAX_EDGES = 5000


def freezes_norms(ablation: str) -> bool:
    """Whether mask-path attribution freezes the norm scales: under zero ablation (a path of
    scaled inputs is invisible to pre-norm receivers; :func:`mask_ig_scores`)."""
    return ablation == "zero"


def method_alphas(method: str, ig_steps: int = 5) -> list[float]:
    """Interpolation points between the ablated (0) and the clean (1) input for a gradient method."""
    if method == "eap":
        return [1.0]
    if method == "eap-ig":
        if ig_steps < 1:
            raise BadRequest("ig_steps must be >= 1")
        return [(k + 0.5) / ig_steps for k in range(ig_steps)]
    if method == "clean-corrupted":
        return [0.0, 1.0]
    raise BadRequest(f"unknown gradient method {method!r}")


def _last_only(metric) -> bool:
    """The metric reads the last position only, so the other positions need no unembedding."""
    return getattr(metric, "position", None) == -1


def _flat_grad(g: torch.Tensor) -> torch.Tensor:
    """A receiver group's gradient [b, pos, n, d] as [b*pos*d, n] (to meet deltas [u, b*pos*d])."""
    return g.permute(0, 1, 3, 2).reshape(-1, g.shape[2])


def gradient_scores(model: LoadedModel, tokens: torch.Tensor, graph: Graph, metric: Callable[[torch.Tensor], torch.Tensor],
                    ablated_outputs: torch.Tensor, alphas: list[float], *,
                    clean_outputs: torch.Tensor | None = None,
                    extra_hooks: list[Hook] | None = None) -> torch.Tensor:
    """Attribution scores [n_senders, n_receivers] (float32, model device; 0 off the allowed edges).

    tokens [b, pos]; ablated_outputs [b or 1, pos or 1, n_s, d]; ``metric(logits [A*b, pos, V])``
    must average over its batch (so gradients are averaged over the A = len(alphas) steps).
    ``clean_outputs`` [b, pos, n_s, d] is computed when not given (one extra forward).
    """
    check_supported(graph)
    b, pos = tokens.shape
    A = len(alphas)
    dev, dtype = model.device, model.dtype
    if clean_outputs is None:
        clean_outputs = sender_outputs(model, tokens, graph)
    clean = clean_outputs.to(dev).permute(2, 0, 1, 3)  # [n_s, b, pos, d]
    ablated = ablated_outputs.to(device=dev, dtype=clean.dtype).permute(2, 0, 1, 3).expand_as(clean)
    delta = (ablated - clean).float().reshape(graph.n_senders, -1)  # [n_s, b*pos*d]
    scores = torch.zeros(graph.n_senders, graph.n_receivers, device=dev, dtype=torch.float32)
    alpha = torch.tensor(alphas, device=dev, dtype=dtype).repeat_interleave(b).view(A * b, 1, 1)
    base = ablated[0].repeat(A, 1, 1)  # [A*b, pos, d]
    clean_in = clean[0].repeat(A, 1, 1)

    def input_hook(x, hook):
        leaf = (base + alpha * (clean_in - base)).detach().requires_grad_(True)
        return leaf

    def make_receiver(group):
        n_up, s, e = group.n_up, group.start, group.stop

        def on_grad(g):
            g = g.float().reshape(A, b, pos, -1, g.shape[-1]).sum(0)  # [b, pos, n, d]
            scores[:n_up, s:e] += delta[:n_up] @ _flat_grad(g)

        def hook(x, hook):
            # a fresh tensor: the hook's input may also continue along the residual stream
            # (hook_mlp_in), whose gradient must not be counted for this receiver
            if x.requires_grad:
                x = x.clone()
                x.register_hook(on_grad)
            return x

        return hook

    hooks = [("blocks.0.hook_resid_pre", input_hook)]
    hooks += [(g.hook, make_receiver(g)) for g in graph.receiver_groups]
    with torch.enable_grad():
        logits = model.run_with_hooks(tokens.repeat(A, 1), hooks + list(extra_hooks or []), _last_only(metric))
        value = metric(logits)
        value.backward()
    return scores


def mask_ig_scores(model: LoadedModel, tokens: torch.Tensor, graph: Graph, metric: Callable[[torch.Tensor], torch.Tensor],
                   ablated_outputs: torch.Tensor, ig_steps: int = 5, *, base: torch.Tensor | None = None,
                   alphas: Sequence[float] | None = None, extra_hooks: list[Hook] | None = None,
                   freeze_norms: bool = False) -> torch.Tensor:
    """``eap-ig-mask`` scores [n_senders, n_receivers] (float32; 0 off the allowed edges).

    The path runs from the empty circuit to the circuit ``base`` ([n_s, n_r] bool; default every
    edge): edges of ``base`` are kept with weight alpha, the others stay ablated. Each receiver
    then sees ``const + sum_u z'_u + alpha * sum_{u in base} (z_u - z'_u)``. The score of any edge,
    inside ``base`` or not, is avg_alpha (z'_u - z^alpha_u) . dM/d(in_r): the first-order effect of
    ablating it (or, outside ``base``, minus the effect of adding it) along that path; scores of
    ``base`` sum to ~ M(empty) - M(base). tokens [b, pos]; ablated_outputs [b or 1, pos or 1, n_s, d];
    ``metric`` averages over its batch of m*b rows (step-major). One forward and one backward.
    ``alphas`` replaces the m midpoints (e.g. ``[1.0]``: the plain gradient where ``base`` runs).
    ``freeze_norms``: every norm divides by at least the scale it has where ``base`` runs (module doc), so
    the path is not invisible to pre-norm receivers; both ends stay exact.
    """
    check_supported(graph)
    if ig_steps < 1:
        raise BadRequest("ig_steps must be >= 1")
    b, pos = tokens.shape
    points = list(alphas) if alphas is not None else [(k + 0.5) / ig_steps for k in range(ig_steps)]
    A, d = len(points), model.arch.d_model
    dev, dtype = model.device, model.dtype
    keep = torch.tensor(points, device=dev, dtype=dtype).repeat_interleave(b)
    keep = keep.view(A * b, 1, 1)  # [A*b, 1, 1]
    abl = ablated_outputs.to(device=dev, dtype=dtype).permute(2, 0, 1, 3)  # [n_s, b', pos', d]
    abl = abl.expand(graph.n_senders, b, pos, d).repeat(1, A, 1, 1)  # [n_s, A*b, pos, d]
    abl_cum = torch.cat([torch.zeros_like(abl[:1]), abl.cumsum(0)])  # [n_s + 1, A*b, pos, d]
    actual = torch.empty(graph.n_senders, A * b, pos, d, device=dev, dtype=dtype)  # detached z^alpha
    attached: list[torch.Tensor | None] = [None] * graph.n_senders  # z^alpha with autograd history
    running = {"n": 0, "sum": torch.zeros(A * b, pos, d, device=dev, dtype=dtype)}
    scores = torch.zeros(graph.n_senders, graph.n_receivers, device=dev, dtype=torch.float32)
    sub = None if base is None else (base.to(dev).bool() & graph.allowed(dev))
    lazy: dict[str, torch.Tensor] = {}

    def store(start: int, stop: int, x: torch.Tensor) -> None:  # x [n, A*b, pos, d]
        actual[start:stop] = x.detach()
        if sub is not None:
            for i in range(start, stop):
                attached[i] = x[i - start]

    def actual_sum(n: int) -> torch.Tensor:
        if n > running["n"]:
            running["sum"] = running["sum"] + actual[running["n"]:n].sum(0)
            running["n"] = n
        return running["sum"] if n == running["n"] else actual[:n].sum(0)

    def kept_part(n_up: int, s: int, e: int) -> torch.Tensor:
        """sum_{u in base} (z_u - z'_u) per receiver of the group: [A*b, pos, e - s, d] (attached)."""
        rows = torch.nonzero(sub[:n_up, s:e].any(1)).flatten().tolist()
        if not rows:
            return torch.zeros(A * b, pos, e - s, d, device=dev, dtype=dtype)
        diff = torch.stack([attached[u] for u in rows]) - abl[rows]  # [k, A*b, pos, d]
        return torch.einsum("kn,kbpd->bpnd", sub[rows, s:e].to(dtype), diff)

    def make_receiver(group):
        n_up, s, e = group.n_up, group.start, group.stop

        def hook(x, hook):
            one = x.dim() == 3  # mlp_in / logits: [b, pos, d]; q/k/v: [b, pos, n, d]
            up = actual_sum(n_up) if one else actual_sum(n_up).unsqueeze(2)
            ablated_up = abl_cum[n_up] if one else abl_cum[n_up].unsqueeze(2)
            k = keep if one else keep.unsqueeze(-1)
            if sub is None:  # uniform path: alpha * x + (1 - alpha) * (x - actual + ablated)
                mixed = k * x + (1 - k) * (x.detach() - up + ablated_up)
            else:
                kept = kept_part(n_up, s, e)
                mixed = x.detach() - up + ablated_up + k * (kept[:, :, 0] if one else kept)
                if not mixed.requires_grad and x.requires_grad:  # nothing kept upstream: still score its edges
                    mixed = mixed + 0 * x
            if mixed.requires_grad:

                def on_grad(g):
                    if "delta" not in lazy:  # every sender is recorded once the backward runs
                        lazy["delta"] = (abl - actual).float().reshape(graph.n_senders, -1)  # [n_s, A*b*pos*d]
                    g = g.float()
                    scores[:n_up, s:e] += lazy["delta"][:n_up] @ _flat_grad(g.unsqueeze(2) if g.dim() == 3 else g)

                mixed.register_hook(on_grad)
            return mixed

        return hook

    def input_leaf(x, hook):
        return x.detach().requires_grad_(True)

    hooks = [("blocks.0.hook_resid_pre", input_leaf)] + sender_hooks(graph, store)
    hooks += [(g.hook, make_receiver(g)) for g in graph.receiver_groups]
    scales = contextlib.nullcontext()
    if freeze_norms:
        frozen = FrozenScales()
        with torch.no_grad(), model.norm_scales(frozen):
            if base is None:
                model.run_with_hooks(tokens, list(extra_hooks or []), True)
            else:
                run_with_edge_ablation(model, tokens, graph, base.to(dev).bool(), ablated_outputs, extra_hooks=extra_hooks)
        frozen.replay(A)
        scales = model.norm_scales(frozen)
    with torch.enable_grad(), scales:
        logits = model.run_with_hooks(tokens.repeat(A, 1), hooks + list(extra_hooks or []), _last_only(metric))
        metric(logits).backward()
    return scores


class FrozenScales:
    """A norm-scale provider (:meth:`kcircuits.lm.interface.LMInterface.norm_scales`): records
    each norm call's own scale during one forward, then, after :meth:`replay`, floors each call's
    scale at the recorded one (same call order, repeated for ``steps`` copies of the batch,
    step-major rows): ``max(own, recorded)``."""

    def __init__(self) -> None:
        self.recorded: list[torch.Tensor] = []
        self.steps: int | None = None
        self.calls = 0

    def replay(self, steps: int) -> None:
        self.steps, self.calls = steps, 0

    def __call__(self, scale: torch.Tensor) -> torch.Tensor:
        if self.steps is None:
            self.recorded.append(scale.detach())
            return scale
        if self.calls >= len(self.recorded):
            raise ValueError("more norm calls than in the recorded forward")
        rec = self.recorded[self.calls]
        self.calls += 1
        if scale.numel() != self.steps * rec.numel():
            raise ValueError(f"norm call {self.calls - 1}: scale {tuple(scale.shape)} does not repeat the "
                             f"recorded {tuple(rec.shape)} {self.steps} times")
        floor = rec.repeat(self.steps, *([1] * (rec.dim() - 1))).reshape(scale.shape).to(scale.dtype)
        return torch.maximum(scale, floor)


def exact_scores(model: LoadedModel, tokens: torch.Tensor, graph: Graph, metric: Callable[[torch.Tensor], torch.Tensor],
                 ablated_outputs: torch.Tensor, *, batch_size: int | None = None, max_edges: int = EXACT_MAX_EDGES,
                 per_example: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 extra_hooks: list[Hook] | None = None) -> torch.Tensor:
    """True patching effect M(only edge ablated) - M(clean) for every allowed edge [n_s, n_r].

    ``per_example(logits [M*b, pos, V]) -> [M*b]`` (e.g. ``Metric.per_example``) lets a batch of
    masks be scored in one forward; without it each mask runs alone.
    """
    if graph.n_edges > max_edges:
        raise BadRequest(f"exact patching runs one forward per edge; {graph.n_edges} edges exceed the limit "
                         f"of {max_edges} (use eap or eap-ig)")
    check_supported(graph)
    dev = model.device
    allowed = graph.allowed(dev)
    edges = torch.nonzero(allowed)  # [E, 2]
    scores = torch.zeros(graph.n_senders, graph.n_receivers, device=dev, dtype=torch.float32)
    b = tokens.shape[0]
    with torch.no_grad():
        base = metric(run_with_edge_ablation(model, tokens, graph, allowed, ablated_outputs, extra_hooks=extra_hooks)).float()
        step = (batch_size or mask_batch_size(model, tokens)) if per_example is not None else 1
        for i in range(0, edges.shape[0], step):
            chunk = edges[i:i + step]
            masks = allowed.unsqueeze(0).repeat(chunk.shape[0], 1, 1)
            masks[torch.arange(chunk.shape[0], device=dev), chunk[:, 0], chunk[:, 1]] = False
            logits = run_with_edge_ablation(model, tokens, graph, masks, ablated_outputs,
                                            extra_hooks=extra_hooks)  # [M, b, pos, V]
            if per_example is not None:
                vals = per_example(logits.reshape(-1, *logits.shape[2:])).float().view(-1, b).mean(1)
            else:
                vals = metric(logits[0]).float().view(1)
            scores[chunk[:, 0], chunk[:, 1]] = vals - base
    return scores


def attribute(model: LoadedModel, tokens: torch.Tensor, graph: Graph, metric, ablated_outputs: torch.Tensor, method: str,
              *, ig_steps: int = 5, clean_outputs: torch.Tensor | None = None,
              extra_hooks: list[Hook] | None = None, max_exact_edges: int = EXACT_MAX_EDGES,
              freeze_norms: bool = False) -> torch.Tensor:
    """Scores [n_s, n_r] by ``method`` (eap | eap-ig | eap-ig-mask | clean-corrupted | exact);
    ``freeze_norms`` applies to ``eap-ig-mask`` (see :func:`mask_ig_scores`)."""
    if method not in METHODS:
        raise BadRequest(f"unknown attribution method {method!r}; choose one of {list(METHODS)}")
    if method == "eap-ig-mask":
        return mask_ig_scores(model, tokens, graph, metric, ablated_outputs, ig_steps, extra_hooks=extra_hooks,
                              freeze_norms=freeze_norms)
    if method == "exact":
        return exact_scores(model, tokens, graph, metric, ablated_outputs, max_edges=max_exact_edges,
                            per_example=getattr(metric, "per_example", None), extra_hooks=extra_hooks)
    return gradient_scores(model, tokens, graph, metric, ablated_outputs, method_alphas(method, ig_steps),
                           clean_outputs=clean_outputs, extra_hooks=extra_hooks)


def ablated_outputs_for(model: LoadedModel, tokens: torch.Tensor, graph: Graph, ablation: str,
                        corrupt_tokens: torch.Tensor | None = None,
                        clean_outputs: torch.Tensor | None = None) -> torch.Tensor:
    """Sender values z' for an ablation: ``patch`` (outputs on ``corrupt_tokens``), ``zero``, or
    ``mean`` (mean of the clean outputs over batch and positions, [1, 1, n_s, d])."""
    if ablation not in ABLATIONS:
        raise BadRequest(f"unknown ablation {ablation!r}; choose one of {list(ABLATIONS)}")
    if ablation == "patch":
        if corrupt_tokens is None:
            raise BadRequest("patch ablation needs a corrupted prompt")
        if corrupt_tokens.shape != tokens.shape:
            raise BadRequest(f"the corrupted prompt has {corrupt_tokens.shape[-1]} tokens, the prompt "
                             f"{tokens.shape[-1]}: they must be equal")
        return sender_outputs(model, corrupt_tokens, graph)
    if clean_outputs is None:
        clean_outputs = sender_outputs(model, tokens, graph)
    if ablation == "zero":
        return torch.zeros_like(clean_outputs[:1, :1])
    return clean_outputs.mean(dim=(0, 1), keepdim=True)

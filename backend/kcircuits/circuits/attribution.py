"""Edge attribution for all edges at once (METHODS §2.2-2.3), on the model's device.

score(u -> r) = sum_{batch, pos, d} (z'_u - z_u) * avg_alpha dM/d(in_r) evaluated at input
x_alpha = x' + alpha (x - x'), the first-order estimate of M(edge ablated) - M(clean).

- ``eap``: alpha = 1 (the clean run). Cost: one forward with grad + one backward (+ the
  ablated/corrupted forward that produced z').
- ``eap-ig`` (inputs variant, Hanna et al. 2024): alphas at the midpoints (k + 1/2)/m, k < m, of
  the path from the ablated input (corrupted / zero / mean embeddings) to the clean input; the m
  steps run as one batch. Completeness: the input node's scores sum to ~ M(x') - M(x).
- ``clean-corrupted``: alphas {0, 1} (average of the gradients at both ends).
- ``exact``: true patching of every edge alone (one masked run per edge, batched): the oracle.

Gradients are taken w.r.t. activations (parameters stay frozen): the input node's output
(``blocks.0.hook_resid_pre``) is replaced by a leaf that requires grad, and each receiver hook
registers a tensor hook whose one einsum scores every upstream edge of that receiver group.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from kcircuits.circuits.graph import Graph
from kcircuits.circuits.patching import (
    Hook,
    check_supported,
    mask_batch_size,
    run_with_edge_ablation,
    sender_outputs,
)
from kcircuits.errors import BadRequest

METHODS = ("eap", "eap-ig", "clean-corrupted", "exact")
ABLATIONS = ("patch", "zero", "mean")
#: The exact oracle runs one masked forward per edge; refuse larger graphs by default.
EXACT_MAX_EDGES = 5000


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


def gradient_scores(model: Any, tokens: torch.Tensor, graph: Graph, metric: Callable[[torch.Tensor], torch.Tensor],
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
    delta = (ablated - clean).float()  # [n_s, b, pos, d]
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
            scores[:n_up, s:e] += torch.einsum("ubpd,bpnd->un", delta[:n_up], g)

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
        logits = model.bridge.run_with_hooks(tokens.repeat(A, 1), fwd_hooks=hooks + list(extra_hooks or []))
        value = metric(logits)
        value.backward()
    return scores


def exact_scores(model: Any, tokens: torch.Tensor, graph: Graph, metric: Callable[[torch.Tensor], torch.Tensor],
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


def attribute(model: Any, tokens: torch.Tensor, graph: Graph, metric, ablated_outputs: torch.Tensor, method: str,
              *, ig_steps: int = 5, clean_outputs: torch.Tensor | None = None,
              extra_hooks: list[Hook] | None = None, max_exact_edges: int = EXACT_MAX_EDGES) -> torch.Tensor:
    """Scores [n_s, n_r] by ``method`` (eap | eap-ig | clean-corrupted | exact)."""
    if method not in METHODS:
        raise BadRequest(f"unknown attribution method {method!r}; choose one of {list(METHODS)}")
    if method == "exact":
        return exact_scores(model, tokens, graph, metric, ablated_outputs, max_edges=max_exact_edges,
                            per_example=getattr(metric, "per_example", None), extra_hooks=extra_hooks)
    return gradient_scores(model, tokens, graph, metric, ablated_outputs, method_alphas(method, ig_steps),
                           clean_outputs=clean_outputs, extra_hooks=extra_hooks)


def ablated_outputs_for(model: Any, tokens: torch.Tensor, graph: Graph, ablation: str,
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

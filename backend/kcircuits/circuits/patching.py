"""Edge-level activation patching through TransformerLens hooks (METHODS §3).

Senders are recorded in forward order (``blocks.0.hook_resid_pre`` for the input node,
``blocks.{l}.attn.hook_result`` per head, ``blocks.{l}.hook_mlp_out``); every receiver hook
(``hook_{q,k,v}_input``, ``hook_mlp_in``, ``ln_final.hook_in``) gets

    in_r = actual_in_r + sum_{u not kept} w_ur (ablated_u - actual_u),   w = 1 - keep

where ``actual_u`` is the sender output recomputed in this same pass. A full mask reproduces the
clean run; an empty mask with corrupted-run sender outputs reproduces the corrupted run.
Internally sender outputs are stored sender-major ``[n_senders, batch, pos, d]`` so that every
receiver's upstream senders (a prefix) are one contiguous slice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from kcircuits.circuits.graph import Graph
from kcircuits.errors import BadRequest

if TYPE_CHECKING:
    from kcircuits.lm.loader import LoadedModel

Hook = tuple[str, Callable]


def check_supported(graph: Graph) -> None:
    """Ungrouped k/v receivers on a GQA model need per-head k/v inputs, which the bridge lacks."""
    if graph.kv_mode == "ungrouped" and graph.n_kv_heads != graph.n_heads:
        raise BadRequest("kv_mode='ungrouped' is only countable (graph-stats) on grouped-query models: "
                         "the model computes one k/v input per kv group; use kv_mode='grouped'")


def sender_hooks(graph: Graph, store: Callable[[int, int, torch.Tensor], None]) -> list[Hook]:
    """Forward hooks that call ``store(start, stop, x_major)`` with sender outputs as [n, b, pos, d]."""
    H = graph.n_heads

    def input_hook(x, hook):
        store(0, 1, x.unsqueeze(0))
        return x

    def make_head(layer):
        start = graph.head_index(layer, 0)

        def head_hook(x, hook):  # [b, pos, H, d]
            store(start, start + H, x.permute(2, 0, 1, 3))
            return x

        return head_hook

    def make_mlp(layer):
        idx = graph.mlp_index(layer)

        def mlp_hook(x, hook):  # [b, pos, d]
            store(idx, idx + 1, x.unsqueeze(0))
            return x

        return mlp_hook

    hooks: list[Hook] = [("blocks.0.hook_resid_pre", input_hook)]
    for layer in range(graph.n_layers):
        hooks.append((f"blocks.{layer}.attn.hook_result", make_head(layer)))
        hooks.append((f"blocks.{layer}.hook_mlp_out", make_mlp(layer)))
    return hooks


class SenderRecorder:
    """Holds sender outputs [n_senders, b, pos, d] as they are produced in one forward pass.

    Without autograd a preallocated buffer is filled in place; with autograd chunks are kept and
    concatenated on demand (in-place writes would invalidate tensors saved for backward).
    """

    def __init__(self, graph: Graph, batch: int, pos: int, d: int, device, dtype, grad: bool):
        self.grad = grad
        self.chunks: list[torch.Tensor] = []
        self.buf = None if grad else torch.empty(graph.n_senders, batch, pos, d, device=device, dtype=dtype)
        self.filled = 0
        self._total: torch.Tensor | int = 0  # sum of the first ``_upto`` sender outputs [b, pos, d]
        self._upto = 0

    def store(self, start: int, stop: int, x: torch.Tensor) -> None:
        if self.grad:
            self.chunks.append(x)
        else:
            self.buf[start:stop] = x
        self.filled = stop

    def prefix(self, n: int) -> torch.Tensor:
        """The first ``n`` sender outputs [n, b, pos, d] (all recorded already)."""
        if n > self.filled:
            raise RuntimeError(f"sender {n - 1} read before it was recorded (hook order)")
        if self.grad:
            return torch.cat(self.chunks, 0)[:n]
        return self.buf[:n]

    def all(self) -> torch.Tensor:
        return self.prefix(self.filled)

    def prefix_sum(self, n: int) -> torch.Tensor:
        """Sum of the first ``n`` sender outputs [b, pos, d], kept as a running total (n grows)."""
        if n < self._upto:
            return self.prefix(n).sum(0)
        if n > self._upto:
            self._total = self._total + self.prefix(n)[self._upto:n].sum(0)
            self._upto = n
        return self._total


def sender_outputs(model: LoadedModel, tokens: torch.Tensor, graph: Graph, *, return_logits: bool = False,
                   extra_hooks: list[Hook] | None = None):
    """Every sender's output on ``tokens``: [b, pos, n_senders, d] (and logits [b, pos, V] if asked)."""
    b, pos = tokens.shape
    with torch.no_grad():
        rec = SenderRecorder(graph, b, pos, model.arch.d_model, model.device, model.dtype, grad=False)
        logits = model.run_with_hooks(tokens, sender_hooks(graph, rec.store) + list(extra_hooks or []))
    out = rec.all().permute(1, 2, 0, 3)
    return (out, logits) if return_logits else out


def mean_ablation(outputs: torch.Tensor) -> torch.Tensor:
    """Mean ablation values from clean outputs [b, pos, n_s, d]: mean over batch and positions,
    shaped [1, 1, n_s, d] (broadcast over any batch and length)."""
    return outputs.mean(dim=(0, 1), keepdim=True)


def mask_batch_size(model: LoadedModel, tokens: torch.Tensor, budget_elements: int = 2**26, cap: int = 256,
                    graph: Graph | None = None, logit_positions: int | None = None) -> int:
    """How many masks to run per forward so the logits (``logit_positions`` per prompt, default all)
    and, given ``graph``, the recorded sender outputs [n_s, M*b, pos, d] stay under ``budget_elements``
    floats each."""
    b, pos = tokens.shape
    per_mask = b * (pos if logit_positions is None else logit_positions) * model.arch.d_vocab
    n = budget_elements // max(1, per_mask)
    if graph is not None:
        n = min(n, 2 * budget_elements // max(1, graph.n_senders * b * pos * model.arch.d_model))
    return max(1, min(cap, n))


def _as_weights(keep_mask: torch.Tensor, graph: Graph, device, dtype) -> torch.Tensor:
    """keep mask [.., n_s, n_r] (bool or float in [0, 1]) -> ablation weights w = 1 - keep, [M, n_s, n_r]."""
    if keep_mask.shape[-2:] != (graph.n_senders, graph.n_receivers):
        raise ValueError(f"mask must end in shape ({graph.n_senders}, {graph.n_receivers}), got {tuple(keep_mask.shape)}")
    mask = keep_mask if keep_mask.dim() == 3 else keep_mask.unsqueeze(0)
    mask = mask.to(device)
    if mask.dtype == torch.bool:
        return (~mask).to(dtype)
    return (1 - mask).to(dtype)


def _plan(graph: Graph, w: torch.Tensor, active: list[bool] | None) -> list[tuple[str, torch.Tensor] | None]:
    """Per receiver group: None (nothing ablated), ("ablate", rows) or ("keep", rows).

    ``rows``: the upstream senders whose weight is not uniform across the group's masks and
    receivers in the chosen form: rows with w != 0 ("ablate": add sum_rows w (z' - z)), or rows
    with keep = 1 - w != 0 ("keep": start from the fully ablated input and add back
    sum_rows keep (z - z')). The cheaper form wins, so sparse circuits and near-full masks both
    cost in proportion to what differs. One host sync for all groups.
    """
    ablate_rows, keep_rows = [], []
    for g in graph.receiver_groups:
        wg = w[:, : g.n_up, g.start:g.stop]
        ablate_rows.append(wg.ne(0).any(-1).any(0))
        keep_rows.append(wg.ne(1).any(-1).any(0))
    flat_a = torch.cat(ablate_rows).cpu()
    flat_k = torch.cat(keep_rows).cpu()
    plan: list[tuple[str, torch.Tensor] | None] = []
    offset = 0
    for gi, g in enumerate(graph.receiver_groups):
        ra, rk = flat_a[offset:offset + g.n_up], flat_k[offset:offset + g.n_up]
        offset += g.n_up
        if (active is not None and not active[gi]) or not bool(ra.any()):
            plan.append(None)
            continue
        na, nk = int(ra.sum()), int(rk.sum())
        form, rows = ("ablate", ra) if na <= nk else ("keep", rk)
        plan.append((form, torch.nonzero(rows).flatten().to(w.device)))
    return plan


def receiver_hooks(graph: Graph, w: torch.Tensor, ablated: torch.Tensor, rec: SenderRecorder, n_masks: int,
                   active: list[bool] | None = None) -> list[Hook]:
    """Hooks giving each receiver input ``actual + sum_u w[m,u,r] (ablated_u - actual_u)``.

    ``w`` [M, n_s, n_r]; ``ablated`` [n_s, b or 1, pos or 1, d] (shared by the M masks); the run's
    batch is M*b (mask-major). ``active[g]`` False skips a receiver group. Per group (see
    :func:`_plan`) either the ablated form or the keep form is used, over the senders that matter
    only: two (batched) matrix products [M, n, k] @ [k, b*pos*d].
    """
    plan = _plan(graph, w, active)
    hooks: list[Hook] = []
    cache: dict[str, torch.Tensor] = {}
    wt = w.transpose(1, 2)  # [M, n_r, n_s]

    def ablated_flat(b: int, pos: int, d: int) -> torch.Tensor:
        if "abl" not in cache:
            cache["abl"] = ablated.expand(ablated.shape[0], b, pos, d).reshape(ablated.shape[0], b * pos * d)
        return cache["abl"]

    def ablated_prefix_sum(n: int) -> torch.Tensor:
        if "cum" not in cache:
            cum = ablated.cumsum(0)
            cache["cum"] = torch.cat([torch.zeros_like(cum[:1]), cum])  # [n_s + 1, b', pos', d]
        return cache["cum"][n]

    for gi, group in enumerate(graph.receiver_groups):
        if plan[gi] is None:
            continue
        form, rows = plan[gi]

        def hook(x, hook, group=group, form=form, rows=rows):
            n_up, s, e = group.n_up, group.start, group.stop
            act = rec.prefix(n_up)  # [u, M*b, pos, d]
            u, B, pos, d = act.shape
            b = B // n_masks
            sel = act[rows].reshape(rows.numel(), n_masks, b * pos * d).transpose(0, 1)  # [M, k, X]
            abl = ablated_flat(b, pos, d)[rows]  # [k, X] (advanced indexing: far faster than index_select on CPU)
            coef = wt[:, s:e][:, :, rows]  # [M, n, k]
            if form == "ablate":
                corr = torch.matmul(coef, abl) - torch.bmm(coef, sel)  # [M, n, X]
            else:
                corr = torch.bmm(1 - coef, sel) - torch.matmul(1 - coef, abl)
            corr = corr.reshape(n_masks, e - s, b, pos, d).permute(0, 2, 3, 1, 4).reshape(B, pos, e - s, d)
            if form == "keep":  # start from the fully ablated input: x - sum_u actual_u + sum_u ablated_u
                cum = ablated_prefix_sum(n_up)  # [b' (1 or b), pos' (1 or pos), d]
                if cum.shape[0] != 1:
                    cum = cum.repeat(n_masks, 1, 1)
                corr = corr + (cum - rec.prefix_sum(n_up)).unsqueeze(2)
            if x.dim() == 3:  # mlp_in / logits: one receiver
                return x + corr[:, :, 0]
            return x + corr

        hooks.append((group.hook, hook))
    return hooks


def run_with_edge_ablation(model: LoadedModel, tokens: torch.Tensor, graph: Graph, keep_mask: torch.Tensor,
                           ablated_outputs: torch.Tensor, *, extra_hooks: list[Hook] | None = None,
                           last_only: bool = False) -> torch.Tensor:
    """Logits of the run where only kept edges carry their actual value (METHODS §3).

    tokens [b, pos]; keep_mask [n_s, n_r] or [M, n_s, n_r] (bool, or float weights: 1 = keep);
    ablated_outputs [b or 1, pos or 1, n_s, d] (corrupted-run outputs, zeros, or means).
    Returns logits [b, pos, V], or [M, b, pos, V] for a mask batch (tokens are repeated M times);
    pos is 1 with ``last_only``.
    Differentiable w.r.t. float masks when autograd is enabled. ``extra_hooks`` run after ours.
    ``last_only``: logits of the last position only (pos axis of length 1).
    """
    check_supported(graph)
    batched = keep_mask.dim() == 3
    dtype = model.dtype
    w = _as_weights(keep_mask, graph, model.device, dtype)
    M = w.shape[0]
    b, pos = tokens.shape
    if ablated_outputs.shape[1] not in (1, pos) or ablated_outputs.shape[0] not in (1, b):
        raise BadRequest(f"ablated outputs {tuple(ablated_outputs.shape)} do not fit tokens {tuple(tokens.shape)}: "
                         "a corrupted prompt must have the same number of tokens as the clean one")
    ablated = ablated_outputs.to(device=model.device, dtype=dtype).permute(2, 0, 1, 3)  # [n_s, b', pos', d]
    grad = torch.is_grad_enabled() and w.requires_grad
    rec = SenderRecorder(graph, M * b, pos, model.arch.d_model, model.device, dtype, grad=grad)
    hooks = sender_hooks(graph, rec.store) + receiver_hooks(graph, w, ablated, rec, M) + list(extra_hooks or [])
    run_tokens = tokens.repeat(M, 1) if M > 1 else tokens
    logits = model.run_with_hooks(run_tokens, hooks, last_only)
    if batched:
        return logits.reshape(M, b, logits.shape[1], -1)
    return logits

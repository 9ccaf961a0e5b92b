"""Logit lens per layer boundary and position, and per-node vocabulary projection (METHODS §4).

Rows: resid_pre of every layer plus the final resid_post (L+1 rows). Two LN modes:
``recompute`` applies the final norm to each row's own residual (nostalgebraist); ``cached``
reuses the final layer's normalisation scale (TransformerLens ``apply_ln_to_stack``). They
agree on the last row.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kcircuits.errors import BadRequest
from kcircuits.lm.loader import LoadedModel

LN_MODES = ("recompute", "cached")


def final_norm_module(model: LoadedModel) -> torch.nn.Module:
    """The HF final norm (LayerNorm or RMSNorm), called directly so no hooks fire."""
    return model.bridge.ln_final.original_component


def unembed(model: LoadedModel, normed: torch.Tensor) -> torch.Tensor:
    """[..., d_model] normalised residual -> [..., d_vocab] logits (W_U, b_U)."""
    bridge = model.bridge
    logits = normed @ bridge.W_U
    bias = getattr(bridge, "b_U", None)
    return logits + bias if bias is not None else logits


def apply_cached_final_norm(model: LoadedModel, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Final norm with a given scale: x [..., d], scale [..., 1] (from ln_final.hook_scale)."""
    norm = final_norm_module(model)
    if isinstance(norm, torch.nn.LayerNorm):
        x = x - x.mean(-1, keepdim=True)
        out = x / scale * norm.weight
        return out + norm.bias if norm.bias is not None else out
    return x / scale * norm.weight


def residual_rows(model: LoadedModel, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward: residual rows [L+1, pos, d], final-norm scale [pos, 1], final logits [pos, V]."""
    n_layers = model.arch.n_layers
    names = [f"blocks.{i}.hook_resid_pre" for i in range(n_layers)]
    names += [f"blocks.{n_layers - 1}.hook_resid_post", "ln_final.hook_scale"]
    with torch.inference_mode():
        logits, cache = model.bridge.run_with_cache(tokens, names_filter=lambda name: name in names)
    rows = torch.stack([cache[name][0] for name in names[:-1]])
    return rows, cache["ln_final.hook_scale"][0], logits[0]


def _row_logits(model: LoadedModel, rows: torch.Tensor, scale: torch.Tensor, ln_mode: str) -> torch.Tensor:
    """[R, pos, d] residuals -> [R, pos, V] logits in fp32."""
    with torch.inference_mode():
        if ln_mode == "recompute":
            normed = final_norm_module(model)(rows)
        else:
            normed = apply_cached_final_norm(model, rows, scale.unsqueeze(0))
        return unembed(model, normed).float()


@dataclass(frozen=True)
class LensRequest:
    """What to compute; ``subject_positions`` are token indices (may be empty)."""

    top_k: int = 5
    target_id: int | None = None
    subject_positions: tuple[int, ...] = ()
    ln_mode: str = "recompute"
    kl: bool = False


def logit_lens(model: LoadedModel, tokens: torch.Tensor, request: LensRequest) -> dict:
    """Top-k per row and position, target rank/prob curves, optional KL(final || row).

    tokens: [1, pos]. Returns plain lists (the wire format's ``layers``, ``prediction``, ``target``).
    """
    if request.ln_mode not in LN_MODES:
        raise BadRequest(f"ln_mode must be one of {LN_MODES}")
    rows, scale, final_logits = residual_rows(model, tokens)
    logits = _row_logits(model, rows, scale, request.ln_mode)  # [R, pos, V]
    lse = logits.logsumexp(-1, keepdim=True)  # [R, pos, 1]; no full softmax tensor is built
    top = logits.topk(request.top_k, dim=-1)
    top_probs = (top.values - lse).exp()
    kl = None
    if request.kl:
        final_lp = logits[-1:] - lse[-1:]
        kl = (final_lp.exp() * (final_lp - (logits - lse))).sum(-1)  # [R, pos]
    n_rows, n_pos = logits.shape[0], logits.shape[1]
    top_ids, top_p = top.indices.tolist(), top_probs.tolist()
    vocab = _decode_cache(model, {i for row in top_ids for pos in row for i in pos})
    layers = []
    for r in range(n_rows):
        label = f"resid_pre {r}" if r < n_rows - 1 else "final"
        positions = [
            {"top": [{"token": vocab[i], "id": i, "prob": p} for i, p in zip(top_ids[r][s], top_p[r][s], strict=True)],
             "kl": None if kl is None else float(kl[r, s])}
            for s in range(n_pos)
        ]
        layers.append({"index": r, "label": label, "positions": positions})
    final_probs = final_logits[-1].float().softmax(-1)
    pred_id = int(final_probs.argmax())
    result = {
        "layers": layers,
        "prediction": {"token": model.token_strings([pred_id])[0], "id": pred_id, "prob": float(final_probs[pred_id])},
        "target": None,
    }
    if request.target_id is not None:
        result["target"] = target_curves(logits, request.target_id, list(request.subject_positions), lse)
    return result


def target_curves(logits: torch.Tensor, target_id: int, subject_positions: list[int],
                  lse: torch.Tensor | None = None) -> dict:
    """Per-row rank (1-based) and prob of ``target_id`` at the last position, and the best
    (lowest) rank over subject positions with its prob. logits: [R, pos, V]; lse: [R, pos, 1]."""
    lse = logits.logsumexp(-1, keepdim=True) if lse is None else lse
    target_logit = logits[..., target_id : target_id + 1]
    ranks = (logits > target_logit).sum(-1) + 1  # [R, pos]
    target_p = (target_logit - lse).squeeze(-1).exp()
    curves = {"rank": ranks[:, -1].tolist(), "prob": target_p[:, -1].tolist(),
              "subject_rank": None, "subject_prob": None}
    if subject_positions:
        sub = torch.tensor(subject_positions, device=logits.device)
        sub_ranks = ranks.index_select(1, sub)
        best = sub_ranks.argmin(1)
        curves["subject_rank"] = sub_ranks.gather(1, best[:, None]).squeeze(1).tolist()
        curves["subject_prob"] = target_p.index_select(1, sub).gather(1, best[:, None]).squeeze(1).tolist()
    return curves


def _decode_cache(model: LoadedModel, ids: set[int]) -> dict[int, str]:
    ordered = sorted(ids)
    return dict(zip(ordered, model.token_strings(ordered), strict=True))


def parse_node(model: LoadedModel, node: str) -> tuple[str, int, int | None]:
    """'a3.h7' -> ('head', 3, 7); 'm5' -> ('mlp', 5, None); validated against the model's shape."""
    arch = model.arch
    try:
        if node.startswith("a") and ".h" in node:
            layer_s, head_s = node[1:].split(".h", 1)
            layer, head = int(layer_s), int(head_s)
            if 0 <= layer < arch.n_layers and 0 <= head < arch.n_heads:
                return "head", layer, head
        elif node.startswith("m"):
            layer = int(node[1:])
            if 0 <= layer < arch.n_layers:
                return "mlp", layer, None
    except ValueError:
        pass
    raise BadRequest(f"node {node!r} is not a head (a<layer>.h<head>) or MLP (m<layer>) of this model "
                     f"({arch.n_layers} layers, {arch.n_heads} heads)")


def project_node(model: LoadedModel, tokens: torch.Tensor, node: str, position: int = -1, k: int = 10) -> dict:
    """Top tokens promoted/suppressed by one head's or MLP's output at ``position`` (its direct
    contribution: through the final norm's cached scale and gain and W_U, no biases)."""
    kind, layer, head = parse_node(model, node)
    n_pos = tokens.shape[1]
    if not -n_pos <= position < n_pos:
        raise BadRequest(f"position {position} out of range for {n_pos} tokens")
    hook = f"blocks.{layer}.attn.hook_result" if kind == "head" else f"blocks.{layer}.hook_mlp_out"
    with torch.inference_mode():
        _, cache = model.bridge.run_with_cache(tokens, names_filter=lambda n: n in {hook, "ln_final.hook_scale"})
    from kcircuits.circuits.heads import project_to_vocab

    out = cache[hook][0, position]
    vec = out[head] if head is not None else out
    result = project_to_vocab(model, vec, cache["ln_final.hook_scale"][0, position].float(), k)
    return {"node": node, "kind": kind, "layer": layer, "head": head, "position": position % n_pos, **result}

"""Head roles (METHODS section 5): mover / relation / mixture, from one forward with cache.

At the last position d, with subject positions S and relation positions R (prompt tokens minus S
minus a leading BOS):
- attention masses A_subj = sum_{s in S} attn[d, s], A_rel = sum_{s in R} attn[d, s];
- per-source direct logit attribution DLA(s) = attn[d, s] * (v_s W_O) / sigma_final(d) . u_y with
  u_y = w_lnf * (W_U[:, y] - mean_v W_U) (centred over d_model for LayerNorm models). It is exact:
  the head's output at d is sum_s attn[d, s] v_s W_O (hook_result), so the per-source terms add up
  to the head's direct effect on the centred target logit through the cached final-norm scale;
- DLA shares: sum over S (or R) of |DLA(s)| divided by sum over all sources of |DLA(s)|;
- lens tokens: the head output at d projected through the final norm (cached scale) and W_U.
The role rules and thresholds are ours (configurable through :class:`HeadRoleThresholds`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from kcircuits.errors import BadRequest

_HEAD_ID = re.compile(r"^a(\d+)\.h(\d+)$")


@dataclass(frozen=True)
class HeadRoleThresholds:
    """Thresholds of the role rules (ours, not the paper's; METHODS section 5 defaults)."""

    mover_attention: float = 0.3
    mover_dla_share: float = 0.5
    relation_attention: float = 0.3
    relation_dla_share: float = 0.5
    mixture_attention: float = 0.15
    mixture_dla_share: float = 0.25
    lens_k: int = 10


def parse_head_id(head_id: str, n_layers: int | None = None, n_heads: int | None = None) -> tuple[int, int]:
    """``"a3.h7"`` -> (3, 7); BadRequest for malformed or out-of-range ids."""
    match = _HEAD_ID.match(head_id)
    if not match:
        raise BadRequest(f"invalid head id {head_id!r} (expected a{{layer}}.h{{head}})")
    layer, head = int(match.group(1)), int(match.group(2))
    if (n_layers is not None and layer >= n_layers) or (n_heads is not None and head >= n_heads):
        raise BadRequest(f"head id {head_id!r} is outside the model ({n_layers} layers, {n_heads} heads)")
    return layer, head


def head_id(layer: int, head: int) -> str:
    return f"a{layer}.h{head}"


def _is_layernorm(model) -> bool:
    norm = getattr(model.bridge.cfg, "normalization_type", None)
    if norm is not None:
        return str(norm).upper().startswith("LN")
    return model.arch.family == "gpt2"


def _final_norm_weight(model) -> torch.Tensor | None:
    """The final norm's gain if it is not folded into W_U (compat mode folds it: then all ones)."""
    for name, param in model.bridge.ln_final.named_parameters():
        if name.endswith("weight"):
            return None if bool((param == 1).all()) else param.detach()
    return None


def readout_matrix(model, token_ids: torch.Tensor | None = None, centre_vocab: bool = False) -> torch.Tensor:
    """Linear readout from a residual-stream vector (already divided by the final-norm scale) to
    logits: [d_model, n] for ``token_ids`` (all vocab when None). Includes the final norm's gain
    and, for LayerNorm, the centring over d_model; ``centre_vocab`` subtracts mean_v W_U."""
    W_U = model.bridge.W_U
    cols = W_U if token_ids is None else W_U[:, token_ids]
    if centre_vocab:
        cols = cols - W_U.mean(1, keepdim=True)
    gain = _final_norm_weight(model)
    if gain is not None:
        cols = cols * gain[:, None]
    if _is_layernorm(model):
        cols = cols - cols.mean(0, keepdim=True)
    return cols.float()


def project_to_vocab(model, vec: torch.Tensor, scale: torch.Tensor | float, k: int = 10) -> dict[str, list[dict]]:
    """Top-``k`` promoted and suppressed tokens of a residual contribution ``vec`` [d_model]
    read through the final norm with a cached ``scale`` and W_U (no unembedding bias)."""
    logits = (vec.float() / scale) @ readout_matrix(model)
    top = torch.topk(logits, k)
    bottom = torch.topk(-logits, k)

    def rows(ids: torch.Tensor, values: torch.Tensor) -> list[dict]:
        strings = model.token_strings(ids)
        return [{"token": s, "id": int(i), "score": float(v)} for s, i, v in zip(strings, ids.tolist(), values.tolist(), strict=True)]

    return {"promoted": rows(top.indices, top.values), "suppressed": rows(bottom.indices, -bottom.values)}


def _layer_cache(model, tokens: torch.Tensor, layers: Sequence[int]) -> dict[str, torch.Tensor]:
    wanted = {"ln_final.hook_scale"}
    for layer in layers:
        wanted |= {f"blocks.{layer}.attn.hook_pattern", f"blocks.{layer}.attn.hook_v", f"blocks.{layer}.attn.hook_result"}
    with torch.no_grad():
        _, cache = model.bridge.run_with_cache(tokens, names_filter=lambda name: name in wanted)
    return {name: cache[name] for name in wanted}


def per_source_outputs(model, cache: dict[str, torch.Tensor], layer: int, position: int) -> torch.Tensor:
    """Per-head, per-source output vectors at query ``position``: [H, k, d_model], where entry
    (h, s) = attn_h[position, s] * v_s W_O[h] (GQA heads use their kv group's v). Sums over s to
    hook_result[position, h]."""
    pattern = cache[f"blocks.{layer}.attn.hook_pattern"][0, :, position]  # [H, k]
    v = cache[f"blocks.{layer}.attn.hook_v"][0]  # [k, G, d_head]
    W_O = model.bridge.blocks[layer].attn.W_O  # [H, d_head, d_model]
    n_heads, n_groups = W_O.shape[0], v.shape[1]
    v = v.repeat_interleave(n_heads // n_groups, dim=1)  # [k, H, d_head]
    return torch.einsum("hk,khe,hed->hkd", pattern.float(), v.float(), W_O.float())


def _role(a_subj: float, a_rel: float, s_share: float, r_share: float, lens_hit: bool,
          t: HeadRoleThresholds) -> str | None:
    mover = a_subj >= t.mover_attention and (lens_hit or s_share >= t.mover_dla_share)
    relation = a_rel >= t.relation_attention and r_share >= t.relation_dla_share
    if mover and relation:
        return "mixture"
    if mover:
        return "mover"
    if relation:
        return "relation"
    if (a_subj >= t.mixture_attention and a_rel >= t.mixture_attention
            and s_share >= t.mixture_dla_share and r_share >= t.mixture_dla_share):
        return "mixture"
    return None


def relation_positions(tokens: torch.Tensor, subject_positions: Sequence[int], bos_id: int | None) -> list[int]:
    """Prompt positions that are neither subject nor a leading BOS."""
    n = int(tokens.shape[-1])
    skip = set(subject_positions)
    if bos_id is not None and n and int(tokens.reshape(-1)[0]) == bos_id:
        skip.add(0)
    return [p for p in range(n) if p not in skip]


def classify_heads(model, tokens: torch.Tensor, subject_positions: Sequence[int], target_id: int,
                   head_ids: Sequence[str] | None = None, thresholds: HeadRoleThresholds = HeadRoleThresholds(),
                   position: int = -1) -> dict[str, dict[str, Any]]:
    """Role scores of heads at ``position`` (default last) of ``tokens`` [1, pos], one forward.

    Returns {head_id: {role, subject_attention, relation_attention, subject_dla_share,
    relation_dla_share, dla, subject_dla, relation_dla, top_tokens, top_token_ids, suppressed_tokens}}
    where ``dla`` is the head's direct effect on the centred target logit (sum of per-source DLA).
    """
    if tokens.dim() != 2 or tokens.shape[0] != 1:
        raise BadRequest("classify_heads takes one prompt: tokens of shape [1, pos]")
    n_layers, n_heads = model.bridge.cfg.n_layers, model.bridge.cfg.n_heads
    if head_ids is None:
        wanted = [(layer, h) for layer in range(n_layers) for h in range(n_heads)]
    else:
        wanted = [parse_head_id(hid, n_layers, n_heads) for hid in head_ids]
    n_pos = int(tokens.shape[1])
    pos = position % n_pos
    subj = sorted({p for p in subject_positions if 0 <= p < n_pos})
    rel = relation_positions(tokens, subj, getattr(model.tokenizer, "bos_token_id", None))
    layers = sorted({layer for layer, _ in wanted})
    cache = _layer_cache(model, tokens, layers)
    scale = cache["ln_final.hook_scale"][0, pos].float()  # [1]
    u_target = readout_matrix(model, torch.tensor([target_id], device=model.device), centre_vocab=True)[:, 0]
    readout = readout_matrix(model)  # [d_model, V]
    subject_ids = {int(tokens[0, p]) for p in subj}
    k = thresholds.lens_k
    out: dict[str, dict[str, Any]] = {}
    for layer in layers:
        per_source = per_source_outputs(model, cache, layer, pos)  # [H, k, d]
        dla = (per_source / scale) @ u_target  # [H, k]
        head_out = cache[f"blocks.{layer}.attn.hook_result"][0, pos].float()  # [H, d]
        lens = (head_out / scale) @ readout  # [H, V]
        top = torch.topk(lens, k, dim=-1).indices
        bottom = torch.topk(-lens, k, dim=-1).indices
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"][0, :, pos].float()  # [H, k]
        for layer_, h in wanted:
            if layer_ != layer:
                continue
            a_subj = float(pattern[h, subj].sum()) if subj else 0.0
            a_rel = float(pattern[h, rel].sum()) if rel else 0.0
            abs_dla = dla[h].abs()
            total_abs = float(abs_dla.sum())
            s_share = float(abs_dla[subj].sum()) / total_abs if subj and total_abs > 0 else 0.0
            r_share = float(abs_dla[rel].sum()) / total_abs if rel and total_abs > 0 else 0.0
            top_ids = top[h].tolist()
            lens_hit = target_id in top_ids or bool(subject_ids & set(top_ids))
            out[head_id(layer, h)] = {
                "role": _role(a_subj, a_rel, s_share, r_share, lens_hit, thresholds),
                "subject_attention": a_subj, "relation_attention": a_rel,
                "subject_dla_share": s_share, "relation_dla_share": r_share,
                "dla": float(dla[h].sum()),
                "subject_dla": float(dla[h, subj].sum()) if subj else 0.0,
                "relation_dla": float(dla[h, rel].sum()) if rel else 0.0,
                "top_tokens": model.token_strings(top[h]), "top_token_ids": top_ids,
                "suppressed_tokens": model.token_strings(bottom[h]),
            }
    return out


def head_detail(model, tokens: torch.Tensor, head: str, subject_positions: Sequence[int] | None = None,
                target_id: int | None = None, k: int = 10,
                thresholds: HeadRoleThresholds = HeadRoleThresholds()) -> dict[str, Any]:
    """Everything the UI's node panel shows for one head on ``tokens`` [1, pos]:
    the attention pattern [q][k], the tokens its last-position output promotes / suppresses,
    per-source DLA at the last position (when ``target_id`` is given) and the role scores
    (when ``subject_positions`` and ``target_id`` are given)."""
    layer, h = parse_head_id(head, model.bridge.cfg.n_layers, model.bridge.cfg.n_heads)
    cache = _layer_cache(model, tokens, [layer])
    pos = int(tokens.shape[1]) - 1
    scale = cache["ln_final.hook_scale"][0, pos].float()
    pattern = cache[f"blocks.{layer}.attn.hook_pattern"][0, h].float()
    lens = project_to_vocab(model, cache[f"blocks.{layer}.attn.hook_result"][0, pos, h], scale, k)
    detail: dict[str, Any] = {
        "id": head, "layer": layer, "head": h, "tokens": model.token_strings(tokens[0]),
        "pattern": pattern.tolist(), "promoted": lens["promoted"], "suppressed": lens["suppressed"],
        "dla_by_source": None, "role_scores": None,
    }
    if target_id is not None:
        u_target = readout_matrix(model, torch.tensor([target_id], device=model.device), centre_vocab=True)[:, 0]
        dla = (per_source_outputs(model, cache, layer, pos)[h] / scale) @ u_target
        detail["dla_by_source"] = dla.tolist()
        if subject_positions is not None:
            detail["role_scores"] = classify_heads(model, tokens, subject_positions, target_id, [head],
                                                   replace(thresholds, lens_k=k))[head]
    return detail

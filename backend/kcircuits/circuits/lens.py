"""Logit lens per layer boundary and position, and per-node vocabulary projection (METHODS §4).

Rows: resid_pre of every layer plus the final resid_post (L+1 rows). Two LN modes:
``recompute`` applies the final norm to each row's own residual (nostalgebraist); ``cached``
reuses the final layer's normalisation scale (TransformerLens ``apply_ln_to_stack``). They
agree on the last row.

Cost: one forward plus the unembedding of (L+1) x pos rows, which dominates on CPU (SmolLM2,
15 tokens: 26 GFLOP against about 4 for the forward). As the user types, the prompt grows at the
end and a causal model's residuals at the earlier positions do not change, so each position's
top-k (and KL), and the target's rank and probability, are kept in a prefix cache keyed by the
tokens up to it: a request unembeds only the positions it has not seen.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch

from kcircuits.errors import BadRequest
from kcircuits.lm.loader import LoadedModel

LN_MODES = ("recompute", "cached")


def apply_cached_final_norm(model: LoadedModel, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Final norm with a given scale: x [..., d], scale [..., 1] (from ln_final.hook_scale)."""
    norm = model.final_norm
    if model.norm_kind == "layernorm":
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
        logits, cache = model.run_with_cache(tokens, names)
    rows = torch.stack([cache[name][0] for name in names[:-1]])
    return rows, cache["ln_final.hook_scale"][0], logits[0]


def _row_logits(model: LoadedModel, rows: torch.Tensor, scale: torch.Tensor, ln_mode: str) -> torch.Tensor:
    """[R, pos, d] residuals -> [R, pos, V] logits in fp32."""
    with torch.inference_mode():
        if ln_mode == "recompute":
            normed = model.final_norm(rows)
        else:
            normed = apply_cached_final_norm(model, rows, scale.unsqueeze(0))
        return model.unembed(normed).float()


@dataclass(frozen=True)
class LensRequest:
    """What to compute; ``subject_positions`` are token indices (may be empty)."""

    top_k: int = 5
    target_id: int | None = None
    subject_positions: tuple[int, ...] = ()
    ln_mode: str = "recompute"
    kl: bool = False


@dataclass(frozen=True)
class _PositionLens:
    """One position's lens over all rows: top ids and probs [R][k], KL per row [R] or None."""

    top_ids: list[list[int]]
    top_probs: list[list[float]]
    kl: list[float] | None


class PrefixCache:
    """LRU of per-position entries: top-k lens (:class:`_PositionLens`) keyed by (model, LN mode, "top",
    k, KL flag, tokens up to the position), and target (ranks [R], probs [R]) keyed by (model, LN
    mode, "target", target id, tokens up to the position).

    Valid because a causal model's residual at position s depends only on tokens[: s + 1] and
    loaded weights never change in place (edit sessions are copies with their own revision).
    """

    def __init__(self, max_entries: int = 4096):
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> Any:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: tuple, entry: Any) -> None:
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


PREFIX_CACHE = PrefixCache()


def logit_lens(model: LoadedModel, tokens: torch.Tensor, request: LensRequest, cache: PrefixCache | None = PREFIX_CACHE) -> dict:
    """Top-k per row and position, target rank/prob curves, optional KL(final || row).

    tokens: [1, pos]. Returns plain lists (the wire format's ``layers``, ``prediction``, ``target``).
    ``cache``: per-position results reused across requests (None: compute every position).
    """
    cache = cache if cache is not None else PrefixCache()  # a private one: nothing to reuse
    if request.ln_mode not in LN_MODES:
        raise BadRequest(f"ln_mode must be one of {LN_MODES}")
    rows, scale, final_logits = residual_rows(model, tokens)  # [R, pos, d], [pos, 1], [pos, V]
    n_rows, n_pos = rows.shape[0], rows.shape[1]
    ids = tokens[0].tolist()
    base = (id(model), model.revision, request.ln_mode)
    lens_keys = [(*base, "top", request.top_k, request.kl, tuple(ids[: s + 1])) for s in range(n_pos)]
    known = [cache.get(key) for key in lens_keys]
    wanted = {s for s in range(n_pos) if known[s] is None}
    target_pos: list[int] = []
    if request.target_id is not None:
        target_pos = sorted({n_pos - 1, *(s for s in request.subject_positions if 0 <= s < n_pos)})
        target_keys = {s: (*base, "target", request.target_id, tuple(ids[: s + 1])) for s in target_pos}
        target_known = {s: cache.get(key) for s, key in target_keys.items()}
        wanted |= {s for s in target_pos if target_known[s] is None}
    if wanted:
        cols = sorted(wanted)  # positions unembedded in this request
        index = torch.tensor(cols, device=rows.device)
        logits = _row_logits(model, rows.index_select(1, index), scale.index_select(0, index), request.ln_mode)
        lse = logits.logsumexp(-1, keepdim=True)  # [R, P, 1]; no full softmax tensor is built
        top = logits.topk(request.top_k, dim=-1)
        top_ids, top_p = top.indices.tolist(), (top.values - lse).exp().tolist()  # [R][P][k]
        kl = None
        if request.kl:
            final_lp = logits[-1:] - lse[-1:]
            kl = (final_lp.exp() * (final_lp - (logits - lse))).sum(-1).tolist()  # [R][P]
        if target_pos:
            t = request.target_id
            t_logit = logits[..., t : t + 1]
            t_rank = ((logits > t_logit).sum(-1) + 1).tolist()  # [R][P], 1-based
            t_prob = (t_logit - lse).squeeze(-1).exp().tolist()  # [R][P]
        for i, s in enumerate(cols):
            if known[s] is None:
                known[s] = _PositionLens([top_ids[r][i] for r in range(n_rows)], [top_p[r][i] for r in range(n_rows)],
                                         None if kl is None else [kl[r][i] for r in range(n_rows)])
                cache.put(lens_keys[s], known[s])
            if s in target_pos and target_known[s] is None:
                target_known[s] = ([t_rank[r][i] for r in range(n_rows)], [t_prob[r][i] for r in range(n_rows)])
                cache.put(target_keys[s], target_known[s])
    vocab = _decode_cache(model, {i for entry in known for row in entry.top_ids for i in row})
    layers = []
    for r in range(n_rows):
        label = f"resid_pre {r}" if r < n_rows - 1 else "final"
        positions = [
            {"top": [{"token": vocab[i], "id": i, "prob": p}
                     for i, p in zip(entry.top_ids[r], entry.top_probs[r], strict=True)],
             "kl": None if entry.kl is None else float(entry.kl[r])}
            for entry in known
        ]
        layers.append({"index": r, "label": label, "positions": positions})
    final_probs = final_logits[-1].float().softmax(-1)
    pred_id = int(final_probs.argmax())
    result = {
        "layers": layers,
        "prediction": {"token": model.token_strings([pred_id])[0], "id": pred_id, "prob": float(final_probs[pred_id])},
        "target": None,
    }
    if target_pos:
        subject = [s for s in request.subject_positions if 0 <= s < n_pos]
        result["target"] = target_curves([target_known[s] for s in [n_pos - 1, *subject]], n_rows)
    return result


def target_curves(per_position: list[tuple[list[int], list[float]]], n_rows: int) -> dict:
    """Curves from (rank [R], prob [R]) of the target at the last position followed by the subject
    positions: rank (1-based) and prob per row at the last position, and per row the best (lowest)
    rank over the subject positions with its prob (first subject position on ties)."""
    (last_rank, last_prob), subject = per_position[0], per_position[1:]
    curves = {"rank": last_rank, "prob": last_prob, "subject_rank": None, "subject_prob": None}
    if subject:
        best = [min(range(len(subject)), key=lambda j: (subject[j][0][r], j)) for r in range(n_rows)]
        curves["subject_rank"] = [subject[j][0][r] for r, j in enumerate(best)]
        curves["subject_prob"] = [subject[j][1][r] for r, j in enumerate(best)]
    return curves


def _decode_cache(model: LoadedModel, ids: set[int]) -> dict[int, str]:
    ordered = sorted(ids)
    return dict(zip(ordered, model.token_strings(ordered), strict=True))


def parse_node(model: LoadedModel, node: str) -> tuple[str, int, int | None]:
    """'a3.h7' -> ('head', 3, 7); 'm5' -> ('mlp', 5, None); validated against the model's shape."""
    from kcircuits.circuits.graph import parse_node_id

    ref = parse_node_id(node, model.arch.n_layers, model.arch.n_heads)
    return ref.kind, ref.layer, ref.head


def project_node(model: LoadedModel, tokens: torch.Tensor, node: str, position: int = -1, k: int = 10) -> dict:
    """Top tokens promoted/suppressed by one head's or MLP's output at ``position`` (its direct
    contribution: through the final norm's cached scale and gain and W_U, no biases)."""
    kind, layer, head = parse_node(model, node)
    n_pos = tokens.shape[1]
    if not -n_pos <= position < n_pos:
        raise BadRequest(f"position {position} out of range for {n_pos} tokens")
    hook = f"blocks.{layer}.attn.hook_result" if kind == "head" else f"blocks.{layer}.hook_mlp_out"
    with torch.inference_mode():
        _, cache = model.run_with_cache(tokens, [hook, "ln_final.hook_scale"])
    from kcircuits.circuits.heads import project_to_vocab

    out = cache[hook][0, position]
    vec = out[head] if head is not None else out
    result = project_to_vocab(model, vec, cache["ln_final.hook_scale"][0, position].float(), k)
    return {"node": node, "kind": kind, "layer": layer, "head": head, "position": position % n_pos, **result}

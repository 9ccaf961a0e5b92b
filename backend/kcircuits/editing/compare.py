"""Pre- vs post-edit comparison: lens curves, circuit diff and what circuit heads promote.

The pre circuit explains the base model's answer (the old target), the post circuit the edited
model's new target; both use the same discovery method. Edge keys are "source->receiver".
"""

from __future__ import annotations

from typing import Any

import torch

from kcircuits.lm.loader import LoadedModel


def edge_key(edge: dict) -> str:
    return f"{edge['source']}->{edge['receiver']}"


def circuit_diff(pre: dict, post: dict, rel_change: float = 0.5, limit: int = 100) -> dict[str, Any]:
    """Edges added to / removed from the circuit, and shared edges whose score changed by more than
    ``rel_change`` of the larger magnitude (largest changes first, at most ``limit``)."""
    pre_scores = {edge_key(e): e["score"] for e in pre["edges"]}
    post_scores = {edge_key(e): e["score"] for e in post["edges"]}
    pre_in = {edge_key(e) for e in pre["edges"] if e["in_circuit"]}
    post_in = {edge_key(e) for e in post["edges"] if e["in_circuit"]}
    reweighted = []
    for key in pre_in & post_in:
        a, b = pre_scores[key], post_scores[key]
        if abs(b - a) > rel_change * max(abs(a), abs(b)):
            reweighted.append({"key": key, "pre": a, "post": b})
    reweighted.sort(key=lambda r: -abs(r["post"] - r["pre"]))
    by_post = sorted(post_in - pre_in, key=lambda k: -abs(post_scores[k]))
    by_pre = sorted(pre_in - post_in, key=lambda k: -abs(pre_scores[k]))
    return {"added": by_post, "removed": by_pre, "reweighted": reweighted[:limit],
            "shared": len(pre_in & post_in)}


def circuit_heads(*circuits: dict, limit: int = 40) -> list[str]:
    """Head node ids in any of the circuits, highest |score| first."""
    best: dict[str, float] = {}
    for circuit in circuits:
        for node in circuit["nodes"]:
            if node["kind"] == "head" and node["in_circuit"]:
                best[node["id"]] = max(best.get(node["id"], 0.0), abs(node["score"]))
    return sorted(best, key=lambda n: -best[n])[:limit]


def head_outputs(model: LoadedModel, prompt: str, heads: list[str], k: int = 10) -> dict[str, dict]:
    """What each head's output (``attn.hook_result`` at the last position) promotes through the
    final norm and W_U. -> {node: {"promoted", "suppressed"}}."""
    from kcircuits.circuits.heads import project_to_vocab as project_vector
    from kcircuits.circuits.lens import parse_node

    parsed = {h: parse_node(model, h) for h in heads}
    names = {f"blocks.{layer}.attn.hook_result" for _, layer, _ in parsed.values()} | {"ln_final.hook_scale"}
    tokens = model.tokenize(prompt)
    with torch.no_grad():
        _, cache = model.bridge.run_with_cache(tokens, names_filter=lambda n: n in names)
    scale = cache["ln_final.hook_scale"][0, -1]
    return {h: project_vector(model, cache[f"blocks.{layer}.attn.hook_result"][0, -1, head], scale, k)
            for h, (_, layer, head) in parsed.items()}


def head_diff(heads: list[str], pre: dict[str, dict], post: dict[str, dict]) -> list[dict]:
    return [{"node": h, "pre": {"promoted": pre[h]["promoted"]}, "post": {"promoted": post[h]["promoted"]}}
            for h in heads]


def curves(lens_new: dict, lens_old: dict) -> dict[str, dict]:
    """{"new": {"rank", "prob"}, "old": {...}} from two lens results (target new / old)."""
    return {name: {"rank": res["target"]["rank"], "prob": res["target"]["prob"]}
            for name, res in (("new", lens_new), ("old", lens_old))}


def _head_results(model: LoadedModel, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every head's output at the last position [L, H, d_model] and the final norm scale there."""
    n_layers = model.arch.n_layers
    names = {f"blocks.{layer}.attn.hook_result" for layer in range(n_layers)} | {"ln_final.hook_scale"}
    with torch.no_grad():
        _, cache = model.bridge.run_with_cache(tokens, names_filter=lambda n: n in names)
    out = torch.stack([cache[f"blocks.{layer}.attn.hook_result"][0, -1] for layer in range(n_layers)])
    return out, cache["ln_final.hook_scale"][0, -1]


def changed_heads(base: LoadedModel, edited: LoadedModel, prompt: str, k: int = 5) -> list[dict[str, Any]]:
    """The ``k`` heads whose last-position output changed most (|post - pre| / |pre|) by the edit,
    with the tokens they promote before and after."""
    from kcircuits.circuits.heads import project_to_vocab as project_vector

    tokens = base.tokenize(prompt)
    pre, pre_scale = _head_results(base, tokens)
    post, post_scale = _head_results(edited, tokens)
    change = (post - pre).norm(dim=-1) / pre.norm(dim=-1).clamp_min(1e-6)  # [L, H]
    top = change.flatten().topk(min(k, change.numel()))
    n_heads = change.shape[1]
    rows = []
    for value, flat in zip(top.values.tolist(), top.indices.tolist(), strict=True):
        layer, head = divmod(flat, n_heads)
        rows.append({"node": f"a{layer}.h{head}", "change": value,
                     "pre": {"promoted": project_vector(base, pre[layer, head], pre_scale, 5)["promoted"]},
                     "post": {"promoted": project_vector(edited, post[layer, head], post_scale, 5)["promoted"]}})
    return rows

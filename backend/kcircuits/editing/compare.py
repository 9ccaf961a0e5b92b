"""Pre- vs post-edit comparison: a fair circuit diff and a head-output diff.

Fair circuits: the pre circuit explains the base model's answer (the old target), the post circuit
the edited model's new target. Both use ONE counterfactual input and foil, picked once on the base
model by the engine's picker (:func:`pick_counterfactual`), the same discovery method and the same
size. A side whose circuit is empty, unfaithful or of undefined faithfulness is reported as such
(:func:`side_status`) and no diff is drawn. The diff (:func:`edge_diff`) is on edge scores.

Head outputs (:func:`head_state`, :func:`head_output_diff`): every head's output at the last
position, before and after the edit, compared as vectors and by its direct contribution to the new
and old targets' logits; with its top tokens through the unembedding and the "mover after ROME"
pattern (a head that reads the subject and whose top tokens gain the new target).
Edge keys are "source->receiver"; node ids "a{layer}.h{head}".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from kcircuits.circuits.graph import head_id
from kcircuits.lm.loader import LoadedModel

MOVER_PATTERN = "mover after ROME"


@dataclass(frozen=True)
class CompareThresholds:
    """Every threshold of a comparison (recorded in its result)."""

    #: a side is diffed only when its circuit's faithfulness is at least this
    min_faithfulness: float = 0.8
    #: a shared edge is reweighted when |score_post - score_pre| > this * max |score| (both sides)
    reweight_rel: float = 0.1
    #: a head is unchanged when |out_post - out_pre| < this * |out_pre| (last position)
    head_unchanged_rel: float = 0.05
    #: how many projected tokens count as a head's top tokens
    top_k: int = 10
    #: a head attends to the subject when its last-position attention on the subject's tokens sums to this
    subject_attention: float = 0.3

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def edge_key(edge: Mapping[str, Any]) -> str:
    return f"{edge['source']}->{edge['receiver']}"


# the shared counterfactual -------------------------------------------------------------------
def pick_counterfactual(model: LoadedModel, prompt: str, target: str, subject: str | None,
                        avoid: Sequence[str] = ()) -> dict[str, Any]:
    """The counterfactual both sides use, chosen ONCE on ``model`` (the base) for ``target`` (its
    answer) by :func:`kcircuits.circuits.discover.prepare`'s picker: the best candidate whose foil
    is none of ``avoid`` (e.g. the new target) and round-trips as a token string. Without one,
    the ablation prepare falls back to (zero) and no foil. -> {"ablation", "corrupt_prompt",
    "foil", "source", "note"}."""
    from kcircuits.circuits.discover import MAX_COUNTERFACTUALS, prepare

    setup = prepare(model, prompt, target, subject=subject, counterfactuals=MAX_COUNTERFACTUALS)
    if setup.ablation != "patch" or not setup.corrupt_prompts:
        return {"ablation": setup.ablation, "corrupt_prompt": None, "foil": None, "source": "none",
                "note": setup.notes.get("corrupt_source")}
    avoid_ids = {model.first_token_id(t) for t in avoid if t and t.strip()}
    foil_ids = setup.foil_ids or []
    for rank, (corrupt, foil_id) in enumerate(zip(setup.corrupt_prompts, foil_ids, strict=True)):
        foil = model.token_strings([foil_id])[0]
        if foil_id in avoid_ids or model.first_token_id(foil) != foil_id:
            continue
        note = "the picker's first choice" if rank == 0 else (
            f"the picker's choice {rank + 1}: the earlier ones' foils equal a target of the edit")
        return {"ablation": "patch", "corrupt_prompt": corrupt, "foil": foil,
                "source": setup.notes.get("corrupt_source"), "note": note}
    foil = model.token_strings([foil_ids[0]])[0]
    return {"ablation": "patch", "corrupt_prompt": setup.corrupt_prompts[0], "foil": foil,
            "source": setup.notes.get("corrupt_source"),
            "note": "every candidate's foil equals a target of the edit; the first is used"}


# circuits ------------------------------------------------------------------------------------
def holds(faithfulness: float | None, minimum: float) -> bool:
    """A defined, finite faithfulness of at least ``minimum``."""
    return faithfulness is not None and math.isfinite(faithfulness) and faithfulness >= minimum


def _grow_top_n(circuit: Mapping[str, Any], minimum: float) -> int | None:
    """The smallest curve size above the circuit's whose faithfulness reaches ``minimum``."""
    edges = circuit["metrics"]["edges"]
    for point in sorted(circuit.get("curve", {}).get("points", []), key=lambda p: p["edges"]):
        if point["edges"] > edges and holds(point.get("faithfulness"), minimum):
            return int(point["edges"])
    return None


def side_status(circuit: Mapping[str, Any] | None, thresholds: CompareThresholds = CompareThresholds(),
                error: str | None = None) -> dict[str, Any]:
    """Whether one side's circuit can be diffed: {"usable", "reason", "faithfulness", "edges",
    "grow_top_n"} (``reason`` is None when usable; ``grow_top_n`` a size that would be faithful)."""
    if circuit is None:
        return {"usable": False, "reason": f"no circuit: {error or 'not computed'}", "faithfulness": None,
                "edges": 0, "grow_top_n": None}
    metrics = circuit["metrics"]
    faith, edges = metrics.get("faithfulness"), int(metrics.get("edges", 0))
    reason = None
    if edges == 0:
        reason = "the circuit is empty (0 edges)"
    elif metrics.get("faithfulness_undefined"):
        reason = f"faithfulness is undefined: {metrics['faithfulness_undefined']}"
    elif faith is None or not math.isfinite(faith):
        reason = "faithfulness is undefined"
    elif faith < thresholds.min_faithfulness:
        reason = f"faithfulness {faith:.2f} is below {thresholds.min_faithfulness:g}"
    grow = _grow_top_n(circuit, thresholds.min_faithfulness) if reason else None
    return {"usable": reason is None, "reason": reason, "faithfulness": faith, "edges": edges, "grow_top_n": grow}


def edge_diff(pre: Mapping[str, Any], post: Mapping[str, Any],
              thresholds: CompareThresholds = CompareThresholds(), limit: int = 300) -> dict[str, Any]:
    """Edges added to / removed from the circuit (largest |score| first) and shared circuit edges
    whose score changed by more than ``reweight_rel`` of the largest |score| on either side
    (largest change first). Scores are those of the listed edges; at most ``limit`` of each."""
    pre_scores = {edge_key(e): float(e["score"]) for e in pre["edges"]}
    post_scores = {edge_key(e): float(e["score"]) for e in post["edges"]}
    pre_in = {edge_key(e) for e in pre["edges"] if e["in_circuit"]}
    post_in = {edge_key(e) for e in post["edges"] if e["in_circuit"]}
    scale = max((abs(s) for s in (*pre_scores.values(), *post_scores.values())), default=0.0)
    cut = thresholds.reweight_rel * scale
    reweighted = []
    for key in pre_in & post_in:
        a, b = pre_scores[key], post_scores[key]
        if abs(b - a) > cut:
            reweighted.append({"key": key, "pre": a, "post": b, "delta": b - a,
                               "rel": abs(b - a) / scale if scale else 0.0})
    reweighted.sort(key=lambda r: -abs(r["delta"]))
    added = sorted(post_in - pre_in, key=lambda k: -abs(post_scores[k]))
    removed = sorted(pre_in - post_in, key=lambda k: -abs(pre_scores[k]))
    return {"added": added[:limit], "removed": removed[:limit], "reweighted": reweighted[:limit],
            "n_added": len(added), "n_removed": len(removed), "n_reweighted": len(reweighted),
            "shared": len(pre_in & post_in), "score_scale": scale, "reweight_threshold": cut,
            "rule": f"reweighted: a shared edge with |delta score| > {thresholds.reweight_rel:g} x max |score| "
                    f"({scale:.4g}) over both sides"}


def compare_circuits(pre: Mapping[str, Any] | None, post: Mapping[str, Any] | None,
                     thresholds: CompareThresholds = CompareThresholds(),
                     errors: Mapping[str, str | None] | None = None) -> dict[str, Any]:
    """Both sides' status, whether they share counterfactual and foil, and the edge diff (None,
    with the reason, when a side is not usable)."""
    errors = errors or {}
    sides = {"pre": side_status(pre, thresholds, errors.get("pre")),
             "post": side_status(post, thresholds, errors.get("post"))}
    bad = [f"{name}: {s['reason']}" for name, s in sides.items() if not s["usable"]]
    same = None
    if pre is not None and post is not None:
        same = (pre["corrupt_prompt"] == post["corrupt_prompt"] and pre["ablation"] == post["ablation"]
                and pre["params"].get("foil") == post["params"].get("foil") and pre["method"] == post["method"])
        if not same:
            bad.append("the two sides used different counterfactuals, foils or methods")
    return {"sides": sides, "same_counterfactual": same, "comparable": not bad,
            "reason": "; ".join(bad) or None,
            "diff": edge_diff(pre, post, thresholds) if not bad else None}


def circuit_side(model: LoadedModel, prompt: str, target: str, subject: str | None, counterfactual: Mapping[str, Any],
                 method: str, top_n: int | None) -> tuple[dict[str, Any] | None, str | None]:
    """One side's circuit with the shared ``counterfactual`` (from :func:`pick_counterfactual`).
    -> (circuit with head roles, None) or (None, why it could not be computed)."""
    from kcircuits.circuits.discover import compute_circuit
    from kcircuits.errors import BadRequest

    try:
        circuit = compute_circuit(model, prompt, target, method=method, ablation=counterfactual["ablation"],
                                  corrupt_prompt=counterfactual["corrupt_prompt"], foil=counterfactual["foil"],
                                  subject=subject, top_n=top_n)
    except BadRequest as exc:
        return None, exc.message
    return circuit, None


# head outputs --------------------------------------------------------------------------------
@dataclass
class HeadState:
    """Every head at the last position of one model on one prompt (CPU tensors)."""

    out: torch.Tensor  # [L, H, d_model] the head's output (attn.hook_result)
    dla: dict[str, torch.Tensor]  # name -> [L, H] direct contribution to that token's (centred) logit
    top_ids: torch.Tensor  # [L, H, k] the head's top-k promoted tokens through final norm and W_U
    top_scores: torch.Tensor  # [L, H, k]
    subject_attention: torch.Tensor  # [L, H] last-position attention summed over the subject's tokens


def head_state(model: LoadedModel, prompt: str, subject_positions: Sequence[int], token_ids: Mapping[str, int],
               k: int = 10) -> HeadState:
    """:class:`HeadState` of ``model`` on ``prompt`` with DLA for each of ``token_ids``."""
    from kcircuits.circuits.heads import readout_matrix

    n_layers = model.arch.n_layers
    names = {"ln_final.hook_scale"}
    for layer in range(n_layers):
        names |= {f"blocks.{layer}.attn.hook_result", f"blocks.{layer}.attn.hook_pattern"}
    tokens = model.tokenize(prompt)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names)
        out = torch.stack([cache[f"blocks.{layer}.attn.hook_result"][0, -1] for layer in range(n_layers)]).float()
        scale = cache["ln_final.hook_scale"][0, -1].float()
        normed = out / scale  # [L, H, d]
        ids = list(token_ids.values())
        cols = readout_matrix(model, torch.tensor(ids, device=model.device), centre_vocab=True)  # [d, n]
        dla = normed @ cols  # [L, H, n]
        logits = normed @ readout_matrix(model)  # [L, H, V]
        top = torch.topk(logits, k, dim=-1)
        pos = torch.tensor(list(subject_positions), dtype=torch.long, device=model.device)
        attn = torch.stack([cache[f"blocks.{layer}.attn.hook_pattern"][0, :, -1].float() for layer in range(n_layers)])
        subj = attn.index_select(-1, pos).sum(-1) if len(pos) else torch.zeros(attn.shape[:2])
    return HeadState(out.cpu(), {name: dla[..., j].cpu() for j, name in enumerate(token_ids)},
                     top.indices.cpu(), top.values.cpu(), subj.cpu())


def _membership(pre: set[int], post: set[int], tokens: set[int]) -> str:
    """Whether any of ``tokens`` (a target's spellings) entered, left or kept a head's top tokens."""
    return {(False, True): "entered", (True, False): "left", (True, True): "kept"}.get(
        (bool(tokens & pre), bool(tokens & post)), "absent")


def head_output_diff(model: LoadedModel, pre: HeadState, post: HeadState, targets: Mapping[str, int],
                     subject_ids: Sequence[int], thresholds: CompareThresholds = CompareThresholds(),
                     spellings: Mapping[str, set[int]] | None = None) -> dict[str, Any]:
    """One row per head, the largest output change first: |out_post - out_pre| (and relative to
    |out_pre|), the change of its DLA to the ``targets`` ("new", "old"), its top tokens before and
    after with whether the new target, the old target or a subject token entered or left them, and
    whether it shows the mover pattern (attends to the subject after the edit, gains the new target).
    ``spellings``: per target, the token ids that count as it in the top tokens (default: its id;
    see :func:`target_spellings`). ``model`` only decodes token ids (the tokenizer is shared)."""
    n_layers, n_heads = pre.out.shape[:2]
    delta = (post.out - pre.out).norm(dim=-1)  # [L, H]
    pre_norm = pre.out.norm(dim=-1)
    rel = delta / pre_norm.clamp_min(1e-12)
    subject_set = set(subject_ids)
    spellings = {name: set((spellings or {}).get(name, ())) | {tid} for name, tid in targets.items()}
    rows = []
    for layer in range(n_layers):
        for head in range(n_heads):
            top_pre, top_post = pre.top_ids[layer, head].tolist(), post.top_ids[layer, head].tolist()
            s_pre, s_post = set(top_pre), set(top_post)
            marks = {name: _membership(s_pre, s_post, spellings[name]) for name in targets}
            marks["subject_entered"] = model.token_strings(sorted((s_post - s_pre) & subject_set))
            marks["subject_left"] = model.token_strings(sorted((s_pre - s_post) & subject_set))
            changed = bool(delta[layer, head] >= thresholds.head_unchanged_rel * pre_norm[layer, head]) and bool(
                delta[layer, head] > 0)
            attends = float(post.subject_attention[layer, head]) >= thresholds.subject_attention
            rows.append({
                "node": head_id(layer, head), "layer": layer, "head": head,
                "change": float(delta[layer, head]), "pre_norm": float(pre_norm[layer, head]),
                "rel_change": float(rel[layer, head]), "changed": changed,
                "dla": {name: {"pre": float(pre.dla[name][layer, head]), "post": float(post.dla[name][layer, head]),
                               "delta": float(post.dla[name][layer, head] - pre.dla[name][layer, head])}
                        for name in targets},
                "subject_attention": {"pre": float(pre.subject_attention[layer, head]),
                                      "post": float(post.subject_attention[layer, head])},
                "top": {"pre": _tokens(model, top_pre, pre.top_scores[layer, head].tolist()),
                        "post": _tokens(model, top_post, post.top_scores[layer, head].tolist())},
                "marks": marks,
                "mover": changed and attends and marks.get("new") == "entered",
            })
    first = next(iter(targets), None)
    rows.sort(key=lambda r: (-r["change"], -abs(r["dla"][first]["delta"]) if first else 0.0))
    return {"rows": rows, "n_changed": sum(r["changed"] for r in rows),
            "n_unchanged": sum(not r["changed"] for r in rows),
            "movers": [r["node"] for r in rows if r["mover"]],
            "rule": {"unchanged": f"|out_post - out_pre| < {thresholds.head_unchanged_rel:g} x |out_pre| "
                                  "(last position)",
                     "mover": f"{MOVER_PATTERN}: changed, last-position attention on the subject >= "
                              f"{thresholds.subject_attention:g} after the edit, and the new target entered "
                              f"the head's top {thresholds.top_k} tokens",
                     "targets": "a target counts in the top tokens by the first token of any spelling: as "
                                "given, stripped, with one leading space, lower/capitalised/upper case (a variant "
                                "whose first token is one character counts only for a one-character target)"}}


def _tokens(model: LoadedModel, ids: list[int], scores: list[float]) -> list[dict[str, Any]]:
    return [{"token": s, "id": i, "score": v} for s, i, v in zip(model.token_strings(ids), ids, scores, strict=True)]


def curves(lens_new: dict, lens_old: dict) -> dict[str, dict]:
    """{"new": {"rank", "prob"}, "old": {...}} from two lens results (target new / old)."""
    return {name: {"rank": res["target"]["rank"], "prob": res["target"]["prob"]}
            for name, res in (("new", lens_new), ("old", lens_old))}


def edit_targets(model: LoadedModel, new_target: str, old_target: str | None) -> dict[str, int]:
    """{"new": id, "old": id} (first tokens; "old" left out when unknown)."""
    out = {"new": model.first_token_id(new_target)}
    if old_target and old_target.strip():
        out["old"] = model.first_token_id(old_target)
    return out


def spelling_variants(text: str) -> list[str]:
    """``text`` as given, stripped, with one leading space, and each of those lower-cased,
    capitalised and upper-cased (" Rome", "Rome", " rome", " ROME", ...), duplicates dropped."""
    core = text.strip()
    cases = dict.fromkeys([core, core.lower(), core[:1].upper() + core[1:], core.upper()])
    return list(dict.fromkeys([text, *(v for c in cases for v in (c, " " + c))]))


def target_spellings(model: LoadedModel, new_target: str, old_target: str | None) -> dict[str, set[int]]:
    """Per target ("new", "old"): the first-token ids of its :func:`spelling_variants`, so a head
    promoting " Rome", "Rome" or " rome" counts. A variant whose first token is a single character
    (after stripping spaces) counts only when the target itself is that one character: a bare
    " R" is not evidence for " Rome"."""
    out = {}
    for name, text in (("new", new_target), ("old", old_target)):
        if text and text.strip():
            ids = {model.first_token_id(text)}
            for variant in spelling_variants(text):
                tid = model.first_token_id(variant)
                if len(model.token_strings([tid])[0].strip()) > 1 or len(text.strip()) == 1:
                    ids.add(tid)
            out[name] = ids
    return out


def subject_token_ids(model: LoadedModel, prompt: str, positions: Sequence[int]) -> list[int]:
    tokens = model.tokenize(prompt)[0]
    return [int(tokens[p]) for p in positions]

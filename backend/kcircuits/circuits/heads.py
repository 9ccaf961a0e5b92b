"""Head roles (METHODS section 5): mover / relation / mixture, with significance, from one forward.

Continuous scores of a head h at the attending position d (default: the last), one forward with cache:

- subject attention A_subj = sum_{s in S} attn_h[d, s] over the subject's token positions S;
- relation attention A_rel = sum_{s in R} attn_h[d, s] over the relation's *content* positions R
  (:func:`relation_positions`): prompt positions that are not subject positions, not d itself,
  not position 0 (BOS, or the attention sink when there is no BOS), not a special token (BOS/EOS/
  pad), and whose token is not a function word (:data:`FUNCTION_WORDS`) nor bare punctuation or
  whitespace. "The capital of France is the city of" has R = {capital, city};
- direct effect ``dla``: the head's output at d read through the final norm (cached scale) onto
  the centred target direction u_y = w_lnf * (W_U[:, y] - mean_v W_U) (LayerNorm: centred over
  d_model too); per source s, DLA(s) = attn_h[d, s] (v_s W_O) / sigma_final . u_y, which adds up
  to ``dla`` exactly (``subject_dla``, ``relation_dla`` and the |DLA| shares split it by S and R);
- what it writes: its output at d (its OV output, attention-weighted) projected through the final
  norm and W_U: the 1-based ``target_rank`` of the target (ties count against it) and
  ``subject_rank``, the best rank of a subject token (function-word subject tokens such as " de"
  are skipped unless all are), plus its top promoted / suppressed tokens;
- ``attribution``: the head's circuit score when the caller has one (a circuit's node score).

Significance (against the other heads classified together, e.g. a circuit's heads): with
x_h = |score_h|, med = median_h x_h and MAD = median_h |x_h - med|, a head is significant when
x_h > med + k * MAD (strict, so with a zero MAD it must exceed the median; with fewer than three
heads nothing is significant) for its direct effect or, when given, its attribution; k is
``significance_k``. ``significance`` reports (x_h - med) / MAD per score (None when MAD is 0).
When fewer than ``min_population`` heads are classified (a tiny circuit), they are judged among
all the model's heads instead.

Roles (only for significant heads, else None):
- mover: A_subj >= ``mover_attention`` and it writes the answer or the subject: ``target_rank``
  or ``subject_rank`` <= ``write_top_k``;
- relation: A_rel >= ``relation_attention``;
- mixture: both of the above.
The rules and thresholds are ours (configurable through :class:`HeadRoleThresholds`); results
record them (:func:`role_rules`).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

import torch

from kcircuits.circuits.graph import head_id, parse_node_id
from kcircuits.errors import BadRequest

if TYPE_CHECKING:
    from kcircuits.lm.loader import LoadedModel

ROLES = ("mover", "relation", "mixture")

#: English closed-class words: never relation content words.
FUNCTION_WORDS = frozenset("""
a an the this that these those some any each every no
of in on at to for from by with about into onto over under after before between through during
near within without against among across behind beyond upon toward towards via per than as like
is are was were be been being am do does did done has have had having will would shall should
can could may might must
and or but nor so yet if then because while although though whether
it its it's he him his she her hers they them their theirs we us our you your i me my mine
who whom whose which what where when why how there here
not also very just only more most much many such same other another own
s 's
""".split())


@dataclass(frozen=True)
class HeadRoleThresholds:
    """Thresholds of the role rules (ours; see the module doc)."""

    significance_k: float = 3.0  # MADs above the median |score| of the heads classified together
    mover_attention: float = 0.3  # A_subj
    relation_attention: float = 0.3  # A_rel (content positions only)
    write_top_k: int = 10  # a mover's target or subject token rank in its projection
    lens_k: int = 10  # top tokens reported per head
    min_population: int = 8  # fewer heads classified together: judged among all the model's heads

    def check(self) -> None:
        if not (self.significance_k >= 0 and 0 <= self.mover_attention <= 1 and 0 <= self.relation_attention <= 1
                and self.write_top_k >= 1 and self.lens_k >= 1 and self.min_population >= 3):
            raise BadRequest("role thresholds: significance_k >= 0, attention thresholds in [0, 1], "
                             "write_top_k >= 1, lens_k >= 1 and min_population >= 3")


def role_rules(thresholds: HeadRoleThresholds) -> dict[str, Any]:
    """The thresholds and the rules in words, for a result to record."""
    t = thresholds
    return {
        "thresholds": asdict(t),
        "significance": f"|direct effect| or |attribution| > median + {t.significance_k:g} * MAD over the "
                        f"heads classified together (a circuit's heads; all the model's heads when fewer "
                        f"than {t.min_population})",
        "mover": f"significant, subject attention >= {t.mover_attention:g}, and the target or a subject "
                 f"token ranks <= {t.write_top_k} in the head's output projected through the unembedding",
        "relation": f"significant, attention >= {t.relation_attention:g} to the relation's content tokens "
                    "(not subject, not the attending position, not position 0 / special tokens, not "
                    "function words or punctuation)",
        "mixture": "both mover and relation",
    }


def parse_head_id(node: str, n_layers: int | None = None, n_heads: int | None = None) -> tuple[int, int]:
    """``"a3.h7"`` -> (3, 7); BadRequest for malformed, non-head or out-of-range ids."""
    ref = parse_node_id(node, n_layers, n_heads)
    if ref.kind != "head":
        raise BadRequest(f"invalid head id {node!r} (expected a{{layer}}.h{{head}})")
    return ref.layer, ref.head


def _final_norm_weight(model: LoadedModel) -> torch.Tensor | None:
    """The final norm's gain [d_model] (None when it is all ones)."""
    weight = getattr(model.final_norm, "weight", None)
    return None if weight is None or bool((weight == 1).all()) else weight.detach()


def readout_matrix(model: LoadedModel, token_ids: torch.Tensor | None = None, centre_vocab: bool = False) -> torch.Tensor:
    """Linear readout from a residual-stream vector (already divided by the final-norm scale) to
    logits: [d_model, n] for ``token_ids`` (all vocab when None). Includes the final norm's gain
    and, for LayerNorm, the centring over d_model; ``centre_vocab`` subtracts mean_v W_U."""
    W_U = model.W_U
    cols = W_U if token_ids is None else W_U[:, token_ids]
    if centre_vocab:
        cols = cols - W_U.mean(1, keepdim=True)
    gain = _final_norm_weight(model)
    if gain is not None:
        cols = cols * gain[:, None]
    if model.norm_kind == "layernorm":
        cols = cols - cols.mean(0, keepdim=True)
    return cols.float()


def project_to_vocab(model: LoadedModel, vec: torch.Tensor, scale: torch.Tensor | float, k: int = 10) -> dict[str, list[dict]]:
    """Top-``k`` promoted and suppressed tokens of a residual contribution ``vec`` [d_model]
    read through the final norm with a cached ``scale`` and W_U (no unembedding bias)."""
    logits = (vec.float() / scale) @ readout_matrix(model)
    top = torch.topk(logits, k)
    bottom = torch.topk(-logits, k)

    def rows(ids: torch.Tensor, values: torch.Tensor) -> list[dict]:
        strings = model.token_strings(ids)
        return [{"token": s, "id": int(i), "score": float(v)} for s, i, v in zip(strings, ids.tolist(), values.tolist(), strict=True)]

    return {"promoted": rows(top.indices, top.values), "suppressed": rows(bottom.indices, -bottom.values)}


def _layer_cache(model: LoadedModel, tokens: torch.Tensor, layers: Sequence[int],
                 mlp_layers: Sequence[int] = ()) -> dict[str, torch.Tensor]:
    """One forward of ``tokens`` [1, pos] caching the final-norm scale, the attention pattern, v and
    per-head outputs of ``layers`` and the MLP outputs of ``mlp_layers``."""
    wanted = {"ln_final.hook_scale"}
    for layer in layers:
        wanted |= {f"blocks.{layer}.attn.hook_pattern", f"blocks.{layer}.attn.hook_v", f"blocks.{layer}.attn.hook_result"}
    wanted |= {f"blocks.{layer}.hook_mlp_out" for layer in mlp_layers}
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, wanted)
    return {name: cache[name] for name in wanted}


def per_source_outputs(model: LoadedModel, cache: dict[str, torch.Tensor], layer: int, position: int) -> torch.Tensor:
    """Per-head, per-source output vectors at query ``position``: [H, k, d_model], where entry
    (h, s) = attn_h[position, s] * v_s W_O[h] (GQA heads use their kv group's v). Sums over s to
    hook_result[position, h]."""
    pattern = cache[f"blocks.{layer}.attn.hook_pattern"][0, :, position]  # [H, k]
    v = cache[f"blocks.{layer}.attn.hook_v"][0]  # [k, G, d_head]
    W_O = model.attn_W_O(layer)  # [H, d_head, d_model]
    n_heads, n_groups = W_O.shape[0], v.shape[1]
    v = v.repeat_interleave(n_heads // n_groups, dim=1)  # [k, H, d_head]
    return torch.einsum("hk,khe,hed->hkd", pattern.float(), v.float(), W_O.float())


def _is_function_word(token: str) -> bool:
    word = token.strip().lower()
    return not any(c.isalnum() for c in word) or word in FUNCTION_WORDS


def relation_positions(model: LoadedModel, tokens: torch.Tensor, subject_positions: Sequence[int], position: int = -1) -> list[int]:
    """The relation's content positions of ``tokens`` [1, pos] or [pos] for the attending
    ``position`` (see the module doc for the rule)."""
    ids = tokens.reshape(-1).tolist()
    n = len(ids)
    if not n:
        return []
    skip = set(subject_positions) | {0, position % n}
    special = set(getattr(model.tokenizer, "all_special_ids", None) or [])
    strings = model.token_strings(ids)
    return [p for p in range(n) if p not in skip and ids[p] not in special and not _is_function_word(strings[p])]


def significant_mask(values: Sequence[float], k: float) -> tuple[list[bool], list[float | None]]:
    """Robust outliers of |values|: x > median + k * MAD (strict), and (x - median) / MAD per value
    (None when MAD is 0). Fewer than three values: none is significant."""
    x = [abs(float(v)) for v in values]
    if len(x) < 3:
        return [False] * len(x), [None] * len(x)
    med = statistics.median(x)
    mad = statistics.median(abs(v - med) for v in x)
    return [v > med + k * mad for v in x], [(v - med) / mad if mad > 0 else None for v in x]


def _role(significant: bool, a_subj: float, a_rel: float, writes: bool, t: HeadRoleThresholds) -> str | None:
    if not significant:
        return None
    mover = a_subj >= t.mover_attention and writes
    relation = a_rel >= t.relation_attention
    if mover and relation:
        return "mixture"
    return "mover" if mover else "relation" if relation else None


def _ranks(lens: torch.Tensor, ids: Sequence[int]) -> torch.Tensor:
    """1-based ranks [H, len(ids)] of token ``ids`` in each row of ``lens`` [H, V]; ties count against
    the token (a head writing nothing ranks every token last, not first)."""
    picked = lens[:, list(ids)]  # [H, n]
    return (lens[:, None, :] >= picked[:, :, None]).sum(-1)


def classify_heads(model: LoadedModel, tokens: torch.Tensor, subject_positions: Sequence[int], target_id: int,
                   head_ids: Sequence[str] | None = None, thresholds: HeadRoleThresholds = HeadRoleThresholds(),
                   position: int = -1, attribution: Mapping[str, float] | None = None,
                   cache: Mapping[str, torch.Tensor] | None = None) -> dict[str, dict[str, Any]]:
    """Role scores and roles of ``head_ids`` (default: every head) at ``position`` (default last) of
    ``tokens`` [1, pos], one forward (none when ``cache`` from :func:`_layer_cache` over
    :func:`_population_layers` is given). Significance is judged among ``head_ids`` (module doc);
    ``attribution`` {head_id: score} adds the circuit's scores to it.

    Returns {head_id: {role, significant, significance {dla, attribution}, subject_attention,
    relation_attention, subject_dla_share, relation_dla_share, dla, subject_dla, relation_dla,
    attribution, target_rank, subject_rank, top_tokens, top_token_ids, suppressed_tokens}}.
    """
    if tokens.dim() != 2 or tokens.shape[0] != 1:
        raise ValueError("classify_heads takes one prompt: tokens of shape [1, pos]")
    thresholds.check()
    requested, wanted = _population(model, head_ids, thresholds)
    n_pos = int(tokens.shape[1])
    pos = position % n_pos
    subj = sorted({p for p in subject_positions if 0 <= p < n_pos})
    rel = relation_positions(model, tokens, subj, pos)
    layers = sorted({layer for layer, _ in wanted})
    if cache is None:
        cache = _layer_cache(model, tokens, layers)
    scale = cache["ln_final.hook_scale"][0, pos].float()  # [1]
    u_target = readout_matrix(model, torch.tensor([target_id], device=model.device), centre_vocab=True)[:, 0]
    readout = readout_matrix(model)  # [d_model, V]
    subject_ids = [int(tokens[0, p]) for p in subj]
    content = [i for i, s in zip(subject_ids, model.token_strings(subject_ids), strict=True) if not _is_function_word(s)]
    subject_ids = sorted(set(content or subject_ids))
    k = thresholds.lens_k
    out: dict[str, dict[str, Any]] = {}
    for layer in layers:
        per_source = per_source_outputs(model, cache, layer, pos)  # [H, k, d]
        dla = (per_source / scale) @ u_target  # [H, k]
        head_out = cache[f"blocks.{layer}.attn.hook_result"][0, pos].float()  # [H, d]
        lens = (head_out / scale) @ readout  # [H, V]
        top = torch.topk(lens, k, dim=-1).indices
        bottom = torch.topk(-lens, k, dim=-1).indices
        target_rank = _ranks(lens, [target_id])[:, 0]  # [H]
        subject_rank = _ranks(lens, subject_ids).min(-1).values if subject_ids else None  # [H]
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"][0, :, pos].float()  # [H, k]
        for layer_, h in wanted:
            if layer_ != layer:
                continue
            abs_dla = dla[h].abs()
            total_abs = float(abs_dla.sum())
            hid = head_id(layer, h)
            out[hid] = {
                "role": None, "significant": False,
                "subject_attention": float(pattern[h, subj].sum()) if subj else 0.0,
                "relation_attention": float(pattern[h, rel].sum()) if rel else 0.0,
                "subject_dla_share": float(abs_dla[subj].sum()) / total_abs if subj and total_abs > 0 else 0.0,
                "relation_dla_share": float(abs_dla[rel].sum()) / total_abs if rel and total_abs > 0 else 0.0,
                "dla": float(dla[h].sum()),
                "subject_dla": float(dla[h, subj].sum()) if subj else 0.0,
                "relation_dla": float(dla[h, rel].sum()) if rel else 0.0,
                "attribution": None if attribution is None else attribution.get(hid),
                "target_rank": int(target_rank[h]),
                "subject_rank": int(subject_rank[h]) if subject_rank is not None else None,
                "top_tokens": model.token_strings(top[h]), "top_token_ids": top[h].tolist(),
                "suppressed_tokens": model.token_strings(bottom[h]),
            }
    _assign_roles(out, thresholds)
    return {head_id(layer, h): out[head_id(layer, h)] for layer, h in requested}


def _population(model: LoadedModel, head_ids: Sequence[str] | None,
                thresholds: HeadRoleThresholds) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(requested, judged-among) heads as (layer, head): ``head_ids`` (default every head), judged
    among every head when fewer than ``min_population``."""
    n_layers, n_heads = model.arch.n_layers, model.arch.n_heads
    every = [(layer, h) for layer in range(n_layers) for h in range(n_heads)]
    requested = every if head_ids is None else list(dict.fromkeys(parse_head_id(hid, n_layers, n_heads)
                                                                  for hid in head_ids))
    return requested, every if len(requested) < thresholds.min_population else requested


def _population_layers(model: LoadedModel, head_ids: Sequence[str] | None, thresholds: HeadRoleThresholds) -> list[int]:
    """Layers whose attention :func:`classify_heads` reads for ``head_ids``."""
    return sorted({layer for layer, _ in _population(model, head_ids, thresholds)[1]})


def node_top_tokens(model: LoadedModel, cache: Mapping[str, torch.Tensor], node_ids: Sequence[str],
                    position: int = -1) -> dict[str, dict[str, Any]]:
    """Top lens token of each head (``a{l}.h{h}``) or MLP (``m{l}``) node at ``position``: the node's
    output there [d_model] divided by the cached final-norm scale and read through the final norm's
    gain and W_U (:func:`readout_matrix`, no unembedding bias), one matmul [n, d_model] @ [d_model, V].
    ``cache`` holds ``ln_final.hook_scale`` and the nodes' ``attn.hook_result`` / ``hook_mlp_out``.
    Returns {node_id: {token, id, logit}}; ``logit`` is the token's direct logit from that output."""
    n_layers, n_heads = model.arch.n_layers, model.arch.n_heads
    vecs, ids = [], []
    for nid in node_ids:
        ref = parse_node_id(nid, n_layers, n_heads)
        if ref.kind == "mlp":
            vecs.append(cache[f"blocks.{ref.layer}.hook_mlp_out"][0, position])
        else:
            vecs.append(cache[f"blocks.{ref.layer}.attn.hook_result"][0, position, ref.head])
        ids.append(nid)
    if not ids:
        return {}
    scale = cache["ln_final.hook_scale"][0, position].float()  # [1]
    lens = (torch.stack(vecs).float() / scale) @ readout_matrix(model)  # [n, V]
    best = lens.max(-1)
    strings = model.token_strings(best.indices)
    return {nid: {"token": tok, "id": int(i), "logit": float(v)}
            for nid, tok, i, v in zip(ids, strings, best.indices.tolist(), best.values.tolist(), strict=True)}


def _assign_roles(heads: dict[str, dict[str, Any]], t: HeadRoleThresholds) -> None:
    """Significance among ``heads`` and the role rules, in place."""
    ids = list(heads)
    sig_dla, z_dla = significant_mask([heads[i]["dla"] for i in ids], t.significance_k)
    with_attr = [i for i in ids if heads[i]["attribution"] is not None]
    sig_attr, z_attr = significant_mask([heads[i]["attribution"] for i in with_attr], t.significance_k)
    attr = dict(zip(with_attr, zip(sig_attr, z_attr, strict=True), strict=True))
    for i, sig, z in zip(ids, sig_dla, z_dla, strict=True):
        info = heads[i]
        a_sig, a_z = attr.get(i, (False, None))
        info["significant"] = bool(sig or a_sig)
        info["significance"] = {"dla": z, "attribution": a_z}
        ranks = [r for r in (info["target_rank"], info["subject_rank"]) if r is not None]
        writes = bool(ranks) and min(ranks) <= t.write_top_k
        info["role"] = _role(info["significant"], info["subject_attention"], info["relation_attention"], writes, t)


def role_counts(heads: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
    """Heads per role (``none``: unlabelled) and the total."""
    counts = {role: 0 for role in (*ROLES, "none")}
    for info in heads.values():
        counts[info.get("role") or "none"] += 1
    return {**counts, "total": len(heads)}


def annotate_circuit_roles(model: LoadedModel, result: dict[str, Any],
                           thresholds: HeadRoleThresholds = HeadRoleThresholds()) -> dict[str, Any]:
    """Recompute a circuit result's head roles with significance among its circuit heads (their
    node scores as attribution), in place: ``heads`` (every score), the nodes' ``role`` and a
    ``roles`` record (thresholds, rules, relation tokens, counts); and every node's ``top_token``
    ({token, id, logit} of :func:`node_top_tokens` at the last position for in-circuit heads and
    MLPs, else None). One forward. Returns ``result``."""
    nodes = result.get("nodes") or []
    scores = {n["id"]: float(n.get("score") or 0.0) for n in nodes if n.get("kind") == "head"}
    in_heads = [n["id"] for n in nodes if n.get("kind") == "head" and n.get("in_circuit")]
    in_mlps = [n["id"] for n in nodes if n.get("kind") == "mlp" and n.get("in_circuit")]
    tokens = model.tokenize(result["prompt"])
    subj = list((result.get("subject") or {}).get("positions") or [])
    thresholds.check()
    layers = _population_layers(model, in_heads, thresholds) if in_heads else []
    mlp_layers = [parse_node_id(m).layer for m in in_mlps]
    cache = _layer_cache(model, tokens, layers, mlp_layers) if in_heads or in_mlps else {}
    heads = classify_heads(model, tokens, subj, int(result["target_id"]), in_heads, thresholds,
                           attribution=scores, cache=cache) if in_heads else {}
    top = node_top_tokens(model, cache, in_heads + in_mlps) if cache else {}
    result["heads"] = heads
    for node in nodes:
        if node.get("kind") == "head":
            node["role"] = heads.get(node["id"], {}).get("role")
        node["top_token"] = top.get(node["id"])
    rel = relation_positions(model, tokens, subj)
    result["roles"] = {**role_rules(thresholds), "relation_positions": rel,
                       "relation_tokens": model.token_strings(tokens[0, rel]) if rel else [],
                       "counts": role_counts(heads)}
    return result


def head_detail(model: LoadedModel, tokens: torch.Tensor, head: str, subject_positions: Sequence[int] | None = None,
                target_id: int | None = None, k: int = 10,
                thresholds: HeadRoleThresholds = HeadRoleThresholds(),
                population: Sequence[str] | None = None,
                attribution: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Everything the UI's node panel shows for one head on ``tokens`` [1, pos]:
    the attention pattern [q][k], the tokens its last-position output promotes / suppresses,
    per-source DLA at the last position (when ``target_id`` is given) and the role scores
    (when ``subject_positions`` and ``target_id`` are given), its significance judged among
    ``population`` (default: every head of the model; e.g. a circuit's heads) with ``attribution``."""
    layer, h = parse_head_id(head, model.arch.n_layers, model.arch.n_heads)
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
            heads = list(population) if population is not None else None
            if heads is not None and head not in heads:
                heads.append(head)
            detail["role_scores"] = classify_heads(model, tokens, subject_positions, target_id, heads,
                                                   replace(thresholds, lens_k=k), attribution=attribution)[head]
    return detail

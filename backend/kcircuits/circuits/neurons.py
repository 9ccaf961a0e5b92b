"""Knowledge neurons (Dai et al.; reassessed by Niu et al.): integrated-gradient attribution of
P(answer | prompt) to MLP hidden units, the knowledge-neuron (KN) filters, and neuron edits
(METHODS section 8).

The neuron: unit ``i`` of layer ``l``'s MLP hidden layer, ``blocks.{l}.mlp.hook_post`` - GPT-2's
activation after GELU (the input of ``c_proj``), and for gated Llama-family MLPs
``act(gate) * up``, the input of ``down_proj``. Only its value at the LAST position is varied.

Integrated gradients, baseline 0 (the neuron silent), midpoint Riemann sum over ``steps``:

    attr_i = a_i * (1/m) sum_k dP/dx_i at x = alpha_k * a,   alpha_k = (k + 0.5) / m

Two paths (``path``):
- ``joint`` (default): every layer's last-position hidden vector is set to ``alpha * a`` together,
  one batched forward of ``m`` rows for all layers; completeness over all neurons at once:
  sum attr ~= P(clean) - P(every last-position MLP unit zeroed).
- ``layer`` (Dai et al.): one layer at a time is scaled while the others keep their clean values
  (``L * m`` rows, batched across layers); completeness per layer:
  sum_i attr_{l,i} ~= P(clean) - P(layer l's last-position units zeroed).

Edits are forward hooks on the same hook points (suppress: set to 0, enhance: multiply by 2); the
model's weights are never touched, so every other request sees the unedited model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from kcircuits.errors import BadRequest, CancelFn
from kcircuits.lm.loader import LoadedModel

PATHS = ("joint", "layer")
EDIT_MODES = ("suppress", "enhance")
EDIT_POSITIONS = ("last", "all")
EDIT_KINDS = ("paraphrase", "symmetric", "other_fact", "unrelated")
ProgressFn = Callable[[int, int, str], None]


def hidden_hook(layer: int) -> str:
    """The hook point of layer ``layer``'s MLP hidden units (GPT-2 and Llama alike)."""
    return f"blocks.{layer}.mlp.hook_post"


def neuron_id(layer: int, index: int) -> str:
    return f"L{layer}.N{index}"


def parse_neuron(model: LoadedModel, text: str) -> tuple[int, int]:
    """'L5.N123' -> (5, 123), validated against the model's shape."""
    arch = model.arch
    try:
        layer_s, index_s = text.strip().upper().removeprefix("L").split(".N", 1)
        layer, index = int(layer_s), int(index_s)
    except ValueError:
        raise BadRequest(f"neuron {text!r} is not L<layer>.N<index>") from None
    if not (0 <= layer < arch.n_layers and 0 <= index < arch.d_mlp):
        raise BadRequest(f"neuron {text!r} is outside this model ({arch.n_layers} layers, {arch.d_mlp} units)")
    return layer, index


@dataclass(frozen=True)
class IGParams:
    """Attribution settings. ``batch_size``: rows per forward (memory only; not in the result id)."""

    steps: int = 20
    path: str = "joint"
    batch_size: int = 64

    def check(self) -> None:
        if not 1 <= self.steps <= 512:
            raise BadRequest("steps must be between 1 and 512")
        if self.path not in PATHS:
            raise BadRequest(f"path must be one of {PATHS}")
        if self.batch_size < 1:
            raise BadRequest("batch_size must be at least 1")


@dataclass(frozen=True)
class KNParams:
    """KN filters: ``threshold`` - keep neurons above this fraction of the per-prompt maximum
    attribution; ``share`` - keep those found in at least this fraction of the paraphrase prompts."""

    threshold: float = 0.2
    share: float = 0.5

    def check(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise BadRequest("threshold must lie in (0, 1]")
        if not 0.0 < self.share <= 1.0:
            raise BadRequest("share must lie in (0, 1]")


def last_hidden(model: LoadedModel, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean hidden units at the last position [L, d_mlp] and last-position logits [V] (fp32)."""
    names = {hidden_hook(layer) for layer in range(model.arch.n_layers)}
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens, names)
    acts = torch.stack([cache[hidden_hook(layer)][0, -1] for layer in range(model.arch.n_layers)])
    return acts, logits[0, -1].float()


def _setter(leaf: torch.Tensor, rows: torch.Tensor | None) -> Callable:
    """A hook that writes ``leaf`` [n, d_mlp] at the last position of ``rows`` (all rows if None)."""
    def hook(x, hook=None):  # [b, pos, d_mlp]
        x = x.clone()
        if rows is None:
            x[:, -1] = leaf.to(x.dtype)
        else:
            x[rows, -1] = leaf.to(x.dtype)
        return x
    return hook


def _target_prob(logits: torch.Tensor, target_id: int) -> torch.Tensor:
    """[b, 1 or pos, V] -> P(target) at the last position [b] (fp32)."""
    return logits[:, -1].float().softmax(-1)[:, target_id]


def _alphas(steps: int, device) -> torch.Tensor:
    return (torch.arange(steps, device=device, dtype=torch.float32) + 0.5) / steps


def integrated_gradients(model: LoadedModel, tokens: torch.Tensor, target_id: int,
                         params: IGParams = IGParams()) -> dict[str, Any]:
    """IG of P(target) w.r.t. every MLP hidden unit at the last position.

    tokens [1, pos]. Returns ``attr`` [L, d_mlp] (fp32, CPU), ``acts`` [L, d_mlp], ``prob`` (clean)
    and ``baseline_prob`` (a float for ``joint``, a list per layer for ``layer``).
    """
    params.check()
    L = model.arch.n_layers
    acts, logits = last_hidden(model, tokens)
    acts = acts.float()
    prob = float(logits.softmax(-1)[target_id])
    alphas = _alphas(params.steps, model.device)
    grads = torch.zeros_like(acts)
    # rows: (layer or -1 for all layers, alpha); alpha = 0 rows give the baseline probabilities
    if params.path == "joint":
        rows = [(-1, float(a)) for a in alphas] + [(-1, 0.0)]
    else:
        rows = [(layer, float(a)) for layer in range(L) for a in alphas] + [(layer, 0.0) for layer in range(L)]
    baseline = {}
    for start in range(0, len(rows), params.batch_size):
        chunk = rows[start:start + params.batch_size]
        n = len(chunk)
        scale = torch.tensor([a for _, a in chunk], device=model.device)
        hooks, leaves = [], {}
        for layer in range(L):
            members = torch.tensor([i for i, (lay, _) in enumerate(chunk) if lay in (-1, layer)],
                                   device=model.device, dtype=torch.long)
            if members.numel() == 0:
                continue
            leaf = (scale[members, None] * acts[layer]).requires_grad_(True)  # [n_l, d_mlp]
            leaves[layer] = (members, leaf)
            hooks.append((hidden_hook(layer), _setter(leaf, None if members.numel() == n else members)))
        with torch.enable_grad():
            p = _target_prob(model.run_with_hooks(tokens.expand(n, -1), hooks, last_only=True), target_id)
            p.sum().backward()
        for layer, (members, leaf) in leaves.items():
            for j, row in enumerate(members.tolist()):
                lay, a = chunk[row]
                if a > 0:
                    grads[layer] += leaf.grad[j].float()
                else:
                    baseline[lay] = float(p[row].detach())
    attr = (acts * grads / params.steps).cpu()
    base = baseline[-1] if params.path == "joint" else [baseline[layer] for layer in range(L)]
    return {"attr": attr, "acts": acts.cpu(), "prob": prob, "baseline_prob": base, "logits": logits.cpu()}


def _completeness_gap(res: dict[str, Any], attr: torch.Tensor) -> float:
    """sum(attr) - (P(clean) - P(baseline)): IG's discretisation error (summed over layers for ``layer``)."""
    base = res["baseline_prob"]
    if isinstance(base, list):
        return float(sum(float(attr[layer].sum()) - (res["prob"] - b) for layer, b in enumerate(base)))
    return float(attr.sum()) - (res["prob"] - base)


# -- KN filters and summaries -------------------------------------------------------------------
def kn_candidates(attr: torch.Tensor, threshold: float) -> set[tuple[int, int]]:
    """Neurons whose attribution exceeds ``threshold`` x the prompt's maximum (positive) one."""
    top = float(attr.max())
    if top <= 0:
        return set()
    return {(int(a), int(b)) for a, b in torch.nonzero(attr > threshold * top).tolist()}


def concentration(attr: torch.Tensor, k: int = 10) -> dict[str, float]:
    """How concentrated the positive attribution is: top-``k`` share of the positive mass and the
    participation ratio (sum a)^2 / sum a^2 over positive a (an effective neuron count)."""
    pos = attr.clamp(min=0).flatten()
    total = float(pos.sum())
    if total <= 0:
        return {"top_k": k, "top_k_share": 0.0, "effective_neurons": 0.0}
    top = float(pos.topk(min(k, pos.numel())).values.sum())
    return {"top_k": k, "top_k_share": top / total, "effective_neurons": total ** 2 / float((pos ** 2).sum())}


def layer_histogram(neurons: Sequence[tuple[int, int]], n_layers: int) -> list[int]:
    counts = [0] * n_layers
    for layer, _ in neurons:
        counts[layer] += 1
    return counts


def _top_neurons(attr: torch.Tensor, k: int) -> list[dict[str, Any]]:
    flat = attr.flatten()
    d = attr.shape[1]
    top = flat.topk(min(k, flat.numel()))
    return [{"id": neuron_id(i // d, i % d), "layer": i // d, "index": i % d, "attr": float(v)}
            for v, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)]


def promoted_tokens(model: LoadedModel, layer: int, index: int, k: int = 5) -> list[str]:
    """Tokens the neuron's output weight row promotes most (direct path: W_out row @ W_U)."""
    w_out = model.mlp_W_out(layer)[index].float()  # [d_model]
    logits = w_out @ model.W_U.float()
    return model.token_strings(logits.topk(k).indices.tolist())


def _check_prompts(model: LoadedModel, prompts: Sequence[tuple[str, str]]) -> list[tuple[str, str, torch.Tensor, int]]:
    if not prompts:
        raise BadRequest("no prompts to attribute")
    out = []
    for prompt, target in prompts:
        if not prompt.strip():
            raise BadRequest("a prompt is empty")
        out.append((prompt, target, model.tokenize(prompt), model.first_token_id(target)))
    return out


def find_neurons(model: LoadedModel, prompts: Sequence[tuple[str, str]], *, ig: IGParams = IGParams(),
                 kn: KNParams = KNParams(), top_k: int = 20, with_tokens: bool = True, chart_per_layer: int = 32,
                 progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> dict[str, Any]:
    """Attribution on each (prompt, target) - paraphrases of one fact - and the KN filters
    (``cancel()`` between prompts).

    Returns per-prompt summaries, the KNs (with their share of prompts and mean attribution),
    the layer histogram of KNs, per-layer attribution sums [n_prompts][L], concentration, and
    ``params`` with every threshold used, and ``chart``: the strongest neurons of each layer.
    """
    ig.check()
    kn.check()
    checked = _check_prompts(model, prompts)
    L = model.arch.n_layers
    per_prompt, counts, total = [], {}, None
    for i, (prompt, target, tokens, target_id) in enumerate(checked):
        if cancel:
            cancel()
        if progress:
            progress(i, len(checked), f"attributing prompt {i + 1}/{len(checked)}")
        res = integrated_gradients(model, tokens, target_id, ig)
        attr = res["attr"]
        total = attr.clone() if total is None else total + attr
        cands = kn_candidates(attr, kn.threshold)
        for c in cands:
            counts[c] = counts.get(c, 0) + 1
        logits = res["logits"]
        per_prompt.append({
            "prompt": prompt, "target": target, "target_id": target_id, "prob": res["prob"],
            "rank": int((logits > logits[target_id]).sum()) + 1,
            "top1": model.token_strings([int(logits.argmax())])[0],
            "baseline_prob": res["baseline_prob"], "attr_sum": float(attr.sum()), "max_attr": float(attr.max()),
            "completeness_gap": _completeness_gap(res, attr),
            "layer_attr": attr.sum(1).tolist(), "n_candidates": len(cands),
            "concentration": concentration(attr), "top": _top_neurons(attr, top_k),
        })
    need = math.ceil(kn.share * len(checked) - 1e-9)
    mean = total / len(checked)
    kept = sorted((c for c, n in counts.items() if n >= need), key=lambda c: -float(mean[c]))
    knowns = []
    for layer, index in kept:
        item = {"id": neuron_id(layer, index), "layer": layer, "index": index, "attr": float(mean[layer, index]),
                "share": counts[(layer, index)] / len(checked)}
        if with_tokens:
            item["promotes"] = promoted_tokens(model, layer, index)
        knowns.append(item)
    top = _top_neurons(mean, top_k)
    if with_tokens:
        for item in top:
            item["promotes"] = promoted_tokens(model, item["layer"], item["index"])
    if progress:
        progress(len(checked), len(checked), "done")
    return {
        "model": model.spec.id, "n_layers": L, "d_mlp": model.arch.d_mlp,
        "params": {**asdict(ig), **asdict(kn), "baseline": "zero", "position": "last", "top_k": top_k,
                   "min_prompts": need},
        "prompts": per_prompt, "neurons": knowns, "layer_histogram": layer_histogram(kept, L),
        "concentration": concentration(mean), "top": top,
        "chart": chart_points(mean, chart_per_layer),
    }


def chart_points(attr: torch.Tensor, per_layer: int) -> list[dict[str, Any]]:
    """The ``per_layer`` largest-|attr| neurons of every layer (the layer x neuron chart's points)."""
    out = []
    for layer in range(attr.shape[0]):
        top = attr[layer].abs().topk(min(per_layer, attr.shape[1])).indices.tolist()
        out += [{"layer": layer, "index": i, "attr": float(attr[layer, i])} for i in top]
    return out


def fact_prompts(model: LoadedModel, relation_name: str, subject: str, obj: str | None = None,
                 max_prompts: int = 8) -> list[tuple[str, str]]:
    """The paraphrase prompts of one LRE fact: every template of the relation filled with ``subject``
    (answer: `` " " + object``; the relation's own object when ``obj`` is None)."""
    from kcircuits.circuits.relation import load_relation

    relation = load_relation(relation_name)
    if obj is None:
        found = [o for s, o in relation.samples if s == subject]
        if not found:
            raise BadRequest(f"subject {subject!r} is not a sample of relation {relation.name!r}; give its object")
        obj = found[0]
    return [(t.format(subject), " " + obj) for t in relation.templates[:max_prompts]]


# -- edits ---------------------------------------------------------------------------------------
def edit_hooks(neurons: Sequence[tuple[int, int]], mode: str, positions: str = "last") -> list[tuple[str, Callable]]:
    """Forward hooks that zero (``suppress``) or double (``enhance``) the given units."""
    if mode not in EDIT_MODES:
        raise BadRequest(f"mode must be one of {EDIT_MODES}")
    if positions not in EDIT_POSITIONS:
        raise BadRequest(f"positions must be one of {EDIT_POSITIONS}")
    by_layer: dict[int, list[int]] = {}
    for layer, index in neurons:
        by_layer.setdefault(layer, []).append(index)
    factor = 0.0 if mode == "suppress" else 2.0

    def make(units: list[int]) -> Callable:
        def hook(x, hook=None):  # [b, pos, d_mlp]
            x = x.clone()
            idx = torch.tensor(units, device=x.device)
            if positions == "last":
                x[:, -1, idx] = x[:, -1, idx] * factor
            else:
                x[:, :, idx] = x[:, :, idx] * factor
            return x
        return hook

    return [(hidden_hook(layer), make(units)) for layer, units in sorted(by_layer.items())]


def _last_logits(model: LoadedModel, prompt: str, hooks: list) -> torch.Tensor:
    with torch.no_grad():
        return model.run_with_hooks(model.tokenize(prompt), hooks, last_only=True)[0, -1].float()


def _measure(model: LoadedModel, prompt: str, target_id: int | None, hooks: list) -> dict[str, Any]:
    logits = _last_logits(model, prompt, hooks)
    probs = logits.softmax(-1)
    top = int(logits.argmax())
    out = {"top1_id": top, "top1": model.token_strings([top])[0], "top1_prob": float(probs[top])}
    if target_id is not None:
        out["prob"] = float(probs[target_id])
        out["rank"] = int((logits > logits[target_id]).sum()) + 1
    out["_logprobs"] = logits.log_softmax(-1)
    return out


def _compare(model: LoadedModel, prompt: str, target: str | None, hooks: list, kind: str,
             foil: str | None = None) -> dict[str, Any]:
    """Before/after of one prompt: target prob and rank, top-1 and whether it flipped, KL(before||after),
    and with a ``foil`` whether the target-vs-foil preference flipped."""
    target_id = model.first_token_id(target) if target else None
    pre, post = _measure(model, prompt, target_id, []), _measure(model, prompt, target_id, hooks)
    lp, lq = pre.pop("_logprobs"), post.pop("_logprobs")
    row = {"prompt": prompt, "target": target, "kind": kind, "before": pre, "after": post,
           "top1_flipped": pre["top1_id"] != post["top1_id"], "kl": float((lp.exp() * (lp - lq)).sum())}
    if foil:
        foil_id = model.first_token_id(foil)
        before = bool(lp[target_id] > lp[foil_id])
        row["foil"] = foil
        row["pair_flipped"] = before != bool(lq[target_id] > lq[foil_id])
    return row


def edit_neurons(model: LoadedModel, neurons: Sequence[tuple[int, int]], mode: str, prompt: str, target: str, *,
                 positions: str = "last", paraphrases: Sequence[tuple[str, str]] = (),
                 others: Sequence[tuple[str, str]] = (), unrelated: Sequence[str] = (),
                 symmetric: Sequence[tuple[str, str]] = (), foil: str | None = None) -> dict[str, Any]:
    """Suppress or enhance ``neurons`` (forward hooks, weights untouched) and compare before/after on
    the prompt, its paraphrases (synonym invariance), the reversed fact of a symmetric relation
    (bijective symmetry), the relation's other facts and unrelated prompts."""
    if not neurons:
        raise BadRequest("no neurons to edit")
    hooks = edit_hooks(neurons, mode, positions)
    main = _compare(model, prompt, target, hooks, "prompt", foil)
    rows = [_compare(model, p, t, hooks, "paraphrase") for p, t in paraphrases]
    rows += [_compare(model, p, t, hooks, "symmetric") for p, t in symmetric]
    rows += [_compare(model, p, t, hooks, "other_fact") for p, t in others]
    rows += [_compare(model, p, None, hooks, "unrelated") for p in unrelated]

    def summary(kind: str) -> dict[str, Any] | None:
        items = [r for r in rows if r["kind"] == kind]
        if not items:
            return None
        out = {"n": len(items), "top1_flip_rate": sum(r["top1_flipped"] for r in items) / len(items),
               "mean_kl": sum(r["kl"] for r in items) / len(items)}
        if items[0]["target"] is not None:
            out["mean_prob_before"] = sum(r["before"]["prob"] for r in items) / len(items)
            out["mean_prob_after"] = sum(r["after"]["prob"] for r in items) / len(items)
        return out

    before, after = main["before"]["prob"], main["after"]["prob"]
    return {
        "mode": mode, "positions": positions, "neurons": [neuron_id(a, b) for a, b in neurons],
        "prompt": main, "prob_change": after - before,
        "relative_change": (after - before) / before if before > 0 else None,
        "rows": rows, "summary": {k: summary(k) for k in EDIT_KINDS},
    }


def relation_context(model: LoadedModel, relation_name: str, subject: str, n_others: int = 5) -> dict[str, Any]:
    """Paraphrases of the fact (the relation's other templates), its reversal when the relation is
    symmetric (the object as subject, answered by the subject), other facts of the relation (first
    template, other subjects) and unrelated prompts (fixed, none an instance of this relation)."""
    from kcircuits.circuits.relation import load_relation
    from kcircuits.editing.evaluate import UNRELATED

    relation = load_relation(relation_name)
    objects = dict(relation.samples)
    if subject not in objects:
        raise BadRequest(f"subject {subject!r} is not a sample of relation {relation.name!r}")
    paraphrases = [(t.format(subject), " " + objects[subject]) for t in relation.templates[1:]]
    others = [(relation.template.format(s), " " + o) for s, o in relation.samples if s != subject][:n_others]
    symmetric = ([(t.format(objects[subject]), " " + subject) for t in relation.templates]
                 if relation.properties.get("symmetric") else [])
    own = {t.format(s) for t in relation.templates for s, _ in relation.samples}
    return {"paraphrases": paraphrases, "symmetric": symmetric, "others": others,
            "unrelated": [p for p in UNRELATED if p not in own]}


# -- localisation: syntax next to facts (Niu et al.'s comparison) --------------------------------
SYNTAX_FILE = Path(__file__).resolve().parent.parent / "data" / "syntax" / "minimal_pairs.json"
DEFAULT_RELATIONS = ("country_capital_city", "country_language", "country_currency", "company_hq",
                     "landmark_in_country", "food_from_country")


@dataclass(frozen=True)
class Group:
    """Paraphrase prompts of one fact, or the frames of one syntax item (same noun and number).
    ``prompts``: (prompt, target); ``foil``: the minimal pair's other form (syntax only)."""

    name: str
    kind: str  # fact | syntax
    prompts: tuple[tuple[str, str], ...]
    foil: str | None = None
    phenomenon: str | None = None


@lru_cache(maxsize=1)
def syntax_items() -> tuple[dict, ...]:
    """The committed minimal pairs (see bench/make_syntax_pairs.py)."""
    return tuple(json.loads(SYNTAX_FILE.read_text())["items"])


def syntax_groups(model: LoadedModel, n: int, phenomena: Sequence[str] = ("det_noun", "subj_verb"),
                  max_prompts: int = 3) -> list[Group]:
    """Up to ``n`` syntax groups, alternating phenomena, in file order. An item is used when its target
    and foil start with different tokens and the model prefers the target on it (the syntax analogue
    of a known fact); a group keeps its first ``max_prompts`` such items."""
    by_group: dict[str, list[dict]] = {}
    for item in syntax_items():
        if item["phenomenon"] in phenomena:
            by_group.setdefault(item["group"], []).append(item)
    queues = {ph: [g for g in by_group if g.startswith(ph + ":")] for ph in phenomena}
    unknown = [ph for ph, groups in queues.items() if not groups]
    if unknown:
        raise BadRequest(f"unknown syntax phenomena {unknown}; known: det_noun, subj_verb")
    out: list[Group] = []
    while len(out) < n and any(queues.values()):
        for ph in phenomena:
            if not queues[ph] or len(out) >= n:
                continue
            name = queues[ph].pop(0)
            kept = []
            for item in by_group[name]:
                t, f = model.first_token_id(item["target"]), model.first_token_id(item["foil"])
                if t == f:
                    continue
                logits = _last_logits(model, item["prompt"], [])
                if logits[t] > logits[f]:
                    kept.append((item["prompt"], item["target"]))
                if len(kept) >= max_prompts:
                    break
            if kept:
                out.append(Group(name, "syntax", tuple(kept), by_group[name][0]["foil"], ph))
    return out


def fact_groups(model: LoadedModel, n: int, relations: Sequence[str] = DEFAULT_RELATIONS,
                max_prompts: int = 3, scan: int = 40) -> list[Group]:
    """Up to ``n`` known facts (answer = the model's top-1 on the relation's first template; the first
    ``scan`` samples of each relation are tried), taken round-robin over ``relations``; each with its
    paraphrases (the relation's templates)."""
    from kcircuits.circuits.relation import known_facts, load_relation, relation_facts

    queues = {}
    for name in relations:
        relation = load_relation(name)
        queues[name] = list(known_facts(model, relation, k=1, facts=relation_facts(model, relation)[:scan]))
    out: list[Group] = []
    while len(out) < n and any(queues.values()):
        for name in relations:
            if queues[name] and len(out) < n:
                fact = queues[name].pop(0)
                prompts = fact_prompts(model, name, fact.subject, fact.object, max_prompts)
                out.append(Group(f"{name}:{fact.subject}", "fact", tuple(prompts)))
    return out


def localise_group(model: LoadedModel, group: Group, ig: IGParams, kn: KNParams) -> dict[str, Any]:
    """KNs of one group and the effect of suppressing / enhancing them on its first prompt."""
    found = find_neurons(model, group.prompts, ig=ig, kn=kn, with_tokens=False, chart_per_layer=0)
    neurons = [(n["layer"], n["index"]) for n in found["neurons"]]
    prompt, target = group.prompts[0]
    edits = {}
    for mode in EDIT_MODES:
        if not neurons:
            edits[mode] = None
            continue
        row = _compare(model, prompt, target, edit_hooks(neurons, mode), "prompt", group.foil)
        before, after = row["before"]["prob"], row["after"]["prob"]
        edits[mode] = {"prob_before": before, "prob_after": after, "top1_flipped": row["top1_flipped"],
                       "pair_flipped": row.get("pair_flipped"),
                       "relative_change": (after - before) / before if before > 0 else None}
    return {"name": group.name, "kind": group.kind, "phenomenon": group.phenomenon, "prompts": [p for p, _ in group.prompts],
            "target": target, "foil": group.foil, "n_neurons": len(neurons), "neurons": [n["id"] for n in found["neurons"]],
            "layer_histogram": found["layer_histogram"], "concentration": found["concentration"], "edits": edits}


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def summarise(rows: Sequence[dict[str, Any]], n_layers: int) -> dict[str, Any]:
    """One table row: KN count and layer histogram, concentration, edit flip rates over ``rows``."""
    hist = [sum(r["layer_histogram"][layer] for r in rows) for layer in range(n_layers)]
    total = sum(hist)
    out: dict[str, Any] = {
        "n_groups": len(rows), "mean_kns": _mean([r["n_neurons"] for r in rows]),
        "with_kns": sum(1 for r in rows if r["n_neurons"]) / len(rows) if rows else None,
        "layer_histogram": hist, "mean_kn_layer": sum(i * c for i, c in enumerate(hist)) / total if total else None,
        "top10_share": _mean([r["concentration"]["top_k_share"] for r in rows]),
        "effective_neurons": _mean([r["concentration"]["effective_neurons"] for r in rows]),
    }
    for mode in EDIT_MODES:
        edited = [r["edits"][mode] for r in rows if r["edits"][mode] is not None]
        out[mode] = {"n": len(edited), "top1_flip_rate": _mean([float(e["top1_flipped"]) for e in edited]),
                     "pair_flip_rate": _mean([None if e["pair_flipped"] is None else float(e["pair_flipped"]) for e in edited]),
                     "mean_relative_change": _mean([e["relative_change"] for e in edited])}
    return out


def compare_localisation(model: LoadedModel, n_facts: int = 20, n_syntax: int = 20, *, ig: IGParams = IGParams(),
                         kn: KNParams = KNParams(), max_prompts: int = 3, relations: Sequence[str] = DEFAULT_RELATIONS,
                         phenomena: Sequence[str] = ("det_noun", "subj_verb"), progress: ProgressFn | None = None,
                         cancel: CancelFn | None = None) -> dict[str, Any]:
    """Niu et al.'s comparison: the same attribution, filters and edits on facts and on syntax pairs.
    Returns per-group rows and one summary row per set (facts, syntax, and each phenomenon)."""
    ig.check()
    kn.check()
    groups = fact_groups(model, n_facts, relations, max_prompts) + syntax_groups(model, n_syntax, phenomena, max_prompts)
    rows = []
    for i, group in enumerate(groups):
        if cancel:
            cancel()
        if progress:
            progress(i, len(groups), f"{group.kind} {group.name}")
        rows.append(localise_group(model, group, ig, kn))
    if progress:
        progress(len(groups), len(groups), "done")
    L = model.arch.n_layers
    sets = {"facts": [r for r in rows if r["kind"] == "fact"], "syntax": [r for r in rows if r["kind"] == "syntax"]}
    for ph in phenomena:
        sets[f"syntax:{ph}"] = [r for r in rows if r["phenomenon"] == ph]
    return {"model": model.spec.id, "n_layers": L,
            "params": {**asdict(ig), **asdict(kn), "baseline": "zero", "max_prompts": max_prompts,
                       "relations": list(relations), "phenomena": list(phenomena), "n_facts": n_facts, "n_syntax": n_syntax},
            "summary": {name: summarise(items, L) for name, items in sets.items() if items}, "rows": rows}


# -- beside the circuit --------------------------------------------------------------------------
def beside_circuit(circuit: dict[str, Any], neurons: dict[str, Any]) -> dict[str, Any]:
    """KNs next to a circuit of the same prompt (a :func:`compute_circuit` result): which circuit MLP
    nodes hold KNs, the share of KNs inside circuit MLPs, and the share of the circuit's effect
    (sum of |edge score| over circuit edges, by the sender's kind) that flows from heads, MLPs and
    the input. The node-score shares (|score| summed over circuit nodes) are given alongside."""
    kind_of = {n["id"]: n["kind"] for n in circuit["nodes"]}
    in_circuit = {n["id"] for n in circuit["nodes"] if n.get("in_circuit")}
    by_layer: dict[int, list[dict]] = {}
    for kn in neurons["neurons"]:
        by_layer.setdefault(kn["layer"], []).append(kn)
    mlps = []
    for node in circuit["nodes"]:
        if node["kind"] != "mlp":
            continue
        held = by_layer.get(node["layer"], [])
        if node["id"] in in_circuit or held:
            mlps.append({"node": node["id"], "layer": node["layer"], "in_circuit": node["id"] in in_circuit,
                         "score": node.get("score"), "kns": [k["id"] for k in held],
                         "kn_attr": sum(k["attr"] for k in held)})
    edge_mass = {"head": 0.0, "mlp": 0.0, "input": 0.0}
    for edge in circuit["edges"]:
        if edge.get("in_circuit"):
            edge_mass[kind_of[edge["source"]]] += abs(edge["score"])
    node_mass = {"head": 0.0, "mlp": 0.0}
    for node in circuit["nodes"]:
        if node["id"] in in_circuit and node["kind"] in node_mass and node.get("score") is not None:
            node_mass[node["kind"]] += abs(node["score"])
    n_kns = len(neurons["neurons"])
    inside = sum(len(m["kns"]) for m in mlps if m["in_circuit"])

    def shares(mass: dict[str, float]) -> dict[str, float | None]:
        total = sum(mass.values())
        return {k: (v / total if total > 0 else None) for k, v in mass.items()}

    return {"mlps": mlps, "n_kns": n_kns, "kns_in_circuit_mlps": inside,
            "kn_share_in_circuit": inside / n_kns if n_kns else None,
            "circuit_mlps_with_kns": sum(1 for m in mlps if m["in_circuit"] and m["kns"]),
            "circuit_mlps": sum(1 for m in mlps if m["in_circuit"]),
            "effect_share_edges": shares(edge_mass), "effect_share_nodes": shares(node_mass)}


def neurons_with_circuit(model: LoadedModel, prompt: str, target: str, *, paraphrases: Sequence[str] = (),
                         ig: IGParams = IGParams(), kn: KNParams = KNParams(), top_k: int = 20,
                         circuit_method: str = "eap-ig", circuit_top_n: int | None = None,
                         progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> dict[str, Any]:
    """KNs of ``prompt`` (with its paraphrases) and, beside them, the prompt's circuit."""
    from kcircuits.circuits.discover import compute_circuit

    found = find_neurons(model, [(prompt, target), *((p, target) for p in paraphrases)], ig=ig, kn=kn,
                         top_k=top_k, progress=progress, cancel=cancel)
    circuit = compute_circuit(model, prompt, target, method=circuit_method, top_n=circuit_top_n,
                              max_edges_returned=500, random_seeds=0, with_heads=False, cancel=cancel)
    found["circuit"] = {"method": circuit["method"], "metrics": {k: circuit["metrics"].get(k) for k in
                                                                  ("edges", "nodes", "faithfulness")},
                        **beside_circuit(circuit, found)}
    return found


# -- entry points shared by the API, the jobs and the CLI ----------------------------------------
MAX_PROMPTS = 16


def request_prompts(model: LoadedModel, prompt: str, target: str, paraphrases: Sequence[str] = (),
                    relation: str | None = None, subject: str | None = None) -> list[tuple[str, str]]:
    """The prompt, its paraphrases and, with a relation, its templates filled with ``subject``
    (each prompt once, at most ``MAX_PROMPTS``), all answered by ``target``."""
    texts = [prompt, *paraphrases]
    if relation:
        from kcircuits.circuits.relation import load_relation

        if not subject or not subject.strip():
            raise BadRequest("relation needs a subject (its templates are filled with it)")
        texts += [t.format(subject) for t in load_relation(relation).templates]
    return [(t, target) for t in list(dict.fromkeys(texts))[:MAX_PROMPTS]]


def edit_request(model: LoadedModel, neurons: Sequence[str], mode: str, prompt: str, target: str, *,
                 positions: str = "last", relation: str | None = None, subject: str | None = None,
                 paraphrases: Sequence[str] = (), unrelated: Sequence[str] | None = None,
                 foil: str | None = None) -> dict[str, Any]:
    """:func:`edit_neurons` from neuron ids and an optional LRE relation (paraphrases, symmetric
    reversal, other facts); ``unrelated`` None: the fixed unrelated prompts of the relation context."""
    parsed = list(dict.fromkeys(parse_neuron(model, n) for n in neurons))
    ctx: dict[str, Any] = {"paraphrases": [], "symmetric": [], "others": [], "unrelated": []}
    if relation:
        ctx = relation_context(model, relation, subject or "")
    elif unrelated is None:
        from kcircuits.editing.evaluate import UNRELATED

        ctx["unrelated"] = [p for p in UNRELATED if p != prompt]
    if unrelated is not None:
        ctx["unrelated"] = list(unrelated)
    return edit_neurons(model, parsed, mode, prompt, target, positions=positions,
                        paraphrases=[(p, target) for p in paraphrases] + ctx["paraphrases"],
                        symmetric=ctx["symmetric"], others=ctx["others"], unrelated=ctx["unrelated"], foil=foil)

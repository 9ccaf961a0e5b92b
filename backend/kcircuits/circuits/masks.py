"""Parameter-level mask circuits (Ge, Rudzicz, Zhu; METHODS section 7).

Granularity (one gate per block):
- every 2-D weight: one gate per row of the stored tensor (dim 0). For Llama-family ``nn.Linear``
  weights [out, in] that is one output unit: a Q/K/V row is one dimension of one head's query/key/
  value, an O row one residual dimension written by attention, a gate/up row one MLP neuron's input
  weights, a down row one residual dimension of the MLP output.
  (GPT-2's Conv1D stores [in, out], so there a row is one input dimension.)
- every 1-D vector (LayerNorm/RMSNorm weights, biases): one gate per entry.

The token embedding and the unembedding (module kind ``embedding``) are kept outside the mask: they
are never gated and are in every mask (and every complement). In SmolLM2 they are one tied tensor
[V, d] (about 21% of the parameters), so gating a token's row removes that token from the output
as well as from the input: under a sparsity target the penalty drops almost every row, the answer
tokens' included, and no mask can be faithful. Ge et al. mask all weights of GPT-2, whose
unembedding is tied too; our choice differs for that reason. Target density, expected density,
:func:`final_mask`, :func:`random_mask`, :func:`overlap` and :func:`density` are over the gated
parameters only; :func:`composition` reports the kept kinds as ``always_kept`` (share inside 1.0).

Gates are hard-concrete (Louizos et al. 2018) with stretch (gamma, zeta) = (-0.1, 1.1) and
temperature beta = 2/3; the forward pass uses the binarised gate 1[z > 0.5] and the backward pass
the gradient of the continuous z (straight-through). The expected density (parameter-weighted) is
the closed form P(z > 0) = sigmoid(log_alpha - beta * log(-gamma / zeta)).

Warm start (``MaskParams.warm_start``): ``"taylor"`` (default) prunes iteratively from the full
model to ``target`` of the gated parameters, about ``warm_rate`` (16%) of the open parameters per
round (18 rounds to 5%, 4 to 50%; one forward+backward each). Each round scores every open gate g
by its first-order (Taylor) importance -dL/dg at the current mask (at all gates 1: -sum over its
parameters of theta * dL/dtheta), L = KL(full || masked) + cross-entropy of the full model's
top-1 answers, and keeps the gates with the largest score per parameter. The kept gates start at
log_alpha = +init, the rest closed at the logit that puts the expected density just under the
target (so the penalty starts inactive). ``"none"``: every gate starts at +init (the old
behaviour; after a few steps the final top-``target`` mask is then nearly arbitrary).
Signed scores and rounds of about 1/6 came from tuning on the training prompts of one relation
(city_in_country): |dL/dg|, or one-shot pruning to 5%, gave masks less faithful than random ones.

Loss = faithfulness + lam * relu(E[density] - target), faithfulness = KL(full || masked) of the
last-position next-token distribution ("kl") or cross-entropy to the full model's top-1 ("ce").
The final mask keeps the blocks with the largest log_alpha until exactly ``target`` of the gated
parameters are in (ties by order). Masking substitutes ``param * gate`` for each gated parameter
during one forward and restores the original tensors afterwards: the loaded model's weights are
never written.
"""

from __future__ import annotations

import base64
import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from kcircuits.errors import BadRequest, CancelFn, Cancelled  # noqa: F401 - Cancelled: what cancel raises

GAMMA, ZETA, BETA = -0.1, 1.1, 2.0 / 3.0
DENSITIES = (0.05, 0.15, 0.25, 0.35, 0.5)
MODULES = ("embedding", "attention", "mlp", "layernorm", "other")
ProgressFn = Callable[[int, int, dict[str, Any]], None]


# -- hard concrete --------------------------------------------------------------------------------
def hard_concrete(log_alpha: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
    """Continuous hard-concrete sample z in [0, 1], same shape as ``log_alpha``."""
    if u is None:
        u = torch.rand_like(log_alpha).clamp(1e-6, 1 - 1e-6)
    s = torch.sigmoid((u.log() - (-u).log1p() + log_alpha) / BETA)
    return (s * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)


def straight_through(z: torch.Tensor) -> torch.Tensor:
    """Binarised gate 1[z > 0.5] forward, identity gradient backward."""
    return (z > 0.5).to(z.dtype) + z - z.detach()


def p_open(log_alpha: torch.Tensor) -> torch.Tensor:
    """Closed form P(z > 0) of each gate (the L0 expectation)."""
    return torch.sigmoid(log_alpha - BETA * math.log(-GAMMA / ZETA))


# -- blocks ---------------------------------------------------------------------------------------
def module_kind(name: str) -> str:
    """embedding | attention | mlp | layernorm | other, from a parameter name."""
    n = name.lower()
    if "norm" in n or ".ln" in n or n.startswith("ln") or "ln_" in n:
        return "layernorm"
    if "embed" in n or "wte" in n or "wpe" in n or "lm_head" in n:
        return "embedding"
    if "attn" in n or "attention" in n:
        return "attention"
    if "mlp" in n:
        return "mlp"
    return "other"


def short_name(name: str) -> str:
    return name.replace("._original_component", "")


def always_kept(name: str) -> bool:
    """Whether parameter ``name`` stays outside the mask (the token embedding / unembedding)."""
    return module_kind(name) == "embedding"


@dataclass
class BlockLayout:
    """Gated parameters in order with their gate counts. ``sizes[i]``: gates of tensor i,
    ``per_gate[i]``: parameters each of its gates covers. ``kept_names`` / ``kept_numel``: the
    parameters outside the mask (never gated, always kept) and their sizes."""

    names: list[str]
    shapes: list[tuple[int, ...]]
    sizes: list[int]
    per_gate: list[int]
    kept_names: list[str] = field(default_factory=list)
    kept_numel: list[int] = field(default_factory=list)

    @property
    def n_gates(self) -> int:
        return sum(self.sizes)

    @property
    def n_params(self) -> int:
        return sum(s * p for s, p in zip(self.sizes, self.per_gate, strict=False))

    def weights(self, device=None) -> torch.Tensor:
        """Parameters per gate [n_gates] (float)."""
        return torch.cat([torch.full((s,), float(p), device=device) for s, p in zip(self.sizes, self.per_gate, strict=False)])

    def kinds(self) -> list[str]:
        return [module_kind(n) for n in self.names]

    def split(self, flat: torch.Tensor) -> list[torch.Tensor]:
        return list(torch.split(flat, self.sizes))

    def fingerprint(self) -> str:
        text = ";".join(f"{n}:{s}" for n, s in zip(self.names, self.shapes, strict=True))
        text += "|kept:" + ";".join(self.kept_names)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_family(model) -> None:
    """Masks run on Llama-family bridges (SmolLM2); GPT-2's bridge splits its fused QKV into extra
    parameters that a functional call cannot substitute consistently."""
    if model.arch.family != "llama":
        raise BadRequest(f"parameter masks support Llama-family models, not {model.arch.family!r}")


def layout(module: torch.nn.Module) -> BlockLayout:
    """The gate layout of ``module``'s parameters (tied parameters once); :func:`always_kept` ones
    are listed as kept, not gated."""
    names, shapes, sizes, per, kept, kept_numel = [], [], [], [], [], []
    for name, p in module.named_parameters():
        if always_kept(name):
            kept.append(name)
            kept_numel.append(p.numel())
            continue
        names.append(name)
        shapes.append(tuple(p.shape))
        if p.dim() >= 2:
            sizes.append(p.shape[0])
            per.append(p[0].numel())
        else:
            sizes.append(p.numel())
            per.append(1)
    return BlockLayout(names, shapes, sizes, per, kept, kept_numel)


def _expand(gate: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Per-block gate [rows] -> broadcastable to a parameter of ``shape``."""
    return gate.view(-1, *([1] * (len(shape) - 1))) if len(shape) >= 2 else gate


def masked_params(model, lay: BlockLayout, gates: torch.Tensor) -> dict[str, torch.Tensor]:
    """{name: param * gate} for a flat gate vector [n_gates] (0/1 or straight-through)."""
    params = dict(model.named_parameters())
    out = {}
    for name, shape, g in zip(lay.names, lay.shapes, lay.split(gates), strict=False):
        p = params[name]
        out[name] = p * _expand(g.to(p.dtype), shape)
    return out


def _slots(model) -> dict[str, tuple[torch.nn.Module, str]]:
    """{parameter name: (owning module, attribute)} of the bridge's parameters."""
    out = {}
    for name, _ in model.named_parameters():
        path, attr = name.rsplit(".", 1)
        out[name] = (model.submodule(path), attr)
    return out


def run_with(model, params: dict[str, torch.Tensor], tokens: torch.Tensor) -> torch.Tensor:
    """Logits [b, pos, V] with ``params`` substituted for the named parameters during this one
    forward, restored afterwards (the loaded weights are never written). ``torch.func.functional_call``
    is not used: with the bridge's aliased module paths it leaves the substitutes in place."""
    slots = _slots(model)
    saved = {}
    try:
        for name, value in params.items():
            module, attr = slots[name]
            saved[name] = module._parameters[attr]
            module._parameters[attr] = value
        return model.logits(tokens)
    finally:
        for name, value in saved.items():
            module, attr = slots[name]
            module._parameters[attr] = value


# -- tasks ----------------------------------------------------------------------------------------
@dataclass
class Task:
    """Next-token prompts of one task, grouped by token length: [(ids [b, pos], target ids [b])]."""

    name: str
    prompts: list[str]
    targets: list[str]
    batches: list[tuple[torch.Tensor, torch.Tensor]]


def make_task(model, name: str, prompts: Sequence[str], targets: Sequence[str]) -> Task:
    if not prompts or len(prompts) != len(targets):
        raise BadRequest("a mask task needs at least one prompt and one target per prompt")
    groups: dict[int, list[tuple[torch.Tensor, int]]] = {}
    for p, t in zip(prompts, targets, strict=False):
        ids = model.tokenize(p)[0]
        groups.setdefault(int(ids.shape[0]), []).append((ids, model.first_token_id(t)))
    batches = [(torch.stack([i for i, _ in g]), torch.tensor([t for _, t in g], device=model.device))
               for g in groups.values()]
    return Task(name, list(prompts), list(targets), batches)


def relation_task(model, relation: str, n: int = 16, known_only: bool = True) -> Task:
    """The first ``n`` facts of an LRE relation (only those the model ranks top-10 if ``known_only``)."""
    from kcircuits.circuits.relation import known_facts, load_relation, relation_facts

    rel = load_relation(relation)
    facts = relation_facts(model, rel)
    if known_only:
        facts = known_facts(model, rel, facts=facts) or facts
    facts = facts[:n]
    return make_task(model, relation, [f.prompt for f in facts], [f.target for f in facts])


def syntax_task(model, phenomenon: str = "det_noun", n: int = 16) -> Task:
    """Syntax minimal pairs (data/syntax) of one phenomenon as next-token prompts."""
    from kcircuits.circuits.neurons import syntax_items

    items = [it for it in syntax_items() if it.get("phenomenon") == phenomenon][:n]
    if not items:
        raise BadRequest(f"no syntax items for phenomenon {phenomenon!r}")
    return make_task(model, f"syntax:{phenomenon}", [it["prompt"] for it in items], [it["target"] for it in items])


@torch.no_grad()
def full_logprobs(model, task: Task) -> list[torch.Tensor]:
    """The full model's last-position log-probs per batch [b, V] (fp32)."""
    return [model.logits(ids)[:, -1].float().log_softmax(-1) for ids, _ in task.batches]


# -- training -------------------------------------------------------------------------------------
WARM_STARTS = ("taylor", "none")


@dataclass(frozen=True)
class MaskParams:
    """Training parameters: ``target`` density (share of the gated parameters), Adam ``steps`` and
    ``lr`` on log_alpha, penalty weight ``lam``, gate logit ``init``, faithfulness ``loss``,
    ``warm_start`` (``"taylor"``: first-order importance opens the top-``target`` share; ``"none"``:
    every gate at +init), ``warm_rate``: share of the open parameters the warm start prunes per round."""

    target: float = 0.05
    steps: int = 200
    lr: float = 0.1
    lam: float = 10.0
    init: float = 3.0
    loss: str = "kl"  # kl | ce
    seed: int = 0
    warm_start: str = "taylor"  # taylor | none
    warm_rate: float = 0.16

    def check(self) -> None:
        if not 0.0 < self.target < 1.0:
            raise BadRequest("target density must lie in (0, 1)")
        if not 1 <= self.steps <= 100_000:
            raise BadRequest("steps must be between 1 and 100000")
        if not 0 < self.lr <= 10 or self.lam < 0:
            raise BadRequest("lr must lie in (0, 10] and lam be >= 0")
        if self.loss not in ("kl", "ce"):
            raise BadRequest("loss must be 'kl' or 'ce'")
        if self.warm_start not in WARM_STARTS:
            raise BadRequest(f"warm_start must be one of {list(WARM_STARTS)}")
        if not 0.01 <= self.warm_rate <= 0.9:
            raise BadRequest("warm_rate must lie in [0.01, 0.9]")
        if not 0 < self.init <= 20:
            raise BadRequest("init must lie in (0, 20]")


def faithfulness_loss(logits: torch.Tensor, full_lp: torch.Tensor, kind: str) -> torch.Tensor:
    """logits [b, V] of the masked model against the full model's log-probs [b, V]."""
    lp = logits.float().log_softmax(-1)
    if kind == "ce":
        return F.nll_loss(lp, full_lp.argmax(-1))
    return F.kl_div(lp, full_lp, log_target=True, reduction="batchmean")


def expected_density(log_alpha: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (p_open(log_alpha) * weights).sum() / weights.sum()


def final_mask(log_alpha: torch.Tensor, weights: torch.Tensor, target: float) -> torch.Tensor:
    """Bool [n_gates]: the largest-log_alpha blocks until ``target`` of the parameters are kept."""
    order = torch.argsort(log_alpha, descending=True, stable=True)
    cum = torch.cumsum(weights[order], 0)
    n = int((cum <= target * float(weights.sum()) + 0.5).sum())
    keep = torch.zeros_like(log_alpha, dtype=torch.bool)
    keep[order[:n]] = True
    return keep


def taylor_importance(model, task: Task, lay: BlockLayout, full: list[torch.Tensor],
                      at: torch.Tensor | None = None) -> torch.Tensor:
    """First-order importance -dL/dg [n_gates] of each gate at the gates ``at`` (bool or float
    [n_gates]; default all 1): for an open gate the predicted rise of L when it is closed; at all
    gates 1 it is -sum over the gate's parameters of theta * dL/dtheta. L = KL(full || masked) +
    cross-entropy of the full model's top-1 answers, means over the prompts (``full``: the full
    model's log-probs per batch [b, V]); at all gates 1 the KL term has no gradient, so the first
    round is the cross-entropy's. Signed, not |.|: on SmolLM2 pruning by |dL/dg| keeps gates whose
    removal would lower L, and its 5% masks were less faithful than random ones. One
    forward+backward; non-finite gradients count 0."""
    start = torch.ones(lay.n_gates) if at is None else at.float()
    gates = start.to(model.device).requires_grad_(True)
    with torch.enable_grad():
        mp = masked_params(model, lay, gates)
        loss = 0.0
        for (ids, _), lp in zip(task.batches, full, strict=True):
            logits = run_with(model, mp, ids)[:, -1].float()
            loss = loss + faithfulness_loss(logits, lp, "kl") * ids.shape[0] \
                + F.cross_entropy(logits, lp.argmax(-1), reduction="sum")
        loss = loss / len(task.prompts)
        loss.backward()
    return -gates.grad.detach().nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)


def prune_rounds(target: float, rate: float) -> int:
    """Rounds of geometric pruning from density 1 to ``target`` cutting about ``rate`` of the open
    parameters per round (at least 1)."""
    return max(1, math.ceil(math.log(target) / math.log(1 - rate) - 1e-9))


def taylor_prune(model, task: Task, lay: BlockLayout, full: list[torch.Tensor], target: float,
                 rounds: int) -> torch.Tensor:
    """Bool [n_gates]: iterative Taylor pruning from the full model to ``target`` of the gated
    parameters in ``rounds`` geometric steps (density target ** (k / rounds)); each round keeps
    the open gates with the largest :func:`taylor_importance` per parameter (a knapsack's greedy
    order: the budget is in parameters), re-scored at the current mask. One forward+backward per
    round."""
    weights = lay.weights(model.device)
    keep = torch.ones(lay.n_gates, dtype=torch.bool, device=model.device)
    for k in range(1, rounds + 1):
        score = taylor_importance(model, task, lay, full, keep) / weights
        score[~keep] = -math.inf  # pruned gates stay pruned
        keep = final_mask(score, weights, target ** (k / rounds))
    return keep


def warm_start_log_alpha(keep: torch.Tensor, weights: torch.Tensor, init: float) -> torch.Tensor:
    """log_alpha [n_gates]: +init where ``keep`` (bool [n_gates]); the closed gates at the logit
    (at most -init) whose P(open) puts the expected density d0 half-way between d * P(open | init)
    and d, ``keep``'s density: d0 <= d, so the density penalty starts inactive (else it pushes
    every gate down at Adam's pace, the planted ones with the rest)."""
    d = float((keep.float() * weights).sum() / weights.sum())
    open_p = float(p_open(torch.tensor(init)))
    closed_p = max(0.5 * (1 - open_p) * d / max(1 - d, 1e-12), 1e-12)
    closed = math.log(closed_p / (1 - closed_p)) + BETA * math.log(-GAMMA / ZETA)
    return torch.where(keep, init, min(closed, -init)).float()


def train_mask(model, task: Task, params: MaskParams = MaskParams(), *, progress: ProgressFn | None = None,
               cancel: CancelFn | None = None, checkpoint: str | None = None,
               eval_every: int = 10) -> dict[str, Any]:
    """Learn a mask of ``task`` at density ``params.target``. Returns the bool mask [n_gates] (key
    ``mask``; ``start_mask``: the one the initial log_alpha gives, the warm start's), curves (loss,
    expected density, faithfulness KL of the deterministic mask at that step) and timing. ``checkpoint``: a path saved every ``eval_every`` steps and resumed from."""
    params.check()
    check_family(model)
    torch.manual_seed(params.seed)
    lay = layout(model)
    weights = lay.weights(model.device)
    full = full_logprobs(model, task)
    state = None
    if checkpoint:
        try:
            state = torch.load(checkpoint, weights_only=False)
        except FileNotFoundError:
            state = None
        if state is not None and (state["fingerprint"] != lay.fingerprint() or state["params"] != asdict(params)):
            raise BadRequest("checkpoint belongs to another model or other mask parameters")
    warm_start_s = 0.0
    if state is not None:
        init = state["log_alpha"].to(model.device)
    elif params.warm_start == "taylor":
        t_warm = time.perf_counter()
        keep = taylor_prune(model, task, lay, full, params.target, prune_rounds(params.target, params.warm_rate))
        init = warm_start_log_alpha(keep, weights, params.init)
        warm_start_s = time.perf_counter() - t_warm
    else:
        init = torch.full((lay.n_gates,), params.init, device=model.device)
    log_alpha = init.clone().requires_grad_(True)
    opt = torch.optim.Adam([log_alpha], lr=params.lr)
    curves: dict[str, list] = {"step": [], "loss": [], "density": [], "faithfulness_kl": []}
    start = 0
    if state is not None:
        opt.load_state_dict(state["opt"])
        curves, start = state["curves"], state["step"]
        torch.set_rng_state(state["rng"])
    t0 = time.perf_counter()
    nonfinite_steps = 0
    for step in range(start, params.steps):
        if cancel:
            cancel()  # its Cancelled propagates; the checkpoint (if any) is up to date
        opt.zero_grad()
        with torch.enable_grad():
            gates = straight_through(hard_concrete(log_alpha))
            mp = masked_params(model, lay, gates)
            faith = sum(faithfulness_loss(run_with(model, mp, ids)[:, -1], lp, params.loss) * ids.shape[0]
                        for (ids, _), lp in zip(task.batches, full, strict=False)) / len(task.prompts)
            dens = expected_density(log_alpha, weights)
            loss = faith + params.lam * F.relu(dens - params.target)
            loss.backward()
        if not bool(torch.isfinite(log_alpha.grad).all()):
            # a NaN/inf gradient (the bridge's attention backward yields NaN when a prompt's first position
            # is masked to an all-zero residual) would poison Adam's moments and every gate for good
            log_alpha.grad.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
            nonfinite_steps += 1
        opt.step()
        done = step + 1
        if done % eval_every == 0 or done == params.steps:
            kl = evaluate_mask(model, task, final_mask(log_alpha.detach(), weights, params.target), lay, full)["kl"]
            curves["step"].append(done)
            curves["loss"].append(round(float(loss.detach()), 6))
            curves["density"].append(round(float(dens.detach()), 6))
            curves["faithfulness_kl"].append(round(kl, 6))
            if checkpoint:
                torch.save({"fingerprint": lay.fingerprint(), "params": asdict(params), "log_alpha": log_alpha.detach(),
                            "opt": opt.state_dict(), "curves": curves, "step": done, "rng": torch.get_rng_state()},
                           checkpoint)
            if progress:
                progress(done, params.steps, {k: v[-1] for k, v in curves.items()})
    train_s = time.perf_counter() - t0
    mask = final_mask(log_alpha.detach(), weights, params.target).cpu()
    return {"task": task.name, "params": asdict(params), "mask": mask, "layout": lay, "curves": curves,
            "log_alpha": log_alpha.detach().cpu(),
            "steps_run": params.steps - start, "train_s": train_s, "nonfinite_grad_steps": nonfinite_steps,
            "warm_start_s": warm_start_s, "start_mask": final_mask(init, weights, params.target).cpu(),
            "step_s": train_s / max(1, params.steps - start)}


@torch.no_grad()
def evaluate_mask(model, task: Task, mask: torch.Tensor, lay: BlockLayout | None = None,
                  full: list[torch.Tensor] | None = None) -> dict[str, float]:
    """Faithfulness of a hard mask: mean KL(full || masked), top-1 agreement with the full model,
    and accuracy on the task targets (full and masked)."""
    lay = lay or layout(model)
    full = full if full is not None else full_logprobs(model, task)
    mp = masked_params(model, lay, mask.to(model.device).float())
    kl = agree = acc = acc_full = 0.0
    for (ids, tgt), lp in zip(task.batches, full, strict=False):
        m = run_with(model, mp, ids)[:, -1].float().log_softmax(-1)
        kl += float(F.kl_div(m, lp, log_target=True, reduction="sum"))
        agree += float((m.argmax(-1) == lp.argmax(-1)).sum())
        acc += float((m.argmax(-1) == tgt).sum())
        acc_full += float((lp.argmax(-1) == tgt).sum())
    n = len(task.prompts)
    return {"kl": kl / n, "top1_agreement": agree / n, "accuracy": acc / n, "full_accuracy": acc_full / n}


# -- analysis -------------------------------------------------------------------------------------
def density(mask: torch.Tensor, lay: BlockLayout) -> float:
    w = lay.weights()
    return float((mask.float().cpu() * w).sum() / w.sum())


def random_mask(lay: BlockLayout, target: float, seed: int = 0) -> torch.Tensor:
    """A random block mask with ``target`` of the parameters (random order, then the same cut)."""
    g = torch.Generator().manual_seed(seed)
    return final_mask(torch.rand(lay.n_gates, generator=g), lay.weights(), target)


def overlap(a: torch.Tensor, b: torch.Tensor, lay: BlockLayout) -> float | None:
    """|A ∩ B| / |A| in parameters; None when A is empty (undefined)."""
    w = lay.weights()
    size = float((a.float() * w).sum())
    return None if size == 0 else float(((a & b).float() * w).sum()) / size


def overlap_matrix(masks: dict[str, torch.Tensor], lay: BlockLayout) -> dict[str, Any]:
    names = list(masks)
    return {"names": names, "matrix": [[overlap(masks[i], masks[j], lay) for j in names] for i in names]}


def composition(mask: torch.Tensor, lay: BlockLayout) -> dict[str, dict[str, Any]]:
    """Per module kind: share of its parameters inside the mask, share of the (gated) mask it makes
    up, and ``always_kept``: True for a kind that is never gated (the embedding: share inside 1.0,
    share of the mask None, since the mask's density counts gated parameters only)."""
    inside: dict[str, float] = {k: 0.0 for k in MODULES}
    gated: dict[str, float] = {k: 0.0 for k in MODULES}
    kept: dict[str, float] = {k: 0.0 for k in MODULES}
    for kind, g, per in zip(lay.kinds(), lay.split(mask.float().cpu()), lay.per_gate, strict=True):
        inside[kind] += float(g.sum()) * per
        gated[kind] += g.numel() * per
    for name, numel in zip(lay.kept_names, lay.kept_numel, strict=True):
        kept[module_kind(name)] += numel
    n_in = sum(inside.values())
    out = {}
    for k in MODULES:
        total = gated[k] + kept[k]
        if total:
            out[k] = {"share_inside": (inside[k] + kept[k]) / total,
                      "share_of_mask": inside[k] / n_in if n_in and gated[k] else None,
                      "n_params": int(total), "always_kept": not gated[k]}
    return out


def component_density(mask: torch.Tensor, lay: BlockLayout, model) -> dict[str, float]:
    """Mask density per attention head (``a{l}.h{h}``, over its Q/K/V rows of Llama-style weights)
    and per MLP (``m{l}``) - the units of the edge circuit."""
    import re

    arch = model.arch
    dh = arch.d_model // arch.n_heads
    out: dict[str, list[float]] = {}
    for name, g in zip(lay.names, lay.split(mask.float().cpu()), strict=False):
        m = re.search(r"layers\.(\d+)\.", name) or re.search(r"blocks\.(\d+)\.", name) or re.search(r"\.h\.(\d+)\.", name)
        if not m:
            continue
        layer = int(m.group(1))
        kind = module_kind(name)
        if kind == "mlp":
            out.setdefault(f"m{layer}", []).append(float(g.mean()))
        elif kind == "attention" and name.endswith(("q_proj._original_component.weight", "k_proj._original_component.weight",
                                                    "v_proj._original_component.weight")):
            rows = g.shape[0]
            n_h = rows // dh
            for h in range(n_h):
                key = f"a{layer}.h{h * arch.n_heads // n_h}" if "q_proj" in name else None
                hid = key or f"a{layer}.kv{h}"
                out.setdefault(hid, []).append(float(g[h * dh:(h + 1) * dh].mean()))
    return {k: sum(v) / len(v) for k, v in out.items()}


# -- editing under a mask -------------------------------------------------------------------------
def edit_under_mask(model, prompt: str, target: str, mask: torch.Tensor | None, lay: BlockLayout | None = None, *,
                    steps: int = 10, lr: float = 1e-3, check: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
    """Fine-tune ``prompt -> target`` (first token) with Adam on parameter deltas, only inside
    ``mask`` (None: the whole model, the always-kept embedding included; a mask never edits the
    embedding, which is outside every mask and complement). The model's weights are not written: the edited parameters
    are ``p + delta * mask``. Returns post-edit NLL of the target, locality (share of ``check``
    (prompt, target) pairs whose top-1 is unchanged) and the edited parameter dict (key ``params``)."""
    lay = lay or layout(model)
    base = dict(model.named_parameters())
    if mask is None:  # the whole model, the always-kept parameters included
        gates = {n: torch.ones((), device=model.device) for n in base}
    else:
        gate = mask.to(model.device).float()
        gates = {n: _expand(g, s) for n, s, g in zip(lay.names, lay.shapes, lay.split(gate), strict=True)}
    trainable = [n for n in gates if float(gates[n].sum()) > 0]
    deltas = {n: torch.zeros_like(base[n], requires_grad=True) for n in trainable}
    opt = torch.optim.Adam(list(deltas.values()), lr=lr)
    tokens = model.tokenize(prompt)
    tid = model.first_token_id(target)

    def edited() -> dict[str, torch.Tensor]:
        return {n: base[n] + deltas[n] * gates[n].to(base[n].dtype) if n in deltas else base[n] for n in base}

    @torch.no_grad()
    def top1s(ps) -> list[int]:
        return [int(run_with(model, ps, model.tokenize(p))[0, -1].argmax()) for p, _ in check]

    before = top1s(base)
    with torch.no_grad():
        nll_pre = float(-run_with(model, base, tokens)[0, -1].float().log_softmax(-1)[tid])
    losses = []
    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad()
            loss = -run_with(model, edited(), tokens)[0, -1].float().log_softmax(-1)[tid]
            loss.backward()
            opt.step()
            losses.append(round(float(loss.detach()), 5))
    ps = {n: v.detach() for n, v in edited().items()}
    with torch.no_grad():
        nll = float(-run_with(model, ps, tokens)[0, -1].float().log_softmax(-1)[tid])
    after = top1s(ps)
    locality = sum(a == b for a, b in zip(before, after, strict=False)) / len(check) if check else None
    return {"nll_pre": nll_pre, "nll_post": nll, "locality": locality, "losses": losses, "params": ps,
            "density": 1.0 if mask is None else density(mask.cpu(), lay)}


# -- compact storage ------------------------------------------------------------------------------
def pack_mask(mask: torch.Tensor) -> str:
    """Bool [n] -> base64 of the packed bits (numpy bit order 'big')."""
    return base64.b64encode(np.packbits(mask.cpu().numpy().astype(np.uint8)).tobytes()).decode("ascii")


def unpack_mask(data: str, n: int) -> torch.Tensor:
    bits = np.unpackbits(np.frombuffer(base64.b64decode(data), dtype=np.uint8))[:n]
    if bits.shape[0] != n:
        raise BadRequest(f"packed mask holds {bits.shape[0]} gates, expected {n}")
    return torch.from_numpy(bits.astype(bool))


def mask_record(result: dict[str, Any], model) -> dict[str, Any]:
    """A JSON-able record of a trained mask (packed bits), with its content id."""
    lay: BlockLayout = result["layout"]
    body = {"model": model.spec.id, "revision": model.revision, "task": result["task"], "params": result["params"],
            "layout": lay.fingerprint(), "n_gates": lay.n_gates, "bits": pack_mask(result["mask"]),
            "curves": result["curves"], "composition": composition(result["mask"], lay),
            "density": density(result["mask"], lay)}
    body["id"] = hashlib.sha256(repr(sorted((k, str(v)) for k, v in body.items())).encode()).hexdigest()[:20]
    return body


# -- helpers of the service layer -----------------------------------------------------------------
def component_rows(densities: dict[str, float]) -> list[dict[str, Any]]:
    """:func:`component_density`'s ``{"a0.h1": d, "a0.kv0": d, "m0": d}`` as rows
    ``{id, kind: head|kv|mlp, layer, density}`` in layer order (heads, kv groups, then the MLP)."""
    import re

    rows = []
    for key, value in densities.items():
        m = re.fullmatch(r"a(\d+)\.(h|kv)(\d+)|m(\d+)", key)
        if not m:
            continue
        if m.group(4) is not None:
            rows.append({"id": key, "kind": "mlp", "layer": int(m.group(4)), "density": value, "_o": (2, 0)})
        else:
            kind = "head" if m.group(2) == "h" else "kv"
            rows.append({"id": key, "kind": kind, "layer": int(m.group(1)), "density": value,
                         "_o": (0 if kind == "head" else 1, int(m.group(3)))})
    rows.sort(key=lambda r: (r["layer"], *r.pop("_o")))
    return rows


def changed_gates(params: dict[str, torch.Tensor], base: dict[str, torch.Tensor], lay: BlockLayout) -> torch.Tensor:
    """Bool [n_gates]: the blocks whose parameters differ between ``params`` and ``base``."""
    parts = []
    for name, shape in zip(lay.names, lay.shapes, strict=True):
        diff = (params[name].detach() - base[name].detach()).abs()
        parts.append((diff.reshape(shape[0], -1).amax(1) if len(shape) >= 2 else diff).cpu() > 0)
    return torch.cat(parts)


def forward_backward_s(model, task: Task) -> float:
    """Seconds of one plain forward+backward of the model on the task (cross-entropy to the task
    targets, gradients of every parameter): the unit a training step is compared with."""
    params = {n: p.detach().requires_grad_(True) for n, p in model.named_parameters()}
    t0 = time.perf_counter()
    with torch.enable_grad():
        loss = sum(F.cross_entropy(run_with(model, params, ids)[:, -1].float(), tgt, reduction="sum")
                   for ids, tgt in task.batches) / len(task.prompts)
        loss.backward()
    return time.perf_counter() - t0

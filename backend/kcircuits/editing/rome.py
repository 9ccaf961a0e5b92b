"""ROME (Meng et al. 2022): a rank-one update of one MLP output matrix (METHODS section 6).

k* = mean MLP key (``blocks.{l}.mlp.hook_post``, the input of GPT-2 ``c_proj`` / Llama ``down_proj``)
at the subject's last token over the prompt and model-generated prefixes; v* = W k* + b + delta
with delta optimised at that position's MLP output (NLL of the new target + KL on
"{subject} is a" + weight decay, norm clamp); then W += u (v* - W k* - b)^T / (k* . u) with
u = C^-1 k* / |C^-1 k*|, written in the HF module's own weight layout so the bridge uses it.
Call these on a COPY of the model (see :mod:`kcircuits.editing.session`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from kcircuits.circuits.subject import subject_positions
from kcircuits.errors import BadRequest
from kcircuits.lm.loader import LoadedModel

log = logging.getLogger(__name__)


# -- shared helpers (also used by ft.py, evaluate.py) ------------------------------------------
@dataclass
class MlpOut:
    """One layer's MLP output projection. ``layout``: "in_out" for GPT-2 Conv1D (weight
    [d_mlp, d_model]) or "out_in" for ``nn.Linear`` (weight [d_model, d_mlp])."""

    weight: torch.nn.Parameter
    bias: torch.nn.Parameter | None
    layout: str

    def apply(self, keys: torch.Tensor) -> torch.Tensor:
        """[..., d_mlp] -> [..., d_model]: the MLP output for these keys."""
        w = self.weight if self.layout == "in_out" else self.weight.T
        out = keys.to(w.dtype) @ w
        return out + self.bias if self.bias is not None else out

    def rank_one(self, u: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """The update u r^T ([d_mlp] x [d_model]) in this weight's layout."""
        upd = torch.outer(u, r)
        return (upd if self.layout == "in_out" else upd.T).to(self.weight.dtype)


def mlp_out(model: LoadedModel, layer: int) -> MlpOut:
    """Layer ``layer``'s MLP output weight, in the HF module's own layout (written in place)."""
    check_layer(model, layer)
    module = model.mlp_out_component(layer)
    return MlpOut(module.weight, getattr(module, "bias", None), model.mlp_out_layout(layer))


def check_layer(model: LoadedModel, layer: int) -> None:
    if not 0 <= layer < model.arch.n_layers:
        raise BadRequest(f"layer {layer} out of range for {model.spec.id} (0..{model.arch.n_layers - 1})")


def params_from_dict(cls: type, data: dict[str, Any] | None, model: LoadedModel, label: str, default_layer: int):
    """An edit-parameter dataclass from request data: unknown names refused, layer defaulted and checked."""
    data = dict(data or {})
    unknown = set(data) - set(cls.__dataclass_fields__)
    if unknown:
        raise BadRequest(f"unknown {label} parameter(s): {sorted(unknown)}")
    params = cls(**data)
    if params.layer is None:
        params.layer = default_layer
    check_layer(model, params.layer)
    return params


def target_ids(model: LoadedModel, target: str) -> list[int]:
    ids = model.tokenizer(target, add_special_tokens=False)["input_ids"]
    if not ids:
        raise BadRequest("target text tokenises to nothing")
    return list(ids)


@dataclass
class Batch:
    """Right-padded rows. tokens [B, T]; per row its length, lookup position and scored targets."""

    tokens: torch.Tensor
    lengths: list[int]
    lookup: list[int]


def pad_rows(model: LoadedModel, rows: list[list[int]], lookup: list[int]) -> Batch:
    width = max(len(r) for r in rows)
    tokens = torch.zeros(len(rows), width, dtype=torch.long, device=model.device)
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = torch.tensor(row, dtype=torch.long, device=model.device)
    return Batch(tokens, [len(r) for r in rows], lookup)


def contexts(prompt: str, prefixes: list[str]) -> list[tuple[str, int]]:
    """The prompt alone and after each prefix ("{prefix}. {prompt}"); (text, prompt char start)."""
    out = [(prompt, 0)]
    for prefix in prefixes:
        head = f"{prefix}. " if prefix else ""
        out.append((head + prompt, len(head)))
    return out


# -- ROME ---------------------------------------------------------------------------------------
@dataclass
class RomeParams:
    layer: int | None = None
    clamp: float | None = None  # |delta| <= clamp * |v_init|; None: registry default
    n_prefixes: int = 10
    prefix_len: int = 8
    v_lr: float = 0.5
    v_steps: int = 20
    v_weight_decay: float = 0.5
    kl_factor: float = 0.0625
    covariance: str = "generated"  # generated | file | none
    cov_tokens: int = 2048
    shrinkage: float = 0.1
    seed: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, model: LoadedModel) -> RomeParams:
        params = params_from_dict(cls, data, model, "ROME", model.spec.edit.rome_layer)
        if params.clamp is None:
            params.clamp = model.spec.edit.rome_clamp
        if not 0 <= params.shrinkage <= 1:
            raise BadRequest("shrinkage must be in [0, 1]")
        return params


def compute_key(model: LoadedModel, layer: int, prompt: str, subject: str, prefixes: list[str]) -> torch.Tensor:
    """k*: mean ``mlp.hook_post`` at the subject's last token over the contexts. -> [d_mlp]."""
    rows, lookup = [], []
    for text, start in contexts(prompt, prefixes):
        rows.append(model.tokenize(text)[0].tolist())
        lookup.append(subject_positions(model, text, subject, start)[-1])
    batch = pad_rows(model, rows, lookup)
    name = f"blocks.{layer}.mlp.hook_post"
    with torch.no_grad():
        _, cache = model.run_with_cache(batch.tokens, [name])
    acts = cache[name][torch.arange(len(rows)), torch.tensor(lookup)]  # [B, d_mlp]
    return acts.mean(0)


def compute_value(model: LoadedModel, layer: int, prompt: str, subject: str, target: str, prefixes: list[str],
                  v_init: torch.Tensor, params: RomeParams) -> tuple[torch.Tensor, dict[str, Any]]:
    """delta [d_model] added at the subject's last token's MLP output so the contexts continue
    with ``target``; NLL + KL("{subject} is a") + ROME's weight decay |delta| / |v_init|^2."""
    tgt = target_ids(model, target)
    rows, lookup, score_pos = [], [], []
    for text, start in contexts(prompt, prefixes):
        ids = model.tokenize(text)[0].tolist()
        lookup.append(subject_positions(model, text, subject, start)[-1])
        score_pos.append(len(ids) - 1)
        rows.append(ids + tgt[:-1])
    kl_text = f"{subject} is a"
    kl_ids = model.tokenize(kl_text)[0].tolist()
    rows.append(kl_ids)
    lookup.append(subject_positions(model, kl_text, subject)[-1])
    batch = pad_rows(model, rows, lookup)
    n_rw = len(rows) - 1
    bidx = torch.arange(len(rows), device=model.device)
    lpos = torch.tensor(lookup, device=model.device)
    # gather indices of the target tokens: row i, positions score_pos[i] + j predict tgt[j]
    tpos = torch.tensor([[p + j for j in range(len(tgt))] for p in score_pos], device=model.device)
    tid = torch.tensor(tgt, device=model.device).expand(n_rw, -1)
    delta = torch.zeros(model.arch.d_model, device=model.device, dtype=torch.float32, requires_grad=True)
    hook_name = f"blocks.{layer}.hook_mlp_out"

    def add_delta(x: torch.Tensor, hook: Any) -> torch.Tensor:
        x = x.clone()
        x[bidx, lpos] = x[bidx, lpos] + delta.to(x.dtype)
        return x

    with torch.no_grad():
        base_logits = model.logits(batch.tokens)
    kl_pos = len(kl_ids) - 1
    init_kl = F.log_softmax(base_logits[n_rw, kl_pos].float(), dim=-1)
    opt = torch.optim.Adam([delta], lr=params.v_lr)
    max_norm = params.clamp * v_init.norm()
    losses = []
    with torch.enable_grad():
        for _ in range(params.v_steps):
            opt.zero_grad()
            logits = model.run_with_hooks(batch.tokens, [(hook_name, add_delta)])
            logp = F.log_softmax(logits.float(), dim=-1)
            nll = -logp[torch.arange(n_rw, device=model.device)[:, None], tpos, tid].mean()
            kl = params.kl_factor * F.kl_div(init_kl, logp[n_rw, kl_pos], log_target=True, reduction="sum")
            decay = params.v_weight_decay * (delta.norm() / v_init.norm() ** 2)
            loss = nll + kl + decay
            losses.append(round(float(loss.detach()), 5))
            if float(nll.detach()) < 5e-2:
                break
            loss.backward()
            opt.step()
            with torch.no_grad():
                if delta.norm() > max_norm:
                    delta.mul_(max_norm / delta.norm())
    info = {"v_losses": losses, "delta_norm": float(delta.detach().norm()), "v_init_norm": float(v_init.norm()),
            "target_tokens": model.token_strings(tgt)}
    return delta.detach(), info


def rome_update(model: LoadedModel, layer: int, k_star: torch.Tensor, v_star: torch.Tensor,
                u: torch.Tensor) -> torch.Tensor:
    """W += u (v* - W k* - b)^T / (k* . u) in place on ``model``; returns the update in W's layout."""
    out = mlp_out(model, layer)
    with torch.no_grad():
        residual = v_star - out.apply(k_star)
        r = residual / torch.dot(k_star, u)
        upd = out.rank_one(u, r)
        out.weight.add_(upd)
    return upd


def apply_rome(model: LoadedModel, prompt: str, subject: str, target: str, params: RomeParams,
               settings=None) -> dict[str, Any]:
    """Edit ``model`` IN PLACE (pass a copy). Returns what was done (JSON-able)."""
    from kcircuits.editing.covariance import generated_prefixes, layer_covariance

    t0 = time.perf_counter()
    layer = params.layer
    subject_positions(model, prompt, subject)
    half = params.n_prefixes // 2
    prefixes = (generated_prefixes(model, half, max(2, params.prefix_len // 2), seed=params.seed)
                + generated_prefixes(model, params.n_prefixes - half, params.prefix_len, seed=params.seed + 1))
    cov = layer_covariance(model, layer, params.covariance, n_tokens=params.cov_tokens, seed=params.seed,
                           settings=settings)
    t_cov = time.perf_counter()
    k_star = compute_key(model, layer, prompt, subject, prefixes)
    out = mlp_out(model, layer)
    with torch.no_grad():
        v_init = out.apply(k_star).float()
    delta, info = compute_value(model, layer, prompt, subject, target, prefixes, v_init, params)
    v_star = v_init + delta
    u = cov.solve(k_star, params.shrinkage)
    u = u / u.norm()
    upd = rome_update(model, layer, k_star, v_star, u)
    return {
        "method": "rome", "layer": layer, "covariance": cov.describe(params.shrinkage),
        "params": asdict(params), "prefixes": prefixes, "update_norm": float(upd.norm()),
        **info, "timings": {"covariance_s": round(t_cov - t0, 3), "total_s": round(time.perf_counter() - t0, 3)},
    }

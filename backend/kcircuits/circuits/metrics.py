"""Task metrics on logits, differentiable, evaluated at one position (the last prompt position).

Every metric is a :class:`Metric` called on logits ``[..., pos, V]`` (any leading batch dims whose
flattened size is a multiple of the prompt batch ``b``: mask batches and interpolation steps
repeat the prompts) and returns the mean as a scalar tensor; :meth:`Metric.per_example` returns
``[N]``.

- ``logit_diff``: logit(target) - logit(foil) (foil = another token, e.g. the corrupted answer).
- ``logprob`` / ``prob``: log-probability / probability of the target.
- ``match_nll``: NLL(target) - NLL_clean(target) at the answer position. Our normalisation: one
  answer token per prompt, averaged over prompts, *not* divided by the prompt length (the
  Knowledge Circuits reference code divides by the sequence length, see METHODS §2.1). 0 for the
  full model; lower is better.
- ``kl``: KL(clean || run) of the next-token distributions at the answer position; lower is better.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kcircuits.errors import BadRequest

METRICS = ("logit_diff", "logprob", "prob", "match_nll", "kl")
#: Metrics where larger means "the model does the task more" (the others are losses).
HIGHER_IS_BETTER = {"logit_diff": True, "logprob": True, "prob": True, "match_nll": False, "kl": False}


@dataclass
class Metric:
    """A task metric. ``target_ids`` [b]; ``foil_ids`` [b] (logit_diff); ``clean_logprobs`` [b, V]
    (match_nll, kl); ``position``: index of the scored position (default the last)."""

    name: str
    target_ids: torch.Tensor
    foil_ids: torch.Tensor | None = None
    clean_logprobs: torch.Tensor | None = None
    position: int = -1

    def __post_init__(self) -> None:
        if self.name not in METRICS:
            raise BadRequest(f"unknown metric {self.name!r}; choose one of {list(METRICS)}")
        if self.name == "logit_diff" and self.foil_ids is None:
            raise BadRequest("logit_diff needs a foil token")
        if self.name in ("match_nll", "kl") and self.clean_logprobs is None:
            raise ValueError(f"{self.name} needs the clean run's log-probabilities")

    @property
    def higher_is_better(self) -> bool:
        return HIGHER_IS_BETTER[self.name]

    def _rep(self, t: torch.Tensor, n: int) -> torch.Tensor:
        b = t.shape[0]
        if n % b:
            raise ValueError(f"batch {n} is not a multiple of the prompt batch {b}")
        return t.repeat(n // b, *([1] * (t.dim() - 1)))

    def per_example(self, logits: torch.Tensor) -> torch.Tensor:
        """logits [..., pos, V] -> metric per flattened leading index [N] (float32)."""
        last = logits[..., self.position, :].reshape(-1, logits.shape[-1]).float()
        n = last.shape[0]
        target = self._rep(self.target_ids.to(last.device), n)
        if self.name == "logit_diff":
            foil = self._rep(self.foil_ids.to(last.device), n)
            return last.gather(1, target[:, None])[:, 0] - last.gather(1, foil[:, None])[:, 0]
        logp = torch.log_softmax(last, dim=-1)
        tgt = logp.gather(1, target[:, None])[:, 0]
        if self.name == "logprob":
            return tgt
        if self.name == "prob":
            return tgt.exp()
        clean = self._rep(self.clean_logprobs.to(last.device).float(), n)
        if self.name == "match_nll":
            return clean.gather(1, target[:, None])[:, 0] - tgt
        return (clean.exp() * (clean - logp)).sum(-1)  # kl

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return self.per_example(logits).mean()


def make_metric(name: str, target_ids: torch.Tensor | list[int] | int, *, foil_ids=None,
                clean_logits: torch.Tensor | None = None, position: int = -1) -> Metric:
    """Build a metric; ``clean_logits`` [b, pos, V] supplies the reference of match_nll and kl."""
    def ids(x):
        t = torch.as_tensor(x, dtype=torch.long)
        return t.reshape(-1)

    clean_lp = None
    if clean_logits is not None:
        clean_lp = torch.log_softmax(clean_logits[:, position].detach().float(), dim=-1)
    return Metric(name, ids(target_ids), None if foil_ids is None else ids(foil_ids), clean_lp, position)


def target_rank(logits: torch.Tensor, target_id: int, position: int = -1) -> int:
    """1-based rank of ``target_id`` among all vocabulary logits at ``position`` (first example)."""
    row = logits.reshape(-1, *logits.shape[-2:])[0, position]
    return int((row > row[target_id]).sum().item()) + 1

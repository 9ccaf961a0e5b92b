"""The paper's edit findings measured on one edit (METHODS section 6).

Three questions, each answered from one forward pass per prompt on the base and on the edited model:

- **Where does the new fact appear?** The logit-lens rank of the new target's first token at the
  last position after every block; the first block after which it is in the top ``top_k``, relative
  to the edited layer. The paper: FT-M injects at the edited layer (offset 0); ROME writes at the
  subject position, so at the last token the rank jumps a few blocks later (offset > 0).
- **Does a mover head carry it?** Whether a head that attends to the subject after the edit gains
  the new target in its top tokens (:func:`kcircuits.editing.compare.head_output_diff`'s mover
  flag, with the target matched in its spellings, :func:`kcircuits.editing.compare.target_spellings`).
- **Side effects.** For other subjects of the prompt's relation and other facts about the edited
  subject: whether the answer changed and whether a mover head on that prompt now carries the new
  target.

Work is split so a server runs each model in its own worker step: :func:`analysis_state` on each
model, then :func:`edit_analysis` on the two states (no model needed). Layer numbers are block
indices; "after block b" is the residual stream entering block b + 1 (block -1: the embeddings).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import BaseModel, Field

from kcircuits.editing.compare import (
    CompareThresholds,
    HeadState,
    head_output_diff,
    head_state,
    subject_token_ids,
)
from kcircuits.lm.loader import LoadedModel

log = logging.getLogger(__name__)
SIDE_KINDS = ("neighbour", "same_subject")


@dataclass
class PromptState:
    """One model on one prompt: lens ranks and every head's state."""

    prompt: str
    subject: str
    kind: str  # "edit" | "neighbour" | "same_subject"
    ranks: torch.Tensor  # [L + 1] lens rank (1-based) of the new target after block -1 .. L - 1
    top_id: int  # the model's answer (top-1 first token)
    heads: HeadState
    subject_ids: list[int] = field(default_factory=list)


@dataclass
class AnalysisState:
    """:func:`analysis_state`'s output for one model."""

    edit: PromptState
    sides: list[PromptState]


def lens_ranks(model: LoadedModel, tokens: torch.Tensor, token_id: int) -> tuple[torch.Tensor, int]:
    """Logit-lens rank (1-based) of ``token_id`` at the last position after each block ([L + 1]:
    embeddings, then blocks 0 .. L - 1; the final norm recomputed per row) and the model's top-1."""
    from kcircuits.circuits.lens import _row_logits, residual_rows

    rows, scale, logits = residual_rows(model, tokens)
    last = _row_logits(model, rows[:, -1:], scale[-1:], "recompute")[:, 0]  # [L + 1, V]
    ranks = (last > last[:, token_id : token_id + 1]).sum(-1) + 1
    return ranks.cpu(), int(logits[-1].argmax())


def _prompt_state(model: LoadedModel, prompt: str, subject: str, kind: str, targets: Mapping[str, int],
                  k: int) -> PromptState:
    from kcircuits.circuits.subject import subject_positions

    positions = subject_positions(model, prompt, subject)
    ranks, top = lens_ranks(model, model.tokenize(prompt), targets["new"])
    return PromptState(prompt, subject, kind, ranks, top, head_state(model, prompt, positions, targets, k),
                       subject_token_ids(model, prompt, positions))


def analysis_state(model: LoadedModel, prompt: str, subject: str, targets: Mapping[str, int],
                   side_items: Sequence[Mapping[str, str]], k: int = 10) -> AnalysisState:
    """The edit prompt's and each side prompt's :class:`PromptState` on ``model``.
    ``targets``: {"new": id, "old": id}; ``side_items``: {"prompt", "subject", "kind"} (kinds in
    :data:`SIDE_KINDS`; others are skipped)."""
    from kcircuits.errors import BadRequest

    sides = []
    for item in side_items:
        if item.get("kind") not in SIDE_KINDS or not item.get("subject"):
            continue
        try:
            sides.append(_prompt_state(model, item["prompt"], item["subject"], item["kind"], targets, k))
        except BadRequest as exc:  # the subject does not align with the prompt's tokens: skip the prompt
            log.info("edit analysis skips %r: %s", item["prompt"], exc.message)
    return AnalysisState(_prompt_state(model, prompt, subject, "edit", targets, k), sides)


def first_top_block(ranks: Sequence[int], top_k: int) -> int | None:
    """The first block after which the rank is <= ``top_k`` (-1: already at the embeddings), or None."""
    for row, rank in enumerate(ranks):
        if int(rank) <= top_k:
            return row - 1
    return None


def _movers(model: LoadedModel, pre: PromptState, post: PromptState, targets: Mapping[str, int],
            spellings: Mapping[str, set[int]], thresholds: CompareThresholds) -> list[dict[str, Any]]:
    diff = head_output_diff(model, pre.heads, post.heads, targets, pre.subject_ids, thresholds, spellings)
    return [{"node": r["node"], "change": r["change"], "new_dla_delta": r["dla"]["new"]["delta"],
             "old_left": r["marks"].get("old") == "left",
             "top_pre": [t["token"] for t in r["top"]["pre"][:5]],
             "top_post": [t["token"] for t in r["top"]["post"][:5]]}
            for r in diff["rows"] if r["mover"]]


def edit_analysis(model: LoadedModel, pre: AnalysisState, post: AnalysisState, targets: Mapping[str, int],
                  spellings: Mapping[str, set[int]], edit_layer: int | None, edit_method: str,
                  thresholds: CompareThresholds = CompareThresholds(), lens_top_k: int = 10) -> dict[str, Any]:
    """The findings for one edit (``model`` only decodes tokens): {"lens", "mover", "side_effects",
    "rules"}; see the module docstring. Offsets are undefined (None) when the rank never reaches
    the top ``lens_top_k`` or the edited layer is unknown."""
    first_pre = first_top_block(pre.edit.ranks.tolist(), lens_top_k)
    first_post = first_top_block(post.edit.ranks.tolist(), lens_top_k)
    offset = first_post - edit_layer if first_post is not None and edit_layer is not None else None
    movers = _movers(model, pre.edit, post.edit, targets, spellings, thresholds)
    sides = []
    for a, b in zip(pre.sides, post.sides, strict=True):
        side_movers = _movers(model, a, b, targets, spellings, thresholds)
        sides.append({"prompt": a.prompt, "subject": a.subject, "kind": a.kind,
                      "answer_pre": model.token_strings([a.top_id])[0], "answer_post": model.token_strings([b.top_id])[0],
                      "changed": a.top_id != b.top_id, "became_new": b.top_id == targets["new"] != a.top_id,
                      "mover_carries_new": bool(side_movers), "movers": [m["node"] for m in side_movers]})
    summary = {}
    for kind in SIDE_KINDS:
        items = [s for s in sides if s["kind"] == kind]
        summary[kind] = {"n": len(items),
                         "changed_rate": sum(s["changed"] for s in items) / len(items) if items else None,
                         "became_new_rate": sum(s["became_new"] for s in items) / len(items) if items else None,
                         "mover_carries_new_rate": (sum(s["mover_carries_new"] for s in items) / len(items)
                                                    if items else None)}
    expected = {"rome": "a few blocks after the edited layer (offset > 0)",
                "ft-m": "at the edited layer (offset 0)", "ft-l": "at the edited layer (offset 0)"}
    return EditAnalysis.model_validate({
        "edit_method": edit_method, "edit_layer": edit_layer,
        "lens": {"ranks_pre": pre.edit.ranks.tolist(), "ranks_post": post.edit.ranks.tolist(),
                 "first_top_block_pre": first_pre, "first_top_block_post": first_post, "offset": offset,
                 "top_k": lens_top_k, "paper": expected.get(edit_method),
                 "note": None if offset is not None else (
                     f"the new target never reaches the top {lens_top_k} at the last position" if first_post is None
                     else "the edited layer is unknown")},
        "mover": {"switched": bool(movers), "heads": movers},
        "side_effects": {"items": sides, "summary": summary},
        "rules": {"lens": f"first block after which the new target's first token has logit-lens rank <= {lens_top_k} "
                          "at the last position (-1: the embeddings); offset = that block - the edited layer",
                  "mover": "a head that changed, attends to the subject (>= "
                           f"{thresholds.subject_attention:g} of its last-position attention) after the edit and "
                           f"whose top {thresholds.top_k} tokens gain the new target in any spelling",
                  "side_effects": "neighbour: another subject of the prompt's LRE relation in the same template; "
                                  "same_subject: another LRE relation's first template with the edited subject; "
                                  "changed = top-1 token differs after the edit"}}).model_dump()


# wire model ----------------------------------------------------------------------------------
class MoverHead(BaseModel):
    node: str
    change: float = Field(description="|out_post - out_pre| at the last position")
    new_dla_delta: float = Field(description="change of the head's direct contribution to the new target's logit")
    old_left: bool = Field(description="the old target left the head's top tokens")
    top_pre: list[str]
    top_post: list[str]


class LensFinding(BaseModel):
    ranks_pre: list[int] = Field(description="[L + 1] new target's lens rank after block -1 .. L - 1, base model")
    ranks_post: list[int] = Field(description="[L + 1] the same on the edited model")
    first_top_block_pre: int | None
    first_top_block_post: int | None
    offset: int | None = Field(description="first_top_block_post - edit_layer; None when undefined (see note)")
    top_k: int
    paper: str | None = Field(description="what the paper observed for this method")
    note: str | None


class MoverFinding(BaseModel):
    switched: bool = Field(description="some mover head's top tokens gained the new target")
    heads: list[MoverHead]


class SideItem(BaseModel):
    prompt: str
    subject: str
    kind: str
    answer_pre: str
    answer_post: str
    changed: bool
    became_new: bool
    mover_carries_new: bool
    movers: list[str]


class SideSummary(BaseModel):
    n: int
    changed_rate: float | None
    became_new_rate: float | None
    mover_carries_new_rate: float | None


class SideEffects(BaseModel):
    items: list[SideItem]
    summary: dict[str, SideSummary]


class EditAnalysis(BaseModel):
    """:func:`edit_analysis`'s result on the wire."""

    edit_method: str
    edit_layer: int | None
    lens: LensFinding
    mover: MoverFinding
    side_effects: SideEffects
    rules: dict[str, str]

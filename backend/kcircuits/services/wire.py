"""Typed wire models of results, shared by the services (which check results against them) and
the API (which declares them as ``response_model``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel


class HeadRoleOut(BaseModel):
    """One circuit head's role scores (``result.heads[head_id]``)."""

    role: Literal["mover", "relation", "mixture"] | None
    significant: bool
    significance: dict[Literal["dla", "attribution"], float | None]
    subject_attention: float
    relation_attention: float
    subject_dla_share: float
    relation_dla_share: float
    dla: float
    subject_dla: float
    relation_dla: float
    attribution: float | None
    target_rank: int
    subject_rank: int | None
    top_tokens: list[str]
    top_token_ids: list[int]
    suppressed_tokens: list[str]


class RolesOut(BaseModel):
    """How a result's head roles were decided (``result.roles``)."""

    thresholds: dict[str, float]
    significance: str
    mover: str
    relation: str
    mixture: str
    relation_positions: list[int]
    relation_tokens: list[str]
    counts: dict[str, int]


class TopTokenOut(BaseModel):
    """A circuit node's top lens token at the last position (``result.nodes[i].top_token``): its
    output read through the final norm and the unembedding; ``logit`` is that token's direct logit."""

    token: str
    id: int
    logit: float


# -- parameter masks (circuits/masks.py; METHODS 7) -------------------------------------------------
class _Stored(BaseModel):
    """Keys the store adds to a stored result."""

    id: str | None = None
    provenance: dict[str, Any] | None = None
    cached: bool | None = None
    saved: bool | None = None
    title: str | None = None


class MaskTaskOut(BaseModel):
    """The prompts a mask was trained on (an LRE relation's facts or syntax minimal pairs)."""

    name: str
    kind: Literal["relation", "syntax"]
    relation: str | None
    phenomenon: str | None
    prompts: list[str]
    targets: list[str]


class MaskParamsOut(BaseModel):
    """The engine's training parameters (``target`` is the density target, a share of the gated
    parameters; ``warm_start`` "none" in masks stored before the warm start existed)."""

    target: float
    steps: int
    lr: float
    lam: float
    init: float
    loss: Literal["kl", "ce"]
    seed: int
    warm_start: Literal["taylor", "none"] = "none"
    warm_rate: float | None = None


class MaskCurvesOut(BaseModel):
    """One entry per evaluation: the training loss, the expected (L0) density and the KL of the
    deterministic mask at that step."""

    step: list[int]
    loss: list[float]
    density: list[float]
    faithfulness_kl: list[float]


class MaskFaithfulnessOut(BaseModel):
    """The final hard mask on the task: mean KL(full || masked) of the last-position next-token
    distribution, top-1 agreement with the full model, task accuracy masked and full."""

    kl: float
    top1_agreement: float
    accuracy: float
    full_accuracy: float


class ModuleShareOut(BaseModel):
    """One module kind: share of its parameters inside the mask, share of the mask it makes up.
    ``always_kept``: the kind is never gated (the token embedding / unembedding): it is in every
    mask (share inside 1.0) and counts in no density (share of the mask None)."""

    share_inside: float | None
    share_of_mask: float | None
    n_params: int
    always_kept: bool = False


class MaskComponentOut(BaseModel):
    """Mask density of one circuit unit: a head (``a<l>.h<h>``: its query rows), a key/value group
    (``a<l>.kv<g>``: its key and value rows) or an MLP (``m<l>``: its gate, up and down rows).
    ``in_circuit``: whether the unit is a node of the edge circuit compared with (None: not compared,
    or no circuit node of that kind)."""

    id: str
    kind: Literal["head", "kv", "mlp"]
    layer: int
    density: float
    in_circuit: bool | None = None


class MaskTimingOut(BaseModel):
    """Seconds: training (``steps_run`` steps in this run; ``resumed_from_step`` > 0 after a
    checkpoint), one training step, one plain forward+backward of the model on the task, their ratio."""

    train_s: float
    step_s: float
    steps_run: int
    resumed_from_step: int
    forward_backward_s: float
    step_over_forward_backward: float | None


class MaskOut(_Stored):
    """A trained mask (kind ``mask``): the bits are the mask packed (numpy ``packbits``, big bit
    order, base64), one bit per gate in the layout's order (``n_gates``). ``n_params`` and ``density``
    count the gated parameters only: the token embedding / unembedding is outside every mask."""

    kind: Literal["mask"]
    model: str
    revision: str
    task: MaskTaskOut
    params: MaskParamsOut
    layout: str
    n_gates: int
    n_params: int
    bits: str
    density: float
    curves: MaskCurvesOut
    faithfulness: MaskFaithfulnessOut
    composition: dict[str, ModuleShareOut]
    components: list[MaskComponentOut]
    timing: MaskTimingOut


class MaskEditRowOut(BaseModel):
    """One of the four edits: fine-tuned only inside ``variant``'s parameter set. ``changed_blocks``:
    gates whose parameters moved; ``changed_outside``: of them, outside the variant's set (0 by
    construction: measured, not assumed)."""

    variant: Literal["inside", "complement", "random", "full"]
    density: float
    nll_pre: float
    nll_post: float
    locality: float | None
    losses: list[float]
    changed_blocks: int
    changed_outside: int


class MaskEditOut(_Stored):
    """Circuit-aware editing (kind ``mask_edit``): the same fact edit inside the mask, in its
    complement, in a random mask of the same density and in the whole model."""

    kind: Literal["mask_edit"]
    model: str
    mask_id: str
    prompt: str
    target: str
    steps: int
    lr: float
    seed: int
    locality_prompts: list[str]
    rows: list[MaskEditRowOut]


class MaskOverlapOut(BaseModel):
    """``matrix[i][j]`` = |Ci ∩ Cj| / |Ci| in parameters (None when Ci is empty), beside
    ``random_matrix`` of random masks with the same densities (seeds ``seed + i``)."""

    model: str
    mask_ids: list[str]
    labels: list[str]
    densities: list[float]
    matrix: list[list[float | None]]
    random_matrix: list[list[float | None]]
    seed: int


class ComponentSummaryOut(BaseModel):
    """Mean mask density of the units of one kind inside and outside the edge circuit."""

    n_in_circuit: int
    n_outside: int
    mean_density_in_circuit: float | None
    mean_density_outside: float | None


class MaskComponentsOut(BaseModel):
    """A mask's per-head / per-MLP densities marked by membership in a stored edge circuit."""

    mask_id: str
    circuit_id: str
    model: str
    mask_density: float
    circuit_nodes: list[str]
    components: list[MaskComponentOut]
    summary: dict[Literal["head", "mlp"], ComponentSummaryOut]

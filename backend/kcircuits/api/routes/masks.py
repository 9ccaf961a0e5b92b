"""Parameter-level masks (Ge, Rudzicz, Zhu; METHODS 7). Training runs as a ``mask-train`` job and
four-way circuit-aware editing as a ``mask-edit`` job (both started through POST /api/jobs; their
params models are here); the stored mask and edit, the overlap matrix and the comparison with an
edge circuit are routes here."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from kcircuits.api.deps import StoreDep, WorkerDep
from kcircuits.api.errors import ERROR_RESPONSES
from kcircuits.api.routes.results import HexIdConvertor  # noqa: F401 - registers the "hexid" path convertor
from kcircuits.api.validation import WIRE, Int, model_key
from kcircuits.errors import NotFound
from kcircuits.services import capabilities
from kcircuits.services.executor import WorkerExecutor
from kcircuits.services.specs import (
    MASK_EDIT_STEPS_MAX,
    MASK_LOCALITY_MAX,
    MASK_OVERLAP_MAX,
    MASK_STEPS_MAX,
    MASK_TASK_N_MAX,
    MASK_TASK_N_MIN,
    MaskComponentsSpec,
    MaskEditSpec,
    MaskOverlapSpec,
    MaskTrainSpec,
)
from kcircuits.services.wire import MaskComponentsOut, MaskEditOut, MaskOut, MaskOverlapOut
from kcircuits.store.ids import ID_PATTERN

router = APIRouter(prefix="/api/masks", tags=["masks"])

ResultId = Annotated[str, Field(pattern=f"^{ID_PATTERN}$", description="a stored result's content id")]
Prompt = Annotated[str, Field(min_length=1, max_length=100_000)]
SEED_MAX = 2**31 - 1


class MaskTrainIn(BaseModel):
    """Train a mask of one task (exactly one of ``relation`` and ``phenomenon``) at a target density
    (the paper's 5, 15, 25, 35 or 50%, or any share in (0, 1)). Llama-family models only."""

    model_config = WIRE

    model: str | None = Field(None, max_length=200, description="registry id (Llama family); default: the server's")
    relation: str | None = Field(None, max_length=200, description="LRE relation: its known facts are the task")
    phenomenon: Literal["det_noun", "subj_verb"] | None = Field(None, description="syntax minimal pairs as the task")
    n: Int = Field(MaskTrainSpec.n, ge=MASK_TASK_N_MIN, le=MASK_TASK_N_MAX, description="prompts of the task")
    density: float = Field(MaskTrainSpec.density, gt=0, lt=1, description="target share of parameters in the mask")
    steps: Int = Field(MaskTrainSpec.steps, ge=1, le=MASK_STEPS_MAX)
    lr: float = Field(MaskTrainSpec.lr, gt=0, le=10, description="Adam learning rate of the gate logits")
    lam: float = Field(MaskTrainSpec.lam, ge=0, le=1e6, description="weight of relu(E[density] - target)")
    loss: Literal["kl", "ce"] = Field(MaskTrainSpec.loss, description="faithfulness: KL to the full model, or CE to its top-1")
    seed: Int = Field(MaskTrainSpec.seed, ge=0, le=SEED_MAX)
    eval_every: Int = Field(MaskTrainSpec.eval_every, ge=1, le=MASK_STEPS_MAX,
                            description="steps between curve points (and checkpoints); at most steps")
    warm_start: Literal["taylor", "none"] = Field(
        MaskTrainSpec.warm_start, description="taylor: iterative first-order pruning to the target opens the initial "
                                              "gates; none: every gate starts open")


class MaskEditIn(BaseModel):
    """Fine-tune ``prompt`` -> ``target`` inside the stored mask, its complement, a random mask of
    the same density and the whole model (same steps and lr)."""

    model_config = WIRE

    mask_id: ResultId
    prompt: str = Field(..., max_length=100_000)
    target: str = Field(..., min_length=1, max_length=200, description='the new answer, e.g. " Rome" (first token)')
    model: str | None = Field(None, max_length=200, description="default: the mask's model")
    steps: Int = Field(MaskEditSpec.steps, ge=1, le=MASK_EDIT_STEPS_MAX)
    lr: float = Field(MaskEditSpec.lr, gt=0, le=1)
    seed: Int = Field(MaskEditSpec.seed, ge=0, le=SEED_MAX, description="seed of the random mask")
    locality_prompts: list[Prompt] | None = Field(
        None, max_length=MASK_LOCALITY_MAX,
        description="top-1 unchanged on these; default: the mask's task prompts and fixed unrelated prompts")


class MaskOverlapIn(BaseModel):
    """Stored masks of one model (same parameter layout)."""

    model_config = WIRE

    mask_ids: list[ResultId] = Field(..., min_length=2, max_length=MASK_OVERLAP_MAX)
    model: str | None = Field(None, max_length=200, description="default: the first mask's model")
    seed: Int = Field(MaskOverlapSpec.seed, ge=0, le=SEED_MAX, description="random masks use seeds seed + i")


class MaskComponentsIn(BaseModel):
    """A stored mask and a stored edge circuit of the same model."""

    model_config = WIRE

    mask_id: ResultId
    circuit_id: ResultId


@router.get("/stored/{mask_id:hexid}", responses=ERROR_RESPONSES, response_model=MaskOut)
def get_mask(mask_id: str, store: StoreDep) -> dict:
    """A stored mask: curves, final density and faithfulness, composition, per-unit densities, timing, packed bits."""
    return capabilities.stored_mask(store, mask_id)


@router.get("/edits/{edit_id:hexid}", responses=ERROR_RESPONSES, response_model=MaskEditOut)
def get_mask_edit(edit_id: str, store: StoreDep) -> dict:
    """A stored four-way mask edit."""
    from kcircuits.store.ids import is_valid_id

    result = store.get(edit_id) if store is not None and is_valid_id(edit_id) else None
    if result is None or result.get("kind") != "mask_edit":
        raise NotFound(f"no stored mask edit with id {edit_id[:80]!r}")
    return result


@router.post("/overlap", responses=ERROR_RESPONSES, response_model=MaskOverlapOut)
def overlap(body: MaskOverlapIn, request: Request, worker: WorkerDep, store: StoreDep) -> dict:
    """The overlap matrix |Ci ∩ Cj| / |Ci| of stored masks beside random masks of the same densities."""
    model_id = body.model or capabilities.mask_model(store, body.mask_ids[0])
    spec = MaskOverlapSpec(mask_ids=list(body.mask_ids), model=model_id, seed=body.seed)
    return capabilities.mask_overlap(spec, WorkerExecutor(worker, model_key(request, model_id, None)), store)


@router.post("/components", responses=ERROR_RESPONSES, response_model=MaskComponentsOut)
def components(body: MaskComponentsIn, store: StoreDep) -> dict:
    """A mask's per-head / per-MLP densities marked in or out of an edge circuit, with mean densities of each side."""
    return capabilities.mask_components(MaskComponentsSpec(mask_id=body.mask_id, circuit_id=body.circuit_id), store)

"""Knowledge neurons: attribution runs as a ``neurons`` job (IG over MLP hidden units, KN filters,
optionally the circuit beside them), Niu et al.'s facts-vs-syntax comparison as a ``neurons-compare``
job (both started through POST /api/jobs), and suppress / enhance edits here (hooks only: the loaded
model is never modified, so no session copy is needed)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from kcircuits.api.deps import StoreDep, WorkerDep
from kcircuits.api.errors import ERROR_RESPONSES
from kcircuits.api.validation import WIRE, Int, bounded_int, model_key
from kcircuits.api.wire import NeuronEditOut, SyntaxPairsOut
from kcircuits.services import capabilities
from kcircuits.services.executor import WorkerExecutor
from kcircuits.services.specs import NEURON_STEPS_MAX, NeuronEditSpec, NeuronsCompareSpec, NeuronsSpec

router = APIRouter(prefix="/api/neurons", tags=["neurons"])

Prompt = Annotated[str, Field(min_length=1, max_length=100_000)]
#: A neuron id as :func:`kcircuits.circuits.neurons.parse_neuron` reads it ("L5.N123"; L optional, any case).
NEURON_ID = r"^[Ll]?[0-9]+\.[Nn][0-9]+$"


class _IG(BaseModel):
    model_config = WIRE

    steps: Int = Field(NeuronsSpec.steps, ge=1, le=NEURON_STEPS_MAX, description="IG steps m (midpoint rule, baseline 0)")
    path: Literal["joint", "layer"] = Field(NeuronsSpec.path, description="joint: all layers scaled together; layer: Dai et al.")
    threshold: float = Field(NeuronsSpec.threshold, gt=0, le=1, description="keep neurons above this fraction of the per-prompt max")
    share: float = Field(NeuronsSpec.share, gt=0, le=1, description="keep neurons found in at least this fraction of the prompts")


class NeuronsIn(_IG):
    """Knowledge neurons of ``prompt`` -> ``target`` (and of its paraphrases)."""

    model: str | None = Field(None, max_length=200)
    prompt: str = Field(..., max_length=100_000)
    target: str = Field(..., min_length=1, max_length=200, description='answer, e.g. " Paris" (first token)')
    paraphrases: list[Prompt] = Field(default_factory=list, max_length=16, description="more prompts of the same fact")
    relation: str | None = Field(None, max_length=200, description="LRE relation: its templates filled with subject")
    subject: str | None = Field(None, max_length=500, description="the subject for the relation's templates")
    top_k: Int = Field(NeuronsSpec.top_k, ge=1, le=200)
    with_circuit: bool = Field(False, description="also discover the prompt's circuit and set the KNs beside it")
    circuit_top_n: bounded_int(ge=1) | None = None
    session: str | None = Field(None, max_length=100)


class CompareIn(_IG):
    """Niu et al.'s comparison: KN localisation and edits on facts vs syntax minimal pairs."""

    model: str | None = Field(None, max_length=200)
    n_facts: Int = Field(NeuronsCompareSpec.n_facts, ge=0, le=200)
    n_syntax: Int = Field(NeuronsCompareSpec.n_syntax, ge=0, le=200)
    max_prompts: Int = Field(NeuronsCompareSpec.max_prompts, ge=1, le=8)
    relations: list[Annotated[str, Field(max_length=200)]] | None = Field(None, max_length=20)
    phenomena: list[Literal["det_noun", "subj_verb"]] = Field(default_factory=lambda: ["det_noun", "subj_verb"],
                                                              min_length=1)
    session: str | None = Field(None, max_length=100)


class NeuronEditIn(BaseModel):
    """Suppress (zero) or enhance (double) neurons; before/after on the prompt and its neighbours."""

    model_config = WIRE

    model: str | None = Field(None, max_length=200)
    prompt: str = Field(..., max_length=100_000)
    target: str = Field(..., min_length=1, max_length=200)
    neurons: list[Annotated[str, Field(max_length=32, pattern=NEURON_ID)]] = Field(..., min_length=1, max_length=1000,
                                                                 description='ids "L<layer>.N<index>"')
    mode: Literal["suppress", "enhance"] = NeuronEditSpec.mode
    positions: Literal["last", "all"] = NeuronEditSpec.positions
    relation: str | None = Field(None, max_length=200, description="LRE relation of the fact: paraphrases, other facts")
    subject: str | None = Field(None, max_length=500)
    paraphrases: list[Prompt] = Field(default_factory=list, max_length=16)
    unrelated: list[Prompt] | None = Field(None, max_length=16, description="default: fixed unrelated prompts")
    foil: str | None = Field(None, min_length=1, max_length=200, description="minimal-pair foil (syntax)")
    session: str | None = Field(None, max_length=100)


@router.post("/edit", responses=ERROR_RESPONSES, response_model=NeuronEditOut, response_model_exclude_unset=True)
def edit(body: NeuronEditIn, request: Request, worker: WorkerDep, store: StoreDep) -> dict:
    """Suppress or enhance a neuron set on the fly (forward hooks; weights untouched): the answer's
    probability and rank before and after, the top-1 flip, paraphrases, other facts, unrelated prompts."""
    key = model_key(request, body.model, body.session)
    return capabilities.neuron_edit(capabilities.to_spec(NeuronEditSpec, body), WorkerExecutor(worker, key), store)


@router.get("/syntax", responses=ERROR_RESPONSES, response_model=SyntaxPairsOut)
def syntax_pairs(phenomenon: Literal["det_noun", "subj_verb"] | None = None,
                 limit: int = Query(50, ge=1, le=1000)) -> dict:
    """The committed syntax minimal pairs (bench/make_syntax_pairs.py), optionally of one phenomenon."""
    from kcircuits.circuits.neurons import syntax_items

    items = [i for i in syntax_items() if phenomenon is None or i["phenomenon"] == phenomenon]
    return {"total": len(items), "items": items[:limit]}

"""Knowledge neurons: attribution runs as a ``neurons`` job (IG over MLP hidden units, KN filters,
optionally the circuit beside them), Niu et al.'s facts-vs-syntax comparison as a ``neurons-compare``
job (both started through POST /api/jobs), and suppress / enhance edits here (hooks only: the loaded
model is never modified, so no session copy is needed)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from kcircuits.api.deps import SettingsDep, StoreDep, WorkerDep
from kcircuits.api.errors import ERROR_RESPONSES
from kcircuits.api.storing import stored_or_computed
from kcircuits.api.validation import WIRE, Int, bounded_int, check_prompt, check_tokens, model_key
from kcircuits.config import Settings
from kcircuits.errors import BadRequest, NotFound

router = APIRouter(prefix="/api/neurons", tags=["neurons"])

Prompt = Annotated[str, Field(min_length=1, max_length=100_000)]
#: A neuron id as :func:`kcircuits.circuits.neurons.parse_neuron` reads it ("L5.N123"; L optional, any case).
NEURON_ID = r"^[Ll]?[0-9]+\.[Nn][0-9]+$"


class _IG(BaseModel):
    model_config = WIRE

    steps: Int = Field(20, ge=1, le=128, description="IG steps m (midpoint rule, baseline 0)")
    path: Literal["joint", "layer"] = Field("joint", description="joint: all layers scaled together; layer: Dai et al.")
    threshold: float = Field(0.2, gt=0, le=1, description="keep neurons above this fraction of the per-prompt max")
    share: float = Field(0.5, gt=0, le=1, description="keep neurons found in at least this fraction of the prompts")


class NeuronsIn(_IG):
    """Knowledge neurons of ``prompt`` -> ``target`` (and of its paraphrases)."""

    model: str | None = Field(None, max_length=200)
    prompt: str = Field(..., max_length=100_000)
    target: str = Field(..., min_length=1, max_length=200, description='answer, e.g. " Paris" (first token)')
    paraphrases: list[Prompt] = Field(default_factory=list, max_length=16, description="more prompts of the same fact")
    relation: str | None = Field(None, max_length=200, description="LRE relation: its templates filled with subject")
    subject: str | None = Field(None, max_length=500, description="the subject for the relation's templates")
    top_k: Int = Field(20, ge=1, le=200)
    with_circuit: bool = Field(False, description="also discover the prompt's circuit and set the KNs beside it")
    circuit_top_n: bounded_int(ge=1) | None = None
    session: str | None = Field(None, max_length=100)


class CompareIn(_IG):
    """Niu et al.'s comparison: KN localisation and edits on facts vs syntax minimal pairs."""

    model: str | None = Field(None, max_length=200)
    n_facts: Int = Field(20, ge=0, le=200)
    n_syntax: Int = Field(20, ge=0, le=200)
    max_prompts: Int = Field(3, ge=1, le=8)
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
    mode: Literal["suppress", "enhance"] = "suppress"
    positions: Literal["last", "all"] = "last"
    relation: str | None = Field(None, max_length=200, description="LRE relation of the fact: paraphrases, other facts")
    subject: str | None = Field(None, max_length=500)
    paraphrases: list[Prompt] = Field(default_factory=list, max_length=16)
    unrelated: list[Prompt] | None = Field(None, max_length=16, description="default: fixed unrelated prompts")
    foil: str | None = Field(None, min_length=1, max_length=200, description="minimal-pair foil (syntax)")
    session: str | None = Field(None, max_length=100)


def _check_relation(relation: str | None, subject: str | None, field: str = "relation") -> None:
    """A known LRE relation, and a subject to fill its templates with."""
    if relation is None:
        return
    from kcircuits.circuits.relation import load_relation

    try:
        load_relation(relation)
    except NotFound as exc:
        raise BadRequest(f"{field}: {exc.message}") from None
    if not subject or not subject.strip():
        raise BadRequest(f"{field} needs a subject (its templates are filled with it)")


def check_neurons(params: NeuronsIn, settings: Settings) -> None:
    """Up-front checks of a ``neurons`` job (no model work)."""
    for i, prompt in enumerate(params.paraphrases):
        check_prompt(prompt, settings, f"paraphrases[{i}]")
    _check_relation(params.relation, params.subject)


def check_compare(params: CompareIn, settings: Settings) -> None:
    if params.n_facts + params.n_syntax == 0:
        raise BadRequest("n_facts and n_syntax are both 0: nothing to compare")
    for i, name in enumerate(params.relations or []):
        _check_relation(name, "-", f"relations[{i}]")


def run_neurons(model: Any, params: NeuronsIn, settings: Settings, progress=None) -> dict:
    """Runs in the worker: attribution on every prompt, the KN filters, and the circuit if asked."""
    from kcircuits.circuits.neurons import (
        IGParams,
        KNParams,
        find_neurons,
        neurons_with_circuit,
        request_prompts,
    )

    prompts = request_prompts(model, params.prompt, params.target, params.paraphrases, params.relation, params.subject)
    for text, _ in prompts:
        check_tokens(model.tokenize(text).shape[1], settings)
    ig, kn = IGParams(steps=params.steps, path=params.path), KNParams(params.threshold, params.share)
    if params.with_circuit:
        result = neurons_with_circuit(model, prompts[0][0], params.target, paraphrases=[p for p, _ in prompts[1:]],
                                      ig=ig, kn=kn, top_k=params.top_k, circuit_top_n=params.circuit_top_n,
                                      progress=progress)
    else:
        result = find_neurons(model, prompts, ig=ig, kn=kn, top_k=params.top_k, progress=progress)
    return {"kind": "neurons", "prompt": params.prompt, "target": params.target, "relation": params.relation,
            "subject": params.subject, "session": params.session, **result}


def run_compare(model: Any, params: CompareIn, progress=None, cancel=None) -> dict:
    from kcircuits.circuits.neurons import DEFAULT_RELATIONS, IGParams, KNParams, compare_localisation

    result = compare_localisation(model, params.n_facts, params.n_syntax,
                                  ig=IGParams(steps=params.steps, path=params.path),
                                  kn=KNParams(params.threshold, params.share), max_prompts=params.max_prompts,
                                  relations=params.relations or DEFAULT_RELATIONS, phenomena=params.phenomena,
                                  progress=progress, cancel=cancel)
    return {"kind": "neurons_compare", **result}


def run_edit(model: Any, body: NeuronEditIn, settings: Settings) -> dict:
    """Runs in the worker: parse the neuron ids, gather the neighbour prompts, edit by hooks, compare."""
    from kcircuits.circuits.neurons import edit_request

    check_tokens(model.tokenize(body.prompt).shape[1], settings)
    result = edit_request(model, body.neurons, body.mode, body.prompt, body.target, positions=body.positions,
                          relation=body.relation, subject=body.subject, paraphrases=body.paraphrases,
                          unrelated=body.unrelated, foil=body.foil)
    return {"kind": "neuron_edit", "model": model.spec.id, "target": body.target, "relation": body.relation,
            "subject": body.subject, "session": body.session, **result}


@router.post("/edit", responses=ERROR_RESPONSES)
def edit(body: NeuronEditIn, request: Request, settings: SettingsDep, worker: WorkerDep, store: StoreDep) -> dict:
    """Suppress or enhance a neuron set on the fly (forward hooks; weights untouched): the answer's
    probability and rank before and after, the top-1 flip, paraphrases, other facts, unrelated prompts."""
    key = model_key(request, body.model, body.session)
    check_prompt(body.prompt, settings)
    for i, prompt in enumerate([*body.paraphrases, *(body.unrelated or [])]):
        check_prompt(prompt, settings, f"prompts[{i}]")
    if body.relation:
        _check_relation(body.relation, body.subject)
    request_dict = {"model": body.model or settings.default_model, **body.model_dump(exclude={"model"})}
    return stored_or_computed(store, worker, key, "neuron_edit", request_dict,
                              lambda: worker.run(key, lambda model: run_edit(model, body, settings)))


@router.get("/syntax", responses=ERROR_RESPONSES)
def syntax_pairs(phenomenon: Literal["det_noun", "subj_verb"] | None = None,
                 limit: int = Query(50, ge=1, le=1000)) -> dict:
    """The committed syntax minimal pairs (bench/make_syntax_pairs.py), optionally of one phenomenon."""
    from kcircuits.circuits.neurons import syntax_items

    items = [i for i in syntax_items() if phenomenon is None or i["phenomenon"] == phenomenon]
    return {"total": len(items), "items": items[:limit]}

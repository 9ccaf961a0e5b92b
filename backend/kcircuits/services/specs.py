"""One spec per capability: its defaults, limits and up-front checks, in one place.

The API's pydantic request models and the CLI's options both read their defaults and bounds from
here (``tests/unit/test_service_defaults.py`` asserts they agree). ``check(settings)`` runs the
cheap checks before any model work (registry facts only); ``request(settings)`` is the store's id
input, so the same request from either transport has the same content id.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from kcircuits.circuits.discover import DEFAULT_METHOD, REFINE_METHOD
from kcircuits.config import Settings
from kcircuits.errors import BadRequest, NotFound
from kcircuits.services.checks import check_prompt, check_prompts, check_top_k, n_edges

#: Integrated-gradients steps of circuit attribution (eap-ig and friends).
IG_STEPS_MAX = 64
#: Random circuits of the same size behind the random Hit@10 baseline.
RANDOM_SEEDS_MAX = 10
#: Automatic counterfactuals averaged per circuit.
COUNTERFACTUALS_MAX = 8
#: IG steps of knowledge-neuron attribution.
NEURON_STEPS_MAX = 128
#: Facts per split of a relation run.
RELATION_N_MIN, RELATION_N_MAX = 2, 500
#: The largest ``max_edges`` an ACDC request may name (above every supported model's graph).
MAX_ACDC_EDGES = 10_000_000
#: Discovery methods of POST /api/circuits and ``kcircuits circuit`` (acdc: a job / its own spec).
CIRCUIT_METHODS = ("eap-ig-refine", "eap-ig", "eap", "eap-ig-mask", "clean-corrupted", "exact")
SWEEP_METHODS = ("eap-ig-refine", "eap-ig", "eap")
RELATION_METHODS = ("eap-ig-refine", "eap-ig", "eap")


def selection_error(top_n: int | None, threshold: float | None, method: str) -> str | None:
    """Why a circuit selection is refused, or None: ``top_n`` or ``threshold``, not both, and a
    threshold only with a single-pass method."""
    if top_n is not None and threshold is not None:
        return "give top_n or threshold, not both"
    if threshold is not None and method == REFINE_METHOD:
        return f"threshold selects by one pass's scores: use top_n with {REFINE_METHOD}, or another method"
    return None


def _model(spec: Any, settings: Settings) -> str:
    return spec.model or settings.default_model


def _request(spec: Any, settings: Settings, exclude: tuple[str, ...] = (), **extra: Any) -> dict[str, Any]:
    data = {k: v for k, v in asdict(spec).items() if k not in {"model", *exclude}}
    return {**data, "model": _model(spec, settings), **extra}


def check_relation_name(relation: str | None, field: str = "relation", subject: str | None = "-") -> None:
    """A known LRE relation (and, where its templates are filled, a subject)."""
    if relation is None:
        return
    from kcircuits.circuits.relation import load_relation

    try:
        load_relation(relation)
    except NotFound as exc:
        raise BadRequest(f"{field}: {exc.message}") from None
    if not subject or not subject.strip():
        raise BadRequest(f"{field} needs a subject (its templates are filled with it)")


def check_batch_sizes(spec: Any) -> None:
    """A circuit request's random baseline circuits and automatic counterfactuals, within their limits."""
    if not 0 <= spec.random_seeds <= RANDOM_SEEDS_MAX:
        raise BadRequest(f"random_seeds must be between 0 and {RANDOM_SEEDS_MAX}")
    if not 1 <= spec.counterfactuals <= COUNTERFACTUALS_MAX:
        raise BadRequest(f"counterfactuals must be between 1 and {COUNTERFACTUALS_MAX}")


@dataclass(frozen=True)
class LensSpec:
    prompt: str
    model: str | None = None
    target: str | None = None
    subject: str | None = None
    top_k: int = 5
    ln_mode: str = "recompute"
    kl: bool = False
    session: str | None = None
    save: bool = False

    def check(self, settings: Settings) -> None:
        check_prompt(self.prompt, settings)
        check_top_k(self.top_k, settings)

    def request(self, settings: Settings) -> dict[str, Any]:
        return _request(self, settings, exclude=("save",), method="logit_lens")


class _PromptAndK:
    """``check`` of the node specs: a prompt within the limits and ``k`` top tokens."""

    def check(self, settings: Settings) -> None:
        check_prompt(self.prompt, settings)
        check_top_k(self.k, settings)


@dataclass(frozen=True)
class ProjectSpec(_PromptAndK):
    """What one head's or MLP's output promotes and suppresses at ``position``."""

    prompt: str
    node: str
    model: str | None = None
    position: int = -1
    k: int = 10
    session: str | None = None


@dataclass(frozen=True)
class NodeDetailSpec(_PromptAndK):
    """The node panel of ``node`` ("a<l>.h<h>", "m<l>", "input" or "logits") on ``prompt``."""

    prompt: str
    node: str
    model: str | None = None
    target: str | None = None
    subject: str | None = None
    k: int = 10
    session: str | None = None


def _default_roles() -> dict[str, float]:
    from kcircuits.circuits.heads import HeadRoleThresholds

    return {k: v for k, v in asdict(HeadRoleThresholds()).items() if k != "lens_k"}


@dataclass(frozen=True)
class CircuitSpec:
    prompt: str
    target: str
    model: str | None = None
    method: str = DEFAULT_METHOD
    ablation: str = "patch"
    metric: str | None = None
    corrupt_prompt: str | None = None
    counterfactuals: int = 1
    subject: str | None = None
    foil: str | None = None
    top_n: int | None = None
    threshold: float | None = None
    greedy: bool = False
    ig_steps: int = 5
    kv_mode: str = "grouped"
    max_edges_returned: int = 3000
    random_seeds: int = 3
    with_heads: bool = True
    roles: dict[str, float] = field(default_factory=_default_roles)
    session: str | None = None

    def check(self, settings: Settings) -> None:
        from kcircuits.circuits.attribution import EXACT_MAX_EDGES

        if (error := selection_error(self.top_n, self.threshold, self.method)) is not None:
            raise BadRequest(error)
        if self.method not in CIRCUIT_METHODS:
            raise BadRequest(f"unknown method {self.method!r}; choose one of {list(CIRCUIT_METHODS)} (acdc: a job)")
        if not 1 <= self.ig_steps <= IG_STEPS_MAX:
            raise BadRequest(f"ig_steps must be between 1 and {IG_STEPS_MAX}")
        check_batch_sizes(self)
        check_prompts(self, settings)
        edges = n_edges(_model(self, settings), settings, self.kv_mode)
        if self.top_n is not None and self.top_n > edges:
            raise BadRequest(f"top_n is {self.top_n}; the graph has {edges} edges")
        if self.method == "exact" and edges > EXACT_MAX_EDGES:
            raise BadRequest(f"exact patching runs one forward per edge: {edges} edges exceed the limit of "
                             f"{EXACT_MAX_EDGES}; use eap-ig (or an acdc job)")

    def request(self, settings: Settings) -> dict[str, Any]:
        return _request(self, settings)

    def thresholds(self):
        from kcircuits.circuits.heads import HeadRoleThresholds

        return HeadRoleThresholds(**self.roles)


@dataclass(frozen=True)
class AcdcSpec:
    prompt: str
    target: str
    model: str | None = None
    subject: str | None = None
    tau: float = 0.01
    ablation: str = "zero"
    metric: str = "match_nll"
    corrupt_prompt: str | None = None
    kv_mode: str = "grouped"
    session: str | None = None
    max_edges: int = 20_000
    counterfactuals: int = 1
    random_seeds: int = 3

    def check(self, settings: Settings) -> None:
        """ACDC costs one forward per evaluated edge: refuse graphs above ``max_edges`` up front."""
        check_batch_sizes(self)
        check_prompts(self, settings)
        edges = n_edges(_model(self, settings), settings, self.kv_mode)
        if edges > self.max_edges:
            raise BadRequest(f"ACDC on this model evaluates up to {edges} edges, above max_edges={self.max_edges}; "
                             "raise max_edges to run it anyway, or use EAP / EAP-IG")

    def request(self, settings: Settings) -> dict[str, Any]:
        return _request(self, settings, exclude=("max_edges",), method="acdc")


@dataclass(frozen=True)
class SweepSpec:
    prompt: str
    target: str
    model: str | None = None
    subject: str | None = None
    method: str = DEFAULT_METHOD
    ablation: str = "patch"
    metric: str | None = None
    corrupt_prompt: str | None = None
    sizes: list[int] | None = None
    ig_steps: int = 5
    kv_mode: str = "grouped"
    session: str | None = None

    def check(self, settings: Settings) -> None:
        """Every circuit size asked for lies within the graph."""
        check_prompts(self, settings)
        if not 1 <= self.ig_steps <= IG_STEPS_MAX:
            raise BadRequest(f"ig_steps must be between 1 and {IG_STEPS_MAX}")
        edges = n_edges(_model(self, settings), settings, self.kv_mode)
        if self.sizes is not None and max(self.sizes) > edges:
            raise BadRequest(f"params.sizes: {max(self.sizes)} is above the graph's {edges} edges")

    def request(self, settings: Settings) -> dict[str, Any]:
        return _request(self, settings)


@dataclass(frozen=True)
class RelationSpec:
    relation: str
    model: str | None = None
    n: int = 10
    method: str = REFINE_METHOD
    ablation: str = "patch"
    top_n: int | None = None
    k: int = 10
    known_k: int | None = None
    filter_test: bool = False
    session: str | None = None

    def check(self, settings: Settings) -> None:
        """An unknown relation or a circuit larger than the graph is a bad request now, not a
        failed job later."""
        check_relation_name(self.relation, "params.relation")
        if not RELATION_N_MIN <= self.n <= RELATION_N_MAX:
            raise BadRequest(f"n must be between {RELATION_N_MIN} and {RELATION_N_MAX}")
        if self.top_n is not None and self.top_n > (edges := n_edges(_model(self, settings), settings)):
            raise BadRequest(f"params.top_n is {self.top_n}; the graph has {edges} edges")

    def request(self, settings: Settings) -> dict[str, Any]:
        exclude = () if self.filter_test else ("filter_test",)  # ids of runs without it stay as they were
        return _request(self, settings, exclude=exclude)


@dataclass(frozen=True)
class NeuronsSpec:
    """Knowledge neurons of ``prompt`` -> ``target`` (and of its paraphrases)."""

    prompt: str
    target: str
    model: str | None = None
    steps: int = 20
    path: str = "joint"
    threshold: float = 0.2
    share: float = 0.5
    paraphrases: list[str] = field(default_factory=list)
    relation: str | None = None
    subject: str | None = None
    top_k: int = 20
    with_circuit: bool = False
    circuit_top_n: int | None = None
    session: str | None = None

    def check(self, settings: Settings) -> None:
        check_prompts(self, settings)
        if not 1 <= self.steps <= NEURON_STEPS_MAX:
            raise BadRequest(f"steps must be between 1 and {NEURON_STEPS_MAX}")
        check_relation_name(self.relation, subject=self.subject)

    def request(self, settings: Settings) -> dict[str, Any]:
        return _request(self, settings, method="ig")


DEFAULT_PHENOMENA = ("det_noun", "subj_verb")


@dataclass(frozen=True)
class NeuronsCompareSpec:
    """Niu et al.'s comparison: KN localisation and edits on facts vs syntax minimal pairs."""

    model: str | None = None
    steps: int = 20
    path: str = "joint"
    threshold: float = 0.2
    share: float = 0.5
    n_facts: int = 20
    n_syntax: int = 20
    max_prompts: int = 3
    relations: list[str] | None = None
    phenomena: list[str] = field(default_factory=lambda: list(DEFAULT_PHENOMENA))
    session: str | None = None

    def check(self, settings: Settings) -> None:
        if self.n_facts + self.n_syntax == 0:
            raise BadRequest("n_facts and n_syntax are both 0: nothing to compare")
        if not 1 <= self.steps <= NEURON_STEPS_MAX:
            raise BadRequest(f"steps must be between 1 and {NEURON_STEPS_MAX}")
        for i, name in enumerate(self.relations or []):
            check_relation_name(name, f"relations[{i}]")

    def request(self, settings: Settings) -> dict[str, Any]:
        return _request(self, settings, method="ig")


@dataclass(frozen=True)
class NeuronEditSpec:
    """Suppress (zero) or enhance (double) neurons; before/after on the prompt and its neighbours."""

    prompt: str
    target: str
    neurons: list[str]
    model: str | None = None
    mode: str = "suppress"
    positions: str = "last"
    relation: str | None = None
    subject: str | None = None
    paraphrases: list[str] = field(default_factory=list)
    unrelated: list[str] | None = None
    foil: str | None = None
    session: str | None = None

    def check(self, settings: Settings) -> None:
        check_prompt(self.prompt, settings)
        for i, prompt in enumerate([*self.paraphrases, *(self.unrelated or [])]):
            check_prompt(prompt, settings, f"prompts[{i}]")
        if self.relation:
            check_relation_name(self.relation, subject=self.subject)

    def request(self, settings: Settings) -> dict[str, Any]:
        return _request(self, settings)


#: Mask training: steps per run, prompts per task, evaluation interval (engine: MaskParams.check).
MASK_STEPS_MAX = 20_000
MASK_TASK_N_MIN, MASK_TASK_N_MAX = 1, 64
MASK_EDIT_STEPS_MAX = 200
#: Masks compared in one overlap request.
MASK_OVERLAP_MAX = 16
MASK_LOSSES = ("kl", "ce")
#: Locality prompts of one mask edit.
MASK_LOCALITY_MAX = 32


def check_mask_family(model_id: str, settings: Settings) -> None:
    """Parameter masks run on Llama-family models (registry facts; the engine checks again)."""
    from kcircuits.lm.registry import get_spec

    family = get_spec(model_id, settings).arch.family
    if family != "llama":
        raise BadRequest(f"model {model_id!r}: parameter masks support Llama-family models (SmolLM2), "
                         f"not the {family!r} family")


@dataclass(frozen=True)
class MaskTrainSpec:
    """A parameter-level mask (Ge, Rudzicz, Zhu; METHODS 7) of one task at a target density: the
    task is an LRE ``relation`` or a syntax ``phenomenon`` (exactly one), ``n`` of its prompts."""

    model: str | None = None
    relation: str | None = None
    phenomenon: str | None = None
    n: int = 16
    density: float = 0.05
    steps: int = 200
    lr: float = 0.1
    lam: float = 10.0
    loss: str = "kl"
    seed: int = 0
    eval_every: int = 10
    warm_start: str = "taylor"

    def check(self, settings: Settings) -> None:
        if (self.relation is None) == (self.phenomenon is None):
            raise BadRequest("give exactly one task: relation (LRE) or phenomenon (syntax)")
        check_relation_name(self.relation)
        if self.phenomenon is not None:
            from kcircuits.circuits.neurons import syntax_items

            known = sorted({it.get("phenomenon") for it in syntax_items()})
            if self.phenomenon not in known:
                raise BadRequest(f"phenomenon: unknown {self.phenomenon[:80]!r}; known: {known}")
        if not MASK_TASK_N_MIN <= self.n <= MASK_TASK_N_MAX:
            raise BadRequest(f"n must be between {MASK_TASK_N_MIN} and {MASK_TASK_N_MAX}")
        if not 0.0 < self.density < 1.0:
            raise BadRequest("density (the target share of parameters) must lie in (0, 1)")
        if not 1 <= self.steps <= MASK_STEPS_MAX:
            raise BadRequest(f"steps must be between 1 and {MASK_STEPS_MAX}")
        if not 1 <= self.eval_every <= self.steps:
            raise BadRequest("eval_every must be between 1 and steps")
        self.params().check()
        check_mask_family(_model(self, settings), settings)

    def params(self):
        """The engine's :class:`~kcircuits.circuits.masks.MaskParams`."""
        from kcircuits.circuits.masks import MaskParams

        return MaskParams(target=self.density, steps=self.steps, lr=self.lr, lam=self.lam, loss=self.loss,
                          seed=self.seed, warm_start=self.warm_start)

    def request(self, settings: Settings) -> dict[str, Any]:
        return _request(self, settings, method="mask")


@dataclass(frozen=True)
class MaskEditSpec:
    """Fine-tune ``prompt`` -> ``target`` four ways: inside the stored mask ``mask_id``, in its
    complement, in a random mask of the same density (``seed``), and in the whole model; the same
    ``steps`` and ``lr`` for all. Locality: top-1 unchanged on ``locality_prompts`` (default: the
    mask's task prompts and fixed unrelated prompts)."""

    mask_id: str
    prompt: str
    target: str
    model: str | None = None
    steps: int = 10
    lr: float = 1e-3
    seed: int = 0
    locality_prompts: list[str] | None = None

    def check(self, settings: Settings) -> None:
        check_prompts(self, settings)
        if not self.target or not self.target.strip():
            raise BadRequest("target is empty")
        if not 1 <= self.steps <= MASK_EDIT_STEPS_MAX:
            raise BadRequest(f"steps must be between 1 and {MASK_EDIT_STEPS_MAX}")
        if not 0 < self.lr <= 1:
            raise BadRequest("lr must lie in (0, 1]")
        if self.locality_prompts is not None and len(self.locality_prompts) > MASK_LOCALITY_MAX:
            raise BadRequest(f"at most {MASK_LOCALITY_MAX} locality_prompts")
        check_mask_family(_model(self, settings), settings)

    def request(self, settings: Settings) -> dict[str, Any]:
        return _request(self, settings, method="mask-edit")


@dataclass(frozen=True)
class MaskOverlapSpec:
    """The overlap matrix |Ci ∩ Cj| / |Ci| of stored masks (same model and layout), beside random
    masks of the same densities (``seed``)."""

    mask_ids: list[str]
    model: str | None = None
    seed: int = 0

    def check(self, settings: Settings) -> None:
        if not 2 <= len(self.mask_ids) <= MASK_OVERLAP_MAX:
            raise BadRequest(f"mask_ids: give between 2 and {MASK_OVERLAP_MAX} masks")
        if len(set(self.mask_ids)) != len(self.mask_ids):
            raise BadRequest("mask_ids: each mask once")
        check_mask_family(_model(self, settings), settings)


@dataclass(frozen=True)
class MaskComponentsSpec:
    """A stored mask's per-head / per-MLP densities marked by a stored edge circuit's nodes."""

    mask_id: str
    circuit_id: str

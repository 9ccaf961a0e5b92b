"""Typed response models of every route: jobs, edit sessions, graph sizes, health, and the results
of each capability (lens, circuit, sweep, relation row, knowledge neurons, neuron edits, edit
comparisons), with what the store adds to a stored result (``id``, ``provenance``...). Shared
pieces of the circuit result live in :mod:`kcircuits.services.wire` (the services check them).

Optional fields (``= None``) are keys a payload may leave out; routes returning models with such
fields set ``response_model_exclude_unset`` so the wire shows exactly the keys the service made."""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Discriminator, Field, RootModel, Tag

from kcircuits.editing.analysis import EditAnalysis
from kcircuits.services.wire import HeadRoleOut, MaskEditOut, MaskOut, RolesOut, TopTokenOut

T = TypeVar("T")


class _NeverNull:
    """Schema marker of a key that may be absent but is never null (the schema drops the null branch)."""

    def __get_pydantic_json_schema__(self, core_schema: Any, handler: Any) -> dict[str, Any]:
        schema = handler(core_schema)
        branches = [b for b in schema.get("anyOf", []) if b != {"type": "null"}]
        if len(branches) == 1:
            schema = {**{k: v for k, v in schema.items() if k != "anyOf"}, **branches[0]}
        return schema


#: A key that may be left out (``= None`` as its default) but is never null when present.
Maybe = Annotated[T | None, _NeverNull()]

# ---- jobs, sessions, health -----------------------------------------------------------------


class ErrorOut(BaseModel):
    type: str
    message: str


class GraphStatsOut(BaseModel):
    """Node and edge counts of a model's computation graph."""

    model: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    kv_mode: str
    total_nodes: int
    total_edges: int
    n_senders: int
    n_receivers: int
    input_convention: str


class HealthOut(BaseModel):
    status: Literal["ok"]


class ReadyOut(BaseModel):
    status: Literal["ready"]
    model: str


class LimitsOut(BaseModel):
    max_prompt_chars: int
    max_prompt_tokens: int
    max_top_k: int
    max_body_bytes: int
    queue_size: int


class InfoOut(BaseModel):
    """Model, device, limits and version."""

    version: str
    default_model: str
    loaded_models: list[str]
    ready_models: list[str]
    device: str
    cuda_available: bool
    dtype: str
    limits: LimitsOut
    queue_depth: int


class ArchFactsOut(BaseModel):
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_mlp: int
    d_vocab: int
    family: str


class EditDefaultsOut(BaseModel):
    rome_layer: int
    rome_clamp: float
    ft_layer: int


class ModelOut(BaseModel):
    """A registry entry (no operator paths) and whether it is loaded."""

    id: str
    source: str
    arch: ArchFactsOut
    hub_name: str | None
    description: str
    licence: str
    prepend_bos: bool
    edit: EditDefaultsOut
    loaded: bool


class ModelsOut(BaseModel):
    default: str
    models: list[ModelOut]


class RelationOut(BaseModel):
    """An LRE relation's summary and its properties."""

    name: str
    category: str
    template: str
    n_samples: int
    relation_type: str
    domain_name: str
    range_name: str
    symmetric: bool


class RelationListOut(BaseModel):
    items: list[RelationOut]


class SyntaxPairOut(BaseModel):
    """One committed syntax minimal pair."""

    id: int
    phenomenon: Literal["det_noun", "subj_verb"]
    group: str
    number: str
    prompt: str
    target: str
    foil: str


class SyntaxPairsOut(BaseModel):
    total: int
    items: list[SyntaxPairOut]


# ---- store ----------------------------------------------------------------------------------


class ProvenanceOut(BaseModel):
    """How a stored result was made: the content id's input (schema version, kind, model, revision,
    libraries, request, dtype, device class) plus method, params, prompt, code version and time."""

    schema_version: int
    kind: str
    model: str
    revision: str
    libraries: dict[str, str]
    request: dict[str, Any]
    dtype: str
    device_class: str
    method: str | None = None
    params: Maybe[dict[str, Any]] = None
    prompt: str | None = None
    code_version: Maybe[str] = None
    created_at: Maybe[str] = None


class StoredOut(BaseModel):
    """Keys the store adds to a result (absent on results that were not stored)."""

    id: Maybe[str] = None
    provenance: Maybe[ProvenanceOut] = None
    saved: Maybe[bool] = None
    title: str | None = None
    cached: Maybe[bool] = Field(None, description="true when the store answered without computing")


class ResultSummaryOut(BaseModel):
    id: str
    kind: str
    model: str | None
    prompt: str | None
    method: str | None
    created_at: str
    saved: bool
    title: str | None


class ResultListOut(BaseModel):
    items: list[ResultSummaryOut]
    total: int


class ResultStatsOut(BaseModel):
    total: int
    computed_results: int = Field(description="results computed by this process")
    cache_hits: int = Field(description="store hits since start")


class SavedOut(BaseModel):
    id: str
    saved: Literal[True]
    title: str | None


class ViewCreatedOut(BaseModel):
    short: str
    url: str


class ViewOut(BaseModel):
    result_id: str
    state: dict[str, Any]


# ---- logit lens -----------------------------------------------------------------------------


class TokenProbOut(BaseModel):
    token: str
    id: int
    prob: float


class LensPositionOut(BaseModel):
    top: list[TokenProbOut]
    kl: float | None = Field(description="KL(final || this layer) when requested, else null")


class LensLayerOut(BaseModel):
    index: int
    label: str
    positions: list[LensPositionOut]


class SubjectOut(BaseModel):
    text: str
    positions: list[int]
    auto: Maybe[bool] = None


class LensTargetOut(BaseModel):
    """The target's [L + 1] rank (1-based) and probability at the last position, and at the subject's."""

    text: str
    token: str
    id: int
    rank: list[int]
    prob: list[float]
    subject_rank: list[int] | None = Field(description="null without a subject")
    subject_prob: list[float] | None


class LensOut(StoredOut):
    """Logit lens: top-k per layer boundary (L + 1 rows) and position; the target's curves."""

    kind: Maybe[Literal["lens"]] = None
    model: str
    revision: str
    prompt: str
    tokens: list[str]
    token_ids: list[int]
    n_layers: int
    layers: list[LensLayerOut]
    prediction: TokenProbOut
    target: LensTargetOut | None
    subject: SubjectOut | None
    ln_mode: Literal["recompute", "cached"]
    session: str | None


class ScoredTokenOut(BaseModel):
    token: str
    id: int
    score: float


class ProjectOut(BaseModel):
    """Tokens a head's or MLP's output promotes and suppresses at a position."""

    node: str
    kind: Literal["head", "mlp"]
    layer: int
    head: int | None
    position: int
    promoted: list[ScoredTokenOut]
    suppressed: list[ScoredTokenOut]


class SignificanceOut(BaseModel):
    dla: float | None
    attribution: float | None


class HeadScoresOut(BaseModel):
    subject_attention: float | None
    relation_attention: float | None
    subject_dla_share: float | None
    relation_dla_share: float | None
    dla: float | None
    attribution: float | None
    target_rank: int | None
    subject_rank: int | None


class HeadDetailOut(BaseModel):
    """A head's panel: its attention pattern [q][k] over ``tokens``, promoted/suppressed tokens at the
    last position, its direct logit attribution by source position and role scores (null without a target)."""

    node: str
    kind: Literal["head"]
    layer: int
    head: int
    tokens: list[str]
    pattern: list[list[float]]
    subject_positions: list[int]
    relation_positions: list[int]
    promoted: list[ScoredTokenOut]
    suppressed: list[ScoredTokenOut]
    dla_by_source: list[float] | None
    role: Literal["mover", "relation", "mixture"] | None
    scores: HeadScoresOut
    significant: bool | None
    significance: SignificanceOut | None


class MlpDetailOut(ProjectOut):
    """An MLP's panel: what its output promotes and suppresses at the last position."""

    kind: Literal["mlp"]


class EndpointDetailOut(BaseModel):
    """The graph's two ends: just the kind."""

    node: Literal["input", "logits"]
    kind: Literal["input", "logits"]


class NodeDetailOut(RootModel[Annotated[HeadDetailOut | MlpDetailOut | EndpointDetailOut, Field(discriminator="kind")]]):
    """The node panel's content, by the node's kind."""


# ---- circuits -------------------------------------------------------------------------------


class CircuitGraphOut(BaseModel):
    n_layers: int
    n_heads: int
    n_kv_heads: int
    kv_mode: str
    total_nodes: int
    total_edges: int
    input_convention: str
    shared_receivers: Maybe[dict[str, list[str]]] = Field(
        None, description="receiver id -> the heads it feeds, for grouped k/v receivers (stored results "
                          "from before this field lack it)")


class CircuitNodeOut(BaseModel):
    id: str
    kind: Literal["input", "head", "mlp", "logits"]
    layer: int | None
    head: int | None
    role: Literal["mover", "relation", "mixture"] | None
    score: float
    in_circuit: bool
    top_token: TopTokenOut | None = None


class CircuitEdgeOut(BaseModel):
    source: str
    target: str
    slot: str
    receiver: str
    score: float
    in_circuit: bool
    curve_points: Maybe[list[int]] = Field(None, description="indices of the curve points whose circuits hold it")


class HitAt10Out(BaseModel):
    full: float
    circuit: float
    random: float | None


class TargetRankOut(BaseModel):
    full: int
    circuit: int
    empty: int
    random: list[int]


class CircuitMetricsOut(BaseModel):
    edges: int
    nodes: int
    edge_fraction: float
    node_fraction: float
    faithfulness: float | None
    faithfulness_undefined: str | None = Field(description="why faithfulness is undefined, else null")
    metric_full: float | None
    metric_circuit: float | None
    metric_empty: float | None
    hit_at_10: HitAt10Out
    target_rank: TargetRankOut
    harmful_share: float | None


class RandomCircuitsOut(BaseModel):
    edges: list[int]
    faithfulness: list[float | None]


class CurveRandomOut(RandomCircuitsOut):
    faithfulness_mean: float | None
    hit_at_10: float | None


class CurvePointOut(BaseModel):
    """A point of the faithfulness curve, measured by patched runs, with random circuits of its size."""

    edges: int
    size: int | None
    edge_fraction: float
    requested: bool
    faithfulness: float | None
    metric: float
    hit_at_10: float
    target_rank: int
    harmful_share: float | None
    random: CurveRandomOut


class CurveSummaryOut(BaseModel):
    cpr: float | None
    cmd: float | None
    cpr_normalised: float | None
    cmd_normalised: float | None
    faithfulness_undefined: str | None


class CurveOut(CurveSummaryOut):
    points: list[CurvePointOut]


class CounterfactualCandidateOut(BaseModel):
    """One automatic counterfactual: same relation and template, another subject, its answer the foil."""

    prompt: str
    subject: str
    relation: str | None
    foil: str
    foil_id: int
    foil_prob: float
    target_prob: float
    margin: float
    kind: str
    own_object: str | None
    why: str


class CounterfactualOut(BaseModel):
    source: str
    relation: str | None
    subject: str | None
    reason: str
    chosen: list[CounterfactualCandidateOut]
    candidates: list[CounterfactualCandidateOut]


class CircuitOut(StoredOut):
    """A circuit: nodes, scored edges (the top ``max_edges_returned`` and every circuit edge),
    faithfulness and Hit@10, the faithfulness curve, head roles."""

    schema_version: int
    kind: Literal["circuit"]
    model: str
    revision: str
    prompt: str
    target: str
    target_id: int
    tokens: list[str]
    subject: SubjectOut | None
    method: str
    ablation: str
    metric: str
    corrupt_prompt: str | None
    corrupt_prompts: list[str]
    counterfactual: CounterfactualOut | None
    params: dict[str, Any] = Field(description="the method's settings and notes (selection, foil, ...)")
    graph: CircuitGraphOut
    nodes: list[CircuitNodeOut]
    edges: list[CircuitEdgeOut]
    metrics: CircuitMetricsOut
    random: RandomCircuitsOut
    curve: CurveOut
    heads: dict[str, HeadRoleOut]
    roles: Maybe[RolesOut] = None
    timings: dict[str, float]
    session: str | None = None


class SweepRowOut(BaseModel):
    top_n: int
    edges: int
    edge_fraction: float
    faithfulness: float | None
    hit_at_10: float
    target_rank: int
    random_faithfulness: float | None
    random_hit_at_10: float | None
    harmful_share: float | None


class SweepOut(StoredOut):
    """Circuit size vs faithfulness and Hit@10 (a ``sweep`` job)."""

    schema_version: int
    kind: Literal["sweep"]
    model: str
    revision: str
    prompt: str
    target: str
    method: str
    ablation: str
    metric: str
    corrupt_prompt: str | None
    graph: CircuitGraphOut
    params: dict[str, Any]
    rows: list[SweepRowOut]
    curve: CurveSummaryOut
    timings: dict[str, float]


class HitSplitOut(BaseModel):
    n: int
    original: float | None
    circuit: float | None
    random: float | None


class RelationRowOut(StoredOut):
    """One LRE relation's circuit and Hit@k on validation and test (a row of the paper's Table 1)."""

    kind: Literal["relation_row"]
    relation: str
    category: str
    template: str
    model: str
    revision: str
    method: str
    ablation: str
    metric: str
    k: int
    top_n: int
    n_samples: int
    n_validation_split: int
    n_validation_known: int
    known_k: int
    n_validation: int
    n_test: int
    dropped_no_swap: int
    filter_test: bool
    edges: int
    nodes: int
    edge_fraction: float
    total_edges: int
    random_edges: list[int]
    validation: HitSplitOut
    test: HitSplitOut
    circuit_edges: list[str]
    timings: dict[str, float]
    params: dict[str, Any]


# ---- knowledge neurons ----------------------------------------------------------------------


class ConcentrationOut(BaseModel):
    top_k: int
    top_k_share: float | None
    effective_neurons: float | None


class NeuronRefOut(BaseModel):
    id: str = Field(description='"L<layer>.N<index>"')
    layer: int
    index: int
    attr: float
    share: Maybe[float] = None
    promotes: Maybe[list[str]] = None


class NeuronPromptOut(BaseModel):
    """One prompt's attribution: the answer's prob and rank, IG completeness, concentration."""

    prompt: str
    target: str
    target_id: int
    prob: float
    rank: int
    top1: str
    baseline_prob: float | list[float]
    attr_sum: float
    max_attr: float
    completeness_gap: float
    layer_attr: list[float]
    n_candidates: int
    concentration: ConcentrationOut
    top: list[NeuronRefOut]


class ChartPointOut(BaseModel):
    layer: int
    index: int
    attr: float


class BesideMetricsOut(BaseModel):
    edges: int
    nodes: int
    faithfulness: float | None


class BesideMlpOut(BaseModel):
    node: str
    layer: int
    in_circuit: bool
    score: float | None
    kns: list[str]
    kn_attr: float


class NodeEffectShareOut(BaseModel):
    """Share of the circuit's |score| mass by node kind."""

    head: float | None
    mlp: float | None


class EffectShareOut(NodeEffectShareOut):
    input: float | None


class BesideCircuitOut(BaseModel):
    """The knowledge neurons set beside the prompt's circuit."""

    method: str
    metrics: BesideMetricsOut
    mlps: list[BesideMlpOut]
    n_kns: int
    kns_in_circuit_mlps: int
    kn_share_in_circuit: float | None
    circuit_mlps: int
    circuit_mlps_with_kns: int
    effect_share_edges: EffectShareOut
    effect_share_nodes: NodeEffectShareOut


class NeuronsParamsOut(BaseModel):
    """Attribution (IG) and knowledge-neuron filter settings of a ``neurons`` result."""

    steps: int
    path: Literal["joint", "layer"]
    batch_size: int
    threshold: float
    share: float
    baseline: str
    position: str
    top_k: int
    min_prompts: int


class NeuronsOut(StoredOut):
    """Knowledge neurons of a fact (a ``neurons`` job)."""

    kind: Literal["neurons"]
    model: str
    prompt: str
    target: str
    relation: str | None
    subject: str | None
    session: str | None
    n_layers: int
    d_mlp: int
    params: NeuronsParamsOut
    prompts: list[NeuronPromptOut]
    neurons: list[NeuronRefOut]
    top: list[NeuronRefOut]
    chart: list[ChartPointOut]
    layer_histogram: list[int]
    concentration: ConcentrationOut
    circuit: Maybe[BesideCircuitOut] = None


class EditRatesOut(BaseModel):
    n: int
    top1_flip_rate: float | None
    pair_flip_rate: float | None
    mean_relative_change: float | None


class LocalisationSummaryOut(BaseModel):
    n_groups: int
    mean_kns: float | None
    with_kns: float | None
    layer_histogram: list[int]
    mean_kn_layer: float | None
    top10_share: float | None
    effective_neurons: float | None
    suppress: EditRatesOut
    enhance: EditRatesOut


class GroupEditOut(BaseModel):
    prob_before: float
    prob_after: float
    top1_flipped: bool
    pair_flipped: bool | None
    relative_change: float | None


class GroupEditsOut(BaseModel):
    suppress: GroupEditOut
    enhance: GroupEditOut


class LocalisationRowOut(BaseModel):
    name: str
    kind: Literal["fact", "syntax"]
    phenomenon: str | None
    prompts: list[str]
    target: str
    foil: str | None
    n_neurons: int
    neurons: list[str]
    layer_histogram: list[int]
    concentration: ConcentrationOut
    edits: GroupEditsOut


class NeuronsCompareOut(StoredOut):
    """KN localisation and edits on facts vs syntax (a ``neurons-compare`` job)."""

    kind: Literal["neurons_compare"]
    model: str
    n_layers: int
    params: dict[str, Any]
    summary: dict[str, LocalisationSummaryOut]
    rows: list[LocalisationRowOut]


class NeuronMeasureOut(BaseModel):
    top1_id: int
    top1: str
    top1_prob: float
    prob: Maybe[float] = None
    rank: Maybe[int] = None


class NeuronEditRowOut(BaseModel):
    prompt: str
    target: str | None
    kind: Literal["prompt", "paraphrase", "symmetric", "other_fact", "unrelated"]
    before: NeuronMeasureOut
    after: NeuronMeasureOut
    top1_flipped: bool
    kl: float
    foil: Maybe[str] = None
    pair_flipped: Maybe[bool] = None


class NeuronEditSummaryOut(BaseModel):
    n: int
    top1_flip_rate: float
    mean_kl: float
    mean_prob_before: Maybe[float] = None
    mean_prob_after: Maybe[float] = None


class NeuronEditOut(StoredOut):
    """Suppressed or enhanced neurons: before/after on the prompt and its neighbours."""

    kind: Literal["neuron_edit"]
    model: str
    target: str
    relation: str | None
    subject: str | None
    session: str | None
    mode: Literal["suppress", "enhance"]
    positions: Literal["last", "all"]
    neurons: list[str]
    prompt: NeuronEditRowOut
    prob_change: float
    relative_change: float | None
    rows: list[NeuronEditRowOut]
    summary: dict[str, NeuronEditSummaryOut | None]


# ---- knowledge editing ----------------------------------------------------------------------


class EditCreatedOut(BaseModel):
    session_id: str
    job_id: str


class EditClosedOut(BaseModel):
    session_id: str
    closed: bool


class EfficacyOut(BaseModel):
    success: bool
    new_prob: float
    old_prob: float
    new_rank: int
    old_rank: int
    post_top: str


class GeneralisationItemOut(BaseModel):
    prompt: str
    success: bool
    new_rank: int
    new_prob: float
    pre_new_rank: int
    post_top: str


class GeneralisationOut(BaseModel):
    rate: float | None
    items: list[GeneralisationItemOut]
    relation: str | None
    reason: str | None = Field(description="why there are no items, else null")


class TopOut(BaseModel):
    token: str
    prob: float


class LocalityItemOut(BaseModel):
    prompt: str
    kind: str
    subject: str | None
    success: bool
    pre: TopOut
    post: TopOut


class LocalityOut(BaseModel):
    rate: float | None
    items: list[LocalityItemOut]


class PrePostOut(BaseModel):
    pre: float
    post: float


class ProbShiftOut(BaseModel):
    old: PrePostOut
    new: PrePostOut


class EvaluationOut(BaseModel):
    """Efficacy, generalisation, locality and the targets' probability shift of an edit."""

    efficacy: EfficacyOut
    generalisation: GeneralisationOut
    locality: LocalityOut
    prob_shift: ProbShiftOut


class EditSessionOut(BaseModel):
    """An edit session: its request, status and (when done) evaluation and the method's summary."""

    session_id: str
    model: str
    method: Literal["rome", "ft-m", "ft-l"]
    prompt: str
    subject: str
    target: str
    old_target: str | None
    layer: int | None
    status: Literal["pending", "running", "ready", "failed", "closed"]
    job_id: str | None
    evaluation: EvaluationOut | None
    covariance: str | None
    edit: dict[str, Any] | None = Field(description="the method's summary (layer, params, norms, timings)")
    error: dict[str, str] | None
    created_at: float
    expires_at: float


class EditListOut(BaseModel):
    items: list[EditSessionOut]


class CurveRankProbOut(BaseModel):
    rank: list[int]
    prob: list[float]


class PrePostCurveOut(BaseModel):
    pre: CurveRankProbOut
    post: CurveRankProbOut


class TargetCurvesOut(BaseModel):
    """The new and the old target's lens curves, before and after the edit."""

    new: PrePostCurveOut
    old: PrePostCurveOut


class EditLensOut(BaseModel):
    pre: LensOut
    post: LensOut
    curves: TargetCurvesOut


class SideStatusOut(BaseModel):
    """One side of the circuit comparison: usable for a diff, or why not (and a size that would be)."""

    usable: bool
    reason: str | None
    faithfulness: float | None
    edges: int
    grow_top_n: int | None


class ReweightedEdgeOut(BaseModel):
    key: str
    pre: float
    post: float
    delta: float
    rel: float


class EdgeDiffOut(BaseModel):
    added: list[str]
    removed: list[str]
    reweighted: list[ReweightedEdgeOut]
    n_added: int
    n_removed: int
    n_reweighted: int
    shared: int
    score_scale: float
    reweight_threshold: float
    rule: str


class EditCounterfactualOut(BaseModel):
    ablation: str
    corrupt_prompt: str | None
    foil: str | None
    source: str | None
    note: str | None


class SidesOut(BaseModel):
    pre: SideStatusOut
    post: SideStatusOut


class EditCircuitsOut(BaseModel):
    """The fair circuit comparison: both sides, their status, and the edge diff when comparable."""

    pre: CircuitOut | None
    post: CircuitOut | None
    targets: PrePostTargetsOut
    counterfactual: EditCounterfactualOut
    sides: SidesOut
    same_counterfactual: bool | None
    comparable: bool
    reason: str | None
    diff: EdgeDiffOut | None
    size_rule: Maybe[SizeRuleOut] = None


class SizeAtDefaultOut(BaseModel):
    edges: int
    faithfulness: float | None


class GrownFromOut(BaseModel):
    pre: SizeAtDefaultOut | None
    post: SizeAtDefaultOut | None


class SizeRuleOut(BaseModel):
    """How both sides' size was chosen: ``used`` is set when an unfaithful side moved both sides
    to the first curve size where both hold; ``grown_from`` is then the two sides at the default size."""

    rule: str
    requested: int | None
    used: int | None
    grown_from: GrownFromOut | None


class PrePostTargetsOut(BaseModel):
    pre: str | None
    post: str


class DlaChangeOut(BaseModel):
    pre: float
    post: float
    delta: float


class TopPrePostOut(BaseModel):
    pre: list[ScoredTokenOut]
    post: list[ScoredTokenOut]


Membership = Literal["entered", "left", "kept", "absent"]


class HeadMarksOut(BaseModel):
    new: Membership
    old: Maybe[Membership] = None
    subject_entered: list[str]
    subject_left: list[str]


class TargetDlaOut(BaseModel):
    """The head's direct logit attribution to each target ("old" absent when unknown)."""

    new: DlaChangeOut
    old: Maybe[DlaChangeOut] = None


class HeadDiffRowOut(BaseModel):
    """One head's output change at the last position (pre -> post)."""

    node: str
    layer: int
    head: int
    change: float
    pre_norm: float
    rel_change: float
    changed: bool
    dla: TargetDlaOut
    subject_attention: PrePostOut
    top: TopPrePostOut
    marks: HeadMarksOut
    mover: bool


class HeadDiffOut(BaseModel):
    rows: list[HeadDiffRowOut]
    n_changed: int
    n_unchanged: int
    movers: list[str]
    rule: dict[str, str]


class EditComparisonOut(StoredOut):
    """Pre vs post an edit: lens curves, the fair circuit comparison, every head's output diff and
    the paper's findings on this edit."""

    kind: Literal["edit_comparison"]
    session_id: str
    method: str
    top_n: int | None
    edit_method: str
    thresholds: dict[str, float]
    lens: EditLensOut
    circuit: EditCircuitsOut | None
    heads: HeadDiffOut
    analysis: EditAnalysis


# ---- any result -----------------------------------------------------------------------------


RESULT_KINDS = ("lens", "circuit", "sweep", "relation_row", "neurons", "neurons_compare", "neuron_edit",
                "edit_comparison", "mask", "mask_edit")


class OtherResultOut(BaseModel):
    """A result of a kind not modelled here (its keys as the service made them)."""

    model_config = ConfigDict(extra="allow")

    kind: str = Field(json_schema_extra={"not": {"enum": list(RESULT_KINDS)}})


def _result_tag(data: Any) -> str:
    get = data.get if isinstance(data, dict) else lambda key: getattr(data, key, None)
    kind = get("kind")
    if kind is None and get("session_id") is not None:
        return "edit_session"
    return kind if kind in RESULT_KINDS else "other"


#: A stored or job result, by its ``kind`` (an edit job's result is its session, which has none).
ResultOut = Annotated[
    Annotated[LensOut, Tag("lens")] | Annotated[CircuitOut, Tag("circuit")] | Annotated[SweepOut, Tag("sweep")]
    | Annotated[RelationRowOut, Tag("relation_row")] | Annotated[NeuronsOut, Tag("neurons")]
    | Annotated[NeuronsCompareOut, Tag("neurons_compare")] | Annotated[NeuronEditOut, Tag("neuron_edit")]
    | Annotated[EditComparisonOut, Tag("edit_comparison")] | Annotated[EditSessionOut, Tag("edit_session")]
    | Annotated[MaskOut, Tag("mask")] | Annotated[MaskEditOut, Tag("mask_edit")]
    | Annotated[OtherResultOut, Tag("other")],
    Discriminator(_result_tag)]


class AnyResultOut(RootModel[ResultOut]):
    """One stored result of any kind, with ``id`` and ``provenance``."""


JobStatus = Literal["queued", "running", "cancelling", "succeeded", "failed", "cancelled", "interrupted"]


class JobOut(BaseModel):
    """A job's public state; ``result`` only on GET of a live job, ``result_id`` on a stored one."""

    id: str
    kind: str
    params: dict[str, Any]
    status: JobStatus
    progress: float
    message: str | None
    error: ErrorOut | None
    created_at: float
    finished_at: float | None
    result: ResultOut | None = None
    result_id: str | None = None


class JobListOut(BaseModel):
    items: list[JobOut]


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON schema with its ``$defs`` substituted (for schemas placed outside components)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if set(node) >= {"$ref"} and node["$ref"].startswith("#/$defs/"):
                rest = {k: v for k, v in node.items() if k != "$ref"}
                return {**inline(defs[node["$ref"].rsplit("/", 1)[1]]), **rest}
            return {k: inline(v) for k, v in node.items()}
        return [inline(v) for v in node] if isinstance(node, list) else node

    return inline(schema)


class JobEventDataOut(BaseModel):
    """The JSON of a job event's ``data:`` line: the job's state after the event."""

    seq: int
    status: JobStatus
    progress: float
    message: str | None
    done: Maybe[int] = Field(None, description="progress events: steps done of ``total``")
    total: Maybe[int] = None
    error: Maybe[ErrorOut] = Field(None, description="the failed event: why")


class JobEventOut(BaseModel):
    """One server-sent event of a job's stream: ``event: <name>`` and ``data: <JobEventDataOut JSON>``
    (keep-alive pings are SSE comments, not events)."""

    event: Literal["queued", "running", "progress", "cancelling", "succeeded", "failed", "cancelled"]
    data: str = Field(json_schema_extra={
        "contentMediaType": "application/json",
        "contentSchema": inline_schema(JobEventDataOut)})

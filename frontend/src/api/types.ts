/** Wire types of the kcircuits HTTP API (snake_case, as the server sends them). Keep in step with docs/api. */
import type { components, operations } from "./schema";

/** Generated from the committed OpenAPI schema (src/api/openapi.json; `npm run gen:api`). */
type Schemas = components["schemas"];
export type LensRequest = Schemas["LensIn"];
export type ProjectRequest = Schemas["ProjectIn"];
export type CircuitRequest = Schemas["CircuitIn"];
export type NodeDetailRequest = Schemas["DetailIn"];
export type EditRequest = Schemas["EditIn"];
/** POST /api/circuits methods, plus ACDC (run as an "acdc" job). */
export type Method = NonNullable<CircuitRequest["method"]> | "acdc";
export type Ablation = NonNullable<CircuitRequest["ablation"]>;
export type LnMode = NonNullable<LensRequest["ln_mode"]>;
export type EditMethod = NonNullable<EditRequest["method"]>;
type ExportQuery = NonNullable<operations["export_result_api_results__result_id__export_get"]["parameters"]["query"]>;
export type ExportFormat = NonNullable<ExportQuery["format"]>;

export interface ApiErrorBody {
  error: { type: string; message: string };
}

// ---- health / models ---------------------------------------------------------------------------
export interface ArchFacts {
  n_layers: number;
  n_heads: number;
  n_kv_heads: number;
  d_model: number;
  d_mlp: number;
  d_vocab: number;
  family: "gpt2" | "llama" | string;
}
export interface ModelInfo {
  id: string;
  source?: string;
  arch: ArchFacts;
  description?: string;
  licence?: string;
  loaded: boolean;
}
export interface ModelsResponse {
  default: string;
  models: ModelInfo[];
}
export interface InfoResponse {
  version: string;
  default_model: string;
  loaded_models: string[];
  ready_models: string[];
  device: string;
  cuda_available: boolean;
  dtype: string;
  limits: { max_prompt_chars: number; max_prompt_tokens: number; max_top_k: number; max_body_bytes: number; queue_size: number };
  queue_depth: number;
}

// ---- logit lens -------------------------------------------------------------------------------
export interface TokenProb {
  token: string;
  id: number;
  prob: number;
}
export interface LensPosition {
  top: TokenProb[];
  kl?: number | null;
}
export interface LensLayer {
  index: number;
  label: string;
  positions: LensPosition[];
}
export interface SubjectSpan {
  text: string;
  positions: number[];
  auto?: boolean;
}
export interface LensTarget {
  text: string;
  token: string;
  id: number;
  rank: number[];
  prob: number[];
  subject_rank: number[];
  subject_prob: number[];
}
export interface LensResult {
  model: string;
  revision?: string;
  prompt: string;
  tokens: string[];
  token_ids: number[];
  n_layers: number;
  layers: LensLayer[];
  prediction: TokenProb;
  subject: SubjectSpan | null;
  target: LensTarget | null;
  ln_mode?: LnMode;
  session?: string | null;
}

export interface ScoredToken {
  token: string;
  id?: number;
  score: number;
}
export interface ProjectResponse {
  node: string;
  position: number;
  promoted: ScoredToken[];
  suppressed: ScoredToken[];
}

// ---- circuits ---------------------------------------------------------------------------------
export type Metric = "logit_diff" | "logprob" | "prob" | "match_nll" | "kl";
export type NodeKind = "input" | "head" | "mlp" | "logits";
export type Role = "mover" | "relation" | "mixture" | null;
export type Slot = "q" | "k" | "v" | "mlp_in" | "logits";

export interface CircuitNode {
  id: string;
  kind: NodeKind;
  layer: number | null;
  head: number | null;
  role: Role;
  score: number;
  in_circuit: boolean;
  /** top lens token of the node's last-position output (in-circuit heads and MLPs; null or absent otherwise) */
  top_token?: TopToken | null;
}
/** A node's top lens token: its output read through the final norm and the unembedding; logit = its direct logit. */
export interface TopToken {
  token: string;
  id: number;
  logit: number;
}
export interface CircuitEdge {
  source: string;
  target: string;
  slot: Slot | string;
  receiver: string;
  score: number;
  in_circuit: boolean;
}
export interface GraphInfo {
  n_layers: number;
  n_heads: number;
  n_kv_heads: number;
  kv_mode: "grouped" | "ungrouped";
  total_nodes: number;
  total_edges: number;
  input_convention?: "embed" | "resid_pre0";
}
export interface CircuitMetrics {
  edges: number;
  nodes: number;
  edge_fraction: number;
  node_fraction: number;
  faithfulness: number | null;
  /** why faithfulness is undefined (no signal between the full and the empty circuit), else null */
  faithfulness_undefined?: string | null;
  harmful_share?: number | null;
  metric_full?: number | null;
  metric_circuit?: number | null;
  metric_empty?: number | null;
  hit_at_10?: { full: number; circuit: number; random: number } | null;
  target_rank?: { full: number; circuit: number; random: number[] } | null;
}
export interface HeadInfo {
  role: Role;
  significant?: boolean;
  significance?: { dla: number | null; attribution: number | null };
  subject_attention?: number;
  relation_attention?: number;
  subject_dla_share?: number;
  relation_dla_share?: number;
  dla?: number;
  attribution?: number | null;
  target_rank?: number;
  subject_rank?: number | null;
  top_tokens?: (string | ScoredToken)[];
}
/** How a result's head roles were decided. */
export interface RolesRecord {
  thresholds: Record<string, number>;
  significance: string;
  mover: string;
  relation: string;
  mixture: string;
  relation_positions: number[];
  relation_tokens: string[];
  counts: Record<string, number>;
}
export interface Provenance {
  model: string;
  revision?: string;
  method?: string;
  params?: Record<string, unknown>;
  code_version?: string;
  libraries?: Record<string, string>;
  dtype?: string;
  device_class?: string;
  created_at?: string;
}
export interface CircuitResult {
  schema_version: number;
  kind: "circuit";
  id?: string;
  model: string;
  revision?: string;
  prompt: string;
  target: string;
  target_id?: number;
  tokens: string[];
  subject: SubjectSpan | null;
  method: Method;
  ablation: Ablation;
  metric: Metric | string;
  corrupt_prompt: string | null;
  corrupt_prompts?: string[];
  counterfactual?: CounterfactualRecord | null;
  curve?: FaithfulnessCurve;
  params: Record<string, unknown>;
  graph: GraphInfo;
  nodes: CircuitNode[];
  edges: CircuitEdge[];
  metrics: CircuitMetrics;
  heads?: Record<string, HeadInfo>;
  roles?: RolesRecord;
  timings?: Record<string, number>;
  provenance?: Provenance;
}

/** One automatic counterfactual: same relation and template, another subject, its answer the foil. */
export interface CounterfactualCandidate {
  prompt: string;
  subject: string;
  relation: string | null;
  foil: string;
  foil_id: number;
  foil_prob: number;
  target_prob: number;
  margin: number;
  kind: "known" | "same kind" | "other";
  own_object: string | null;
  why: string;
}
export interface CounterfactualRecord {
  source: string;
  relation: string | null;
  subject: string | null;
  reason: string;
  chosen: CounterfactualCandidate[];
  candidates: CounterfactualCandidate[];
}
/** A point of the faithfulness curve: measured by patched runs, with random circuits of its size. */
export interface CurvePoint {
  edges: number;
  size: number | null;
  edge_fraction: number;
  requested: boolean;
  faithfulness: number | null;
  metric: number;
  hit_at_10: number;
  target_rank: number;
  harmful_share: number | null;
  random: { edges: number[]; faithfulness: (number | null)[]; faithfulness_mean: number | null; hit_at_10: number | null };
}
export interface FaithfulnessCurve {
  points: CurvePoint[];
  cpr: number | null;
  cmd: number | null;
  cpr_normalised: number | null;
  cmd_normalised: number | null;
  faithfulness_undefined: string | null;
}

export interface HeadDetail {
  node: string;
  kind: "head";
  layer: number;
  head: number;
  tokens: string[];
  pattern: number[][];
  subject_positions: number[];
  relation_positions: number[];
  promoted: ScoredToken[];
  suppressed: ScoredToken[];
  role: Role;
  significant?: boolean;
  significance?: { dla: number | null; attribution: number | null };
  scores: Partial<Record<"subject_attention" | "relation_attention" | "subject_dla_share" | "relation_dla_share" | "dla"
    | "attribution" | "target_rank" | "subject_rank", number | null>>;
}
export interface MlpDetail {
  node: string;
  kind: "mlp";
  layer: number;
  promoted: ScoredToken[];
  suppressed: ScoredToken[];
}
export interface EndpointDetail {
  node: string;
  kind: "input" | "logits";
}
export type NodeDetail = HeadDetail | MlpDetail | EndpointDetail;
export interface GraphStats {
  model: string;
  /** contract names; the server also sends total_nodes / total_edges */
  nodes?: number;
  edges?: number;
  total_nodes?: number;
  total_edges?: number;
  n_layers: number;
  n_heads: number;
  n_kv_heads: number;
  kv_mode: string;
}

// ---- jobs -------------------------------------------------------------------------------------
export type JobStatus = "queued" | "running" | "succeeded" | "failed" | "cancelled" | "cancelling" | "interrupted";
export interface AcdcParams extends Omit<CircuitRequest, "method"> {
  method?: "acdc";
  tau?: number;
}
export interface JobRequest {
  kind: "acdc" | "relation" | "sweep" | "neurons" | "neurons-compare" | "mask-train" | "mask-edit";
  params: Record<string, unknown>;
}
export interface Job {
  id: string;
  kind: string;
  params?: Record<string, unknown>;
  status: JobStatus;
  progress: number;
  message?: string | null;
  error?: string | { type: string; message: string } | null;
  result?: unknown;
  created_at?: string;
  finished_at?: string | null;
}
export interface JobEvent {
  seq: number;
  status: JobStatus;
  progress: number;
  message?: string | null;
  done?: number;
  total?: number;
  [k: string]: unknown;
}
export const TERMINAL: ReadonlySet<string> = new Set(["succeeded", "failed", "cancelled", "interrupted"]);

// ---- store / permalinks -----------------------------------------------------------------------
export interface ResultSummary {
  id: string;
  kind: string;
  model: string;
  prompt: string;
  method: string | null;
  created_at: string;
  saved: boolean;
  title: string | null;
}
export interface ResultsQuery {
  model?: string;
  method?: string;
  kind?: string;
  q?: string;
  saved?: boolean;
  limit?: number;
  offset?: number;
}
export interface ResultsList {
  items: ResultSummary[];
  total: number;
}
export interface ViewResponse {
  short: string;
  url: string;
}
export interface StoredView {
  result_id: string;
  state: Record<string, string>;
}

// ---- editing ----------------------------------------------------------------------------------
export interface EditCreated {
  session_id: string;
  job_id: string;
}
export interface RateBlock {
  rate: number | null;
  items: unknown[];
  /** Why there are no items (generalisation: no LRE template matched and no paraphrase given). */
  reason?: string | null;
}
export interface EditEvaluation {
  efficacy: { success: boolean; new_prob: number; old_prob: number; new_rank: number };
  generalisation: RateBlock;
  locality: RateBlock;
  prob_shift: { old: { pre: number; post: number }; new: { pre: number; post: number } };
}
export interface EditSession {
  session_id: string;
  model: string;
  method: EditMethod;
  prompt: string;
  subject: string;
  target: string;
  old_target: string;
  layer: number;
  status: string;
  evaluation: EditEvaluation | null;
  covariance?: string;
  created_at: string;
  expires_at: string;
}
export interface Curve {
  rank: number[];
  prob: number[];
}
export interface EditLensPair {
  pre: LensResult;
  post: LensResult;
  curves?: { new: { pre: Curve; post: Curve }; old: { pre: Curve; post: Curve } };
}
/** One side of the pre/post circuit comparison: usable for a diff, or why not (and a size that would be faithful). */
export interface EditSideStatus {
  usable: boolean;
  reason: string | null;
  faithfulness: number | null;
  edges: number;
  grow_top_n: number | null;
}
export interface EditEdgeDiff {
  added: string[];
  removed: string[];
  reweighted: { key: string; pre: number; post: number; delta?: number; rel?: number }[];
  n_added?: number;
  n_removed?: number;
  n_reweighted?: number;
  shared?: number;
  score_scale?: number;
  reweight_threshold?: number;
  rule?: string;
}
export interface EditCounterfactual {
  ablation: string;
  corrupt_prompt: string | null;
  foil: string | null;
  source: string | null;
  note: string | null;
}
export type TopMembership = "entered" | "left" | "kept" | "absent";
/** One head's output change at the last position (pre -> post). */
export interface HeadDiffRow {
  node: string;
  layer: number;
  head: number;
  change: number;
  pre_norm: number;
  rel_change: number;
  changed: boolean;
  dla: Record<string, { pre: number; post: number; delta: number }>;
  subject_attention: { pre: number; post: number };
  top: { pre: ScoredToken[]; post: ScoredToken[] };
  marks: { new?: TopMembership; old?: TopMembership; subject_entered: string[]; subject_left: string[] };
  mover: boolean;
}
export interface HeadDiff {
  rows: HeadDiffRow[];
  n_changed: number;
  n_unchanged: number;
  movers: string[];
  rule: { unchanged: string; mover: string };
}
export interface EditCompare {
  /** Content id of the stored comparison (its permalink is /c/{id}). */
  id?: string;
  method?: string;
  top_n?: number | null;
  edit_method?: string;
  thresholds?: Record<string, number>;
  lens: EditLensPair;
  circuit: {
    pre: CircuitResult | null;
    post: CircuitResult | null;
    counterfactual?: EditCounterfactual;
    sides?: { pre: EditSideStatus; post: EditSideStatus };
    same_counterfactual?: boolean | null;
    comparable?: boolean;
    reason?: string | null;
    diff: EditEdgeDiff | null;
    /** how both sides' size was chosen; ``used`` is set when an unfaithful side moved both sides */
    size_rule?: { rule: string; requested: number | null; used: number | null;
      grown_from: Record<"pre" | "post", { edges: number; faithfulness: number | null } | null> | null };
  };
  heads: HeadDiff;
  analysis?: EditAnalysis;
}
export interface EditMoverHead {
  node: string;
  change: number;
  new_dla_delta: number;
  old_left: boolean;
  top_pre: string[];
  top_post: string[];
}
export interface EditSideSummary {
  n: number;
  changed_rate: number | null;
  became_new_rate: number | null;
  mover_carries_new_rate: number | null;
}
/** The paper's findings on this one edit (engine: kcircuits.editing.analysis). */
export interface EditAnalysis {
  edit_method: string;
  edit_layer: number | null;
  lens: {
    ranks_pre: number[];
    ranks_post: number[];
    first_top_block_pre: number | null;
    first_top_block_post: number | null;
    offset: number | null;
    top_k: number;
    paper: string | null;
    note: string | null;
  };
  mover: { switched: boolean; heads: EditMoverHead[] };
  side_effects: {
    items: { prompt: string; subject: string; kind: string; answer_pre: string; answer_post: string;
      changed: boolean; became_new: boolean; mover_carries_new: boolean; movers: string[] }[];
    summary: Record<string, EditSideSummary>;
  };
  rules: Record<string, string>;
}

/** One row of a size sweep (kind "sweep" job result). */
export interface SweepRow {
  top_n: number;
  edges: number;
  edge_fraction: number;
  faithfulness: number | null;
  hit_at_10: number;
  target_rank: number;
}
export interface SweepResult {
  kind: "sweep";
  model: string;
  prompt: string;
  target: string;
  method: string;
  ablation: string;
  metric: string;
  graph: { total_edges: number; total_nodes: number };
  rows: SweepRow[];
}

/** GET /api/relations item. */
export interface RelationInfo {
  name: string;
  category: string;
  template: string;
  n_samples: number;
}
export interface HitSplit {
  n: number;
  original: number | null;
  circuit: number | null;
  random: number | null;
}
/** A "relation" job's result: one row of the paper's Table 1. */
export interface RelationRow {
  kind: "relation_row";
  relation: string;
  category: string;
  model: string;
  method: string;
  ablation: string;
  k: number;
  edges: number;
  nodes: number;
  edge_fraction: number;
  total_edges: number;
  n_validation_known: number;
  n_validation_split: number;
  validation: HitSplit;
  test: HitSplit;
  timings: { total_s: number };
}

// ---- knowledge neurons ------------------------------------------------------------------------
export interface NeuronRef {
  id: string;
  layer: number;
  index: number;
  attr: number;
  share?: number;
  promotes?: string[];
}
export interface Concentration {
  top_k: number;
  top_k_share: number;
  effective_neurons: number;
}
export interface NeuronPromptRow {
  prompt: string;
  target: string;
  prob: number;
  rank: number;
  top1: string;
  attr_sum: number;
  completeness_gap: number;
  max_attr: number;
  baseline_prob: number | number[];
  n_candidates: number;
  concentration: Concentration;
}
export interface BesideCircuit {
  method: string;
  metrics: { edges: number; nodes: number; faithfulness: number | null };
  mlps: { node: string; layer: number; in_circuit: boolean; score: number | null; kns: string[]; kn_attr: number }[];
  n_kns: number;
  kns_in_circuit_mlps: number;
  kn_share_in_circuit: number | null;
  circuit_mlps: number;
  circuit_mlps_with_kns: number;
  effect_share_edges: Record<"head" | "mlp" | "input", number | null>;
  effect_share_nodes: Record<"head" | "mlp", number | null>;
}
export interface NeuronsResult {
  kind: "neurons";
  id?: string;
  model: string;
  prompt: string;
  target: string;
  n_layers: number;
  d_mlp: number;
  params: Record<string, unknown> & { steps: number; path: string; threshold: number; share: number; min_prompts: number };
  prompts: NeuronPromptRow[];
  neurons: NeuronRef[];
  top: NeuronRef[];
  chart: { layer: number; index: number; attr: number }[];
  layer_histogram: number[];
  concentration: Concentration;
  circuit?: BesideCircuit;
}
export interface NeuronMeasure {
  top1: string;
  top1_prob: number;
  prob?: number;
  rank?: number;
}
export interface NeuronEditRow {
  prompt: string;
  target: string | null;
  kind: "prompt" | "paraphrase" | "symmetric" | "other_fact" | "unrelated";
  before: NeuronMeasure;
  after: NeuronMeasure;
  top1_flipped: boolean;
  kl: number;
  pair_flipped?: boolean;
}
export interface NeuronEditRequest {
  model?: string;
  prompt: string;
  target: string;
  neurons: string[];
  mode: "suppress" | "enhance";
  positions?: "last" | "all";
  relation?: string | null;
  subject?: string | null;
  foil?: string | null;
}
export interface NeuronEditSummary {
  n: number;
  top1_flip_rate: number;
  mean_kl: number;
  mean_prob_before?: number;
  mean_prob_after?: number;
}
export interface NeuronEditResult {
  kind: "neuron_edit";
  id?: string;
  mode: "suppress" | "enhance";
  neurons: string[];
  prompt: NeuronEditRow;
  prob_change: number;
  relative_change: number | null;
  rows: NeuronEditRow[];
  summary: Record<string, NeuronEditSummary | null>;
}
export interface LocalisationSummary {
  n_groups: number;
  mean_kns: number | null;
  with_kns: number | null;
  layer_histogram: number[];
  mean_kn_layer: number | null;
  top10_share: number | null;
  effective_neurons: number | null;
  suppress: { n: number; top1_flip_rate: number | null; pair_flip_rate: number | null; mean_relative_change: number | null };
  enhance: { n: number; top1_flip_rate: number | null; pair_flip_rate: number | null; mean_relative_change: number | null };
}
export interface CompareResult {
  kind: "neurons_compare";
  model: string;
  n_layers: number;
  params: Record<string, unknown>;
  summary: Record<string, LocalisationSummary>;
  rows: { name: string; kind: string; n_neurons: number; target: string; foil: string | null }[];
}

// ---- parameter masks (Ge, Rudzicz, Zhu) ------------------------------------------------------------
export type MaskTrainRequest = Schemas["MaskTrainIn"];
export type MaskEditRequest = Schemas["MaskEditIn"];
export type MaskOverlapRequest = Schemas["MaskOverlapIn"];
export type MaskComponentsRequest = Schemas["MaskComponentsIn"];
export type MaskResult = Schemas["MaskOut"];
export type MaskCurves = Schemas["MaskCurvesOut"];
export type ModuleShare = Schemas["ModuleShareOut"];
export type MaskComponent = Schemas["MaskComponentOut"];
export type MaskEditResult = Schemas["MaskEditOut"];
export type MaskEditRow = Schemas["MaskEditRowOut"];
export type MaskOverlapResult = Schemas["MaskOverlapOut"];
export type MaskComponentsResult = Schemas["MaskComponentsOut"];
/** One evaluation of a mask-train job, as its progress events carry it (``curve``). */
export interface MaskCurvePoint {
  step: number;
  loss: number;
  density: number;
  faithfulness_kl: number;
}

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

// ---- responses: generated from the routes' response models (kcircuits.api.wire) -----------------
// ---- health / models ---------------------------------------------------------------------------
export type ArchFacts = Schemas["ArchFactsOut"];
export type ModelInfo = Schemas["ModelOut"];
export type ModelsResponse = Schemas["ModelsOut"];
export type InfoResponse = Schemas["InfoOut"];

// ---- logit lens -------------------------------------------------------------------------------
export type TokenProb = Schemas["TokenProbOut"];
export type LensPosition = Schemas["LensPositionOut"];
export type LensLayer = Schemas["LensLayerOut"];
export type SubjectSpan = Schemas["SubjectOut"];
export type LensTarget = Schemas["LensTargetOut"];
export type LensResult = Schemas["LensOut"];
export type ScoredToken = Schemas["ScoredTokenOut"];
export type ProjectResponse = Schemas["ProjectOut"];

// ---- circuits ---------------------------------------------------------------------------------
export type Metric = NonNullable<CircuitRequest["metric"]>;
export type CircuitNode = Schemas["CircuitNodeOut"];
export type NodeKind = CircuitNode["kind"];
export type Role = CircuitNode["role"];
export type Slot = "q" | "k" | "v" | "mlp_in" | "logits";
/** A node's top lens token: its output read through the final norm and the unembedding; logit = its direct logit. */
export type TopToken = Schemas["TopTokenOut"];
export type CircuitEdge = Schemas["CircuitEdgeOut"];
export type GraphInfo = Schemas["CircuitGraphOut"];
export type CircuitMetrics = Schemas["CircuitMetricsOut"];
export type HeadInfo = Schemas["HeadRoleOut"];
/** How a result's head roles were decided. */
export type RolesRecord = Schemas["RolesOut"];
export type Provenance = Schemas["ProvenanceOut"];
export type CircuitResult = Schemas["CircuitOut"];
/** One automatic counterfactual: same relation and template, another subject, its answer the foil. */
export type CounterfactualCandidate = Schemas["CounterfactualCandidateOut"];
export type CounterfactualRecord = Schemas["CounterfactualOut"];
/** A point of the faithfulness curve: measured by patched runs, with random circuits of its size. */
export type CurvePoint = Schemas["CurvePointOut"];
export type FaithfulnessCurve = Schemas["CurveOut"];
export type HeadDetail = Schemas["HeadDetailOut"];
export type MlpDetail = Schemas["MlpDetailOut"];
export type EndpointDetail = Schemas["EndpointDetailOut"];
export type NodeDetail = Schemas["NodeDetailOut"];
export type GraphStats = Schemas["GraphStatsOut"];

// ---- jobs -------------------------------------------------------------------------------------
export type Job = Schemas["JobOut"];
export type JobStatus = Job["status"];
export interface AcdcParams extends Omit<CircuitRequest, "method"> {
  method?: "acdc";
  tau?: number;
}
export interface JobRequest {
  kind: "acdc" | "relation" | "sweep" | "neurons" | "neurons-compare" | "mask-train" | "mask-edit";
  params: Record<string, unknown>;
}
/** One server-sent event of GET /api/jobs/{id}/events (text/event-stream: no schema to generate from). */
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
export type ResultSummary = Schemas["ResultSummaryOut"];
export type ResultsQuery = NonNullable<operations["list_results_api_results_get"]["parameters"]["query"]>;
export type ResultsList = Schemas["ResultListOut"];
export type ViewResponse = Schemas["ViewCreatedOut"];
export type StoredView = Schemas["ViewOut"];
/** A stored result of any kind (GET /api/results/{id}). */
export type AnyResult = Schemas["AnyResultOut"];

// ---- editing ----------------------------------------------------------------------------------
export type EditCreated = Schemas["EditCreatedOut"];
export type EditEvaluation = Schemas["EvaluationOut"];
export type EditSession = Schemas["EditSessionOut"];
export type Curve = Schemas["CurveRankProbOut"];
export type EditLensPair = Schemas["EditLensOut"];
/** One side of the pre/post circuit comparison: usable for a diff, or why not (and a size that would be faithful). */
export type EditSideStatus = Schemas["SideStatusOut"];
export type EditEdgeDiff = Schemas["EdgeDiffOut"];
export type EditCounterfactual = Schemas["EditCounterfactualOut"];
export type TopMembership = NonNullable<Schemas["HeadMarksOut"]["new"]>;
/** One head's output change at the last position (pre -> post). */
export type HeadDiffRow = Schemas["HeadDiffRowOut"];
export type HeadDiff = Schemas["HeadDiffOut"];
export type EditCompare = Schemas["EditComparisonOut"];
export type EditMoverHead = Schemas["MoverHead"];
export type EditSideSummary = Schemas["SideSummary"];
/** The paper's findings on this one edit (engine: kcircuits.editing.analysis). */
export type EditAnalysis = Schemas["EditAnalysis"];

/** One row of a size sweep (kind "sweep" job result). */
export type SweepRow = Schemas["SweepRowOut"];
export type SweepResult = Schemas["SweepOut"];

/** GET /api/relations item. */
export type RelationInfo = Schemas["RelationOut"];
export type HitSplit = Schemas["HitSplitOut"];
/** A "relation" job's result: one row of the paper's Table 1. */
export type RelationRow = Schemas["RelationRowOut"];

// ---- knowledge neurons ------------------------------------------------------------------------
export type NeuronRef = Schemas["NeuronRefOut"];
export type Concentration = Schemas["ConcentrationOut"];
export type NeuronPromptRow = Schemas["NeuronPromptOut"];
export type BesideCircuit = Schemas["BesideCircuitOut"];
export type NeuronsResult = Schemas["NeuronsOut"];
export type NeuronMeasure = Schemas["NeuronMeasureOut"];
export type NeuronEditRow = Schemas["NeuronEditRowOut"];
export type NeuronEditRequest = Schemas["NeuronEditIn"];
export type NeuronEditSummary = Schemas["NeuronEditSummaryOut"];
export type NeuronEditResult = Schemas["NeuronEditOut"];
export type LocalisationSummary = Schemas["LocalisationSummaryOut"];
export type CompareResult = Schemas["NeuronsCompareOut"];

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

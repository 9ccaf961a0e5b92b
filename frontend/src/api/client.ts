/** Typed same-origin client for the kcircuits API. Errors surface as ApiError with the server's envelope. */
import type {
  CircuitRequest, CircuitResult, EditCompare, EditCreated, EditRequest, EditSession, ExportFormat, GraphStats,
  Job, JobEvent, JobRequest, LensRequest, LensResult, MaskComponentsRequest, MaskComponentsResult, MaskEditResult, MaskOverlapRequest,
  MaskOverlapResult, MaskResult, ModelsResponse, InfoResponse, NodeDetail, NodeDetailRequest,
  NeuronEditRequest, NeuronEditResult, ProjectRequest, ProjectResponse, RelationInfo, ResultsList, ResultsQuery,
  StoredView, ViewResponse,
} from "./types";
import { TERMINAL } from "./types";

export class ApiError extends Error {
  constructor(public status: number, public type: string, message: string) {
    super(message);
    this.name = "ApiError";
  }
}

export type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

function query(params: Record<string, unknown>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === "") continue;
    q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

export class Client {
  constructor(private fetchFn: FetchLike = (i, init) => fetch(i, init), private base = "") {}

  private async request<T>(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
    const init: RequestInit = { method, signal, headers: { Accept: "application/json" } };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers = { ...init.headers, "Content-Type": "application/json" };
    }
    const res = await this.fetchFn(this.base + path, init);
    let data: unknown = null;
    const text = await res.text();
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (!res.ok) {
      const err = (data as { error?: { type?: string; message?: string }; detail?: unknown } | null) ?? null;
      const type = err?.error?.type ?? (res.status === 404 ? "not_found" : "http_error");
      const message = err?.error?.message ?? (typeof err?.detail === "string" ? err.detail : `HTTP ${res.status}`);
      throw new ApiError(res.status, type, message);
    }
    return data as T;
  }

  models(): Promise<ModelsResponse> { return this.request("GET", "/api/models"); }
  info(): Promise<InfoResponse> { return this.request("GET", "/info"); }
  lens(body: LensRequest, signal?: AbortSignal): Promise<LensResult> { return this.request("POST", "/api/lens", body, signal); }
  project(body: ProjectRequest): Promise<ProjectResponse> { return this.request("POST", "/api/nodes/project", body); }
  circuit(body: CircuitRequest, signal?: AbortSignal): Promise<CircuitResult> {
    return this.request("POST", "/api/circuits", body, signal);
  }
  graphStats(model: string): Promise<GraphStats> { return this.request("GET", `/api/circuits/graph-stats${query({ model })}`); }
  storedCircuit(id: string): Promise<CircuitResult> { return this.request("GET", `/api/circuits/${encodeURIComponent(id)}`); }
  circuitNode(id: string, node: string): Promise<NodeDetail> {
    return this.request("GET", `/api/circuits/${encodeURIComponent(id)}/nodes/${encodeURIComponent(node)}`);
  }
  nodeDetail(body: NodeDetailRequest): Promise<NodeDetail> { return this.request("POST", "/api/nodes/detail", body); }

  relations(): Promise<{ items: RelationInfo[] }> { return this.request("GET", "/api/relations"); }
  neuronEdit(body: NeuronEditRequest): Promise<NeuronEditResult> { return this.request("POST", "/api/neurons/edit", body); }
  mask(id: string): Promise<MaskResult> { return this.request("GET", `/api/masks/stored/${encodeURIComponent(id)}`); }
  maskEdit(id: string): Promise<MaskEditResult> { return this.request("GET", `/api/masks/edits/${encodeURIComponent(id)}`); }
  maskOverlap(body: MaskOverlapRequest): Promise<MaskOverlapResult> { return this.request("POST", "/api/masks/overlap", body); }
  maskComponents(body: MaskComponentsRequest): Promise<MaskComponentsResult> { return this.request("POST", "/api/masks/components", body); }
  createJob(body: JobRequest): Promise<Job> { return this.request("POST", "/api/jobs", body); }
  job(id: string): Promise<Job> { return this.request("GET", `/api/jobs/${encodeURIComponent(id)}`); }
  cancelJob(id: string): Promise<Job> { return this.request("DELETE", `/api/jobs/${encodeURIComponent(id)}`); }
  jobEventsUrl(id: string): string { return `${this.base}/api/jobs/${encodeURIComponent(id)}/events`; }

  result<T = unknown>(id: string): Promise<T> { return this.request("GET", `/api/results/${encodeURIComponent(id)}`); }
  results(q: ResultsQuery = {}): Promise<ResultsList> { return this.request("GET", `/api/results${query({ ...q })}`); }
  saveResult(id: string, title?: string): Promise<{ id: string; saved: boolean }> {
    return this.request("POST", `/api/results/${encodeURIComponent(id)}/save`, title ? { title } : {});
  }
  exportUrl(id: string, format: ExportFormat): string {
    return `${this.base}/api/results/${encodeURIComponent(id)}/export${query({ format })}`;
  }
  createView(resultId: string, state: Record<string, string>): Promise<ViewResponse> {
    return this.request("POST", "/api/views", { result_id: resultId, state });
  }
  view(short: string): Promise<StoredView> { return this.request("GET", `/api/views/${encodeURIComponent(short)}`); }

  createEdit(body: EditRequest): Promise<EditCreated> { return this.request("POST", "/api/edits", body); }
  edit(id: string): Promise<EditSession> { return this.request("GET", `/api/edits/${encodeURIComponent(id)}`); }
  /** Pre vs post; ``method`` / ``topN`` undefined: the server's defaults (eap-ig-refine, its default size). */
  editCompare(id: string, method?: string, topN?: number): Promise<EditCompare> {
    return this.request("GET", `/api/edits/${encodeURIComponent(id)}/compare${query({ method, top_n: topN })}`);
  }
  closeEdit(id: string): Promise<{ session_id: string; closed: boolean }> {
    return this.request("DELETE", `/api/edits/${encodeURIComponent(id)}`);
  }
}

const EVENT_NAMES = ["queued", "running", "progress", "cancelling", "succeeded", "failed", "cancelled", "interrupted"];

/**
 * Follow a job's SSE stream; calls onEvent for each event and resolves with the final job (fetched once the
 * stream reports a terminal status). The returned `close` stops listening without cancelling the job.
 */
export function followJob(
  client: Client, id: string, onEvent: (name: string, ev: JobEvent) => void,
  Source: typeof EventSource = EventSource,
): { done: Promise<Job>; close: () => void } {
  const es = new Source(client.jobEventsUrl(id));
  let finish: (j: Job) => void = () => {};
  let fail: (e: unknown) => void = () => {};
  const done = new Promise<Job>((res, rej) => { finish = res; fail = rej; });
  let ended = false;
  const end = () => {
    if (ended) return;
    ended = true;
    es.close();
    client.job(id).then(finish, fail);
  };
  for (const name of EVENT_NAMES) {
    es.addEventListener(name, (msg) => {
      let data: JobEvent;
      try {
        data = JSON.parse((msg as MessageEvent).data) as JobEvent;
      } catch {
        return;
      }
      onEvent(name, data);
      if (TERMINAL.has(name) || TERMINAL.has(data.status)) end();
    });
  }
  es.onerror = () => {
    // The server closes the stream after a terminal event; a drop before that is settled by polling the job.
    if (es.readyState === 2) end();
  };
  return { done, close: () => { ended = true; es.close(); } };
}

export const api = new Client();

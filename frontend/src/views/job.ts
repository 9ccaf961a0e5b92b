/** Runs a slow job (ACDC, sweep, relation) with SSE progress, a progress bar and a Cancel button.
 * The host element carries data-job-status / data-job-events for tests and styling. */
import { followJob, type Client } from "../api/client";
import { TERMINAL, type JobEvent, type JobRequest } from "../api/types";
import { h } from "../util/dom";

/** The status to show after `incoming` arrives while `current` is shown: a terminal status is final, because
 * replies race (the cancel request's "cancelling" can arrive after the stream's "cancelled"). */
export function nextJobStatus(current: string | undefined, incoming: string): string {
  return TERMINAL.has(current ?? "") ? current as string : incoming;
}

export class JobRunner {
  readonly cancelBtn: HTMLButtonElement;
  readonly progress: HTMLProgressElement;
  private jobId: string | null = null;
  /** The element that carries data-job-status / data-job-events (set it once the view is built). */
  host: HTMLElement = h("div");
  /** Called with every event of the job followed now (after the runner's own bookkeeping). */
  onEvent: ((name: string, ev: JobEvent) => void) | null = null;

  constructor(private client: Client, private setStatus: (msg: string, error?: boolean) => void,
    testids: { cancel: string; progress: string } = { cancel: "cancel-job", progress: "job-progress" }) {
    this.cancelBtn = h("button", { type: "button", "data-testid": testids.cancel, text: "Cancel", hidden: true });
    this.progress = h("progress", { max: 1, value: 0, hidden: true, "data-testid": testids.progress });
    this.cancelBtn.addEventListener("click", () => void this.cancel());
  }

  /** Start the job and follow it; resolves to its result when it succeeded, else null (status shown). */
  async run(request: JobRequest): Promise<unknown> {
    const kind = request.kind;
    const job = await this.client.createJob(request);
    this.jobId = job.id;
    this.progress.hidden = false;
    this.progress.value = 0;
    this.cancelBtn.hidden = false;
    this.host.dataset.jobStatus = job.status;  // a new job: the previous one's terminal status is replaced
    this.host.dataset.jobEvents = "0";
    this.setStatus(`${kind} job ${job.id.slice(0, 8)} queued`);
    let n = 0;
    const f = followJob(this.client, job.id, (name: string, ev: JobEvent) => {
      n++;
      this.host.dataset.jobEvents = String(n);
      this.showStatus(ev.status ?? name);
      this.progress.value = ev.progress ?? 0;
      const detail = ev.total ? ` ${ev.done}/${ev.total}` : "";
      this.setStatus(`${kind} ${name}${detail} ${ev.message ?? ""}`.trim());
      this.onEvent?.(name, ev);
    });
    try {
      const final = await f.done;
      this.showStatus(final.status);
      if (final.status === "succeeded" && final.result) return final.result;
      const msg = typeof final.error === "string" ? final.error : final.error?.message ?? "";
      this.setStatus(`${kind} ${final.status}${msg ? `: ${msg}` : ""}`, final.status === "failed");
      return null;
    } finally {
      this.jobId = null;
      this.cancelBtn.hidden = true;
      this.progress.hidden = true;
    }
  }

  /** Show the job's status by `nextJobStatus`; false when a terminal status kept its place. */
  private showStatus(status: string): boolean {
    const shown = nextJobStatus(this.host.dataset.jobStatus, status);
    this.host.dataset.jobStatus = shown;
    return shown === status;
  }

  async cancel(): Promise<void> {
    if (!this.jobId) return;
    try {
      const j = await this.client.cancelJob(this.jobId);
      if (this.showStatus(j.status)) this.setStatus(`job ${j.status}`);
    } catch (err) {
      this.setStatus(String(err), true);
    }
  }
}

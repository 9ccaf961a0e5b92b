import { describe, expect, it, vi } from "vitest";
import { ApiError, Client, followJob } from "../src/api/client";
import type { Job } from "../src/api/types";

function mockFetch(status: number, body: unknown) {
  return vi.fn(async (_url: string, _init?: RequestInit) =>
    new Response(typeof body === "string" ? body : JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } }));
}

describe("api client", () => {
  it("POSTs JSON and parses the reply", async () => {
    const f = mockFetch(200, { tokens: ["a"], prediction: { token: " b", id: 1, prob: 0.5 } });
    const c = new Client(f);
    const ctrl = new AbortController();
    const r = await c.lens({ prompt: "a", target: null, top_k: 5 }, ctrl.signal);
    expect(r.prediction.token).toBe(" b");
    const [url, init] = f.mock.calls[0];
    expect(url).toBe("/api/lens");
    expect(init?.method).toBe("POST");
    expect(JSON.parse(String(init?.body))).toEqual({ prompt: "a", target: null, top_k: 5 });
    expect((init?.headers as Record<string, string>)["Content-Type"]).toBe("application/json");
    expect(init?.signal).toBe(ctrl.signal);
  });
  it("raises ApiError with the server's envelope", async () => {
    const c = new Client(mockFetch(422, { error: { type: "bad_request", message: "prompt too long" } }));
    await expect(c.lens({ prompt: "x" })).rejects.toMatchObject({ status: 422, type: "bad_request", message: "prompt too long" });
    const c2 = new Client(mockFetch(502, "<html>bad gateway</html>"));
    const err = await c2.models().catch((e) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect(err.status).toBe(502);
  });
  it("builds paths and queries with encoding", async () => {
    const f = mockFetch(200, { items: [], total: 0 });
    const c = new Client(f);
    await c.results({ q: "a&b c", model: "smollm2-135m", saved: true, method: "" });
    expect(f.mock.calls[0][0]).toBe("/api/results?q=a%26b+c&model=smollm2-135m&saved=true");
    await c.circuitNode("abc", "a1.h2");
    expect(f.mock.calls[1][0]).toBe("/api/circuits/abc/nodes/a1.h2");
    expect(c.exportUrl("x/y", "graphml")).toBe("/api/results/x%2Fy/export?format=graphml");
    await c.editCompare("s1");
    expect(f.mock.calls[2][0]).toBe("/api/edits/s1/compare"); // the server's default method and size
    await c.cancelJob("j1");
    expect(f.mock.calls[3][1]?.method).toBe("DELETE");
  });
  it("follows a job's SSE stream to its terminal event", async () => {
    const job: Job = { id: "j1", kind: "acdc", params: {}, status: "cancelled", progress: 0.3, message: null, error: null,
      created_at: 0, finished_at: null };
    const c = new Client(mockFetch(200, job));
    class FakeES {
      static last: FakeES;
      readyState = 1;
      listeners: Record<string, ((m: MessageEvent) => void)[]> = {};
      onerror: (() => void) | null = null;
      constructor(public url: string) { FakeES.last = this; }
      addEventListener(n: string, fn: (m: MessageEvent) => void) { (this.listeners[n] ??= []).push(fn); }
      close() { this.readyState = 2; }
      emit(n: string, data: unknown) { for (const fn of this.listeners[n] ?? []) fn({ data: JSON.stringify(data) } as MessageEvent); }
    }
    const seen: string[] = [];
    const f = followJob(c, "j1", (name) => seen.push(name), FakeES as unknown as typeof EventSource);
    expect(FakeES.last.url).toBe("/api/jobs/j1/events");
    FakeES.last.emit("running", { seq: 1, status: "running", progress: 0 });
    FakeES.last.emit("progress", { seq: 2, status: "running", progress: 0.3, done: 3, total: 10 });
    FakeES.last.emit("cancelled", { seq: 3, status: "cancelled", progress: 0.3 });
    await expect(f.done).resolves.toEqual(job);
    expect(seen).toEqual(["running", "progress", "cancelled"]);
    expect(FakeES.last.readyState).toBe(2);
  });
});

import { describe, expect, it, vi } from "vitest";
import { Client } from "../src/api/client";
import type { MaskEditRow, ModuleShare } from "../src/api/types";
import { compositionBars, curvePoints, editRows, eventPoint, maskLabel, mergeCurve, overlapText, trainParams } from "../src/views/masks";

const pt = (step: number, loss = 1) => ({ step, loss, density: 0.2, faithfulness_kl: 0.1 });
const share = (inside: number | null, ofMask: number | null, n: number): ModuleShare => ({ share_inside: inside, share_of_mask: ofMask, n_params: n });
const form = { task: "relation:country_capital_city", n: 4, density: 0.25, steps: 10, evalEvery: 5, loss: "kl" as const, seed: 0 };

describe("masks view helpers", () => {
  it("merges curve points by step, sorted, a repeated step replaced", () => {
    let pts = mergeCurve([], pt(10));
    pts = mergeCurve(pts, pt(5));
    pts = mergeCurve(pts, pt(10, 0.5));
    expect(pts.map((p) => [p.step, p.loss])).toEqual([[5, 1], [10, 0.5]]);
  });
  it("reads curve points from stored curves and from progress events", () => {
    expect(curvePoints({ step: [5, 10], loss: [2, 1], density: [0.3, 0.2], faithfulness_kl: [0.5, 0.4] })[1])
      .toEqual({ step: 10, loss: 1, density: 0.2, faithfulness_kl: 0.4 });
    expect(eventPoint({ seq: 1, status: "running", progress: 0.5, curve: pt(5) })).toEqual(pt(5));
    expect(eventPoint({ seq: 1, status: "running", progress: 0.5 })).toBeNull();
    expect(eventPoint({ seq: 1, status: "running", progress: 0.5, curve: { step: 5 } })).toBeNull();
  });
  it("orders the composition bars by module kind and drops kinds without parameters", () => {
    const bars = compositionBars({ mlp: share(0.1, 0.6, 100), other: share(null, null, 0), embedding: share(0.05, 0.1, 50),
      attention: share(0.2, 0.3, 40), layernorm: share(1, 0, 2) });
    expect(bars.modules).toEqual(["embedding", "attention", "mlp", "layernorm"]);
    expect(bars.ofMask).toEqual([0.1, 0.3, 0.6, 0]);
    expect(bars.inside).toEqual([0.05, 0.2, 0.1, 1]);
  });
  it("builds train params with exactly one task field and eval_every at most steps", () => {
    expect(trainParams(form)).toEqual({ model: undefined, relation: "country_capital_city", n: 4, density: 0.25, steps: 10, eval_every: 5, loss: "kl", seed: 0 });
    const syntax = trainParams({ ...form, task: "phenomenon:det_noun", steps: 3, evalEvery: 10 });
    expect(syntax.phenomenon).toBe("det_noun");
    expect("relation" in syntax).toBe(false);
    expect(syntax.eval_every).toBe(3);
    expect(() => trainParams({ ...form, task: "" })).toThrow(/pick a task/);
  });
  it("shows undefined locality and overlap cells as undefined, not as zero", () => {
    const row = (locality: number | null): MaskEditRow => ({ variant: "inside", density: 0.25, nll_pre: 5, nll_post: 2, locality, losses: [], changed_blocks: 3, changed_outside: 0 });
    expect(editRows([row(0.5), row(null)])).toEqual([
      ["inside", "25.0%", "5.000", "2.000", "-3.000", "50.0%", "3", "0"],
      ["inside", "25.0%", "5.000", "2.000", "-3.000", "undefined", "3", "0"]]);
    expect(overlapText([[1, null], [0.25, 1]])).toEqual([["1.000", "undefined"], ["0.250", "1.000"]]);
    expect(maskLabel({ task: { name: "syntax:det_noun", kind: "syntax", relation: null, phenomenon: "det_noun", prompts: [], targets: [] },
      params: { target: 0.05, steps: 1, lr: 0.1, lam: 1, init: 0, loss: "kl", seed: 0 } })).toBe("syntax:det_noun @5.0%");
  });
  it("posts overlaps to /api/masks/overlap and reads masks from /api/masks/{id}", async () => {
    const f = vi.fn(async () => new Response(JSON.stringify({}), { status: 200 }));
    const c = new Client(f);
    await c.maskOverlap({ mask_ids: ["a", "b"] });
    await c.mask("x/y");
    await c.maskComponents({ mask_id: "m", circuit_id: "c" });
    const calls = f.mock.calls as unknown as [string, RequestInit][];
    expect(calls.map(([u, i]) => [u, i.method])).toEqual([["/api/masks/overlap", "POST"], ["/api/masks/stored/x%2Fy", "GET"], ["/api/masks/components", "POST"]]);
    expect(JSON.parse(String(calls[0][1].body))).toEqual({ mask_ids: ["a", "b"] });
  });
});

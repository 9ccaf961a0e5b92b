import { describe, expect, it, vi } from "vitest";
import { Client } from "../src/api/client";
import type { LocalisationSummary, NeuronsResult } from "../src/api/types";
import { compareTable, editSet } from "../src/views/neurons";

const edit = (flip: number | null) => ({ n: 2, top1_flip_rate: flip, pair_flip_rate: null, mean_relative_change: -0.5 });
const summary = (n: number, kns: number | null): LocalisationSummary => ({
  n_groups: n, mean_kns: kns, with_kns: 1, layer_histogram: [1, 2], mean_kn_layer: 0.667, top10_share: 0.25,
  effective_neurons: 40, suppress: edit(0.5), enhance: edit(null),
});

describe("neurons view helpers", () => {
  it("lays out the facts-vs-syntax table one column per set", () => {
    const t = compareTable({ facts: summary(3, 4.3), syntax: summary(2, null) });
    expect(t.head).toEqual(["", "facts", "syntax"]);
    expect(t.rows[0]).toEqual(["groups", "3", "2"]);
    expect(t.rows.find((r) => r[0] === "mean KNs per group")).toEqual(["mean KNs per group", "4.3", "–"]);
    expect(t.rows.find((r) => r[0] === "suppress: top-1 flip rate")).toEqual(["suppress: top-1 flip rate", "0.50", "0.50"]);
    expect(t.rows.find((r) => r[0] === "enhance: top-1 flip rate")?.slice(1)).toEqual(["–", "–"]);
  });
  it("edits the ticked neurons, else the KNs, else the top neuron", () => {
    const n = (id: string) => ({ id, layer: 0, index: 0, attr: 1 });
    const r = { neurons: [n("L1.N2"), n("L0.N5")], top: [n("L3.N3")] } as unknown as NeuronsResult;
    expect(editSet(r, ["L9.N9"])).toEqual(["L9.N9"]);
    expect(editSet(r, [])).toEqual(["L1.N2", "L0.N5"]);
    expect(editSet({ ...r, neurons: [] }, [])).toEqual(["L3.N3"]);
  });
  it("posts neuron edits to /api/neurons/edit", async () => {
    const f = vi.fn(async () => new Response(JSON.stringify({ kind: "neuron_edit" }), { status: 200 }));
    await new Client(f).neuronEdit({ prompt: "p", target: " t", neurons: ["L0.N1"], mode: "suppress" });
    const [url, init] = f.mock.calls[0] as unknown as [string, RequestInit];
    expect(url).toBe("/api/neurons/edit");
    expect(JSON.parse(String(init.body))).toEqual({ prompt: "p", target: " t", neurons: ["L0.N1"], mode: "suppress" });
  });
});

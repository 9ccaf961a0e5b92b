import { describe, expect, it } from "vitest";
import type { CircuitEdge, CircuitResult } from "../src/api/types";
import { drawCircuit, drawDiff, syntheticCircuit, tokenMap } from "../src/graph/model";
import { revealed, visibleTokens } from "../src/views/replay";

const edge = (source: string, target: string, score: number, in_circuit = true): CircuitEdge =>
  ({ source, target, slot: target === "logits" ? "logits" : "mlp_in", receiver: target, score, in_circuit });

function circuit(edges: CircuitEdge[]): CircuitResult {
  return syntheticCircuitWith(edges);
}
/** Every node record of a 3-layer, 2-head graph, as a result carries them. */
function graphNodes(nLayers = 3, nHeads = 2): CircuitResult["nodes"] {
  const rec = (id: string, kind: "input" | "head" | "mlp" | "logits", layer: number | null, head: number | null) =>
    ({ id, kind, layer, head, role: null, score: 0, in_circuit: false });
  const out = [rec("input", "input", null, null)];
  for (let l = 0; l < nLayers; l++) {
    for (let h = 0; h < nHeads; h++) out.push(rec(`a${l}.h${h}`, "head", l, h));
    out.push(rec(`m${l}`, "mlp", l, null));
  }
  return [...out, rec("logits", "logits", null, null)];
}
function syntheticCircuitWith(edges: CircuitEdge[]): CircuitResult {
  const c = syntheticCircuit(1, 3, 2);
  return { ...c, edges, nodes: graphNodes() };
}

describe("circuit drawing", () => {
  it("draws the in-circuit edges at grid positions", () => {
    const c = circuit([edge("input", "m0", 1), edge("m0", "logits", -1), edge("input", "m1", 0.1, false)]);
    const d = drawCircuit(c, { mode: "server" });
    expect(d.edges.map((e) => e.key)).toEqual(["input->m0", "m0->logits"]);
    expect(d.nodes.map((n) => n.id).sort()).toEqual(["input", "logits", "m0"]);
  });
  it("synthetic bench circuit has the requested number of distinct edges", () => {
    const c = syntheticCircuit(2000);
    expect(c.edges).toHaveLength(2000);
    expect(new Set(c.edges.map((e) => `${e.source}->${e.receiver}`)).size).toBe(2000);
  });
  it("diff marks added, removed and reweighted edges on one graph", () => {
    const pre = circuit([edge("input", "m0", 1), edge("m0", "logits", 1), edge("input", "m1", 1)]);
    const post = circuit([edge("input", "m0", 1), edge("m0", "logits", 3), edge("input", "m2", 1)]);
    const d = drawDiff(pre, post, { added: ["input->m2"], removed: ["input->m1"], reweighted: [{ key: "m0->logits", pre: 1, post: 3 }] });
    const style = Object.fromEntries(d.edges.map((e) => [e.key, e.diff]));
    expect(style).toEqual({ "input->m0": null, "m0->logits": "reweighted", "input->m1": "removed", "input->m2": "added" });
    expect(d.counts).toEqual({ added: 1, removed: 1, reweighted: 1, same: 1 });
  });
  it("replay reveals layer by layer", () => {
    const c = circuit([edge("input", "m0", 1), edge("m0", "m2", 1), edge("m2", "logits", 1)]);
    const d = drawCircuit(c, { mode: "server" });
    const ids = (s: number) => revealed(d.nodes, d.edges, s, 3).nodes.map((n) => n.id).sort();
    expect(ids(0)).toEqual(["input"]);
    expect(ids(1)).toEqual(["input", "m0"]);
    expect(ids(3)).toEqual(["input", "logits", "m0", "m2"]);
    expect(revealed(d.nodes, d.edges, 1, 3).edges.map((e) => e.key)).toEqual(["input->m0"]);
  });
  it("replay shows the top tokens of the layers reached so far, the newest layer first", () => {
    const c = circuit([edge("input", "a0.h1", 1), edge("a0.h1", "m1", 1), edge("m1", "m2", 1), edge("m2", "logits", 1),
      edge("input", "m2", 0.5)]);
    const top = (token: string) => ({ token, id: 1, logit: 2 });
    const tops: Record<string, ReturnType<typeof top> | null> = { "a0.h1": top(" the"), m1: top(" French"), m2: null };
    c.nodes = c.nodes.map((n) => (n.id in tops ? { ...n, score: 1, in_circuit: true, top_token: tops[n.id] } : n));
    const d = drawCircuit(c, { mode: "server" });
    expect(Object.fromEntries(d.nodes.map((n) => [n.id, n.token ?? null]))).toEqual(
      { input: null, "a0.h1": " the", m1: " French", m2: null, logits: null });
    const shown = (s: number) => Object.fromEntries(visibleTokens(d.nodes, s, 3));
    expect(shown(0)).toEqual({});
    expect(shown(1)).toEqual({ "a0.h1": " the" });
    expect(shown(2)).toEqual({ "a0.h1": " the", m1: " French" });
    expect(shown(3)).toEqual(shown(2)); // m2 has no token; nothing beyond the last layer
    const fresh = (s: number) => revealed(d.nodes, d.edges, s, 3).nodes.filter((n) => n.fresh).map((n) => n.id);
    expect(fresh(0)).toEqual(["input"]);
    expect(fresh(2)).toEqual(["m1"]);
    expect(fresh(3)).toEqual(["m2"]);
  });
  it("diff nodes carry the post-edit token, else the pre-edit one", () => {
    const pre = circuit([edge("input", "m0", 1), edge("m0", "logits", 1), edge("input", "m1", 1)]);
    const post = circuit([edge("input", "m0", 1), edge("m0", "logits", 3)]);
    const node = (id: string, layer: number, token: string) =>
      ({ id, kind: "mlp" as const, layer, head: null, role: null, score: 1, in_circuit: true, top_token: { token, id: 0, logit: 1 } });
    pre.nodes = [node("m0", 0, " Paris"), node("m1", 1, " France")];
    post.nodes = [node("m0", 0, " Rome")];
    expect([...tokenMap(post)]).toEqual([["m0", " Rome"]]);
    const d = drawDiff(pre, post, { added: [], removed: ["input->m1"], reweighted: [] });
    expect(Object.fromEntries(d.nodes.map((n) => [n.id, n.token ?? null]))).toEqual(
      { input: null, m0: " Rome", logits: null, m1: " France" });
  });
});

import { describe, expect, it } from "vitest";
import { applySelection, edgeKey, pruneDangling, selectEdges, type ScoredEdge } from "../src/graph/prune";

const e = (source: string, target: string, score: number, in_circuit = false, slot = ""): ScoredEdge =>
  ({ source, target, score, in_circuit, receiver: slot ? `${target}<${slot}>` : target });

describe("selection", () => {
  const edges = [e("input", "a0.h0", 0.5), e("a0.h0", "logits", -2), e("input", "m0", 0.1), e("m0", "logits", 1)];
  it("top-n by |score|", () => {
    expect(selectEdges(edges, { mode: "top_n", n: 2 }).map((x) => x.score)).toEqual([-2, 1]);
    expect(selectEdges(edges, { mode: "top_n", n: 0 })).toEqual([]);
    expect(selectEdges(edges, { mode: "top_n", n: 99 })).toHaveLength(4);
  });
  it("threshold on |score|", () => {
    expect(selectEdges(edges, { mode: "threshold", t: 0.5 }).map((x) => x.score)).toEqual([0.5, -2, 1]);
  });
  it("server mode starts from the in_circuit edges", () => {
    const flagged = [e("input", "a0.h0", 1, true), e("a0.h0", "logits", 1, true), e("input", "m0", 5, false)];
    const r = applySelection(flagged, { mode: "server" });
    expect(r.edges.map(edgeKey)).toEqual(["input->a0.h0", "a0.h0->logits"]);
    expect([...r.nodes].sort()).toEqual(["a0.h0", "input", "logits"]);
  });
});

describe("dangling-node pruning", () => {
  it("removes chains without a path to logits, to a fixpoint", () => {
    // input -> a0.h0 -> m1 -> a2.h0 (dead end: no out-edge) ; input -> m0 -> logits
    const edges = [e("input", "a0.h0", 1), e("a0.h0", "m1", 1), e("m1", "a2.h0", 1, false, "q"), e("input", "m0", 1), e("m0", "logits", 1)];
    const r = pruneDangling(edges);
    expect(r.edges.map(edgeKey)).toEqual(["input->m0", "m0->logits"]);
    expect([...r.nodes].sort()).toEqual(["input", "logits", "m0"]);
  });
  it("removes nodes without an in-edge (input exempt)", () => {
    const edges = [e("a1.h0", "m2", 1), e("m2", "logits", 1), e("input", "logits", 0.3)];
    const r = pruneDangling(edges);
    expect(r.edges.map(edgeKey)).toEqual(["input->logits"]);
  });
  it("keeps a complete circuit untouched and is idempotent", () => {
    const edges = [e("input", "a0.h1", 1, false, "k"), e("input", "a0.h1", 1, false, "v"), e("a0.h1", "m0", 1), e("m0", "logits", 1), e("a0.h1", "logits", -1)];
    const r = pruneDangling(edges);
    expect(r.edges).toHaveLength(5);
    expect(pruneDangling(r.edges).edges).toEqual(r.edges);
  });
  it("a grouped k/v receiver stays while one head of its group stays", () => {
    // group size 3: a1.g1<k> feeds a1.h3..a1.h5 (the wire's graph.shared_receivers); its "target" is the group's first head
    const kv = { source: "input", target: "a1.h3", receiver: "a1.g1<k>", score: 1 };
    const shared = { "a1.g1<k>": ["a1.h3", "a1.h4", "a1.h5"] };
    const edges = [kv, e("input", "a1.h4", 1, false, "q"), e("a1.h4", "logits", 1)];
    const r = pruneDangling(edges, shared);
    expect(r.edges).toHaveLength(3);
    expect(r.nodes.has("a1.h3")).toBe(false); // only fed through the group: drawn into the head that stays
    expect(r.drawTarget(kv)).toBe("a1.h4");
    // without the shared map the same receiver feeds only its target, which has no out-edge
    expect(pruneDangling(edges, {}).edges.map(edgeKey)).toEqual(["input->a1.h4<q>", "a1.h4->logits"]);
    // when no head of the group stays, the kv edge goes
    expect(pruneDangling([kv, e("a2.h0", "logits", 1)], shared).edges).toEqual([]);
    // the group feeds a1.h4, so a1.h4 -> logits keeps the kv edge alive
    expect(pruneDangling([kv, e("a1.h4", "logits", 1)], shared).edges).toHaveLength(2);
  });
  it("top-n then prune leaves no dangling node", () => {
    let seed = 7;
    const rand = () => ((seed = (seed * 16807) % 2147483647) / 2147483647);
    const comps = ["input", "a0.h0", "a0.h1", "m0", "a1.h0", "a1.h1", "m1", "logits"];
    const layerOf = (c: string) => (c === "input" ? -1 : c === "logits" ? 9 : Number(c.slice(1, 2)) + (c.startsWith("m") ? 0.5 : 0));
    const edges: ScoredEdge[] = [];
    for (const s of comps) for (const t of comps) if (layerOf(t) > layerOf(s) && s !== "logits" && t !== "input") edges.push(e(s, t, rand() - 0.5));
    for (let n = 0; n <= edges.length; n++) {
      const r = applySelection(edges, { mode: "top_n", n });
      for (const node of r.nodes) {
        if (node !== "input") expect(r.edges.some((x) => x.target === node)).toBe(true);
        if (node !== "logits") expect(r.edges.some((x) => x.source === node)).toBe(true);
      }
      expect(r.edges.length).toBeLessThanOrEqual(n);
    }
  });
});

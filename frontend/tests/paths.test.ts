import { describe, expect, it } from "vitest";
import type { REdge, RNode } from "../src/graph/canvas";
import type { CircuitEdge } from "../src/api/types";
import { drawPicture, syntheticCircuit } from "../src/graph/model";
import { collapseRoles, groupId, pathsThrough, pathUnion, strongestPaths, topoOrder } from "../src/graph/paths";

const e = (source: string, target: string, score: number): REdge => ({ key: `${source}->${target}`, source, target, score });

/** Every input -> logits path by brute force (the oracle), with its |score| product over max |score|. */
function allPaths(edges: REdge[]): { keys: string[]; weight: number }[] {
  const maxAbs = Math.max(...edges.map((x) => Math.abs(x.score)));
  const out: { keys: string[]; weight: number }[] = [];
  const walk = (n: string, keys: string[], w: number) => {
    if (n === "logits") { out.push({ keys, weight: w }); return; }
    for (const x of edges.filter((y) => y.source === n)) walk(x.target, [...keys, x.key], w * Math.abs(x.score) / maxAbs);
  };
  walk("input", [], 1);
  return out.sort((a, b) => b.weight - a.weight);
}

// input -> a0.h0 -> a1.h0 -> logits is the strong chain; m0 and a0.h1 carry weaker routes
const EDGES: REdge[] = [
  e("input", "a0.h0", 2), e("a0.h0", "a1.h0", -2), e("a1.h0", "logits", 2),
  e("input", "a0.h1", 0.5), e("a0.h1", "logits", 1), e("a0.h0", "m0", 1), e("m0", "logits", 0.2),
  e("input", "m0", 0.1), e("a0.h1", "a1.h0", 0.3), e("a1.h1", "logits", 5), // a1.h1: no input, on no path
];

describe("strongest paths", () => {
  it("orders nodes topologically", () => {
    const order = topoOrder(EDGES);
    for (const x of EDGES) expect(order.indexOf(x.source)).toBeLessThan(order.indexOf(x.target));
    expect(() => topoOrder([e("a", "b", 1), e("b", "a", 1)])).toThrow(/cycle/);
  });
  it("finds the k best input -> logits paths by |score| product, as brute force does", () => {
    const oracle = allPaths(EDGES);
    for (const k of [1, 2, 3, 10]) {
      const got = strongestPaths(EDGES, k);
      expect(got.map((p) => p.edges)).toEqual(oracle.slice(0, k).map((p) => p.keys));
      got.forEach((p, i) => expect(p.weight).toBeCloseTo(oracle[i].weight, 12));
    }
    expect(strongestPaths(EDGES, 1)[0].nodes).toEqual(["input", "a0.h0", "a1.h0", "logits"]);
    expect(strongestPaths(EDGES, 0)).toEqual([]);
  });
  it("matches brute force on a random synthetic circuit", () => {
    const c = syntheticCircuit(120, 6, 3);
    const edges = c.edges.map((x) => e(x.source, x.target, x.score));
    const oracle = allPaths(edges);
    const got = strongestPaths(edges, 7);
    expect(got.map((p) => p.weight)).toHaveLength(Math.min(7, oracle.length));
    got.forEach((p, i) => expect(p.weight).toBeCloseTo(oracle[i].weight, 12));
  });
  it("keeps only the union of the strongest paths and counts the rest as hidden", () => {
    const u = pathUnion(strongestPaths(EDGES, 2));
    expect([...u.edges].sort()).toEqual(["a0.h0->a1.h0", "a0.h1->logits", "a1.h0->logits", "input->a0.h0", "input->a0.h1"]);
    expect(u.nodes.has("a1.h1")).toBe(false);
  });
});

describe("hover highlight", () => {
  it("highlights exactly the edges on input -> logits paths through the node", () => {
    const got = pathsThrough(EDGES, "a1.h0");
    expect([...got.edges].sort()).toEqual(["a0.h0->a1.h0", "a0.h1->a1.h0", "a1.h0->logits", "input->a0.h0", "input->a0.h1"]);
    // oracle: an edge is highlighted iff some brute-force path holds both the node and the edge
    for (const node of ["a0.h0", "a0.h1", "m0", "a1.h0"]) {
      const want = new Set(allPaths(EDGES).filter((p) => p.keys.some((k) => k.endsWith(`->${node}`) || k.startsWith(`${node}->`)))
        .flatMap((p) => p.keys));
      expect([...pathsThrough(EDGES, node).edges].sort()).toEqual([...want].sort());
    }
    expect(pathsThrough(EDGES, "a1.h1").edges.size).toBe(0); // not reachable from the input
  });
});

describe("role groups", () => {
  const node = (id: string, role: string | null, x: number, importance = 0.5): RNode =>
    ({ id, x, y: 10, kind: id.startsWith("a") ? "head" : id.startsWith("m") ? "mlp" : (id as "input"), role, importance });
  const nodes = [node("input", null, 0), node("a0.h0", "mover", 100, 0.9), node("a0.h1", "relation", 100), node("m0", null, 130),
    node("a1.h0", "mover", 200, 0.4), node("a1.h1", null, 200), node("logits", null, 300)];

  it("collapses one role's heads into a group node and merges their edges", () => {
    const col = collapseRoles(nodes, EDGES, new Set(["mover"]));
    const g = groupId("mover");
    expect(col.members.get(g)).toEqual(["a0.h0", "a1.h0"]);
    const group = col.nodes.find((n) => n.id === g)!;
    expect(group).toMatchObject({ kind: "group", role: "mover", label: "mover ×2", x: 150, importance: 0.9 });
    expect(col.nodes.map((n) => n.id)).not.toContain("a0.h0");
    const score = Object.fromEntries(col.edges.map((x) => [x.key, x.score]));
    // a0.h0 -> a1.h0 is inside the group; input -> a0.h0 becomes input -> group; both into logits merge
    expect(score).toMatchObject({ [`input->${g}`]: 2, [`a0.h1->${g}`]: 0.3, [`${g}->logits`]: 2, [`${g}->m0`]: 1 });
    expect(col.edges.some((x) => x.source === g && x.target === g)).toBe(false);
    expect(score["a0.h1->logits"]).toBe(1);
  });
  it("expands again: no collapsed role gives the same nodes and edges", () => {
    const col = collapseRoles(nodes, EDGES, new Set());
    expect(col.nodes.map((n) => n.id)).toEqual(nodes.map((n) => n.id));
    expect(col.edges).toEqual(EDGES);
    expect(col.members.size).toBe(0);
  });
  it("sums parallel edges into one group edge", () => {
    const col = collapseRoles(nodes, [e("input", "a0.h0", 1), e("input", "a1.h0", -0.25), e("a0.h0", "logits", 1), e("a1.h0", "logits", 1)], new Set(["mover"]));
    expect(col.edges.map((x) => [x.key, x.score])).toEqual([["input->group:mover", 0.75], ["group:mover->logits", 2]]);
  });
});

describe("picture", () => {
  it("draws the strongest paths by default, sizes nodes by score and collapses a role", () => {
    const c = syntheticCircuit(300, 6, 4);
    const scores = new Map(c.nodes.map((n, i) => [n.id, i + 1]));
    c.nodes = c.nodes.map((n) => ({ ...n, score: scores.get(n.id)! }));
    const all = drawPicture(c, { mode: "server" }, { topPaths: null, collapsed: new Set() });
    const top = drawPicture(c, { mode: "server" }, { topPaths: 5, collapsed: new Set() });
    expect(all.hiddenEdges).toBe(0);
    expect(top.edges.length).toBeLessThan(all.edges.length);
    expect(top.hiddenEdges).toBe(all.edges.length - top.edges.length);
    const want = pathUnion(strongestPaths(all.edges, 5));
    expect(new Set(top.edges.map((x) => x.key))).toEqual(want.edges);
    const heads = top.nodes.filter((n) => n.kind === "head" || n.kind === "mlp");
    const best = heads.reduce((a, b) => (scores.get(a.id)! > scores.get(b.id)! ? a : b));
    expect(best.importance).toBe(1);
    for (const n of heads) expect(n.importance).toBeCloseTo(scores.get(n.id)! / scores.get(best.id)!, 12);
    const movers = top.nodes.filter((n) => n.role === "mover").map((n) => n.id);
    const grouped = drawPicture(c, { mode: "server" }, { topPaths: 5, collapsed: new Set(["mover"]) });
    if (movers.length) {
      expect(grouped.groups.get(groupId("mover"))!.sort()).toEqual(movers.sort());
      expect(grouped.nodes.some((n) => n.role === "mover" && n.kind === "head")).toBe(false);
    }
  });
  it("keeps server edges with a zero score out of paths", () => {
    const edges: CircuitEdge[] = [
      { source: "input", target: "m0", slot: "mlp_in", receiver: "m0", score: 0, in_circuit: true },
      { source: "m0", target: "logits", slot: "logits", receiver: "logits", score: 1, in_circuit: true },
    ];
    const c = { ...syntheticCircuit(1, 3, 2), edges, nodes: [] };
    expect(drawPicture(c, { mode: "server" }, { topPaths: 3, collapsed: new Set() }).edges).toEqual([]);
  });
});

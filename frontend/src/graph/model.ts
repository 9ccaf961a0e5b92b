/** From a circuit result (+ client selection) to the renderer's nodes and edges at grid positions. */
import type { CircuitEdge, CircuitResult } from "../api/types";
import type { DiffStyle, REdge, RNode } from "./canvas";
import { type NodeRef, nodePosition } from "./layout";
import { collapseRoles, pathUnion, strongestPaths } from "./paths";
import { applySelection, edgeKey, type Selection, type SharedReceivers } from "./prune";

export interface Drawn {
  nodes: RNode[];
  edges: REdge[];
  circuitEdges: CircuitEdge[];
}

export function renderNode(id: string, ref: NodeRef, nLayers: number, nHeads: number, role: string | null = null,
                           importance?: number, token: string | null = null): RNode {
  const p = nodePosition(ref, nLayers, nHeads);
  return { id, x: p.x, y: p.y, kind: ref.kind, layer: ref.layer, role, label: id, importance, token };
}

/** Node id -> its place in the graph, read from the results' node records (no id parsing). */
export function nodeRefs(...results: CircuitResult[]): Map<string, NodeRef> {
  const out = new Map<string, NodeRef>();
  for (const c of results) for (const n of c.nodes) out.set(n.id, { kind: n.kind, layer: n.layer ?? null, head: n.head ?? null });
  return out;
}

function refOf(refs: Map<string, NodeRef>, id: string): NodeRef {
  return refs.get(id) ?? { kind: id === "input" ? "input" : "logits", layer: null, head: null };
}

/** Node id -> its top lens token at the last position (nodes that have one). */
export function tokenMap(c: CircuitResult): Map<string, string> {
  const out = new Map<string, string>();
  for (const n of c.nodes) if (n.top_token && typeof n.top_token.token === "string") out.set(n.id, n.top_token.token);
  return out;
}

/** Node importance: |node score| over the largest among ``ids`` (heads and MLPs; the endpoints 1). */
export function importanceMap(c: CircuitResult, ids: Iterable<string>): Map<string, number> {
  const score = new Map(c.nodes.map((n) => [n.id, Math.abs(n.score ?? 0)]));
  const list = [...ids];
  const top = list.reduce((m, id) => (id === "input" || id === "logits" ? m : Math.max(m, score.get(id) ?? 0)), 0) || 1;
  return new Map(list.map((id) => [id, id === "input" || id === "logits" ? 1 : (score.get(id) ?? 0) / top]));
}

export function roleMap(c: CircuitResult): Map<string, string | null> {
  const roles = new Map<string, string | null>();
  for (const n of c.nodes) roles.set(n.id, n.role ?? null);
  for (const [id, h] of Object.entries(c.heads ?? {})) if (h.role) roles.set(id, h.role);
  return roles;
}

/** The heads each grouped k/v receiver feeds (GQA), from the result's graph. */
export function sharedReceivers(c: CircuitResult): SharedReceivers {
  return c.graph.shared_receivers ?? {};
}

export function drawCircuit(c: CircuitResult, sel: Selection): Drawn {
  const { edges, nodes, drawTarget } = applySelection(c.edges, sel, sharedReceivers(c));
  const refs = nodeRefs(c);
  const roles = roleMap(c);
  const tokens = tokenMap(c);
  const { n_layers: L, n_heads: H } = c.graph;
  const imp = importanceMap(c, nodes);
  return {
    nodes: [...nodes].map((id) => renderNode(id, refOf(refs, id), L, H, roles.get(id) ?? null, imp.get(id), tokens.get(id) ?? null)),
    edges: edges.map((e) => ({ key: edgeKey(e), source: e.source, target: drawTarget(e), score: e.score })),
    circuitEdges: edges,
  };
}

export interface PictureOptions {
  /** Draw only the union of the k strongest input -> logits paths (null: every selected edge). */
  topPaths: number | null;
  /** Roles whose heads are collapsed into one group node. */
  collapsed: ReadonlySet<string>;
}

export interface Picture extends Drawn {
  /** Edges of the selection left out by the strongest-paths filter. */
  hiddenEdges: number;
  /** Group node id -> its member heads. */
  groups: Map<string, string[]>;
}

/** The circuit picture: selection, then the strongest paths (by default), then the role groups. */
export function drawPicture(c: CircuitResult, sel: Selection, opts: PictureOptions): Picture {
  const d = drawCircuit(c, sel);
  let { nodes, edges } = d;
  let circuitEdges = d.circuitEdges;
  let hiddenEdges = 0;
  if (opts.topPaths !== null) {
    const keep = pathUnion(strongestPaths(edges, opts.topPaths));
    hiddenEdges = edges.length - keep.edges.size;
    edges = edges.filter((e) => keep.edges.has(e.key));
    nodes = nodes.filter((n) => keep.nodes.has(n.id));
    circuitEdges = circuitEdges.filter((e) => keep.edges.has(edgeKey(e)));
    const imp = importanceMap(c, nodes.map((n) => n.id));
    nodes = nodes.map((n) => ({ ...n, importance: imp.get(n.id) }));
  }
  const col = collapseRoles(nodes, edges, opts.collapsed);
  return { nodes: col.nodes, edges: col.edges, circuitEdges, hiddenEdges, groups: col.members };
}

export interface DiffSpec {
  added: string[];
  removed: string[];
  reweighted: { key: string; pre: number; post: number }[];
}

/** One DAG with the union of the pre and post circuits; added / removed / reweighted edges styled. */
export function drawDiff(pre: CircuitResult, post: CircuitResult, diff: DiffSpec): Drawn & { counts: Record<string, number> } {
  const { n_layers: L, n_heads: H } = post.graph;
  const style = new Map<string, DiffStyle>();
  for (const k of diff.added) style.set(k, "added");
  for (const k of diff.removed) style.set(k, "removed");
  for (const r of diff.reweighted) style.set(r.key, "reweighted");
  const byKey = new Map<string, CircuitEdge>();
  for (const e of pre.edges) if (e.in_circuit) byKey.set(edgeKey(e), e);
  for (const e of post.edges) if (e.in_circuit || style.get(edgeKey(e)) === "added") byKey.set(edgeKey(e), e);
  for (const k of diff.removed) {
    if (!byKey.has(k)) {
      const e = pre.edges.find((x) => edgeKey(x) === k);
      if (e) byKey.set(k, e);
    }
  }
  const roles = new Map([...roleMap(pre), ...roleMap(post)]);
  const tokens = new Map([...tokenMap(pre), ...tokenMap(post)]); // the post-edit token where both have one
  const imp = importanceMap(post, new Set([...pre.nodes, ...post.nodes].map((n) => n.id)));
  const refs = nodeRefs(pre, post);
  const nodes = new Set<string>();
  const edges: REdge[] = [];
  const counts = { added: 0, removed: 0, reweighted: 0, same: 0 };
  for (const [k, e] of byKey) {
    nodes.add(e.source);
    nodes.add(e.target);
    const d = style.get(k) ?? null;
    counts[d ?? "same"]++;
    edges.push({ key: k, source: e.source, target: e.target, score: e.score, diff: d });
  }
  return {
    nodes: [...nodes].map((id) => renderNode(id, refOf(refs, id), L, H, roles.get(id) ?? null, imp.get(id), tokens.get(id) ?? null)),
    edges,
    circuitEdges: [...byKey.values()],
    counts,
  };
}

/** Deterministic synthetic circuit (for the render benchmark): all candidate edges in the circuit. */
export function syntheticCircuit(nEdges: number, nLayers = 30, nHeads = 9): CircuitResult {
  let seed = 12345;
  const rand = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  const comps: string[][] = [["input"]];
  const made = new Map<string, NodeRef>([["input", { kind: "input", layer: null, head: null }],
    ["logits", { kind: "logits", layer: null, head: null }]]);
  for (let l = 0; l < nLayers; l++) {
    const heads = Array.from({ length: nHeads }, (_, j) => `a${l}.h${j}`);
    heads.forEach((id, j) => made.set(id, { kind: "head", layer: l, head: j }));
    made.set(`m${l}`, { kind: "mlp", layer: l, head: null });
    comps.push([...heads, `m${l}`]);
  }
  comps.push(["logits"]);
  const seen = new Set<string>();
  const edges: CircuitEdge[] = [];
  const slots = ["q", "k", "v"];
  let guard = 0;
  while (edges.length < nEdges && guard++ < nEdges * 50) {
    const a = Math.floor(rand() * (comps.length - 1));
    const b = a + 1 + Math.floor(rand() * Math.min(4, comps.length - 1 - a));
    const src = comps[a][Math.floor(rand() * comps[a].length)];
    const tgt = comps[b][Math.floor(rand() * comps[b].length)];
    if (src === "input" && tgt === "logits") continue;
    const slot = tgt === "logits" ? "logits" : made.get(tgt)!.kind === "mlp" ? "mlp_in" : slots[Math.floor(rand() * 3)];
    const receiver = slot === "logits" || slot === "mlp_in" ? tgt : `${tgt}<${slot}>`;
    const key = `${src}->${receiver}`;
    if (seen.has(key)) continue;
    seen.add(key);
    edges.push({ source: src, target: tgt, slot, receiver, score: (rand() - 0.4) * 2, in_circuit: true });
  }
  const ids = new Set<string>();
  for (const e of edges) { ids.add(e.source); ids.add(e.target); }
  const roles = ["mover", "relation", "mixture", null] as const;
  return {
    schema_version: 1, kind: "circuit", model: "synthetic", revision: "synthetic", prompt: "synthetic", target: " x",
    target_id: 0, tokens: ["synthetic"], subject: null, method: "eap", ablation: "patch", metric: "logit_diff",
    corrupt_prompt: null, corrupt_prompts: [], counterfactual: null, params: {},
    graph: { n_layers: nLayers, n_heads: nHeads, n_kv_heads: nHeads, kv_mode: "ungrouped", total_nodes: ids.size,
      total_edges: edges.length, input_convention: "embed" },
    nodes: [...ids].map((id, i) => {
      const p = made.get(id)!;
      return { id, kind: p.kind, layer: p.layer, head: p.head, role: p.kind === "head" ? roles[i % 4] : null, score: 0, in_circuit: true };
    }),
    edges,
    metrics: { edges: edges.length, nodes: ids.size, edge_fraction: 1, node_fraction: 1, faithfulness: null,
      faithfulness_undefined: "synthetic", metric_full: null, metric_circuit: null, metric_empty: null,
      hit_at_10: { full: 0, circuit: 0, random: null }, target_rank: { full: 1, circuit: 1, empty: 1, random: [] },
      harmful_share: null },
    random: { edges: [], faithfulness: [] },
    curve: { points: [], cpr: null, cmd: null, cpr_normalised: null, cmd_normalised: null, faithfulness_undefined: "synthetic" },
    heads: {}, timings: {},
  };
}

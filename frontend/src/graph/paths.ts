/**
 * Path logic for the circuit picture, on drawn edges (source -> target node ids):
 * - strongest paths: the k input -> logits paths with the largest product of |score| / max |score| over their
 *   edges (each factor <= 1, so a long path must be strong all along to rank high), by a k-best dynamic
 *   programme over a topological order;
 * - the edges on any input -> logits path through one node (hover highlight);
 * - role groups: the heads of one role collapsed into one group node, and expanded again.
 */
import type { REdge, RNode } from "./canvas";

export interface Path {
  edges: string[]; // edge keys, input first
  nodes: string[];
  weight: number; // product of |score| / max |score|
}

/** Nodes in topological order (Kahn; ties by first appearance); throws on a cycle. */
export function topoOrder(edges: readonly REdge[]): string[] {
  const indeg = new Map<string, number>();
  const out = new Map<string, REdge[]>();
  for (const e of edges) {
    if (!indeg.has(e.source)) indeg.set(e.source, 0);
    indeg.set(e.target, (indeg.get(e.target) ?? 0) + 1);
    (out.get(e.source) ?? out.set(e.source, []).get(e.source)!).push(e);
  }
  const queue = [...indeg].filter(([, d]) => d === 0).map(([n]) => n);
  const order: string[] = [];
  while (queue.length) {
    const n = queue.shift()!;
    order.push(n);
    for (const e of out.get(n) ?? []) {
      const d = indeg.get(e.target)! - 1;
      indeg.set(e.target, d);
      if (d === 0) queue.push(e.target);
    }
  }
  if (order.length !== indeg.size) throw new Error("circuit graph has a cycle");
  return order;
}

/** The ``k`` strongest input -> logits paths, strongest first (ties: fewer edges, then edge keys). */
export function strongestPaths(edges: readonly REdge[], k: number, from = "input", to = "logits"): Path[] {
  if (k <= 0 || !edges.length) return [];
  const maxAbs = edges.reduce((m, e) => Math.max(m, Math.abs(e.score)), 0) || 1;
  const best = new Map<string, Path[]>([[from, [{ edges: [], nodes: [from], weight: 1 }]]]);
  const out = new Map<string, REdge[]>();
  for (const e of edges) (out.get(e.source) ?? out.set(e.source, []).get(e.source)!).push(e);
  const better = (a: Path, b: Path) => b.weight - a.weight || a.edges.length - b.edges.length
    || a.edges.join("|").localeCompare(b.edges.join("|"));
  for (const n of topoOrder(edges)) {
    const here = best.get(n);
    if (!here || n === to) continue;
    for (const e of out.get(n) ?? []) {
      const f = Math.abs(e.score) / maxAbs;
      if (f === 0) continue;
      const list = best.get(e.target) ?? [];
      for (const p of here) list.push({ edges: [...p.edges, e.key], nodes: [...p.nodes, e.target], weight: p.weight * f });
      list.sort(better);
      best.set(e.target, list.slice(0, k));
    }
  }
  return best.get(to) ?? [];
}

/** Edges and nodes of the union of ``paths``. */
export function pathUnion(paths: readonly Path[]): { edges: Set<string>; nodes: Set<string> } {
  const edges = new Set<string>(), nodes = new Set<string>();
  for (const p of paths) {
    for (const e of p.edges) edges.add(e);
    for (const n of p.nodes) nodes.add(n);
  }
  return { edges, nodes };
}

function reach(edges: readonly REdge[], start: string, forward: boolean): Set<string> {
  const adj = new Map<string, string[]>();
  for (const e of edges) {
    const [a, b] = forward ? [e.source, e.target] : [e.target, e.source];
    (adj.get(a) ?? adj.set(a, []).get(a)!).push(b);
  }
  const seen = new Set([start]);
  const stack = [start];
  while (stack.length) for (const m of adj.get(stack.pop()!) ?? []) if (!seen.has(m)) { seen.add(m); stack.push(m); }
  return seen;
}

/**
 * Edges on some input -> logits path through ``node``: edge u -> v with input ~> u, v ~> node (before it), or
 * node ~> u, v ~> logits (after it). Nodes: the ends of those edges.
 */
export function pathsThrough(edges: readonly REdge[], node: string, from = "input", to = "logits"): { edges: Set<string>; nodes: Set<string> } {
  const fromStart = reach(edges, from, true), toEnd = reach(edges, to, false);
  const toNode = reach(edges, node, false), fromNode = reach(edges, node, true);
  const keep = new Set<string>(), nodes = new Set<string>();
  if (!fromStart.has(node) || !toEnd.has(node)) return { edges: keep, nodes };
  for (const e of edges) {
    const before = fromStart.has(e.source) && toNode.has(e.target);
    const after = fromNode.has(e.source) && toEnd.has(e.target);
    if (before || after) { keep.add(e.key); nodes.add(e.source); nodes.add(e.target); }
  }
  return { edges: keep, nodes };
}

export const groupId = (role: string) => `group:${role}`;

/**
 * Collapse the heads of each role in ``roles`` into one group node (at its members' mean position, labelled
 * "mover ×3", importance = the members' largest). Edges into / out of members go to the group, parallel ones
 * merged (scores summed); edges between members vanish. ``members`` maps each group id to its heads.
 */
export function collapseRoles(nodes: readonly RNode[], edges: readonly REdge[], roles: ReadonlySet<string>):
  { nodes: RNode[]; edges: REdge[]; members: Map<string, string[]> } {
  const groupOf = new Map<string, string>();
  const members = new Map<string, RNode[]>();
  for (const n of nodes) {
    if (n.kind !== "head" || !n.role || !roles.has(n.role)) continue;
    const g = groupId(n.role);
    groupOf.set(n.id, g);
    (members.get(g) ?? members.set(g, []).get(g)!).push(n);
  }
  const out: RNode[] = nodes.filter((n) => !groupOf.has(n.id)).map((n) => ({ ...n }));
  for (const [g, ms] of members) {
    const role = ms[0].role!;
    out.push({
      id: g, kind: "group", role, label: `${role} ×${ms.length}`,
      x: ms.reduce((s, m) => s + m.x, 0) / ms.length, y: ms.reduce((s, m) => s + m.y, 0) / ms.length,
      importance: Math.max(...ms.map((m) => m.importance ?? 0)),
    });
  }
  const merged = new Map<string, REdge>();
  for (const e of edges) {
    const s = groupOf.get(e.source) ?? e.source, t = groupOf.get(e.target) ?? e.target;
    if (s === t) continue;
    if (s === e.source && t === e.target) { merged.set(e.key, { ...e }); continue; }
    const key = `${s}->${t}`;
    const prev = merged.get(key);
    if (prev) prev.score += e.score;
    else merged.set(key, { key, source: s, target: t, score: e.score, diff: e.diff ?? null });
  }
  return { nodes: out, edges: [...merged.values()], members: new Map([...members].map(([g, ms]) => [g, ms.map((m) => m.id)])) };
}

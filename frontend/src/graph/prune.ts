/**
 * Client-side edge selection (threshold or top-n over the candidate edges the server sent) followed by
 * dangling-node pruning to a fixpoint, the same rule as the backend: a node stays only if it has an in-edge
 * (input exempt) and an out-edge (logits exempt); an edge stays only if both its ends stay.
 */
export interface ScoredEdge {
  source: string;
  target: string;
  receiver?: string;
  score: number;
  in_circuit?: boolean;
}

export type Selection =
  | { mode: "server" }
  | { mode: "top_n"; n: number }
  | { mode: "threshold"; t: number };

export function edgeKey(e: { source: string; receiver?: string; target: string }): string {
  return `${e.source}->${e.receiver ?? e.target}`;
}

export function selectEdges<E extends ScoredEdge>(edges: readonly E[], sel: Selection): E[] {
  if (sel.mode === "server") return edges.filter((e) => e.in_circuit);
  if (sel.mode === "threshold") return edges.filter((e) => Math.abs(e.score) >= sel.t);
  const order = edges.map((_, i) => i).sort((a, b) => Math.abs(edges[b].score) - Math.abs(edges[a].score) || a - b);
  const keep = new Set(order.slice(0, Math.max(0, Math.floor(sel.n))));
  return edges.filter((_, i) => keep.has(i));
}

const GROUP_RE = /^a(\d+)\.g(\d+)<[kv]>$/;

/** Nodes an edge feeds: its target, or every head of the kv group for a grouped k/v receiver ("a3.g1<k>"). */
export function fedNodes(e: ScoredEdge, groupSize = 1): string[] {
  const m = groupSize > 1 ? GROUP_RE.exec(e.receiver ?? "") : null;
  if (!m) return [e.target];
  const g = Number(m[2]);
  return Array.from({ length: groupSize }, (_, i) => `a${m[1]}.h${g * groupSize + i}`);
}

export interface Pruned<E> {
  edges: E[];
  nodes: Set<string>;
  /** Node to draw an edge into: its target, or for a grouped receiver the first of its heads that stays. */
  drawTarget: (e: E) => string;
}

function finish<E extends ScoredEdge>(edges: E[], groupSize: number, alive: (n: string) => boolean): Pruned<E> {
  const nodes = new Set<string>();
  const target = new Map<E, string>();
  for (const e of edges) {
    nodes.add(e.source);
    const fed = fedNodes(e, groupSize).filter(alive);
    const t = fed[0] ?? e.target;
    target.set(e, t);
    for (const n of fed.length ? fed : [e.target]) nodes.add(n);
  }
  return { edges, nodes, drawTarget: (e) => target.get(e) ?? e.target };
}

/**
 * Dangling-node pruning to a fixpoint. A node stays if it has an in-edge (input exempt) and an out-edge (logits
 * exempt); an edge stays while its source stays and one of the nodes it feeds stays (a grouped k/v receiver
 * feeds every head of its group, as in the backend).
 */
export function pruneDangling<E extends ScoredEdge>(edges: readonly E[], groupSize = 1): Pruned<E> {
  let cur = edges.slice();
  let alive: (n: string) => boolean = () => true;
  for (;;) {
    const hasIn = new Set<string>();
    const hasOut = new Set<string>();
    for (const e of cur) {
      hasOut.add(e.source);
      for (const n of fedNodes(e, groupSize)) hasIn.add(n);
    }
    alive = (n: string) => (n === "input" || hasIn.has(n)) && (n === "logits" || hasOut.has(n));
    const next = cur.filter((e) => alive(e.source) && e.source !== "logits" && fedNodes(e, groupSize).some((n) => n !== "input" && alive(n)));
    if (next.length === cur.length) break;
    cur = next;
  }
  return finish(cur, groupSize, alive);
}

export function applySelection<E extends ScoredEdge>(edges: readonly E[], sel: Selection, groupSize = 1): Pruned<E> {
  // The server's own selection is already a fixpoint, so pruning it again changes nothing but names its nodes.
  return pruneDangling(selectEdges(edges, sel), groupSize);
}

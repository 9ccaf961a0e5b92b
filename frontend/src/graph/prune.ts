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

/** Receiver id -> the heads it feeds, for receivers that feed several (the result's graph.shared_receivers). */
export type SharedReceivers = Readonly<Record<string, readonly string[]>>;

/** Nodes an edge feeds: its target, or every head of the kv group for a grouped k/v receiver. */
export function fedNodes(e: ScoredEdge, shared: SharedReceivers = {}): string[] {
  const heads = e.receiver ? shared[e.receiver] : undefined;
  return heads && heads.length ? [...heads] : [e.target];
}

export interface Pruned<E> {
  edges: E[];
  nodes: Set<string>;
  /** Node to draw an edge into: its target, or for a grouped receiver the first of its heads that stays. */
  drawTarget: (e: E) => string;
}

function finish<E extends ScoredEdge>(edges: E[], shared: SharedReceivers, alive: (n: string) => boolean): Pruned<E> {
  const nodes = new Set<string>();
  const target = new Map<E, string>();
  for (const e of edges) {
    nodes.add(e.source);
    const fed = fedNodes(e, shared).filter(alive);
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
export function pruneDangling<E extends ScoredEdge>(edges: readonly E[], shared: SharedReceivers = {}): Pruned<E> {
  let cur = edges.slice();
  let alive: (n: string) => boolean = () => true;
  for (;;) {
    const hasIn = new Set<string>();
    const hasOut = new Set<string>();
    for (const e of cur) {
      hasOut.add(e.source);
      for (const n of fedNodes(e, shared)) hasIn.add(n);
    }
    alive = (n: string) => (n === "input" || hasIn.has(n)) && (n === "logits" || hasOut.has(n));
    const next = cur.filter((e) => alive(e.source) && e.source !== "logits" && fedNodes(e, shared).some((n) => n !== "input" && alive(n)));
    if (next.length === cur.length) break;
    cur = next;
  }
  return finish(cur, shared, alive);
}

export function applySelection<E extends ScoredEdge>(edges: readonly E[], sel: Selection, shared: SharedReceivers = {}): Pruned<E> {
  // The server's own selection is already a fixpoint, so pruning it again changes nothing but names its nodes.
  return pruneDangling(selectEdges(edges, sel), shared);
}

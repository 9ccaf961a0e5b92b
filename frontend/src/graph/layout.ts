/**
 * Fixed grid for the circuit DAG; no general layout algorithm. x = layer column (input at the left, logits at
 * the right); within a layer column the heads are stacked by head index and the MLP sits below them, nudged
 * right so the attention -> MLP edges of the same layer stay visible.
 */
export interface Point {
  x: number;
  y: number;
}
/** A node's place in the graph, as the wire's node records carry it ({kind, layer, head}). */
export interface NodeRef {
  kind: "input" | "head" | "mlp" | "logits";
  layer: number | null;
  head: number | null;
}

export const GRID = { col: 110, row: 16, mlpDx: 36, mlpGap: 14 } as const;

/** Column of a node: input 0, layer l -> l + 1, logits n_layers + 1 (used for replay ordering too). */
export function nodeColumn(p: NodeRef, nLayers: number): number {
  if (p.kind === "input") return 0;
  if (p.kind === "logits") return nLayers + 1;
  return (p.layer ?? 0) + 1;
}

export function nodePosition(p: NodeRef, nLayers: number, nHeads: number): Point {
  const mlpY = nHeads * GRID.row + GRID.mlpGap;
  const midY = mlpY / 2;
  switch (p.kind) {
    case "input":
      return { x: 0, y: midY };
    case "logits":
      return { x: (nLayers + 1) * GRID.col, y: midY };
    case "head":
      return { x: (p.layer! + 1) * GRID.col, y: p.head! * GRID.row };
    case "mlp":
      return { x: (p.layer! + 1) * GRID.col + GRID.mlpDx, y: mlpY };
  }
}

export function gridExtent(nLayers: number, nHeads: number): { width: number; height: number } {
  return { width: (nLayers + 1) * GRID.col, height: nHeads * GRID.row + GRID.mlpGap };
}

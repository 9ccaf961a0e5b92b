/**
 * Fixed grid for the circuit DAG; no general layout algorithm. x = layer column (input at the left, logits at
 * the right); within a layer column the heads are stacked by head index and the MLP sits below them, nudged
 * right so the attention -> MLP edges of the same layer stay visible.
 */
export interface Point {
  x: number;
  y: number;
}
export interface ParsedNode {
  kind: "input" | "head" | "mlp" | "logits";
  layer: number | null;
  head: number | null;
}

export const GRID = { col: 110, row: 16, mlpDx: 36, mlpGap: 14 } as const;

const HEAD_RE = /^a(\d+)\.h(\d+)$/;
const MLP_RE = /^m(\d+)$/;

export function parseNodeId(id: string): ParsedNode | null {
  if (id === "input") return { kind: "input", layer: null, head: null };
  if (id === "logits") return { kind: "logits", layer: null, head: null };
  let m = HEAD_RE.exec(id);
  if (m) return { kind: "head", layer: Number(m[1]), head: Number(m[2]) };
  m = MLP_RE.exec(id);
  if (m) return { kind: "mlp", layer: Number(m[1]), head: null };
  return null;
}

/** Column of a node: input 0, layer l -> l + 1, logits n_layers + 1 (used for replay ordering too). */
export function nodeColumn(id: string, nLayers: number): number {
  const p = parseNodeId(id);
  if (!p) return 0;
  if (p.kind === "input") return 0;
  if (p.kind === "logits") return nLayers + 1;
  return (p.layer ?? 0) + 1;
}

export function nodePosition(id: string, nLayers: number, nHeads: number): Point {
  const p = parseNodeId(id);
  const mlpY = nHeads * GRID.row + GRID.mlpGap;
  const midY = mlpY / 2;
  if (!p) return { x: 0, y: midY };
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

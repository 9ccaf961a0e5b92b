import { describe, expect, it } from "vitest";
import { GRID, type NodeRef, nodeColumn, nodePosition } from "../src/graph/layout";

/** A node record as the wire carries it (the tests write the refs, nothing parses ids). */
const head = (layer: number, h: number): NodeRef => ({ kind: "head", layer, head: h });
const mlp = (layer: number): NodeRef => ({ kind: "mlp", layer, head: null });
const INPUT: NodeRef = { kind: "input", layer: null, head: null };
const LOGITS: NodeRef = { kind: "logits", layer: null, head: null };

describe("grid layout", () => {
  it("puts input left, logits right, layer l in column l+1", () => {
    const L = 4, H = 3;
    expect(nodePosition(INPUT, L, H).x).toBe(0);
    expect(nodePosition(LOGITS, L, H).x).toBe(5 * GRID.col);
    expect(nodePosition(head(0, 0), L, H)).toEqual({ x: GRID.col, y: 0 });
    expect(nodePosition(head(2, 1), L, H)).toEqual({ x: 3 * GRID.col, y: GRID.row });
    expect(nodeColumn(head(2, 1), L)).toBe(3);
    expect(nodeColumn(LOGITS, L)).toBe(5);
  });

  it("stacks heads by index with the MLP below every head of its layer", () => {
    const L = 2, H = 5;
    const heads = Array.from({ length: H }, (_, j) => nodePosition(head(1, j), L, H));
    const ys = heads.map((p) => p.y);
    expect(ys).toEqual([...ys].sort((a, b) => a - b));
    expect(new Set(heads.map((p) => p.x)).size).toBe(1);
    const m = nodePosition(mlp(1), L, H);
    expect(m.y).toBeGreaterThan(Math.max(...ys));
    expect(m.x).toBeGreaterThan(heads[0].x);
    expect(m.x).toBeLessThan(nodePosition(head(2, 0), L, H).x);
    // input and logits centred vertically
    expect(nodePosition(INPUT, L, H).y).toBeCloseTo(m.y / 2);
  });

  it("is deterministic and independent of the edges (no layout algorithm)", () => {
    expect(nodePosition(head(7, 2), 30, 9)).toEqual(nodePosition(head(7, 2), 30, 9));
  });
});

import { describe, expect, it } from "vitest";
import { GRID, nodeColumn, nodePosition, parseNodeId } from "../src/graph/layout";

describe("grid layout", () => {
  it("parses node ids", () => {
    expect(parseNodeId("a3.h7")).toEqual({ kind: "head", layer: 3, head: 7 });
    expect(parseNodeId("m12")).toEqual({ kind: "mlp", layer: 12, head: null });
    expect(parseNodeId("input")?.kind).toBe("input");
    expect(parseNodeId("logits")?.kind).toBe("logits");
    expect(parseNodeId("a3")).toBeNull();
    expect(parseNodeId("x<script>")).toBeNull();
  });

  it("puts input left, logits right, layer l in column l+1", () => {
    const L = 4, H = 3;
    expect(nodePosition("input", L, H).x).toBe(0);
    expect(nodePosition("logits", L, H).x).toBe(5 * GRID.col);
    expect(nodePosition("a0.h0", L, H)).toEqual({ x: GRID.col, y: 0 });
    expect(nodePosition("a2.h1", L, H)).toEqual({ x: 3 * GRID.col, y: GRID.row });
    expect(nodeColumn("a2.h1", L)).toBe(3);
    expect(nodeColumn("logits", L)).toBe(5);
  });

  it("stacks heads by index with the MLP below every head of its layer", () => {
    const L = 2, H = 5;
    const heads = Array.from({ length: H }, (_, j) => nodePosition(`a1.h${j}`, L, H));
    const ys = heads.map((p) => p.y);
    expect(ys).toEqual([...ys].sort((a, b) => a - b));
    expect(new Set(heads.map((p) => p.x)).size).toBe(1);
    const mlp = nodePosition("m1", L, H);
    expect(mlp.y).toBeGreaterThan(Math.max(...ys));
    expect(mlp.x).toBeGreaterThan(heads[0].x);
    expect(mlp.x).toBeLessThan(nodePosition("a2.h0", L, H).x);
    // input and logits centred vertically
    expect(nodePosition("input", L, H).y).toBeCloseTo(mlp.y / 2);
  });

  it("is deterministic and independent of the edges (no layout algorithm)", () => {
    expect(nodePosition("a7.h2", 30, 9)).toEqual(nodePosition("a7.h2", 30, 9));
  });
});

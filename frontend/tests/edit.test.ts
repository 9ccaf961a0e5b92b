import { describe, expect, it, vi } from "vitest";
import { Client } from "../src/api/client";
import type { EditAnalysis, HeadDiffRow } from "../src/api/types";
import { headTags, shownHeadRows, sideLine, whyLines } from "../src/views/edit";

const row = (node: string, changed: boolean, extra: Partial<HeadDiffRow> = {}): HeadDiffRow => ({
  node, layer: 0, head: 0, change: changed ? 1 : 0, pre_norm: 1, rel_change: changed ? 1 : 0, changed,
  dla: { new: { pre: 0, post: 1, delta: 1 } }, subject_attention: { pre: 0.5, post: 0.5 },
  top: { pre: [], post: [] }, marks: { new: "absent", old: "absent", subject_entered: [], subject_left: [] }, mover: false,
  ...extra,
});

describe("edit view helpers", () => {
  it("hides unchanged heads unless asked, keeping the server's order", () => {
    const rows = [row("a1.h2", true), row("a1.h0", true), row("a0.h0", false)];
    expect(shownHeadRows(rows, false).map((r) => r.node)).toEqual(["a1.h2", "a1.h0"]);
    expect(shownHeadRows(rows, true).map((r) => r.node)).toEqual(["a1.h2", "a1.h0", "a0.h0"]);
  });
  it("tags targets and subject tokens entering or leaving the top tokens, and the mover pattern", () => {
    const r = row("a1.h2", true, { marks: { new: "entered", old: "left", subject_entered: [" Tower"], subject_left: [] }, mover: true });
    expect(headTags(r, "rome")).toEqual(["+new target", "−old target", "+subject ·Tower", "mover after ROME"]);
    expect(headTags(r, "ft-m").at(-1)).toBe("mover (new target)");
    expect(headTags(row("a0.h0", false))).toEqual([]);
  });
  it("says why a side cannot be diffed", () => {
    expect(sideLine("post", { usable: false, reason: "the circuit is empty (0 edges)", faithfulness: null, edges: 0, grow_top_n: 40 }))
      .toBe("post: 0 edges, faithfulness – — the circuit is empty (0 edges)");
    expect(sideLine("pre", { usable: true, reason: null, faithfulness: 0.91, edges: 30, grow_top_n: null })).toBe("pre: 30 edges, faithfulness 0.91");
  });
  it("asks for the server's default method and size unless given", async () => {
    const f = vi.fn(async () => new Response(JSON.stringify({}), { status: 200 }));
    await new Client(f).editCompare("s1");
    expect(String((f.mock.calls[0] as unknown[])[0])).toMatch(/\/api\/edits\/s1\/compare$/);
    await new Client(f).editCompare("s1", undefined, 40);
    expect(String((f.mock.calls[1] as unknown[])[0])).toMatch(/compare\?top_n=40$/);
  });
  it("states the why: lens block vs edited layer, the mover's tokens, side effects or their absence", () => {
    const a: EditAnalysis = {
      edit_method: "rome", edit_layer: 4,
      lens: { ranks_pre: [], ranks_post: [], first_top_block_pre: null, first_top_block_post: 7, offset: 3, top_k: 10,
        paper: "a few blocks after the edited layer (offset > 0)", note: null },
      mover: { switched: true, heads: [{ node: "a9.h1", change: 2, new_dla_delta: 1, old_left: true, top_pre: [" Paris"], top_post: [" Rome"] }] },
      side_effects: { items: [], summary: {
        neighbour: { n: 2, changed_rate: 0.5, became_new_rate: 0, mover_carries_new_rate: 1 },
        same_subject: { n: 0, changed_rate: null, became_new_rate: null, mover_carries_new_rate: null } } },
      rules: {},
    };
    const lines = Object.fromEntries(whyLines(a));
    expect(lines["new target in the lens"]).toBe("top 10 after block 7 (+3 vs edited layer 4); paper: a few blocks after the edited layer (offset > 0)");
    expect(lines["mover switch"]).toBe("yes: a9.h1 [·Paris] → [·Rome]");
    expect(lines["other subjects, same relation"]).toBe("2 prompts: answer changed 50.0%, became the new target 0.0%, a mover carries the new target 100.0%");
    expect(lines["other facts, same subject"]).toBe("no such LRE prompt for this edit");
    const never = whyLines({ ...a, lens: { ...a.lens, first_top_block_post: null, offset: null, note: "never" }, mover: { switched: false, heads: [] } });
    expect(never[0][1]).toContain("never in the top 10");
    expect(never[1][1]).toBe("no head that reads the subject gained the new target");
  });
});

import { describe, expect, it } from "vitest";
import { decodeState, encodeState, parseRoute, stateToRecord, writeStateToUrl, type ViewState } from "../src/state/url";

describe("URL view state", () => {
  const cases: ViewState[] = [
    {},
    { top_n: 40, node: "a3.h7", step: 5, labels: true },
    { threshold: 0.0125, edge: "a0.h1->a3.h2<q>", show_all: true },
    { threshold: 0, node: "logits" },
    { top_n: 1, node: "m0" },
    { top_n: 30, all_paths: true, paths: 25, groups: ["mover", "relation"] },
  ];
  it.each(cases)("round-trips %o", (s) => {
    expect(decodeState(encodeState(s))).toEqual(s);
    expect(decodeState(new URLSearchParams(encodeState(s)))).toEqual(s);
    expect(decodeState(stateToRecord(s))).toEqual(s);
  });
  it("threshold wins over top_n; junk is dropped", () => {
    expect(decodeState("threshold=0.5&top_n=3")).toEqual({ threshold: 0.5 });
    expect(decodeState("top_n=abc&node=<img>&step=-1&labels=0&edge=x\"y")).toEqual({});
    expect(decodeState("?node=a1.h2&foo=bar")).toEqual({ node: "a1.h2" });
    expect(decodeState("groups=relation,<b>,mover,mover")).toEqual({ groups: ["mover", "relation"] });
  });
  it("writes with replaceState, keeping the path", () => {
    const calls: string[] = [];
    const loc = { pathname: "/c/abc", search: "", hash: "" } as Location;
    const hist = { state: null, replaceState: (_: unknown, __: string, url: string) => calls.push(url) } as unknown as History;
    writeStateToUrl({ top_n: 12, node: "a1.h0" }, loc, hist);
    expect(calls).toEqual(["/c/abc?top_n=12&node=a1.h0"]);
  });
  it("routes", () => {
    const id = "a".repeat(64);
    expect(parseRoute(`/c/${id}`, "")).toEqual({ page: "circuit", id, valid: true });
    expect(parseRoute("/c/%3Cscript%3E", "")).toMatchObject({ page: "circuit", valid: false });
    expect(parseRoute("/c/%E0%A4%A", "")).toMatchObject({ page: "circuit", valid: false });
    expect(parseRoute("/v/xyz", "")).toEqual({ page: "view", short: "xyz" });
    expect(parseRoute("/", "?bench=2000")).toEqual({ page: "bench", edges: 2000 });
    expect(parseRoute("/", "")).toEqual({ page: "home" });
  });
});

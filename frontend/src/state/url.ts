/** View state of a circuit page kept in the URL query (history.replaceState) so reload and links restore it. */
export interface ViewState {
  threshold?: number;
  top_n?: number;
  node?: string;
  edge?: string;
  step?: number;
  labels?: boolean;
  show_all?: boolean;
  /** Draw every selected edge, not only the strongest paths. */
  all_paths?: boolean;
  /** How many strongest paths are drawn. */
  paths?: number;
  /** Roles whose heads are collapsed into group nodes. */
  groups?: string[];
}

const NUM_KEYS = ["threshold", "top_n", "step", "paths"] as const;
const STR_KEYS = ["node", "edge"] as const;
const BOOL_KEYS = ["labels", "show_all", "all_paths"] as const;
const ROLES = new Set(["mover", "relation", "mixture"]);
const NODE_RE = /^(input|logits|a\d+\.h\d+|m\d+)$/;
const EDGE_RE = /^[A-Za-z0-9.]+->[A-Za-z0-9.<>]+$/;

export function encodeState(s: ViewState): string {
  const q = new URLSearchParams();
  if (s.threshold !== undefined && Number.isFinite(s.threshold)) q.set("threshold", String(s.threshold));
  else if (s.top_n !== undefined && Number.isFinite(s.top_n)) q.set("top_n", String(Math.round(s.top_n)));
  if (s.node) q.set("node", s.node);
  if (s.edge) q.set("edge", s.edge);
  if (s.step !== undefined && Number.isFinite(s.step)) q.set("step", String(Math.round(s.step)));
  if (s.paths !== undefined && Number.isFinite(s.paths)) q.set("paths", String(Math.round(s.paths)));
  const groups = (s.groups ?? []).filter((r) => ROLES.has(r));
  if (groups.length) q.set("groups", [...new Set(groups)].sort().join(","));
  for (const k of BOOL_KEYS) if (s[k]) q.set(k, "1");
  return q.toString();
}

/** Parse a query string (with or without "?"); unknown keys and malformed values are dropped. */
export function decodeState(search: string | URLSearchParams | Record<string, string>): ViewState {
  const q = search instanceof URLSearchParams ? search : new URLSearchParams(search as string | Record<string, string>);
  const s: ViewState = {};
  for (const k of NUM_KEYS) {
    const v = q.get(k);
    if (v === null || v.trim() === "") continue;
    const n = Number(v);
    if (!Number.isFinite(n) || n < 0) continue;
    if (k === "threshold") s.threshold = n;
    else s[k] = Math.round(n);
  }
  if (s.threshold !== undefined) delete s.top_n;
  for (const k of STR_KEYS) {
    const v = q.get(k);
    if (v && (k === "node" ? NODE_RE : EDGE_RE).test(v)) s[k] = v;
  }
  for (const k of BOOL_KEYS) if (q.get(k) === "1" || q.get(k) === "true") s[k] = true;
  const groups = (q.get("groups") ?? "").split(",").filter((r) => ROLES.has(r));
  if (groups.length) s.groups = [...new Set(groups)].sort();
  return s;
}

export function stateToRecord(s: ViewState): Record<string, string> {
  return Object.fromEntries(new URLSearchParams(encodeState(s)).entries());
}

/** Replace the current URL's query with the state (keeps the path, e.g. /c/{id}). */
export function writeStateToUrl(s: ViewState, loc: Location = window.location, hist: History = window.history): void {
  const qs = encodeState(s);
  const url = loc.pathname + (qs ? `?${qs}` : "") + loc.hash;
  if (url !== loc.pathname + loc.search + loc.hash) hist.replaceState(hist.state, "", url);
}

/** Content ids are sha256 hex; the API has the final word (404), this only rejects obvious junk early. */
export const RESULT_ID_RE = /^[0-9A-Za-z_-]{1,128}$/;

export type Route =
  | { page: "home" }
  | { page: "circuit"; id: string; valid: boolean }
  | { page: "view"; short: string }
  | { page: "bench"; edges: number };

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

export function parseRoute(pathname: string, search: string): Route {
  const q = new URLSearchParams(search);
  const bench = q.get("bench");
  if (bench && /^\d+$/.test(bench)) return { page: "bench", edges: Math.min(Number(bench), 50000) };
  let m = /^\/c\/([^/]*)\/?$/.exec(pathname);
  if (m) {
    const id = safeDecode(m[1]);
    return { page: "circuit", id, valid: RESULT_ID_RE.test(id) };
  }
  m = /^\/v\/([^/]+)\/?$/.exec(pathname);
  if (m) return { page: "view", short: safeDecode(m[1]) };
  return { page: "home" };
}

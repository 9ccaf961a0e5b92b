/**
 * Canvas renderer for the circuit DAG at preset grid positions. Pan (drag), zoom (wheel, +/- keys), click to
 * select a node or an edge, hover a node to highlight its input -> logits paths. Edges: width ~ |score|,
 * colour = sign (blue +, red -), or a diff style. Nodes: size ~ importance, colour = role, id labels placed
 * strongest first where they do not overlap a label already placed (all of them with ``labels``); a label
 * carries the node's top lens token on a second line, under the id (canvas / SVG text, never HTML).
 */
import { showToken } from "../util/dom";
import { pathsThrough } from "./paths";

export type DiffStyle = "added" | "removed" | "reweighted" | null;

export interface RNode {
  id: string;
  x: number;
  y: number;
  kind: "input" | "head" | "mlp" | "logits" | "group";
  /** the node's layer (null for input, logits and groups) */
  layer?: number | null;
  role?: string | null;
  label?: string;
  /** 0..1: the node's score over the largest drawn one (sets its size and label priority). */
  importance?: number;
  /** Top lens token at the last position, drawn under the id (null: none). */
  token?: string | null;
  /** Placed before the others when labels compete for room (the replay's newest layer). */
  fresh?: boolean;
}
export interface LabelBox {
  id: string;
  x: number;
  y: number;
  w: number;
  h: number;
  /** The token line drawn under the id, as shown (absent: none). */
  token?: string;
}

/** A token for a label: visible whitespace, at most ``max`` characters (ellipsis past it). */
export function tokenText(token: string, max = 14): string {
  const t = showToken(token);
  return t.length > max ? `${t.slice(0, max - 1)}…` : t;
}
const LINE = 13; // px between the id line and the token line
const TOKEN_COLOUR = "#1d4ed8";
export interface REdge {
  key: string;
  source: string;
  target: string;
  score: number;
  diff?: DiffStyle;
}
export type Selected = { type: "node"; id: string } | { type: "edge"; key: string } | null;

export const ROLE_COLOURS: Record<string, string> = {
  mover: "#d95f02",
  relation: "#1b9e77",
  mixture: "#7570b3",
};
const DIFF_COLOURS: Record<string, string> = { added: "#1a9850", removed: "#d73027", reweighted: "#e6a100" };
const POS = "37,99,235"; // blue
/** Extra CSS px rendered around the viewport so panning can reuse the cached layer. */
const CACHE_MARGIN = 300;
const NEG = "220,38,38"; // red

export class GraphCanvas {
  readonly canvas: HTMLCanvasElement;
  private ctx: CanvasRenderingContext2D;
  private nodes: RNode[] = [];
  private edges: REdge[] = [];
  private byId = new Map<string, RNode>();
  private maxAbs = 1;
  private scale = 1; // screen px per world unit along x
  private aspect = 1; // y scale / x scale (the grid is much wider than tall: stretch rows to use the box)
  private tx = 0;
  private ty = 0;
  private dpr = 1;
  private w = 0;
  private h = 0;
  private pending = 0;
  private userMoved = false;
  private idle: ReturnType<typeof setTimeout> | undefined;
  private cache: { canvas: HTMLCanvasElement; tx: number; ty: number; scale: number } | null = null;
  selected: Selected = null;
  /** Points the view fits to (default: the drawn nodes); the replay fits to the whole circuit while revealing. */
  fitTo: { x: number; y: number }[] | null = null;
  labels = false;
  /** Draw the nodes' top lens tokens under their ids. */
  tokens = true;
  lastDrawMs = 0;
  /** Hovered node and the edges / nodes on its input -> logits paths. */
  hovered: string | null = null;
  private highlight: { edges: Set<string>; nodes: Set<string> } | null = null;
  /** Labels drawn in the last full render (screen px, CSS), for tests. */
  placedLabels: LabelBox[] = [];
  onSelect: (s: Selected) => void = () => {};
  onHover: (id: string | null) => void = () => {};

  constructor(readonly container: HTMLElement) {
    this.canvas = document.createElement("canvas");
    this.canvas.className = "graph-canvas";
    this.canvas.tabIndex = 0;
    this.canvas.setAttribute("role", "img");
    this.canvas.setAttribute("aria-label", "circuit graph");
    container.append(this.canvas);
    const ctx = this.canvas.getContext("2d");
    if (!ctx) throw new Error("no 2d canvas");
    this.ctx = ctx;
    this.resize();
    if (typeof ResizeObserver !== "undefined") {
      new ResizeObserver(() => {
        const before = `${this.w}x${this.h}`;
        this.resize();
        if (`${this.w}x${this.h}` === before) return;
        // a graph laid out while hidden (or never touched by the user) is refitted to its real box
        if (!this.userMoved) this.fit();
        this.draw();
      }).observe(container);
    }
    this.installInput();
  }

  setData(nodes: RNode[], edges: REdge[], opts: { keepView?: boolean } = {}): void {
    this.nodes = nodes;
    // ascending |score|, so strong edges are drawn on top
    this.edges = edges.slice().sort((a, b) => Math.abs(a.score) - Math.abs(b.score));
    this.byId = new Map(nodes.map((n) => [n.id, n]));
    this.maxAbs = edges.reduce((m, e) => Math.max(m, Math.abs(e.score)), 0) || 1;
    this.container.dataset.nodes = String(nodes.length);
    this.container.dataset.edges = String(edges.length);
    this.setHover(this.hovered && this.byId.has(this.hovered) ? this.hovered : null, false);
    if (!opts.keepView) {
      this.resize();
      this.fit();
      this.userMoved = false;
    }
    this.draw();
  }

  /** Highlight the paths through ``id`` (null: none). */
  setHover(id: string | null, redraw = true): void {
    this.hovered = id;
    this.highlight = id ? pathsThrough(this.edges, id) : null;
    this.container.dataset.hovered = id ?? "";
    if (redraw) this.draw();
  }
  highlightedEdges(): string[] {
    return this.highlight ? [...this.highlight.edges] : [];
  }

  nodeRadius(n: RNode): number {
    return (n.kind === "mlp" ? 4 : 3) + 6 * Math.sqrt(Math.max(0, Math.min(1, n.importance ?? 0.3)));
  }

  counts(): { nodes: number; edges: number } {
    return { nodes: this.nodes.length, edges: this.edges.length };
  }
  nodeIds(): string[] {
    return this.nodes.map((n) => n.id);
  }
  edgeKeys(): string[] {
    return this.edges.map((e) => e.key);
  }
  edgeList(): { key: string; source: string; target: string }[] {
    return this.edges.map((e) => ({ key: e.key, source: e.source, target: e.target }));
  }

  resize(): void {
    const r = this.container.getBoundingClientRect();
    this.dpr = window.devicePixelRatio || 1;
    this.w = Math.max(50, Math.floor(r.width));
    this.h = Math.max(50, Math.floor(r.height));
    // assigning width/height clears the canvas: only when the size really changed
    if (this.canvas.width !== this.w * this.dpr) this.canvas.width = this.w * this.dpr;
    if (this.canvas.height !== this.h * this.dpr) this.canvas.height = this.h * this.dpr;
    this.canvas.style.width = `${this.w}px`;
    this.canvas.style.height = `${this.h}px`;
  }

  /** Fit the whole grid (all nodes) into the viewport with a margin. */
  fit(): void {
    const pts = this.fitTo ?? this.nodes;
    if (!pts.length) return;
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    for (const n of pts) {
      x0 = Math.min(x0, n.x); y0 = Math.min(y0, n.y); x1 = Math.max(x1, n.x); y1 = Math.max(y1, n.y);
    }
    const m = 40;
    const sx = (this.w - 2 * m) / Math.max(1, x1 - x0);
    const sy = (this.h - 2 * m) / Math.max(1, y1 - y0);
    this.scale = Math.max(0.05, Math.min(sx, 4));
    // rows may stretch up to 6x (never squash) so a wide, flat grid fills the box
    this.aspect = Math.max(1, Math.min(6, sy / this.scale));
    const ky = this.scale * this.aspect;
    this.tx = (this.w - (x1 - x0) * this.scale) / 2 - x0 * this.scale;
    this.ty = (this.h - (y1 - y0) * ky) / 2 - y0 * ky;
  }

  pan(dx: number, dy: number): void {
    this.tx += dx;
    this.ty += dy;
    this.requestBlit();
  }

  /** Pan and show the frame synchronously (the benchmark's frame body). */
  panNow(dx: number, dy: number): void {
    this.tx += dx;
    this.ty += dy;
    this.blit();
  }

  zoom(factor: number, cx = this.w / 2, cy = this.h / 2): void {
    const s = Math.max(0.05, Math.min(20, this.scale * factor));
    const f = s / this.scale;
    this.tx = cx - (cx - this.tx) * f;
    this.ty = cy - (cy - this.ty) * f;
    this.scale = s;
    this.requestBlit();
  }

  requestDraw(): void {
    if (this.pending) return;
    this.pending = requestAnimationFrame(() => { this.pending = 0; this.draw(); });
  }

  /** Next frame: move/scale the cached layer (cheap); a full redraw follows once interaction pauses. */
  private requestBlit(): void {
    if (this.pending) return;
    this.pending = requestAnimationFrame(() => { this.pending = 0; this.blit(); });
  }

  /**
   * Show the cached render under the current transform: one drawImage instead of re-rasterising thousands of
   * curves (software canvas raster is the bottleneck). Falls back to a full draw when the cache cannot cover it.
   */
  blit(): void {
    const c = this.cache;
    if (!c) return this.draw();
    const t0 = performance.now();
    const f = this.scale / c.scale;
    const { ctx } = this;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    // cache pixel (u, v) shows screen point (u/dpr - M, v/dpr - M) under the cached transform
    const ox = this.tx - c.tx * f - CACHE_MARGIN * f;
    const oy = this.ty - c.ty * f - CACHE_MARGIN * f;
    if (f === 1) ctx.drawImage(c.canvas, Math.round(ox * this.dpr), Math.round(oy * this.dpr)); // no resampling
    else ctx.drawImage(c.canvas, ox * this.dpr, oy * this.dpr, c.canvas.width * f, c.canvas.height * f);
    this.lastDrawMs = performance.now() - t0;
    if (this.idle) clearTimeout(this.idle);
    this.idle = setTimeout(() => { this.idle = undefined; this.draw(); }, 180);
  }

  private edgeWidth(e: REdge): number {
    return 0.6 + 3.4 * Math.sqrt(Math.abs(e.score) / this.maxAbs);
  }

  /** Full render into the cache layer (viewport + margin), then blit to the visible canvas. */
  draw(): void {
    const t0 = performance.now();
    if (this.idle) { clearTimeout(this.idle); this.idle = undefined; }
    const M = CACHE_MARGIN;
    const layer = this.cache?.canvas ?? document.createElement("canvas");
    const cw = (this.w + 2 * M) * this.dpr, ch = (this.h + 2 * M) * this.dpr;
    if (layer.width !== cw || layer.height !== ch) { layer.width = cw; layer.height = ch; }
    const ctx = layer.getContext("2d")!;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, cw, ch);
    ctx.setTransform(this.dpr, 0, 0, this.dpr, this.dpr * M, this.dpr * M);
    const px = 1; // drawing in screen px (world -> screen mapped per point: the scales differ along x and y)
    const kx = this.scale, ky = this.scale * this.aspect, tx = this.tx, ty = this.ty;
    const P = new Map<string, { x: number; y: number }>();
    for (const n of this.nodes) P.set(n.id, { x: n.x * kx + tx, y: n.y * ky + ty });
    const selEdge = this.selected?.type === "edge" ? this.selected.key : null;
    const selNode = this.selected?.type === "node" ? this.selected.id : null;
    const hl = this.highlight;
    // Edges batched into one path per style bucket (sign x 6 strength levels, diff styles, highlighted).
    const buckets = new Map<string, { colour: string; width: number; dash: boolean; path: Path2D }>();
    for (const e of this.edges) {
      const s = P.get(e.source);
      const t = P.get(e.target);
      if (!s || !t) continue;
      const level = Math.min(5, Math.floor(6 * Math.sqrt(Math.abs(e.score) / this.maxAbs)));
      const extra = e.key === selEdge ? 3 : selNode !== null && (e.source === selNode || e.target === selNode) ? 1 : 0;
      const faded = hl !== null && !hl.edges.has(e.key);
      const colour = faded ? "rgba(156,163,175,0.18)" : e.diff ? DIFF_COLOURS[e.diff]
        : `rgba(${e.score >= 0 ? POS : NEG},${(0.25 + 0.7 * (level + 0.5) / 6).toFixed(3)})`;
      const width = faded ? 0.6 : 0.6 + 3.4 * (level + 0.5) / 6 + extra + (hl ? 1 : 0);
      const key = `${colour}|${width}|${e.diff === "removed"}`;
      let b = buckets.get(key);
      if (!b) buckets.set(key, (b = { colour, width, dash: e.diff === "removed", path: new Path2D() }));
      const mx = (s.x + t.x) / 2;
      b.path.moveTo(s.x, s.y);
      if (Math.abs(s.y - t.y) < 1) {
        // same row (MLP -> MLP): arc below the row instead of running along it
        const dy = Math.min(80, 0.12 * Math.abs(t.x - s.x));
        b.path.bezierCurveTo(s.x, s.y + dy, t.x, t.y + dy, t.x, t.y);
      } else b.path.bezierCurveTo(mx, s.y, mx, t.y, t.x, t.y);
    }
    const order = [...buckets.values()].sort((a, b) => a.width - b.width);
    for (const b of order) {
      ctx.strokeStyle = b.colour;
      ctx.lineWidth = b.width * px;
      ctx.setLineDash(b.dash ? [6 * px, 4 * px] : []);
      ctx.stroke(b.path);
    }
    ctx.setLineDash([]);
    // nodes
    ctx.font = `${11 * px}px ui-monospace, Menlo, Consolas, monospace`;
    ctx.textBaseline = "middle";
    const boxes: LabelBox[] = [];
    for (const node of this.nodes) {
      const n = { ...node, ...P.get(node.id)! };
      if (n.kind === "input" || n.kind === "logits" || n.kind === "group") {
        const text = n.kind === "group" ? (n.label ?? n.id) : n.kind;
        const w = Math.max(44, ctx.measureText(text).width + 10) * px, hh = 18 * px;
        boxes.push({ id: n.id, x: n.x - w / 2, y: n.y - hh / 2, w, h: hh });
      }
    }
    const labelled = this.nodes.filter((n) => n.kind === "head" || n.kind === "mlp")
      .sort((a, b) => Number(!!b.fresh) - Number(!!a.fresh) || (b.importance ?? 0) - (a.importance ?? 0)
        || a.id.localeCompare(b.id));
    const labelAt = new Map<string, LabelBox>();
    for (const node of labelled) {
      const p = P.get(node.id)!;
      const r = this.nodeRadius(node);
      const text = node.label ?? node.id;
      const token = this.tokens && node.token ? tokenText(node.token) : undefined;
      const w = Math.max(ctx.measureText(text).width, token ? ctx.measureText(token).width : 0);
      const half = node.kind === "mlp" ? 1.4 * r : r; // the MLP square is drawn 1.4x wider than tall
      const box: LabelBox = { id: node.id, x: p.x + half + 2, y: p.y - 7, w, h: token ? 14 + LINE : 14 };
      if (token) box.token = token;
      const sel = node.id === selNode || node.id === this.hovered;
      if (this.labels || sel || !boxes.some((b) => overlaps(b, box))) { boxes.push(box); labelAt.set(node.id, box); }
    }
    for (const node of this.nodes) {
      const n = { ...node, ...P.get(node.id)! };
      const sel = n.id === selNode;
      const faded = hl !== null && !hl.nodes.has(n.id) && n.id !== this.hovered;
      ctx.globalAlpha = faded ? 0.3 : 1;
      if (n.kind === "input" || n.kind === "logits" || n.kind === "group") {
        const b = boxes.find((x) => x.id === n.id)!;
        ctx.fillStyle = n.kind === "group" ? (n.role && ROLE_COLOURS[n.role]) || "#9ca3af" : "#111827";
        ctx.fillRect(b.x, b.y, b.w, b.h);
        ctx.fillStyle = "#ffffff";
        ctx.textAlign = "center";
        ctx.fillText(n.kind === "group" ? (n.label ?? n.id) : n.kind, n.x, n.y);
      } else {
        const r = this.nodeRadius(n) * px;
        ctx.fillStyle = n.kind === "mlp" ? "#374151" : (n.role && ROLE_COLOURS[n.role]) || "#9ca3af";
        if (n.kind === "mlp") ctx.fillRect(n.x - r * 1.4, n.y - r, r * 2.8, r * 2);
        else {
          ctx.beginPath();
          ctx.arc(n.x, n.y, r, 0, Math.PI * 2);
          ctx.fill();
        }
        const box = labelAt.get(n.id);
        if (box) {
          ctx.fillStyle = "#111827";
          ctx.textAlign = "left";
          ctx.fillText(n.label ?? n.id, box.x, n.y);
          if (box.token) {
            const font = ctx.font;
            ctx.font = `italic ${font}`;
            ctx.fillStyle = TOKEN_COLOUR;
            ctx.fillText(box.token, box.x, n.y + LINE);
            ctx.font = font;
          }
        }
      }
      ctx.globalAlpha = 1;
      if (sel) {
        ctx.strokeStyle = "#111827";
        ctx.lineWidth = 2 * px;
        ctx.beginPath();
        ctx.arc(n.x, n.y, 10 * px, 0, Math.PI * 2);
        ctx.stroke();
      }
    }
    this.placedLabels = [...labelAt.values()];
    this.cache = { canvas: layer, tx: this.tx, ty: this.ty, scale: this.scale };
    const v = this.ctx;
    v.setTransform(1, 0, 0, 1, 0, 0);
    v.drawImage(layer, -M * this.dpr, -M * this.dpr);
    this.lastDrawMs = performance.now() - t0;
  }

  /** World coordinates of a screen point (CSS px, relative to the canvas). */
  toWorld(sx: number, sy: number): { x: number; y: number } {
    return { x: (sx - this.tx) / this.scale, y: (sy - this.ty) / (this.scale * this.aspect) };
  }
  /** Screen coordinates (CSS px, relative to the canvas) of a node, for tests and tooltips. */
  screenOf(id: string): { x: number; y: number } | null {
    const n = this.byId.get(id);
    return n ? { x: n.x * this.scale + this.tx, y: n.y * this.scale * this.aspect + this.ty } : null;
  }

  hitTest(sx: number, sy: number): Selected {
    let best: RNode | null = null;
    let bestD = 9; // px
    for (const n of this.nodes) {
      const p = this.screenOf(n.id)!;
      const d = Math.hypot(p.x - sx, p.y - sy);
      const lim = n.kind === "input" || n.kind === "logits" || n.kind === "group" ? 22 : Math.max(bestD, this.nodeRadius(n) + 2);
      if (d < lim && (!best || d < bestD)) { best = n; bestD = d; }
    }
    if (best) return { type: "node", id: best.id };
    // edges: distance to the sampled bezier in screen space
    let bestE: REdge | null = null;
    let bestED = 5;
    for (const e of this.edges) {
      const s = this.byId.get(e.source), t = this.byId.get(e.target);
      if (!s || !t) continue;
      const a = this.screenOf(s.id)!, b = this.screenOf(t.id)!;
      const d = bezierDistance(a.x, a.y, b.x, b.y, sx, sy);
      if (d < bestED) { bestED = d; bestE = e; }
    }
    return bestE ? { type: "edge", key: bestE.key } : null;
  }

  select(s: Selected): void {
    this.selected = s;
    this.draw();
  }

  private installInput(): void {
    const c = this.canvas;
    let drag: { x: number; y: number; moved: boolean } | null = null;
    c.addEventListener("pointerdown", (ev) => {
      drag = { x: ev.clientX, y: ev.clientY, moved: false };
      c.setPointerCapture?.(ev.pointerId);
    });
    c.addEventListener("pointermove", (ev) => {
      if (!drag) {
        const r = c.getBoundingClientRect();
        const hit = this.hitTest(ev.clientX - r.left, ev.clientY - r.top);
        const id = hit?.type === "node" && hit.id !== "input" && hit.id !== "logits" ? hit.id : null;
        if (id !== this.hovered) { this.setHover(id); this.onHover(id); }
        return;
      }
      const dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
      if (Math.abs(dx) + Math.abs(dy) > 2) drag.moved = true;
      if (drag.moved) {
        this.userMoved = true;
        drag.x = ev.clientX; drag.y = ev.clientY;
        this.pan(dx, dy);
      }
    });
    c.addEventListener("pointerup", (ev) => {
      const d = drag;
      drag = null;
      if (d && !d.moved) {
        const r = c.getBoundingClientRect();
        const hit = this.hitTest(ev.clientX - r.left, ev.clientY - r.top);
        this.select(hit);
        this.onSelect(hit);
      }
    });
    c.addEventListener("pointerleave", () => {
      if (this.hovered && !drag) { this.setHover(null); this.onHover(null); }
    });
    c.addEventListener("wheel", (ev) => {
      ev.preventDefault();
      this.userMoved = true;
      const r = c.getBoundingClientRect();
      this.zoom(Math.exp(-ev.deltaY * 0.0015), ev.clientX - r.left, ev.clientY - r.top);
    }, { passive: false });
    c.addEventListener("keydown", (ev) => {
      const k = ev.key;
      if (k === "+" || k === "=") this.zoom(1.2);
      else if (k === "-") this.zoom(1 / 1.2);
      else if (k === "0") { this.fit(); this.draw(); }
      else if (k === "ArrowLeft") this.pan(40, 0);
      else if (k === "ArrowRight") this.pan(-40, 0);
      else if (k === "ArrowUp") this.pan(0, 40);
      else if (k === "ArrowDown") this.pan(0, -40);
      else if (k === "Escape") { this.select(null); this.onSelect(null); }
      else return;
      ev.preventDefault();
    });
  }

  toBlob(): Promise<Blob | null> {
    return new Promise((res) => this.canvas.toBlob(res, "image/png"));
  }

  /** Standalone SVG of the current graph (world coordinates, all text escaped). */
  toSVG(): string {
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    for (const n of this.nodes) { x0 = Math.min(x0, n.x); y0 = Math.min(y0, n.y); x1 = Math.max(x1, n.x); y1 = Math.max(y1, n.y); }
    if (!this.nodes.length) { x0 = y0 = 0; x1 = y1 = 100; }
    const m = 40;
    const parts: string[] = [
      `<svg xmlns="http://www.w3.org/2000/svg" viewBox="${x0 - m} ${y0 - m} ${x1 - x0 + 2 * m} ${y1 - y0 + 2 * m}" font-family="monospace" font-size="10">`,
      `<rect x="${x0 - m}" y="${y0 - m}" width="${x1 - x0 + 2 * m}" height="${y1 - y0 + 2 * m}" fill="#fff"/>`,
    ];
    for (const e of this.edges) {
      const s = this.byId.get(e.source), t = this.byId.get(e.target);
      if (!s || !t) continue;
      const mx = (s.x + t.x) / 2;
      const colour = e.diff ? DIFF_COLOURS[e.diff] : e.score >= 0 ? `rgb(${POS})` : `rgb(${NEG})`;
      const dash = e.diff === "removed" ? ' stroke-dasharray="6 4"' : "";
      parts.push(`<path d="M${s.x} ${s.y}C${mx} ${s.y} ${mx} ${t.y} ${t.x} ${t.y}" fill="none" stroke="${colour}" stroke-opacity="0.8" stroke-width="${this.edgeWidth(e).toFixed(2)}"${dash}><title>${xml(e.key)} ${e.score}</title></path>`);
    }
    const shown = new Set(this.placedLabels.map((b) => b.id));
    for (const n of this.nodes) {
      const fill = n.kind === "mlp" ? "#374151" : n.kind === "head" || n.kind === "group" ? (n.role && ROLE_COLOURS[n.role]) || "#9ca3af" : "#111827";
      const r = n.kind === "head" || n.kind === "mlp" ? this.nodeRadius(n) / Math.max(0.05, this.scale) : 7;
      parts.push(`<circle cx="${n.x}" cy="${n.y}" r="${r.toFixed(2)}" fill="${fill}"><title>${xml(n.id)}</title></circle>`);
      if (this.labels || shown.has(n.id) || n.kind === "input" || n.kind === "logits" || n.kind === "group") {
        parts.push(`<text x="${(n.x + r + 2).toFixed(2)}" y="${n.y + 3}">${xml(n.label ?? n.id)}</text>`);
        if (this.tokens && n.token && (n.kind === "head" || n.kind === "mlp")) {
          parts.push(`<text class="token" x="${(n.x + r + 2).toFixed(2)}" y="${n.y + 14}" fill="${TOKEN_COLOUR}" font-style="italic">${xml(tokenText(n.token))}</text>`);
        }
      }
    }
    parts.push("</svg>");
    return parts.join("\n");
  }
}

export function overlaps(a: LabelBox, b: LabelBox): boolean {
  return a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
}

export function xml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;" })[c]!);
}

/** Distance from (px, py) to the cubic used for edges (horizontal tangents), sampled at 12 points. */
export function bezierDistance(x0: number, y0: number, x1: number, y1: number, px: number, py: number): number {
  const minX = Math.min(x0, x1) - 6, maxX = Math.max(x0, x1) + 6;
  const minY = Math.min(y0, y1) - 6, maxY = Math.max(y0, y1) + 6;
  if (px < minX || px > maxX || py < minY || py > maxY) return Infinity;
  const mx = (x0 + x1) / 2;
  let best = Infinity;
  let prevX = x0, prevY = y0;
  for (let i = 1; i <= 12; i++) {
    const t = i / 12, u = 1 - t;
    const x = u * u * u * x0 + 3 * u * u * t * mx + 3 * u * t * t * mx + t * t * t * x1;
    const y = u * u * u * y0 + 3 * u * u * t * y0 + 3 * u * t * t * y1 + t * t * t * y1;
    best = Math.min(best, segDist(prevX, prevY, x, y, px, py));
    prevX = x; prevY = y;
  }
  return best;
}

function segDist(ax: number, ay: number, bx: number, by: number, px: number, py: number): number {
  const dx = bx - ax, dy = by - ay;
  const l2 = dx * dx + dy * dy;
  const t = l2 ? Math.max(0, Math.min(1, ((px - ax) * dx + (py - ay) * dy) / l2)) : 0;
  return Math.hypot(ax + t * dx - px, ay + t * dy - py);
}

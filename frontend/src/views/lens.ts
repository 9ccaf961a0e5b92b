/** Logit-lens heatmap (layers x positions, top token in each cell, hover for top-k) and target curves. */
import type { LensResult } from "../api/types";
import { clear, fmt, h, showToken } from "../util/dom";
import { escapePlotly } from "../util/escape";
import { BASE_LAYOUT, PLOT_CONFIG, plotly } from "../util/plot";

export function probColour(p: number): string {
  const a = Math.max(0, Math.min(1, p));
  // white -> blue ramp; text stays dark until the cell is dark
  const r = Math.round(255 - 200 * a), g = Math.round(255 - 150 * a), b = 255;
  return `rgb(${r},${g},${b})`;
}

export class LensView {
  readonly el: HTMLElement;
  private grid: HTMLElement;
  private tip: HTMLElement;
  private curves: HTMLElement;
  lens: LensResult | null = null;

  constructor() {
    this.grid = h("div", { class: "lens-grid", "data-testid": "lens-grid" });
    this.tip = h("div", { class: "tooltip", role: "tooltip", hidden: true });
    this.curves = h("div", { class: "lens-curves", "data-testid": "lens-curves" });
    this.el = h("section", { class: "panel lens-panel", "aria-label": "logit lens" },
      h("h2", { text: "Logit lens" }),
      h("div", { class: "lens-body" }, h("div", { class: "lens-scroll" }, this.grid), this.curves),
      this.tip);
  }

  render(lens: LensResult): void {
    this.lens = lens;
    clear(this.grid);
    const nPos = lens.tokens.length;
    this.grid.style.gridTemplateColumns = `7.5em repeat(${nPos}, minmax(4.2em, 1fr))`;
    const subj = new Set(lens.subject?.positions ?? []);
    this.grid.append(h("div", { class: "lens-corner", text: "layer \\ token" }));
    lens.tokens.forEach((t, i) =>
      this.grid.append(h("div", { class: `lens-head${subj.has(i) ? " subject" : ""}`, title: `position ${i}`, text: showToken(t) })));
    // final layer on top, embeddings at the bottom (reads like the residual stream going up)
    const layers = lens.layers.slice().reverse();
    for (const layer of layers) {
      this.grid.append(h("div", { class: "lens-label", text: layer.label }));
      layer.positions.forEach((pos, i) => {
        const top = pos.top[0];
        const cell = h("div", {
          class: "lens-cell", "data-layer": layer.index, "data-pos": i,
          "data-token": top?.token ?? "",
          tabindex: -1,
        }, showToken(top?.token ?? ""));
        cell.style.background = probColour(top?.prob ?? 0);
        if ((top?.prob ?? 0) > 0.6) cell.style.color = "#fff";
        cell.addEventListener("mouseenter", () => this.showTip(cell, layer.label, i));
        cell.addEventListener("focus", () => this.showTip(cell, layer.label, i));
        cell.addEventListener("mouseleave", () => { this.tip.hidden = true; });
        this.grid.append(cell);
      });
    }
    void this.renderCurves(lens);
  }

  private showTip(cell: HTMLElement, label: string, pos: number): void {
    const lens = this.lens;
    if (!lens) return;
    const layer = lens.layers.find((l) => l.label === label);
    const p = layer?.positions[pos];
    if (!p) return;
    clear(this.tip);
    this.tip.append(h("div", { class: "tip-title", text: `${label} · pos ${pos} ${showToken(lens.tokens[pos] ?? "")}` }));
    const tbl = h("table");
    for (const t of p.top) tbl.append(h("tr", {}, h("td", { class: "tok", text: showToken(t.token) }), h("td", { class: "num", text: fmt(t.prob) })));
    this.tip.append(tbl);
    if (p.kl !== undefined && p.kl !== null) this.tip.append(h("div", { text: `KL to final ${fmt(p.kl)}` }));
    const r = cell.getBoundingClientRect();
    const host = this.el.getBoundingClientRect();
    this.tip.style.left = `${r.right - host.left + 4}px`;
    this.tip.style.top = `${r.top - host.top}px`;
    this.tip.hidden = false;
  }

  private async renderCurves(lens: LensResult): Promise<void> {
    const el = this.curves;
    const t = lens.target;
    if (!t) {
      clear(el);
      el.append(h("p", { class: "muted", text: "Set a target to see its rank and probability per layer." }));
      return;
    }
    const P = await plotly();
    if (this.lens !== lens) return;
    const x = lens.layers.map((l) => l.index);
    const text = lens.layers.map((l) => escapePlotly(l.label));
    const name = escapePlotly(JSON.stringify(t.token));
    const common = { x, text, mode: "lines+markers", marker: { size: 4 }, hovertemplate: "%{text}: %{y}<extra>%{fullData.name}</extra>" };
    const traces = [
      { ...common, y: t.rank, name: `rank ${name} @ last`, yaxis: "y", line: { color: "#2563eb" } },
      { ...common, y: t.subject_rank, name: `rank @ subject`, yaxis: "y", line: { color: "#2563eb", dash: "dot" } },
      { ...common, y: t.prob, name: `prob @ last`, yaxis: "y2", line: { color: "#dc2626" } },
      { ...common, y: t.subject_prob, name: `prob @ subject`, yaxis: "y2", line: { color: "#dc2626", dash: "dot" } },
    ];
    const layout = {
      ...BASE_LAYOUT,
      height: 300,
      title: { text: `target ${name} per layer`, font: { size: 12 } },
      xaxis: { title: { text: `layer (${lens.n_layers} = final)` }, dtick: 5, zeroline: false },
      yaxis: { title: { text: "rank (log)" }, type: "log" as const, autorange: "reversed" as const },
      yaxis2: { title: { text: "prob" }, overlaying: "y" as const, side: "right" as const, range: [0, 1] },
      legend: { orientation: "h" as const, y: -0.32 },
      margin: { ...BASE_LAYOUT.margin, r: 48 },
    };
    await P.react(el, traces as never, layout as never, PLOT_CONFIG as never);
  }
}

/** Clickable token chips: the subject span is highlighted; clicking toggles tokens into a contiguous span. */
export class TokenChips {
  readonly el: HTMLElement;
  tokens: string[] = [];
  positions = new Set<number>();
  onChange: (subject: string | null, positions: number[]) => void = () => {};

  constructor() {
    this.el = h("div", { class: "chips", "data-testid": "token-chips", "aria-label": "tokens: click to set the subject span" });
  }

  render(tokens: string[], subject: number[]): void {
    this.tokens = tokens;
    this.positions = new Set(subject);
    clear(this.el);
    tokens.forEach((t, i) => {
      const b = h("button", {
        type: "button", class: `chip${this.positions.has(i) ? " subject" : ""}`, "data-pos": i, title: `position ${i}`,
        "aria-pressed": this.positions.has(i) ? "true" : "false",
      }, showToken(t));
      b.addEventListener("click", () => this.toggle(i));
      this.el.append(b);
    });
  }

  toggle(i: number): void {
    const cur = [...this.positions].sort((a, b) => a - b);
    let next: number[];
    if (this.positions.has(i)) {
      // shrink from whichever end was clicked; clicking an inner token makes it the single subject token
      if (i === cur[0]) next = cur.slice(1);
      else if (i === cur[cur.length - 1]) next = cur.slice(0, -1);
      else next = [i];
    } else if (!cur.length) next = [i];
    else {
      const lo = Math.min(cur[0], i), hi = Math.max(cur[cur.length - 1], i);
      next = Array.from({ length: hi - lo + 1 }, (_, k) => lo + k);
    }
    this.render(this.tokens, next);
    this.onChange(subjectText(this.tokens, next), next);
  }
}

export function subjectText(tokens: string[], positions: number[]): string | null {
  if (!positions.length) return null;
  const lo = Math.min(...positions), hi = Math.max(...positions);
  return tokens.slice(lo, hi + 1).join("").trim() || null;
}

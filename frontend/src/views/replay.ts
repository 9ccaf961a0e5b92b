/**
 * Information-flow replay: reveals a circuit layer by layer next to the logit-lens row of the same depth.
 * Step s shows the input and every node of layers < s (logits at the last step) beside lens layer s
 * (resid_pre s; the last lens layer is the final one). Reusable: takes (circuit, lens); edit comparison shows two.
 */
import type { CircuitResult, LensResult } from "../api/types";
import { GraphCanvas, type REdge, type RNode } from "../graph/canvas";
import { parseNodeId } from "../graph/layout";
import { drawCircuit } from "../graph/model";
import type { Selection } from "../graph/prune";
import { clear, h, showToken } from "../util/dom";

export function revealed(nodes: RNode[], edges: REdge[], step: number, nLayers: number): { nodes: RNode[]; edges: REdge[] } {
  const visible = (id: string) => {
    const p = parseNodeId(id);
    if (!p || p.kind === "input") return true;
    if (p.kind === "logits") return step >= nLayers;
    return (p.layer ?? 0) < step;
  };
  const ns = nodes.filter((n) => visible(n.id));
  const keep = new Set(ns.map((n) => n.id));
  return { nodes: ns, edges: edges.filter((e) => keep.has(e.source) && keep.has(e.target)) };
}

export class Replay {
  readonly el: HTMLElement;
  private graph: GraphCanvas;
  private row: HTMLElement;
  private range: HTMLInputElement;
  private label: HTMLElement;
  private playBtn: HTMLButtonElement;
  private timer: ReturnType<typeof setInterval> | undefined;
  private all: { nodes: RNode[]; edges: REdge[] } = { nodes: [], edges: [] };
  step = 0;
  onStep: (s: number) => void = () => {};

  constructor(private circuit: CircuitResult, private lens: LensResult | null, title = "Replay", sel: Selection = { mode: "server" }) {
    const gbox = h("div", { class: "replay-graph" });
    this.graph = new GraphCanvas(gbox);
    this.row = h("div", { class: "replay-lens", "data-testid": "replay-lens" });
    this.range = h("input", { type: "range", min: 0, max: circuit.graph.n_layers, value: 0, step: 1, "aria-label": "replay step" });
    this.label = h("span", { class: "replay-label mono" });
    this.playBtn = h("button", { type: "button", title: "play / pause (space)", text: "▶ play" });
    const back = h("button", { type: "button", title: "step back", text: "◀" });
    const fwd = h("button", { type: "button", title: "step forward", text: "▶|" });
    this.playBtn.addEventListener("click", () => this.toggle());
    back.addEventListener("click", () => this.setStep(this.step - 1));
    fwd.addEventListener("click", () => this.setStep(this.step + 1));
    this.range.addEventListener("input", () => this.setStep(Number(this.range.value)));
    this.el = h("div", { class: "replay", "data-testid": "replay" },
      h("div", { class: "replay-controls" }, h("strong", { text: title }), back, this.playBtn, fwd, this.range, this.label),
      gbox, this.row);
    this.el.addEventListener("keydown", (ev) => {
      if (ev.key === " ") { this.toggle(); ev.preventDefault(); }
      else if (ev.key === "ArrowRight" && ev.target === this.range) return;
    });
    this.setCircuit(circuit, lens, sel);
  }

  setCircuit(circuit: CircuitResult, lens: LensResult | null, sel: Selection = { mode: "server" }): void {
    this.circuit = circuit;
    this.lens = lens;
    const d = drawCircuit(circuit, sel);
    this.all = { nodes: d.nodes, edges: d.edges };
    this.range.max = String(circuit.graph.n_layers);
    // Fit to the full circuit so the view does not jump while revealing.
    this.graph.fitTo = d.nodes;
    this.graph.setData(d.nodes, [], {});
    this.setStep(Math.min(this.step, circuit.graph.n_layers), false);
  }

  setStep(s: number, notify = true): void {
    const L = this.circuit.graph.n_layers;
    this.step = Math.max(0, Math.min(L, Math.round(s)));
    this.range.value = String(this.step);
    const v = revealed(this.all.nodes, this.all.edges, this.step, L);
    this.graph.setData(v.nodes, v.edges, { keepView: true });
    this.el.dataset.step = String(this.step);
    this.renderLensRow();
    if (notify) this.onStep(this.step);
    if (this.step >= L) this.stop();
  }

  private renderLensRow(): void {
    clear(this.row);
    const layer = this.lens?.layers[this.step];
    this.label.textContent = `step ${this.step}/${this.circuit.graph.n_layers}${layer ? ` · ${layer.label}` : ""}`;
    if (!this.lens || !layer) {
      this.row.append(h("span", { class: "muted", text: "no lens for this prompt" }));
      return;
    }
    const subj = new Set(this.lens.subject?.positions ?? []);
    layer.positions.forEach((p, i) => {
      const top = p.top[0];
      this.row.append(h("div", { class: `replay-cell${subj.has(i) ? " subject" : ""}`, title: `${this.lens!.tokens[i]} → ${top?.token}` },
        h("div", { class: "in", text: showToken(this.lens!.tokens[i] ?? "") }),
        h("div", { class: "out", text: showToken(top?.token ?? "") }),
        h("div", { class: "p", text: top ? top.prob.toFixed(2) : "" })));
    });
  }

  toggle(): void {
    if (this.timer) this.stop();
    else {
      if (this.step >= this.circuit.graph.n_layers) this.setStep(0);
      this.playBtn.textContent = "❚❚ pause";
      this.timer = setInterval(() => this.setStep(this.step + 1), 600);
    }
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.playBtn.textContent = "▶ play";
  }
}

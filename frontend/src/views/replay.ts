/**
 * Information-flow replay: reveals a circuit layer by layer next to the logit-lens row of the same depth.
 * Step s shows the input and every node of layers < s (logits at the last step) beside lens layer s
 * (resid_pre s; the last lens layer is the final one). Each revealed node carries its top lens token (drawn under
 * its id); the nodes of the layer just reached (s - 1) are labelled first, so its tokens appear as the replay
 * steps. Reusable: takes (circuit, lens); edit comparison shows two.
 */
import type { CircuitResult, LensResult } from "../api/types";
import { GraphCanvas, type REdge, type RNode } from "../graph/canvas";
import { drawCircuit } from "../graph/model";
import type { Selection } from "../graph/prune";
import { clear, h, showToken } from "../util/dom";

/** The replay frame at ``step``: nodes of layers < step (logits at the last step) with their top tokens, the
 * layer step - 1 marked fresh; edges between revealed nodes. */
export function revealed(nodes: RNode[], edges: REdge[], step: number, nLayers: number): { nodes: RNode[]; edges: REdge[] } {
  const layerOf = (n: RNode): number => (n.kind === "input" ? -1 : n.kind === "logits" ? nLayers : n.layer ?? 0);
  const visible = (n: RNode) => {
    const l = layerOf(n);
    return l === nLayers ? step >= nLayers : l < step;
  };
  const ns = nodes.filter(visible).map((n) => ({ ...n, token: n.token ?? null, fresh: layerOf(n) === step - 1 }));
  const keep = new Set(ns.map((n) => n.id));
  return { nodes: ns, edges: edges.filter((e) => keep.has(e.source) && keep.has(e.target)) };
}

/** Node id -> top token shown at ``step`` (the layers reached so far). */
export function visibleTokens(nodes: RNode[], step: number, nLayers: number): Map<string, string> {
  const out = new Map<string, string>();
  for (const n of revealed(nodes, [], step, nLayers).nodes) if (n.token) out.set(n.id, n.token);
  return out;
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
    this.el.dataset.tokens = String(v.nodes.filter((n) => n.token).length);
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

/**
 * Circuit view: method controls, the DAG on its grid, client-side pruning slider, metrics sidebar, legend,
 * node panel, replay, share/export/provenance. Slow methods (acdc) run as jobs with SSE progress + cancel.
 */
import { ApiError, type Client } from "../api/client";
import type { Ablation, CircuitResult, LensResult, Method, SweepResult } from "../api/types";
import { GraphCanvas, ROLE_COLOURS, type Selected } from "../graph/canvas";
import { drawPicture } from "../graph/model";
import { groupId } from "../graph/paths";
import type { Selection } from "../graph/prune";
import type { ViewState } from "../state/url";
import { clear, fmt, h, pct } from "../util/dom";
import { NodePanel, type NodeContext } from "./node";
import { Replay } from "./replay";
import { JobRunner } from "./job";
import { SharePanel } from "./share";
import { SweepPanel } from "./sweep";
import { FidelityPanel, nearestPoint } from "./fidelity";

export interface CircuitContext extends NodeContext {
  target: string | null;
}

function select<T extends string>(label: string, options: T[], value: T, testid: string): HTMLSelectElement {
  const s = h("select", { "aria-label": label, "data-testid": testid });
  for (const o of options) s.append(h("option", { value: o, text: o, selected: o === value }));
  return s;
}

export class CircuitView {
  readonly el: HTMLElement;
  readonly graph: GraphCanvas;
  readonly nodePanel: NodePanel;
  private share: SharePanel;
  private method = select<Method>("method", ["eap-ig-refine", "eap-ig", "eap", "exact", "acdc"], "eap-ig-refine", "method");
  private ablation = select<Ablation>("ablation", ["patch", "zero", "mean"], "patch", "ablation");
  private corrupt = h("input", { type: "text", placeholder: "corrupt prompt (auto when empty)", "aria-label": "corrupt prompt", class: "wide" });
  private topN = h("input", { type: "number", min: 1, max: 5000, value: 400, "aria-label": "top n", "data-testid": "top-n-input" });
  private tau = h("input", { type: "number", min: 0, step: "any", value: 0.02, "aria-label": "tau (acdc)" });
  private maxEdges = h("input", { type: "number", min: 1, placeholder: "20000", "aria-label": "max edges (acdc)", "data-testid": "acdc-max-edges",
    title: "ACDC runs one forward per edge: the server refuses graphs larger than this" });
  private runBtn = h("button", { type: "button", class: "primary", "data-testid": "compute", text: "Compute circuit" });
  private sweepBtn = h("button", { type: "button", "data-testid": "sweep-run", text: "Size sweep", title: "faithfulness and Hit@10 vs circuit size (a job)" });
  private sweepPanel = new SweepPanel();
  private fidelity = new FidelityPanel();
  private status = h("span", { class: "status", "data-testid": "circuit-status", role: "status" });
  private sliderMode = select<"top_n" | "threshold">("prune by", ["top_n", "threshold"], "top_n", "slider-mode");
  private slider = h("input", { type: "range", min: 1, max: 100, value: 100, step: 1, "aria-label": "prune", "data-testid": "prune-slider" });
  private sliderLabel = h("span", { class: "mono" });
  private labelsToggle = h("input", { type: "checkbox", "aria-label": "labels" });
  private tokensToggle = h("input", { type: "checkbox", checked: true, "aria-label": "top tokens", "data-testid": "tokens-toggle",
    title: "each node's top lens token at the last position, under its id" });
  private allPaths = h("input", { type: "checkbox", "aria-label": "all paths", "data-testid": "all-paths" });
  private pathsK = h("input", { type: "number", min: 1, max: 500, value: DEFAULT_PATHS, "aria-label": "strongest paths",
    "data-testid": "paths-k", title: "draw the k strongest input → logits paths (product of |edge score|)" });
  private pathsNote = h("span", { class: "muted", "data-testid": "paths-note" });
  private groupBar = h("span", { class: "group-bar", "data-testid": "role-groups" });
  /** Roles whose heads are drawn as one group node. */
  collapsed = new Set<string>();
  private metrics = h("div", { class: "metrics", "data-testid": "metrics" });
  private replayBox = h("div", { class: "replay-box" });
  private body: HTMLElement;
  circuit: CircuitResult | null = null;
  lens: LensResult | null = null;
  sel: Selection = { mode: "server" };
  replay: Replay | null = null;
  private jobs: JobRunner;
  onState: (s: ViewState) => void = () => {};
  onCircuit: (c: CircuitResult) => void = () => {};

  constructor(private client: Client, private getContext: () => CircuitContext, opts: { controls?: boolean } = {}) {
    this.jobs = new JobRunner(client, (msg, error) => this.setStatus(msg, error));
    const gbox = h("div", { class: "graph-box", "data-testid": "graph" });
    this.graph = new GraphCanvas(gbox);
    this.nodePanel = new NodePanel(client);
    this.share = new SharePanel(client, this);
    this.graph.onSelect = (s) => this.onSelected(s);
    const legend = h("div", { class: "legend" },
      ...Object.entries(ROLE_COLOURS).map(([role, c]) => h("span", { class: "legend-item" }, swatch(c, true), role)),
      h("span", { class: "legend-item" }, swatch("#9ca3af", true), "head"),
      h("span", { class: "legend-item" }, swatch("#374151"), "mlp"),
      h("span", { class: "legend-item" }, swatch("#2563eb"), "+ edge"),
      h("span", { class: "legend-item" }, swatch("#dc2626"), "− edge"),
      h("span", { class: "legend-item token-legend", text: "·token: top lens token" }),
      h("span", { class: "muted", text: "drag: pan · wheel/+/−: zoom · 0: fit · hover: paths · click a group: expand" }));
    const controls = h("div", { class: "controls", "data-testid": "circuit-controls" },
      h("label", {}, "method ", this.method), h("label", {}, "ablation ", this.ablation),
      h("label", { class: "grow" }, "corrupt ", this.corrupt), h("label", {}, "top-n ", this.topN),
      h("label", { class: "tau" }, "τ ", this.tau, " max edges ", this.maxEdges), this.runBtn, this.sweepBtn, this.jobs.cancelBtn, this.jobs.progress, this.status);
    if (opts.controls === false) controls.hidden = true;
    const pruneBar = h("div", { class: "prune-bar" }, h("label", {}, "prune ", this.sliderMode), this.slider, this.sliderLabel,
      h("label", {}, this.labelsToggle, " labels"), h("label", {}, this.tokensToggle, " tokens"), h("label", {}, "strongest ", this.pathsK, " paths"),
      h("label", {}, this.allPaths, " all paths"), this.pathsNote, this.groupBar);
    this.body = h("div", { class: "circuit-body" },
      h("div", { class: "circuit-main" }, pruneBar, gbox, legend),
      h("aside", { class: "sidebar" }, this.metrics, this.fidelity.el, this.sweepPanel.el, this.nodePanel.el, this.share.el));
    this.el = h("section", { class: "panel circuit-panel", "aria-label": "circuit" },
      h("h2", { text: "Circuit" }), controls, this.body, this.replayBox);
    this.jobs.host = this.el;
    this.runBtn.addEventListener("click", () => void this.compute());
    this.sweepBtn.addEventListener("click", () => void this.sweep());
    this.method.addEventListener("change", () => this.syncMethod());
    this.slider.addEventListener("input", () => this.onSlider());
    this.sliderMode.addEventListener("change", () => { this.configureSlider(); this.onSlider(); });
    this.labelsToggle.addEventListener("change", () => { this.graph.labels = this.labelsToggle.checked; this.graph.draw(); this.emitState(); });
    this.tokensToggle.addEventListener("change", () => { this.graph.tokens = this.tokensToggle.checked; this.graph.draw(); });
    this.allPaths.addEventListener("change", () => { this.redraw(true); this.emitState(); });
    this.pathsK.addEventListener("change", () => { this.redraw(true); this.emitState(); });
    this.syncMethod();
    this.body.hidden = true;
  }

  private syncMethod(): void {
    const acdc = this.method.value === "acdc";
    (this.tau.parentElement as HTMLElement).hidden = !acdc;
    if (acdc) this.ablation.value = "zero";
  }

  setLens(lens: LensResult | null): void {
    this.lens = lens;
  }

  private params(): Record<string, unknown> {
    const ctx = this.getContext();
    const p: Record<string, unknown> = {
      model: ctx.model, prompt: ctx.prompt, target: ctx.target, subject: ctx.subject ?? null,
      ablation: this.ablation.value, corrupt_prompt: this.corrupt.value.trim() || null,
      top_n: Number(this.topN.value) || 400,
    };
    if (ctx.session) p.session = ctx.session;
    return p;
  }

  /** Run ``work`` with ``button`` disabled once a prompt and a target are set; errors go to the status line. */
  private async guarded(button: HTMLButtonElement, work: () => Promise<void>): Promise<void> {
    const ctx = this.getContext();
    if (!ctx.prompt.trim() || !ctx.target) {
      this.setStatus("enter a prompt and a target first", true);
      return;
    }
    button.disabled = true;
    try {
      await work();
    } catch (err) {
      this.setStatus(err instanceof ApiError ? `${err.type}: ${err.message}` : String(err), true);
    } finally {
      button.disabled = false;
    }
  }

  compute(): Promise<void> {
    return this.guarded(this.runBtn, async () => {
      const method = this.method.value as Method;
      if (method === "acdc") return this.runAcdc();
      this.setStatus(`computing ${method}…`);
      const t0 = performance.now();
      const c = await this.client.circuit({ ...this.params(), method } as never);
      const secs = ((performance.now() - t0) / 1000).toFixed(1);
      this.setStatus(c.metrics.edges
        ? `${method}: ${c.metrics.edges} edges in ${secs} s`
        : `${method}: empty circuit after pruning dangling nodes (${secs} s): raise top-n`);
      this.setCircuit(c, {});
    });
  }

  private async runAcdc(): Promise<void> {
    // ACDC selects by tau, not top-n; the job kind names the method.
    const params: Record<string, unknown> = { ...this.params(), tau: Number(this.tau.value) };
    if (this.maxEdges.value !== "") params.max_edges = Number(this.maxEdges.value);
    delete params.top_n;
    const result = await this.jobs.run({ kind: "acdc", params });
    if (result) {
      this.setCircuit(result as CircuitResult, {});
      this.setStatus(`acdc done: ${(result as CircuitResult).metrics.edges} edges`);
    }
  }

  /** A size sweep with the chosen method (acdc has no scores to sweep: eap-ig then). */
  sweep(): Promise<void> {
    return this.guarded(this.sweepBtn, async () => {
      const chosen = this.method.value;
      const method = chosen === "acdc" || chosen === "exact" ? "eap-ig-refine" : chosen;
      const params: Record<string, unknown> = { ...this.params(), method };
      delete params.top_n;
      const result = await this.jobs.run({ kind: "sweep", params });
      if (result) {
        this.body.hidden = false;
        await this.sweepPanel.show(result as SweepResult);
        this.setStatus(`sweep done: ${(result as SweepResult).rows.length} sizes`);
      }
    });
  }

  private setStatus(msg: string, error = false): void {
    this.status.textContent = msg;
    this.status.classList.toggle("error", error);
  }

  /** Show a circuit; `state` (from the URL) restores the pruning, the selected node and the replay step. */
  setCircuit(c: CircuitResult, state: ViewState): void {
    this.circuit = c;
    this.body.hidden = false;
    this.sel = state.threshold !== undefined ? { mode: "threshold", t: state.threshold }
      : state.top_n !== undefined ? { mode: "top_n", n: state.top_n } : { mode: "server" };
    this.sliderMode.value = this.sel.mode === "threshold" ? "threshold" : "top_n";
    this.labelsToggle.checked = !!state.labels;
    this.graph.labels = !!state.labels;
    this.allPaths.checked = !!state.all_paths;
    this.pathsK.value = String(state.paths && state.paths > 0 ? state.paths : DEFAULT_PATHS);
    this.collapsed = new Set(state.groups ?? []);
    this.configureSlider();
    this.redraw(false);
    this.renderMetrics();
    this.fidelity.show(c);
    this.share.setCircuit(c);
    const selected: Selected = state.node ? { type: "node", id: state.node } : state.edge ? { type: "edge", key: state.edge } : null;
    this.graph.select(selected);
    if (selected) void this.nodePanel.show(selected, c, this.getContext());
    else this.nodePanel.clear();
    clear(this.replayBox);
    this.replay = new Replay(c, this.lens && this.lens.prompt === c.prompt ? this.lens : null, "Information-flow replay", this.sel);
    if (state.step !== undefined) this.replay.setStep(state.step, false);
    this.replay.onStep = () => this.emitState();
    this.replayBox.append(this.replay.el);
    this.onCircuit(c);
    if (state.threshold === undefined && state.top_n === undefined) this.emitState();
  }

  private configureSlider(): void {
    const c = this.circuit;
    if (!c) return;
    const n = c.edges.length;
    const inCircuit = c.edges.filter((e) => e.in_circuit).length;
    if (this.sliderMode.value === "top_n") {
      this.slider.min = "1";
      this.slider.max = String(Math.max(1, n));
      this.slider.step = "1";
      const val = this.sel.mode === "top_n" ? this.sel.n : Number(c.params?.top_n ?? inCircuit) || inCircuit;
      this.slider.value = String(Math.min(n, val));
    } else {
      const maxAbs = c.edges.reduce((m, e) => Math.max(m, Math.abs(e.score)), 0) || 1;
      this.slider.min = "0";
      this.slider.max = String(maxAbs);
      this.slider.step = String(maxAbs / 500);
      const minIn = c.edges.filter((e) => e.in_circuit).reduce((m, e) => Math.min(m, Math.abs(e.score)), Infinity);
      this.slider.value = String(this.sel.mode === "threshold" ? this.sel.t : Number.isFinite(minIn) ? minIn : maxAbs / 10);
    }
    this.updateSliderLabel();
  }

  private updateSliderLabel(): void {
    const drawn = this.graph.counts();
    const mode = this.sel.mode === "server" ? "server selection" : this.sel.mode === "top_n" ? `top ${this.sel.n}` : `|score| ≥ ${fmt(this.sel.t)}`;
    const point = this.circuit?.curve ? nearestPoint(this.circuit.curve.points, drawn.edges) : null;
    const measured = point ? ` · measured F ${fmt(point.faithfulness, 2)} at ${point.edges} edges` : "";
    this.sliderLabel.textContent = `${mode} → ${drawn.edges} edges, ${drawn.nodes} nodes${measured}`;
  }

  private onSlider(): void {
    const v = Number(this.slider.value);
    this.sel = this.sliderMode.value === "top_n" ? { mode: "top_n", n: Math.round(v) } : { mode: "threshold", t: v };
    this.redraw(true);
    this.replay?.setCircuit(this.circuit!, this.replay ? this.lensFor() : null, this.sel);
    this.emitState();
  }

  private lensFor(): LensResult | null {
    return this.lens && this.circuit && this.lens.prompt === this.circuit.prompt ? this.lens : null;
  }

  /** Expand or collapse the heads of ``role`` into one group node. */
  toggleGroup(role: string): void {
    if (this.collapsed.has(role)) this.collapsed.delete(role);
    else this.collapsed.add(role);
    this.redraw(true);
    this.emitState();
  }

  private redraw(keepView: boolean): void {
    if (!this.circuit) return;
    const k = Math.max(1, Math.round(Number(this.pathsK.value) || DEFAULT_PATHS));
    const d = drawPicture(this.circuit, this.sel, { topPaths: this.allPaths.checked ? null : k, collapsed: this.collapsed });
    this.graph.setData(d.nodes, d.edges, { keepView });
    this.pathsNote.textContent = d.hiddenEdges ? `(${d.hiddenEdges} weaker edges hidden)` : "";
    this.renderGroupBar(d.nodes.filter((n) => n.kind === "head" || n.kind === "group"));
    this.updateSliderLabel();
    this.renderShown();
  }

  private renderGroupBar(heads: { role?: string | null; kind: string }[]): void {
    clear(this.groupBar);
    const roles = new Set([...heads.map((n) => n.role).filter((r): r is string => !!r), ...this.collapsed]);
    for (const role of Object.keys(ROLE_COLOURS).filter((r) => roles.has(r))) {
      const on = this.collapsed.has(role);
      const b = h("button", { type: "button", class: "small", "data-testid": `group-${role}`, "aria-pressed": on ? "true" : "false",
        text: on ? `expand ${role}` : `collapse ${role}` });
      b.addEventListener("click", () => this.toggleGroup(role));
      this.groupBar.append(b);
    }
  }

  private renderMetrics(): void {
    const c = this.circuit!;
    const m = c.metrics;
    clear(this.metrics);
    const rows: [string, string][] = [
      ["model", c.model], ["method", `${c.method} · ${c.ablation} · ${c.metric}`],
      ["edges", `${m.edges} / ${c.graph.total_edges} (${pct(m.edge_fraction)})`],
      ["nodes", `${m.nodes} / ${c.graph.total_nodes} (${pct(m.node_fraction)})`],
      ["faithfulness", m.faithfulness_undefined ? "undefined" : fmt(m.faithfulness)],
    ];
    if (m.hit_at_10) rows.push(["Hit@10", `full ${m.hit_at_10.full} · circuit ${m.hit_at_10.circuit} · random ${fmt(m.hit_at_10.random, 2)}`]);
    if (m.target_rank) rows.push(["target rank", `full ${m.target_rank.full} · circuit ${m.target_rank.circuit}`]);
    if (c.roles) {
      const n = c.roles.counts;
      rows.push(["head roles", `${n.mover ?? 0} mover · ${n.relation ?? 0} relation · ${n.mixture ?? 0} mixture · ${n.none ?? 0} none`
        + ` (k = ${c.roles.thresholds.significance_k} MAD)`]);
    }
    if (c.timings?.total_s !== undefined) rows.push(["time", `${fmt(c.timings.total_s, 2)} s`]);
    const tbl = h("table", { class: "kv-table" });
    for (const [k, v] of rows) tbl.append(h("tr", {}, h("th", { text: k }), h("td", { text: v })));
    this.metrics.append(h("h3", { text: "Metrics (server circuit)" }), tbl, h("div", { class: "shown mono", "data-testid": "shown" }));
    this.renderShown();
  }

  private renderShown(): void {
    const el = this.metrics.querySelector(".shown");
    const c = this.circuit;
    if (!el || !c) return;
    const d = this.graph.counts();
    el.textContent = `shown: ${d.edges} edges (${pct(d.edges / Math.max(1, c.graph.total_edges))}), ${d.nodes} nodes (${pct(d.nodes / Math.max(1, c.graph.total_nodes))})`;
  }

  private onSelected(s: Selected): void {
    const group = s?.type === "node" ? Object.keys(ROLE_COLOURS).find((r) => groupId(r) === s.id) : undefined;
    if (group) { this.toggleGroup(group); return; }
    if (this.circuit) void this.nodePanel.show(s, this.circuit, this.getContext());
    this.emitState();
  }

  viewState(): ViewState {
    const s: ViewState = {};
    if (this.sel.mode === "top_n") s.top_n = this.sel.n;
    if (this.sel.mode === "threshold") s.threshold = this.sel.t;
    const sel = this.graph.selected;
    if (sel?.type === "node") s.node = sel.id;
    if (sel?.type === "edge") s.edge = sel.key;
    if (this.replay && this.replay.step > 0) s.step = this.replay.step;
    if (this.graph.labels) s.labels = true;
    if (this.allPaths.checked) s.all_paths = true;
    const k = Math.round(Number(this.pathsK.value));
    if (k > 0 && k !== DEFAULT_PATHS) s.paths = k;
    if (this.collapsed.size) s.groups = [...this.collapsed].sort();
    return s;
  }

  private emitState(): void {
    this.onState(this.viewState());
  }
}

const DEFAULT_PATHS = 10;

function swatch(colour: string, round = false): HTMLElement {
  const s = h("span", { class: `swatch${round ? " round" : ""}` });
  s.style.background = colour;
  return s;
}

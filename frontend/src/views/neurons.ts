/** Knowledge neurons (Dai et al.; reassessed by Niu et al.): find the MLP units integrated gradients credits
 * for a fact (a "neurons" job), suppress or enhance them (POST /api/neurons/edit, hooks only) with before/after
 * probabilities, the KNs beside the prompt's circuit, and the facts-vs-syntax comparison (a "neurons-compare" job). */
import { ApiError, type Client } from "../api/client";
import type { CompareResult, LocalisationSummary, NeuronEditResult, NeuronRef, NeuronsResult } from "../api/types";
import { clear, fmt, h, pct, showToken } from "../util/dom";
import { escapePlotly } from "../util/escape";
import { BASE_LAYOUT, PLOT_CONFIG, plotly } from "../util/plot";
import { JobRunner } from "./job";

/** Rows of the facts-vs-syntax table: [label, one cell per set]. */
export function compareTable(summary: Record<string, LocalisationSummary>): { head: string[]; rows: string[][] } {
  const names = Object.keys(summary);
  const row = (label: string, pick: (s: LocalisationSummary) => number | null, digits = 2) =>
    [label, ...names.map((n) => fmt(pick(summary[n]), digits))];
  return {
    head: ["", ...names],
    rows: [
      ["groups", ...names.map((n) => String(summary[n].n_groups))],
      row("mean KNs per group", (s) => s.mean_kns, 1),
      row("mean KN layer", (s) => s.mean_kn_layer, 1),
      row("top-10 share of attribution", (s) => s.top10_share),
      row("effective neurons", (s) => s.effective_neurons, 1),
      row("suppress: top-1 flip rate", (s) => s.suppress.top1_flip_rate),
      row("suppress: pair flip rate", (s) => s.suppress.pair_flip_rate),
      row("suppress: mean relative ΔP", (s) => s.suppress.mean_relative_change),
      row("enhance: top-1 flip rate", (s) => s.enhance.top1_flip_rate),
      row("enhance: pair flip rate", (s) => s.enhance.pair_flip_rate),
      row("enhance: mean relative ΔP", (s) => s.enhance.mean_relative_change),
    ],
  };
}

/** The neurons an edit acts on: the ticked rows, else the knowledge neurons, else the top neuron. */
export function editSet(result: NeuronsResult, ticked: string[]): string[] {
  if (ticked.length) return ticked;
  if (result.neurons.length) return result.neurons.map((n) => n.id);
  return result.top.slice(0, 1).map((n) => n.id);
}

function table(head: string[], rows: (string | Node)[][], testid: string): HTMLTableElement {
  return h("table", { class: "kv-table mono", "data-testid": testid },
    h("thead", {}, h("tr", {}, ...head.map((c) => h("th", { text: c })))),
    h("tbody", {}, ...rows.map((r) => h("tr", {}, ...r.map((c) => (typeof c === "string" ? h("td", { text: c }) : h("td", {}, c)))))));
}

export class NeuronsView {
  readonly el: HTMLElement;
  private prompt = h("input", { type: "text", class: "wide", "aria-label": "neurons prompt", "data-testid": "neurons-prompt", value: "The capital of France is" });
  private target = h("input", { type: "text", "aria-label": "neurons target", "data-testid": "neurons-target", value: " Paris" });
  private relation = h("select", { "aria-label": "neurons relation", "data-testid": "neurons-relation" });
  private subject = h("input", { type: "text", "aria-label": "neurons subject", "data-testid": "neurons-subject", placeholder: "subject (with a relation)" });
  private steps = h("input", { type: "number", min: 1, max: 128, value: 20, "aria-label": "IG steps", "data-testid": "neurons-steps" });
  private threshold = h("input", { type: "number", min: 0.01, max: 1, step: 0.05, value: 0.2, "aria-label": "attribution threshold", "data-testid": "neurons-threshold" });
  private share = h("input", { type: "number", min: 0.01, max: 1, step: 0.1, value: 0.5, "aria-label": "prompt share", "data-testid": "neurons-share" });
  private withCircuit = h("input", { type: "checkbox", "aria-label": "with circuit", "data-testid": "neurons-with-circuit" });
  private findBtn = h("button", { type: "button", class: "primary", "data-testid": "neurons-run", text: "Find neurons" });
  private suppressBtn = h("button", { type: "button", "data-testid": "neurons-suppress", text: "Suppress (×0)", disabled: true });
  private enhanceBtn = h("button", { type: "button", "data-testid": "neurons-enhance", text: "Enhance (×2)", disabled: true });
  private status = h("span", { class: "status", role: "status", "data-testid": "neurons-status" });
  private out = h("div", { "data-testid": "neurons-out" });
  private editOut = h("div", { "data-testid": "neurons-edit-out" });
  private nFacts = h("input", { type: "number", min: 0, max: 200, value: 10, "aria-label": "facts", "data-testid": "compare-n-facts" });
  private nSyntax = h("input", { type: "number", min: 0, max: 200, value: 10, "aria-label": "syntax groups", "data-testid": "compare-n-syntax" });
  private compareBtn = h("button", { type: "button", "data-testid": "compare-run", text: "Compare facts vs syntax" });
  private compareStatus = h("span", { class: "status", role: "status", "data-testid": "compare-status" });
  private compareOut = h("div", { "data-testid": "compare-out" });
  private jobs: JobRunner;
  private compareJobs: JobRunner;
  private result: NeuronsResult | null = null;
  private ticked = new Set<string>();
  private loaded = false;

  constructor(private client: Client, private getModel: () => string | undefined) {
    this.jobs = new JobRunner(client, (m, e) => this.setStatus(this.status, m, e), { cancel: "neurons-cancel", progress: "neurons-progress" });
    this.compareJobs = new JobRunner(client, (m, e) => this.setStatus(this.compareStatus, m, e), { cancel: "compare-cancel", progress: "compare-progress" });
    this.relation.append(h("option", { value: "", text: "(no relation)" }));
    const find = h("section", { class: "panel", "aria-label": "knowledge neurons" },
      h("h2", { text: "Knowledge neurons" }),
      h("div", { class: "controls" }, h("label", { class: "grow" }, "prompt ", this.prompt), h("label", {}, "target ", this.target),
        h("label", { title: "its templates, filled with the subject, are the paraphrase prompts" }, "relation ", this.relation),
        h("label", {}, "subject ", this.subject), h("label", {}, "IG steps ", this.steps),
        h("label", { title: "keep neurons above this fraction of the per-prompt maximum attribution" }, "threshold ", this.threshold),
        h("label", { title: "keep neurons found in at least this fraction of the prompts" }, "share ", this.share),
        h("label", {}, this.withCircuit, " beside the circuit"), this.findBtn, this.jobs.cancelBtn, this.jobs.progress, this.status),
      h("p", { class: "muted", text: "Integrated gradients of P(target) w.r.t. each MLP hidden unit at the last position, from 0 to its value. Edits are forward hooks: the model's weights are never changed." }),
      this.out,
      h("div", { class: "controls" }, this.suppressBtn, this.enhanceBtn, h("span", { class: "muted", text: "acts on the ticked neurons, or on all knowledge neurons" })),
      this.editOut);
    const compare = h("section", { class: "panel", "aria-label": "syntax vs facts" },
      h("h2", { text: "Syntax next to facts (Niu et al.)" }),
      h("div", { class: "controls" }, h("label", {}, "facts ", this.nFacts), h("label", {}, "syntax groups ", this.nSyntax),
        this.compareBtn, this.compareJobs.cancelBtn, this.compareJobs.progress, this.compareStatus),
      h("p", { class: "muted", text: "The same attribution, KN filters and edits on known LRE facts and on syntax minimal pairs (determiner-noun and subject-verb number agreement)." }),
      this.compareOut);
    this.el = h("div", { class: "neurons-view" }, find, compare);
    this.jobs.host = find;
    this.compareJobs.host = compare;
    this.findBtn.addEventListener("click", () => void this.run());
    this.suppressBtn.addEventListener("click", () => void this.edit("suppress"));
    this.enhanceBtn.addEventListener("click", () => void this.edit("enhance"));
    this.compareBtn.addEventListener("click", () => void this.compare());
  }

  private setStatus(el: HTMLElement, msg: string, error = false): void {
    el.textContent = msg;
    el.classList.toggle("error", error);
  }

  private errorText(err: unknown): string {
    return err instanceof ApiError ? `${err.type}: ${err.message}` : String(err);
  }

  /** Take the Explore tab's prompt and target until this tab has run once. */
  prefill(prompt: string, target: string | null): void {
    if (this.result || !prompt.trim()) return;
    this.prompt.value = prompt;
    if (target) this.target.value = target;
  }

  /** Fill the relation picker once (on first show). */
  async load(): Promise<void> {
    if (this.loaded) return;
    try {
      const { items } = await this.client.relations();
      for (const r of items) this.relation.append(h("option", { value: r.name, text: r.name }));
      this.loaded = true;
    } catch (err) {
      this.setStatus(this.status, this.errorText(err), true);
    }
  }

  async run(): Promise<void> {
    const params: Record<string, unknown> = {
      model: this.getModel(), prompt: this.prompt.value, target: this.target.value,
      steps: Number(this.steps.value) || 20, threshold: Number(this.threshold.value), share: Number(this.share.value),
      with_circuit: this.withCircuit.checked,
    };
    if (this.relation.value) Object.assign(params, { relation: this.relation.value, subject: this.subject.value });
    this.findBtn.disabled = true;
    clear(this.editOut);
    try {
      const result = (await this.jobs.run({ kind: "neurons", params })) as NeuronsResult | null;
      if (result) {
        await this.show(result);
        this.setStatus(this.status, `${result.neurons.length} knowledge neurons over ${result.prompts.length} prompt(s)`);
      }
    } catch (err) {
      this.setStatus(this.status, this.errorText(err), true);
    } finally {
      this.findBtn.disabled = false;
    }
  }

  /** Render a neurons result (also used by the permalink page of a stored one). */
  async show(result: NeuronsResult): Promise<void> {
    this.result = result;
    this.ticked.clear();
    clear(this.out);
    this.el.dataset.kns = String(result.neurons.length);
    const p = result.params;
    if (result.id) this.out.append(h("p", { "data-testid": "neurons-permalink" }, "permalink: ",
      h("a", { href: `/c/${encodeURIComponent(result.id)}`, class: "mono", text: result.id.slice(0, 12) })));
    this.out.append(h("p", { class: "muted", "data-testid": "neurons-params",
      text: `IG m=${p.steps} (${p.path}, baseline 0) · threshold ${p.threshold} of the max · shared by ≥ ${p.min_prompts} of ${result.prompts.length} prompts` }));
    this.out.append(table(["prompt", "P(target)", "rank", "top-1", "Σ attr", "IG gap"], result.prompts.map((r) =>
      [r.prompt, fmt(r.prob), String(r.rank), showToken(r.top1), fmt(r.attr_sum), fmt(r.completeness_gap)]), "neurons-prompts"));
    if (result.prompts.some((r) => Math.abs(r.completeness_gap) > 0.1 * Math.abs(r.attr_sum - r.completeness_gap)))
      this.out.append(h("p", { class: "muted", "data-testid": "neurons-gap-note",
        text: "IG gap = Σ attr − (P − P(baseline)) exceeds 10% on some prompt: raise the IG steps for attributions that add up." }));
    const chart = h("div", { class: "neurons-chart", "data-testid": "neurons-chart" });
    this.out.append(chart);
    const kns = new Set(result.neurons.map((n) => n.id));
    const rows = (list: NeuronRef[]) => list.map((n) => {
      const box = h("input", { type: "checkbox", "aria-label": `select ${n.id}`, "data-neuron": n.id });
      box.addEventListener("change", () => { if (box.checked) this.ticked.add(n.id); else this.ticked.delete(n.id); });
      return [box, n.id, fmt(n.attr), n.share === undefined ? (kns.has(n.id) ? "KN" : "") : fmt(n.share, 2),
        (n.promotes ?? []).map((t) => showToken(t)).join("  ")] as (string | Node)[];
    });
    this.out.append(h("h3", { text: `Knowledge neurons (${result.neurons.length})` }),
      table(["", "neuron", "attr", "share", "promotes"], rows(result.neurons.slice(0, 100)), "neurons-kns"),
      h("h3", { text: "Top neurons by mean attribution" }),
      table(["", "neuron", "attr", "KN", "promotes"], rows(result.top), "neurons-top"));
    if (result.circuit) {
      const c = result.circuit, e = c.effect_share_edges;
      this.out.append(h("h3", { text: "Beside the circuit" }),
        h("p", { "data-testid": "neurons-circuit", text: `${c.method} circuit: ${c.metrics.edges} edges, ${c.circuit_mlps} MLP nodes of which ${c.circuit_mlps_with_kns} hold KNs; ${c.kns_in_circuit_mlps}/${c.n_kns} KNs lie in circuit MLPs. Effect via heads ${pct(e.head)}, MLPs ${pct(e.mlp)}, input ${pct(e.input)}.` }),
        table(["MLP node", "in circuit", "node score", "KNs"], c.mlps.map((m) => [m.node, m.in_circuit ? "yes" : "no", fmt(m.score), m.kns.join(" ")]), "neurons-circuit-mlps"));
    }
    this.suppressBtn.disabled = this.enhanceBtn.disabled = false;
    const P = await plotly();
    const pts = result.chart;
    await P.react(chart, [
      { x: pts.map((q) => q.index), y: pts.map((q) => q.layer), mode: "markers", type: "scatter", name: "strongest per layer",
        marker: { color: pts.map((q) => q.attr), colorscale: "RdBu", reversescale: true, cmid: 0, size: 6, colorbar: { title: { text: "attr" } } },
        text: pts.map((q) => `L${q.layer}.N${q.index}`), hovertemplate: "%{text}: %{marker.color:.3g}<extra></extra>" },
      { x: result.neurons.map((n) => n.index), y: result.neurons.map((n) => n.layer), mode: "markers", type: "scatter", name: "knowledge neurons",
        marker: { symbol: "circle-open", size: 12, color: "#111827" }, text: result.neurons.map((n) => escapePlotly(n.id)), hoverinfo: "text" },
    ] as never, { ...BASE_LAYOUT, height: 300, xaxis: { title: { text: "neuron" }, range: [0, result.d_mlp] },
      yaxis: { title: { text: "layer" }, range: [-0.5, result.n_layers - 0.5] } } as never, PLOT_CONFIG as never);
  }

  async edit(mode: "suppress" | "enhance"): Promise<void> {
    const result = this.result;
    if (!result) return;
    const neurons = editSet(result, [...this.ticked]);
    this.suppressBtn.disabled = this.enhanceBtn.disabled = true;
    clear(this.editOut);
    try {
      const out = await this.client.neuronEdit({ model: result.model, prompt: result.prompt, target: result.target, neurons, mode,
        relation: this.relation.value || null, subject: this.relation.value ? this.subject.value : null });
      this.showEdit(out);
    } catch (err) {
      this.setStatus(this.status, this.errorText(err), true);
    } finally {
      this.suppressBtn.disabled = this.enhanceBtn.disabled = false;
    }
  }

  showEdit(out: NeuronEditResult): void {
    clear(this.editOut);
    const m = out.prompt;
    this.editOut.dataset.mode = out.mode;
    this.editOut.append(h("p", { "data-testid": "neurons-edit-main",
      text: `${out.mode} ${out.neurons.length} neuron(s): P(${showToken(m.target ?? "")}) ${fmt(m.before.prob)} → ${fmt(m.after.prob)}, rank ${m.before.rank} → ${m.after.rank}, top-1 ${showToken(m.before.top1)} → ${showToken(m.after.top1)}${m.top1_flipped ? " (flipped)" : ""}` }));
    this.editOut.append(table(["kind", "prompt", "P before", "P after", "rank", "top-1", "flipped"],
      [m, ...out.rows].map((r) => [r.kind, r.prompt, fmt(r.before.prob), fmt(r.after.prob),
        r.before.rank === undefined ? "–" : `${r.before.rank} → ${r.after.rank}`, `${showToken(r.before.top1)} → ${showToken(r.after.top1)}`,
        r.top1_flipped ? "yes" : "no"]), "neurons-edit-table"));
  }

  async compare(): Promise<void> {
    this.compareBtn.disabled = true;
    try {
      const result = (await this.compareJobs.run({ kind: "neurons-compare", params: {
        model: this.getModel(), n_facts: Number(this.nFacts.value), n_syntax: Number(this.nSyntax.value),
        steps: Number(this.steps.value) || 20, threshold: Number(this.threshold.value), share: Number(this.share.value) } })) as CompareResult | null;
      if (result) await this.showCompare(result);
    } catch (err) {
      this.setStatus(this.compareStatus, this.errorText(err), true);
    } finally {
      this.compareBtn.disabled = false;
    }
  }

  /** The comparison table and the KN layer histograms (share of each set's KNs per layer). */
  async showCompare(result: CompareResult): Promise<void> {
    clear(this.compareOut);
    const t = compareTable(result.summary);
    const plot = h("div", { class: "neurons-hist", "data-testid": "compare-plot" });
    this.compareOut.append(table(t.head, t.rows, "compare-table"), plot);
    const P = await plotly();
    const traces = Object.entries(result.summary).filter(([name]) => name === "facts" || name.startsWith("syntax")).map(([name, s]) => {
      const total = s.layer_histogram.reduce((a, b) => a + b, 0) || 1;
      return { x: s.layer_histogram.map((_, i) => i), y: s.layer_histogram.map((c) => c / total), type: "bar", name: escapePlotly(name) };
    });
    await P.react(plot, traces as never, { ...BASE_LAYOUT, height: 240, barmode: "group",
      xaxis: { title: { text: "layer" } }, yaxis: { title: { text: "share of KNs" } } } as never, PLOT_CONFIG as never);
  }
}

/** Parameter-level mask circuits (Ge, Rudzicz, Zhu): train a mask of a task at a target density (a "mask-train"
 * job, live loss / expected density / faithfulness curves), its module composition and per-unit densities, the
 * four-way circuit-aware edit (a "mask-edit" job), the overlap of stored masks beside random masks of the same
 * densities, and the mask's heads / MLPs marked by membership in a stored edge circuit. */
import { ApiError, type Client } from "../api/client";
import type {
  JobEvent, MaskComponent, MaskComponentsResult, MaskCurvePoint, MaskCurves, MaskEditResult, MaskEditRow, MaskOverlapResult,
  MaskResult, ModelInfo, ModuleShare, ResultSummary,
} from "../api/types";
import { clear, fmt, h, pct } from "../util/dom";
import { escapePlotly } from "../util/escape";
import { BASE_LAYOUT, PLOT_CONFIG, plotly } from "../util/plot";
import { JobRunner } from "./job";

/** The paper's target densities. */
export const DENSITIES = [0.05, 0.15, 0.25, 0.35, 0.5] as const;
export const PHENOMENA = ["det_noun", "subj_verb"] as const;
/** Module kinds of the composition chart, in display order (the engine's MODULES). */
export const MODULES = ["embedding", "attention", "mlp", "layernorm", "other"] as const;

/** Insert or replace one curve point by its step (a resumed job re-reports nothing twice); sorted by step. */
export function mergeCurve(points: MaskCurvePoint[], p: MaskCurvePoint): MaskCurvePoint[] {
  return [...points.filter((q) => q.step !== p.step), p].sort((a, b) => a.step - b.step);
}

/** A stored result's column-wise curves as points. */
export function curvePoints(c: MaskCurves): MaskCurvePoint[] {
  return c.step.map((step, i) => ({ step, loss: c.loss[i], density: c.density[i], faithfulness_kl: c.faithfulness_kl[i] }));
}

/** The curve point of a progress event, or null when the event carries none. */
export function eventPoint(ev: JobEvent): MaskCurvePoint | null {
  const c = ev.curve as Partial<MaskCurvePoint> | undefined;
  if (!c || typeof c.step !== "number" || typeof c.loss !== "number" || typeof c.density !== "number"
    || typeof c.faithfulness_kl !== "number") return null;
  return { step: c.step, loss: c.loss, density: c.density, faithfulness_kl: c.faithfulness_kl };
}

/** Composition bars: the module kinds that have parameters, in MODULES order (unknown kinds last). */
export function compositionBars(comp: Record<string, ModuleShare>): { modules: string[]; inside: (number | null)[]; ofMask: (number | null)[] } {
  const known = MODULES.filter((m) => m in comp) as string[];
  const modules = [...known, ...Object.keys(comp).filter((m) => !known.includes(m))].filter((m) => comp[m].n_params > 0);
  return { modules, inside: modules.map((m) => comp[m].share_inside ?? null), ofMask: modules.map((m) => comp[m].share_of_mask ?? null) };
}

export interface TrainForm {
  model?: string;
  task: string; // "relation:<name>" or "phenomenon:<name>"
  n: number;
  density: number;
  steps: number;
  evalEvery: number;
  loss: "kl" | "ce";
  seed: number;
}

/** The mask-train job's params: exactly one task field; curve points at most every ``steps`` steps. */
export function trainParams(f: TrainForm): Record<string, unknown> {
  const [field, ...rest] = f.task.split(":");
  const name = rest.join(":");
  if ((field !== "relation" && field !== "phenomenon") || !name) throw new Error("pick a task (a relation or a syntax phenomenon)");
  const steps = Math.max(1, Math.round(f.steps));
  return { model: f.model, [field]: name, n: f.n, density: f.density, steps,
    eval_every: Math.min(Math.max(1, Math.round(f.evalEvery)), steps), loss: f.loss, seed: f.seed };
}

/** Rows of the four-way edit table. */
export function editRows(rows: MaskEditRow[]): string[][] {
  return rows.map((r) => [r.variant, pct(r.density), fmt(r.nll_pre), fmt(r.nll_post), fmt(r.nll_post - r.nll_pre),
    r.locality === null || r.locality === undefined ? "undefined" : pct(r.locality), String(r.changed_blocks), String(r.changed_outside)]);
}

/** Heatmap cell text: the share, or "undefined" where |Ci| = 0. */
export function overlapText(matrix: (number | null)[][]): string[][] {
  return matrix.map((row) => row.map((x) => (x === null ? "undefined" : x.toFixed(3))));
}

/** A mask's short label: task @ target density. */
export function maskLabel(m: Pick<MaskResult, "task" | "params">): string {
  return `${m.task.name} @${pct(m.params.target)}`;
}

function table(head: string[], rows: (string | Node)[][], testid: string): HTMLTableElement {
  return h("table", { class: "kv-table mono", "data-testid": testid },
    h("thead", {}, h("tr", {}, ...head.map((c) => h("th", { text: c })))),
    h("tbody", {}, ...rows.map((r) => h("tr", {}, ...r.map((c) => (typeof c === "string" ? h("td", { text: c }) : h("td", {}, c)))))));
}

function errorText(err: unknown): string {
  return err instanceof ApiError ? `${err.type}: ${err.message}` : err instanceof Error ? err.message : String(err);
}

function setStatus(el: HTMLElement, msg: string, error = false): void {
  el.textContent = msg;
  el.classList.toggle("error", error);
}

const num = (el: HTMLInputElement, fallback: number) => (el.value === "" || Number.isNaN(Number(el.value)) ? fallback : Number(el.value));

export class MasksView {
  readonly el: HTMLElement;
  private model = h("select", { "aria-label": "mask model", "data-testid": "mask-model" });
  private task = h("select", { "aria-label": "mask task", "data-testid": "mask-task" });
  private n = h("input", { type: "number", min: 1, max: 64, value: 16, "aria-label": "task prompts", "data-testid": "mask-n" });
  private density = h("select", { "aria-label": "target density", "data-testid": "mask-density" });
  private steps = h("input", { type: "number", min: 1, max: 20000, value: 200, "aria-label": "training steps", "data-testid": "mask-steps" });
  private evalEvery = h("input", { type: "number", min: 1, value: 10, "aria-label": "steps between curve points", "data-testid": "mask-eval-every" });
  private loss = h("select", { "aria-label": "faithfulness loss", "data-testid": "mask-loss" });
  private seed = h("input", { type: "number", min: 0, value: 0, "aria-label": "mask seed", "data-testid": "mask-seed" });
  private trainBtn = h("button", { type: "button", class: "primary", "data-testid": "mask-train", text: "Train mask" });
  private status = h("span", { class: "status", role: "status", "data-testid": "mask-status" });
  private curves = h("div", { class: "mask-curves", "data-testid": "mask-curves" });
  private out = h("div", { "data-testid": "mask-out" });
  private editPrompt = h("input", { type: "text", class: "wide", "aria-label": "edit prompt", "data-testid": "mask-edit-prompt", value: "The Eiffel Tower is located in the city of" });
  private editTarget = h("input", { type: "text", "aria-label": "edit target", "data-testid": "mask-edit-target", value: " Rome" });
  private editSteps = h("input", { type: "number", min: 1, max: 200, value: 10, "aria-label": "edit steps", "data-testid": "mask-edit-steps" });
  private editLr = h("input", { type: "number", min: 0, max: 1, step: 0.0005, value: 0.001, "aria-label": "edit learning rate", "data-testid": "mask-edit-lr" });
  private editBtn = h("button", { type: "button", "data-testid": "mask-edit-run", text: "Edit four ways", disabled: true });
  private editStatus = h("span", { class: "status", role: "status", "data-testid": "mask-edit-status" });
  private editOut = h("div", { "data-testid": "mask-edit-out" });
  private pick = h("div", { class: "mask-pick", "data-testid": "mask-pick" });
  private refreshBtn = h("button", { type: "button", "data-testid": "mask-refresh", text: "Refresh list" });
  private overlapBtn = h("button", { type: "button", "data-testid": "mask-overlap-run", text: "Overlap" });
  private overlapStatus = h("span", { class: "status", role: "status", "data-testid": "mask-overlap-status" });
  private overlapOut = h("div", { "data-testid": "mask-overlap-out" });
  private circuitId = h("input", { type: "text", class: "wide", "aria-label": "edge circuit id", "data-testid": "mask-circuit-id", placeholder: "stored edge circuit id (same model)" });
  private componentsBtn = h("button", { type: "button", "data-testid": "mask-components-run", text: "Compare with circuit", disabled: true });
  private componentsStatus = h("span", { class: "status", role: "status", "data-testid": "mask-components-status" });
  private componentsOut = h("div", { "data-testid": "mask-components-out" });
  private jobs: JobRunner;
  private editJobs: JobRunner;
  private points: MaskCurvePoint[] = [];
  private target = 0.05;
  private mask: MaskResult | null = null;
  /** Labels of masks seen in this page (trained or opened): the results list carries no task. */
  private labels = new Map<string, string>();
  private loaded = false;
  private drawing = false;
  private redraw = false;

  constructor(private client: Client, private getModel: () => string | undefined, private getCircuitId: () => string | null = () => null) {
    this.jobs = new JobRunner(client, (m, e) => setStatus(this.status, m, e), { cancel: "mask-cancel", progress: "mask-progress" });
    this.editJobs = new JobRunner(client, (m, e) => setStatus(this.editStatus, m, e), { cancel: "mask-edit-cancel", progress: "mask-edit-progress" });
    for (const d of DENSITIES) this.density.append(h("option", { value: d, text: pct(d), selected: d === 0.05 }));
    for (const l of ["kl", "ce"]) this.loss.append(h("option", { value: l, text: l === "kl" ? "KL to the full model" : "CE to its top-1" }));
    const syntax = h("optgroup", { label: "syntax minimal pairs" }, ...PHENOMENA.map((p) => h("option", { value: `phenomenon:${p}`, text: p })));
    this.task.append(h("optgroup", { label: "LRE relations", "data-group": "relations" }), syntax);
    const train = h("section", { class: "panel", "aria-label": "mask training" },
      h("h2", { text: "Parameter masks (Ge, Rudzicz, Zhu)" }),
      h("div", { class: "controls" }, h("label", {}, "model ", this.model), h("label", {}, "task ", this.task),
        h("label", { title: "prompts of the task" }, "n ", this.n), h("label", {}, "target density ", this.density),
        h("label", {}, "steps ", this.steps), h("label", { title: "steps between curve points (and checkpoints)" }, "eval every ", this.evalEvery),
        h("label", {}, "loss ", this.loss), h("label", {}, "seed ", this.seed),
        this.trainBtn, this.jobs.cancelBtn, this.jobs.progress, this.status),
      h("p", { class: "muted", text: "A hard-concrete gate per parameter block, trained to keep the task's next-token distribution (KL or CE) while the expected share of kept parameters stays under the target. A cancelled job resumes from its last checkpoint when started again with the same settings." }),
      this.curves, this.out);
    const edit = h("section", { class: "panel", "aria-label": "circuit-aware edit" },
      h("h2", { text: "Circuit-aware editing" }),
      h("div", { class: "controls" }, h("label", { class: "grow" }, "prompt ", this.editPrompt), h("label", {}, "new target ", this.editTarget),
        h("label", {}, "steps ", this.editSteps), h("label", {}, "lr ", this.editLr),
        this.editBtn, this.editJobs.cancelBtn, this.editJobs.progress, this.editStatus),
      h("p", { class: "muted", text: "Fine-tunes the fact only inside the mask, inside its complement, inside a random mask of the same density and in the whole model (same steps and lr). Locality: share of the other prompts whose top-1 is unchanged." }),
      this.editOut);
    const overlap = h("section", { class: "panel", "aria-label": "mask overlap" },
      h("h2", { text: "Overlap of stored masks" }),
      h("div", { class: "controls" }, this.refreshBtn, this.overlapBtn, this.overlapStatus),
      h("p", { class: "muted", text: "Entry (i, j) = |Ci ∩ Cj| / |Ci| in parameters, beside random masks of the same densities (a random Cj covers about its density of any Ci). Pick two or more masks of one model." }),
      this.pick, this.overlapOut);
    const beside = h("section", { class: "panel", "aria-label": "mask and edge circuit" },
      h("h2", { text: "Beside an edge circuit" }),
      h("div", { class: "controls" }, h("label", { class: "grow" }, "circuit ", this.circuitId), this.componentsBtn, this.componentsStatus),
      h("p", { class: "muted", text: "Mask density of each head (its query rows) and MLP, marked when the unit is a node of the stored edge circuit (e.g. the circuit last computed on the Explore tab)." }),
      this.componentsOut);
    this.el = h("div", { class: "masks-view" }, train, edit, overlap, beside);
    this.jobs.host = train;
    this.editJobs.host = edit;
    this.jobs.onEvent = (name, ev) => {
      const p = name === "progress" ? eventPoint(ev) : null;
      if (p) {
        this.points = mergeCurve(this.points, p);
        this.scheduleCurves();
      }
    };
    this.trainBtn.addEventListener("click", () => void this.train());
    this.editBtn.addEventListener("click", () => void this.edit());
    this.refreshBtn.addEventListener("click", () => void this.listMasks());
    this.overlapBtn.addEventListener("click", () => void this.overlap());
    this.componentsBtn.addEventListener("click", () => void this.components());
  }

  /** Fill the model (Llama family) and relation pickers once; refresh the stored masks and the circuit id. */
  async load(): Promise<void> {
    const circuit = this.getCircuitId();
    if (circuit && !this.circuitId.value) this.circuitId.value = circuit;
    if (!this.loaded) {
      try {
        const [models, relations] = await Promise.all([this.client.models(), this.client.relations()]);
        const llama = models.models.filter((m: ModelInfo) => m.arch.family === "llama");
        const want = this.getModel() ?? models.default;
        for (const m of llama) this.model.append(h("option", { value: m.id, text: m.id, selected: m.id === want }));
        if (!llama.length) setStatus(this.status, "no Llama-family model on this server: masks need one", true);
        const group = this.task.querySelector("optgroup[data-group=relations]")!;
        for (const r of relations.items) group.append(h("option", { value: `relation:${r.name}`, text: r.name }));
        this.loaded = true;
      } catch (err) {
        setStatus(this.status, errorText(err), true);
      }
    }
    await this.listMasks();
  }

  async train(): Promise<void> {
    let params: Record<string, unknown>;
    try {
      params = trainParams({ model: this.model.value || undefined, task: this.task.value, n: num(this.n, 16),
        density: Number(this.density.value), steps: num(this.steps, 200), evalEvery: num(this.evalEvery, 10),
        loss: this.loss.value as "kl" | "ce", seed: num(this.seed, 0) });
    } catch (err) {
      setStatus(this.status, errorText(err), true);
      return;
    }
    this.trainBtn.disabled = true;
    this.points = [];
    this.target = Number(params.density);
    clear(this.out);
    await this.drawCurves();
    try {
      const result = (await this.jobs.run({ kind: "mask-train", params })) as MaskResult | null;
      if (result) {
        await this.show(result);
        setStatus(this.status, `${maskLabel(result)}: density ${pct(result.density)}, KL ${fmt(result.faithfulness.kl)}${result.cached ? " (cached)" : ""}`);
        await this.listMasks();
      }
    } catch (err) {
      setStatus(this.status, errorText(err), true);
    } finally {
      this.trainBtn.disabled = false;
    }
  }

  /** Redraw the curves, coalescing events that arrive while a draw is under way (the latest points win). */
  private scheduleCurves(): void {
    if (this.drawing) {
      this.redraw = true;
      return;
    }
    this.drawing = true;
    void this.drawCurves().finally(() => {
      this.drawing = false;
      if (this.redraw) {
        this.redraw = false;
        this.scheduleCurves();
      }
    });
  }

  /** Loss, expected density (with the target) and faithfulness KL per step. */
  private async drawCurves(): Promise<void> {
    const pts = this.points;
    this.curves.dataset.points = String(pts.length);
    this.curves.dataset.steps = JSON.stringify(pts.map((p) => p.step));
    const P = await plotly();
    const x = pts.map((p) => p.step);
    const span = x.length ? [x[0], x[x.length - 1]] : [0, 1];
    await P.react(this.curves, [
      { x, y: pts.map((p) => p.loss), type: "scatter", mode: "lines+markers", name: "loss", xaxis: "x", yaxis: "y" },
      { x, y: pts.map((p) => p.density), type: "scatter", mode: "lines+markers", name: "E[density]", xaxis: "x2", yaxis: "y2" },
      { x: span, y: [this.target, this.target], type: "scatter", mode: "lines", name: "target", line: { dash: "dot", color: "#6b7280" }, xaxis: "x2", yaxis: "y2" },
      { x, y: pts.map((p) => p.faithfulness_kl), type: "scatter", mode: "lines+markers", name: "KL (hard mask)", xaxis: "x3", yaxis: "y3" },
    ] as never, { ...BASE_LAYOUT, height: 280, grid: { rows: 1, columns: 3, pattern: "independent" },
      margin: { l: 48, r: 12, t: 48, b: 40 }, legend: { orientation: "h", y: 1.22 },
      xaxis: { title: { text: "step" } }, xaxis2: { title: { text: "step" } }, xaxis3: { title: { text: "step" } },
      yaxis: { title: { text: "loss" } }, yaxis2: { title: { text: "density" }, rangemode: "tozero" }, yaxis3: { title: { text: "KL" }, rangemode: "tozero" },
    } as never, PLOT_CONFIG as never);
  }

  /** Render a trained mask (also the permalink page of a stored one) and make it the mask edits act on. */
  async show(m: MaskResult): Promise<void> {
    this.mask = m;
    if (m.id) this.labels.set(m.id, maskLabel(m));
    this.editBtn.disabled = this.componentsBtn.disabled = false;
    this.points = curvePoints(m.curves);
    this.target = m.params.target;
    clear(this.out);
    this.out.dataset.maskId = m.id ?? "";
    this.out.dataset.density = String(m.density);
    if (m.id) this.out.append(h("p", { "data-testid": "mask-permalink" }, "permalink: ",
      h("a", { href: `/c/${encodeURIComponent(m.id)}`, class: "mono", text: m.id }), " ",
      h("span", { class: "muted", text: `(${m.model})` })));
    const f = m.faithfulness, t = m.timing, p = m.params;
    this.out.append(table(["", ""], [
      ["task", `${m.task.name} (${m.task.prompts.length} prompts)`],
      ["density", `${pct(m.density)} of ${m.n_params.toLocaleString("en")} gated parameters (target ${pct(p.target)}; ${m.n_gates} gates; the embedding is always kept)`],
      ["faithfulness", `KL ${fmt(f.kl)} · top-1 agreement ${pct(f.top1_agreement)} · accuracy ${pct(f.accuracy)} (full model ${pct(f.full_accuracy)})`],
      ["training", `${p.steps} steps, lr ${p.lr}, λ ${p.lam}, loss ${p.loss}, seed ${p.seed}, warm start ${p.warm_start ?? "none"}`],
      ["timing", `${fmt(t.train_s, 2)} s for ${t.steps_run} steps${t.resumed_from_step ? ` (resumed from step ${t.resumed_from_step})` : ""} · ${fmt(t.step_s)} s/step = ${fmt(t.step_over_forward_backward, 2)}× a forward+backward (${fmt(t.forward_backward_s)} s)`],
    ], "mask-summary"));
    const comp = h("div", { class: "mask-chart", "data-testid": "mask-composition" });
    const units = h("div", { class: "mask-chart", "data-testid": "mask-units" });
    this.out.append(h("h3", { text: "Module composition" }), comp, h("h3", { text: "Density per head and MLP" }), units);
    await this.drawCurves();
    await this.drawComposition(comp, m.composition);
    await this.drawUnits(units, m.components);
  }

  private async drawComposition(el: HTMLElement, composition: Record<string, ModuleShare>): Promise<void> {
    const bars = compositionBars(composition);
    el.dataset.modules = JSON.stringify(bars.modules);
    el.dataset.shareOfMask = JSON.stringify(bars.ofMask);
    const P = await plotly();
    await P.react(el, [
      { x: bars.modules, y: bars.ofMask, type: "bar", name: "share of the mask" },
      { x: bars.modules, y: bars.inside, type: "bar", name: "share of the module inside the mask" },
    ] as never, { ...BASE_LAYOUT, height: 260, barmode: "group", yaxis: { title: { text: "share" }, range: [0, 1] } } as never, PLOT_CONFIG as never);
  }

  /** Bars of head / MLP densities by unit; units of the edge circuit outlined (when compared). */
  private async drawUnits(el: HTMLElement, comps: MaskComponent[]): Promise<void> {
    const shown = comps.filter((c) => c.kind !== "kv");
    el.dataset.units = String(shown.length);
    el.dataset.inCircuit = JSON.stringify(shown.filter((c) => c.in_circuit).map((c) => c.id));
    const P = await plotly();
    const traces = (["head", "mlp"] as const).map((kind) => {
      const cs = shown.filter((c) => c.kind === kind);
      return { x: cs.map((c) => c.id), y: cs.map((c) => c.density), type: "bar", name: kind === "head" ? "heads (query rows)" : "MLPs",
        marker: { line: { color: "#111827", width: cs.map((c) => (c.in_circuit ? 2.5 : 0)) } },
        text: cs.map((c) => (c.in_circuit ? "in circuit" : "")), hovertemplate: "%{x}: %{y:.3f} %{text}<extra></extra>" };
    });
    await P.react(el, traces as never, { ...BASE_LAYOUT, height: 260, xaxis: { type: "category" },
      yaxis: { title: { text: "mask density" }, range: [0, 1] } } as never, PLOT_CONFIG as never);
  }

  async edit(): Promise<void> {
    const mask = this.mask;
    if (!mask?.id) return;
    this.editBtn.disabled = true;
    clear(this.editOut);
    try {
      const result = (await this.editJobs.run({ kind: "mask-edit", params: { mask_id: mask.id, prompt: this.editPrompt.value,
        target: this.editTarget.value, steps: num(this.editSteps, 10), lr: num(this.editLr, 1e-3) } })) as MaskEditResult | null;
      if (result) await this.showEdit(result);
    } catch (err) {
      setStatus(this.editStatus, errorText(err), true);
    } finally {
      this.editBtn.disabled = false;
    }
  }

  showEdit(out: MaskEditResult): Promise<void> {
    clear(this.editOut);
    this.editOut.dataset.rows = String(out.rows.length);
    this.editOut.append(h("p", { "data-testid": "mask-edit-main" }, "edit ", h("span", { class: "mono", text: out.prompt }), " → ",
      h("span", { class: "mono", text: JSON.stringify(out.target) }), ` · ${out.steps} steps, lr ${out.lr}, ${out.locality_prompts.length} locality prompts · mask `,
      h("a", { href: `/c/${encodeURIComponent(out.mask_id)}`, class: "mono", text: out.mask_id.slice(0, 12) }),
      out.id ? " · permalink " : "", out.id ? h("a", { href: `/c/${encodeURIComponent(out.id)}`, class: "mono", "data-testid": "mask-edit-permalink", text: out.id.slice(0, 12) }) : ""));
    this.editOut.append(table(["variant", "density", "NLL pre", "NLL post", "Δ NLL", "locality", "changed blocks", "changed outside"],
      editRows(out.rows), "mask-edit-table"));
    const chart = h("div", { class: "mask-chart", "data-testid": "mask-edit-losses" });
    this.editOut.append(chart);
    return plotly().then((P) => P.react(chart, out.rows.map((r) => ({ x: [...r.losses.map((_, i) => i), r.losses.length], y: [...r.losses, r.nll_post], type: "scatter",
      mode: "lines+markers", name: r.variant })) as never, { ...BASE_LAYOUT, height: 240,
      xaxis: { title: { text: "updates made" } }, yaxis: { title: { text: "NLL of the new target" } } } as never, PLOT_CONFIG as never))
      .then(() => undefined);
  }

  /** The stored masks as checkboxes (newest first), each with a button to open it. */
  async listMasks(): Promise<void> {
    let items: ResultSummary[];
    try {
      items = (await this.client.results({ kind: "mask", limit: 50 })).items;
    } catch (err) {
      setStatus(this.overlapStatus, errorText(err), true);
      return;
    }
    const ticked = new Set([...this.pick.querySelectorAll<HTMLInputElement>("input[data-mask]:checked")].map((b) => b.dataset.mask!));
    clear(this.pick);
    this.pick.dataset.count = String(items.length);
    if (!items.length) this.pick.append(h("p", { class: "muted", text: "no stored masks yet: train one above" }));
    for (const r of items) {
      const box = h("input", { type: "checkbox", "aria-label": `pick mask ${r.id}`, "data-mask": r.id, checked: ticked.has(r.id) });
      const open = h("button", { type: "button", class: "link", "data-open-mask": r.id, text: "open" });
      open.addEventListener("click", () => void this.open(r.id));
      this.pick.append(h("div", { class: "row" }, h("label", {}, box, " ", h("span", { class: "mono", text: r.id.slice(0, 12) }), " ",
        h("span", { text: this.labels.get(r.id) ?? "" }), " ", h("span", { class: "muted", text: `${r.model} · ${r.created_at}` })), open));
    }
  }

  private async open(id: string): Promise<void> {
    try {
      await this.show(await this.client.mask(id));
      await this.listMasks();
    } catch (err) {
      setStatus(this.status, errorText(err), true);
    }
  }

  async overlap(): Promise<void> {
    const ids = [...this.pick.querySelectorAll<HTMLInputElement>("input[data-mask]:checked")].map((b) => b.dataset.mask!);
    if (ids.length < 2) {
      setStatus(this.overlapStatus, "pick two or more masks", true);
      return;
    }
    this.overlapBtn.disabled = true;
    setStatus(this.overlapStatus, "…");
    try {
      const out = await this.client.maskOverlap({ mask_ids: ids });
      await this.showOverlap(out);
      setStatus(this.overlapStatus, `${out.mask_ids.length} masks of ${out.model}`);
    } catch (err) {
      setStatus(this.overlapStatus, errorText(err), true);
    } finally {
      this.overlapBtn.disabled = false;
    }
  }

  async showOverlap(out: MaskOverlapResult): Promise<void> {
    clear(this.overlapOut);
    const short = out.labels.map((_, i) => `C${i + 1}`);
    const labels = out.labels.map((l, i) => escapePlotly(`C${i + 1}: ${l} (${pct(out.densities[i])}, ${out.mask_ids[i].slice(0, 8)})`));
    const masks = h("div", { class: "mask-heatmap", "data-testid": "mask-overlap", "data-matrix": JSON.stringify(out.matrix) });
    const random = h("div", { class: "mask-heatmap", "data-testid": "mask-overlap-random", "data-matrix": JSON.stringify(out.random_matrix) });
    this.overlapOut.append(h("div", { class: "mask-heatmaps" }, masks, random));
    const P = await plotly();
    const draw = (el: HTMLElement, matrix: (number | null)[][], title: string) => P.react(el, [{
      z: matrix, x: short, y: labels, type: "heatmap", zmin: 0, zmax: 1, colorscale: "Viridis",
      text: overlapText(matrix), texttemplate: "%{text}", hovertemplate: "row %{y}<br>column %{x}: |Ci ∩ Cj| / |Ci| = %{text}<extra></extra>",
    }] as never, { ...BASE_LAYOUT, height: 320, showlegend: false, title: { text: title },
      margin: { l: 60, r: 12, t: 36, b: 60 }, xaxis: { automargin: true }, yaxis: { autorange: "reversed", automargin: true } } as never, PLOT_CONFIG as never);
    await draw(masks, out.matrix, "masks");
    await draw(random, out.random_matrix, `random masks, same densities (seed ${out.seed}+i)`);
  }

  async components(): Promise<void> {
    const mask = this.mask;
    const circuit = this.circuitId.value.trim() || this.getCircuitId() || "";
    if (!mask?.id) return;
    if (!circuit) {
      setStatus(this.componentsStatus, "give a stored edge circuit id (compute one on the Explore tab)", true);
      return;
    }
    this.circuitId.value = circuit;
    this.componentsBtn.disabled = true;
    try {
      this.showComponents(await this.client.maskComponents({ mask_id: mask.id, circuit_id: circuit }));
      setStatus(this.componentsStatus, "");
    } catch (err) {
      setStatus(this.componentsStatus, errorText(err), true);
    } finally {
      this.componentsBtn.disabled = false;
    }
  }

  showComponents(out: MaskComponentsResult): void {
    clear(this.componentsOut);
    const s = out.summary;
    this.componentsOut.append(table(["units", "in circuit", "outside", "mean density in circuit", "mean density outside"],
      (["head", "mlp"] as const).filter((k) => s[k]).map((k) => [k === "head" ? "heads" : "MLPs", String(s[k]!.n_in_circuit), String(s[k]!.n_outside),
        fmt(s[k]!.mean_density_in_circuit), fmt(s[k]!.mean_density_outside)]), "mask-components-summary"));
    const chart = h("div", { class: "mask-chart", "data-testid": "mask-components-chart" });
    const top = out.components.filter((c) => c.kind !== "kv").sort((a, b) => b.density - a.density).slice(0, 24);
    this.componentsOut.append(chart, h("h3", { text: "Densest heads and MLPs" }),
      table(["unit", "layer", "density", "in circuit"], top.map((c) => [c.id, String(c.layer), fmt(c.density), c.in_circuit ? "yes" : "no"]), "mask-components-table"));
    void this.drawUnits(chart, out.components);
  }
}

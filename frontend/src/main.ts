/** kcircuits dashboard entry: routes (/, /c/{id}, /v/{short}, ?bench=N), prompt bar + live lens, circuit, edit, results. */
import "./style.css";
import { api, ApiError } from "./api/client";
import type { CircuitResult, CompareResult, LensResult, MaskEditResult, MaskResult, NeuronEditResult, NeuronsResult, RelationRow, SweepResult } from "./api/types";
import { GraphCanvas } from "./graph/canvas";
import { drawCircuit, syntheticCircuit } from "./graph/model";
import { decodeState, parseRoute, writeStateToUrl } from "./state/url";
import { clear, debounce, h, showToken } from "./util/dom";
import { CircuitView } from "./views/circuit";
import { EditView } from "./views/edit";
import { LensView, TokenChips } from "./views/lens";
import { MasksView } from "./views/masks";
import { NeuronsView } from "./views/neurons";
import { RelationsView } from "./views/relations";
import { ResultsList } from "./views/share";
import { SweepPanel } from "./views/sweep";

interface TestHook {
  cspViolations: { directive: string; blocked: string }[];
  lens: LensResult | null;
  circuit: CircuitResult | null;
  graph: GraphCanvas | null;
  drawn: () => { nodes: string[]; edges: string[] };
  drawnEdges: () => { key: string; source: string; target: string }[];
  bench?: { edges: number; firstRenderMs: number; drawMs: number; panFrames?: number[] };
  panBench?: (frames: number) => Promise<{ draw: number[]; frame: number[] }>;
  lensRequests: number;
}
declare global {
  interface Window { __kc: TestHook }
}

const hook: TestHook = {
  cspViolations: [], lens: null, circuit: null, graph: null, lensRequests: 0,
  drawn: () => ({ nodes: hook.graph?.nodeIds() ?? [], edges: hook.graph?.edgeKeys() ?? [] }),
  drawnEdges: () => hook.graph?.edgeList() ?? [],
};
/** Dev server and `npm run build:test` (browser tests, render bench) expose the hook and the bench page; production builds drop both. */
const TEST_BUILD = import.meta.env.DEV || import.meta.env.MODE === "test";
if (TEST_BUILD) {
  window.__kc = hook;
  document.addEventListener("securitypolicyviolation", (e) => hook.cspViolations.push({ directive: e.violatedDirective, blocked: e.blockedURI }));
}

const app = document.getElementById("app")!;

function header(active: string, tabs?: Record<string, () => void>): HTMLElement {
  const nav = h("nav", { class: "tabs", role: "tablist" });
  for (const [name, fn] of Object.entries(tabs ?? {})) {
    const b = h("button", { type: "button", role: "tab", "aria-selected": name === active ? "true" : "false", "data-tab": name, text: name });
    b.addEventListener("click", () => {
      nav.querySelectorAll("button").forEach((x) => x.setAttribute("aria-selected", x === b ? "true" : "false"));
      fn();
    });
    nav.append(b);
  }
  return h("header", { class: "top" }, h("a", { href: "/", class: "brand", text: "kcircuits" }),
    h("span", { class: "muted", text: "knowledge circuits in transformer LMs" }), nav);
}

// ---------------------------------------------------------------------------------------------------------------
class Dashboard {
  private model = h("select", { "aria-label": "model", "data-testid": "model" });
  private prompt = h("textarea", { rows: 1, class: "prompt", "aria-label": "prompt", "data-testid": "prompt", placeholder: "The Eiffel Tower is located in the city of", spellcheck: false });
  private target = h("input", { type: "text", "aria-label": "target answer", "data-testid": "target", placeholder: "target (top-1 by default)" });
  private useSession = h("input", { type: "checkbox", "aria-label": "run on edited model", disabled: true });
  private lensStatus = h("span", { class: "status", "data-testid": "lens-status", role: "status" });
  private saveLensBtn = h("button", { type: "button", "data-testid": "save-lens", text: "Save lens", title: "store this lens trace and get its permalink" });
  private savedLens = h("span", { class: "muted", "data-testid": "saved-lens" });
  private chips = new TokenChips();
  private lensView = new LensView();
  private circuitView: CircuitView;
  private editView: EditView;
  private results = new ResultsList(api);
  private relations: RelationsView;
  private neurons: NeuronsView;
  private masks: MasksView;
  private lastCircuitId: string | null = null;
  private subjectOverride: string | null = null;
  private session: string | null = null;
  private ctrl: AbortController | null = null;
  lens: LensResult | null = null;

  constructor(root: HTMLElement) {
    this.circuitView = new CircuitView(api, () => this.context());
    this.circuitView.onCircuit = (c) => { hook.circuit = c; hook.graph = this.circuitView.graph; this.lastCircuitId = c.id ?? null; };
    this.editView = new EditView(api, () => this.model.value || undefined);
    this.relations = new RelationsView(api, () => this.model.value || undefined);
    this.neurons = new NeuronsView(api, () => this.model.value || undefined);
    this.masks = new MasksView(api, () => this.model.value || undefined, () => this.lastCircuitId);
    this.editView.onSession = (id) => {
      this.session = id;
      this.useSession.disabled = !id;
      this.useSession.checked = !!id;
      this.scheduleLens();
    };
    const explore = h("div", { class: "page explore" },
      h("section", { class: "panel prompt-bar", "aria-label": "prompt" },
        h("div", { class: "row" }, h("label", {}, "model ", this.model), this.prompt,
          h("label", {}, "target ", this.target), h("label", { title: "use the edited model of the open edit session" }, this.useSession, " edited"), this.lensStatus,
          this.saveLensBtn, this.savedLens),
        h("div", { class: "row subject-row" }, h("span", { class: "muted", text: "subject (click tokens to adjust):" }), this.chips.el)),
      this.lensView.el, this.circuitView.el);
    const pages: Record<string, HTMLElement> = { Explore: explore, Edit: h("div", { class: "page" }, this.editView.el),
      Relations: h("div", { class: "page" }, this.relations.el), Neurons: h("div", { class: "page" }, this.neurons.el),
      Masks: h("div", { class: "page" }, this.masks.el), Results: h("div", { class: "page" }, this.results.el) };
    const show = (name: string) => {
      for (const [k, el] of Object.entries(pages)) el.hidden = k !== name;
      if (name === "Results") void this.results.load();
      if (name === "Relations") void this.relations.load();
      if (name === "Masks") void this.masks.load();
      if (name === "Neurons") {
        const ctx = this.context();
        this.neurons.prefill(ctx.prompt, ctx.target);
        void this.neurons.load();
      }
    };
    root.append(header("Explore", { Explore: () => show("Explore"), Edit: () => show("Edit"),
      Relations: () => show("Relations"), Neurons: () => show("Neurons"), Masks: () => show("Masks"), Results: () => show("Results") }),
      ...Object.values(pages));
    show("Explore");
    const sched = debounce(() => void this.runLens(), 300);
    this.scheduleLens = sched;
    this.prompt.addEventListener("input", () => { this.subjectOverride = null; sched(); });
    this.prompt.addEventListener("keydown", (ev) => { if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); void this.runLens(); } });
    this.target.addEventListener("input", sched);
    this.model.addEventListener("change", () => void this.runLens());
    this.useSession.addEventListener("change", () => void this.runLens());
    this.saveLensBtn.addEventListener("click", () => void this.saveLens());
    this.chips.onChange = (subject) => { this.subjectOverride = subject; void this.runLens(); };
    void this.loadModels();
  }

  private scheduleLens: () => void = () => {};

  private async loadModels(): Promise<void> {
    try {
      const r = await api.models();
      for (const m of r.models) this.model.append(h("option", { value: m.id, selected: m.id === r.default, text: `${m.id} (${m.arch.n_layers}L×${m.arch.n_heads}H)` }));
    } catch (err) {
      this.lensStatus.textContent = `models unavailable: ${(err as Error).message}`;
    }
  }

  private context() {
    const explicit = this.target.value;
    return {
      model: this.model.value || undefined,
      prompt: this.prompt.value,
      target: explicit !== "" ? explicit : this.lens?.prediction?.token ?? null,
      subject: this.subjectOverride ?? this.lens?.subject?.text ?? null,
      session: this.useSession.checked ? this.session : null,
    };
  }

  /** Store the lens shown now (same request, save: true) and link its permalink. */
  async saveLens(): Promise<void> {
    const lens = this.lens;
    if (!lens) return;
    const ctx = this.context();
    try {
      const saved = await api.lens({ model: ctx.model, prompt: lens.prompt, target: lens.target?.text ?? null,
        subject: this.subjectOverride, top_k: 5, session: ctx.session, save: true }) as LensResult & { id?: string };
      clear(this.savedLens);
      if (saved.id) this.savedLens.append("saved: ", h("a", { href: `/c/${encodeURIComponent(saved.id)}`, class: "mono", text: saved.id.slice(0, 12) }));
    } catch (err) {
      this.savedLens.textContent = err instanceof ApiError ? `${err.type}: ${err.message}` : String(err);
    }
  }

  async runLens(retarget = true): Promise<void> {
    const prompt = this.prompt.value;
    this.ctrl?.abort();
    if (!prompt.trim()) return;
    const ctrl = new AbortController();
    this.ctrl = ctrl;
    const ctx = this.context();
    const explicit = this.target.value !== "";
    // Without an explicit target, ask for the previous prediction's curves (corrected below once it settles).
    const target = explicit ? this.target.value : this.lens?.prediction?.token ?? null;
    this.lensStatus.textContent = "…";
    hook.lensRequests++;
    try {
      const lens = await api.lens({ model: ctx.model, prompt, target, subject: this.subjectOverride, top_k: 5, session: ctx.session }, ctrl.signal);
      if (ctrl.signal.aborted) return;
      this.lens = lens;
      hook.lens = lens;
      this.target.placeholder = `top-1: ${showToken(lens.prediction.token)}`;
      this.lensStatus.textContent = `top-1 ${JSON.stringify(lens.prediction.token)} p=${lens.prediction.prob.toFixed(3)}`;
      this.chips.render(lens.tokens, lens.subject?.positions ?? []);
      this.lensView.render(lens);
      this.circuitView.setLens(lens);
      if (retarget && !explicit && lens.target?.token !== lens.prediction.token) await this.runLens(false);
    } catch (err) {
      if ((err as Error).name === "AbortError") return;
      this.lensStatus.textContent = err instanceof ApiError ? `${err.type}: ${err.message}` : String(err);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
type StoredResult = { kind: string; prompt?: string; provenance?: Record<string, unknown> } & Record<string, unknown>;

/** A stored lens trace, sweep or relation row in its own view; anything else as formatted JSON. */
async function storedResultPage(main: HTMLElement, result: StoredResult): Promise<void> {
  const title = h("section", { class: "panel prompt-bar", "data-testid": "stored-kind", "data-kind": result.kind },
    h("div", { class: "row" }, h("strong", { text: `${result.kind} ` }),
      result.prompt ? h("span", { class: "mono shared-prompt", "data-testid": "shared-prompt", text: result.prompt }) : "",
      h("span", { class: "muted", text: ` ${String(result.provenance?.model ?? "")} · created ${String(result.provenance?.created_at ?? "")}` })));
  main.append(title);
  if (result.kind === "lens") {
    const view = new LensView();
    main.append(view.el);
    view.render(result as unknown as LensResult);
  } else if (result.kind === "sweep") {
    const panel = new SweepPanel();
    main.append(h("section", { class: "panel" }, panel.el));
    await panel.show(result as unknown as SweepResult);
  } else if (result.kind === "relation" || result.kind === "relation_row") {
    const view = new RelationsView(api, () => undefined);
    main.append(view.el);
    view.addRow(result as unknown as RelationRow);
    void view.load();
  } else if (result.kind === "neurons" || result.kind === "neurons_compare" || result.kind === "neuron_edit") {
    const view = new NeuronsView(api, () => undefined);
    main.append(view.el);
    if (result.kind === "neurons") await view.show(result as unknown as NeuronsResult);
    else if (result.kind === "neurons_compare") await view.showCompare(result as unknown as CompareResult);
    else view.showEdit(result as unknown as NeuronEditResult);
  } else if (result.kind === "mask" || result.kind === "mask_edit") {
    const view = new MasksView(api, () => undefined);
    main.append(view.el);
    if (result.kind === "mask") await view.show(result as unknown as MaskResult);
    else {
      await view.showEdit(result as unknown as MaskEditResult);
      try { await view.show(await api.mask((result as unknown as MaskEditResult).mask_id)); } catch { /* the edit's mask may be gone */ }
    }
    void view.load();
  } else {
    main.append(h("section", { class: "panel" }, h("pre", { class: "mono", text: JSON.stringify(result, null, 2) })));
  }
}

async function circuitPage(root: HTMLElement, id: string, valid: boolean): Promise<void> {
  root.append(header(""));
  const main = h("div", { class: "page" });
  root.append(main);
  const notFound = (why: string) => {
    clear(main);
    main.append(h("section", { class: "panel not-found", "data-testid": "not-found" },
      h("h2", { text: "Result not found" }), h("p", { text: why }), h("p", {}, h("a", { href: "/", text: "Back to the dashboard" }))));
  };
  if (!valid) return notFound(`"${id}" is not a valid result id.`);
  let result: CircuitResult;
  try {
    result = await api.result<CircuitResult>(id);
  } catch (err) {
    if (err instanceof ApiError && (err.status === 404 || err.status === 422)) return notFound(`No stored result has the id "${id}".`);
    return notFound(`Could not load the result: ${(err as Error).message}`);
  }
  if (result.kind !== "circuit") return storedResultPage(main, result as unknown as StoredResult);
  result.id ??= id;
  const state = decodeState(window.location.search);
  const promptBox = h("section", { class: "panel prompt-bar" },
    h("div", { class: "row" }, h("strong", { text: "prompt " }), h("span", { class: "mono shared-prompt", "data-testid": "shared-prompt", text: result.prompt }),
      h("strong", { text: " target " }), h("span", { class: "mono", text: JSON.stringify(result.target) })));
  const view = new CircuitView(api, () => ({ model: result.model, prompt: result.prompt, target: result.target, subject: result.subject?.text ?? null }), { controls: false });
  view.onCircuit = (c) => { hook.circuit = c; hook.graph = view.graph; };
  view.onState = (s) => writeStateToUrl(s);
  main.append(promptBox, view.el);
  try {
    const lens = await api.lens({ model: result.model, prompt: result.prompt, target: result.target, subject: result.subject?.text ?? null });
    view.setLens(lens);
  } catch {
    // lens is optional here (model not loaded on this server): the replay just shows no lens row
  }
  view.setCircuit(result, state);
}

async function viewRedirect(short: string): Promise<void> {
  try {
    const v = await api.view(short);
    const qs = new URLSearchParams(Object.entries(v.state).map(([k, x]) => [k, String(x)])).toString();
    window.location.replace(`/c/${encodeURIComponent(v.result_id)}${qs ? `?${qs}` : ""}`);
  } catch {
    app.append(header(""), h("section", { class: "panel not-found", "data-testid": "not-found" }, h("h2", { text: "View not found" }), h("p", { text: `No saved view "${short}".` })));
  }
}

function benchPage(root: HTMLElement, nEdges: number): void {
  root.classList.add("bench");
  const box = h("div", { class: "graph-box full", "data-testid": "graph" });
  root.append(box);
  const g = new GraphCanvas(box);
  const c = syntheticCircuit(nEdges);
  const d = drawCircuit(c, { mode: "server" });
  const flush = () => g.canvas.getContext("2d")!.getImageData(0, 0, 1, 1); // forces the canvas raster now
  g.setData(d.nodes, d.edges);
  flush();
  hook.graph = g;
  hook.circuit = c;
  hook.bench = { edges: d.edges.length, firstRenderMs: performance.now(), drawMs: g.lastDrawMs };
  // Each frame: the interactive pan path (move the cached layer), rasterised before the next frame is timed.
  hook.panBench = (frames: number) => new Promise((resolve) => {
    const draw: number[] = [], frame: number[] = [];
    let last = performance.now(), i = 0;
    const tick = () => {
      const now = performance.now();
      if (i > 0) frame.push(now - last);
      last = now;
      const t0 = performance.now();
      g.panNow(i % 60 < 30 ? 8 : -8, i % 10 < 5 ? 3 : -3);
      flush();
      draw.push(performance.now() - t0);
      if (++i < frames) requestAnimationFrame(tick);
      else resolve({ draw, frame });
    };
    requestAnimationFrame(tick);
  });
}

const route = parseRoute(window.location.pathname, window.location.search);
if (TEST_BUILD && route.page === "bench") benchPage(app, route.edges);
else if (route.page === "circuit") void circuitPage(app, route.id, route.valid);
else if (route.page === "view") void viewRedirect(route.short);
else new Dashboard(app);

/** Relation runs over the LRE dataset (a "relation" job per run): one circuit per relation from its
 * validation facts, Hit@k on validation and test for the full model, the circuit and random circuits,
 * accumulated as rows of a paper-style table (Yao et al. 2024, Table 1). */
import { ApiError, type Client } from "../api/client";
import type { HitSplit, RelationRow } from "../api/types";
import { fmt, h, pct } from "../util/dom";
import { JobRunner } from "./job";

const COLUMNS = ["type", "relation", "model", "method", "#edges", "edges %", "val n", "val orig", "val circ", "val rand",
  "test n", "test orig", "test circ", "test rand", "time"];

export class RelationsView {
  readonly el: HTMLElement;
  private relation = h("select", { "aria-label": "relation", "data-testid": "relation-name" });
  private n = h("input", { type: "number", min: 2, max: 500, value: 10, "aria-label": "facts per split", "data-testid": "relation-n" });
  private method = h("select", { "aria-label": "relation method", "data-testid": "relation-method" });
  private ablation = h("select", { "aria-label": "relation ablation", "data-testid": "relation-ablation" });
  private topN = h("input", { type: "number", min: 1, placeholder: "1% of edges", "aria-label": "circuit edges", "data-testid": "relation-top-n" });
  private knownK = h("input", { type: "number", min: 1, placeholder: "k", "aria-label": "known if answer in top", "data-testid": "relation-known-k" });
  private runBtn = h("button", { type: "button", class: "primary", "data-testid": "relation-run", text: "Run relation" });
  private status = h("span", { class: "status", role: "status", "data-testid": "relation-status" });
  private body = h("tbody", {});
  private jobs: JobRunner;
  private loaded = false;

  constructor(private client: Client, private getModel: () => string | undefined) {
    for (const m of ["eap", "eap-ig"]) this.method.append(h("option", { value: m, text: m }));
    for (const a of ["patch", "zero", "mean"]) this.ablation.append(h("option", { value: a, text: a }));
    this.jobs = new JobRunner(client, (msg, error) => this.setStatus(msg, error), { cancel: "relation-cancel", progress: "relation-progress" });
    const table = h("table", { class: "kv-table mono relation-table", "data-testid": "relation-table" },
      h("thead", {}, h("tr", {}, ...COLUMNS.map((c) => h("th", { text: c })))), this.body);
    this.el = h("section", { class: "panel relations-panel", "aria-label": "relation runs" },
      h("h2", { text: "Relations (LRE)" }),
      h("div", { class: "controls" }, h("label", {}, "relation ", this.relation), h("label", {}, "facts/split ", this.n),
        h("label", {}, "method ", this.method), h("label", {}, "ablation ", this.ablation), h("label", {}, "edges ", this.topN),
        h("label", { title: "a fact counts as known when its answer is in the model's top-k" }, "known top-k ", this.knownK),
        this.runBtn, this.jobs.cancelBtn, this.jobs.progress, this.status),
      h("p", { class: "muted", text: "Known facts only (answer in the top-k); validation facts find one circuit per relation, test facts evaluate it. Hit@10 for the full model, the circuit, and random circuits of the same size." }),
      table);
    this.jobs.host = this.el;
    this.runBtn.addEventListener("click", () => void this.run());
  }

  private setStatus(msg: string, error = false): void {
    this.status.textContent = msg;
    this.status.classList.toggle("error", error);
  }

  /** Fill the relation picker once (on first show). */
  async load(): Promise<void> {
    if (this.loaded) return;
    try {
      const { items } = await this.client.relations();
      for (const r of items) this.relation.append(h("option", { value: r.name, text: `${r.category} / ${r.name} (${r.n_samples})` }));
      const preferred = items.find((r) => r.name === "country_capital_city");
      if (preferred) this.relation.value = preferred.name;
      this.loaded = true;
    } catch (err) {
      this.setStatus(String(err), true);
    }
  }

  async run(): Promise<void> {
    const params: Record<string, unknown> = {
      model: this.getModel(), relation: this.relation.value, n: Number(this.n.value) || 10,
      method: this.method.value, ablation: this.ablation.value,
    };
    if (this.topN.value !== "") params.top_n = Number(this.topN.value);
    if (this.knownK.value !== "") params.known_k = Number(this.knownK.value);
    this.runBtn.disabled = true;
    try {
      const row = (await this.jobs.run({ kind: "relation", params })) as RelationRow | null;
      if (row) {
        this.addRow(row);
        this.setStatus(`${row.relation}: ${row.edges} edges, test Hit@${row.k} circuit ${fmt(row.test.circuit, 2)}`);
      }
    } catch (err) {
      this.setStatus(err instanceof ApiError ? `${err.type}: ${err.message}` : String(err), true);
    } finally {
      this.runBtn.disabled = false;
    }
  }

  /** Append one Table 1 row (also used by the permalink page of a stored relation row). */
  addRow(row: RelationRow): void {
    const hit = (s: HitSplit) => [String(s.n), fmt(s.original, 2), fmt(s.circuit, 2), fmt(s.random, 2)];
    const cells = [row.category, row.relation, row.model, `${row.method} · ${row.ablation}`, String(row.edges), pct(row.edge_fraction),
      ...hit(row.validation), ...hit(row.test), `${fmt(row.timings.total_s, 1)} s`];
    this.body.append(h("tr", { "data-testid": "relation-row" }, ...cells.map((c) => h("td", { text: c }))));
  }
}

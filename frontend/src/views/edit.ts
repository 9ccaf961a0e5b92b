/** Knowledge-editing view: edit a fact, follow the job, then compare pre vs post (lens, circuit diff, heads, replay). */
import { ApiError, followJob, type Client } from "../api/client";
import type { Curve, EditAnalysis, EditCompare, EditMethod, EditSession, EditSideStatus, HeadDiffRow, LensResult, TopMembership } from "../api/types";
import { GraphCanvas } from "../graph/canvas";
import { drawDiff } from "../graph/model";
import { clear, fmt, h, pct, showToken } from "../util/dom";
import { escapePlotly } from "../util/escape";
import { BASE_LAYOUT, PLOT_CONFIG, plotly } from "../util/plot";
import { Replay } from "./replay";

export function curvesOf(cmp: EditCompare): { new: { pre: Curve; post: Curve }; old: { pre: Curve; post: Curve } } | null {
  if (cmp.lens.curves) return cmp.lens.curves;
  const t = (l: LensResult) => (l.target ? { rank: l.target.rank, prob: l.target.prob } : null);
  const pre = t(cmp.lens.pre), post = t(cmp.lens.post);
  return pre && post ? { new: { pre, post }, old: { pre: { rank: [], prob: [] }, post: { rank: [], prob: [] } } } : null;
}

/** Head rows to list: every changed head (already sorted by change), the unchanged ones only when asked. */
export function shownHeadRows(rows: HeadDiffRow[], showUnchanged: boolean): HeadDiffRow[] {
  return showUnchanged ? rows : rows.filter((r) => r.changed);
}

/** Short tags for a head row: targets / subject tokens that entered or left its top tokens, and the mover pattern. */
export function headTags(row: HeadDiffRow, editMethod?: string): string[] {
  const tags: string[] = [];
  const word = (m: TopMembership | undefined) => (m === "entered" ? "+" : m === "left" ? "−" : null);
  for (const [name, label] of [["new", "new target"], ["old", "old target"]] as const) {
    const w = word(row.marks[name]);
    if (w) tags.push(`${w}${label}`);
  }
  for (const t of row.marks.subject_entered) tags.push(`+subject ${showToken(t)}`);
  for (const t of row.marks.subject_left) tags.push(`−subject ${showToken(t)}`);
  if (row.mover) tags.push(editMethod === "rome" ? "mover after ROME" : "mover (new target)");
  return tags;
}

/** One line per side: faithfulness and, when the side cannot be diffed, why. */
export function sideLine(name: string, side: EditSideStatus | undefined): string {
  if (!side) return `${name}: –`;
  const base = `${name}: ${side.edges} edges, faithfulness ${fmt(side.faithfulness, 2)}`;
  return side.usable ? base : `${base} — ${side.reason}`;
}

/** The "why" under the numbers: one line per finding (lens-rank block, mover switch, side effects). */
export function whyLines(a: EditAnalysis): [string, string][] {
  const l = a.lens;
  const where = l.first_top_block_post === null
    ? `never in the top ${l.top_k} at the last token`
    : `top ${l.top_k} after block ${l.first_top_block_post}` + (l.offset === null ? "" : ` (${l.offset >= 0 ? "+" : ""}${l.offset} vs edited layer ${a.edit_layer})`);
  const lines: [string, string][] = [["new target in the lens", `${where}${l.paper ? `; paper: ${l.paper}` : ""}${l.note ? ` — ${l.note}` : ""}`]];
  const movers = a.mover.heads.map((m) => `${m.node} [${m.top_pre.slice(0, 3).map(showToken).join(" ")}] → [${m.top_post.slice(0, 3).map(showToken).join(" ")}]`);
  lines.push(["mover switch", a.mover.switched ? `yes: ${movers.join("; ")}` : "no head that reads the subject gained the new target"]);
  for (const [kind, label] of [["neighbour", "other subjects, same relation"], ["same_subject", "other facts, same subject"]] as const) {
    const s = a.side_effects.summary[kind];
    lines.push([label, !s || s.n === 0 ? "no such LRE prompt for this edit"
      : `${s.n} prompts: answer changed ${pct(s.changed_rate)}, became the new target ${pct(s.became_new_rate)}, a mover carries the new target ${pct(s.mover_carries_new_rate)}`]);
  }
  return lines;
}

export class EditView {
  readonly el: HTMLElement;
  private method = h("select", { "aria-label": "edit method", "data-testid": "edit-method" });
  private prompt = h("input", { type: "text", class: "wide", "aria-label": "edit prompt", "data-testid": "edit-prompt", value: "The Eiffel Tower is located in the city of" });
  private subject = h("input", { type: "text", "aria-label": "edit subject", "data-testid": "edit-subject", value: "Eiffel Tower" });
  private target = h("input", { type: "text", "aria-label": "new target", "data-testid": "edit-target", value: " Rome" });
  private layer = h("input", { type: "number", min: 0, "aria-label": "layer", placeholder: "default", "data-testid": "edit-layer" });
  private topN = h("input", { type: "number", min: 1, placeholder: "auto", "aria-label": "diff circuit top-n", "data-testid": "edit-top-n" });
  private runBtn = h("button", { type: "button", class: "primary", "data-testid": "edit-run", text: "Edit fact" });
  private closeBtn = h("button", { type: "button", "data-testid": "edit-close", text: "Close session", hidden: true });
  private progress = h("progress", { max: 1, value: 0, hidden: true });
  private status = h("span", { class: "status", role: "status", "data-testid": "edit-status" });
  private out = h("div", { class: "edit-out", "data-testid": "edit-out" });
  private session: string | null = null;
  onSession: (id: string | null) => void = () => {};

  constructor(private client: Client, private getModel: () => string | undefined) {
    for (const m of ["rome", "ft-m", "ft-l"]) this.method.append(h("option", { value: m, text: m }));
    this.el = h("section", { class: "panel edit-panel", "aria-label": "knowledge editing" },
      h("h2", { text: "Edit a fact" }),
      h("div", { class: "controls" }, h("label", {}, "method ", this.method), h("label", { class: "grow" }, "prompt ", this.prompt),
        h("label", {}, "subject ", this.subject), h("label", {}, "new target ", this.target), h("label", {}, "layer ", this.layer),
        h("label", {}, "diff top-n ", this.topN), this.runBtn, this.closeBtn, this.progress, this.status),
      this.out);
    this.runBtn.addEventListener("click", () => void this.run());
    this.closeBtn.addEventListener("click", () => void this.close());
  }

  private setStatus(msg: string, error = false): void {
    this.status.textContent = msg;
    this.status.classList.toggle("error", error);
  }

  async run(): Promise<void> {
    this.runBtn.disabled = true;
    clear(this.out);
    try {
      const created = await this.client.createEdit({
        model: this.getModel(), method: this.method.value as EditMethod, prompt: this.prompt.value, subject: this.subject.value,
        target: this.target.value, ...(this.layer.value !== "" ? { layer: Number(this.layer.value) } : {}),
      });
      this.session = created.session_id;
      this.el.dataset.session = created.session_id;
      this.closeBtn.hidden = false;
      this.progress.hidden = false;
      const f = followJob(this.client, created.job_id, (name, ev) => {
        this.progress.value = ev.progress ?? 0;
        this.setStatus(`edit ${name} ${ev.message ?? ""}`.trim());
      });
      const job = await f.done;
      this.progress.hidden = true;
      if (job.status !== "succeeded") {
        this.setStatus(`edit ${job.status}`, true);
        return;
      }
      const s = await this.client.edit(created.session_id);
      this.renderEvaluation(s);
      await this.compare(created.session_id, s, this.topN.value !== "" ? Math.max(0, Number(this.topN.value)) : undefined);
      this.setStatus("edit applied (session open)");
      this.onSession(created.session_id);
    } catch (err) {
      this.setStatus(err instanceof ApiError ? `${err.type}: ${err.message}` : String(err), true);
    } finally {
      this.runBtn.disabled = false;
    }
  }

  /** Pre vs post with the server's default method and size (or ``topN``), rendered under the evaluation. */
  private async compare(id: string, s: EditSession, topN?: number): Promise<void> {
    this.setStatus("comparing pre vs post…");
    for (const el of Array.from(this.out.querySelectorAll("[data-compare]"))) el.remove();
    const cmp = await this.client.editCompare(id, undefined, topN);
    const box = h("div", { "data-compare": "1" });
    this.out.append(box);
    if (cmp.id) {
      box.append(h("p", { class: "muted", "data-testid": "edit-permalink" }, "stored comparison: ",
        h("a", { href: `/c/${encodeURIComponent(cmp.id)}`, class: "mono", text: `/c/${cmp.id.slice(0, 12)}…` })));
    }
    await this.renderCompare(box, cmp, s);
  }

  async close(): Promise<void> {
    if (!this.session) return;
    try {
      await this.client.closeEdit(this.session);
      this.setStatus("session closed");
    } catch (err) {
      this.setStatus(String(err), true);
    }
    this.session = null;
    delete this.el.dataset.session;
    this.closeBtn.hidden = true;
    this.onSession(null);
  }

  private renderEvaluation(s: EditSession): void {
    const ev = s.evaluation;
    const tbl = h("table", { class: "kv-table", "data-testid": "edit-eval" });
    const rows: [string, string][] = [["edit", `${s.method} @ layer ${s.layer}: ${JSON.stringify(s.old_target)} → ${JSON.stringify(s.target)}`]];
    if (ev) {
      rows.push(["efficacy", `${ev.efficacy.success ? "success" : "fail"} · new p ${fmt(ev.efficacy.new_prob)} (rank ${ev.efficacy.new_rank}) · old p ${fmt(ev.efficacy.old_prob)}`]);
      const gen = ev.generalisation;
      rows.push(["generalisation", gen.rate === null && gen.reason ? `none — ${gen.reason}` : pct(gen.rate)], ["locality", pct(ev.locality.rate)]);
      rows.push(["p(new) pre→post", `${fmt(ev.prob_shift.new.pre)} → ${fmt(ev.prob_shift.new.post)}`]);
      rows.push(["p(old) pre→post", `${fmt(ev.prob_shift.old.pre)} → ${fmt(ev.prob_shift.old.post)}`]);
    }
    const exp = s.expires_at as unknown;
    rows.push(["expires", typeof exp === "number" ? new Date(exp * 1000).toISOString() : String(exp ?? "–")]);
    for (const [k, v] of rows) tbl.append(h("tr", {}, h("th", { text: k }), h("td", { text: v })));
    this.out.append(tbl);
  }

  private async renderCompare(box: HTMLElement, cmp: EditCompare, s: EditSession): Promise<void> {
    const chart = h("div", { class: "edit-chart", "data-testid": "edit-lens-chart" });
    const replays = h("div", { class: "replay-pair", "data-testid": "replay-pair" });
    if (cmp.analysis) {
      const why = h("table", { class: "kv-table", "data-testid": "edit-why" });
      for (const [k, v] of whyLines(cmp.analysis)) why.append(h("tr", {}, h("th", { text: k }), h("td", { text: v })));
      box.append(h("h3", { text: "Why: the paper's findings on this edit" }), why);
    }
    box.append(h("h3", { text: "Lens: new vs old target, pre vs post" }), chart,
      h("h3", { text: "Circuit comparison" }), this.renderCircuits(cmp, s),
      h("h3", { text: "Head outputs (last position)" }), this.renderHeads(cmp, s),
      h("h3", { text: "Replay pre / post" }), replays);
    if (cmp.circuit?.pre && cmp.circuit.post) {
      const pre = new Replay(cmp.circuit.pre, cmp.lens.pre, "pre-edit");
      const post = new Replay(cmp.circuit.post, cmp.lens.post, "post-edit");
      pre.onStep = (st) => post.setStep(st, false);
      post.onStep = (st) => pre.setStep(st, false);
      replays.append(pre.el, post.el);
    }
    await this.renderChart(chart, cmp, s);
  }

  /** The shared counterfactual, each side's faithfulness, then the diff or the reason there is none. */
  private renderCircuits(cmp: EditCompare, s: EditSession): HTMLElement {
    const c = cmp.circuit;
    const el = h("div", { class: "edit-circuits", "data-testid": "edit-circuits" });
    if (!c) {  // a comparison made without circuits (the CLI's fast default)
      el.append(h("p", { class: "empty-state", "data-testid": "diff-empty", text: "No circuit diff: this comparison has no circuits" }));
      return el;
    }
    const cf = c.counterfactual;
    el.append(h("p", { class: "muted", "data-testid": "edit-counterfactual",
      text: `${cmp.method ?? "?"} on both sides, size ${cmp.top_n ?? "default"}; ` + (cf
        ? (cf.corrupt_prompt ? `counterfactual ${JSON.stringify(cf.corrupt_prompt)}, foil ${JSON.stringify(cf.foil)} (picked once on the unedited model: ${cf.note ?? ""})`
          : `${cf.ablation} ablation on both sides (${cf.note ?? "no counterfactual"})`) : "") }));
    const rule = c.size_rule;
    if (rule?.used != null && rule.grown_from) {
      const was = (["pre", "post"] as const).map((n) => {
        const g = rule.grown_from?.[n];
        return `${n} ${g ? `${g.edges} edges, faithfulness ${g.faithfulness == null ? "undefined" : g.faithfulness.toFixed(2)}` : "none"}`;
      }).join("; ");
      el.append(h("p", { class: "muted", "data-testid": "edit-size-rule",
        text: `Both sides grown to ${rule.used} edges (at the default size: ${was}). Rule: ${rule.rule}.` }));
    }
    for (const name of ["pre", "post"] as const) {
      const side = c.sides?.[name];
      const row = h("div", { class: `edit-side${side && !side.usable ? " error" : ""}`, "data-testid": `edit-side-${name}`,
        "data-usable": String(side?.usable ?? false) }, h("span", { text: sideLine(`${name} (${JSON.stringify(name === "pre" ? s.old_target : s.target)})`, side) }));
      if (side && !side.usable && side.grow_top_n) {
        const grow = h("button", { type: "button", class: "small", "data-testid": `edit-grow-${name}`, text: `grow to ${side.grow_top_n} edges` });
        const size = side.grow_top_n;
        grow.addEventListener("click", () => { this.topN.value = String(size); void this.compare(s.session_id, s, size).then(() => this.setStatus("edit applied (session open)")); });
        row.append(" ", grow);
      }
      el.append(row);
    }
    if (!c.diff || !c.pre || !c.post) {
      el.append(h("p", { class: "empty-state", "data-testid": "diff-empty", text: `No circuit diff: ${c.reason ?? "a side is missing"}` }));
      return el;
    }
    const legend = h("div", { class: "legend" },
      h("span", { class: "legend-item added", text: "— added" }), h("span", { class: "legend-item removed", text: "-- removed" }),
      h("span", { class: "legend-item reweighted", text: "— reweighted" }));
    const gbox = h("div", { class: "graph-box diff", "data-testid": "diff-graph" });
    el.append(legend, gbox);
    const g = new GraphCanvas(gbox);
    const d = drawDiff(c.pre, c.post, c.diff);
    g.setData(d.nodes, d.edges);
    for (const [k, v] of Object.entries(d.counts)) gbox.dataset[k] = String(v);
    legend.append(h("span", { class: "mono", text: `added ${c.diff.n_added ?? d.counts.added} · removed ${c.diff.n_removed ?? d.counts.removed} · reweighted ${c.diff.n_reweighted ?? d.counts.reweighted}` }));
    if (c.diff.rule) el.append(h("p", { class: "muted", "data-testid": "diff-rule", text: c.diff.rule }));
    return el;
  }

  /** Every head, largest output change first; unchanged heads behind a toggle. */
  private renderHeads(cmp: EditCompare, s: EditSession): HTMLElement {
    const hd = cmp.heads;
    const el = h("div", { class: "head-diff", "data-testid": "head-diff", "data-changed": hd.n_changed, "data-unchanged": hd.n_unchanged });
    const toggle = h("input", { type: "checkbox", "data-testid": "head-diff-show-unchanged" });
    const tbody = h("tbody");
    const tokens = (xs: { token: string }[]) => xs.slice(0, 5).map((t) => showToken(t.token)).join(" ");
    const draw = () => {
      clear(tbody);
      for (const r of shownHeadRows(hd.rows, toggle.checked)) {
        const dn = r.dla.new, dold = r.dla.old;
        tbody.append(h("tr", { "data-node": r.node, "data-changed": String(r.changed), class: r.changed ? "" : "muted" },
          h("td", { class: "mono" }, h("strong", { text: r.node })),
          h("td", { text: `${fmt(r.change)} (${pct(r.rel_change)})` }),
          h("td", { text: dn ? `${fmt(dn.pre)} → ${fmt(dn.post)}` : "–" }),
          h("td", { text: dold ? `${fmt(dold.pre)} → ${fmt(dold.post)}` : "–" }),
          h("td", { class: "mono", "data-testid": "head-top-pre", text: tokens(r.top.pre) }),
          h("td", { class: "mono", "data-testid": "head-top-post", text: tokens(r.top.post) }),
          h("td", {}, ...headTags(r, cmp.edit_method ?? s.method).map((t) => h("span", { class: `tag${t.startsWith("mover") ? " saved" : ""}`, text: t })))));
      }
    };
    toggle.addEventListener("change", draw);
    const nw = JSON.stringify(s.target), old = JSON.stringify(s.old_target);
    el.append(
      h("p", { class: "muted", "data-testid": "head-diff-summary",
        text: `${hd.n_changed} heads changed, ${hd.n_unchanged} unchanged (${hd.rule.unchanged}). ${hd.movers.length ? `Mover pattern: ${hd.movers.join(", ")}.` : "No head shows the mover pattern."} (${hd.rule.mover})` }),
      h("label", {}, toggle, ` show ${hd.n_unchanged} unchanged heads`),
      h("table", { class: "kv-table head-diff-table" },
        h("thead", {}, h("tr", {}, ...["head", "|Δ output|", `DLA ${nw}`, `DLA ${old}`, "top tokens pre", "top tokens post", "marks"].map((t) => h("th", { text: t })))),
        tbody));
    draw();
    return el;
  }

  private async renderChart(el: HTMLElement, cmp: EditCompare, s: EditSession): Promise<void> {
    const c = curvesOf(cmp);
    if (!c) return;
    const x = cmp.lens.pre.layers.map((l) => l.label);
    const nw = escapePlotly(JSON.stringify(s.target)), old = escapePlotly(JSON.stringify(s.old_target));
    const tr = (y: number[], name: string, color: string, dash: string, axis: string) =>
      ({ x, y, name, mode: "lines", line: { color, dash }, yaxis: axis, xaxis: axis === "y2" ? "x2" : "x" });
    const traces = [
      tr(c.new.pre.prob, `p ${nw} pre`, "#1a9850", "dot", "y"), tr(c.new.post.prob, `p ${nw} post`, "#1a9850", "solid", "y"),
      tr(c.old.pre.prob, `p ${old} pre`, "#d73027", "dot", "y"), tr(c.old.post.prob, `p ${old} post`, "#d73027", "solid", "y"),
      tr(c.new.pre.rank, `rank ${nw} pre`, "#1a9850", "dot", "y2"), tr(c.new.post.rank, `rank ${nw} post`, "#1a9850", "solid", "y2"),
      tr(c.old.pre.rank, `rank ${old} pre`, "#d73027", "dot", "y2"), tr(c.old.post.rank, `rank ${old} post`, "#d73027", "solid", "y2"),
    ].filter((t) => t.y.length);
    el.dataset.traces = String(traces.length);
    const P = await plotly();
    await P.react(el, traces as never, {
      ...BASE_LAYOUT, height: 380, grid: { rows: 2, columns: 1, pattern: "independent" },
      yaxis: { title: { text: "prob" }, range: [0, 1] },
      yaxis2: { title: { text: "rank (log)" }, type: "log", autorange: "reversed" },
      xaxis: { showticklabels: false }, xaxis2: { tickangle: -45 },
    } as never, PLOT_CONFIG as never);
  }
}

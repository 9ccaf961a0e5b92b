/** Node / edge detail panel: attention pattern of a head, top tokens of a head or MLP, an edge's score. */
import { ApiError, type Client } from "../api/client";
import type { CircuitEdge, CircuitResult, HeadDetail, HeadInfo, NodeDetail, ScoredToken } from "../api/types";
import { edgeKey } from "../graph/prune";
import type { Selected } from "../graph/canvas";
import { clear, fmt, h, showToken } from "../util/dom";
import { escapePlotly } from "../util/escape";
import { BASE_LAYOUT, PLOT_CONFIG, plotly } from "../util/plot";

export interface NodeContext {
  model?: string;
  prompt: string;
  target?: string | null;
  subject?: string | null;
  session?: string | null;
}

export function tokenList(title: string, items: ScoredToken[] | undefined, testid: string): HTMLElement {
  const ol = h("ol", { class: "toklist", "data-testid": testid });
  for (const t of items ?? []) ol.append(h("li", {}, h("span", { class: "tok", text: showToken(t.token) }), h("span", { class: "num", text: fmt(t.score, 2) })));
  return h("div", { class: "toklist-box" }, h("h4", { text: title }), ol);
}

export class NodePanel {
  readonly el: HTMLElement;
  private body: HTMLElement;
  private seq = 0;
  detail: NodeDetail | null = null;

  constructor(private client: Client) {
    this.body = h("div", { class: "node-body" }, h("p", { class: "muted", text: "Click a node or an edge." }));
    this.el = h("section", { class: "panel node-panel", "data-testid": "node-panel", "aria-label": "selection detail" },
      h("h3", { text: "Selection" }), this.body);
  }

  clear(): void {
    this.seq++;
    this.detail = null;
    clear(this.body);
    this.body.append(h("p", { class: "muted", text: "Click a node or an edge." }));
    delete this.el.dataset.node;
    delete this.el.dataset.kind;
  }

  async show(sel: Selected, circuit: CircuitResult, ctx: NodeContext): Promise<void> {
    if (!sel) return this.clear();
    const seq = ++this.seq;
    clear(this.body);
    if (sel.type === "edge") {
      const e = circuit.edges.find((x) => edgeKey(x) === sel.key);
      this.renderEdge(sel.key, e);
      return;
    }
    const node = sel.id;
    this.el.dataset.node = node;
    this.body.append(h("div", { class: "node-title", text: node }), h("p", { class: "muted", text: "loading…" }));
    let d: NodeDetail;
    try {
      d = circuit.id
        ? await this.client.circuitNode(circuit.id, node).catch((err) => {
          if (err instanceof ApiError && err.status === 404) return this.client.nodeDetail({ ...ctxFor(circuit, ctx), node });
          throw err;
        })
        : await this.client.nodeDetail({ ...ctxFor(circuit, ctx), node });
    } catch (err) {
      if (seq !== this.seq) return;
      clear(this.body);
      this.body.append(h("div", { class: "node-title", text: node }), h("p", { class: "error", text: `detail unavailable: ${(err as Error).message}` }));
      return;
    }
    if (seq !== this.seq) return;
    this.detail = d;
    this.el.dataset.kind = d.kind;
    clear(this.body);
    this.body.append(h("div", { class: "node-title", text: `${node} · ${d.kind}` }));
    const nodeInfo = circuit.nodes.find((n) => n.id === node);
    if (nodeInfo) this.body.append(h("div", { class: "kv" }, `score ${fmt(nodeInfo.score)}`, nodeInfo.role ? ` · role ${nodeInfo.role}` : ""));
    if (nodeInfo?.top_token) {
      this.body.append(h("div", { class: "kv", "data-testid": "node-top-token" }, "top lens token ",
        h("span", { class: "tok", text: showToken(nodeInfo.top_token.token) }), ` (logit ${fmt(nodeInfo.top_token.logit, 2)})`));
    }
    if (d.kind === "head") await this.renderHead(d, circuit.heads?.[node]);
    else if (d.kind === "mlp") {
      this.body.append(h("div", { class: "toklists" },
        tokenList("promoted", d.promoted, "promoted"), tokenList("suppressed", d.suppressed, "suppressed")));
    }
  }

  private renderEdge(key: string, e: CircuitEdge | undefined): void {
    this.el.dataset.kind = "edge";
    this.el.dataset.node = key;
    this.body.append(h("div", { class: "node-title", text: key }));
    if (!e) return;
    const tbl = h("table", { class: "kv-table", "data-testid": "edge-detail" });
    const rows: [string, string][] = [
      ["source", e.source], ["target", e.target], ["slot", String(e.slot)], ["receiver", e.receiver],
      ["score", fmt(e.score, 4)], ["in circuit", e.in_circuit ? "yes" : "no"]];
    for (const [k, v] of rows) tbl.append(h("tr", {}, h("th", { text: k }), h("td", { text: v })));
    this.body.append(tbl);
  }

  /** A head's panel; ``inCircuit``: its role as judged among the circuit's heads (preferred to the detail's). */
  private async renderHead(d: HeadDetail, inCircuit?: HeadInfo): Promise<void> {
    const scores = h("table", { class: "kv-table", "data-testid": "role-scores" });
    const role = inCircuit ? inCircuit.role : d.role;
    scores.append(h("tr", {}, h("th", { text: "role" }), h("td", { text: role ?? "–" })));
    const significant = inCircuit?.significant ?? d.significant;
    const sig = Object.values((inCircuit?.significance ?? d.significance) ?? {}).filter((z): z is number => typeof z === "number");
    if (significant !== undefined) {
      scores.append(h("tr", {}, h("th", { text: "significant" }),
        h("td", { text: `${significant ? "yes" : "no"}${sig.length ? ` (${fmt(Math.max(...sig), 1)} MADs)` : ""}` })));
    }
    for (const [k, v] of Object.entries(d.scores ?? {})) {
      const text = k.endsWith("_rank") ? (v === null || v === undefined ? "–" : String(v)) : fmt(v);
      scores.append(h("tr", {}, h("th", { text: k.replace(/_/g, " ") }), h("td", { text })));
    }
    const plot = h("div", { class: "pattern-plot", "data-testid": "attention-pattern" });
    this.body.append(plot, h("div", { class: "legend-line muted", text: "S = subject token, R = relation token" }), scores,
      h("div", { class: "toklists" }, tokenList("promoted", d.promoted, "promoted"), tokenList("suppressed", d.suppressed, "suppressed")));
    const subj = new Set(d.subject_positions ?? []), rel = new Set(d.relation_positions ?? []);
    const labels = d.tokens.map((t, i) => escapePlotly(`${subj.has(i) ? "S " : rel.has(i) ? "R " : ""}${showToken(t)}`));
    const idx = d.tokens.map((_, i) => i);
    const P = await plotly();
    if (this.detail !== d) return;
    const n = d.tokens.length;
    await P.react(plot, [{
      type: "heatmap", z: d.pattern, x: idx, y: idx, colorscale: "Blues", zmin: 0, zmax: 1, showscale: false,
      customdata: d.pattern.map((row, q) => row.map((_, k) => [labels[q], labels[k]])),
      hovertemplate: "query %{customdata[0]}<br>key %{customdata[1]}<br>attn %{z:.3f}<extra></extra>",
    }] as never, {
      ...BASE_LAYOUT, showlegend: false, height: Math.min(420, 120 + 18 * n),
      margin: { l: 90, r: 8, t: 24, b: 90 },
      title: { text: escapePlotly(`attention ${d.node}`), font: { size: 12 } },
      xaxis: { tickvals: idx, ticktext: labels, tickangle: -60, title: { text: "key" } },
      yaxis: { tickvals: idx, ticktext: labels, autorange: "reversed", title: { text: "query" } },
      shapes: [...subj].map((k) => ({ type: "rect", xref: "x", yref: "paper", x0: k - 0.5, x1: k + 0.5, y0: 0, y1: 1, line: { color: "#d95f02", width: 1 } })),
    } as never, PLOT_CONFIG as never);
    plot.dataset.rows = String(d.pattern.length);
  }
}

function ctxFor(c: CircuitResult, ctx: NodeContext): Omit<NodeContext, never> {
  // A stored circuit carries its own prompt/target/subject; the live prompt bar may have moved on.
  return {
    model: c.model || ctx.model, prompt: c.prompt || ctx.prompt, target: c.target ?? ctx.target,
    subject: c.subject?.text ?? ctx.subject ?? null, session: ctx.session ?? null,
  };
}

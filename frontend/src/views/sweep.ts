/** Circuit size vs faithfulness and Hit@10 (a "sweep" job's rows), as a table and a plotly chart. */
import type { SweepResult } from "../api/types";
import { clear, fmt, h, pct } from "../util/dom";
import { BASE_LAYOUT, PLOT_CONFIG, plotly } from "../util/plot";

export class SweepPanel {
  readonly el = h("div", { class: "sweep", "data-testid": "sweep", hidden: true });

  async show(result: SweepResult): Promise<void> {
    clear(this.el);
    this.el.hidden = false;
    const tbl = h("table", { class: "kv-table mono", "data-testid": "sweep-table" },
      h("tr", {}, ...["top-n", "edges", "fraction", "faithfulness", "Hit@10", "rank"].map((t) => h("th", { text: t }))));
    for (const r of result.rows) {
      tbl.append(h("tr", {}, ...[String(r.top_n), String(r.edges), pct(r.edge_fraction), fmt(r.faithfulness),
        String(r.hit_at_10), String(r.target_rank)].map((t) => h("td", { text: t }))));
    }
    const plot = h("div", { class: "sweep-plot" });
    this.el.append(h("h3", { text: `Size sweep (${result.method} · ${result.ablation})` }), plot, tbl);
    const x = result.rows.map((r) => Math.max(1, r.edges));
    const P = await plotly();
    await P.react(plot, [
      { x, y: result.rows.map((r) => r.faithfulness), name: "faithfulness", mode: "lines+markers", type: "scatter" },
      { x, y: result.rows.map((r) => r.hit_at_10), name: "Hit@10", mode: "lines+markers", type: "scatter", line: { dash: "dot" } },
    ] as never, { ...BASE_LAYOUT, height: 220, xaxis: { type: "log", title: { text: "circuit edges" } },
      yaxis: { title: { text: "score" } } } as never, PLOT_CONFIG as never);
  }
}

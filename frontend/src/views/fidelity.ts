/**
 * Fidelity panel of a circuit: the measured faithfulness curve (each size run for real, with a
 * random circuit of the same size), its CPR / CMD, why faithfulness is undefined when it is, and
 * the automatic counterfactuals that were used (with the candidates that were not).
 */
import type { CircuitResult, CurvePoint } from "../api/types";
import { clear, fmt, h, pct } from "../util/dom";

/** The measured curve point nearest (in log edges) to a circuit of ``edges`` edges, or null. */
export function nearestPoint(points: CurvePoint[], edges: number): CurvePoint | null {
  let best: CurvePoint | null = null;
  let gap = Infinity;
  for (const p of points) {
    if (p.edges <= 0) continue;
    const d = Math.abs(Math.log(p.edges) - Math.log(Math.max(1, edges)));
    if (d < gap) { gap = d; best = p; }
  }
  return best;
}

export class FidelityPanel {
  readonly el = h("div", { class: "fidelity", "data-testid": "fidelity" });

  show(c: CircuitResult): void {
    clear(this.el);
    const curve = c.curve;
    const why = c.metrics.faithfulness_undefined ?? curve?.faithfulness_undefined ?? null;
    if (why) this.el.append(h("p", { class: "warn", "data-testid": "faithfulness-undefined", text: `faithfulness undefined: ${why}` }));
    if (curve && curve.points.length) {
      const tbl = h("table", { class: "kv-table mono", "data-testid": "curve-table" },
        h("tr", {}, ...["edges", "fraction", "F", "Hit@10", "random F", "random Hit@10"].map((t) => h("th", { text: t }))));
      for (const p of curve.points) {
        const row = h("tr", { class: p.requested ? "requested" : "" },
          ...[String(p.edges), pct(p.edge_fraction), fmt(p.faithfulness, 2), fmt(p.hit_at_10, 2),
            fmt(p.random.faithfulness_mean, 2), fmt(p.random.hit_at_10, 2)].map((t) => h("td", { text: t })));
        tbl.append(row);
      }
      const areas = curve.cpr_normalised === null ? "CPR / CMD undefined"
        : `CPR ${fmt(curve.cpr_normalised, 2)} · CMD ${fmt(curve.cmd_normalised, 2)} (per log edge range)`;
      this.el.append(h("h3", { text: "Faithfulness curve (measured)" }), tbl, h("p", { class: "muted", text: areas }));
    }
    const cf = c.counterfactual;
    if (cf) {
      const list = h("ul", { class: "counterfactuals", "data-testid": "counterfactuals" });
      for (const cand of cf.chosen) list.append(h("li", { text: `✓ ${cand.prompt} → foil ${JSON.stringify(cand.foil)} (${cand.kind}): ${cand.why}` }));
      for (const cand of cf.candidates.filter((x) => !cf.chosen.some((y) => y.prompt === x.prompt)).slice(0, 5)) {
        list.append(h("li", { class: "muted", text: `· ${cand.prompt} → ${JSON.stringify(cand.foil)} (${cand.kind})` }));
      }
      this.el.append(h("h3", { text: `Counterfactuals (${cf.source})` }), h("p", { class: "muted", text: cf.reason }), list);
    } else if (c.ablation === "patch" && c.corrupt_prompt) {
      this.el.append(h("p", { class: "muted", text: `corrupted input (given): ${c.corrupt_prompt}` }));
    }
  }
}

/** Plotly loaded lazily (its own chunk) so the first paint of the graph does not wait for 4 MB of charting. */
type PlotlyT = typeof import("plotly.js-dist-min");
let loading: Promise<PlotlyT> | null = null;

export function plotly(): Promise<PlotlyT> {
  loading ??= import("plotly.js-dist-min").then((m) => ((m as unknown as { default?: PlotlyT }).default ?? m) as PlotlyT);
  return loading;
}

export const PLOT_CONFIG = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"] } as const;

export const BASE_LAYOUT = {
  margin: { l: 48, r: 12, t: 28, b: 36 },
  font: { family: "ui-monospace, Menlo, Consolas, monospace", size: 11, color: "#111827" },
  paper_bgcolor: "#ffffff",
  plot_bgcolor: "#ffffff",
  showlegend: true,
  legend: { orientation: "h" as const, y: -0.2 },
};

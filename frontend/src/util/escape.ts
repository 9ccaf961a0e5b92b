/**
 * Plotly renders a pseudo-HTML subset in labels, titles and hover text (<b>, <br>, <a href>...). Every string
 * that came from a user or a model goes through escapePlotly before it reaches a plotly trace or layout.
 * Plotly decodes &amp; &lt; &gt; back for display, so the text shows literally. Quotes need no escaping: with
 * < escaped no tag (and so no attribute) can open.
 */
const MAP: Record<string, string> = { "&": "&amp;", "<": "&lt;", ">": "&gt;" };

export function escapePlotly(s: string): string {
  return s.replace(/[&<>]/g, (c) => MAP[c]);
}

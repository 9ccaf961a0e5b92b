/** Share, export and provenance for a stored circuit; plus the searchable list of recent/saved results. */
import type { Client } from "../api/client";
import type { CircuitResult, ExportFormat, ResultSummary } from "../api/types";
import type { GraphCanvas } from "../graph/canvas";
import { encodeState, stateToRecord, type ViewState } from "../state/url";
import { clear, debounce, h } from "../util/dom";

/** Query strings longer than this go through POST /api/views and become /v/{short}. */
export const LONG_QUERY = 160;

export async function shareLink(client: Client, id: string, state: ViewState, origin = window.location.origin): Promise<string> {
  const qs = encodeState(state);
  const long = `${origin}/c/${id}${qs ? `?${qs}` : ""}`;
  if (qs.length <= LONG_QUERY) return long;
  try {
    const v = await client.createView(id, stateToRecord(state));
    return origin + v.url;
  } catch {
    return long;
  }
}

interface Host {
  graph: GraphCanvas;
  viewState(): ViewState;
}

export class SharePanel {
  readonly el: HTMLElement;
  private body: HTMLElement;

  constructor(private client: Client, private host: Host) {
    this.body = h("div");
    this.el = h("section", { class: "share", "data-testid": "share-panel" }, h("h3", { text: "Share & export" }), this.body);
  }

  setCircuit(c: CircuitResult): void {
    clear(this.body);
    const out = h("input", { type: "text", readonly: true, class: "wide mono", "data-testid": "share-link", "aria-label": "link" });
    const copy = h("button", { type: "button", "data-testid": "copy-link", text: "Copy link", disabled: !c.id });
    copy.addEventListener("click", async () => {
      if (!c.id) return;
      const url = await shareLink(this.client, c.id, this.host.viewState());
      out.value = url;
      try {
        await navigator.clipboard.writeText(url);
        copy.textContent = "Copied";
      } catch {
        out.select();
        copy.textContent = "Copy link";
      }
    });
    const save = h("button", { type: "button", "data-testid": "save-result", text: "Save", disabled: !c.id });
    save.addEventListener("click", async () => {
      try {
        await this.client.saveResult(c.id!);
        save.textContent = "Saved";
      } catch (err) {
        save.textContent = `Save failed: ${(err as Error).message}`;
      }
    });
    const exports = h("div", { class: "exports" });
    for (const f of ["json", "graphml", "dot"] as ExportFormat[]) {
      if (c.id) exports.append(h("a", { href: this.client.exportUrl(c.id, f), download: `circuit-${c.id.slice(0, 12)}.${f}`, class: "button", text: f.toUpperCase() }));
    }
    const png = h("button", { type: "button", text: "PNG" });
    png.addEventListener("click", async () => {
      const blob = await this.host.graph.toBlob();
      if (blob) download(blob, `circuit-${(c.id ?? "local").slice(0, 12)}.png`);
    });
    const svg = h("button", { type: "button", text: "SVG" });
    svg.addEventListener("click", () => download(new Blob([this.host.graph.toSVG()], { type: "image/svg+xml" }), `circuit-${(c.id ?? "local").slice(0, 12)}.svg`));
    exports.append(png, svg);
    this.body.append(h("div", { class: "row" }, copy, save), out, exports);
    if (!c.id) this.body.append(h("p", { class: "muted", text: "This circuit has no id (no store): links and server exports are unavailable." }));
    this.body.append(provenanceTable(c));
  }
}

export function provenanceTable(c: CircuitResult): HTMLElement {
  const p = c.provenance;
  const rows: [string, string][] = [
    ["model", p?.model ?? c.model], ["revision", p?.revision ?? c.revision ?? "–"], ["method", p?.method ?? c.method],
    ["params", JSON.stringify(p?.params ?? c.params ?? {})], ["code version", p?.code_version ?? "–"],
    ["dtype / device", `${p?.dtype ?? "–"} / ${p?.device_class ?? "–"}`], ["created", p?.created_at ?? "–"],
    ["prompt", c.prompt], ["target", c.target], ["id", c.id ?? "–"],
  ];
  if (p?.libraries) rows.push(["libraries", Object.entries(p.libraries).map(([k, v]) => `${k} ${v}`).join(", ")]);
  const tbl = h("table", { class: "kv-table provenance", "data-testid": "provenance" });
  for (const [k, v] of rows) tbl.append(h("tr", {}, h("th", { text: k }), h("td", { class: "mono", text: v })));
  return h("details", { open: true }, h("summary", { text: "Provenance" }), tbl);
}

function download(blob: Blob, name: string): void {
  const a = h("a", { href: URL.createObjectURL(blob), download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 5000);
}

/** Recent and saved results with search by model / prompt / method. */
export class ResultsList {
  readonly el: HTMLElement;
  private list = h("ol", { class: "results", "data-testid": "results-list" });
  private q = h("input", { type: "search", placeholder: "search prompt…", "aria-label": "search results" });
  private model = h("input", { type: "text", placeholder: "model", "aria-label": "filter model", size: 14 });
  private method = h("input", { type: "text", placeholder: "method", "aria-label": "filter method", size: 8 });
  private saved = h("input", { type: "checkbox", "aria-label": "saved only" });
  private note = h("p", { class: "muted" });

  constructor(private client: Client) {
    const reload = debounce(() => void this.load(), 250);
    for (const i of [this.q, this.model, this.method]) i.addEventListener("input", reload);
    this.saved.addEventListener("change", reload);
    this.el = h("section", { class: "panel results-panel", "aria-label": "results" },
      h("h2", { text: "Recent & saved results" }),
      h("div", { class: "controls" }, this.q, this.model, this.method, h("label", {}, this.saved, " saved only")),
      this.note, this.list);
  }

  async load(): Promise<void> {
    try {
      const r = await this.client.results({
        q: this.q.value.trim() || undefined, model: this.model.value.trim() || undefined,
        method: this.method.value.trim() || undefined, saved: this.saved.checked || undefined, limit: 50,
      });
      this.render(r.items);
      this.note.textContent = `${r.total} result${r.total === 1 ? "" : "s"}`;
    } catch (err) {
      clear(this.list);
      this.note.textContent = `results unavailable: ${(err as Error).message}`;
    }
  }

  private render(items: ResultSummary[]): void {
    clear(this.list);
    for (const it of items) {
      this.list.append(h("li", {},
        h("a", { href: `/c/${encodeURIComponent(it.id)}`, class: "mono", text: it.id.slice(0, 10) }),
        h("span", { class: "tag", text: it.kind }), h("span", { class: "tag", text: it.method ?? "" }),
        h("span", { class: "tag", text: it.model }), it.saved ? h("span", { class: "tag saved", text: "saved" }) : null,
        h("span", { class: "prompt mono", text: it.title || it.prompt }),
        h("span", { class: "muted", text: it.created_at })));
    }
  }
}

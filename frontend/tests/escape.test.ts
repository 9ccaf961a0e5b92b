// @vitest-environment jsdom
import { describe, expect, it } from "vitest";
import { escapePlotly } from "../src/util/escape";
import { h, showToken } from "../src/util/dom";
import { tokenText, xml } from "../src/graph/canvas";

describe("escaping", () => {
  it("escapes plotly pseudo-HTML", () => {
    expect(escapePlotly("<b>x</b> & <br>")).toBe("&lt;b&gt;x&lt;/b&gt; &amp; &lt;br&gt;");
    expect(escapePlotly("&lt;")).toBe("&amp;lt;");
    expect(escapePlotly(" Paris")).toBe(" Paris");
    expect(escapePlotly("<a href=\"javascript:alert(1)\">x</a>")).not.toMatch(/<|>/);
  });
  it("escapes SVG export text", () => {
    expect(xml(`a<b>"c"&'d'`)).toBe("a&lt;b&gt;&quot;c&quot;&amp;&apos;d&apos;");
  });
  it("h() puts data in as text, never markup", () => {
    const evil = "<img src=x onerror=window.__xss=1>";
    const el = h("div", { text: evil }, evil);
    expect(el.querySelector("img")).toBeNull();
    expect(el.textContent).toBe(evil + evil);
    const attr = h("div", { title: evil });
    expect(attr.getAttribute("title")).toBe(evil);
  });
  it("shows whitespace in tokens", () => {
    expect(showToken(" Paris\n")).toBe("\u00b7Paris\u21b5");
  });
  it("node tokens: visible whitespace, long ones cut with an ellipsis", () => {
    expect(tokenText(" French")).toBe("\u00b7French");
    expect(tokenText("<b>x</b>")).toBe("<b>x</b>"); // drawn as canvas text; the SVG export escapes it with xml()
    const long = tokenText(" abcdefghijklmnopqrstuvwxyz");
    expect(long).toHaveLength(14);
    expect(long.endsWith("\u2026")).toBe(true);
  });
});

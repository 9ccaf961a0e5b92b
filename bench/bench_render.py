"""Render benchmark: a 2,000-edge synthetic circuit in headless Chromium.

Measures time to first render (navigation start -> first frame of the graph drawn, bundle load included) and
the per-frame cost while panning. Targets: first render < 1.0 s on CPU, frame time < 33 ms.
Serves the test build of the frontend (build/static-test, `make frontend-test`) with the app's CSP from a tiny static server, so no model
is loaded. Usage: python bench/bench_render.py [--edges 2000] [--frames 120] [--runs 3]
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STATIC = ROOT / "build" / "static-test"  # the test build (`make frontend-test`) has the ?bench page
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"]


def _csp() -> str:
    try:
        from kcircuits.api.app import CSP
        return CSP
    except ImportError:
        return "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; script-src 'self'"


class _Handler(SimpleHTTPRequestHandler):
    csp = ""

    def end_headers(self):
        self.send_header("Content-Security-Policy", self.csp)
        super().end_headers()

    def send_head(self):
        if not self.path.startswith("/assets/"):
            self.path = "/index.html"
        return super().send_head()

    def log_message(self, *args):  # quiet
        pass


def serve_static() -> tuple[ThreadingHTTPServer, str]:
    _Handler.csp = _csp()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(STATIC)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def run(edges: int, frames: int, runs: int) -> dict:
    from playwright.sync_api import sync_playwright

    httpd, base = serve_static()
    out: dict = {"edges": edges, "runs": []}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            for _ in range(runs):
                ctx = browser.new_context(viewport={"width": 1600, "height": 1000})
                page = ctx.new_page()
                page.goto(f"{base}/?bench={edges}")
                page.wait_for_function("() => window.__kc && window.__kc.bench", timeout=60_000)
                bench = page.evaluate("() => window.__kc.bench")
                pan = page.evaluate(f"() => window.__kc.panBench({frames})")
                violations = page.evaluate("() => window.__kc.cspViolations")
                out["runs"].append({"first_render_ms": bench["firstRenderMs"], "first_draw_ms": bench["drawMs"],
                                    "drawn_edges": bench["edges"], "pan_draw_ms": pan["draw"], "pan_frame_ms": pan["frame"],
                                    "csp_violations": violations})
                ctx.close()
            browser.close()
    finally:
        httpd.shutdown()
    runs_ = out["runs"]
    draws = [d for r in runs_ for d in r["pan_draw_ms"]]
    frames_ = [f for r in runs_ for f in r["pan_frame_ms"]]
    out["summary"] = {
        "first_render_ms_median": statistics.median(r["first_render_ms"] for r in runs_),
        "first_draw_ms_median": statistics.median(r["first_draw_ms"] for r in runs_),
        "pan_draw_ms_median": statistics.median(draws), "pan_draw_ms_p95": pct(draws, 0.95),
        "pan_frame_ms_median": statistics.median(frames_), "pan_frame_ms_p95": pct(frames_, 0.95),
    }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--edges", type=int, default=2000)
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print the raw measurements as JSON")
    a = ap.parse_args()
    if not Path(CHROMIUM).exists():
        print(f"skip: {CHROMIUM} missing")
        return 0
    if not (STATIC / "index.html").exists():
        print("skip: frontend not built (make frontend)")
        return 0
    res = run(a.edges, a.frames, a.runs)
    s = res["summary"]
    if a.json:
        print(json.dumps(res))
    print(f"render bench: {a.edges}-edge synthetic circuit, headless Chromium (CPU), {a.runs} runs x {a.frames} pan frames")
    print(f"  time to first render (nav start -> graph drawn): {s['first_render_ms_median']:.0f} ms median  (target < 1000 ms)")
    print(f"  first draw call:                                  {s['first_draw_ms_median']:.1f} ms")
    print(f"  pan: draw per frame {s['pan_draw_ms_median']:.1f} ms median, {s['pan_draw_ms_p95']:.1f} ms p95  (target < 33 ms)")
    print(f"  pan: frame interval {s['pan_frame_ms_median']:.1f} ms median, {s['pan_frame_ms_p95']:.1f} ms p95")
    ok = s["first_render_ms_median"] < 1000 and s["pan_frame_ms_p95"] < 33
    print(f"  targets met: {ok}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

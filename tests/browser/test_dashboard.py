"""The dashboard in headless Chromium against the real server: lens, circuit, node panel, jobs, XSS, edits, share."""

from __future__ import annotations

import re

from .conftest import http, require_endpoint, screenshot

PROMPT = "The Eiffel Tower is located in the city of"
SLOW = 180_000  # ms; smollm2 on a shared CPU


def wait_lens(page, prompt: str) -> dict:
    page.wait_for_function("p => window.__kc.lens && window.__kc.lens.prompt === p", arg=prompt, timeout=SLOW)
    return page.evaluate("() => window.__kc.lens")


def type_prompt(page, prompt: str, model: str | None = None) -> dict:
    page.goto("/")
    page.wait_for_selector("[data-testid=model] option", state="attached")
    if model:
        page.select_option("[data-testid=model]", model)
    page.fill("[data-testid=prompt]", "")
    page.type("[data-testid=prompt]", prompt, delay=5)
    return wait_lens(page, prompt)


def compute(page, method: str = "eap", top_n: int | None = None) -> dict:
    page.select_option("[data-testid=method]", method)
    if top_n is not None:
        page.fill("[data-testid=top-n-input]", str(top_n))
    page.evaluate("() => { window.__kc.circuit = null; }")
    page.click("[data-testid=compute]")
    page.wait_for_function("() => window.__kc.circuit || document.querySelector('[data-testid=circuit-status].error')",
                           timeout=SLOW)
    status = page.text_content("[data-testid=circuit-status]")
    circuit = page.evaluate("() => window.__kc.circuit")
    assert circuit, f"no circuit: {status}"
    return circuit


def drawn(page) -> dict:
    return page.evaluate("() => window.__kc.drawn()")


def painted_pixels(page, selector: str = "[data-testid=graph] canvas") -> int:
    """Non-white pixels on a canvas (catches a graph that is 'drawn' in the model but blank on screen)."""
    return page.eval_on_selector(selector, """c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] < 250 || d[i + 1] < 250 || d[i + 2] < 250) n++; return n; }""")


def click_node(page, node_id: str, attempts: int = 3) -> None:
    """Click a drawn node where the canvas shows it (Playwright scrolls the canvas into view first).
    The layout may still be settling when the first click lands (another node, or none, is hit):
    the node's position is read again and the click repeated, a few times at most."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt in range(attempts):
        xy = page.evaluate("id => window.__kc.graph.screenOf(id)", node_id)
        assert xy, f"{node_id} not drawn"
        page.locator("[data-testid=graph] canvas").first.click(position={"x": xy["x"], "y": xy["y"]})
        try:
            page.wait_for_function("id => document.querySelector('[data-testid=node-panel]').dataset.node === id",
                                   arg=node_id, timeout=SLOW if attempt == attempts - 1 else 20_000)
            return  # the panel waits for the worker
        except PlaywrightTimeout:
            if attempt == attempts - 1:
                raise


def circuits_available(server: str) -> None:
    status, data = require_endpoint(server, "POST", "/api/circuits", {
        "model": "tiny-gpt2", "prompt": "a b c", "target": " d", "method": "eap", "ablation": "zero", "top_n": 5})
    assert status == 200, data


def test_page_loads_under_csp(page, server):
    resp = page.goto("/")
    assert "default-src 'self'" in resp.headers["content-security-policy"]
    page.wait_for_selector("[data-testid=model] option", state="attached")
    models = page.eval_on_selector_all("[data-testid=model] option", "os => os.map(o => o.value)")
    assert "smollm2-135m" in models and "tiny-gpt2" in models
    assert page.evaluate("() => window.__kc.cspViolations") == []


def test_live_lens_shows_paris(page, server):
    require_endpoint(server, "POST", "/api/lens", {"model": "tiny-gpt2", "prompt": "a b"})
    lens = type_prompt(page, PROMPT)
    # the prediction becomes the default target; wait for the re-targeted lens with curves
    page.wait_for_function("() => window.__kc.lens.target && window.__kc.lens.target.token === ' Paris'", timeout=SLOW)
    lens = page.evaluate("() => window.__kc.lens")
    final = lens["layers"][-1]
    assert final["positions"][-1]["top"][0]["token"] == " Paris"
    last = len(lens["tokens"]) - 1
    cell = page.locator(f".lens-cell[data-layer='{final['index']}'][data-pos='{last}']")
    assert cell.get_attribute("data-token") == " Paris"
    assert "Paris" in cell.text_content()
    # hover shows the top-k
    cell.hover()
    tip = page.locator(".tooltip")
    tip.wait_for(state="visible")
    assert "Paris" in tip.text_content()
    # subject chips from the auto-detected span; plotly curves drawn
    subject = page.eval_on_selector_all(".chip.subject", "cs => cs.map(c => c.textContent).join('')")
    assert "Tower" in subject
    page.wait_for_selector("[data-testid=lens-curves] .main-svg")
    screenshot(page, "lens", page.locator(".lens-panel"))


def test_circuit_matches_api_and_slider_prunes(page, server):
    circuits_available(server)
    type_prompt(page, PROMPT)
    page.wait_for_function("() => window.__kc.lens.target && window.__kc.lens.target.token === ' Paris'", timeout=SLOW)
    circuit = compute(page, "eap", top_n=400)
    assert circuit["metrics"]["edges"] > 0
    want_edges = {f"{e['source']}->{e['receiver']}" for e in circuit["edges"] if e["in_circuit"]}
    in_circuit_nodes = {n["id"] for n in circuit["nodes"] if n["in_circuit"]}
    # by default only the strongest paths are drawn; "all paths" shows the server's whole selection
    assert set(drawn(page)["edges"]) <= want_edges
    page.check("[data-testid=all-paths]")
    d = drawn(page)
    assert set(d["edges"]) == want_edges and len(d["edges"]) == len(want_edges)
    assert set(d["nodes"]) == in_circuit_nodes and len(d["nodes"]) == circuit["metrics"]["nodes"]
    graph = page.locator("[data-testid=graph]")
    assert int(graph.get_attribute("data-edges")) == len(want_edges)
    page.wait_for_timeout(500)  # let resize observers settle
    assert painted_pixels(page) > 2000
    screenshot(page, "circuit", page.locator(".circuit-panel"))
    # slider to a smaller top-n: fewer edges, and exactly the client-side pruning rule's set
    before = len(d["edges"])
    for frac in (0.8, 0.6, 0.9, 0.5):
        n = max(1, int(400 * frac))
        set_slider(page, n)
        d2 = drawn(page)
        if 0 < len(d2["edges"]) < before:
            break
    assert 0 < len(d2["edges"]) < before
    assert set(d2["edges"]) == top_n_pruned(circuit, n)
    assert int(graph.get_attribute("data-edges")) == len(d2["edges"])


def paths_through(edges: list[dict], node: str) -> set[str]:
    """Oracle: keys of the drawn edges on some input -> logits path through ``node``."""
    def reach(start: str, forward: bool) -> set[str]:
        seen, stack = {start}, [start]
        while stack:
            n = stack.pop()
            for e in edges:
                a, b = (e["source"], e["target"]) if forward else (e["target"], e["source"])
                if a == n and b not in seen:
                    seen.add(b)
                    stack.append(b)
        return seen

    from_in, to_out, to_node, from_node = reach("input", True), reach("logits", False), reach(node, False), reach(node, True)
    return {e["key"] for e in edges if (e["source"] in from_in and e["target"] in to_node)
            or (e["source"] in from_node and e["target"] in to_out)}


def test_circuit_picture_paths_labels_hover_and_groups(page, server):
    """The picture: strongest paths by default (rest behind a toggle), readable labels, hover highlights
    exactly a node's paths, role groups collapse and expand; screenshots before / after."""
    circuits_available(server)
    type_prompt(page, PROMPT)
    page.wait_for_function("() => window.__kc.lens.target && window.__kc.lens.target.token === ' Paris'", timeout=SLOW)
    circuit = compute(page, "eap", top_n=400)
    page.check("[data-testid=all-paths]")
    page.wait_for_timeout(300)
    every = drawn(page)
    screenshot(page, "circuit-before-all-paths", page.locator(".circuit-panel"))
    page.uncheck("[data-testid=all-paths]")
    page.wait_for_timeout(300)
    top = drawn(page)
    screenshot(page, "circuit-after-strongest-paths", page.locator(".circuit-panel"))
    assert 0 < len(top["edges"]) < len(every["edges"]) and set(top["edges"]) <= set(every["edges"])
    assert "hidden" in page.text_content("[data-testid=paths-note]")
    # labels: the strongest nodes carry their ids, and no two labels overlap
    boxes = page.evaluate("() => window.__kc.graph.placedLabels")
    assert len(boxes) >= min(5, len([n for n in top["nodes"] if n not in ("input", "logits")]))
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not (a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"]
                        and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"]), (a, b)
    scores = {n["id"]: abs(n["score"]) for n in circuit["nodes"]}
    inner = [n for n in top["nodes"] if n not in ("input", "logits")]
    assert max(inner, key=lambda n: scores[n]) in {b["id"] for b in boxes}
    # hover: exactly the edges on the node's input -> logits paths are highlighted
    edges = page.evaluate("() => window.__kc.drawnEdges()")
    node = next(n for n in inner if paths_through(edges, n) != {e["key"] for e in edges})
    xy = page.evaluate("id => window.__kc.graph.screenOf(id)", node)
    page.locator("[data-testid=graph] canvas").first.hover(position={"x": xy["x"], "y": xy["y"]})
    page.wait_for_function("id => document.querySelector('[data-testid=graph]').dataset.hovered === id", arg=node)
    assert set(page.evaluate("() => window.__kc.graph.highlightedEdges()")) == paths_through(edges, node)
    # role groups: collapse the heads of one role into a group node, then expand them again
    page.check("[data-testid=all-paths]")
    roles = {n["role"] for n in circuit["nodes"] if n["in_circuit"] and n["kind"] == "head" and n["role"]}
    assert roles, "no labelled head in the circuit"
    role = sorted(roles)[0]
    members = {n["id"] for n in circuit["nodes"] if n["role"] == role and n["id"] in drawn(page)["nodes"]}
    before = drawn(page)
    page.click(f"[data-testid=group-{role}]")
    grouped = drawn(page)
    assert f"group:{role}" in grouped["nodes"] and not members & set(grouped["nodes"])
    page.click(f"[data-testid=group-{role}]")
    assert sorted(drawn(page)["nodes"]) == sorted(before["nodes"])


def set_slider(page, value) -> None:
    page.locator("[data-testid=prune-slider]").evaluate(
        "(el, v) => { el.value = String(v); el.dispatchEvent(new Event('input', {bubbles: true})); }", value)


def fed_nodes(e: dict, group: int) -> list[str]:
    """Nodes an edge feeds: a grouped k/v receiver (a3.g1<k>) feeds every head of its group."""
    m = re.fullmatch(r"a(\d+)\.g(\d+)<[kv]>", e["receiver"])
    if not m or group <= 1:
        return [e["target"]]
    return [f"a{m[1]}.h{int(m[2]) * group + i}" for i in range(group)]


def prune(cur: list[dict], group: int) -> tuple[list[dict], set[str]]:
    """Oracle for the dangling-node rule, to a fixpoint (same rule as the backend's select.prune_dangling)."""
    while True:
        has_in = {n for e in cur for n in fed_nodes(e, group)}
        has_out = {e["source"] for e in cur}

        def alive(node, has_in=has_in, has_out=has_out):
            return (node == "input" or node in has_in) and (node == "logits" or node in has_out)

        nxt = [e for e in cur if alive(e["source"]) and any(alive(n) for n in fed_nodes(e, group))]
        if len(nxt) == len(cur):
            nodes = {e["source"] for e in cur} | {n for e in cur for n in fed_nodes(e, group) if alive(n)}
            return cur, nodes
        cur = nxt


def group_size(circuit: dict) -> int:
    g = circuit["graph"]
    return g["n_heads"] // g["n_kv_heads"] if g["kv_mode"] == "grouped" else 1


def top_n_pruned(circuit: dict, n: int) -> set[str]:
    edges = circuit["edges"]
    order = sorted(range(len(edges)), key=lambda i: (-abs(edges[i]["score"]), i))[:n]
    kept, _ = prune([edges[i] for i in order], group_size(circuit))
    return {f"{e['source']}->{e['receiver']}" for e in kept}


def test_click_head_shows_attention_pattern(page, server):
    circuits_available(server)
    type_prompt(page, "The capital of France is", model="tiny-gpt2")
    page.fill("[data-testid=target]", " Paris")
    page.select_option("[data-testid=method]", "eap")
    circuit = compute(page, "eap", top_n=40)
    heads = [n for n in drawn(page)["nodes"] if n.startswith("a")]
    assert heads, circuit["metrics"]
    click_node(page, heads[0])
    panel = page.locator("[data-testid=node-panel]")
    page.wait_for_function("() => document.querySelector('[data-testid=node-panel]').dataset.kind === 'head'", timeout=60_000)
    assert panel.get_attribute("data-node") == heads[0]
    page.wait_for_selector("[data-testid=attention-pattern] .main-svg")
    n_tokens = len(circuit["tokens"])
    page.wait_for_function("n => document.querySelector('[data-testid=attention-pattern]').dataset.rows == n", arg=str(n_tokens))
    # an MLP shows top tokens
    mlps = [n for n in drawn(page)["nodes"] if n.startswith("m")]
    if mlps:
        click_node(page, mlps[0])
        page.wait_for_function("() => document.querySelector('[data-testid=node-panel]').dataset.kind === 'mlp'", timeout=60_000)
        assert page.locator("[data-testid=promoted] li").count() > 0


def test_acdc_job_progress_and_cancel(page, server):
    """ACDC on a GPT-2-small-shaped random model (32,491 edges, minutes on CPU): progress events
    arrive, Cancel stops the job mid-run."""
    require_endpoint(server, "GET", "/api/jobs/0000")
    type_prompt(page, "The capital of France is", model="gpt2-small-random")
    page.fill("[data-testid=target]", " Paris")
    page.select_option("[data-testid=method]", "acdc")
    page.fill("[data-testid=acdc-max-edges]", "40000")  # above the server's default guard
    page.click("[data-testid=compute]")
    panel = page.locator(".circuit-panel")
    page.wait_for_function(
        "() => document.querySelector('[data-testid=job-progress]').value > 0 "
        "|| document.querySelector('[data-testid=circuit-status]').classList.contains('error')", timeout=SLOW)
    assert not page.locator("[data-testid=circuit-status].error").count(), page.text_content("[data-testid=circuit-status]")
    assert int(panel.get_attribute("data-job-events")) >= 3  # queued, running, progress...
    page.click("[data-testid=cancel-job]")
    page.wait_for_function("() => document.querySelector('.circuit-panel').dataset.jobStatus === 'cancelled'", timeout=SLOW)
    assert panel.get_attribute("data-job-status") == "cancelled"
    page.locator("[data-testid=cancel-job]").wait_for(state="hidden")
    assert "cancelled" in page.text_content("[data-testid=circuit-status]")


def test_save_lens_gives_a_permalink(page, server):
    lens = type_prompt(page, "The capital of France is", model="tiny-gpt2")
    page.click("[data-testid=save-lens]")
    page.wait_for_selector("[data-testid=saved-lens] a")
    href = page.get_attribute("[data-testid=saved-lens] a", "href")
    assert href.startswith("/c/")
    status, stored = http(server, "GET", "/api/results/" + href[3:])
    assert status == 200 and stored["kind"] == "lens" and stored["layers"] == lens["layers"]
    page.goto(href)  # the permalink shows the trace as a lens heatmap, not as JSON
    page.wait_for_selector("[data-testid=stored-kind][data-kind=lens]")
    cells = page.locator("[data-testid=lens-grid] .lens-cell")
    cells.first.wait_for()
    assert cells.count() == len(lens["layers"]) * len(lens["tokens"])
    assert page.text_content("[data-testid=shared-prompt]") == "The capital of France is"


def test_html_in_prompt_is_text(page, server):
    require_endpoint(server, "POST", "/api/lens", {"model": "tiny-gpt2", "prompt": "a b"})
    evil = "Hello <img src=x onerror=window.__xss=1> world"
    type_prompt(page, evil, model="tiny-gpt2")
    page.wait_for_timeout(300)
    assert page.evaluate("() => window.__xss") is None
    chips = page.eval_on_selector_all("[data-testid=token-chips] .chip", "cs => cs.map(c => c.textContent).join('')")
    assert "<img" in chips.replace("\u00b7", " ")
    assert page.locator("img[src=x]").count() == 0


def test_edit_shows_diff_and_curves(page, server):
    require_endpoint(server, "GET", "/api/edits")
    page.goto("/")
    page.wait_for_selector("[data-testid=model] option", state="attached")
    page.select_option("[data-testid=model]", "tiny-gpt2")
    page.click("button[data-tab=Edit]")
    page.fill("[data-testid=edit-prompt]", "The Eiffel Tower is located in the city of")
    page.fill("[data-testid=edit-subject]", "Eiffel Tower")
    page.fill("[data-testid=edit-target]", " Rome")
    page.select_option("[data-testid=edit-method]", "ft-m")
    page.fill("[data-testid=edit-top-n]", "30")  # about a quarter of the tiny model's 110 edges
    page.click("[data-testid=edit-run]")
    page.wait_for_selector("[data-testid=head-diff] tbody tr", timeout=SLOW)
    sid = page.get_attribute(".edit-panel", "data-session")
    status, api = http(server, "GET", f"/api/edits/{sid}/compare?top_n=30")  # memoised: the view's comparison
    assert status == 200, api
    circ, heads = api["circuit"], api["heads"]
    # both sides: the same counterfactual, each side's faithfulness; a diff only when both are usable
    assert circ["pre"]["corrupt_prompt"] == circ["post"]["corrupt_prompt"] and api["method"] == "eap-ig-refine"
    for name in ("pre", "post"):
        side = page.locator(f"[data-testid=edit-side-{name}]")
        assert side.get_attribute("data-usable") == str(circ["sides"][name]["usable"]).lower()
        assert "faithfulness" in side.text_content()
    if circ["comparable"]:
        diff = page.locator("[data-testid=diff-graph]")
        assert int(diff.get_attribute("data-edges")) > 0
        counts = {k: int(diff.get_attribute(f"data-{k}")) for k in ("added", "removed")}
        assert counts == {"added": len(circ["diff"]["added"]), "removed": len(circ["diff"]["removed"])}
    else:
        assert circ["reason"] in page.locator("[data-testid=diff-empty]").text_content()
        assert page.locator("[data-testid=diff-graph]").count() == 0
    # the head that changed most is listed first, with its top tokens before and after
    rows = page.locator("[data-testid=head-diff] tbody tr")
    first = heads["rows"][0]
    assert rows.first.get_attribute("data-node") == first["node"] and first["changed"]
    shown = lambda toks: " ".join(t["token"].replace(" ", "\u00b7") for t in toks[:5])  # noqa: E731
    assert rows.first.locator("[data-testid=head-top-pre]").text_content() == shown(first["top"]["pre"])
    assert rows.first.locator("[data-testid=head-top-post]").text_content() == shown(first["top"]["post"])
    assert rows.count() == heads["n_changed"]  # unchanged heads hidden behind the toggle
    page.check("[data-testid=head-diff-show-unchanged]")
    assert rows.count() == len(heads["rows"]) == heads["n_changed"] + heads["n_unchanged"]
    page.wait_for_selector("[data-testid=edit-lens-chart] .main-svg")
    assert int(page.get_attribute("[data-testid=edit-lens-chart]", "data-traces")) >= 4
    assert page.locator("[data-testid=replay-pair] [data-testid=replay]").count() == 2
    assert page.locator("[data-testid=edit-eval]").text_content()
    # the "why" under the numbers: the lens block of the new target, the mover switch, side effects
    why = page.locator("[data-testid=edit-why]").text_content()
    assert "new target in the lens" in why and "mover switch" in why and "other subjects, same relation" in why
    lens = api["analysis"]["lens"]
    assert (f"after block {lens['first_top_block_post']}" if lens["first_top_block_post"] is not None
            else "never in the top") in why
    assert page.get_attribute("[data-testid=edit-permalink] a", "href").startswith("/c/")
    screenshot(page, "edit", page.locator(".edit-panel"))
    page.click("[data-testid=edit-close]")
    page.wait_for_function("() => /closed/.test(document.querySelector('[data-testid=edit-status]').textContent)")


def test_share_link_round_trip(page, browser, server):
    circuits_available(server)
    require_endpoint(server, "GET", "/api/results")
    type_prompt(page, "The capital of France is", model="tiny-gpt2")
    page.fill("[data-testid=target]", " Paris")
    circuit = compute(page, "eap", top_n=60)
    assert circuit.get("id"), "POST /api/circuits returned no result id"
    set_slider(page, 30)
    before = drawn(page)
    node = next(n for n in before["nodes"] if n.startswith(("a", "m")))
    click_node(page, node)
    page.click("[data-testid=copy-link]")
    page.wait_for_function("() => document.querySelector('[data-testid=share-link]').value !== ''")
    link = page.input_value("[data-testid=share-link]")
    assert f"/c/{circuit['id']}" in link or "/v/" in link
    ctx = browser.new_context(viewport={"width": 1500, "height": 1100})
    try:
        p2 = ctx.new_page()
        p2.goto(link)
        p2.wait_for_function("() => window.__kc && window.__kc.circuit", timeout=SLOW)
        p2.wait_for_function("id => document.querySelector('[data-testid=node-panel]').dataset.node === id", arg=node, timeout=SLOW)
        after = p2.evaluate("() => window.__kc.drawn()")
        assert set(after["nodes"]) == set(before["nodes"])
        assert set(after["edges"]) == set(before["edges"])
        assert "top_n=30" in p2.url and f"node={node}" in p2.url
        assert p2.input_value("[data-testid=prune-slider]") == "30"
        assert p2.text_content("[data-testid=provenance]").count(circuit["id"]) >= 1
        screenshot(p2, "share")
        # reload restores the same view
        p2.reload()
        p2.wait_for_function("() => window.__kc && window.__kc.circuit", timeout=SLOW)
        assert set(p2.evaluate("() => window.__kc.drawn()")["edges"]) == set(before["edges"])
        assert p2.evaluate("() => window.__kc.cspViolations") == []
    finally:
        ctx.close()


def test_stored_html_prompt_renders_as_text(page, server):
    circuits_available(server)
    evil = "<script>window.__xss=1</script><img src=x onerror=window.__xss=2> The capital of France is"
    status, circuit = http(server, "POST", "/api/circuits", {
        "model": "tiny-gpt2", "prompt": evil, "target": " Paris", "method": "eap", "ablation": "zero", "top_n": 20})
    assert status == 200, circuit
    assert circuit.get("id"), "POST /api/circuits returned no result id"
    page.goto(f"/c/{circuit['id']}")
    page.wait_for_function("() => window.__kc && window.__kc.circuit", timeout=SLOW)
    assert page.text_content("[data-testid=shared-prompt]") == evil
    assert page.evaluate("() => window.__xss") is None
    assert page.locator("img[src=x]").count() == 0


def test_unknown_result_shows_not_found(page, server):
    page.goto("/c/" + "0" * 64)
    page.wait_for_selector("text=not found", timeout=30_000)
    page.goto("/c/not-a-valid-id")
    assert "not found" in page.content().lower()


def test_size_sweep_job_plots_rows(page, server):
    """The sweep button runs a job whose rows fill the table, up to the full graph."""
    type_prompt(page, "The capital of France is", model="tiny-gpt2")
    page.fill("[data-testid=target]", " Paris")
    page.select_option("[data-testid=method]", "eap")
    page.click("[data-testid=sweep-run]")
    page.wait_for_function("() => document.querySelectorAll('[data-testid=sweep-table] tr').length > 1 "
                           "|| document.querySelector('[data-testid=circuit-status]').classList.contains('error')",
                           timeout=SLOW)
    assert not page.locator("[data-testid=circuit-status].error").count(), page.text_content("[data-testid=circuit-status]")
    rows = page.locator("[data-testid=sweep-table] tr")
    assert rows.count() == 1 + 4  # header + the default sizes below the graph (10, 30, 100) and all 110 edges
    assert page.locator("[data-testid=sweep] .js-plotly-plot").count() == 1
    assert page.get_attribute(".circuit-panel", "data-job-status") == "succeeded"


def test_relation_run_adds_a_table_row(page, server):
    """The Relations tab runs a relation job (progress, then a Table 1 row with the API's numbers)."""
    page.goto("/")
    page.wait_for_selector("[data-testid=model] option", state="attached")
    page.select_option("[data-testid=model]", "tiny-gpt2")
    page.click("button[data-tab=Relations]")
    page.wait_for_selector("[data-testid=relation-name] option[value=country_capital_city]", state="attached")
    page.fill("[data-testid=relation-n]", "3")
    page.select_option("[data-testid=relation-ablation]", "zero")
    page.fill("[data-testid=relation-top-n]", "110")
    page.fill("[data-testid=relation-known-k]", "50257")  # a random model "knows" a fact only this loosely
    page.click("[data-testid=relation-run]")
    page.wait_for_selector("[data-testid=relation-row]", timeout=SLOW)
    cells = page.locator("[data-testid=relation-row] td").all_text_contents()
    assert cells[0] == "factual" and cells[1] == "country_capital_city" and cells[4] == "110"
    assert cells[6] == "3" and cells[10] == "3"  # validation and test facts
    assert cells[12] == cells[11]  # the full circuit reproduces the model's test Hit@10
    assert page.get_attribute(".relations-panel", "data-job-status") == "succeeded"
    screenshot(page, "relations", page.locator(".relations-panel"))
    jobs = http(server, "GET", "/api/jobs")[1]["items"]
    job_id = next(j for j in jobs if j["kind"] == "relation" and j["status"] == "succeeded")["id"]
    result_id = http(server, "GET", f"/api/jobs/{job_id}")[1]["result"]["id"]
    page.goto(f"/c/{result_id}")  # the stored row's permalink shows the same table row
    page.wait_for_selector("[data-testid=relation-row]")
    assert page.locator("[data-testid=relation-row] td").all_text_contents()[:6] == cells[:6]


def test_neurons_tab_finds_suppresses_and_shows_before_after(page, server):
    """Neurons tab: a neurons job (progress), the KN/top tables and chart, then Suppress shows the same
    before/after ranks as the API's edit of the same neurons."""
    require_endpoint(server, "GET", "/api/neurons/syntax")
    page.goto("/")
    page.wait_for_selector("[data-testid=model] option", state="attached")
    page.select_option("[data-testid=model]", "tiny-gpt2")
    page.click("button[data-tab=Neurons]")
    page.fill("[data-testid=neurons-prompt]", "The capital of France is")
    page.fill("[data-testid=neurons-target]", " Paris")
    page.fill("[data-testid=neurons-steps]", "4")
    page.click("[data-testid=neurons-run]")
    page.wait_for_selector("[data-testid=neurons-top] tbody tr", timeout=SLOW)
    page.wait_for_selector("[data-testid=neurons-chart] .main-svg")
    top_ids = page.locator("[data-testid=neurons-top] tbody tr td:nth-child(2)").all_text_contents()
    assert top_ids and all(re.fullmatch(r"L\d+\.N\d+", t) for t in top_ids)
    page.locator(f"[data-testid=neurons-top] input[data-neuron='{top_ids[0]}']").check()
    page.click("[data-testid=neurons-suppress]")
    page.wait_for_selector("[data-testid=neurons-edit-main]", timeout=SLOW)
    assert page.get_attribute("[data-testid=neurons-edit-out]", "data-mode") == "suppress"
    status, api = http(server, "POST", "/api/neurons/edit", {"model": "tiny-gpt2", "prompt": "The capital of France is",
                                                             "target": " Paris", "neurons": [top_ids[0]], "mode": "suppress"})
    assert status == 200, api
    first = page.locator("[data-testid=neurons-edit-table] tbody tr").first.locator("td").all_text_contents()
    assert first[0] == "prompt" and first[4] == f"{api['prompt']['before']['rank']} → {api['prompt']['after']['rank']}"
    assert page.locator("[data-testid=neurons-edit-table] tbody tr").count() == 1 + len(api["rows"])
    screenshot(page, "neurons", page.locator(".neurons-view"))
    href = page.get_attribute("[data-testid=neurons-permalink] a", "href")
    assert href.startswith("/c/")
    page.goto(href)  # the stored result's permalink shows the same top-neuron table
    page.wait_for_selector("[data-testid=neurons-top] tbody tr")
    assert page.locator("[data-testid=neurons-top] tbody tr td:nth-child(2)").all_text_contents() == top_ids


def test_nodes_show_their_top_tokens_and_the_replay_reveals_them(page, server):
    """Each labelled node carries its top lens token under its id (no two labels overlap); the tokens toggle
    hides them; the replay shows the tokens of the layers reached so far."""
    circuits_available(server)
    type_prompt(page, "The capital of France is", model="tiny-gpt2")
    page.fill("[data-testid=target]", " Paris")
    circuit = compute(page, "eap", top_n=40)
    page.check("[data-testid=all-paths]")
    page.wait_for_timeout(300)
    tokens = {n["id"]: n["top_token"]["token"] for n in circuit["nodes"] if n.get("top_token")}
    assert tokens and all(n["in_circuit"] and n["kind"] in ("head", "mlp") for n in circuit["nodes"] if n["id"] in tokens)
    boxes = page.evaluate("() => window.__kc.graph.placedLabels")
    with_token = [b for b in boxes if b.get("token")]
    assert with_token, boxes
    for b in with_token:  # the label's token line is that node's top token, as shown (visible whitespace)
        shown = tokens[b["id"]].replace(" ", "\u00b7").replace("\n", "\u21b5").replace("\t", "\u21e5")
        assert b["token"] == (shown if len(shown) <= 14 else shown[:13] + "\u2026") and b["h"] > 14
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not (a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"]
                        and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"]), (a, b)
    screenshot(page, "circuit-top-tokens", page.locator(".circuit-panel"))
    page.uncheck("[data-testid=tokens-toggle]")
    assert not any(b.get("token") for b in page.evaluate("() => window.__kc.graph.placedLabels"))
    page.check("[data-testid=tokens-toggle]")
    # the replay: no token at step 0; at the last step every drawn node that has a token carries it
    replay = page.locator("[data-testid=replay]").first
    n_layers = circuit["graph"]["n_layers"]
    drawn_ids = set(drawn(page)["nodes"])
    counts = []
    for step in range(n_layers + 1):
        replay.locator("input[type=range]").evaluate(
            "(el, v) => { el.value = String(v); el.dispatchEvent(new Event('input', {bubbles: true})); }", step)
        counts.append(int(replay.get_attribute("data-tokens")))
    layer = {n["id"]: n["layer"] for n in circuit["nodes"]}
    # with all paths drawn, the replay's circuit is the drawn one: tokens appear exactly with their layers
    expected = [sum(1 for i in tokens if i in drawn_ids and layer[i] < step) for step in range(n_layers + 1)]
    assert counts == expected and counts[0] == 0 and counts[-1] > 0


def _train_mask(page, density: str, seed: int, steps: int = 10, eval_every: int = 5) -> str:
    """Train a mask from the Masks tab (tiny-llama, country_capital_city); returns its id once it is shown."""
    page.select_option("[data-testid=mask-density]", density)
    page.fill("[data-testid=mask-seed]", str(seed))
    page.fill("[data-testid=mask-steps]", str(steps))
    page.fill("[data-testid=mask-eval-every]", str(eval_every))
    page.evaluate("() => { const p = document.querySelector('[data-testid=mask-permalink]'); if (p) p.remove(); }")
    page.click("[data-testid=mask-train]")
    page.wait_for_selector("[data-testid=mask-permalink]", timeout=SLOW)
    return page.get_attribute("[data-testid=mask-out]", "data-mask-id")


def test_masks_tab_trains_edits_overlaps_and_marks_the_circuit(page, server):
    """Masks tab: live curves of a mask-train job and Cancel; a trained mask's curves, composition and per-unit
    charts match the stored mask; the four-way edit table; the overlap heatmap of two masks (diagonal 1) beside
    random masks; the mask's heads and MLPs marked by an edge circuit; the mask's permalink."""
    require_endpoint(server, "POST", "/api/masks/overlap", {"mask_ids": ["0" * 20, "1" * 20]})
    page.goto("/")
    page.wait_for_selector("[data-testid=model] option", state="attached")
    page.click("button[data-tab=Masks]")
    page.wait_for_selector("[data-testid=mask-model] option[value=tiny-llama]", state="attached")
    assert "tiny-gpt2" not in page.locator("[data-testid=mask-model] option").all_text_contents()  # Llama family only
    page.select_option("[data-testid=mask-model]", "tiny-llama")
    page.wait_for_selector("[data-testid=mask-task] option[value='relation:country_capital_city']", state="attached")
    page.select_option("[data-testid=mask-task]", "relation:country_capital_city")
    page.fill("[data-testid=mask-n]", "4")
    # live curves while a long job runs, then Cancel
    page.fill("[data-testid=mask-steps]", "5000")
    page.fill("[data-testid=mask-eval-every]", "1")
    page.click("[data-testid=mask-train]")
    page.wait_for_function("() => Number(document.querySelector('[data-testid=mask-curves]').dataset.points) >= 2", timeout=SLOW)
    page.wait_for_selector("[data-testid=mask-curves] .main-svg")
    assert page.is_visible("[data-testid=mask-progress]")
    page.click("[data-testid=mask-cancel]")
    page.wait_for_selector("section[aria-label='mask training'][data-job-status=cancelled]", timeout=SLOW)
    steps = page.evaluate("() => JSON.parse(document.querySelector('[data-testid=mask-curves]').dataset.steps)")
    assert steps == list(range(1, len(steps) + 1)) and page.locator("[data-testid=mask-permalink]").count() == 0

    first = _train_mask(page, "0.25", seed=0)
    status, mask = http(server, "GET", f"/api/masks/stored/{first}")
    assert status == 200 and mask["model"] == "tiny-llama" and mask["params"]["target"] == 0.25
    assert page.evaluate("() => JSON.parse(document.querySelector('[data-testid=mask-curves]').dataset.steps)") == mask["curves"]["step"] == [5, 10]
    page.wait_for_selector("[data-testid=mask-composition] .main-svg")
    modules = page.evaluate("() => JSON.parse(document.querySelector('[data-testid=mask-composition]').dataset.modules)")
    assert {"attention", "mlp", "embedding"} <= set(modules) and all(mask["composition"][m]["n_params"] > 0 for m in modules)
    shares = page.evaluate("() => JSON.parse(document.querySelector('[data-testid=mask-composition]').dataset.shareOfMask)")
    assert shares == [mask["composition"][m]["share_of_mask"] for m in modules]
    assert page.get_attribute("[data-testid=mask-units]", "data-units") == str(sum(c["kind"] != "kv" for c in mask["components"]))
    summary = page.text_content("[data-testid=mask-summary]")
    assert f"{100 * mask['density']:.1f}%" in summary and "KL" in summary and "s/step" in summary

    # the four-way edit
    page.fill("[data-testid=mask-edit-prompt]", "The Eiffel Tower is in")
    page.fill("[data-testid=mask-edit-target]", " Rome")
    page.fill("[data-testid=mask-edit-steps]", "2")
    page.click("[data-testid=mask-edit-run]")
    page.wait_for_selector("[data-testid=mask-edit-table] tbody tr", timeout=SLOW)
    rows = [r.locator("td").all_text_contents() for r in page.locator("[data-testid=mask-edit-table] tbody tr").all()]
    assert [r[0] for r in rows] == ["inside", "complement", "random", "full"]
    assert all(r[7] == "0" for r in rows) and len({r[2] for r in rows}) == 1  # nothing moved outside; same NLL before
    page.wait_for_selector("[data-testid=mask-edit-losses] .main-svg")
    edit_href = page.get_attribute("[data-testid=mask-edit-permalink]", "href")

    # a second mask, then the overlap of both
    second = _train_mask(page, "0.05", seed=1)
    assert second != first
    page.click("[data-testid=mask-refresh]")
    for mid in (first, second):
        page.check(f"[data-testid=mask-pick] input[data-mask='{mid}']")
    page.click("[data-testid=mask-overlap-run]")
    page.wait_for_selector("[data-testid=mask-overlap] .main-svg", timeout=SLOW)
    page.wait_for_selector("[data-testid=mask-overlap-random] .main-svg")
    matrix = page.evaluate("() => JSON.parse(document.querySelector('[data-testid=mask-overlap]').dataset.matrix)")
    rand = page.evaluate("() => JSON.parse(document.querySelector('[data-testid=mask-overlap-random]').dataset.matrix)")
    picked = [mid for mid in page.evaluate(
        "() => [...document.querySelectorAll('[data-testid=mask-pick] input[data-mask]:checked')].map(b => b.dataset.mask)")]
    status, api = http(server, "POST", "/api/masks/overlap", {"mask_ids": picked})
    assert status == 200 and matrix == api["matrix"] and rand == api["random_matrix"]
    assert matrix[0][0] == 1.0 and matrix[1][1] == 1.0 and len(matrix) == 2
    screenshot(page, "masks-overlap", page.locator("[data-testid=mask-overlap-out]"))

    # beside an edge circuit (the second mask is the one shown now)
    status, circuit = http(server, "POST", "/api/circuits", {"model": "tiny-llama", "prompt": "The capital of France is",
                                                            "target": " Paris", "method": "eap", "top_n": 12})
    assert status == 200, circuit
    page.fill("[data-testid=mask-circuit-id]", circuit["id"])
    page.click("[data-testid=mask-components-run]")
    page.wait_for_selector("[data-testid=mask-components-table] tbody tr", timeout=SLOW)
    status, comp = http(server, "POST", "/api/masks/components", {"mask_id": second, "circuit_id": circuit["id"]})
    assert status == 200, comp
    marked = page.evaluate("() => JSON.parse(document.querySelector('[data-testid=mask-components-chart]').dataset.inCircuit)")
    assert sorted(marked) == sorted(c["id"] for c in comp["components"] if c["in_circuit"])
    for tr in page.locator("[data-testid=mask-components-table] tbody tr").all():
        unit, _, _, inside = tr.locator("td").all_text_contents()
        assert inside == ("yes" if unit in marked else "no")
    screenshot(page, "masks", page.locator(".masks-view"))

    href = page.get_attribute("[data-testid=mask-permalink] a", "href")
    assert href == f"/c/{second}"
    page.goto(href)  # the stored mask's permalink shows its composition
    page.wait_for_selector("[data-testid=mask-composition] .main-svg")
    assert page.get_attribute("[data-testid=mask-out]", "data-mask-id") == second
    page.goto(edit_href)  # the stored edit's permalink shows its table and the first mask
    page.wait_for_selector("[data-testid=mask-edit-table] tbody tr")
    assert [r.locator("td").all_text_contents() for r in page.locator("[data-testid=mask-edit-table] tbody tr").all()] == rows
    page.wait_for_selector(f"[data-testid=mask-out][data-mask-id='{first}']")

"""Export: GraphML parses back with networkx, DOT holds every edge, JSON round-trips through import."""

from __future__ import annotations

import io
import json
import re
import xml.etree.ElementTree as ET

import networkx as nx
import pytest
import typer
from typer.testing import CliRunner

from kcircuits.errors import BadRequest
from kcircuits.export import export_circuit, grid_position

REV = "sha256:" + "cd" * 32
QUOTED = r'"(?:[^"\\]|\\.)*"'
ATTRS = rf"\[(?:\w+=(?:{QUOTED}|[\w.]+)(?:, )?)*\]"
NODE_STMT = re.compile(rf"^  ({QUOTED}) {ATTRS};$")
EDGE_STMT = re.compile(rf"^  ({QUOTED}) -> ({QUOTED}) {ATTRS};$")


def _unquote(token: str) -> str:
    return re.sub(r"\\(.)", r"\1", token[1:-1])


def test_graphml_round_trips_with_networkx(make_circuit):
    circuit = make_circuit(prompt='a "quoted" <prompt> & more')
    graph = nx.read_graphml(io.StringIO(export_circuit(circuit, "graphml")), force_multigraph=True)
    assert set(graph.nodes) == {n["id"] for n in circuit["nodes"]}
    for node in circuit["nodes"]:
        expected = {k: v for k, v in node.items() if k != "id" and v is not None}
        assert graph.nodes[node["id"]] == expected
    got = {(u, v, d["receiver"]): d for u, v, d in graph.edges(data=True)}
    assert len(got) == len(circuit["edges"]) == graph.number_of_edges()
    for edge in circuit["edges"]:
        data = got[(edge["source"], edge["target"], edge["receiver"])]
        assert data["slot"] == edge["slot"] and data["score"] == edge["score"]
        assert data["in_circuit"] == edge["in_circuit"]
    assert graph.graph["prompt"] == circuit["prompt"] and graph.graph["model"] == "tiny-gpt2"


def test_dot_is_valid_and_holds_every_edge(make_circuit):
    circuit = make_circuit(prompt='tricky "quotes" \\ and\nnewline')
    dot = export_circuit(circuit, "dot")
    lines = dot.strip().split("\n")
    assert lines[0] == "digraph circuit {" and lines[-1] == "}"
    edges, nodes = [], []
    for line in lines[1:-1]:
        if m := EDGE_STMT.match(line):
            edges.append((_unquote(m.group(1)), _unquote(m.group(2)), re.search(rf"receiver=({QUOTED})", line)))
        elif m := NODE_STMT.match(line):
            nodes.append(_unquote(m.group(1)))
        else:
            assert re.match(rf"^  (rankdir=LR|node \[shape=box, fontsize=10\]|label={QUOTED});$", line), line
    assert nodes == [n["id"] for n in circuit["nodes"]]
    assert sorted((s, t, _unquote(r.group(1))) for s, t, r in edges) == \
        sorted((e["source"], e["target"], e["receiver"]) for e in circuit["edges"])
    assert dot.count("style=solid") == sum(e["in_circuit"] for e in circuit["edges"])


def test_role_scores_reach_graphml_and_dot(make_circuit):
    circuit = make_circuit()
    circuit["heads"]["a0.h0"].update(significant=True, subject_attention=0.8, relation_attention=0.05, dla=1.25,
                                     attribution=0.5, target_rank=1, subject_rank=None)
    graph = nx.read_graphml(io.StringIO(export_circuit(circuit, "graphml")), force_multigraph=True)
    node = graph.nodes["a0.h0"]
    assert node["role"] == "mover" and node["significant"] is True and node["target_rank"] == 1
    assert node["subject_attention"] == 0.8 and node["dla"] == 1.25 and "subject_rank" not in node
    assert "dla" not in graph.nodes["a0.h1"]
    dot = export_circuit(circuit, "dot")
    line = next(x for x in dot.splitlines() if x.startswith('  "a0.h0" ['))
    assert NODE_STMT.match(line) and 'role="mover"' in line and 'target_rank="1"' in line


def test_png_and_svg_draw_on_the_grid(make_circuit):
    pytest.importorskip("matplotlib")
    circuit = make_circuit()
    png = export_circuit(circuit, "png")
    assert isinstance(png, bytes) and png.startswith(b"\x89PNG\r\n\x1a\n")
    svg = export_circuit(circuit, "svg")
    assert ET.fromstring(svg.encode()).tag.endswith("svg")
    # x = layer; heads stacked by index; the MLP below the heads; input left, logits right
    assert grid_position({"kind": "head", "layer": 3, "head": 2}, 12, 12) == (3.0, -2.0)
    assert grid_position({"kind": "mlp", "layer": 3}, 12, 12)[1] < grid_position({"kind": "head", "layer": 3,
                                                                                   "head": 11}, 12, 12)[1]
    assert grid_position({"kind": "input"}, 12, 12)[0] == -1.0
    assert grid_position({"kind": "logits"}, 12, 12)[0] == 12.0


def test_real_circuit_exports_and_stores(tiny_llama, store):
    """A circuit discovered on the tiny GQA model stores bit-exactly and exports every edge."""
    from kcircuits.circuits.discover import compute_circuit

    request = {"model": "tiny-llama", "prompt": "The Eiffel Tower is in the city of", "target": " Paris",
               "method": "eap", "ablation": "zero", "top_n": 10}
    out = store.get_or_compute("circuit", request, tiny_llama.revision, lambda: compute_circuit(
        tiny_llama, request["prompt"], request["target"], method="eap", ablation="zero", top_n=10,
        random_seeds=0, with_heads=False))
    circuit = {k: v for k, v in store.get(out["id"]).items() if k not in ("id", "provenance", "saved", "title")}
    assert json.dumps(circuit, sort_keys=True) == json.dumps(
        {k: v for k, v in out.items() if k not in ("id", "provenance", "saved", "title", "cached")}, sort_keys=True)
    graph = nx.read_graphml(io.StringIO(export_circuit(circuit, "graphml")), force_multigraph=True)
    assert graph.number_of_edges() == len(circuit["edges"]) > 0
    assert graph.number_of_nodes() == len(circuit["nodes"])
    dot = export_circuit(circuit, "dot")
    for edge in circuit["edges"]:
        assert '"{}" -> "{}"'.format(edge["source"], edge["target"]) in dot


def test_formats_refused_for_non_circuits():
    with pytest.raises(BadRequest):
        export_circuit({"kind": "lens", "layers": []}, "graphml")
    with pytest.raises(BadRequest):
        export_circuit({"kind": "circuit", "nodes": [], "edges": []}, "pdf")
    assert json.loads(export_circuit({"kind": "lens", "layers": [1.5]}, "json")) == {"kind": "lens", "layers": [1.5]}


@pytest.fixture
def cli(monkeypatch, tmp_path):
    """The store commands on their own typer app, with a data dir of their own."""
    from kcircuits.cli import store as store_cli
    from kcircuits.config import get_settings

    monkeypatch.setenv("KCIRCUITS_DATA_DIR", str(tmp_path / "cli-data"))
    get_settings.cache_clear()
    app = typer.Typer()
    app.callback()(lambda: None)
    store_cli.register(app)
    return app


def test_cli_export_import_round_trip(cli, tmp_path, monkeypatch, make_circuit, make_request):
    from kcircuits.config import get_settings
    from kcircuits.store import open_store

    circuit = make_circuit()
    store = open_store(get_settings())
    rid = store.get_or_compute("circuit", make_request(circuit), REV, lambda: circuit)["id"]
    store.close()
    runner = CliRunner()
    out_file = tmp_path / "c.json"
    res = runner.invoke(cli, ["export", rid, "--format", "json", "--out", str(out_file)])
    assert res.exit_code == 0, res.output
    for fmt in ("graphml", "dot", "svg", "png"):
        res = runner.invoke(cli, ["export", rid, "--format", fmt, "--out", str(tmp_path / f"c.{fmt}")])
        assert res.exit_code == 0, res.output
    assert (tmp_path / "c.png").read_bytes().startswith(b"\x89PNG")
    res = runner.invoke(cli, ["export", rid, "--format", "dot"])
    assert res.exit_code == 0 and res.stdout.startswith("digraph circuit {")

    # import into a fresh store (another data dir): same id, identical JSON
    monkeypatch.setenv("KCIRCUITS_DATA_DIR", str(tmp_path / "elsewhere"))
    get_settings.cache_clear()
    res = runner.invoke(cli, ["import", str(out_file)])
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == rid
    other = open_store(get_settings())
    assert json.loads(json.dumps(other.get(rid))) == json.loads(out_file.read_text())
    other.close()
    res = runner.invoke(cli, ["results", "--json", "--q", "eiffel"])
    assert res.exit_code == 0 and json.loads(res.stdout)["items"][0]["id"] == rid
    res = runner.invoke(cli, ["results", "--model", "other-model"])
    assert res.exit_code == 0 and rid not in res.stdout

    edited = json.loads(out_file.read_text())
    edited["provenance"]["revision"] = "forged"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(edited))
    res = runner.invoke(cli, ["import", str(bad)])
    assert res.exit_code == 2 and "does not match" in res.stderr
    res = runner.invoke(cli, ["export", "0" * 64])
    assert res.exit_code == 2 and "no stored result" in res.stderr


def _with_tokens(circuit: dict) -> dict:
    """``circuit`` with top lens tokens on two in-circuit nodes, one of them hostile text."""
    tops = {"a0.h0": {"token": " Paris", "id": 6342, "logit": 3.5},
            "m1": {"token": "<b>$x^2$</b> & co", "id": 7, "logit": -0.25}}
    for node in circuit["nodes"]:
        node["top_token"] = tops.get(node["id"])
    return circuit


def test_top_tokens_reach_every_format(make_circuit):
    pytest.importorskip("matplotlib")
    plain = make_circuit()
    circuit = _with_tokens(make_circuit())
    graph = nx.read_graphml(io.StringIO(export_circuit(circuit, "graphml")), force_multigraph=True)
    assert graph.nodes["a0.h0"]["top_token"] == " Paris" and graph.nodes["a0.h0"]["top_token_logit"] == 3.5
    assert graph.nodes["m1"]["top_token"] == "<b>$x^2$</b> & co" and "top_token" not in graph.nodes["m0"]
    line = next(x for x in export_circuit(circuit, "dot").splitlines() if x.startswith('  "m1" ['))
    assert NODE_STMT.match(line) and 'top_token="<b>$x^2$</b> & co"' in line
    # SVG: the tokens are text elements (the hostile one literal, not markup or mathtext)
    svg = ET.fromstring(export_circuit(circuit, "svg").encode())
    texts = ["".join(t.itertext()) for t in svg.iter() if t.tag.endswith("text")]
    assert "\u00b7Paris" in texts and "<b>$x^2$</b>\u00b7&\u00b7co" in texts and "a0.h0" in texts
    assert not any("\u00b7Paris" in t for t in ET.fromstring(export_circuit(plain, "svg").encode()).itertext())
    assert export_circuit(circuit, "png") != export_circuit(plain, "png")

"""Export a circuit result as JSON, GraphML, DOT, PNG or SVG.

- ``json``: the result as stored (with ``id`` and ``provenance`` when present); ``kcircuits import``
  reads it back.
- ``graphml``: a networkx MultiDiGraph (several edges may join one pair of nodes through different
  slots q/k/v); node and edge keys are strings, attributes are scalars only (None is left out).
- ``dot``: Graphviz text written directly (no pygraphviz); every edge of the result, circuit edges
  solid, candidate edges dotted.
- ``png``/``svg``: a matplotlib drawing (imported lazily) on the dashboard's fixed grid rather than
  an automatic layout: x = layer (``input`` left of layer 0, ``logits`` right of the last layer),
  heads stacked by index within a layer column, the layer's MLP one row below its heads. The grid
  is known from the config, stays readable for every model size and makes two circuits of one model
  directly comparable; only in-circuit nodes and edges are drawn in colour, others faintly. Heads
  are coloured by role as in the dashboard; each in-circuit node's top lens token (``top_token``)
  is written under its id (as plain text: no mathtext; SVG text stays text).

A node's ``top_token`` ({token, id, logit}) reaches GraphML and DOT as the scalar attributes
``top_token`` and ``top_token_logit``.
"""

from __future__ import annotations

import io
import json
from typing import Any

from kcircuits.errors import BadRequest

FORMATS = ("json", "graphml", "dot", "png", "svg")
MEDIA_TYPES = {"json": "application/json", "graphml": "application/graphml+xml",
               "dot": "text/vnd.graphviz", "png": "image/png", "svg": "image/svg+xml"}
GRAPH_ATTRS = ("id", "kind", "model", "revision", "prompt", "target", "method", "ablation", "metric")
#: A circuit head's role scores (``result.heads``) copied onto its GraphML / DOT node.
ROLE_SCORES = ("significant", "subject_attention", "relation_attention", "dla", "attribution", "target_rank",
               "subject_rank")


#: Head colours by role, as in the dashboard (frontend/src/graph/canvas.ts ROLE_COLOURS).
ROLE_COLOURS = {"mover": "#d95f02", "relation": "#1b9e77", "mixture": "#7570b3"}


def _role_scores(result: dict[str, Any], node_id: str) -> dict[str, Any]:
    info = (result.get("heads") or {}).get(node_id) or {}
    return {k: info[k] for k in ROLE_SCORES if _scalar(info.get(k))}


def _top_token(node: dict[str, Any]) -> dict[str, Any]:
    """A node's top lens token as scalar attributes (empty when it has none)."""
    top = node.get("top_token")
    if not isinstance(top, dict) or not isinstance(top.get("token"), str):
        return {}
    out: dict[str, Any] = {"top_token": top["token"]}
    if isinstance(top.get("logit"), int | float):
        out["top_token_logit"] = float(top["logit"])
    return out


def shown_token(token: str) -> str:
    """A token as the dashboard shows it: spaces as middle dots, newlines and tabs as arrows."""
    return token.replace(" ", "\u00b7").replace("\n", "\u21b5").replace("\t", "\u21e5")


def export_circuit(result: dict[str, Any], fmt: str) -> str | bytes:
    """``result`` in format ``fmt`` (text for json/graphml/dot/svg, bytes for png)."""
    if fmt not in FORMATS:
        raise BadRequest(f"format: one of {', '.join(FORMATS)}")
    if fmt == "json":
        return json.dumps(result, indent=2, ensure_ascii=False)
    if not isinstance(result.get("nodes"), list) or not isinstance(result.get("edges"), list):
        raise BadRequest(f"format {fmt}: only circuit results (with nodes and edges) can be drawn")
    if fmt == "graphml":
        return to_graphml(result)
    if fmt == "dot":
        return to_dot(result)
    return draw(result, fmt)


def _scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)


def to_networkx(result: dict[str, Any]):
    """A MultiDiGraph: node keys = node ids, edge keys = receiver ids, scalar attributes only."""
    import networkx as nx

    graph = nx.MultiDiGraph()
    for name in GRAPH_ATTRS:
        if _scalar(result.get(name)):
            graph.graph[name] = result[name]
    for node in result["nodes"]:
        attrs = {k: v for k, v in node.items() if k != "id" and _scalar(v)}
        attrs.update(_role_scores(result, str(node["id"])))
        attrs.update(_top_token(node))
        graph.add_node(str(node["id"]), **attrs)
    for edge in result["edges"]:
        attrs = {k: v for k, v in edge.items() if k not in ("source", "target") and _scalar(v)}
        key = str(edge.get("receiver") or edge["target"])
        graph.add_edge(str(edge["source"]), str(edge["target"]), key=key, **attrs)
    return graph


def to_graphml(result: dict[str, Any]) -> str:
    import networkx as nx

    return "\n".join(nx.generate_graphml(to_networkx(result)))


def _dot_quote(value: Any) -> str:
    text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'


def to_dot(result: dict[str, Any]) -> str:
    """Graphviz DOT: ranks left to right by layer; edge label = slot, penwidth ~ |score|."""
    edges = result["edges"]
    top = max((abs(float(e.get("score") or 0.0)) for e in edges), default=0.0) or 1.0
    lines = ["digraph circuit {", "  rankdir=LR;", "  node [shape=box, fontsize=10];"]
    label = f"{result.get('model', '')}: {result.get('prompt', '')} -> {result.get('target', '')}"
    lines.append(f"  label={_dot_quote(label)};")
    for node in result["nodes"]:
        style = "filled" if node.get("in_circuit") else "dashed"
        extra = {"role": node["role"]} if node.get("role") else {}
        extra.update(_role_scores(result, str(node["id"])))
        extra.update(_top_token(node))
        attrs = "".join(f"{k}={_dot_quote(v)}, " for k, v in extra.items())
        lines.append(f"  {_dot_quote(node['id'])} [kind={_dot_quote(node.get('kind', ''))}, "
                     f"score={_dot_quote(node.get('score', ''))}, {attrs}style={style}];")
    for edge in edges:
        score = float(edge.get("score") or 0.0)
        width = 0.5 + 3.0 * abs(score) / top
        style = "solid" if edge.get("in_circuit") else "dotted"
        lines.append(f"  {_dot_quote(edge['source'])} -> {_dot_quote(edge['target'])} "
                     f"[label={_dot_quote(edge.get('slot', ''))}, receiver={_dot_quote(edge.get('receiver', ''))}, "
                     f"score={_dot_quote(score)}, penwidth={width:.2f}, style={style}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def grid_position(node: dict[str, Any], n_layers: int, n_heads: int) -> tuple[float, float]:
    """(x, y) on the fixed grid: x = layer, heads stacked downwards, the MLP below its heads."""
    kind = node.get("kind")
    middle = -(n_heads - 1) / 2.0  # between head rows, so input/logits edges do not cross nodes
    if kind == "input":
        return -1.0, middle
    if kind == "logits":
        return float(n_layers), middle
    if kind == "mlp":
        return float(node["layer"]), -float(n_heads) - 0.5
    return float(node["layer"]), -float(node.get("head") or 0)


def draw(result: dict[str, Any], fmt: str) -> bytes | str:
    """PNG bytes or SVG text of the circuit on the fixed grid (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise BadRequest(f"format {fmt} needs matplotlib (pip install matplotlib)") from exc

    graph = result.get("graph") or {}
    layers = [n["layer"] for n in result["nodes"] if isinstance(n.get("layer"), int)]
    heads = [n["head"] for n in result["nodes"] if isinstance(n.get("head"), int)]
    n_layers = int(graph.get("n_layers") or (max(layers) + 1 if layers else 1))
    n_heads = int(graph.get("n_heads") or (max(heads) + 1 if heads else 1))
    pos = {n["id"]: grid_position(n, n_layers, n_heads) for n in result["nodes"]}
    in_circuit = {n["id"] for n in result["nodes"] if n.get("in_circuit")}

    fig = Figure(figsize=(max(6.0, 0.9 * (n_layers + 2)), max(4.0, 0.35 * (n_heads + 3))), dpi=100)
    ax = fig.add_subplot()
    edges = [e for e in result["edges"] if e.get("in_circuit") and e["source"] in pos and e["target"] in pos]
    top = max((abs(float(e.get("score") or 0.0)) for e in edges), default=0.0) or 1.0
    for edge in edges:
        (x0, y0), (x1, y1) = pos[edge["source"]], pos[edge["target"]]
        score = float(edge.get("score") or 0.0)
        ax.plot([x0, x1], [y0, y1], color="tab:blue" if score >= 0 else "tab:red",
                linewidth=0.4 + 2.5 * abs(score) / top, alpha=0.7, zorder=1)
    for node in result["nodes"]:
        node_id = node["id"]
        x, y = pos[node_id]
        on = node_id in in_circuit
        colour = (ROLE_COLOURS.get(node.get("role") or "", "#9ca3af") if node.get("kind") == "head"
                  else "#374151" if node.get("kind") == "mlp" else "black")
        ax.scatter([x], [y], s=60 if on else 12, color=colour if on else "lightgray", zorder=2)
        if on:
            ax.annotate(node_id, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points", parse_math=False)
            top = _top_token(node).get("top_token")
            if top is not None:  # the top lens token under the id
                ax.annotate(shown_token(top), (x, y), fontsize=6, xytext=(3, -5), textcoords="offset points",
                            color="#1d4ed8", fontstyle="italic", parse_math=False)
    ax.set_xticks(range(-1, n_layers + 1), ["in"] + [str(i) for i in range(n_layers)] + ["out"])
    ax.set_yticks([])
    ax.set_xlabel("layer")
    title = f"{result.get('model', '')}: {result.get('prompt', '')!r} -> {result.get('target', '')!r}"
    ax.set_title(title[:120], fontsize=8, parse_math=False)
    buffer = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # SVG text as <text>, not glyph paths
        fig.savefig(buffer, format=fmt, bbox_inches="tight")
    data = buffer.getvalue()
    return data.decode("utf-8") if fmt == "svg" else data

"""The computation DAG of a pre-LN transformer, built from architecture facts alone (METHODS §1).

Nodes, in forward order: ``input``, then per layer ``a{l}.h0 .. a{l}.h{H-1}``, ``m{l}``, then
``logits``. Senders are every node but ``logits`` (index 0..n_senders-1 = node index); receivers
are input slots: per layer the q input of each head, the k and v inputs of each kv group
(``kv_mode="grouped"``, exact for GQA) or of each head (``"ungrouped"``), the MLP input, and
finally the logits' input (the final residual). Every receiver's senders form a *prefix* of the
sender order (``n_up[r]`` of them), which keeps masks dense and hooks cheap.

Closed forms (L layers, H heads, K kv receivers per layer and slot: K = G grouped, H ungrouped):
  nodes = 2 + L(H+1)
  edges = (H + 2K) [L + (H+1) L (L-1)/2] + (H+1) L (L+1)/2 + 1 + L(H+1)
With K = H this is the q/k/v-separate count of METHODS §1 (GPT-2 small 32,491).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import torch

from kcircuits.errors import BadRequest
from kcircuits.lm.registry import ArchFacts

KV_MODES = ("grouped", "ungrouped")
#: The node-id grammar, owned here (this module writes the ids): a head "a<layer>.h<head>", an MLP
#: "m<layer>", and the graph's ends "input" and "logits"; numbers without leading zeros.
NUMBER = r"(0|[1-9][0-9]{0,5})"
HEAD_PATTERN = rf"a{NUMBER}\.h{NUMBER}"
MLP_PATTERN = rf"m{NUMBER}"
NODE_PATTERN = rf"^({HEAD_PATTERN}|{MLP_PATTERN})$"
ANY_NODE_PATTERN = rf"^({HEAD_PATTERN}|{MLP_PATTERN}|input|logits)$"
HEAD_ID = re.compile(rf"^{HEAD_PATTERN}$")
MLP_ID = re.compile(rf"^{MLP_PATTERN}$")
#: "embed": the input node's output is the token + position embedding, i.e. blocks.0.hook_resid_pre.
INPUT_CONVENTIONS = ("embed",)


def head_id(layer: int, head: int) -> str:
    return f"a{layer}.h{head}"


def mlp_id(layer: int) -> str:
    return f"m{layer}"


@dataclass(frozen=True)
class NodeRef:
    """A parsed node id: kind "head" | "mlp" | "input" | "logits" with its layer and head."""

    kind: str
    layer: int | None = None
    head: int | None = None


def parse_node_id(node: str, n_layers: int | None = None, n_heads: int | None = None, *,
                  ends: bool = False) -> NodeRef:
    """'a3.h7' -> NodeRef('head', 3, 7); 'm5' -> NodeRef('mlp', 5); with ``ends`` also 'input' and
    'logits'. BadRequest when malformed or outside a model of ``n_layers`` x ``n_heads``."""
    if ends and node in ("input", "logits"):
        return NodeRef(node)
    shape = f" ({n_layers} layers, {n_heads} heads)" if n_layers is not None else ""
    if (m := HEAD_ID.match(node)) is not None:
        layer, head = int(m.group(1)), int(m.group(2))
        if (n_layers is None or layer < n_layers) and (n_heads is None or head < n_heads):
            return NodeRef("head", layer, head)
        raise BadRequest(f"head {node!r} is outside the model{shape}")
    if (m := MLP_ID.match(node)) is not None:
        layer = int(m.group(1))
        if n_layers is None or layer < n_layers:
            return NodeRef("mlp", layer)
        raise BadRequest(f"MLP {node!r} is outside the model{shape}")
    raise BadRequest(f"node {node!r} is not a head (a<layer>.h<head>) or an MLP (m<layer>)"
                     + (" or input/logits" if ends else ""))


@dataclass(frozen=True)
class ReceiverGroup:
    """Receivers sharing one hook: indices ``start:stop`` in receiver order, all with ``n_up`` senders.

    ``hook``: the TransformerLens hook whose input they are ([b,pos,n,d] for q/k/v, [b,pos,d] else).
    """

    hook: str
    layer: int | None
    slot: str
    start: int
    stop: int
    n_up: int


def closed_form_counts(n_layers: int, n_heads: int, n_kv: int | None = None) -> tuple[int, int]:
    """(nodes, edges) from the closed form; ``n_kv`` = k/v receivers per layer and slot (default H)."""
    L, H = n_layers, n_heads
    K = H if n_kv is None else n_kv
    nodes = 2 + L * (H + 1)
    edges = (H + 2 * K) * (L + (H + 1) * L * (L - 1) // 2) + (H + 1) * L * (L + 1) // 2 + 1 + L * (H + 1)
    return nodes, edges


@dataclass(frozen=True)
class Graph:
    """The DAG for one architecture. Build with :func:`get_graph` (cached)."""

    arch: ArchFacts
    kv_mode: str = "grouped"
    input_convention: str = "embed"
    _cache: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        if self.kv_mode not in KV_MODES:
            raise BadRequest(f"kv_mode must be one of {KV_MODES}, got {self.kv_mode!r}")
        if self.input_convention not in INPUT_CONVENTIONS:
            raise BadRequest(f"input_convention must be one of {INPUT_CONVENTIONS}, got {self.input_convention!r}")

    # sizes ------------------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return self.arch.n_layers

    @property
    def n_heads(self) -> int:
        return self.arch.n_heads

    @property
    def n_kv_heads(self) -> int:
        return self.arch.n_kv_heads

    @property
    def n_kv(self) -> int:
        """k/v receivers per layer and slot: kv groups (grouped) or heads (ungrouped)."""
        return self.arch.n_kv_heads if self.kv_mode == "grouped" else self.arch.n_heads

    @property
    def is_grouped(self) -> bool:
        """True when k/v receivers stand for a group of several query heads."""
        return self.n_kv != self.n_heads

    @property
    def n_senders(self) -> int:
        return 1 + self.n_layers * (self.n_heads + 1)

    @property
    def n_nodes(self) -> int:
        return self.n_senders + 1

    @property
    def n_receivers(self) -> int:
        return self.n_layers * (self.n_heads + 2 * self.n_kv + 1) + 1

    @cached_property
    def n_edges(self) -> int:
        return int(sum(self.n_up))

    # index arithmetic -------------------------------------------------------------------------
    def head_index(self, layer: int, head: int) -> int:
        """Sender/node index of head ``a{layer}.h{head}``."""
        return 1 + layer * (self.n_heads + 1) + head

    def mlp_index(self, layer: int) -> int:
        return 1 + layer * (self.n_heads + 1) + self.n_heads

    @property
    def logits_index(self) -> int:
        """Node index of ``logits`` (= n_senders)."""
        return self.n_senders

    def layer_n_up(self, layer: int) -> int:
        """Senders upstream of layer ``layer``'s attention (input + all earlier heads and MLPs)."""
        return 1 + layer * (self.n_heads + 1)

    # nodes ------------------------------------------------------------------------------------
    @cached_property
    def nodes(self) -> list[dict]:
        """Node records in node-index order: {"id", "kind", "layer", "head"}."""
        out = [{"id": "input", "kind": "input", "layer": None, "head": None}]
        for layer in range(self.n_layers):
            out += [{"id": head_id(layer, h), "kind": "head", "layer": layer, "head": h} for h in range(self.n_heads)]
            out.append({"id": mlp_id(layer), "kind": "mlp", "layer": layer, "head": None})
        out.append({"id": "logits", "kind": "logits", "layer": None, "head": None})
        return out

    @cached_property
    def node_ids(self) -> list[str]:
        return [n["id"] for n in self.nodes]

    @cached_property
    def node_index(self) -> dict[str, int]:
        """Node id -> node index (senders share it; logits = n_senders)."""
        return {nid: i for i, nid in enumerate(self.node_ids)}

    # receivers --------------------------------------------------------------------------------
    def _kv_id(self, layer: int, k: int, slot: str) -> str:
        return f"a{layer}.g{k}<{slot}>" if self.is_grouped else f"a{layer}.h{k}<{slot}>"

    @cached_property
    def receiver_groups(self) -> list[ReceiverGroup]:
        """One group per hook, in forward order (q, k, v, mlp_in per layer; then logits)."""
        groups, r = [], 0
        for layer in range(self.n_layers):
            n_up = self.layer_n_up(layer)
            for slot, n in (("q", self.n_heads), ("k", self.n_kv), ("v", self.n_kv)):
                groups.append(ReceiverGroup(f"blocks.{layer}.hook_{slot}_input", layer, slot, r, r + n, n_up))
                r += n
            groups.append(ReceiverGroup(f"blocks.{layer}.hook_mlp_in", layer, "mlp_in", r, r + 1, n_up + self.n_heads))
            r += 1
        groups.append(ReceiverGroup("ln_final.hook_in", None, "logits", r, r + 1, self.n_senders))
        return groups

    @cached_property
    def receivers(self) -> list[dict]:
        """Receiver records: {"id", "slot", "layer", "index", "node", "n_up"}; ``node`` is the node
        index of the receiving node (for a grouped k/v receiver: the group's first head)."""
        per_group = self.n_heads // self.n_kv
        out = []
        for g in self.receiver_groups:
            for i in range(g.stop - g.start):
                if g.slot == "q":
                    rid, node = f"a{g.layer}.h{i}<q>", self.head_index(g.layer, i)
                elif g.slot in ("k", "v"):
                    rid, node = self._kv_id(g.layer, i, g.slot), self.head_index(g.layer, i * per_group)
                elif g.slot == "mlp_in":
                    rid, node = f"m{g.layer}", self.mlp_index(g.layer)
                else:
                    rid, node = "logits", self.logits_index
                out.append({"id": rid, "slot": g.slot, "layer": g.layer, "index": i, "node": node, "n_up": g.n_up})
        return out

    @cached_property
    def receiver_ids(self) -> list[str]:
        return [r["id"] for r in self.receivers]

    @cached_property
    def receiver_index(self) -> dict[str, int]:
        return {rid: i for i, rid in enumerate(self.receiver_ids)}

    @cached_property
    def n_up(self) -> torch.Tensor:
        """[n_receivers] long: number of senders (a prefix) feeding each receiver."""
        return torch.tensor([r["n_up"] for r in self.receivers], dtype=torch.long)

    @cached_property
    def receiver_node(self) -> torch.Tensor:
        """[n_receivers] long: node index receiving each receiver slot."""
        return torch.tensor([r["node"] for r in self.receivers], dtype=torch.long)

    def receiver_heads(self, r: int) -> list[int]:
        """Node indices of the heads fed by receiver ``r`` (several for a grouped k/v receiver)."""
        rec = self.receivers[r]
        if rec["slot"] in ("k", "v") and self.is_grouped:
            per = self.n_heads // self.n_kv
            return [self.head_index(rec["layer"], rec["index"] * per + j) for j in range(per)]
        return [rec["node"]]

    @cached_property
    def shared_receivers(self) -> dict[str, list[str]]:
        """Receiver id -> the ids of the heads it feeds, for receivers that feed several (grouped k/v)."""
        out = {}
        for r, rec in enumerate(self.receivers):
            heads = self.receiver_heads(r)
            if len(heads) > 1:
                out[rec["id"]] = [self.node_ids[n] for n in heads]
        return out

    @cached_property
    def receiver_nodes_matrix(self) -> torch.Tensor:
        """[n_receivers, n_nodes] bool: receiver r feeds node n (several heads for grouped k/v)."""
        m = torch.zeros(self.n_receivers, self.n_nodes, dtype=torch.bool)
        for r in range(self.n_receivers):
            m[r, self.receiver_heads(r)] = True
        return m

    # edges ------------------------------------------------------------------------------------
    @cached_property
    def edge_mask_allowed(self) -> torch.Tensor:
        """[n_senders, n_receivers] bool: the real edges (sender upstream of receiver), on CPU."""
        return torch.arange(self.n_senders)[:, None] < self.n_up[None, :]

    def allowed(self, device: torch.device | str) -> torch.Tensor:
        """``edge_mask_allowed`` on ``device`` (cached per device)."""
        key = ("allowed", str(device))
        if key not in self._cache:
            self._cache[key] = self.edge_mask_allowed.to(device)
        return self._cache[key]

    def empty_mask(self, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.zeros(self.n_senders, self.n_receivers, dtype=torch.bool, device=device)

    def full_mask(self, device: torch.device | str = "cpu") -> torch.Tensor:
        return self.allowed(device).clone()

    def edge_id(self, sender: int, receiver: int) -> str:
        return f"{self.node_ids[sender]}->{self.receiver_ids[receiver]}"

    def edge_record(self, sender: int, receiver: int) -> dict:
        """Wire-format edge (without score): source, target node, slot, receiver id."""
        rec = self.receivers[receiver]
        return {"source": self.node_ids[sender], "target": self.node_ids[rec["node"]], "slot": rec["slot"],
                "receiver": rec["id"]}

    def stats(self) -> dict:
        """Graph metadata for results and ``graph-stats``."""
        a = self.arch
        return {"n_layers": a.n_layers, "n_heads": a.n_heads, "n_kv_heads": a.n_kv_heads, "kv_mode": self.kv_mode,
                "total_nodes": self.n_nodes, "total_edges": self.n_edges, "n_senders": self.n_senders,
                "n_receivers": self.n_receivers, "input_convention": self.input_convention}


@lru_cache(maxsize=32)
def get_graph(arch: ArchFacts, kv_mode: str = "grouped", input_convention: str = "embed") -> Graph:
    """The cached :class:`Graph` of ``arch``."""
    return Graph(arch, kv_mode, input_convention)

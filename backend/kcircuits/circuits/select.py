"""Choosing a circuit from edge scores (METHODS §2.4): threshold, top-n, greedy from the logits,
then pruning dangling nodes to a fixpoint. Masks are [n_senders, n_receivers] bool.
"""

from __future__ import annotations

import heapq

import torch

from kcircuits.circuits.graph import Graph
from kcircuits.errors import BadRequest


def _magnitude(scores: torch.Tensor, graph: Graph, absolute: bool) -> torch.Tensor:
    """Scores made comparable (|score| or score), -inf off the allowed edges."""
    mag = scores.abs() if absolute else scores
    return mag.float().masked_fill(~graph.allowed(scores.device), float("-inf"))


def select_threshold(scores: torch.Tensor, graph: Graph, tau: float, absolute: bool = True) -> torch.Tensor:
    """Edges with |score| >= tau (or score >= tau)."""
    return _magnitude(scores, graph, absolute) >= tau


def select_top_n(scores: torch.Tensor, graph: Graph, n: int, absolute: bool = True) -> torch.Tensor:
    """The n edges with the largest |score| (ties broken by index)."""
    if n < 0 or n > graph.n_edges:
        raise BadRequest(f"top_n must lie in 0..{graph.n_edges}, got {n}")
    mag = _magnitude(scores, graph, absolute).flatten()
    mask = torch.zeros_like(mag, dtype=torch.bool)
    if n:
        mask[torch.topk(mag, n).indices] = True
    return mask.view(graph.n_senders, graph.n_receivers)


def select_greedy(scores: torch.Tensor, graph: Graph, n: int, absolute: bool = True) -> torch.Tensor:
    """Grow from the logits: repeatedly add the best edge whose receiving node is already in the circuit."""
    if n < 0 or n > graph.n_edges:
        raise BadRequest(f"n must lie in 0..{graph.n_edges}, got {n}")
    mag = _magnitude(scores, graph, absolute).cpu()
    n_up = graph.n_up.tolist()
    # receivers feeding each node (a grouped k/v receiver feeds several heads)
    feeds: dict[int, list[int]] = {}
    for r in range(graph.n_receivers):
        for node in graph.receiver_heads(r):
            feeds.setdefault(node, []).append(r)
    heap: list[tuple[float, int, int]] = []
    opened: set[int] = set()

    def open_node(node: int) -> None:
        for r in feeds.get(node, []):
            if r in opened:
                continue
            opened.add(r)
            for s, v in enumerate(mag[: n_up[r], r].tolist()):
                heapq.heappush(heap, (-v, s, r))

    mask = torch.zeros(graph.n_senders, graph.n_receivers, dtype=torch.bool)
    in_circuit = {graph.logits_index}
    open_node(graph.logits_index)
    taken = 0
    while taken < n and heap:
        _, s, r = heapq.heappop(heap)
        mask[s, r] = True
        taken += 1
        if s not in in_circuit:
            in_circuit.add(s)
            open_node(s)
    return mask.to(scores.device)


def node_presence(mask: torch.Tensor, graph: Graph) -> tuple[torch.Tensor, torch.Tensor]:
    """(has_in [n_nodes], has_out [n_nodes]) of the edge mask."""
    dev = mask.device
    feeds = graph.receiver_nodes_matrix.to(dev)  # [n_r, n_nodes]
    has_in = (mask.any(0).float() @ feeds.float()) > 0
    has_out = torch.zeros(graph.n_nodes, dtype=torch.bool, device=dev)
    has_out[: graph.n_senders] = mask.any(1)
    return has_in, has_out


def prune_dangling(mask: torch.Tensor, graph: Graph) -> torch.Tensor:
    """Drop nodes without an in-edge (input exempt) or an out-edge (logits exempt), and their
    edges, until nothing changes. A grouped k/v receiver stays while one of its heads stays."""
    mask = mask & graph.allowed(mask.device)
    feeds = graph.receiver_nodes_matrix.to(mask.device)
    while True:
        has_in, has_out = node_presence(mask, graph)
        has_in[0] = True  # input
        has_out[graph.logits_index] = True  # logits
        alive = has_in & has_out
        receiver_alive = (feeds.float() @ alive.float()) > 0  # [n_r]
        new = mask & alive[: graph.n_senders, None] & receiver_alive[None, :]
        if torch.equal(new, mask):
            return new
        mask = new


def circuit_nodes(mask: torch.Tensor, graph: Graph) -> torch.Tensor:
    """[n_nodes] bool: senders with an out-edge and logits if it has an in-edge (after pruning every
    such node also has an in-edge, the input excepted)."""
    has_in, has_out = node_presence(mask, graph)
    nodes = has_out.clone()
    nodes[graph.logits_index] = bool(has_in[graph.logits_index])
    return nodes


def select(scores: torch.Tensor, graph: Graph, *, top_n: int | None = None, threshold: float | None = None,
           greedy: bool = False, prune: bool = True) -> torch.Tensor:
    """One entry point: threshold if given, else top-n (greedy growth when ``greedy``); then prune."""
    if threshold is not None and top_n is not None:
        raise BadRequest("give top_n or threshold, not both")
    if threshold is not None:
        mask = select_threshold(scores, graph, threshold)
    elif top_n is not None:
        mask = select_greedy(scores, graph, top_n) if greedy else select_top_n(scores, graph, top_n)
    else:
        raise BadRequest("give top_n or threshold")
    return prune_dangling(mask, graph) if prune else mask

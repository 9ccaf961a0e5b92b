"""Circuit selection: threshold, top-n, greedy from the logits, dangling-node pruning."""

from __future__ import annotations

import torch

from kcircuits.circuits.graph import get_graph
from kcircuits.circuits.select import (
    circuit_nodes,
    prune_dangling,
    select,
    select_greedy,
    select_threshold,
    select_top_n,
)
from kcircuits.lm.registry import ArchFacts

G = get_graph(ArchFacts(2, 4, 4, 64, 256, 100, "gpt2"))
GQA = get_graph(ArchFacts(2, 4, 2, 64, 256, 100, "llama"))


def _mask(graph, *edges):
    m = graph.empty_mask()
    for sender, receiver in edges:
        m[graph.node_index[sender], graph.receiver_index[receiver]] = True
    return m


def _ids(graph, mask):
    return {graph.edge_id(int(s), int(r)) for s, r in torch.nonzero(mask)}


def _random_scores(graph, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(graph.n_senders, graph.n_receivers, generator=gen)


def test_threshold_and_top_n_use_magnitude_on_allowed_edges_only():
    scores = _random_scores(G) * 10
    allowed = G.edge_mask_allowed
    thr = select_threshold(scores, G, 5.0)
    assert torch.equal(thr, (scores.abs() >= 5.0) & allowed)
    top = select_top_n(scores, G, 7)
    assert int(top.sum()) == 7 and not (top & ~allowed).any()
    smallest_in = scores.abs()[top].min()
    assert (scores.abs()[allowed & ~top] <= smallest_in).all()
    assert int(select_top_n(scores, G, G.n_edges).sum()) == G.n_edges


def test_greedy_only_adds_edges_into_the_current_circuit():
    scores = _random_scores(G, 1)
    mask = select_greedy(scores, G, 15)
    assert int(mask.sum()) == 15
    # replay: every edge (in greedy order = descending |score| among candidates) enters a node already in
    in_circuit = {G.logits_index}
    order = sorted(((float(scores[s, r].abs()), int(s), int(r)) for s, r in torch.nonzero(mask)), reverse=True)
    pending = list(order)
    while pending:
        for item in pending:
            _, s, r = item
            if set(G.receiver_heads(r)) & in_circuit:
                in_circuit.add(s)
                pending.remove(item)
                break
        else:
            raise AssertionError("an edge does not lead into the circuit")
    # the first edge taken is the best edge into the logits
    col = G.receiver_index["logits"]
    best = int(scores[:, col].abs().argmax())
    assert mask[best, col]


def test_prune_removes_dangling_chains_to_fixpoint():
    kept = [("input", "a0.h1<q>"), ("a0.h1", "logits")]
    no_in = [("a0.h2", "logits")]  # a0.h2 has no input: dropped
    no_out = [("input", "a0.h0<v>"), ("a0.h0", "m0"), ("m0", "a1.h3<k>")]  # a1.h3 leads nowhere: cascade
    mask = _mask(G, *kept, *no_in, *no_out)
    pruned = prune_dangling(mask, G)
    assert _ids(G, pruned) == {G.edge_id(G.node_index[s], G.receiver_index[r]) for s, r in kept}
    assert torch.equal(prune_dangling(pruned, G), pruned)
    nodes = circuit_nodes(pruned, G)
    assert [G.node_ids[i] for i in torch.nonzero(nodes).flatten()] == ["input", "a0.h1", "logits"]
    assert not prune_dangling(_mask(G, *no_in, *no_out), G).any()


def test_prune_keeps_shared_kv_receiver_while_one_head_lives():
    # a1.g0<k> feeds heads a1.h0 and a1.h1; only a1.h1 reaches the logits
    mask = _mask(GQA, ("input", "a1.g0<k>"), ("a1.h1", "logits"), ("input", "a1.h0<q>"))
    pruned = prune_dangling(mask, GQA)
    assert _ids(GQA, pruned) == {"input->a1.g0<k>", "a1.h1->logits"}


def test_select_entry_point():
    scores = _random_scores(G, 2)
    mask = select(scores, G, top_n=20)
    assert torch.equal(mask, prune_dangling(select_top_n(scores, G, 20), G))
    assert int(select(scores, G, top_n=20, greedy=True).sum()) <= 20
    assert int(select(scores, G, threshold=1e9).sum()) == 0

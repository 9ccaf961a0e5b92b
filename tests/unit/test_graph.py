"""The computation DAG: closed-form counts, index conventions, allowed edges."""

from __future__ import annotations

import pytest
import torch

from kcircuits.circuits.graph import closed_form_counts, get_graph
from kcircuits.errors import BadRequest
from kcircuits.lm.registry import ArchFacts


def _arch(L, H, G=None, family="gpt2"):
    return ArchFacts(L, H, G or H, 64, 256, 100, family)


@pytest.mark.parametrize("L,H,nodes,edges", [
    (2, 4, 12, 110),  # tiny: input + 8 heads + 2 MLPs + logits = 12 nodes (METHODS' "11" is a typo)
    (12, 12, 158, 32_491),  # GPT-2 small
    (24, 16, 410, 231_877),  # GPT-2 medium
    (36, 20, 758, 810_703),  # GPT-2 large
    (48, 25, 1_250, 2_235_025),  # GPT-2 XL
    (32, 32, 1_058, 1_592_881),  # Llama-2-7B (KnowledgeCircuits notebook)
])
def test_counts_match_published(L, H, nodes, edges):
    g = get_graph(_arch(L, H))
    assert (g.n_nodes, g.n_edges) == (nodes, edges)
    assert int(g.edge_mask_allowed.sum()) == edges
    assert closed_form_counts(L, H) == (nodes, edges)


@pytest.mark.parametrize("L,H,G", [(2, 4, 2), (30, 9, 3), (22, 32, 4), (5, 6, 1)])
def test_gqa_counts_closed_form(L, H, G):
    grouped = get_graph(_arch(L, H, G, "llama"))
    ungrouped = get_graph(_arch(L, H, G, "llama"), kv_mode="ungrouped")
    assert grouped.n_edges == closed_form_counts(L, H, G)[1]
    assert ungrouped.n_edges == closed_form_counts(L, H)[1]
    # grouped drops 2 (H - G) k/v receivers per layer, each with 1 + l(H+1) senders
    dropped = sum(2 * (H - G) * (1 + layer * (H + 1)) for layer in range(L))
    assert ungrouped.n_edges - grouped.n_edges == dropped
    assert grouped.n_nodes == ungrouped.n_nodes == 2 + L * (H + 1)


def test_smollm2_grouped_size():
    assert closed_form_counts(30, 9, 3) == (302, 70_651)


def test_indices_and_ids_are_consistent():
    g = get_graph(_arch(3, 4, 2, "llama"))
    assert g.node_ids[0] == "input" and g.node_ids[-1] == "logits"
    assert g.node_ids[g.head_index(1, 3)] == "a1.h3" and g.node_ids[g.mlp_index(2)] == "m2"
    assert all(g.node_index[nid] == i for i, nid in enumerate(g.node_ids))
    assert all(g.receiver_index[rid] == i for i, rid in enumerate(g.receiver_ids))
    assert len(set(g.receiver_ids)) == g.n_receivers
    assert g.receiver_ids[g.receiver_groups[1].start] == "a0.g0<k>"
    # the grouped k receiver of group 1 feeds heads 2 and 3
    r = g.receiver_index["a1.g1<k>"]
    assert g.receiver_heads(r) == [g.head_index(1, 2), g.head_index(1, 3)]
    assert g.edge_record(g.head_index(0, 1), r) == {"source": "a0.h1", "target": "a1.h2", "slot": "k",
                                                     "receiver": "a1.g1<k>"}


def test_allowed_edges_are_upstream_only():
    g = get_graph(_arch(3, 2))
    allowed = g.edge_mask_allowed
    for r, rec in enumerate(g.receivers):
        senders = torch.nonzero(allowed[:, r]).flatten().tolist()
        assert senders == list(range(rec["n_up"]))
        for s in senders:  # every sender is strictly before the receiving node (forward order)
            assert s < rec["node"] or (rec["slot"] == "mlp_in" and s < g.mlp_index(rec["layer"]))
        if rec["slot"] == "mlp_in":  # the MLP sees its own layer's heads
            assert g.head_index(rec["layer"], 1) in senders
        if rec["slot"] in ("q", "k", "v"):  # a head does not see its own layer's heads
            assert g.head_index(rec["layer"], 0) not in senders
    assert allowed[:, g.receiver_index["logits"]].all()


def test_cached_and_validated():
    assert get_graph(_arch(2, 4)) is get_graph(_arch(2, 4))
    with pytest.raises(BadRequest):
        get_graph(_arch(2, 4), kv_mode="sideways")
    g = get_graph(_arch(2, 4))
    assert g.stats()["total_edges"] == 110 and g.stats()["input_convention"] == "embed"


def test_node_grammar_round_trips_every_node_and_refuses_the_rest():
    from kcircuits.circuits.graph import NodeRef, parse_node_id

    graph = get_graph(_arch(3, 4), "ungrouped")
    for node in graph.nodes:
        ref = parse_node_id(node["id"], 3, 4, ends=True)
        assert ref == NodeRef(node["kind"], node["layer"], node["head"])
    for bad in ("a0.h00", "a01.h1", "m", "a1h2", "input", "x3"):
        with pytest.raises(BadRequest, match="not a head"):
            parse_node_id(bad)
    with pytest.raises(BadRequest, match="outside the model"):
        parse_node_id("a3.h0", 3, 4)
    with pytest.raises(BadRequest, match="outside the model"):
        parse_node_id("m7", 3, 4)


def test_shared_receivers_name_every_head_of_a_kv_group():
    grouped = get_graph(_arch(2, 6, 2), "grouped")
    shared = grouped.shared_receivers
    assert shared["a1.g0<k>"] == ["a1.h0", "a1.h1", "a1.h2"] and shared["a0.g1<v>"] == ["a0.h3", "a0.h4", "a0.h5"]
    assert len(shared) == 2 * 2 * 2  # layers x groups x (k, v)
    assert get_graph(_arch(2, 6), "ungrouped").shared_receivers == {}

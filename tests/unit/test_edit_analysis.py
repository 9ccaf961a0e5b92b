"""The per-edit findings (kcircuits.editing.analysis) on the planted copy model: lens-rank block,
mover switch and side effects, against what the planted edit is known to do."""

from __future__ import annotations

import pytest
import torch
from tests.unit.edit_support import compare_inline

from kcircuits.circuits.testing import planted_copy_model
from kcircuits.editing import analysis as ana
from kcircuits.editing import compare as cmp
from kcircuits.editing.evaluate import top1
from kcircuits.editing.session import copy_model

NEW = " London"


@pytest.fixture(scope="module")
def planted():
    torch.set_num_threads(1)
    return planted_copy_model()


def _rewrite_head(model, layer: int, head: int, token: str, gain: float = 50.0) -> None:
    """Head ``head`` of ``layer`` writes ``token``'s unembedding direction (its W_O rows)."""
    o = model.bridge.blocks[layer].attn.o._original_component
    dh = model.arch.d_model // model.arch.n_heads
    with torch.no_grad():
        o.weight[head * dh:(head + 1) * dh, :] = 0.0
        o.weight[head * dh, :] = model.bridge.W_U[:, model.first_token_id(token)] * gain


def test_first_top_block_closed_form():
    assert ana.first_top_block([50, 20, 9, 3], 10) == 1  # row 2 = after block 1
    assert ana.first_top_block([1, 1], 10) == -1  # already at the embeddings
    assert ana.first_top_block([50, 11, 12], 10) is None


def test_lens_ranks_match_the_model_at_the_last_block(planted):
    model = planted.model
    tid = model.first_token_id(planted.target)
    ranks, top = ana.lens_ranks(model, model.tokenize(planted.prompt), tid)
    assert ranks.shape == (model.arch.n_layers + 1,)
    with torch.no_grad():
        logits = model.bridge(model.tokenize(planted.prompt))[0, -1]
    assert top == int(logits.argmax())
    assert int(ranks[-1]) == int((logits > logits[tid]).sum()) + 1  # the last lens row is the model


def test_a_planted_mover_edit_is_found(planted):
    """The planted mover (last layer, reads the subject) rewritten to write NEW: the new target enters
    the lens top 10 after that block (offset 0 when the edited layer is that block), the mover
    switch names that head, and a side prompt's answer and movers are measured, not assumed."""
    base = planted.model
    edited = copy_model(base, "analysis")
    _rewrite_head(edited, planted.layer, planted.head, NEW)
    side = [{"prompt": planted.prompt, "subject": planted.subject, "kind": "same_subject"},
            {"prompt": planted.prompt, "subject": planted.subject, "kind": "unrelated"}]  # skipped: not a side kind
    out = compare_inline(base, edited, planted.prompt, planted.subject, NEW, planted.target, side_items=side,
                         layer=planted.layer, edit_method="rome")["analysis"]
    lens = out["lens"]
    n = base.arch.n_layers
    assert lens["ranks_pre"][:planted.layer + 1] == lens["ranks_post"][:planted.layer + 1]  # below the edit: same
    assert lens["ranks_post"][planted.layer + 1] <= 10 < min(lens["ranks_pre"])
    assert lens["first_top_block_post"] == planted.layer and lens["offset"] == 0 and lens["note"] is None
    assert lens["first_top_block_pre"] is None and len(lens["ranks_post"]) == n + 1
    assert out["mover"]["switched"] and [m["node"] for m in out["mover"]["heads"]] == [planted.head_id]
    assert NEW in out["mover"]["heads"][0]["top_post"]
    items = out["side_effects"]["items"]
    assert len(items) == 1 and items[0]["kind"] == "same_subject"
    new_id = base.first_token_id(NEW)
    assert items[0]["changed"] == (top1(base, planted.prompt) != top1(edited, planted.prompt))
    assert items[0]["became_new"] == (top1(edited, planted.prompt) == new_id)
    assert items[0]["mover_carries_new"] and items[0]["movers"] == [planted.head_id]
    summary = out["side_effects"]["summary"]
    assert summary["same_subject"]["n"] == 1 and summary["neighbour"] == {
        "n": 0, "changed_rate": None, "became_new_rate": None, "mover_carries_new_rate": None}


def test_an_unchanged_model_shows_nothing(planted):
    base = planted.model
    same = copy_model(base, "noop")
    out = compare_inline(base, same, planted.prompt, planted.subject, NEW, planted.target, edit_method="ft-m")["analysis"]
    assert not out["mover"]["switched"] and out["lens"]["ranks_pre"] == out["lens"]["ranks_post"]
    assert out["lens"]["offset"] is None and out["lens"]["note"]  # undefined, with the reason


def test_spellings_cover_case_and_space_but_not_single_letters(planted):
    model = planted.model
    ids = cmp.target_spellings(model, NEW, None)["new"]
    for variant in (" London", "London", " london", "london"):
        tid = model.first_token_id(variant)
        assert tid in ids or len(model.token_strings([tid])[0].strip()) <= 1
    assert all(len(model.token_strings([i])[0].strip()) > 1 for i in ids)
    assert set(cmp.spelling_variants(" Rome")) >= {" Rome", "Rome", " rome", "rome", " ROME"}


def test_generalisation_says_why_there_are_no_paraphrases(planted):
    from kcircuits.editing.evaluate import (
        evaluation,
        lre_relations,
        measure,
        plan_evaluation,
        relation_templates,
    )

    model = planted.model
    free = "Everyone who visits France says"  # no LRE template
    plan = plan_evaluation(model, free, "France", NEW)
    ev = evaluation(plan, measure(model, plan), measure(model, plan))
    assert ev["generalisation"]["rate"] is None and "no LRE template" in ev["generalisation"]["reason"]
    given = plan_evaluation(model, free, "France", NEW, paraphrases=["About France: the capital is"])
    ev = evaluation(given, measure(model, given), measure(model, given))
    assert ev["generalisation"]["rate"] is not None and ev["generalisation"]["reason"] is None
    # any subject in an LRE template gets that relation's other templates, and neighbours name their subject
    relation = next(r for r in lre_relations() if len(relation_templates(r)) > 1)
    prompt = relation_templates(relation)[0].format("Zorbania")
    lre = plan_evaluation(model, prompt, "Zorbania", NEW)
    assert lre.relation == relation["name"] and lre.paraphrases and lre.paraphrase_note is None
    neighbours = [it for it in lre.locality if it["kind"] == "neighbour"]
    assert neighbours and all(it["subject"] in it["prompt"] for it in neighbours)

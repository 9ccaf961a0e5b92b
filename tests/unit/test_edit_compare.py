"""The pre/post edit comparison on planted models: the fair circuit pair (one counterfactual,
one method, one size), the side states and edge-score diff, and the head-output diff."""

from __future__ import annotations

import pytest
import torch
from tests.unit.edit_support import compare_inline

from kcircuits.circuits import discover
from kcircuits.circuits.counterfactual import Candidate, CounterfactualChoice
from kcircuits.circuits.testing import planted_copy_model
from kcircuits.editing import compare as cmp
from kcircuits.editing.session import copy_model

NEW = " London"


@pytest.fixture(scope="module")
def planted():
    torch.set_num_threads(1)
    return planted_copy_model()


def _rewrite_head(model, layer: int, head: int, token: str, gain: float = 5.0) -> None:
    """Make head ``head`` of ``layer`` write ``token``'s unembedding direction (its W_O rows)."""
    o = model.bridge.blocks[layer].attn.o._original_component  # GPT-2 Conv1D [d (heads), d]
    dh = model.arch.d_model // model.arch.n_heads
    with torch.no_grad():
        o.weight[head * dh:(head + 1) * dh, :] = 0.0
        o.weight[head * dh, :] = model.bridge.W_U[:, model.first_token_id(token)] * gain


def test_one_changed_head_leads_and_the_rest_are_unchanged(planted):
    base = planted.model
    edited = copy_model(base, "one-head")
    _rewrite_head(edited, planted.layer, planted.head, NEW)  # the planted mover now writes " London"
    diff = compare_inline(base, edited, planted.prompt, planted.subject, NEW, planted.target)["heads"]
    rows = diff["rows"]
    assert len(rows) == base.arch.n_layers * base.arch.n_heads
    first = rows[0]
    assert first["node"] == planted.head_id and first["changed"]
    assert first["rel_change"] > diff_threshold(diff)
    assert all(not r["changed"] and r["change"] < 1e-5 for r in rows[1:])
    assert diff["n_changed"] == 1 and diff["n_unchanged"] == len(rows) - 1
    assert first["marks"]["new"] == "entered" and first["marks"]["old"] == "left"
    assert first["top"]["post"][0]["token"] == NEW
    assert first["dla"]["new"]["delta"] > 0 > first["dla"]["old"]["delta"]
    # it reads the subject (the planted key) and gains the new target: the mover pattern, alone
    assert first["subject_attention"]["post"] >= cmp.CompareThresholds().subject_attention
    assert first["mover"] and diff["movers"] == [planted.head_id]


def diff_threshold(diff: dict) -> float:
    return float(diff["rule"]["unchanged"].split("<")[1].split("x")[0])


def test_a_head_that_does_not_read_the_subject_is_no_mover(planted):
    base = planted.model
    other = (planted.head + 1) % base.arch.n_heads
    edited = copy_model(base, "other-head")
    _rewrite_head(edited, planted.layer, other, NEW)
    diff = compare_inline(base, edited, planted.prompt, planted.subject, NEW, planted.target)["heads"]
    first = diff["rows"][0]
    assert first["node"] == f"a{planted.layer}.h{other}" and first["marks"]["new"] == "entered"
    assert first["subject_attention"]["post"] < cmp.CompareThresholds().subject_attention
    assert not first["mover"] and diff["movers"] == []


def test_dla_delta_matches_the_closed_form(planted):
    """Change of the direct logit contribution = (out_post / s_post - out_pre / s_pre) . u_new (centred)."""
    from kcircuits.circuits.heads import readout_matrix

    base = planted.model
    edited = copy_model(base, "dla")
    _rewrite_head(edited, planted.layer, planted.head, NEW)
    positions = [planted.prompt.split().index(planted.subject) + 1]  # BOS, then one token per word
    targets = cmp.edit_targets(base, NEW, planted.target)
    pre = cmp.head_state(base, planted.prompt, positions, targets)
    post = cmp.head_state(edited, planted.prompt, positions, targets)

    def scale(model):
        _, cache = model.bridge.run_with_cache(model.tokenize(planted.prompt), names_filter=["ln_final.hook_scale"])
        return cache["ln_final.hook_scale"][0, -1].float()

    u = readout_matrix(base, torch.tensor([targets["new"]]), centre_vocab=True)[:, 0]
    layer, head = planted.layer, planted.head
    expected = float(post.out[layer, head] / scale(edited) @ u - pre.out[layer, head] / scale(base) @ u)
    diff = cmp.head_output_diff(base, pre, post, targets, [])
    row = next(r for r in diff["rows"] if r["node"] == planted.head_id)
    assert row["dla"]["new"]["delta"] == pytest.approx(expected, rel=1e-4, abs=1e-5)


def _candidate(prompt: str, subject: str, model, foil: str) -> Candidate:
    return Candidate(prompt, subject, None, model.first_token_id(foil), foil, 0.5, 0.01, 3.0, "other", None)


def test_both_sides_use_the_counterfactual_picked_on_the_base(planted, monkeypatch):
    """The picker (stubbed) answers differently on each call: the post side must not ask it again."""
    base = planted.model
    germany = planted.prompt.replace(" France", " Germany")
    calls = []

    def picker(model, prompt, subject, target_id, *, k=1, max_candidates=16):
        calls.append(model.revision)
        first = (_candidate(planted.corrupt_prompt, "Spain", model, " Madrid"),
                 _candidate(germany, "Germany", model, " Berlin"))
        chosen = first if len(calls) == 1 else first[::-1]
        return CounterfactualChoice(chosen, chosen, "aligned subjects", None, subject)

    monkeypatch.setattr(discover, "find_counterfactuals", picker)
    edited = copy_model(base, "fair")
    _rewrite_head(edited, planted.layer, planted.head, NEW)
    out = compare_inline(base, edited, planted.prompt, planted.subject, NEW, planted.target, circuits=True,
                         top_n=3)["circuit"]
    assert calls == [base.revision]  # picked once, on the base model
    pre, post = out["pre"], out["post"]
    assert out["counterfactual"]["corrupt_prompt"] == planted.corrupt_prompt
    assert pre["corrupt_prompt"] == post["corrupt_prompt"] == planted.corrupt_prompt
    assert pre["params"]["foil"] == post["params"]["foil"] == " Madrid"
    assert pre["method"] == post["method"] == discover.DEFAULT_METHOD == "eap-ig-refine"
    assert pre["params"]["top_n"] == post["params"]["top_n"] == 3
    assert pre["target"] == planted.target and post["target"] == NEW
    assert out["same_counterfactual"] is True
    # a foil equal to the new target is skipped: the picker's next candidate is used
    calls.clear()
    again = cmp.pick_counterfactual(base, planted.prompt, planted.target, planted.subject, avoid=[" Madrid"])
    assert again["corrupt_prompt"] == germany and again["foil"] == " Berlin" and "choice 2" in again["note"]


def test_empty_post_circuit_gives_the_empty_state_not_a_diff(planted):
    base = planted.model
    cf = {"ablation": "patch", "corrupt_prompt": planted.corrupt_prompt, "foil": " Madrid"}
    pre, err = cmp.circuit_side(base, planted.prompt, planted.target, planted.subject, cf, "eap", 3)
    assert err is None
    post, err = cmp.circuit_side(base, planted.prompt, planted.target, planted.subject, cf, "eap", 0)
    assert err is None and post["metrics"]["edges"] == 0
    out = cmp.compare_circuits(pre, post)
    assert out["sides"]["pre"]["usable"] and out["sides"]["pre"]["faithfulness"] >= 0.5
    assert not out["sides"]["post"]["usable"] and "empty" in out["sides"]["post"]["reason"]
    assert out["diff"] is None and not out["comparable"] and "post: the circuit is empty" in out["reason"]
    # a side that could not be computed at all says why
    none, err = cmp.circuit_side(base, planted.prompt, " Madrid", planted.subject, cf, "eap", 3)
    assert none is None and "foil" in err
    failed = cmp.compare_circuits(pre, none, errors={"post": err})
    assert failed["diff"] is None and "foil" in failed["sides"]["post"]["reason"]


def _circuit(edges: dict[str, tuple[float, bool]], faith: float | None = 0.9, undefined: str | None = None,
             curve: list[tuple[int, float | None]] = ()) -> dict:
    rows = [{"source": k.split("->")[0], "receiver": k.split("->")[1], "score": s, "in_circuit": inc}
            for k, (s, inc) in edges.items()]
    n = sum(inc for _, inc in edges.values())
    return {"edges": rows, "corrupt_prompt": "c", "ablation": "patch", "method": "eap-ig-refine",
            "params": {"foil": " x"},
            "metrics": {"edges": n, "faithfulness": faith, "faithfulness_undefined": undefined},
            "curve": {"points": [{"edges": e, "faithfulness": f} for e, f in curve]}}


def test_edge_diff_on_scores_with_stated_thresholds():
    pre = _circuit({"a->b": (1.0, True), "b->c": (0.5, True), "c->d": (0.2, True), "d->e": (-0.9, False)})
    post = _circuit({"a->b": (1.05, True), "b->c": (-0.5, True), "c->d": (0.35, True), "d->e": (-2.0, True)})
    th = cmp.CompareThresholds(reweight_rel=0.1)
    out = cmp.compare_circuits(pre, post, th)
    d = out["diff"]
    assert out["comparable"] and d["score_scale"] == 2.0 and d["reweight_threshold"] == pytest.approx(0.2)
    assert d["added"] == ["d->e"] and d["removed"] == [] and d["shared"] == 3
    assert [r["key"] for r in d["reweighted"]] == ["b->c"]  # |-1.0| > 0.2; 0.05 and 0.15 are not
    assert d["reweighted"][0]["delta"] == pytest.approx(-1.0) and "0.1" in d["rule"]
    loose = cmp.edge_diff(pre, post, cmp.CompareThresholds(reweight_rel=0.05))
    assert [r["key"] for r in loose["reweighted"]] == ["b->c", "c->d"]
    assert cmp.edge_diff(post, pre)["removed"] == ["d->e"]


def test_unfaithful_or_undefined_sides_say_so_and_offer_a_size():
    ok = _circuit({"a->b": (1.0, True)})
    weak = _circuit({"a->b": (1.0, True)}, faith=0.3, curve=[(1, 0.3), (5, 0.6), (20, 0.85)])
    status = cmp.side_status(weak)  # the default bar is 0.8
    assert not status["usable"] and "0.30 is below 0.8" in status["reason"] and status["grow_top_n"] == 20
    lax = cmp.side_status(weak, cmp.CompareThresholds(min_faithfulness=0.5))
    assert "0.30 is below 0.5" in lax["reason"] and lax["grow_top_n"] == 5
    undefined = cmp.side_status(_circuit({"a->b": (1.0, True)}, faith=None, undefined="no signal"))
    assert not undefined["usable"] and "undefined: no signal" in undefined["reason"]
    assert cmp.compare_circuits(ok, weak)["diff"] is None
    assert cmp.compare_circuits(ok, ok)["diff"] is not None
    other = {**ok, "corrupt_prompt": "another"}
    mixed = cmp.compare_circuits(ok, other)
    assert mixed["same_counterfactual"] is False and mixed["diff"] is None and "different" in mixed["reason"]


def test_a_target_counts_in_any_spelling(planted):
    """A head that comes to promote "London" (no space) gains the target " London"."""
    base = planted.model
    bare = "London"
    assert base.first_token_id(bare) != base.first_token_id(NEW)
    edited = copy_model(base, "spelling")
    _rewrite_head(edited, planted.layer, planted.head, bare)
    diff = compare_inline(base, edited, planted.prompt, planted.subject, NEW, planted.target)["heads"]
    first = diff["rows"][0]
    assert first["top"]["post"][0]["token"] == bare and first["marks"]["new"] == "entered" and first["mover"]
    targets = cmp.edit_targets(base, NEW, planted.target)
    positions = [4]
    pre = cmp.head_state(base, planted.prompt, positions, targets)
    post = cmp.head_state(edited, planted.prompt, positions, targets)
    exact = cmp.head_output_diff(base, pre, post, targets, [])  # without spellings: the exact token only
    assert next(r for r in exact["rows"] if r["node"] == planted.head_id)["marks"]["new"] == "absent"


def _sized(faith: float, curve: dict[int, float], top_n: int) -> dict:
    c = _circuit({"a->b": (1.0, True)}, faith=faith)
    c["params"]["top_n"] = top_n
    c["curve"] = {"points": [{"size": n, "edges": n, "faithfulness": f} for n, f in curve.items()]}
    return c


def test_an_unfaithful_side_moves_both_sides_to_the_first_size_where_both_hold(planted, monkeypatch):
    """Pre is unfaithful at the default size (10 here); the curves say both sides hold at 40 (not at
    20, where only post does): both circuits are recomputed at 40 with the one counterfactual."""
    from tests.unit.edit_support import compare_inline

    from kcircuits.services.edit_comparison import EditComparison

    curves = {"pre": {10: 0.3, 20: 0.6, 40: 0.9, 80: 1.0}, "post": {10: 0.95, 20: 0.9, 40: 0.85, 80: 1.0}}
    calls = []

    def fake_circuit(self, model, target, counterfactual, top_n):
        side = "post" if target == NEW else "pre"
        calls.append((side, top_n, counterfactual["corrupt_prompt"]))
        n = top_n or 10
        return {"circuit": {**_sized(curves[side][n], curves[side], n), "target": target}, "error": None}

    monkeypatch.setattr(EditComparison, "_circuit", fake_circuit)
    out = compare_inline(planted.model, copy_model(planted.model, "grow"), planted.prompt, planted.subject, NEW,
                         planted.target, circuits=True)["circuit"]
    cf = calls[0][2]
    assert calls == [("pre", None, cf), ("post", None, cf), ("pre", 40, cf), ("post", 40, cf)]
    assert out["comparable"] and out["sides"]["pre"]["faithfulness"] == 0.9 and out["diff"] is not None
    rule = out["size_rule"]
    assert rule["used"] == 40 and rule["grown_from"]["pre"]["faithfulness"] == 0.3 and "0.8" in rule["rule"]
    # a size the user gave is kept (the side offers a size instead), and faithful sides are not moved
    calls.clear()
    given = compare_inline(planted.model, copy_model(planted.model, "given"), planted.prompt, planted.subject, NEW,
                           planted.target, circuits=True, top_n=10)["circuit"]
    assert [c[1] for c in calls] == [10, 10] and not given["comparable"] and given["size_rule"]["used"] is None
    assert given["sides"]["pre"]["grow_top_n"] == 40

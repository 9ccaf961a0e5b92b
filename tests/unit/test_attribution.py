"""Attribution scores against oracles: exact patching, IG completeness, a planted circuit."""

from __future__ import annotations

import pytest
import torch

from kcircuits.circuits.attribution import EXACT_MAX_EDGES, ablated_outputs_for, attribute, method_alphas
from kcircuits.circuits.graph import get_graph
from kcircuits.circuits.metrics import make_metric
from kcircuits.circuits.patching import run_with_edge_ablation
from kcircuits.circuits.select import prune_dangling, select_top_n
from kcircuits.circuits.testing import planted_copy_model
from kcircuits.errors import BadRequest
from kcircuits.lm.registry import ArchFacts

CLEAN = "The Eiffel Tower is in the city of"
CORRUPT = "The Colosseum is in the city of"
#: Freezing the final norm's scale makes logits affine in the final residual (a model "without LN"
#: at the output): then a linear metric is linear in every edge into the logits.
FREEZE_FINAL_NORM = [("ln_final.hook_scale", lambda x, hook: torch.ones_like(x))]


@pytest.fixture(scope="module")
def planted():
    return planted_copy_model()


def _setup(model, ablation):
    g = get_graph(model.arch)
    tokens = model.tokenize(CLEAN)
    ablated = ablated_outputs_for(model, tokens, g, ablation, model.tokenize(CORRUPT))
    metric = make_metric("logit_diff", [model.first_token_id(" Paris")], foil_ids=[model.first_token_id(" Rome")])
    return g, tokens, ablated, metric


@pytest.mark.parametrize("model_name,ablation", [("tiny_gpt2", "patch"), ("tiny_gpt2", "zero"), ("tiny_gpt2", "mean"),
                                                  ("tiny_llama", "patch")])
def test_eap_equals_exact_on_edges_into_linear_logits(request, model_name, ablation):
    model = request.getfixturevalue(model_name)
    g, tokens, ablated, metric = _setup(model, ablation)
    eap = attribute(model, tokens, g, metric, ablated, "eap", extra_hooks=FREEZE_FINAL_NORM)
    exact = attribute(model, tokens, g, metric, ablated, "exact", extra_hooks=FREEZE_FINAL_NORM)
    col = g.receiver_index["logits"]
    scale = float(exact[:, col].abs().max())
    assert scale > 1e-4  # the oracle sees something (random weights: small effects)
    torch.testing.assert_close(eap[:, col], exact[:, col], atol=1e-3 * scale, rtol=1e-3)
    # elsewhere the model is non-linear and first order is only an estimate (the test above can fail)
    inner = g.allowed(eap.device).clone()
    inner[:, col] = False
    assert (eap - exact)[inner].abs().max() > 1e-2 * scale


def test_final_norm_nonlinearity_breaks_the_equality(tiny_gpt2):
    """Control: with the real final LayerNorm, EAP into logits is not exact."""
    g, tokens, ablated, metric = _setup(tiny_gpt2, "zero")
    col = g.receiver_index["logits"]
    eap = attribute(tiny_gpt2, tokens, g, metric, ablated, "eap")[:, col]
    exact = attribute(tiny_gpt2, tokens, g, metric, ablated, "exact")[:, col]
    assert (eap - exact).abs().max() > 0.05 * exact.abs().max()


def test_eap_ig_completeness(planted):
    """Sum of the input node's EAP-IG scores -> M(corrupted) - M(clean) as the step count grows."""
    model = planted.model
    g = get_graph(model.arch)
    tokens, corrupt = model.tokenize(planted.prompt), model.tokenize(planted.corrupt_prompt)
    ablated = ablated_outputs_for(model, tokens, g, "patch", corrupt)
    metric = make_metric("logit_diff", [model.first_token_id(planted.target)], foil_ids=[model.first_token_id(" Rome")])
    with torch.no_grad():
        want = float(metric(model.bridge(corrupt)) - metric(model.bridge(tokens)))
    errors = {}
    for steps in (1, 10, 60):
        scores = attribute(model, tokens, g, metric, ablated, "eap-ig", ig_steps=steps)
        errors[steps] = abs(float(scores[0].sum()) - want)
    assert abs(want) > 1.0
    assert errors[60] < errors[10] < errors[1]
    assert errors[60] < 0.01 * abs(want)
    # plain EAP (one gradient at the clean end) is far off on this saturated model
    eap = attribute(model, tokens, g, metric, ablated, "eap")
    assert abs(float(eap[0].sum()) - want) > 0.5 * abs(want)


@pytest.mark.parametrize("method,n", [("eap-ig", 3), ("eap", 4), ("clean-corrupted", 3), ("exact", 3)])
def test_planted_circuit_is_recovered(planted, method, n):
    model = planted.model
    g = get_graph(model.arch)
    tokens = model.tokenize(planted.prompt)
    ablated = ablated_outputs_for(model, tokens, g, "patch", model.tokenize(planted.corrupt_prompt))
    metric = make_metric("logit_diff", [model.first_token_id(planted.target)], foil_ids=[model.first_token_id(" Rome")])
    scores = attribute(model, tokens, g, metric, ablated, method)
    mask = prune_dangling(select_top_n(scores, g, n), g)
    found = {g.edge_id(int(s), int(r)) for s, r in torch.nonzero(mask)}
    assert found == set(planted.edge_ids)
    with torch.no_grad():
        logits = run_with_edge_ablation(model, tokens, g, mask, ablated)
    assert int(logits[0, -1].argmax()) == model.first_token_id(planted.target)


def test_alphas_and_validation(tiny_gpt2):
    assert method_alphas("eap") == [1.0]
    assert method_alphas("eap-ig", 4) == [0.125, 0.375, 0.625, 0.875]
    assert method_alphas("clean-corrupted") == [0.0, 1.0]
    g, tokens, ablated, metric = _setup(tiny_gpt2, "zero")
    with pytest.raises(BadRequest):
        attribute(tiny_gpt2, tokens, g, metric, ablated, "magic")
    big = get_graph(ArchFacts(12, 12, 12, 64, 256, 100, "gpt2"))
    assert big.n_edges > EXACT_MAX_EDGES
    with pytest.raises(BadRequest, match="exact"):
        attribute(tiny_gpt2, tokens, big, metric, ablated, "exact")
    with pytest.raises(BadRequest, match="corrupted prompt"):
        ablated_outputs_for(tiny_gpt2, tokens, g, "patch", None)


def test_scores_vanish_off_allowed_edges_and_on_identical_corruption(tiny_llama):
    g, tokens, _, metric = _setup(tiny_llama, "zero")
    same = ablated_outputs_for(tiny_llama, tokens, g, "patch", tokens)  # corrupted = clean
    scores = attribute(tiny_llama, tokens, g, metric, same, "eap-ig")
    assert scores.abs().max() == 0
    zero = ablated_outputs_for(tiny_llama, tokens, g, "zero")
    scores = attribute(tiny_llama, tokens, g, metric, zero, "eap")
    assert scores[~g.allowed(scores.device)].abs().max() == 0
    assert scores.abs().max() > 0


def _keep_gradient_oracle(model, tokens, g, metric, ablated, keep):
    """-dM/d(keep) at the float keep mask ``keep`` [n_s, n_r], by autograd through the patching
    machinery (the slow, general path): the first-order effect of ablating each edge there."""
    w = keep.clone().requires_grad_(True)
    metric(run_with_edge_ablation(model, tokens, g, w, ablated)).backward()
    return -w.grad.float()


@pytest.mark.parametrize("model_name,ablation", [("tiny_gpt2", "patch"), ("tiny_gpt2", "zero"),
                                                  ("tiny_llama", "patch"), ("tiny_llama", "mean")])
def test_eap_ig_mask_equals_the_autograd_oracle(request, model_name, ablation):
    """eap-ig-mask = the average over the path points of -dM/d(keep), along the uniform path and
    along the path to a sparse circuit (edges of the circuit only)."""
    from kcircuits.circuits.attribution import mask_ig_scores

    model = request.getfixturevalue(model_name)
    g, tokens, ablated, metric = _setup(model, ablation)
    circuit = (torch.rand(g.n_senders, g.n_receivers, generator=torch.Generator().manual_seed(1)) < 0.3)
    circuit &= g.allowed("cpu")
    steps = 3
    for base in (None, circuit):
        got = mask_ig_scores(model, tokens, g, metric, ablated, steps, base=base)
        keep = g.full_mask().float() if base is None else base.float()
        want = sum(_keep_gradient_oracle(model, tokens, g, metric, ablated, keep * (k + 0.5) / steps)
                   for k in range(steps)) / steps
        edges = keep.bool()
        scale = float(want[edges].abs().max())
        assert scale > 1e-6
        torch.testing.assert_close(got[edges], want[edges], atol=1e-4 * scale, rtol=1e-3)


def test_eap_ig_mask_scores_outside_the_circuit_are_the_value_of_adding_an_edge(tiny_llama):
    """For an edge outside the base circuit the score is -dM/d(keep) there too: checked against a
    central finite difference of the keep weight of that one edge."""
    from kcircuits.circuits.attribution import mask_ig_scores

    g, tokens, ablated, metric = _setup(tiny_llama, "patch")
    circuit = g.full_mask().clone()
    circuit[:, g.receiver_index["logits"]] = False  # nothing reaches the logits directly...
    circuit[0, g.receiver_index["logits"]] = True  # ...but the input
    s, r = g.node_index["a1.h2"], g.receiver_index["logits"]
    got = float(mask_ig_scores(tiny_llama, tokens, g, metric, ablated, 1, base=circuit)[s, r])
    eps = 1e-2

    def at(extra: float) -> float:
        keep = circuit.double() * 0.5
        keep[s, r] = extra
        with torch.no_grad():
            return float(metric(run_with_edge_ablation(tiny_llama, tokens, g, keep.float(), ablated)))

    want = -(at(eps) - at(-eps)) / (2 * eps)
    assert abs(want) > 1e-4
    assert got == pytest.approx(want, rel=2e-2)


def test_eap_ig_mask_completeness_under_patching(planted):
    """Under patching the path from the empty to the full circuit is smooth: the scores sum to
    M(empty circuit) - M(full circuit), ever closer as the steps grow."""
    from kcircuits.circuits.attribution import mask_ig_scores

    model = planted.model
    g = get_graph(model.arch)
    tokens, corrupt = model.tokenize(planted.prompt), model.tokenize(planted.corrupt_prompt)
    ablated = ablated_outputs_for(model, tokens, g, "patch", corrupt)
    metric = make_metric("logit_diff", [model.first_token_id(planted.target)], foil_ids=[model.first_token_id(" Rome")])
    with torch.no_grad():
        full = float(metric(run_with_edge_ablation(model, tokens, g, g.full_mask(), ablated)))
        empty = float(metric(run_with_edge_ablation(model, tokens, g, g.empty_mask(), ablated)))
    want = empty - full
    errors = {steps: abs(float(mask_ig_scores(model, tokens, g, metric, ablated, steps).sum()) - want)
              for steps in (1, 8, 40)}
    assert abs(want) > 1.0
    assert errors[40] < errors[8] < errors[1]
    assert errors[40] < 0.02 * abs(want)


def test_frozen_norms_restore_completeness_under_zero_ablation(planted):
    """Under zero ablation the uniform mask path scales every input of a pre-norm receiver, which
    the norm undoes: the plain path misses almost all of M(empty) - M(full). With the norm scales
    frozen where the path's upper end runs, the ends stay exact and the scores sum to it, for the
    full model and for a sub-circuit (``base``: M(empty) - M(base))."""
    from kcircuits.circuits.attribution import mask_ig_scores

    model = planted.model
    g = get_graph(model.arch)
    tokens = model.tokenize(planted.prompt)
    ablated = ablated_outputs_for(model, tokens, g, "zero")
    metric = make_metric("match_nll", [model.first_token_id(planted.target)],
                         clean_logits=model.logits(tokens).detach())
    base = torch.zeros(g.n_senders, g.n_receivers, dtype=torch.bool)
    for edge in planted.edge_ids:
        sender, receiver = edge.split("->")
        base[g.node_index[sender], g.receiver_index[receiver]] = True
    base |= g.full_mask() & (torch.rand(base.shape, generator=torch.Generator().manual_seed(0)) < 0.5)
    with torch.no_grad():
        runs = {name: float(metric(run_with_edge_ablation(model, tokens, g, mask, ablated)))
                for name, mask in (("full", g.full_mask()), ("base", base), ("empty", g.empty_mask()))}
    want_full, want_base = runs["empty"] - runs["full"], runs["empty"] - runs["base"]
    assert want_full > 5.0 and want_base > 5.0
    plain = float(mask_ig_scores(model, tokens, g, metric, ablated, 8).sum())
    frozen = float(mask_ig_scores(model, tokens, g, metric, ablated, 8, freeze_norms=True).sum())
    frozen_base = mask_ig_scores(model, tokens, g, metric, ablated, 8, base=base, freeze_norms=True)
    assert abs(plain) < 0.5 * want_full  # the defect this fixes
    assert frozen == pytest.approx(want_full, rel=0.05)
    assert float(frozen_base[base].sum()) == pytest.approx(want_base, rel=0.05)

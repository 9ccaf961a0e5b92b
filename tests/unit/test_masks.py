"""Parameter masks against oracles: a planted lookup model whose task uses only known parameter
blocks, the hard-concrete closed form, edits that stay inside their mask, overlap identities."""

from __future__ import annotations

import pytest
import torch

from kcircuits.circuits import masks as M
from kcircuits.errors import BadRequest, Cancelled

PAIRS = [(" France", " Paris"), (" Spain", " Madrid"), (" Italy", " Rome"), (" Japan", " Tokyo")]


def _offsets(lay: M.BlockLayout) -> dict[str, int]:
    out, at = {}, 0
    for name, size in zip(lay.names, lay.sizes, strict=False):
        out[M.short_name(name)] = at
        at += size
    return out


def planted_lookup(seed: int = 0) -> dict:
    """A tiny Llama whose task runs through four planted MLP neurons of the last layer. Every
    attention output is zero (o_proj = 0) and every down_proj is zero but the planted neurons'.
    Subject token t_i's embedding row is ``8 * e_i`` (other rows ~0); neuron i of layer 1 reads
    dim i (gate and up rows ``e_i``) and writes dim 8 + i (down_proj[8 + i, i]); the unembedding
    row of answer a_i is ``2.4 * e_{8+i}`` (other rows ~0). So the answer needs the neuron: the
    embedding alone gives a_i no logit.
    Known blocks (gated): gate and up rows 0..3 and down rows 8..11 of layer 1, entries 0..3 of its
    post-attention norm, final-norm entries 8..11. Irrelevant: every attention block, layer 0's
    MLP and norms, and layer 1's other neurons' rows and other down rows (their output is exactly
    zero whatever the mask). The embedding and unembedding are outside the mask."""
    from kcircuits.lm.random_models import random_model

    torch.manual_seed(seed)
    model = random_model("llama", n_layers=2, n_heads=4, d_model=64, model_id=f"planted-lookup-{seed}")
    params = dict(model.bridge.named_parameters())
    tok = model.tokenizer
    subj = [tok(s)["input_ids"][-1] for s, _ in PAIRS]
    ans = [tok(a)["input_ids"][0] for _, a in PAIRS]

    def named(*parts: str) -> str:
        return next(n for n in params if all(p in n for p in parts))

    gate, up, down = (named("layers.1.", f"{k}_proj") for k in ("gate", "up", "down"))
    post_norm, final_norm = named("layers.1.", "post_attention_layernorm"), named("model.norm")
    n = len(PAIRS)
    with torch.no_grad():
        for name, p in params.items():
            if name.endswith(("o_proj._original_component.weight", "down_proj._original_component.weight")):
                p.zero_()
        emb, head = params[named("embed_tokens")], params[named("lm_head")]
        emb.mul_(0.01)
        head.mul_(0.01)
        for i, (s, a) in enumerate(zip(subj, ans, strict=True)):
            emb[s] = 0.0
            emb[s, i] = 8.0
            head[a] = 0.0
            head[a, 8 + i] = 2.4  # answer logit ~12: confident, not saturated (p = 1.0 in fp32 has no gradient)
            params[gate][i] = 0.0
            params[gate][i, i] = 1.0
            params[up][i] = 0.0
            params[up][i, i] = 1.0
            params[down][8 + i, i] = 0.1
        params[post_norm][:n] = 1.0
        params[final_norm][8:8 + n] = 1.0
    lay = M.layout(model.bridge)
    off = _offsets(lay)
    s = M.short_name
    known = ([off[s(gate)] + i for i in range(n)] + [off[s(up)] + i for i in range(n)]
             + [off[s(down)] + 8 + i for i in range(n)] + [off[s(post_norm)] + i for i in range(n)]
             + [off[s(final_norm)] + 8 + i for i in range(n)])
    irrelevant = []
    for name, size in zip(lay.names, lay.sizes, strict=True):
        if ".layers." not in name:
            continue
        rows = range(off[s(name)], off[s(name)] + size)
        if name in (gate, up):
            rows = rows[n:]
        elif name == down:
            rows = [r for r in rows if not 8 <= r - off[s(name)] < 8 + n]
        elif name == post_norm:
            rows = rows[n:]
        irrelevant += rows
    prompts = [f"My favourite country is{c}" for c, _ in PAIRS]
    task = M.make_task(model, "lookup", prompts, [a for _, a in PAIRS])
    known_params = sum(lay.weights()[known])
    return {"model": model, "task": task, "known": torch.tensor(known), "irrelevant": torch.tensor(irrelevant),
            "target": float(1.2 * known_params / lay.n_params), "neurons": torch.tensor(known[:2 * n])}


@pytest.fixture(scope="module")
def lookup():
    return planted_lookup()


def test_planted_model_answers_through_known_blocks(lookup):
    model, task = lookup["model"], lookup["task"]
    lay = M.layout(model.bridge)
    full = M.evaluate_mask(model, task, torch.ones(lay.n_gates, dtype=torch.bool), lay)
    assert full["full_accuracy"] == 1.0 and full["kl"] == pytest.approx(0.0, abs=1e-6)
    only = torch.zeros(lay.n_gates, dtype=torch.bool)
    only[lookup["known"]] = True
    assert M.evaluate_mask(model, task, only, lay)["accuracy"] == 1.0
    drop = torch.ones(lay.n_gates, dtype=torch.bool)
    drop[lookup["neurons"]] = False  # the planted neurons' gate and up rows: the embedding alone does not answer
    assert M.evaluate_mask(model, task, drop, lay)["accuracy"] < 0.5


@pytest.mark.parametrize("warm_start", ["none", "taylor"])
def test_low_density_mask_keeps_known_blocks_and_drops_the_rest(lookup, warm_start):
    model, task = lookup["model"], lookup["task"]
    lay = M.layout(model.bridge)
    res = M.train_mask(model, task, M.MaskParams(target=lookup["target"], steps=80, lr=0.2, loss="ce",
                                                 warm_start=warm_start))
    mask, la = res["mask"], res["log_alpha"]
    assert M.density(mask, lay) <= lookup["target"] + 0.5 / lay.n_params  # final_mask rounds to half a parameter
    assert bool(mask[lookup["known"]].all())
    assert float(la[lookup["known"]].min()) > float(la[lookup["irrelevant"]].max())
    w = lay.weights()[lookup["irrelevant"]]
    assert float((mask[lookup["irrelevant"]].float() * w).sum() / w.sum()) < 0.01  # in parameters
    assert M.evaluate_mask(model, task, mask, lay)["accuracy"] == 1.0


def test_warm_start_opens_the_planted_blocks_before_any_step(lookup):
    """The Taylor importance ranks every planted block above every irrelevant one (the latter are
    exactly 0: closing them changes nothing), so the warm start's open set at the target density
    holds the planted blocks."""
    model, task = lookup["model"], lookup["task"]
    lay = M.layout(model.bridge)
    w = lay.weights()
    importance = M.taylor_importance(model, task, lay, M.full_logprobs(model, task))
    per_param = importance / w
    assert float(per_param[lookup["known"]].min()) > float(per_param[lookup["irrelevant"]].max())
    exact = float(w[lookup["known"]].sum() / w.sum())  # room for the planted blocks only
    keep = M.taylor_prune(model, task, lay, M.full_logprobs(model, task), exact, rounds=4)
    init = M.warm_start_log_alpha(keep, w, 3.0)
    assert bool((init[lookup["known"]] == 3.0).all())
    assert bool((init[lookup["irrelevant"]] < 0).all()) and int((init > 0).sum()) == len(lookup["known"])
    assert 0.9 * exact < float(M.expected_density(init, w)) <= exact  # the density penalty starts off
    assert M.evaluate_mask(model, task, init > 0, lay)["accuracy"] == 1.0
    # at the test's target (20% room to spare) the planted blocks are open too
    assert bool(M.taylor_prune(model, task, lay, M.full_logprobs(model, task), lookup["target"], 4)[lookup["known"]].all())


def test_prune_rounds_cut_about_the_rate_per_round():
    for target in (0.05, 0.15, 0.5, 0.9):
        for rate in (0.1, 0.16, 0.5):
            n = M.prune_rounds(target, rate)
            per_round = 1 - target ** (1 / n)  # the share each geometric round cuts
            assert per_round <= rate + 1e-12 and (n == 1 or 1 - target ** (1 / (n - 1)) > rate)


def test_the_embedding_is_never_gated_and_density_counts_gated_parameters(lookup):
    model = lookup["model"]
    lay = M.layout(model.bridge)
    params = dict(model.bridge.named_parameters())
    embedding = [n for n in params if M.module_kind(n) == "embedding"]
    assert len(embedding) == 2 and sorted(lay.kept_names) == sorted(embedding)
    assert not set(embedding) & set(lay.names) and set(lay.names) | set(embedding) == set(params)
    n_gated = sum(params[n].numel() for n in lay.names)
    assert lay.n_params == n_gated and float(lay.weights().sum()) == n_gated
    half = M.random_mask(lay, 0.5, seed=0)
    inside = sum(float((g.float() * per).sum()) for g, per in zip(lay.split(half.float()), lay.per_gate, strict=True))
    assert M.density(half, lay) == pytest.approx(inside / n_gated) == pytest.approx(0.5, abs=1e-3)
    closed = torch.zeros(lay.n_gates, dtype=torch.bool)
    assert set(M.masked_params(model, lay, closed.float())) == set(lay.names)  # the embedding is not substituted
    comp = M.composition(half, lay)
    assert comp["embedding"] == {"share_inside": 1.0, "share_of_mask": None, "always_kept": True,
                                 "n_params": sum(params[n].numel() for n in embedding)}
    assert sum(v["share_of_mask"] for k, v in comp.items() if k != "embedding") == pytest.approx(1.0)
    # a trained mask at the density target: its density is over the gated parameters only
    res = M.train_mask(model, lookup["task"], M.MaskParams(target=0.3, steps=2, lr=0.2))
    assert M.density(res["mask"], lay) == pytest.approx(0.3, abs=0.01) and res["mask"].shape == (lay.n_gates,)


def test_hard_concrete_density_matches_closed_form():
    torch.manual_seed(0)
    log_alpha = torch.tensor([-3.0, -1.0, 0.0, 0.5, 2.0, 4.0])
    z = M.hard_concrete(log_alpha.expand(200_000, -1))
    empirical = (z > 0).float().mean(0)
    torch.testing.assert_close(empirical, M.p_open(log_alpha), atol=4e-3, rtol=0)
    assert float(z.min()) >= 0.0 and float(z.max()) <= 1.0
    # the straight-through gate is binary forward and passes the gradient of z
    la = log_alpha.clone().requires_grad_(True)
    g = M.straight_through(M.hard_concrete(la, torch.full_like(la, 0.5)))
    assert set(g.detach().tolist()) <= {0.0, 1.0}
    g.sum().backward()
    assert la.grad is not None and float(la.grad.abs().sum()) > 0


def test_edit_changes_no_parameter_outside_the_mask(tiny_llama):
    lay = M.layout(tiny_llama.bridge)
    mask = M.random_mask(lay, 0.2, seed=1)
    before = {n: p.detach().clone() for n, p in tiny_llama.bridge.named_parameters()}
    res = M.edit_under_mask(tiny_llama, "The Eiffel Tower is in", " Rome", mask, lay, steps=3, lr=1e-2)
    assert res["nll_post"] < res["nll_pre"]
    changed = torch.zeros(lay.n_gates, dtype=torch.bool)
    parts = []
    for name, shape, _g in zip(lay.names, lay.shapes, lay.split(changed), strict=False):
        diff = (res["params"][name] - before[name]).abs()
        rows = diff.reshape(shape[0], -1).amax(1) > 0 if len(shape) >= 2 else diff > 0
        parts.append(rows)
    changed = torch.cat(parts)
    assert bool(changed.any())
    assert not bool((changed & ~mask).any())
    for name, p in tiny_llama.bridge.named_parameters():  # the loaded model is untouched
        assert torch.equal(p, before[name])


def test_overlap_self_is_one_and_random_about_density(tiny_llama):
    """Random masks overlap at their density on average (the tiny model's ~1,900 gated rows make
    one pair's overlap vary by about 0.015, so the mean over 8 pairs is compared)."""
    lay = M.layout(tiny_llama.bridge)
    for d in (0.05, 0.25, 0.5):
        a = M.random_mask(lay, d, seed=0)
        assert M.overlap(a, a, lay) == 1.0
        pairs = [M.overlap(M.random_mask(lay, d, seed=2 * k), M.random_mask(lay, d, seed=2 * k + 1), lay) for k in range(8)]
        assert sum(pairs) / len(pairs) == pytest.approx(d, abs=0.015)
        assert M.density(a, lay) == pytest.approx(d, abs=2e-3)
    assert M.overlap(torch.zeros(lay.n_gates, dtype=torch.bool), a, lay) is None


def test_pack_roundtrip_and_composition(tiny_llama):
    lay = M.layout(tiny_llama.bridge)
    mask = M.random_mask(lay, 0.15, seed=3)
    assert torch.equal(M.unpack_mask(M.pack_mask(mask), lay.n_gates), mask)
    comp = M.composition(mask, lay)
    assert sum(v["share_of_mask"] for v in comp.values() if not v["always_kept"]) == pytest.approx(1.0)
    assert comp["embedding"]["always_kept"] and comp["embedding"]["share_inside"] == 1.0
    assert set(comp) <= set(M.MODULES) and {"embedding", "attention", "mlp", "layernorm"} <= set(comp)
    with pytest.raises(BadRequest):
        M.unpack_mask(M.pack_mask(mask), lay.n_gates + 64)


def test_checkpoint_resume_matches_uninterrupted(tiny_llama, tmp_path):
    task = M.make_task(tiny_llama, "t", ["The capital of France is", "The Eiffel Tower is in"], [" Paris", " Paris"])
    params = M.MaskParams(target=0.25, steps=6, lr=0.2)
    whole = M.train_mask(tiny_llama, task, params, eval_every=3)
    ck = str(tmp_path / "ck.pt")
    calls = {"n": 0}

    def cancel():
        calls["n"] += 1
        if calls["n"] > 3:
            raise Cancelled()
    with pytest.raises(Cancelled):
        M.train_mask(tiny_llama, task, params, checkpoint=ck, cancel=cancel, eval_every=3)
    resumed = M.train_mask(tiny_llama, task, params, checkpoint=ck, eval_every=3)
    assert resumed["steps_run"] == 3
    torch.testing.assert_close(resumed["log_alpha"], whole["log_alpha"])
    assert resumed["curves"] == whole["curves"]


def test_gpt2_is_refused(tiny_gpt2):
    task = M.make_task(tiny_gpt2, "t", ["The capital of France is"], [" Paris"])
    with pytest.raises(BadRequest):
        M.train_mask(tiny_gpt2, task, M.MaskParams(steps=1))


class _NanGrad(torch.autograd.Function):
    """Identity forward, NaN gradient backward (what the bridge's attention backward can return when
    a prompt's first position is masked to an all-zero residual)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return torch.full_like(grad, float("nan"))


@pytest.mark.parametrize("warm_start", ["none", "taylor"])
def test_a_nan_gradient_step_does_not_poison_the_gates(tiny_llama, monkeypatch, warm_start):
    """The first backward gets NaN: with warm_start "none" that is training step 1 (counted and
    skipped), with "taylor" the warm start's first pruning round (its NaN scores count 0)."""
    task = M.make_task(tiny_llama, "t", ["The capital of France is", "The Eiffel Tower is in"], [" Paris", " Paris"])
    real, calls = M.run_with, {"n": 0}

    def run_with(model, params, tokens):
        out = real(model, params, tokens)
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == 1:
                return _NanGrad.apply(out)
        return out
    monkeypatch.setattr(M, "run_with", run_with)
    res = M.train_mask(tiny_llama, task, M.MaskParams(target=0.25, steps=6, lr=0.2, warm_start=warm_start),
                       eval_every=3)
    assert bool(torch.isfinite(res["log_alpha"]).all())
    assert res["nonfinite_grad_steps"] == (1 if warm_start == "none" else 0)
    assert all(v == v for v in res["curves"]["loss"] + res["curves"]["density"])  # no NaN
    assert float(res["log_alpha"].std()) > 0  # the later, finite steps still trained the gates

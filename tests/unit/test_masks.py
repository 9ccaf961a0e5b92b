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
    """A tiny Llama whose attention and MLP outputs are zero (o_proj, down_proj = 0), so the answer
    is read off the last token's embedding: token t_i's embedding row is ``8 * e_i`` (+ tiny noise)
    and the unembedding row of answer a_i is ``6 * e_i``; every other unembedding row is ~0.
    Known blocks: embedding rows t_i, unembedding rows a_i, final-norm entries i. Irrelevant:
    every layer block (their output is exactly zero whatever the mask)."""
    from kcircuits.lm.random_models import random_model

    torch.manual_seed(seed)
    model = random_model("llama", n_layers=2, n_heads=4, d_model=64, model_id=f"planted-lookup-{seed}")
    hf = model.bridge.original_model
    params = dict(model.bridge.named_parameters())
    tok = model.tokenizer
    subj = [tok(s)["input_ids"][-1] for s, _ in PAIRS]
    ans = [tok(a)["input_ids"][0] for _, a in PAIRS]
    with torch.no_grad():
        for name, p in params.items():
            if name.endswith(("o_proj._original_component.weight", "down_proj._original_component.weight")):
                p.zero_()
        emb = params[next(n for n in params if "embed_tokens" in n)]
        head = params[next(n for n in params if "lm_head" in n)]
        emb.mul_(0.01)
        head.mul_(0.01)
        for i, (s, a) in enumerate(zip(subj, ans, strict=False)):
            emb[s] = 0.0
            emb[s, i] = 8.0
            head[a] = 0.0
            head[a, i] = 6.0
    del hf
    lay = M.layout(model.bridge)
    off = _offsets(lay)
    e_name = M.short_name(next(n for n in params if "embed_tokens" in n))
    h_name = M.short_name(next(n for n in params if "lm_head" in n))
    n_name = M.short_name(next(n for n in params if n.startswith("model.norm")))
    known = [off[e_name] + s for s in subj] + [off[h_name] + a for a in ans] + [off[n_name] + i for i in range(len(PAIRS))]
    irrelevant = []
    for name, size in zip(lay.names, lay.sizes, strict=False):
        if ".layers." in name:
            irrelevant += range(off[M.short_name(name)], off[M.short_name(name)] + size)
    prompts = [f"My favourite country is{s}" for s, _ in PAIRS]
    task = M.make_task(model, "lookup", prompts, [a for _, a in PAIRS])
    known_params = sum(lay.weights()[known])
    return {"model": model, "task": task, "known": torch.tensor(known), "irrelevant": torch.tensor(irrelevant),
            "target": float(1.2 * known_params / lay.n_params)}


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
    drop[lookup["known"][:len(PAIRS)]] = False  # the subject embeddings
    assert M.evaluate_mask(model, task, drop, lay)["accuracy"] < 0.5


def test_low_density_mask_keeps_known_blocks_and_drops_the_rest(lookup):
    model, task = lookup["model"], lookup["task"]
    lay = M.layout(model.bridge)
    res = M.train_mask(model, task, M.MaskParams(target=lookup["target"], steps=80, lr=0.2, loss="ce"))
    mask, la = res["mask"], res["log_alpha"]
    assert M.density(mask, lay) <= lookup["target"] + 1e-6
    assert bool(mask[lookup["known"]].all())
    assert float(la[lookup["known"]].min()) > float(la[lookup["irrelevant"]].max())
    w = lay.weights()[lookup["irrelevant"]]
    assert float((mask[lookup["irrelevant"]].float() * w).sum() / w.sum()) < 0.01  # in parameters
    assert M.evaluate_mask(model, task, mask, lay)["accuracy"] == 1.0


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
    lay = M.layout(tiny_llama.bridge)
    for d in (0.05, 0.25, 0.5):
        a, b = M.random_mask(lay, d, seed=0), M.random_mask(lay, d, seed=1)
        assert M.overlap(a, a, lay) == 1.0
        assert M.overlap(a, b, lay) == pytest.approx(d, abs=0.03)
        assert M.density(a, lay) == pytest.approx(d, abs=1e-3)
    assert M.overlap(torch.zeros(lay.n_gates, dtype=torch.bool), a, lay) is None


def test_pack_roundtrip_and_composition(tiny_llama):
    lay = M.layout(tiny_llama.bridge)
    mask = M.random_mask(lay, 0.15, seed=3)
    assert torch.equal(M.unpack_mask(M.pack_mask(mask), lay.n_gates), mask)
    comp = M.composition(mask, lay)
    assert sum(v["share_of_mask"] for v in comp.values()) == pytest.approx(1.0)
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


def test_a_nan_gradient_step_does_not_poison_the_gates(tiny_llama, monkeypatch):
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
    res = M.train_mask(tiny_llama, task, M.MaskParams(target=0.25, steps=6, lr=0.2), eval_every=3)
    assert bool(torch.isfinite(res["log_alpha"]).all())
    assert res["nonfinite_grad_steps"] == 1
    assert all(v == v for v in res["curves"]["loss"] + res["curves"]["density"])  # no NaN
    assert float(res["log_alpha"].std()) > 0  # the later, finite steps still trained the gates

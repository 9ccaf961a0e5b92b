"""Edit sessions: the base model is never modified, sessions are isolated, closing/expiry frees them."""

from __future__ import annotations

import time

import pytest
import torch

from kcircuits.config import Settings
from kcircuits.editing.rome import mlp_out
from kcircuits.editing.session import EditRequest, SessionManager, resolve_model_key
from kcircuits.errors import Busy, NotFound, NotReady
from kcircuits.lm.worker import ModelWorker

PROMPT = "The Eiffel Tower is located in the city of"
FIXED = "The capital of France is"
FAST_ROME = {"n_prefixes": 2, "prefix_len": 4, "cov_tokens": 128}


@pytest.fixture
def manager(tmp_path, tiny_gpt2, tiny_llama):
    settings = Settings(test_models=True, cache_dir=tmp_path, device="cpu", max_edit_sessions=3,
                        edit_session_ttl_s=600)
    worker = ModelWorker(settings).start()
    worker.register("tiny-gpt2", tiny_gpt2, pinned=True)
    worker.register("tiny-llama", tiny_llama, pinned=True)
    yield SessionManager(worker, settings)
    worker.stop()


def _logits(worker, key, prompt=FIXED):
    return worker.run(key, lambda m: m.bridge(m.tokenize(prompt)).detach().clone())


def _weight(worker, key, layer):
    return worker.run(key, lambda m: mlp_out(m, layer).weight.detach().clone())


def _edit(manager, model, method, layer, target, params=None):
    session = manager.create(EditRequest(model=model, method=method, prompt=PROMPT, subject="Eiffel Tower",
                                         target=target, layer=layer, params=params or {}))
    manager.run_edit(session)
    assert session.status == "ready"
    return session


@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-llama"])
def test_base_bit_identical_and_sessions_isolated(manager, model):
    worker = manager.worker
    base_logits = _logits(worker, model)
    base_w0, base_w1 = _weight(worker, model, 0), _weight(worker, model, 1)
    a = _edit(manager, model, "ft-m", 1, " Rome", {"lr": 1e-2, "norm_constraint": 1e-2, "steps": 5})
    b = _edit(manager, model, "rome", 0, " London", FAST_ROME)
    assert torch.equal(_logits(worker, model), base_logits)  # base untouched, bit for bit
    assert torch.equal(_weight(worker, model, 0), base_w0) and torch.equal(_weight(worker, model, 1), base_w1)
    # A changed only layer 1, B only layer 0: neither sees the other's edit
    assert not torch.equal(_weight(worker, a.key, 1), base_w1)
    assert torch.equal(_weight(worker, a.key, 0), base_w0)
    assert not torch.equal(_weight(worker, b.key, 0), base_w0)
    assert torch.equal(_weight(worker, b.key, 1), base_w1)
    la, lb = _logits(worker, a.key), _logits(worker, b.key)
    assert not torch.equal(la, base_logits) and not torch.equal(lb, base_logits) and not torch.equal(la, lb)
    # evaluation recorded, old target = base top-1
    ev = b.evaluation
    assert set(ev) == {"efficacy", "generalisation", "locality", "prob_shift"}
    assert ev["prob_shift"]["new"]["post"] == pytest.approx(ev["efficacy"]["new_prob"])
    assert b.summary()["covariance"].startswith("generated")
    old = worker.run(model, lambda m: int(m.bridge(m.tokenize(PROMPT))[0, -1].argmax()))
    assert b.old_target == worker.run(model, lambda m: m.tokenizer.decode([old]))
    # closing frees the copy; the base is still identical after more sessions
    for _ in range(2):
        manager.close(_edit(manager, model, "ft-l", 1, " Berlin").session_id)
    manager.close(a.session_id)
    assert not worker.is_loaded(a.key) and worker.is_loaded(b.key)
    with pytest.raises(NotFound):
        resolve_model_key(manager, model, a.session_id)
    assert torch.equal(_logits(worker, model), base_logits)


def test_resolve_capacity_and_expiry(manager):
    assert resolve_model_key(manager, "tiny-gpt2", None) == "tiny-gpt2"
    with pytest.raises(NotFound):
        resolve_model_key(manager, "tiny-gpt2", "nope")
    pending = manager.create(EditRequest("tiny-gpt2", "ft-m", PROMPT, "Eiffel Tower", " Rome"))
    with pytest.raises(NotReady):
        resolve_model_key(manager, None, pending.session_id)
    manager.create(EditRequest("tiny-gpt2", "ft-m", PROMPT, "Eiffel Tower", " Rome"))
    s3 = manager.create(EditRequest("tiny-gpt2", "ft-m", PROMPT, "Eiffel Tower", " Rome", layer=1))
    with pytest.raises(Busy):
        manager.create(EditRequest("tiny-gpt2", "ft-m", PROMPT, "Eiffel Tower", " Rome"))
    manager.close(pending.session_id)
    manager.run_edit(s3)
    assert resolve_model_key(manager, "tiny-gpt2", s3.session_id) == s3.key
    assert manager.worker.is_loaded(s3.key)
    s3.expires_at = time.time() - 1  # expire it
    with pytest.raises(NotFound):
        resolve_model_key(manager, "tiny-gpt2", s3.session_id)
    assert not manager.worker.is_loaded(s3.key)


def test_failed_edit_frees_copy(manager):
    session = manager.create(EditRequest("tiny-gpt2", "rome", PROMPT, "Eiffel Tower", " Rome",
                                         params={"bogus": 1}))
    with pytest.raises(Exception, match="bogus"):
        manager.run_edit(session)
    assert session.status == "failed" and "bogus" in session.error["message"]
    assert not manager.worker.is_loaded(session.key)

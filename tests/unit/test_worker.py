"""The model worker is the single owner: concurrent mixed requests equal serial results."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from kcircuits.config import Settings
from kcircuits.errors import Busy
from kcircuits.lm.worker import BACKGROUND, ModelWorker

PROMPTS = ["The Eiffel Tower is in", "The capital of France is", "Hello world", "A B C D E F G"]


def _plain(prompt):
    def fn(model):
        with torch.inference_mode():
            return model.bridge(model.tokenize(prompt))[0, -1].clone()
    return fn


def _ablated(prompt, layer):
    """Zero-ablate one layer's attention output with a hook: results differ from the plain run."""
    def zero(act, hook):
        return torch.zeros_like(act)

    def fn(model):
        with torch.inference_mode():
            logits = model.bridge.run_with_hooks(model.tokenize(prompt),
                                                 fwd_hooks=[(f"blocks.{layer}.hook_attn_out", zero)])
        return logits[0, -1].clone()
    return fn


def _requests():
    return [(_plain(p) if i % 2 == 0 else _ablated(p, i % 2)) for i, p in enumerate(PROMPTS * 4)]


def test_concurrent_mixed_requests_equal_serial(tiny_gpt2):
    worker = ModelWorker(Settings(queue_size=64)).start()
    worker.register("m", tiny_gpt2)
    try:
        serial = [worker.run("m", fn) for fn in _requests()]
        with ThreadPoolExecutor(max_workers=8) as pool:
            concurrent = list(pool.map(lambda fn: worker.run("m", fn), _requests()))
    finally:
        worker.stop()
    assert len(serial) == len(concurrent) == 16
    for a, b in zip(serial, concurrent, strict=True):
        assert torch.equal(a, b)
    # The ablation really changes results, so the equality above is not vacuous.
    assert not torch.allclose(serial[0], serial[1])


def test_full_queue_answers_busy_and_background_waits(tiny_gpt2):
    worker = ModelWorker(Settings(queue_size=2)).start()
    worker.register("m", tiny_gpt2)
    gate = threading.Event()
    try:
        first = worker.submit("m", lambda model: gate.wait(10))
        time.sleep(0.05)  # the worker is now blocked inside the first task
        worker.submit("m", lambda model: 1)
        worker.submit("m", lambda model: 2)
        with pytest.raises(Busy):
            worker.submit("m", lambda model: 3)
        gate.set()
        assert first.result(5) is True
        assert worker.run("m", lambda model: model.spec.id, priority=BACKGROUND) == "tiny-gpt2"
    finally:
        gate.set()
        worker.stop()


def test_errors_reach_the_caller_and_worker_survives(tiny_gpt2):
    worker = ModelWorker(Settings()).start()
    worker.register("m", tiny_gpt2)
    try:
        with pytest.raises(ZeroDivisionError):
            worker.run("m", lambda model: 1 / 0)
        assert worker.run("m", lambda model: 42) == 42
    finally:
        worker.stop()


def test_lazy_loading_and_lru_eviction():
    loads = []

    def loader(key):
        loads.append(key)
        return f"model-{key}"

    worker = ModelWorker(Settings(max_loaded_models=2), loader=loader).start()
    try:
        assert worker.run("a", lambda m: m) == "model-a"
        worker.run("b", lambda m: m)
        worker.run("a", lambda m: m)
        worker.run("c", lambda m: m)  # evicts b (least recently used)
        assert set(worker.loaded()) == {"a", "c"}
        worker.run("b", lambda m: m)
        assert loads == ["a", "b", "c", "b"]
    finally:
        worker.stop()


def test_background_task_yields_to_interactive_between_steps():
    """A background task of 40 steps calls yield_to_interactive after each: interactive tasks
    queued meanwhile run inside it, in the worker thread, and background ones still wait."""
    worker = ModelWorker(Settings(max_loaded_models=1), loader=lambda key: f"model-{key}").start()
    order, started = [], threading.Event()

    def long_job(model):
        started.set()
        for step in range(40):
            time.sleep(0.02)
            order.append(("job", step))
            worker.yield_to_interactive()
        return "job done"

    try:
        job = worker.submit("a", long_job, priority=BACKGROUND)
        started.wait(5)
        other_background = worker.submit("a", lambda m: order.append(("background", None)), priority=BACKGROUND)
        threads = [threading.Thread(target=lambda: worker.run("b", lambda m: order.append((m, threading.current_thread().name))))
                   for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(5)
        assert not job.done() and order.count(("model-b", "kcircuits-model-worker")) == 2
        assert job.result(10) == "job done" and other_background.result(5) is None
        assert order[-1] == ("background", None)  # ran only after the job
        assert set(worker.loaded()) == {"a", "b"}  # one slot, but the running job's model was not evicted
    finally:
        worker.stop()

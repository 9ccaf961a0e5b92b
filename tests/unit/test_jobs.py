"""Job manager: progress events, cooperative cancel, failures reported with a type."""

from __future__ import annotations

import threading

from kcircuits.errors import BadRequest
from kcircuits.jobs import JobManager


def test_progress_events_and_result():
    jobs = JobManager()

    def body(ctx):
        for i in range(5):
            ctx.progress((i + 1) / 5, f"step {i}", done=i + 1, total=5)
        return {"answer": 42}

    job = jobs.create("test", body, {"x": 1})
    done = jobs.wait(job.id, timeout=10)
    assert done.status == "succeeded" and done.result == {"answer": 42} and done.progress == 1.0
    events = [e for e in jobs.events(job.id) if e is not None]
    names = [e["event"] for e in events]
    assert names[0] == "queued" and names[1] == "running" and names[-1] == "succeeded"
    assert [e["done"] for e in events if e["event"] == "progress"] == [1, 2, 3, 4, 5]
    assert [e["seq"] for e in events] == list(range(len(events)))
    jobs.shutdown()


def test_cancel_stops_a_running_job():
    jobs = JobManager()
    started, steps = threading.Event(), []

    def body(ctx):
        started.set()
        for i in range(10_000):
            ctx.check_cancel()
            steps.append(i)
            threading.Event().wait(0.001)
        return "finished"

    job = jobs.create("slow", body)
    assert started.wait(5)
    jobs.cancel(job.id)
    done = jobs.wait(job.id, timeout=10)
    assert done.status == "cancelled" and done.result is None
    assert len(steps) < 10_000
    jobs.shutdown()


def test_failure_is_reported_with_type():
    jobs = JobManager()

    def bad(ctx):
        raise BadRequest("relation 'x' does not exist")

    def crash(ctx):
        raise RuntimeError("boom")

    a, b = jobs.create("a", bad), jobs.create("b", crash)
    assert jobs.wait(a.id).error == {"type": "invalid_request", "message": "relation 'x' does not exist"}
    assert jobs.wait(b.id).error["type"] == "internal_error"
    jobs.shutdown()

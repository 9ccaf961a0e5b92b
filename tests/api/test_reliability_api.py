"""Reliability under faults (issue 15): orphaned jobs, evicted session bases, priorities, SSE."""

from __future__ import annotations

import gc
import time

from fastapi.testclient import TestClient

from kcircuits.api.app import create_app
from kcircuits.lm.worker import ModelWorker

from .live import raw_exchange


def _job(job_id: str, status: str) -> dict:
    return {"id": job_id, "kind": "acdc", "params": {"prompt": "p"}, "status": status, "progress": 0.4,
            "message": "", "error": None, "created_at": time.time() - 60, "finished_at": None}


def test_jobs_orphaned_by_a_dead_process_are_interrupted_on_start(api_settings):
    """A previous process died (kill -9) with jobs running or queued: the next start marks them
    interrupted (terminal) and DELETE on them answers; finished jobs are left as they were."""
    from kcircuits.store import open_store

    store = open_store(api_settings)
    for job_id, status in (("a" * 32, "running"), ("b" * 32, "queued"), ("c" * 32, "cancelling"),
                           ("d" * 32, "succeeded")):
        store.record_job(_job(job_id, status))
    store.close()
    app = create_app(api_settings, worker=ModelWorker(api_settings), preload=False)
    with TestClient(app) as client:
        for job_id in ("a" * 32, "b" * 32, "c" * 32):
            job = client.get(f"/api/jobs/{job_id}").json()
            assert job["status"] == "interrupted" and job["finished_at"] is not None, job
            assert job["error"]["type"] == "interrupted"
            deleted = client.delete(f"/api/jobs/{job_id}")
            assert deleted.status_code == 200 and deleted.json()["status"] == "interrupted", deleted.text
        assert client.get(f"/api/jobs/{'d' * 32}").json()["status"] == "succeeded"
        assert client.delete(f"/api/jobs/{'e' * 32}").status_code == 404


PROMPT = "The Eiffel Tower is located in the city of"
EDIT = {"model": "tiny-llama", "method": "ft-m", "prompt": PROMPT, "subject": "Eiffel Tower", "target": " Rome",
        "layer": 0, "params": {"lr": 0.01, "norm_constraint": 0.01, "steps": 5}}


def test_edit_session_survives_eviction_of_its_base(api_settings):
    """One model slot: the edited model's base is evicted by another model, collected, and
    reloaded by /compare. The session's lens and /compare answer, with the numbers of before."""
    settings = api_settings.model_copy(update={"max_loaded_models": 1})
    app = create_app(settings, worker=ModelWorker(settings), preload=False)  # loads models itself
    with TestClient(app, raise_server_exceptions=False) as client:
        base = client.post("/api/lens", json={"model": "tiny-llama", "prompt": PROMPT, "target": " Rome"})
        assert base.status_code == 200  # the base has run (its bridge wires its capture hooks on first use)
        started = client.post("/api/edits", json=EDIT).json()
        assert app.state.jobs.wait(started["job_id"], timeout=60).status == "succeeded"
        sid = started["session_id"]
        lens = {"prompt": PROMPT, "target": " Rome", "session": sid}
        before = client.post("/api/lens", json=lens).json()
        assert client.post("/api/lens", json={"model": "tiny-gpt2", "prompt": "x"}).status_code == 200
        assert "tiny-llama" not in app.state.worker.loaded()
        gc.collect()  # the evicted bases are really gone (bridges hold reference cycles)
        after = client.post("/api/lens", json=lens)
        assert after.status_code == 200, after.text
        assert after.json()["target"]["prob"] == before["target"]["prob"]
        compare = client.get(f"/api/edits/{sid}/compare", params={"method": "eap", "top_n": 5})  # reloads the base
        assert compare.status_code == 200, compare.text
        assert client.post("/api/lens", json=lens).json()["target"]["prob"] == before["target"]["prob"]
        assert compare.json()["lens"]["curves"]["new"]["post"]["prob"] == before["target"]["prob"]


def test_200_open_event_streams_leave_healthz_fast(live_server):
    """200 SSE clients wait on a job that makes no progress; /healthz still answers at once.
    (A stream that holds a thread-pool thread per client exhausts the pool at 40.)"""
    import socket
    import statistics
    import threading

    app, address = live_server
    release = threading.Event()
    job = app.state.jobs.create("sweep", lambda ctx: release.wait(30) and {})
    streams = []
    try:
        for _ in range(200):
            conn = socket.create_connection(address, timeout=10)
            conn.sendall(f"GET /api/jobs/{job.id}/events HTTP/1.1\r\nHost: test\r\n\r\n".encode())
            streams.append(conn)
        for conn in streams:  # every stream is open and has had its replayed events
            assert conn.recv(4096).startswith(b"HTTP/1.1 200")
        latencies = []
        for _ in range(10):
            start = time.perf_counter()
            [(status, _, _)] = raw_exchange(address, [b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n"])
            latencies.append(time.perf_counter() - start)
            assert status == 200
        assert statistics.median(latencies) < 0.05 and max(latencies) < 0.5, latencies
        release.set()
        finished = 0
        for conn in streams:  # and each stream ends with the job's terminal event
            data = b""
            while b"event: succeeded" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            finished += b"event: succeeded" in data
        assert finished == 200
    finally:
        release.set()
        for conn in streams:
            conn.close()


def test_a_result_that_misses_the_time_limit_is_kept_for_the_retry(api_settings, tiny_gpt2, monkeypatch):
    """The client's wait ends (503 + Retry-After) before the circuit is done; the worker's
    result is still stored under its content id, and the retry reads it without recomputing."""
    import kcircuits.api.routes.circuits as circuits_route

    settings = api_settings.model_copy(update={"request_timeout_s": 0.3})
    real, calls = circuits_route.run_circuit, []

    def slow(model, body, settings):
        calls.append(1)
        time.sleep(0.8)
        return real(model, body, settings)

    monkeypatch.setattr(circuits_route, "run_circuit", slow)
    worker = ModelWorker(settings)
    worker.register("tiny-gpt2", tiny_gpt2)
    body = {"prompt": PROMPT, "target": " Paris", "method": "eap", "top_n": 5, "random_seeds": 0}
    with TestClient(create_app(settings, worker=worker, preload=False)) as client:
        first = client.post("/api/circuits", json=body)
        assert first.status_code == 503 and first.headers["retry-after"], first.text
        deadline = time.monotonic() + 10
        while client.app.state.store.computed_results == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        retry = client.post("/api/circuits", json=body)
        assert retry.status_code == 200, retry.text
        assert retry.json()["cached"] is True and len(calls) == 1


def test_lens_while_an_acdc_job_runs_waits_one_batch_not_the_job(client, monkeypatch):
    """ACDC's batches are slowed to 0.15 s each (as on a model 100x larger); a lens request sent
    mid-job answers within about one batch while the job is still running."""
    from kcircuits.circuits import acdc

    real_fast = acdc._Evaluator.fast

    def slow_fast(self, masks):
        time.sleep(0.15)
        return real_fast(self, masks)

    monkeypatch.setattr(acdc._Evaluator, "fast", slow_fast)
    params = {"prompt": PROMPT, "target": " Paris", "model": "tiny-gpt2", "tau": -1e9}  # tries every edge
    job_id = client.post("/api/jobs", json={"kind": "acdc", "params": params}).json()["id"]
    jobs = client.app.state.jobs
    deadline = time.monotonic() + 20
    while jobs.get(job_id).progress == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert jobs.get(job_id).status == "running"
    latencies = []
    for _ in range(3):
        start = time.perf_counter()
        res = client.post("/api/lens", json={"prompt": "Rome is the capital of", "top_k": 3})
        latencies.append(time.perf_counter() - start)
        assert res.status_code == 200, res.text
    still_running = jobs.get(job_id).status == "running"
    job = jobs.wait(job_id, timeout=60)
    assert job.status == "succeeded" and still_running
    took = job.finished_at - job.created_at
    assert max(latencies) < 1.0 and took > 2 * max(latencies), (latencies, took)


def test_concurrent_acdc_jobs_wait_for_each_other_without_timing_out(api_settings, tiny_gpt2, monkeypatch):
    """Two ACDC jobs, each longer than the request time limit: the second waits for the worker
    behind the first (job waits are not client waits) and both succeed."""
    from kcircuits.circuits import acdc

    real_fast = acdc._Evaluator.fast
    monkeypatch.setattr(acdc._Evaluator, "fast", lambda self, masks: time.sleep(0.05) or real_fast(self, masks))
    settings = api_settings.model_copy(update={"request_timeout_s": 0.3})
    worker = ModelWorker(settings)
    worker.register("tiny-gpt2", tiny_gpt2)
    with TestClient(create_app(settings, worker=worker, preload=False)) as client:
        ids = []
        for prompt in (PROMPT, "The Louvre is located in the city of"):
            ids.append(client.post("/api/jobs", json={"kind": "acdc", "params": {
                "prompt": prompt, "target": " Paris", "tau": -1e9}}).json()["id"])
            deadline = time.monotonic() + 20
            while client.app.state.jobs.get(ids[-1]).progress == 0 and time.monotonic() < deadline:
                time.sleep(0.02)  # the first job holds the worker when the second starts
        jobs = [client.app.state.jobs.wait(job_id, timeout=60) for job_id in ids]
        assert [job.status for job in jobs] == ["succeeded", "succeeded"], [job.error for job in jobs]
        assert all(job.finished_at - job.created_at > 0.3 for job in jobs)


def test_concurrent_mixed_requests_equal_serial_runs(client):
    """Lens, node-detail and circuit requests sent 6 at a time answer exactly what they answer one
    by one (the worker owns the model; hooked runs never overlap)."""
    from concurrent.futures import ThreadPoolExecutor

    prompts = ["The Eiffel Tower is in", "The capital of Italy is", "Berlin lies in", "The Louvre is in"]
    requests = [("/api/lens", {"prompt": p, "target": " Paris", "top_k": 3}) for p in prompts]
    requests += [("/api/nodes/detail", {"prompt": p, "node": "a1.h2", "target": " Paris"}) for p in prompts]
    requests += [("/api/circuits", {"prompt": p, "target": " Paris", "method": "eap", "ablation": "zero",
                                    "top_n": 5, "random_seeds": 0}) for p in prompts[:2]]

    def answer(request):
        res = client.post(*request[:1], json=request[1])
        assert res.status_code == 200, res.text
        data = res.json()
        return {k: v for k, v in data.items() if k not in ("cached", "timings")}

    serial = [answer(r) for r in requests]
    with ThreadPoolExecutor(6) as pool:
        concurrent = list(pool.map(answer, requests * 2))
    assert concurrent == serial * 2


def test_overload_answers_503_with_retry_after_at_once(client, api_settings):
    """The worker is held and its queue (8) fills: further requests get 503 + Retry-After in
    well under a second, and the queued ones all answer once the worker is free."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    release = threading.Event()
    held = client.app.state.worker.submit("tiny-gpt2", lambda model: release.wait(30))

    def lens(i):
        start = time.perf_counter()
        res = client.post("/api/lens", json={"prompt": f"Overload {i} is", "top_k": 2})
        return res.status_code, res.headers.get("retry-after"), time.perf_counter() - start

    with ThreadPoolExecutor(api_settings.queue_size + 4) as pool:
        queued = [pool.submit(lens, i) for i in range(api_settings.queue_size)]
        deadline = time.monotonic() + 10
        while client.app.state.worker.queue_depth() < api_settings.queue_size and time.monotonic() < deadline:
            time.sleep(0.01)
        refused = list(pool.map(lens, range(100, 104)))
        release.set()
        answered = [f.result(30) for f in queued]
    held.result(5)
    assert all(status == 503 and retry and took < 0.5 for status, retry, took in refused), refused
    assert [status for status, _, _ in answered] == [200] * api_settings.queue_size

"""Reliability under faults (issue 15): orphaned jobs, evicted session bases, priorities, SSE."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from kcircuits.api.app import create_app
from kcircuits.lm.worker import ModelWorker


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

"""Slow work as jobs: create -> id, status with progress, an event stream, cooperative cancel.

A job body runs in a job thread and does its model work through the model worker (in steps, at
background priority, so interactive requests interleave). It reports progress through its
:class:`JobContext` and checks ``ctx.check_cancel()`` between steps.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from kcircuits.errors import Cancelled, KCircuitsError, NotFound, TooMany, shown
from kcircuits.lm.worker import unbounded_waits
from kcircuits.store.ids import TERMINAL_JOB_STATES

log = logging.getLogger(__name__)

TERMINAL = TERMINAL_JOB_STATES


@dataclass
class Job:
    """One job's state; ``events`` is the ordered progress log the SSE stream replays."""

    id: str
    kind: str
    params: dict[str, Any]
    status: str = "queued"
    progress: float = 0.0
    message: str = ""
    result: Any = None
    error: dict[str, str] | None = None
    created_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    cancel_flag: threading.Event = field(default_factory=threading.Event)
    changed: threading.Condition = field(default_factory=threading.Condition)
    #: async event-stream readers waiting for the next event: (their loop, their asyncio.Event)
    waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = field(default_factory=list)

    def public(self, with_result: bool = True) -> dict[str, Any]:
        data = {"id": self.id, "kind": self.kind, "params": self.params, "status": self.status,
                "progress": self.progress, "message": self.message, "error": self.error,
                "created_at": self.created_at, "finished_at": self.finished_at}
        if with_result:
            data["result"] = self.result
        return data


class JobContext:
    """What a job body sees: progress reporting and the cancel flag."""

    def __init__(self, manager: JobManager, job: Job):
        self._manager, self.job = manager, job

    def progress(self, fraction: float, message: str = "", **data: Any) -> None:
        self._manager._emit(self.job, "progress", progress=max(0.0, min(1.0, fraction)), message=message, **data)

    def cancelled(self) -> bool:
        return self.job.cancel_flag.is_set()

    def check_cancel(self) -> None:
        """The job's :data:`~kcircuits.errors.CancelFn`: raises Cancelled once the flag is set."""
        if self.job.cancel_flag.is_set():
            raise Cancelled()


JobBody = Callable[[JobContext], Any]


class JobManager:
    """Runs job bodies on a small thread pool; keeps the last ``keep`` jobs in memory.

    ``listeners`` are called with the job after every state change (the store persists jobs).
    """

    def __init__(self, max_running: int = 2, max_queued: int = 32, keep: int = 200):
        self._pool = ThreadPoolExecutor(max_workers=max_running, thread_name_prefix="kcircuits-job")
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self.max_queued, self.keep = max_queued, keep
        self.listeners: list[Callable[[Job], None]] = []

    def create(self, kind: str, body: JobBody, params: dict[str, Any] | None = None) -> Job:
        with self._lock:
            active = sum(1 for j in self._jobs.values() if j.status not in TERMINAL)
            if active >= self.max_queued:
                raise TooMany(f"{self.max_queued} jobs are queued or running; cancel one (DELETE /api/jobs/{{id}}) "
                              "or retry later", retry_after_s=10)
            job = Job(id=uuid.uuid4().hex, kind=kind, params=params or {})
            self._jobs[job.id] = job
            self._trim()
        self._emit(job, "queued")
        self._pool.submit(self._run, job, body)
        return job

    def get(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(f"no job with id {shown(job_id)}")
        return job

    def list(self) -> list[Job]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.created_at, reverse=True)

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job.status not in TERMINAL:
            job.cancel_flag.set()
            if job.status == "queued":
                self._finish(job, "cancelled", message="cancelled before start")
            else:
                self._emit(job, "cancelling", status="cancelling", message="cancel requested")
        return job

    def wait(self, job_id: str, timeout: float = 60.0) -> Job:
        job = self.get(job_id)
        deadline = time.monotonic() + timeout
        with job.changed:
            while job.status not in TERMINAL and time.monotonic() < deadline:
                job.changed.wait(timeout=max(0.0, deadline - time.monotonic()))
        return job

    def events(self, job_id: str, start: int = 0, poll_s: float = 15.0) -> Iterator[dict[str, Any] | None]:
        """Yields the job's events from ``start`` on, then new ones as they come; ``None`` as a
        keep-alive after ``poll_s`` quiet seconds; stops after the terminal event."""
        job = self.get(job_id)
        index = start
        while True:
            with job.changed:
                if index >= len(job.events) and job.status not in TERMINAL:
                    job.changed.wait(timeout=poll_s)
                pending = job.events[index:]
                done = job.status in TERMINAL
            if not pending and not done:
                yield None
            for event in pending:
                index += 1
                yield event
            if done and index >= len(job.events):
                return

    async def aevents(self, job_id: str, start: int = 0, poll_s: float = 15.0) -> AsyncIterator[dict[str, Any] | None]:
        """:meth:`events` for the event loop: waits on an asyncio.Event that :meth:`_emit` sets
        from the job's thread, so an open stream holds no thread while it waits."""
        job = self.get(job_id)
        loop = asyncio.get_running_loop()
        index = start
        while True:
            waiter = (loop, asyncio.Event())
            with job.changed:
                pending = job.events[index:]
                done = job.status in TERMINAL
                if not pending and not done:
                    job.waiters.append(waiter)
            if pending or done:
                for event in pending:
                    index += 1
                    yield event
                if done and index >= len(job.events):
                    return
                continue
            try:
                await asyncio.wait_for(waiter[1].wait(), poll_s)
            except TimeoutError:
                yield None
            finally:
                with job.changed:
                    if waiter in job.waiters:
                        job.waiters.remove(waiter)

    def shutdown(self) -> None:
        for job in self.list():
            job.cancel_flag.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    # internals -------------------------------------------------------------------------------
    def _run(self, job: Job, body: JobBody) -> None:
        if job.cancel_flag.is_set():
            if job.status not in TERMINAL:
                self._finish(job, "cancelled", message="cancelled before start")
            return
        self._emit(job, "running", status="running")
        try:
            with unbounded_waits():  # a job waits for the worker as long as it takes (no client waits)
                result = body(JobContext(self, job))
        except Cancelled:
            self._finish(job, "cancelled", message="cancelled")
        except KCircuitsError as exc:
            self._finish(job, "failed", error={"type": exc.kind, "message": exc.message})
        except Exception as exc:  # noqa: BLE001 - a job's failure is reported, not raised
            log.exception("job %s failed", job.id)
            self._finish(job, "failed", error={"type": "internal_error", "message": f"{type(exc).__name__}: {exc}"})
        else:
            job.result = result
            self._finish(job, "succeeded", progress=1.0)

    def _finish(self, job: Job, status: str, **data: Any) -> None:
        job.finished_at = time.time()
        self._emit(job, status, status=status, **data)

    def _emit(self, job: Job, event: str, **data: Any) -> None:
        with job.changed:
            if "status" in data:
                job.status = data["status"]
            if "progress" in data:
                job.progress = float(data["progress"])
            if "message" in data:
                job.message = str(data["message"])
            if "error" in data:
                job.error = data["error"]
            job.events.append({"event": event, "seq": len(job.events), "status": job.status,
                               "progress": job.progress, "message": job.message,
                               **{k: v for k, v in data.items() if k not in {"status", "progress", "message"}}})
            job.changed.notify_all()
            waiters, job.waiters = job.waiters, []
        for loop, ready in waiters:
            try:
                loop.call_soon_threadsafe(ready.set)
            except RuntimeError:  # that stream's loop has closed
                pass
        for listener in self.listeners:
            try:
                listener(job)
            except Exception:  # noqa: BLE001 - a listener must not break a job
                log.exception("job listener failed")

    def _trim(self) -> None:
        if len(self._jobs) > self.keep:
            done = sorted((j for j in self._jobs.values() if j.status in TERMINAL), key=lambda j: j.created_at)
            for job in done[: len(self._jobs) - self.keep]:
                self._jobs.pop(job.id, None)

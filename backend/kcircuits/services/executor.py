"""Executors: where a service runs its model work. The server's runs on the ModelWorker (one
owner per loaded model; a job's steps yield to interactive requests and honour its cancel flag);
the CLI's runs inline on a model it loaded, with a progress bar. Both expose the same interface:
``run(fn)`` calls ``fn(model, steps)``, ``stored(store, kind, request, compute)`` reads or fills
the content-addressed store.

Cancellation (:mod:`kcircuits.errors`): ``steps.cancel()`` raises :class:`~kcircuits.errors.Cancelled`
once the job's cancel flag is set; the science calls it, as its ``cancel`` callback, between steps.
``steps.progress`` only reports.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from kcircuits.lm.loader import LoadedModel

T = TypeVar("T")
ProgressFn = Callable[[int, int, str], None]


class Steps(Protocol):
    """A run's callbacks, called by the science between batches."""

    def progress(self, done: int, total: int, message: str = "", **data: Any) -> None: ...
    def cancel(self) -> None: ...


class Executor(Protocol):
    """Runs a callable with the model, with progress and cancel."""

    settings: Any

    def run(self, fn: Callable[[LoadedModel, Steps], T]) -> T: ...
    def stored(self, store: Any, kind: str, request: dict[str, Any],
               compute: Callable[[], dict[str, Any]]) -> dict[str, Any]: ...


class _NoSteps:
    def progress(self, done: int, total: int, message: str = "", **data: Any) -> None:
        pass

    def cancel(self) -> None:
        pass


class InlineSteps:
    """Steps of an inline run: progress goes to ``report`` (a CLI bar); Ctrl-C is the cancel."""

    def __init__(self, report: ProgressFn | None = None):
        self.report = report

    def progress(self, done: int, total: int, message: str = "", **data: Any) -> None:
        if self.report is not None:
            self.report(done, total, message)

    def cancel(self) -> None:
        pass


class InlineExecutor:
    """The CLI's executor: ``model`` loaded in this process, run in this thread."""

    def __init__(self, model: LoadedModel, settings: Any, report: ProgressFn | None = None):
        self.model, self.settings, self.steps = model, settings, InlineSteps(report)

    def run(self, fn: Callable[[LoadedModel, Steps], T]) -> T:
        return fn(self.model, self.steps)

    def stored(self, store: Any, kind: str, request: dict[str, Any],
               compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        if store is None:
            return compute()
        return store.get_or_compute(kind, request, self.model.revision, compute)


class JobSteps:
    """A job's callbacks inside its worker task, called between batches: each one checks the
    cancel flag and lets queued interactive requests run first (the job holds no hooks then)."""

    def __init__(self, ctx: Any, worker: Any):
        self.ctx, self.worker = ctx, worker

    def cancel(self) -> None:
        self.worker.yield_to_interactive()
        self.ctx.check_cancel()

    def progress(self, done: int, total: int, message: str = "", **data: Any) -> None:
        """``data``: JSON-able extras carried by the progress event (e.g. a training step's loss)."""
        self.worker.yield_to_interactive()
        self.ctx.progress(done / total if total else 0.0, message, done=done, total=total, **data)


class WorkerExecutor:
    """The server's executor: ``fn`` runs on the model worker under ``key`` (a registry id or an
    edit session's copy); with a job context at background priority, else interactive."""

    def __init__(self, worker: Any, key: str, ctx: Any = None):
        self.worker, self.key, self.ctx = worker, key, ctx
        self.settings = worker.settings

    def _priority(self) -> int:
        from kcircuits.lm.worker import BACKGROUND, INTERACTIVE

        return INTERACTIVE if self.ctx is None else BACKGROUND

    def run(self, fn: Callable[[LoadedModel, Steps], T]) -> T:
        if self.ctx is None:
            return self.worker.run(self.key, lambda model: fn(model, _NoSteps()))
        steps = JobSteps(self.ctx, self.worker)
        return self.worker.run(self.key, lambda model: fn(model, steps), priority=self._priority(),
                               timeout=24 * 3600)

    def stored(self, store: Any, kind: str, request: dict[str, Any],
               compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        return stored_or_computed(store, self.worker, self.key, kind, request, compute, priority=self._priority())


def stored_or_computed(store: Any, worker: Any, model_key: str, kind: str, request: dict[str, Any],
                       compute: Callable[[], dict[str, Any]], *, priority: int | None = None) -> dict[str, Any]:
    """The stored result of ``request`` for the model behind ``model_key`` (its revision is part of
    the id), else ``compute()`` stored with ``id``/``provenance``/``cached``; without a store,
    just ``compute()``.

    An interactive computation runs to its end and is stored even when the client stops waiting:
    the wait here is bounded by ``request_timeout_s`` (TimeoutError: 503, retry), the computation
    is not, and the retry finds the result by its content id (or waits for the same computation).
    """
    from kcircuits.lm.worker import INTERACTIVE, unbounded_waits

    priority = INTERACTIVE if priority is None else priority
    if store is None:
        return compute()
    revision = worker.run(model_key, lambda model: model.revision, priority=priority)
    if priority != INTERACTIVE:  # a job's own thread: nobody gives up on it but its cancel flag
        return store.get_or_compute(kind, request, revision, compute)
    future: Future = Future()

    def keep() -> None:
        with unbounded_waits():
            try:
                future.set_result(store.get_or_compute(kind, request, revision, compute))
            except BaseException as exc:  # noqa: BLE001 - delivered to the waiting request, if any
                future.set_exception(exc)

    # one short-lived thread per uncached request: the worker's bounded queue bounds how many
    threading.Thread(target=keep, name="kcircuits-keep", daemon=True).start()
    return future.result(timeout=worker.settings.request_timeout_s)

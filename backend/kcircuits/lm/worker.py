"""The single owner of every loaded model: one thread runs all model work, one task at a time.

Two hooked runs at once on one model corrupt each other (measured), so handlers and jobs never
touch a model directly: they submit a function ``fn(model) -> result`` and wait on its future.
The queue is bounded: when it is full an interactive submit fails fast with :class:`Busy`
(503 + Retry-After). Background work (job steps) queues behind interactive work, and a long
background task lets queued interactive tasks run between its batches (:meth:`ModelWorker.yield_to_interactive`).
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from kcircuits.config import Settings, get_settings
from kcircuits.errors import Busy
from kcircuits.lm.loader import LoadedModel, load_model

log = logging.getLogger(__name__)
T = TypeVar("T")

INTERACTIVE = 0
BACKGROUND = 10


@dataclass(order=True)
class _Task:
    priority: int
    seq: int
    model_key: str = field(compare=False)
    fn: Callable[[LoadedModel], Any] = field(compare=False)
    future: Future = field(compare=False)


_STOP = object()
_LOCAL = threading.local()


@contextmanager
def unbounded_waits():
    """In this thread, :meth:`ModelWorker.run` without a timeout waits until its task is done
    (threads that keep a computation alive after its client stopped waiting)."""
    previous = getattr(_LOCAL, "unbounded", False)
    _LOCAL.unbounded = True
    try:
        yield
    finally:
        _LOCAL.unbounded = previous


class ModelWorker:
    """One thread, one bounded priority queue, an LRU pool of loaded models keyed by id.

    ``loader(model_id) -> LoadedModel`` boots models on first use (inside the worker thread).
    Extra models (edit sessions' copies) are added with :meth:`register` under their own key.
    """

    def __init__(self, settings: Settings | None = None,
                 loader: Callable[[str], LoadedModel] | None = None):
        self.settings = settings or get_settings()
        self._loader = loader or (lambda model_id: load_model(model_id, self.settings))
        self._queue: queue.PriorityQueue = queue.PriorityQueue(maxsize=self.settings.queue_size)
        self._stopped = False
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._pinned: set[str] = set()
        self._seq = itertools.count()
        self._lock = threading.Lock()  # guards _models bookkeeping read from other threads
        self._thread: threading.Thread | None = None
        self._running: list[_Task] = []  # the task running now, and those run inside it (yields)

    # lifecycle -------------------------------------------------------------------------------
    def start(self) -> ModelWorker:
        self._stopped = False
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="kcircuits-model-worker", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stopped = True
        if self._thread and self._thread.is_alive():
            self._queue.put(_Task(10**9, next(self._seq), "", _STOP, Future()))  # type: ignore[arg-type]
            self._thread.join(timeout)
        self._thread = None

    # model pool ------------------------------------------------------------------------------
    def register(self, key: str, model: LoadedModel, pinned: bool = False) -> None:
        """Hand a model to the worker (tests, preloaded models, edit-session copies)."""
        with self._lock:
            self._models[key] = model
            self._models.move_to_end(key)
            if pinned:
                self._pinned.add(key)

    def unregister(self, key: str) -> LoadedModel | None:
        with self._lock:
            self._pinned.discard(key)
            return self._models.pop(key, None)

    def loaded(self) -> list[str]:
        with self._lock:
            return list(self._models)

    def is_loaded(self, key: str) -> bool:
        with self._lock:
            return key in self._models

    def queue_depth(self) -> int:
        return self._queue.qsize()

    def _get_model(self, key: str) -> LoadedModel:
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
        model = self._loader(key)
        with self._lock:
            self._models[key] = model
            in_use = {t.model_key for t in self._running}
            evictable = [k for k in self._models if k not in self._pinned and k != key and k not in in_use]
            while len(self._models) > max(self.settings.max_loaded_models, 1) and evictable:
                evicted = evictable.pop(0)
                self._models.pop(evicted, None)
                log.info("evicted model %s from the worker", evicted)
        return model

    # work ------------------------------------------------------------------------------------
    def submit(self, model_key: str, fn: Callable[[LoadedModel], T], *, priority: int = INTERACTIVE,
               block: bool = False, timeout: float | None = None) -> Future:
        """Queue ``fn(model)``; a full queue raises :class:`Busy` unless ``block``."""
        future: Future = Future()
        if self._stopped:
            future.set_exception(Busy("the model worker stopped; retry shortly", retry_after_s=2))
            return future
        task = _Task(priority, next(self._seq), model_key, fn, future)
        try:
            self._queue.put(task, block=block, timeout=timeout)
        except queue.Full:
            raise Busy("the model worker is busy; retry shortly", retry_after_s=2) from None
        return future

    def run(self, model_key: str, fn: Callable[[LoadedModel], T], *, priority: int = INTERACTIVE,
            timeout: float | None = None) -> T:
        """Submit and wait (from a handler's thread pool or a job thread, never the event loop)."""
        block = priority != INTERACTIVE
        future = self.submit(model_key, fn, priority=priority, block=block)
        if timeout is None and not getattr(_LOCAL, "unbounded", False):
            timeout = self.settings.request_timeout_s
        return future.result(timeout=timeout)

    def yield_to_interactive(self) -> int:
        """Run the queued tasks of higher priority than the running one, now, in this thread.

        Long background tasks (ACDC, sweeps, relation runs) call this between batches, where
        they hold no hooks on their model, so interactive requests wait one batch, not a whole
        job. A no-op outside the worker thread. Returns how many tasks ran.
        """
        if threading.current_thread() is not self._thread or not self._running:
            return 0
        ran = 0
        while True:
            with self._queue.mutex:
                heap = self._queue.queue
                if not heap or heap[0].priority >= self._running[-1].priority or heap[0].fn is _STOP:
                    return ran
            task = self._queue.get_nowait()  # the head: only this thread takes from the queue
            self._execute(task)
            ran += 1

    def _execute(self, task: _Task) -> None:
        if not task.future.set_running_or_notify_cancel():
            return
        self._running.append(task)
        try:
            model = self._get_model(task.model_key)
            task.future.set_result(task.fn(model))
        except BaseException as exc:  # noqa: BLE001 - delivered to the waiting caller
            task.future.set_exception(exc)
        finally:
            self._running.pop()

    def _loop(self) -> None:
        while True:
            task: _Task = self._queue.get()
            if task.fn is _STOP:
                self._fail_queued()
                return
            self._execute(task)

    def _fail_queued(self) -> None:
        """On stop: every task still queued fails with Busy, so no caller (a job thread waiting
        without a time limit, say) waits forever and interpreter exit is not held up."""
        while True:
            try:
                task = self._queue.get_nowait()
            except queue.Empty:
                return
            if task.fn is not _STOP and not task.future.done():
                task.future.set_exception(Busy("the model worker stopped; retry shortly", retry_after_s=2))

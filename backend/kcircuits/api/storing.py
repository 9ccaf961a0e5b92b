"""Results behind the content-addressed store, for every route that stores what it computes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from kcircuits.lm.worker import INTERACTIVE, ModelWorker, unbounded_waits


def stored_or_computed(store: Any, worker: ModelWorker, model_key: str, kind: str, request: dict[str, Any],
                       compute: Callable[[], dict[str, Any]], *, priority: int = INTERACTIVE) -> dict[str, Any]:
    """The stored result of ``request`` for the model behind ``model_key`` (its revision is part of
    the id), else ``compute()`` stored with ``id``/``provenance``/``cached``; without a store,
    just ``compute()``.

    An interactive computation runs to its end and is stored even when the client stops waiting:
    the wait here is bounded by ``request_timeout_s`` (TimeoutError: 503, retry), the computation
    is not, and the retry finds the result by its content id (or waits for the same computation).
    """
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

"""Results behind the content-addressed store, for every route that stores what it computes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kcircuits.lm.worker import INTERACTIVE, ModelWorker


def stored_or_computed(store: Any, worker: ModelWorker, model_key: str, kind: str, request: dict[str, Any],
                       compute: Callable[[], dict[str, Any]], *, priority: int = INTERACTIVE) -> dict[str, Any]:
    """The stored result of ``request`` for the model behind ``model_key`` (its revision is part of
    the id), else ``compute()`` stored with ``id``/``provenance``/``cached``; without a store,
    just ``compute()``."""
    if store is None:
        return compute()
    revision = worker.run(model_key, lambda model: model.revision, priority=priority)
    return store.get_or_compute(kind, request, revision, compute)

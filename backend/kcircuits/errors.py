"""Domain errors (no HTTP status: kcircuits.api.errors maps each kind to one); ``kind`` names the
envelope's error type. Programming errors in the science raise ValueError / TypeError instead.

Cancellation has one mechanism: long science takes a ``cancel`` callback (:data:`CancelFn`) and calls
it between steps; it returns nothing, or raises :class:`Cancelled`, which propagates to the job
runner (the job ends ``cancelled``, with no partial result).
"""

from __future__ import annotations

from collections.abc import Callable


def shown(value: object, limit: int = 64) -> str:
    """``repr(value)`` for an error message, cut to ``limit`` characters (hostile ids are long)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


class Cancelled(Exception):  # noqa: N818 - a stop, not an error: jobs end "cancelled", not "failed"
    """Raised by a :data:`CancelFn` once its job's cancel flag is set."""


#: ``cancel()``: returns None to go on, raises :class:`Cancelled` to stop.
CancelFn = Callable[[], None]


class KCircuitsError(Exception):
    """Base error: ``kind`` is the envelope's error type."""

    kind = "internal_error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BadRequest(KCircuitsError):
    kind = "invalid_request"


class NotFound(KCircuitsError):
    kind = "not_found"


class UnknownModel(NotFound):
    kind = "unknown_model"


class Busy(KCircuitsError):
    """The model worker's queue is full: retry after ``retry_after_s``."""

    kind = "busy"

    def __init__(self, message: str, retry_after_s: int = 2):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class TooMany(Busy):
    """A quota of held resources (edit sessions, queued jobs) is used up: the client can free one
    (the server itself is not failing)."""

    kind = "too_many"


class NotReady(KCircuitsError):
    kind = "not_ready"

    def __init__(self, message: str, retry_after_s: int = 5):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ModelUnavailable(KCircuitsError):
    """A known model that cannot be loaded here (no hub access, missing package)."""

    kind = "model_unavailable"

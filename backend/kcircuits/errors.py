"""Domain errors with an HTTP status; the API turns them into one JSON envelope."""

from __future__ import annotations


def shown(value: object, limit: int = 64) -> str:
    """``repr(value)`` for an error message, cut to ``limit`` characters (hostile ids are long)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


class KCircuitsError(Exception):
    """Base error: ``status`` is the HTTP status, ``kind`` the envelope's error type."""

    status = 500
    kind = "internal_error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BadRequest(KCircuitsError):
    status = 422
    kind = "invalid_request"


class NotFound(KCircuitsError):
    status = 404
    kind = "not_found"


class UnknownModel(NotFound):
    kind = "unknown_model"


class Busy(KCircuitsError):
    """The model worker's queue is full: answer 503 with Retry-After."""

    status = 503
    kind = "busy"

    def __init__(self, message: str, retry_after_s: int = 2):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class TooMany(Busy):
    """A quota of held resources (edit sessions, queued jobs) is used up: 429 with Retry-After.
    The client can free one; the server itself is not failing, so not a 5xx."""

    status = 429
    kind = "too_many"


class NotReady(KCircuitsError):
    status = 503
    kind = "not_ready"

    def __init__(self, message: str, retry_after_s: int = 5):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ModelUnavailable(KCircuitsError):
    """A known model that cannot be loaded here (no hub access, missing package)."""

    status = 409
    kind = "model_unavailable"

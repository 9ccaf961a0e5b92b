"""Pure ASGI middleware: bounded request bodies and 500s that keep the connection alive."""

from __future__ import annotations

import json
import logging

from starlette.exceptions import HTTPException

from kcircuits.api.errors import error_body

log = logging.getLogger(__name__)


def _json_response(status: int, body: dict) -> tuple[dict, dict]:
    data = json.dumps(body).encode()
    return ({"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]},
            {"type": "http.response.body", "body": data})


class _TrackedSend:
    """An ASGI ``send`` that remembers whether the response has started."""

    def __init__(self, send):
        self.send, self.started = send, False

    async def __call__(self, message) -> None:
        self.started = self.started or message["type"] == "http.response.start"
        await self.send(message)


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a request body passes the limit (an HTTPException, so the
    framework's body parsing passes it on instead of turning it into a 400)."""

    def __init__(self, max_bytes: int):
        super().__init__(413, f"request body over {max_bytes} bytes")


class BodyLimitMiddleware:
    """Refuses request bodies over ``max_bytes`` with 413, however they are sent.

    A declared Content-Length over the limit is refused before any byte is read; otherwise the
    bytes are counted as they arrive (chunked bodies have no length), and the request is
    answered 413 as soon as the count passes the limit, so at most ``max_bytes`` plus one chunk
    are ever held.
    """

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = _json_response(413, error_body("too_large", f"request body over {self.max_bytes} bytes"))
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and (not value.isdigit() or int(value) > self.max_bytes):
                for message in too_large:
                    await send(message)
                return
        seen = 0
        tracked = _TrackedSend(send)

        async def counting_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        try:
            await self.app(scope, counting_receive, tracked)
        except Exception as exc:
            if tracked.started or not _caused_by(exc, BodyTooLarge):
                raise
            for message in too_large:
                await send(message)


def _caused_by(exc: BaseException | None, kind: type[BaseException]) -> bool:
    """``exc`` or an exception in its cause/context chain is a ``kind`` (frameworks wrap them)."""
    while exc is not None:
        if isinstance(exc, kind):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class SecurityHeadersMiddleware:
    """Adds the given headers to every HTTP response that does not set them itself."""

    def __init__(self, app, headers: dict[str, str]):
        self.app = app
        self.headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message):
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", ())}
                message = {**message, "headers": [*message.get("headers", ()),
                                                  *(h for h in self.headers if h[0] not in present)]}
            await send(message)

        await self.app(scope, receive, with_headers)


class CatchAllMiddleware:
    """Answers an unhandled exception with the 500 envelope and does NOT re-raise it.

    Starlette's outer ServerErrorMiddleware sends its 500 and then re-raises, and uvicorn drops
    the keep-alive connection on any exception that reaches it. This middleware sits inside, so
    a failed request costs the client nothing but its answer. (Exceptions after the response
    started cannot be answered: the connection is closed then, as HTTP requires.)
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tracked = _TrackedSend(send)
        try:
            await self.app(scope, receive, tracked)
        except Exception:
            if tracked.started:
                raise
            log.exception("unhandled error")
            for message in _json_response(500, error_body("internal_error", "internal error")):
                await send(message)

"""Request bodies are bounded before any route, dependency or auth runs.

FastAPI reads and parses a route's whole body before it resolves dependencies, so a
request without any token still had its body read (8 MiB: +202 MiB peak RSS, other
clients stalled).  This ASGI middleware answers 413 at once when ``Content-Length`` is
over the limit (nothing is read), and counts the chunks of a body without one
(chunked): the chunk that crosses the limit ends the request with a 413, and nothing
after it is read.  The limit is ``METRICX_MAX_BODY_BYTES``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)


def too_large_detail(limit: int) -> str:
    size = f"{limit // 1024} KiB" if limit % 1024 == 0 else f"{limit} bytes"
    return f"request body too large: at most {size}"


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body crosses the limit: FastAPI lets an
    HTTPException from reading the body through, and Starlette answers it."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, too_large_detail(limit))


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            log.info("request refused", extra={"reason": "body too large", "path": scope.get("path"),
                                               "content_length": declared, "limit": self.max_bytes})
            await _send_413(send, self.max_bytes)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    log.info("request refused", extra={"reason": "body too large", "path": scope.get("path"),
                                                       "limit": self.max_bytes})
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            # Raised outside any handler (e.g. a route reading its body by hand).
            if started:
                raise
            await _send_413(send, self.max_bytes)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed length itself
    return None


async def _send_413(send: Send, limit: int) -> None:
    body = json.dumps({"detail": too_large_detail(limit)}).encode()
    headers: list[Any] = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                          (b"connection", b"close")]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})

"""The body limit at the ASGI level (no services): how much of a body the server reads
before it answers 413, counted at the ``receive`` callable the server hands the app."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from starlette.types import Message

from serving.body_limit import BodyLimit
from serving.json_route import api_router

LIMIT = 1024


class Item(BaseModel):
    name: str


def app_with_limit() -> tuple[Any, list[str]]:
    """A FastAPI app (routes built like the real ones) behind the middleware; the route
    records what it was given, so a refused request provably never reached it."""
    reached: list[str] = []
    router = api_router()

    @router.post("/items")
    def create(item: Item) -> dict[str, int]:
        reached.append(item.name)
        return {"length": len(item.name)}

    app = FastAPI()
    app.include_router(router)
    app.add_middleware(BodyLimit, max_bytes=LIMIT)
    return app, reached


class Client:
    """Feeds ``chunks`` one ``receive`` at a time and counts how many were taken."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.taken = 0
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        if self.taken < len(self.chunks):
            i = self.taken
            self.taken += 1
            return {"type": "http.request", "body": self.chunks[i], "more_body": i + 1 < len(self.chunks)}
        await asyncio.Event().wait()  # a client that has nothing more to send
        raise AssertionError("unreachable")

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return int(next(m["status"] for m in self.sent if m["type"] == "http.response.start"))

    @property
    def body(self) -> Any:
        return json.loads(b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body"))


def call(app: Any, chunks: list[bytes], content_length: int | None) -> Client:
    headers = [(b"content-type", b"application/json")]
    if content_length is not None:
        headers.append((b"content-length", str(content_length).encode()))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/items", "raw_path": b"/items", "query_string": b"", "root_path": "", "headers": headers,
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    client = Client(chunks)
    asyncio.run(app(scope, client.receive, client.send))
    return client


def body_of(size: int) -> bytes:
    doc = json.dumps({"name": ""}).encode()
    return doc[:-2] + b"x" * (size - len(doc)) + doc[-2:]


def test_declared_length_over_the_limit_is_refused_unread() -> None:
    app, reached = app_with_limit()
    c = call(app, [body_of(LIMIT + 1)], LIMIT + 1)
    assert c.status == 413 and c.body == {"detail": "request body too large: at most 1 KiB"}
    assert c.taken == 0 and reached == []


def test_streamed_body_is_read_up_to_the_chunk_that_crosses_the_limit() -> None:
    app, reached = app_with_limit()
    data = body_of(10 * LIMIT)
    chunks = [data[i:i + 256] for i in range(0, len(data), 256)]  # 40 chunks, no Content-Length
    c = call(app, chunks, None)
    assert c.status == 413 and "at most 1 KiB" in c.body["detail"]
    assert c.taken == LIMIT // 256 + 1  # 4 chunks are exactly the limit; the 5th crosses it
    assert reached == []


def test_a_body_that_lies_about_its_length_is_still_counted() -> None:
    app, reached = app_with_limit()
    data = body_of(4 * LIMIT)
    c = call(app, [data[:512], data[512:]], 100)
    assert c.status == 413 and c.taken == 2 and reached == []


def test_bodies_within_the_limit_reach_the_route() -> None:
    app, reached = app_with_limit()
    data = body_of(LIMIT)
    c = call(app, [data[:300], data[300:]], None)
    assert c.status == 200 and c.body == {"length": LIMIT - len(b'{"name": ""}')}
    assert len(reached) == 1
    c = call(app, [data], LIMIT)
    assert c.status == 200 and len(reached) == 2

"""A local HTTP server playing Slack incoming webhooks.

Every request is recorded (path, parsed JSON body, arrival time on the wall clock, the
answer given).  Answers are scripted per webhook path: ``script("/hook/a", Reply(429,
retry_after=2))`` answers the next request with 429, then the default ``200 ok``.
``gone("/hook/b", 410, "channel_is_archived")`` answers every request with that status.
A path that was never registered answers 404 ``no_service`` like Slack.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: str = "ok"
    retry_after: float | None = None
    delay_s: float = 0.0  # answer late (timeouts)


@dataclass
class Received:
    path: str
    body: dict[str, Any]
    at: float  # time.time() when the request arrived
    answered: int
    retry_after: float | None
    answered_at: float = 0.0


@dataclass
class _Hook:
    scripted: list[Reply] = field(default_factory=list)
    permanent: Reply | None = None


class FakeSlack:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self._hooks: dict[str, _Hook] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def hook(self, name: str) -> str:
        """Register a webhook and return its full URL."""
        path = f"/services/T000/B000/{name}"
        with self._lock:
            self._hooks.setdefault(path, _Hook())
        return self.url + path

    def script(self, url_or_path: str, *replies: Reply) -> None:
        path = url_or_path.removeprefix(self.url)
        with self._lock:
            self._hooks.setdefault(path, _Hook()).scripted.extend(replies)

    def gone(self, url_or_path: str, status: int = 410, body: str = "channel_is_archived") -> None:
        path = url_or_path.removeprefix(self.url)
        with self._lock:
            self._hooks.setdefault(path, _Hook()).permanent = Reply(status, body)

    def requests_to(self, url_or_path: str) -> list[Received]:
        path = url_or_path.removeprefix(self.url)
        with self._lock:
            return [r for r in self.received if r.path == path]

    def _answer(self, path: str, body: dict[str, Any]) -> Reply:
        with self._lock:
            hook = self._hooks.get(path)
            if hook is None:
                reply = Reply(404, "no_service")
            elif hook.permanent is not None:
                reply = hook.permanent
            elif hook.scripted:
                reply = hook.scripted.pop(0)
            else:
                reply = Reply()
            self.received.append(Received(path, body, time.time(), reply.status, reply.retry_after))
        return reply

    @contextmanager
    def running(self) -> Iterator[FakeSlack]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body leave in two writes: with Nagle on, the body waits for the
            # client's delayed ACK (~40 ms a request), which Slack does not do to anyone.
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {"_invalid": raw.decode(errors="replace")}
                reply = fake._answer(self.path, body)
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                data = reply.body.encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(data)))
                if reply.retry_after is not None:
                    self.send_header("Retry-After", f"{reply.retry_after:g}")
                self.end_headers()
                try:
                    self.wfile.write(data)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    return  # the client gave up (timeout tests)
                with fake._lock:
                    for r in reversed(fake.received):
                        if r.path == self.path and r.answered_at == 0.0:
                            r.answered_at = time.time()
                            break

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        t = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        t.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()


def fingerprints_in(body: dict[str, Any]) -> list[str]:
    """The alert fingerprints a message carries (from its dashboard links)."""
    from urllib.parse import unquote

    out: list[str] = []
    for block in body.get("blocks", []):
        for el in block.get("elements", []) if block.get("type") == "context" else []:
            text = el.get("text", "")
            if "#alert=" in text:
                out.append(unquote(text.split("#alert=", 1)[1].split("|", 1)[0]))
    return out

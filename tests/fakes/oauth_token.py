"""A local HTTP server that plays Google's OAuth 2.0 token endpoint for the refresh grant,
so ``google-auth``'s own ``Credentials.refresh`` (used by the google-ads SDK) runs unchanged.

``POST /token`` with a form body ``grant_type=refresh_token&client_id=...&client_secret=...
&refresh_token=...`` answers as Google does: ``{"access_token", "expires_in", "scope",
"token_type": "Bearer"}``, or a 400/401 JSON error (``invalid_grant`` for an unknown or
revoked refresh token, ``invalid_client`` for a wrong client id or secret,
``unsupported_grant_type``).  Tests script grants with :meth:`FakeTokenEndpoint.grant`
(the access tokens it hands out, in order) and revoke them with :meth:`revoke`.
Optionally served over TLS with a certificate the test provides.
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

SCOPE = "https://www.googleapis.com/auth/adwords"
MAX_BODY = 16_384


@dataclass
class Grant:
    client_id: str
    client_secret: str
    access_tokens: list[str]  # handed out in order; the last one repeats
    issued: int = 0
    revoked: bool = False


@dataclass
class TokenRequest:
    form: dict[str, str] = field(repr=False)
    status: int = 0


class FakeTokenEndpoint:
    def __init__(self, expires_in: int = 3599) -> None:
        self.expires_in = expires_in
        self.grants: dict[str, Grant] = {}
        self.requests: list[TokenRequest] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._scheme = "http"

    def grant(self, refresh_token: str, client_id: str, client_secret: str, *access_tokens: str) -> Grant:
        g = Grant(client_id, client_secret, list(access_tokens))
        self.grants[refresh_token] = g
        return g

    def revoke(self, refresh_token: str) -> None:
        self.grants[refresh_token].revoked = True

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"{self._scheme}://127.0.0.1:{self._server.server_address[1]}/token"

    def answer(self, path: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if path != "/token":
            return 404, {"error": "not_found"}
        if form.get("grant_type") != "refresh_token":
            return 400, {"error": "unsupported_grant_type", "error_description": "Invalid grant_type"}
        with self._lock:
            g = self.grants.get(form.get("refresh_token", ""))
            clients = {(x.client_id, x.client_secret) for x in self.grants.values()}
            if (form.get("client_id"), form.get("client_secret")) not in clients:
                return 401, {"error": "invalid_client", "error_description": "The OAuth client was not found."}
            if g is None or g.revoked or (g.client_id, g.client_secret) != (form["client_id"], form["client_secret"]):
                return 400, {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}
            token = g.access_tokens[min(g.issued, len(g.access_tokens) - 1)]
            g.issued += 1
        return 200, {"access_token": token, "expires_in": self.expires_in, "scope": SCOPE, "token_type": "Bearer"}

    @contextmanager
    def running(self, tls: tuple[Path, Path] | None = None) -> Iterator[FakeTokenEndpoint]:
        """Serve until the block ends; ``tls`` = (certificate chain PEM, key PEM) serves https."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(min(n, MAX_BODY)).decode(errors="replace")
                form = {k: v[-1] for k, v in parse_qs(body).items()}
                status, reply = fake.answer(self.path, form)
                with fake._lock:
                    fake.requests.append(TokenRequest(form, status))
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(tls[0]), str(tls[1]))
            self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True)
            self._scheme = "https"
        t = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        t.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()

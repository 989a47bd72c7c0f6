"""Serving fixtures: a real migrated database (per test), the real Redis, a JWKS served
over HTTP on loopback by a tiny issuer (protocol-level fake of an identity provider), and
the app built with explicit settings.  Nothing of ours is patched."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import psycopg
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient

from adapters.timescale import InsightStore
from domain.batch import build_batch
from domain.deltas import EntityState, apply_snapshot
from ground.settings import DatabaseSettings, ServingSettings, Settings
from schemas.envelope import Envelope
from schemas.insight import Snapshot
from schemas.metrics import Metrics
from serving.app import create_app
from serving.dev_issuer import public_jwk
from tests import databases
from tests.integration.conftest import database, services  # noqa: F401 - fixtures

ISSUER = "https://issuer.test"
AUDIENCE = "metricx-api"


@dataclass
class Issuer:
    """Signs tokens and serves its JWKS at ``url``; ``hits`` counts JWKS fetches."""

    url: str = ""
    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    published: list[dict[str, Any]] = field(default_factory=list)
    hits: int = 0

    @property
    def kid(self) -> str:
        return str(public_jwk(self.key, "ES256")["kid"])

    def token(self, sub: str, *, key: Any = None, kid: str | None = None, alg: str = "ES256",
              **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "nbf": now, "exp": now + 600}
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(body, key or self.key, algorithm=alg, headers={"kid": kid or self.kid})


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    iss = Issuer()
    iss.published.append(public_jwk(iss.key, "ES256"))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            iss.hits += 1
            body = json.dumps({"keys": iss.published}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    iss.url = f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    t.start()
    yield iss
    server.shutdown()
    server.server_close()


@contextlib.contextmanager
def fresh_database(services: Settings) -> Iterator[str]:  # noqa: F811
    """Like the integration ``database`` fixture, for wider scopes (read-only suites)."""
    with databases.fresh_database(services.database.libpq_url, services.database.timescaledb) as url:
        yield url


@dataclass
class Tenants:
    ws_a: uuid.UUID
    ws_b: uuid.UUID
    alice: str = "user_alice"  # owner of A
    bob: str = "user_bob"  # viewer of B


def seed_tenants(url: str, tz_a: str = "UTC", tz_b: str = "UTC") -> Tenants:
    t = Tenants(uuid.uuid4(), uuid.uuid4())
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO workspaces (id, name, timezone) VALUES (%s, 'Shop A', %s), (%s, 'Shop B', %s)",
                     (t.ws_a, tz_a, t.ws_b, tz_b))
        for sub, ws, role in ((t.alice, t.ws_a, "owner"), (t.bob, t.ws_b, "viewer")):
            uid = conn.execute("INSERT INTO users (sub) VALUES (%s) RETURNING id", (sub,)).fetchone()
            assert uid is not None
            conn.execute("INSERT INTO memberships (user_id, workspace_id, role) VALUES (%s, %s, %s)",
                         (uid[0], ws, role))
    return t


def serving_settings(issuer: Issuer, **extra: Any) -> ServingSettings:
    return ServingSettings(auth_issuer=ISSUER, auth_audience=AUDIENCE, auth_jwks_url=issuer.url,
                           auth_algorithm="ES256", jwks_min_refresh_s=0, dev_issuer=False,
                           stream_token_secret="test-stream-secret-0123456789abcdef", **extra)


def app_settings(services: Settings, database: str, serving: ServingSettings, **sections: Any) -> Settings:  # noqa: F811
    """The services' settings, on the test's own database, with this serving section."""
    given: dict[str, Any] = {"kafka": services.kafka, **sections}
    return Settings(database=DatabaseSettings(url=database), redis=services.redis, serving=serving, **given)


@pytest.fixture
def tenants(database: str) -> Tenants:  # noqa: F811
    return seed_tenants(database)


@pytest.fixture
def client(services: Settings, database: str, issuer: Issuer) -> Iterator[TestClient]:  # noqa: F811
    app = create_app(app_settings(services, database, serving_settings(issuer)))
    with TestClient(app) as c:
        yield c


# --- writing metrics the way the pipeline does: apply_snapshot -> build_batch -> InsightStore


def snapshot(ws: uuid.UUID, *, provider: str = "meta", account: str = "act-1", campaign: str = "cmp-1",
             adset: str = "set-1", ad: str = "ad-1", day: date, captured_at: datetime, tz: str = "UTC",
             currency: str = "USD", spend: str = "0", impressions: int = 0, clicks: int = 0,
             conversions: str = "0", revenue: str = "0") -> Snapshot:
    return Snapshot(
        workspace_id=str(ws), provider=provider, account_id=account, entity_level="ad", entity_id=ad,
        campaign_id=campaign, adset_id=adset, report_date=day, timezone=tz, currency=currency,
        captured_at=captured_at, metrics=Metrics(Decimal(spend), impressions, clicks, Decimal(conversions),
                                                 Decimal(revenue)),
    )


def write(url: str, snaps: list[Snapshot]) -> None:
    """Fold the snapshots through the real delta logic and commit them with the real
    writer (what the pipeline's sink does), in captured order per entity."""
    states: dict[tuple[str, ...], EntityState] = {}
    items: list[Any] = []
    for i, s in enumerate(sorted(snaps, key=lambda s: s.captured_at)):
        k = (s.workspace_id, s.provider, s.account_id, s.entity_id)
        states[k], out = apply_snapshot(states.get(k), s)
        items.append((out, Envelope(None, None, "t", 0, i, s.captured_at)))
    store = InsightStore(url)
    try:
        store.write(build_batch(items))
    finally:
        store.close()


def utc(d: date, hour: int, minute: int = 0) -> datetime:
    return datetime(d.year, d.month, d.day, hour, minute, tzinfo=UTC)


def today_utc() -> date:
    return datetime.now(UTC).date()


def days_ago(n: int) -> date:
    return today_utc() - timedelta(days=n)


# --- a real uvicorn server in a thread (for streaming)


@dataclass
class Server:
    base: str
    settings: Settings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def make_server(services: Settings, database: str, issuer: Issuer) -> Iterator[Any]:  # noqa: F811
    started: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(clock: Callable[[], float] = time.time, **extra: Any) -> Server:
        settings = app_settings(services, database, serving_settings(issuer, **extra))
        app = create_app(settings, clock=clock)
        port = _free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                               lifespan="on"))
        t = threading.Thread(target=server.run, daemon=True)
        t.start()
        while not server.started:
            if not t.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        started.append((server, t))
        return Server(f"http://127.0.0.1:{port}", settings)

    yield start
    for server, t in started:
        server.should_exit = True
        t.join(timeout=10)


@pytest.fixture
def server(make_server: Any) -> Server:
    s: Server = make_server()
    return s



"""Fixtures for the rules, channels and alerts API tests: the app on a fresh database
with a per-test compacted rules topic (real Kafka), channel keys in the environment,
extra members (an owner of B, a viewer of A), and a reader of the rules topic."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition
from fastapi.testclient import TestClient

from adapters.crypto import generate_key
from adapters.kafka import delete_topics, ensure_topics
from ground.settings import Settings
from schemas.topics import TopicSpec
from serving.app import create_app
from tests.serving.conftest import Issuer, Tenants, app_settings, serving_settings

CAROL = "user_carol"  # owner of B
VICTOR = "user_victor"  # viewer of A
KEY = generate_key()


def add_member(url: str, sub: str, ws: uuid.UUID, role: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        uid = conn.execute("INSERT INTO users (sub) VALUES (%s) ON CONFLICT (sub) DO UPDATE SET sub = EXCLUDED.sub "
                           "RETURNING id", (sub,)).fetchone()
        assert uid is not None
        conn.execute("INSERT INTO memberships (user_id, workspace_id, role) VALUES (%s, %s, %s)", (uid[0], ws, role))


@pytest.fixture
def rules_topic(services: Settings) -> Iterator[str]:
    name = f"metricx.rules.t{uuid.uuid4().hex[:8]}"
    ensure_topics(services.kafka.bootstrap, [TopicSpec(name, 1, {"cleanup.policy": "compact"})])
    yield name
    delete_topics(services.kafka.bootstrap, [name])


@dataclass
class Api:
    client: TestClient
    issuer: Issuer
    tenants: Tenants
    settings: Settings
    database: str

    def as_(self, sub: str, ws: uuid.UUID) -> Any:
        return _As(self.client, {"Authorization": f"Bearer {self.issuer.token(sub)}"}, str(ws))

    @property
    def alice(self) -> _As:  # owner of A
        r: _As = self.as_(self.tenants.alice, self.tenants.ws_a)
        return r


@dataclass
class _As:
    client: TestClient
    headers: dict[str, str]
    ws: str

    def __call__(self, method: str, path: str, json: Any = None, **params: Any) -> Any:
        return self.client.request(method, path, params={"workspace_id": self.ws, **params}, headers=self.headers,
                                   json=json)


@pytest.fixture
def api(services: Settings, database: str, issuer: Issuer, tenants: Tenants, rules_topic: str,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    monkeypatch.setenv("METRICX_TOKEN_KEYS", f"k1:{KEY}")
    monkeypatch.setenv("METRICX_SLACK_WEBHOOK_HOSTS", "127.0.0.1, localhost")
    add_member(database, CAROL, tenants.ws_b, "owner")
    add_member(database, VICTOR, tenants.ws_a, "viewer")
    settings = app_settings(services, database, serving_settings(issuer),
                            kafka=services.kafka.model_copy(update={"rules_topic": rules_topic}))
    app = create_app(settings)
    with TestClient(app) as c:
        yield Api(c, issuer, tenants, settings, database)


def read_topic(bootstrap: str, topic: str, at_least: int, timeout: float = 30.0) -> list[tuple[str, bytes | None]]:
    """Every message on the (one-partition) topic from the start, waiting until there
    are ``at_least`` of them; (key, value) with value None for a tombstone."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        out: list[tuple[str, bytes | None]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                key = msg.key()
                out.append((key.decode() if isinstance(key, bytes) else str(key), msg.value()))
                continue
            if msg is None and len(out) >= at_least:
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=5)
                if high <= len(out):
                    return out
        raise AssertionError(f"{topic}: wanted {at_least} messages, got {len(out)}")
    finally:
        consumer.close()

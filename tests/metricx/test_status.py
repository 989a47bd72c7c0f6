"""``metricx status``: what counts as needing attention (pure), and the command against
the real services, with a database and topics set up by hand."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition

from adapters.kafka import Producer, delete_topics, ensure_topics
from ground.settings import REPO_ROOT, Settings
from metricx.status import ConsumerLag, Report, Service, parse_endpoints, problems
from notifier import outbox
from schemas.topics import TopicSpec
from tests.integration.conftest import database, services  # noqa: F401  (fixtures)
from tests.notifier.factory import KEY, alert, channel

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def healthy() -> Report:
    return Report(NOW, [Service("kafka", True), Service("postgres", True), Service("redis", True)],
                  ConsumerLag("raw", {0: 0, 1: 0}), NOW - timedelta(hours=5), ConsumerLag("alerts", {0: 0}))


def test_an_idle_system_is_healthy_and_each_problem_is_named() -> None:
    assert problems(healthy(), stale_after_s=120) == []  # nothing to read: idle for hours is fine
    r = healthy()
    r.pipeline_lag = ConsumerLag("raw", {0: 7, 1: 0})
    assert problems(r, stale_after_s=120) == ["pipeline stalled: 7 messages waiting, last commit 18000 s ago"]
    r.last_commit = NOW - timedelta(seconds=30)
    assert problems(r, stale_after_s=120) == []  # behind, but committing
    r.services.append(Service("server", False, "http://127.0.0.1:8000/readyz: 503"))
    r.stuck_total = 2
    r.reauth = ["ws/meta/123"]
    r.notifier_lag = ConsumerLag("alerts", error="timed out")
    assert problems(r, stale_after_s=120) == [
        "server is down: http://127.0.0.1:8000/readyz: 503",
        "notifier lag unknown: timed out",
        "2 alert deliveries stuck (unknown, or overdue with no sender)",
        "1 connections need re-auth: ws/meta/123",
    ]


def test_endpoints_are_name_equals_url() -> None:
    assert parse_endpoints(["server=http://127.0.0.1:8000", "pipeline=http://h:9101, notifier=https://n"]) == [
        ("server", "http://127.0.0.1:8000"), ("pipeline", "http://h:9101"), ("notifier", "https://n")]
    with pytest.raises(ValueError):
        parse_endpoints(["server:8000"])


def status(services: Settings, database: str, raw: str, alerts: str, *args: str) -> subprocess.CompletedProcess[str]:  # noqa: F811
    env = {**os.environ, "METRICX_DATABASE_URL": database, "METRICX_RAW_TOPIC": raw, "METRICX_ALERTS_TOPIC": alerts,
           "METRICX_NOTIFIER_GROUP_ID": f"g-{raw}"}
    return subprocess.run([sys.executable, "-m", "metricx.cli", "status", *args], env=env, capture_output=True,
                          text=True, cwd=REPO_ROOT, timeout=120)


@pytest.mark.services
def test_status_command_against_the_real_services(services: Settings, database: str) -> None:  # noqa: F811
    suffix = uuid.uuid4().hex[:8]
    raw, alerts_topic = f"metricx.insights.raw.s{suffix}", f"metricx.alerts.s{suffix}"
    ensure_topics(services.kafka.bootstrap, [TopicSpec(raw, 2), TopicSpec(alerts_topic, 1)])
    try:
        p = Producer(services.kafka.bootstrap)
        for i in range(5):
            p.send(raw, b"{}", f"k{i}".encode())
        p.send(alerts_topic, b"{}", b"ws")
        p.flush()
        with Consumer({"bootstrap.servers": services.kafka.bootstrap, "group.id": "w"}) as c:
            marks = {n: c.get_watermark_offsets(TopicPartition(raw, n), timeout=10)[1] for n in (0, 1)}
        # The pipeline committed everything on partition 0, nothing on 1, ten minutes ago.
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute("INSERT INTO pipeline_progress (consumer, topic, partition, next_offset, committed_at) "
                         "VALUES ('pipeline', %s, 0, %s, now() - interval '10 minutes')", (raw, marks[0]))
            ch = channel(conn, "slack", "http://127.0.0.1:9/hook")
            outbox.ingest(conn, alert(1, notify=[ch]))
            outbox.ingest(conn, alert(2, notify=[ch]))
            conn.execute("UPDATE alert_deliveries SET status = 'unknown' WHERE fingerprint = %s",
                         (alert(1).fingerprint,))
            conn.execute("INSERT INTO connections (workspace_id, provider, account_id, token_key_id, token_ciphertext, "
                         "status) VALUES (%s, 'meta', '4242', 'k1', '\\x00', 'needs_reauth')",
                         (str(alert(1).workspace_id),))
        out = status(services, database, raw, alerts_topic)
        assert out.returncode == 1, out.stdout + out.stderr
        text = out.stdout
        assert f"lag {marks[1]} on {raw} [0]=0 [1]={marks[1]}" in text
        assert f"pipeline stalled: {marks[1]} messages waiting, last commit" in text
        assert "lag 1 on " + alerts_topic in text  # the notifier's group never committed
        assert "1 alert deliveries stuck" in text and f"stuck unknown: {alert(1).fingerprint}" in text
        assert "needs re-auth: " + str(alert(1).workspace_id) + "/meta/4242" in text
        assert "status: ATTENTION" in text and KEY not in text

        # Put right: the pipeline caught up, the unknown delivery checked by a human, reconnected.
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute("INSERT INTO pipeline_progress (consumer, topic, partition, next_offset) "
                         "VALUES ('pipeline', %s, 1, %s)", (raw, marks[1]))
            conn.execute("UPDATE alert_deliveries SET status = 'sent'")
            conn.execute("UPDATE connections SET status = 'active'")
        ok = status(services, database, raw, alerts_topic, "--json")
        assert ok.returncode == 0, ok.stdout + ok.stderr
        body = json.loads(ok.stdout)
        assert body["healthy"] is True and body["pipeline_lag"]["partitions"] == {"0": 0, "1": 0}

        down = status(services, database, raw, alerts_topic, "--service", "server=http://127.0.0.1:9")
        assert down.returncode == 1 and "server is down" in down.stdout
    finally:
        delete_topics(services.kafka.bootstrap, [raw, alerts_topic])

"""Each process's /metrics, scraped while it works, against independent counts: rows in
the tables (SQL written here), messages on the dead-letter topic, what the fakes
received.  Parsed with prometheus-client's own text parser."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from uuid import UUID

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapters import connections_store as store
from adapters.crypto import Keyring, generate_key
from adapters.kafka import Producer, delete_topics, encode_snapshot, ensure_topics, publish_snapshots
from domain.schedule import local_today
from ground.settings import REPO_ROOT, Settings
from schemas.envelope import H_STAGE
from schemas.topics import TopicSpec
from tests.fakes import graph_api as mfake
from tests.fakes.slack_server import FakeSlack, fingerprints_in
from tests.faults.conftest import free_port
from tests.integration.conftest import Pipeline, Topics
from tests.integration.test_notifier_e2e import Notifier, notifier_env, send_alerts, wait_for
from tests.integration.test_pipeline_e2e import simulated
from tests.integration.totals import consume_all, header, progress, wait_until
from tests.notifier.factory import channel, payload

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """Summed over the labels not given."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def test_pipeline_metrics_match_the_tables_and_the_dead_letter_topic(
    services: Settings, topics: Topics, database: str, pipeline: Pipeline
) -> None:
    snaps = simulated(seed=41, hours=6)
    producer = Producer(services.kafka.bootstrap)
    publish_snapshots(producer, snaps, topics.raw)
    last = max(snaps, key=lambda s: s.captured_at)  # the newest of its series: applied
    k, _ = encode_snapshot(last)
    conflict = replace(last, metrics=replace(last.metrics, spend=last.metrics.spend + 1))  # same capture, new value
    for key, val in ((k, b"{not json"), (k, b"[1]"), encode_snapshot(conflict)):
        producer.send(topics.raw, val, key)
    producer.flush()
    n = len(snaps) + 3

    port = free_port()
    pipeline.env["METRICX_METRICS_PORT"] = str(port)
    pipeline.env["METRICX_LAG_INTERVAL_S"] = "0.5"
    pipeline.start()
    wait_until(lambda: progress(database, topics.raw) == n, 120, "everything committed", pipeline.assert_running)

    with psycopg.connect(database) as conn:
        rows = conn.execute("SELECT count(*) FROM insight_snapshots").fetchone()
    dead = consume_all(services.kafka.bootstrap, topics.deadletter, 3)
    stages = Counter(header(m, H_STAGE).decode() for m in dead)

    def settled() -> bool:
        s = scrape(port)
        lags = [v for (name, ls), v in s.items() if name == "metricx_consumer_lag" and ("topic", topics.raw) in ls]
        return len(lags) == topics.partitions and not any(lags)

    wait_until(settled, 30, "the lag gauge to reach 0 on every partition", pipeline.assert_running)
    m = scrape(port)
    applied = value(m, "metricx_pipeline_snapshots_total", outcome="applied")
    ignored = value(m, "metricx_pipeline_snapshots_total", outcome="ignored")
    refused = value(m, "metricx_pipeline_snapshots_total", outcome="refused")
    assert rows is not None and applied == rows[0]  # one row per applied snapshot
    assert applied + ignored + refused == len(snaps) + 1  # the conflict is a valid snapshot, refused
    assert refused == stages["series"] == 1
    assert total(m, "metricx_dead_letters_total", stage="validate") == stages["validate"] == 2
    assert value(m, "metricx_dead_letters_total", stage="validate", reason="invalid_json") == 1
    assert value(m, "metricx_dead_letters_total", stage="validate", reason="not_an_object") == 1
    assert value(m, "metricx_dead_letters_total", stage="series", reason="conflict") == 1
    commits = value(m, "metricx_pipeline_commit_seconds_count")
    assert commits >= 1 and value(m, "metricx_pipeline_commit_batch_size_count") == commits
    assert value(m, "metricx_pipeline_commit_batch_size_sum") == n  # every message in exactly one commit
    assert value(m, "metricx_pipeline_last_commit_timestamp_seconds") > datetime.now(UTC).timestamp() - 600
    assert value(m, "metricx_pipeline_recovery_snapshot_seconds_count") >= 1
    assert value(m, "metricx_dependency_up", dependency="postgres") == 1
    ready = httpx.get(f"http://127.0.0.1:{port}/readyz").json()
    assert ready["status"] == "ok" and set(ready["dependencies"]) == {"kafka", "postgres", "redis"}


@pytest.fixture
def alert_topics(services: Settings) -> Iterator[tuple[str, str]]:
    suffix = uuid.uuid4().hex[:8]
    alerts, dlq = f"metricx.alerts.m{suffix}", f"metricx.deadletter.m{suffix}"
    ensure_topics(services.kafka.bootstrap, [TopicSpec(alerts, 2), TopicSpec(dlq, 1)])
    yield alerts, dlq
    delete_topics(services.kafka.bootstrap, [alerts, dlq])


def test_notifier_metrics_match_what_slack_received(
    services: Settings, database: str, alert_topics: tuple[str, str], tmp_path: Path
) -> None:
    with FakeSlack().running() as slack, psycopg.connect(database, autocommit=True) as conn:
        hook = slack.hook("a")
        ch = channel(conn, "slack", hook)
        payloads = [payload(i, notify=[ch]) for i in range(25)]
        port = free_port()
        notifier = Notifier(notifier_env(database, alert_topics, METRICX_METRICS_PORT=str(port),
                                         METRICX_SLACK_MIN_INTERVAL_S="0.2", METRICX_NOTIFIER_BATCH_SIZE="10",
                                         METRICX_LAG_INTERVAL_S="0.5"), tmp_path)
        try:
            notifier.start()
            send_alerts(Producer(services.kafka.bootstrap), alert_topics[0], [*payloads, b'{"schema": 1}'])

            def sent() -> bool:
                row = conn.execute("SELECT count(*) FROM alert_deliveries WHERE status = 'sent'").fetchone()
                return row == (len(payloads),)

            wait_for(sent, "every delivery sent", notifier)
            received = [fp for r in slack.requests_to(hook) if r.answered == 200 for fp in fingerprints_in(r.body)]
            wait_for(lambda: value(scrape(port), "metricx_alert_deliveries_total", channel="slack", state="sent")
                     == len(received), "the delivery counter", notifier)
            m = scrape(port)
            assert len(received) == len(payloads)
            assert value(m, "metricx_notifier_alerts_total", result="recorded") == len(payloads)
            assert value(m, "metricx_notifier_alerts_total", result="dead_lettered") == 1
            assert total(m, "metricx_dead_letters_total", stage="notifier") == 1
            assert total(m, "metricx_alert_deliveries_total", state="failed") == 0
            lags = [v for (name, ls), v in m.items() if name == "metricx_consumer_lag" and ("consumer", "notifier") in ls]
            assert lags and not any(lags)
            assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
        finally:
            notifier.kill9()


META_TZ = "America/New_York"


def test_poller_metrics_count_the_platform_calls_the_fake_received(
    services: Settings, topics: Topics, database: str, tmp_path: Path
) -> None:
    ws = str(uuid.uuid4())
    with mfake.FakeGraphApi(page_size=3).running() as graph:
        acct = graph.add_account(mfake.FakeAccount("7070", "EAAmetrictoken", META_TZ, "USD"))
        today = local_today(datetime.now(UTC), META_TZ)
        for i in range(7):
            acct.put(mfake.AdDay("c", "s", f"7{i}", today, Decimal(f"{i}.5"), 10 + i, i))
            acct.put(mfake.AdDay("c", "s", f"7{i}", today - timedelta(days=2), Decimal("3"), 30, 3))
        key = generate_key()
        with psycopg.connect(database, autocommit=True) as conn:
            store.add(conn, Keyring.parse(f"k1:{key}", None), store.NewConnection(
                workspace_id=UUID(ws), provider="meta", account_id="7070", tokens={"access_token": "EAAmetrictoken"}))
        port = free_port()
        env = {**os.environ, "METRICX_DATABASE_URL": database, "METRICX_RAW_TOPIC": topics.raw,
               "METRICX_DEADLETTER_TOPIC": topics.deadletter, "METRICX_TOKEN_KEYS": f"k1:{key}",
               "METRICX_META_GRAPH_URL": graph.url, "METRICX_METRICS_PORT": str(port), "PYTHONUNBUFFERED": "1"}
        with open(tmp_path / "poller.log", "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "metricx.cli", "poller", "--interval", "0.5"], env=env,
                                    stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
        try:
            def both_loops() -> bool:
                assert proc.poll() is None, (tmp_path / "poller.log").read_text()[-3000:]
                try:
                    return total(scrape(port), "metricx_poller_syncs_total", provider="meta", status="ok") == 2
                except httpx.HTTPError:
                    return False

            wait_until(both_loops, 120, "the hot and the warm sync")
            m = scrape(port)
            assert value(m, "metricx_platform_api_calls_total", provider="meta") == len(graph.requests) > 0
            published = value(m, "metricx_poller_snapshots_published_total", provider="meta")
            on_topic = consume_all(services.kafka.bootstrap, topics.raw, int(published))
            assert published == len(on_topic) > 0
            assert value(m, "metricx_platform_throttled_total", provider="meta") == 0
            assert httpx.get(f"http://127.0.0.1:{port}/readyz").json()["status"] == "ok"
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    assert "EAAmetrictoken" not in (tmp_path / "poller.log").read_text()

"""The whole live path with real parts: snapshots produced into Kafka -> the Bytewax
pipeline process -> PostgreSQL + Redis stream -> this server's /stream and /dashboard."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import psycopg

from adapters.kafka import Producer, publish_snapshots
from ground.settings import Settings
from tests.integration.conftest import Pipeline, Topics, pipeline, topics  # noqa: F401 - fixtures
from tests.serving.conftest import Issuer, Server, Tenants, snapshot, today_utc
from tests.serving.test_stream import Sse, open_stream, stream_token


def test_kafka_snapshot_reaches_stream_and_dashboard(services: Settings, topics: Topics, pipeline: Pipeline,  # noqa: F811
                                                     server: Server, issuer: Issuer, tenants: Tenants,
                                                     database: str) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    first, second = now - timedelta(minutes=3), now - timedelta(minutes=1)
    day = today_utc()
    if first.date() != day:  # just after midnight: keep both polls on today
        first, second = now - timedelta(seconds=20), now - timedelta(seconds=10)
    snaps = [
        snapshot(tenants.ws_a, ad="ad-1", day=day, captured_at=first, spend="12.5", impressions=1000, clicks=10,
                 conversions="1", revenue="40"),
        snapshot(tenants.ws_a, ad="ad-1", day=day, captured_at=second, spend="20", impressions=1600, clicks=16,
                 conversions="2", revenue="90.5"),
        snapshot(tenants.ws_b, ad="b-1", day=day, captured_at=second, spend="555", impressions=5, clicks=1),
    ]
    with open_stream(server.base, stream_token(server.base, issuer, tenants), tenants) as r:
        sse = Sse(r)
        sse.next_event("ready")
        producer = Producer(services.kafka.bootstrap)
        publish_snapshots(producer, snaps, topics.raw)
        producer.flush()
        pipeline.start()
        spend, clicks = Decimal(0), 0
        while spend < Decimal("20"):  # the stream announces deltas; they add up to the latest total
            ev = sse.next_event("update")
            for c in json.loads(ev["data"])["changes"]:
                spend += Decimal(c["spend"])
                clicks += c["clicks"]
        assert (spend, clicks) == (Decimal("20"), 16)
    r2 = httpx.get(f"{server.base}/dashboard", params={"workspace_id": str(tenants.ws_a)},
                   headers={"Authorization": f"Bearer {issuer.token(tenants.alice)}"})
    assert r2.status_code == 200
    k = r2.json()["kpis"]
    assert (Decimal(k["spend"]["value"]), k["clicks"]["value"], Decimal(k["revenue"]["value"])) == \
        (Decimal("20"), 16, Decimal("90.5"))
    assert Decimal(k["roas"]["value"]) == Decimal("4.525")
    with psycopg.connect(database) as conn:
        row = conn.execute("SELECT sum(spend), sum(revenue) / NULLIF(sum(spend), 0) FROM metrics_daily "
                           "WHERE workspace_id = %s AND report_date = %s", (tenants.ws_a, day)).fetchone()
    assert row is not None and row[0] == Decimal("20") and round(row[1], 6) == Decimal("4.525")

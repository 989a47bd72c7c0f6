"""Malformed input lands in the dead-letter topic with its bytes and a reason;
everything valid next to it is still counted exactly once."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from connectors.kafka import Producer, encode_snapshot
from metricx.settings import Settings
from schemas.envelope import H_OFFSET, H_PARTITION, H_REASON, H_STAGE, H_TOPIC
from schemas.metrics import Metrics
from tests.factories import metrics, snap
from tests.integration.conftest import Pipeline, Topics
from tests.integration.totals import (
    SeriesKey,
    consume_all,
    header,
    normalise,
    per_series,
    progress,
    wait_until,
)


def test_bad_messages_are_dead_lettered_and_good_ones_counted(
    services: Settings, topics: Topics, database: str, pipeline: Pipeline
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    day = (now - timedelta(minutes=60)).date()  # never after a capture's day, even just past midnight
    good = [snap(now - timedelta(minutes=60 - i), day, metrics(f"{i}.25", 10 * i, i), entity=f"ad-{i % 3}")
            for i in range(1, 13)]
    base = good[0].to_event()
    k0 = encode_snapshot(good[0])[0]
    bad_values: list[tuple[bytes, bytes | None]] = [
        (k0, b"{not json"),
        (k0, b"\xff\xfe\x00binary"),
        (k0, json.dumps({**base, "impressions": "many"}).encode()),
        (k0, json.dumps({**base, "schema": "metricx.insight.v9"}).encode()),
        (k0, json.dumps({k: v for k, v in base.items() if k != "captured_at"}).encode()),
        (k0, json.dumps({**base, "spend": "1e15"}).encode()),
        (k0, json.dumps({**base, "captured_at": (now + timedelta(days=2)).isoformat()}).encode()),
        (b"sim:act-1:somebody-else", json.dumps(base).encode()),
        (k0, None),
    ]
    # Valid events the series stage must refuse: a conflicting rewrite of an applied
    # snapshot, and a report date beyond the restatement window.
    last = good[-1]  # the newest snapshot of its series
    conflict = snap(last.captured_at, last.report_date, metrics("999"), entity=last.entity_id)
    too_old = snap(now, day - timedelta(days=60), metrics("1"), entity="ad-0")

    producer = Producer(services.kafka_bootstrap)
    expected_bad: list[tuple[bytes | None, str]] = []
    for s in good:
        k, v = encode_snapshot(s)
        producer.send(topics.raw, v, k)
    producer.flush()
    for bad_k, bad_v in bad_values:
        producer.send(topics.raw, bad_v if bad_v is not None else None, bad_k)  # type: ignore[arg-type]
        expected_bad.append((bad_v, "validate"))
    for s in (conflict, too_old):
        k, v = encode_snapshot(s)
        producer.send(topics.raw, v, k)
        expected_bad.append((v, "series"))
    producer.flush()
    total = len(good) + len(expected_bad)

    pipeline.start()
    wait_until(lambda: progress(database, topics.raw) >= total, 90, "all messages committed", pipeline.assert_running)

    dead = consume_all(services.kafka_bootstrap, topics.deadletter, len(expected_bad))
    assert len(dead) == len(expected_bad)
    got = sorted(((m.value() or b""), header(m, H_STAGE).decode()) for m in dead)
    assert got == sorted(((v or b""), stage) for v, stage in expected_bad)
    for m in dead:
        assert header(m, H_REASON).decode().strip()
        assert header(m, H_TOPIC).decode() == topics.raw
        assert 0 <= int(header(m, H_PARTITION)) < topics.partitions and int(header(m, H_OFFSET)) >= 0

    reasons = " | ".join(header(m, H_REASON).decode() for m in dead)
    for fragment in ("not valid JSON", "impressions", "schema", "captured_at", "spend", "future",
                     "does not match", "tombstone", "conflicting", "restatement window"):
        assert fragment in reasons, fragment

    # Every good snapshot counted once: per series, deltas sum to the latest snapshot.
    expected: dict[SeriesKey, Metrics] = {}
    for s in good:
        expected[(s.workspace_id, s.provider, s.account_id, s.entity_id, s.report_date)] = s.metrics
    assert normalise(per_series(database, "metric_deltas")) == normalise(expected)
    assert normalise(per_series(database, "metrics_daily")) == normalise(expected)

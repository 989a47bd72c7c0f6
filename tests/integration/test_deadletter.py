"""Malformed input lands in the dead-letter topic with its bytes and a reason;
everything valid next to it is still counted exactly once."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import Message

from adapters.kafka import (
    Producer,
    deadletter_producer,
    delete_topics,
    encode_snapshot,
    ensure_topics,
    send_dead_letter,
)
from ground.settings import Settings
from schemas.envelope import (
    H_OFFSET,
    H_PARTITION,
    H_REASON,
    H_STAGE,
    H_TOPIC,
    DeadLetter,
    Envelope,
    deadletter_record,
)
from schemas.metrics import Metrics
from schemas.topics import TopicSpec, deadletter_topic_spec
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

    producer = Producer(services.kafka.bootstrap)
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

    dead = consume_all(services.kafka.bootstrap, topics.deadletter, len(expected_bad))
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


# Header names as the README documents them (the contract a replay tool reads).
TRUNCATED, VALUE_BYTES, VALUE_SHA256 = "metricx.dlq.truncated", "metricx.dlq.value_bytes", "metricx.dlq.value_sha256"


def _headers(m: Message) -> dict[str, bytes]:
    raw = m.headers() or []
    return {k: v for k, v in (raw.items() if isinstance(raw, dict) else raw) if isinstance(v, bytes)}


@pytest.mark.services
def test_oversized_records_never_stop_the_pipeline(
    services: Settings, topics: Topics, database: str, pipeline: Pipeline
) -> None:
    """Records as large as the raw topic lets in, whatever their key or compression, are
    dead-lettered (whole, or cut with a marker and the original's hash) and the records
    after them are committed: no record stops the pipeline for every other tenant."""
    now = datetime.now(UTC).replace(microsecond=0)
    day = (now - timedelta(minutes=60)).date()
    before = [snap(now - timedelta(minutes=50 - i), day, metrics(f"{i}.5", 10 * i, i), entity=f"ad-{i}")
              for i in range(1, 4)]
    after = [snap(now - timedelta(minutes=30 - i), day, metrics(f"{i}7", 100 * i, i), entity=f"ad-{i}")
             for i in range(1, 4)]
    key0, good_value = encode_snapshot(before[0])
    # The largest record a default producer sends: with the dead-letter headers its copy
    # is over a default producer's 1,000,000 bytes.
    near_limit = b"x" * 999_800
    # A valid payload under a 600 KB key (refused: the key does not match the payload).
    huge_key = b"sim:act-1:" + b"k" * 600_000
    # 3 MB that its producer compresses into a batch far below the raw topic's limit:
    # bigger than any dead letter may be, so its copy must be cut.
    compressed = b'{"pad": "' + b"y" * 3_000_000 + b'"}'

    producer = Producer(services.kafka.bootstrap)
    for s in before:
        k, v = encode_snapshot(s)
        producer.send(topics.raw, v, k)
    producer.send(topics.raw, near_limit, key0)
    producer.send(topics.raw, good_value, huge_key)
    producer.flush()
    big = Producer(services.kafka.bootstrap, extra={"message.max.bytes": 4_000_000, "compression.type": "lz4"})
    big.send(topics.raw, compressed, key0)
    big.flush()
    for s in after:
        k, v = encode_snapshot(s)
        producer.send(topics.raw, v, k)
    producer.flush()
    total = len(before) + 3 + len(after)

    pipeline.start()
    wait_until(lambda: progress(database, topics.raw) >= total, 120, "every record committed", pipeline.assert_running)
    pipeline.assert_running()

    dead = {bytes(m.value() or b"")[:32]: m for m in consume_all(services.kafka.bootstrap, topics.deadletter, 3)}
    assert len(dead) == 3
    whole = dead[near_limit[:32]]
    assert whole.value() == near_limit and whole.key() == key0 and TRUNCATED not in _headers(whole)
    keyed = dead[good_value[:32]]
    assert keyed.value() == good_value and keyed.key() == huge_key and TRUNCATED not in _headers(keyed)
    for m in (whole, keyed):
        reason = header(m, H_REASON)
        assert reason.strip() and len(reason) <= 2_000 and b"k" * 100 not in reason
        assert header(m, H_STAGE) == b"validate"
    cut = dead[compressed[:32]]
    hs = _headers(cut)
    assert hs[TRUNCATED] and compressed.startswith(cut.value() or b"x") and len(cut.value() or b"") < len(compressed)
    assert int(hs[VALUE_BYTES]) == len(compressed)
    assert hs[VALUE_SHA256].decode() == hashlib.sha256(compressed).hexdigest()
    assert cut.key() == key0 and header(cut, H_STAGE) == b"validate"

    expected = {(s.workspace_id, s.provider, s.account_id, s.entity_id, s.report_date): s.metrics for s in after}
    assert normalise(per_series(database, "metrics_daily")) == normalise(expected)
    assert normalise(per_series(database, "metric_deltas")) == normalise(expected)


@pytest.mark.services
def test_an_existing_deadletter_topic_is_resized_and_takes_the_largest_dead_letters(services: Settings) -> None:
    """A dead-letter topic created with Kafka's default size (before it had one) gets
    the spec's size from ``ensure_topics``; then the broker acknowledges the largest
    dead letter kept whole, and the smallest one cut."""
    name = f"metricx.deadletter.t{uuid.uuid4().hex[:8]}"
    ensure_topics(services.kafka.bootstrap, [TopicSpec(name, 1)])
    try:
        ensure_topics(services.kafka.bootstrap, [deadletter_topic_spec(name)])
        producer = deadletter_producer(services.kafka.bootstrap, "metricx-test")

        def dl(n: int) -> DeadLetter:
            return DeadLetter(Envelope(b"sim:a:b", b"v" * n, "raw", 0, 1, None), "r" * 5000, "validate")

        now = datetime.now(UTC)
        lo, hi = 0, 2 * producer.max_message_bytes  # the largest value kept whole, by bisection
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if not deadletter_record(dl(mid), now, producer.max_message_bytes).truncated \
                else (lo, mid - 1)
        assert lo > 2_000_000
        for n in (lo, lo + 1):
            send_dead_letter(producer, dl(n), name)
        producer.flush()  # raises if the broker refused either
        got = consume_all(services.kafka.bootstrap, name, 2)
        assert len(got) == 2 and len(got[0].value() or b"") == lo
        assert TRUNCATED not in _headers(got[0]) and _headers(got[1])[TRUNCATED] == b"value"
    finally:
        delete_topics(services.kafka.bootstrap, [name])

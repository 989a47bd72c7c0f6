"""The topics are listed once (``schemas.topics``) and created from that list wherever
they are created (``metricx topics``, which ``deploy/services.sh create-topics`` and
``make topics`` run; the pipeline at start), and the dead-letter topic takes the largest
record the raw topic accepts, with the largest headers, whole."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from adapters.kafka import deadletter_producer
from ground.settings import REPO_ROOT, KafkaSettings
from schemas.envelope import DeadLetter, Envelope, deadletter_record
from schemas.topics import (
    ALERTS_PARTITIONS,
    DEADLETTER_MESSAGE_MAX_BYTES,
    DEADLETTER_TOPIC_MAX_BYTES,
    RAW_MAX_MESSAGE_BYTES,
)

RECORD_BATCH_HEADER = 61  # Kafka's v2 record batch header, in bytes (the protocol's number)


def test_services_sh_creates_the_topics_through_metricx_topics_and_lists_none_itself() -> None:
    text = (REPO_ROOT / "deploy" / "services.sh").read_text()
    body = text[text.index("cmd_create_topics() {"):]
    body = body[: body.index("\n}\n")]
    assert re.search(r"-m metricx\.cli topics\b", body)
    # no second list: no topic name, size or policy of its own
    assert not re.search(r"metricx\.(insights|deadletter|alerts|rules)|max\.message\.bytes|cleanup\.policy", body)


def test_every_topic_has_one_spec_with_the_documented_sizes() -> None:
    kafka = KafkaSettings(raw_topic="r", deadletter_topic="d", alerts_topic="a", rules_topic="q", raw_partitions=6)
    specs = {s.name: s for s in kafka.topics()}
    assert sorted(specs) == ["a", "d", "q", "r"]
    assert (specs["r"].partitions, dict(specs["r"].config)) == (6, {"max.message.bytes": "1048588"})
    assert (specs["d"].partitions, dict(specs["d"].config)) == (1, {"max.message.bytes": str(2 * 1024 * 1024 + 65536)})
    assert (specs["q"].partitions, dict(specs["q"].config)) == (1, {"cleanup.policy": "compact"})
    # one alerts partition count, whatever the input topic's
    assert specs["a"].partitions == ALERTS_PARTITIONS == 1 and not specs["a"].config
    assert {s.name: s.partitions for s in kafka.topics(2)}["r"] == 2


def test_the_dead_letter_producer_and_topic_take_the_largest_raw_record_whole() -> None:
    # A batch of one record fills the raw topic's limit: record = limit - batch header.
    largest = RAW_MAX_MESSAGE_BYTES - RECORD_BATCH_HEADER
    worst = DeadLetter(Envelope(b"k" * 1000, b"v" * (largest - 1000), "t" * 249, 2**31 - 1, 2**63 - 1, None),
                       "r" * 10**6, "validate")
    limit = deadletter_producer("127.0.0.1:1", "test").max_message_bytes  # no broker needed to build one
    assert limit == DEADLETTER_MESSAGE_MAX_BYTES
    assert not deadletter_record(worst, datetime.now(UTC), limit).truncated
    # The producer sends uncompressed batches of at most its limit plus a batch header.
    assert DEADLETTER_TOPIC_MAX_BYTES >= DEADLETTER_MESSAGE_MAX_BYTES + RECORD_BATCH_HEADER

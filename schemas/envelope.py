"""Where a message came from, carried next to it so that anything refused later in the
flow can still be dead-lettered with its original bytes and position."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(slots=True)
class Envelope:
    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int
    produced_at: datetime | None  # the Kafka message timestamp


@dataclass(slots=True)
class DeadLetter:
    envelope: Envelope
    reason: str
    stage: str  # "validate" | "series"


# Dead-letter contract: the message on ``metricx.deadletter`` keeps the original key and
# value bytes untouched (so it can be replayed as is); why and where are in headers,
# in the style of Kafka Connect's error-context headers.
DEADLETTER_TOPIC = "metricx.deadletter"
H_REASON = "metricx.dlq.reason"
H_STAGE = "metricx.dlq.stage"
H_TOPIC = "metricx.dlq.topic"
H_PARTITION = "metricx.dlq.partition"
H_OFFSET = "metricx.dlq.offset"
H_FAILED_AT = "metricx.dlq.failed_at"


def deadletter_headers(dl: DeadLetter, failed_at: datetime) -> list[tuple[str, bytes]]:
    env = dl.envelope
    return [
        (H_REASON, dl.reason.encode()),
        (H_STAGE, dl.stage.encode()),
        (H_TOPIC, env.topic.encode()),
        (H_PARTITION, str(env.partition).encode()),
        (H_OFFSET, str(env.offset).encode()),
        (H_FAILED_AT, failed_at.isoformat().encode()),
    ]

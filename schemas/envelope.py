"""Where a message came from, carried next to it so that anything refused later in the
flow can still be dead-lettered with its original bytes and position."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(slots=True)
class Envelope:
    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int
    produced_at: datetime | None  # the Kafka message timestamp


# Kafka's timestamp types (librdkafka's TIMESTAMP_NOT_AVAILABLE is 0, CREATE_TIME 1,
# LOG_APPEND_TIME 2), as the clients hand them over: (type, milliseconds since the epoch).
TIMESTAMP_NOT_AVAILABLE = 0


def envelope(key: bytes | None, value: bytes | None, topic: str | None, partition: int | None,
             offset: int | None, timestamp: tuple[int, int] | None) -> Envelope:
    """The envelope of one consumed Kafka message, from the parts every client exposes
    (confluent-kafka's ``Message`` through ``adapters.kafka.envelope_of``, Bytewax's
    ``KafkaSourceMessage`` in the flow).  One rule for the time: ``produced_at`` is the
    message's timestamp when it has one (a type other than not-available and a
    non-negative value), else None."""
    produced_at = None
    if timestamp is not None and timestamp[0] != TIMESTAMP_NOT_AVAILABLE and timestamp[1] >= 0:
        produced_at = datetime.fromtimestamp(timestamp[1] / 1000, UTC)
    return Envelope(key, value, topic or "", partition or 0, offset or 0, produced_at)


@dataclass(slots=True)
class DeadLetter:
    envelope: Envelope
    reason: str
    stage: str  # "validate" | "series" | "rules" | "notifier"


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
# Only on a dead letter too large to keep whole (see :func:`deadletter_record`): which
# parts were cut ("key", "value" or "key,value"), and the original's size and SHA-256
# (hex) per part, so a cut copy can still be matched to the record it came from.
H_TRUNCATED = "metricx.dlq.truncated"
H_KEY_BYTES = "metricx.dlq.key_bytes"
H_KEY_SHA256 = "metricx.dlq.key_sha256"
H_VALUE_BYTES = "metricx.dlq.value_bytes"
H_VALUE_SHA256 = "metricx.dlq.value_sha256"

# The headers are bounded whatever the input: a reason never carries more than this
# (UTF-8 bytes, cut at a character), so a dead letter is its record plus at most about
# 1.5 KB; the topic and the stage are short names of ours.
MAX_REASON_BYTES = 1000
MAX_TOPIC_BYTES = 255  # Kafka's own limit on a topic name is 249
# What Kafka adds to one record around key, value and headers (lengths, offsets,
# timestamp and attributes as varints; at most a few dozen bytes), with room to spare.
RECORD_FRAMING_BYTES = 512
# A cut key keeps at least this much (a key is a few dozen bytes when it is right).
KEEP_KEY_BYTES = 1024

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    """What goes on the dead-letter topic for one :class:`DeadLetter`."""

    key: bytes | None
    value: bytes
    headers: Headers

    @property
    def truncated(self) -> bool:
        return any(name == H_TRUNCATED for name, _ in self.headers)


def bounded(text: str, limit: int) -> bytes:
    """``text`` as UTF-8, at most ``limit`` bytes: cut at a character boundary, with a
    note of how long it was."""
    raw = text.encode(errors="replace")
    if len(raw) <= limit:
        return raw
    note = f"… ({len(raw)} bytes)".encode()
    return raw[: max(0, limit - len(note))].decode(errors="ignore").encode() + note


def deadletter_headers(dl: DeadLetter, failed_at: datetime) -> Headers:
    env = dl.envelope
    return [
        (H_REASON, bounded(dl.reason, MAX_REASON_BYTES)),
        (H_STAGE, bounded(dl.stage, 64)),
        (H_TOPIC, bounded(env.topic, MAX_TOPIC_BYTES)),
        (H_PARTITION, str(env.partition).encode()),
        (H_OFFSET, str(env.offset).encode()),
        (H_FAILED_AT, failed_at.isoformat().encode()),
    ]


def headers_size(headers: Headers) -> int:
    """Bytes the headers take in a record (name and value, each with a length varint of
    at most 5 bytes)."""
    return sum(len(name.encode()) + len(value) + 10 for name, value in headers)


def deadletter_record(dl: DeadLetter, failed_at: datetime, max_bytes: int) -> DeadLetterRecord:
    """The dead letter of ``dl``, whole when it fits in a record of ``max_bytes`` (the
    producer's ``message.max.bytes``), else cut to fit, never refused.

    The dead-letter topic is sized above the largest record the raw topic accepts, so a
    cut is rare: it takes a record that its producer compressed into a batch the raw
    topic let in, or a raw topic someone allowed larger records.  The key is cut first
    (down to ``KEEP_KEY_BYTES``), then the value; both keep their beginning, and the
    headers say what was cut and carry the original's size and SHA-256.
    """
    env = dl.envelope
    key, value = env.key, env.value if env.value is not None else b""
    headers = deadletter_headers(dl, failed_at)
    klen, vlen = len(key or b""), len(value)
    room = max_bytes - RECORD_FRAMING_BYTES - headers_size(headers)
    if klen + vlen <= room:
        return DeadLetterRecord(key, value, headers)
    marks: Headers = []
    if key is not None:
        marks += [(H_KEY_BYTES, str(klen).encode()), (H_KEY_SHA256, hashlib.sha256(key).hexdigest().encode())]
    marks += [(H_VALUE_BYTES, str(vlen).encode()), (H_VALUE_SHA256, hashlib.sha256(value).hexdigest().encode())]
    room = max(0, room - headers_size([(H_TRUNCATED, b"key,value"), *marks]))
    keep_key = min(klen, max(min(KEEP_KEY_BYTES, room), room - vlen))
    keep_value = min(vlen, room - keep_key)
    cut = [part for part, kept, size in (("key", keep_key, klen), ("value", keep_value, vlen)) if kept < size]
    return DeadLetterRecord(
        key[:keep_key] if key is not None else None,
        value[:keep_value],
        [*headers, (H_TRUNCATED, ",".join(cut).encode()), *marks],
    )

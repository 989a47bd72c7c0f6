"""Kafka transport: the one producer path every publisher uses, and topic admin.

Why our own producer wrapper: a fire-and-forget ``produce`` loses messages silently
when the broker rejects them or the local queue overflows.  Here every message gets a
delivery callback, failures are counted and surfaced by :meth:`Producer.flush`, and the
producer is idempotent (``enable.idempotence``), so librdkafka's own retries never
duplicate or reorder a partition.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message
from confluent_kafka import Producer as _RdProducer
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    ResourceType,
)

from ground.metrics import HEALTH
from schemas.envelope import (
    DEADLETTER_TOPIC,
    DeadLetter,
    DeadLetterRecord,
    Envelope,
    deadletter_record,
    envelope,
)
from schemas.insight import RAW_TOPIC, Snapshot, insight_key
from schemas.topics import DEADLETTER_MESSAGE_MAX_BYTES, TopicSpec

log = logging.getLogger(__name__)

Headers = Sequence[tuple[str, bytes]]
OnDelivery = Callable[[KafkaError | None], None]

# Record sizes are the topics' (``schemas.topics``).  A record larger than the
# dead-letter producer takes (compressed by its producer into a batch the raw topic let
# in) is dead-lettered cut to fit, with a marker: never refused.
LIBRDKAFKA_DEFAULT_MESSAGE_MAX_BYTES = 1_000_000


class DeliveryError(RuntimeError):
    """Some messages were not acknowledged by the broker."""


class MessageTooLarge(DeliveryError):
    """The producer refused a message for its size before sending it: no retry helps."""


@dataclass
class DeliveryStats:
    delivered: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


class Producer:
    """An idempotent producer that never loses a message without saying so."""

    def __init__(
        self,
        bootstrap: str,
        *,
        client_id: str = "metricx",
        linger_ms: int = 5,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "client.id": client_id,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": linger_ms,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 500_000,
            "message.timeout.ms": 120_000,
        }
        config.update(extra or {})
        self._producer = _RdProducer(config)
        self.stats = DeliveryStats()
        self.max_message_bytes = int(config.get("message.max.bytes", LIBRDKAFKA_DEFAULT_MESSAGE_MAX_BYTES))

    def _on_delivery_then(self, then: OnDelivery, err: KafkaError | None, msg: Message) -> None:
        self._on_delivery(err, msg)
        then(err)

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.stats.delivered += 1
            return
        self.stats.failed += 1
        key = msg.key()
        shown = key if key is None or len(key) <= 64 else key[:64] + b"..."
        text = f"{msg.topic()}[{msg.partition()}] key={shown!r}: {err.str()}"
        if len(self.stats.errors) < 20:
            self.stats.errors.append(text)
        log.error("kafka delivery failed", extra={"topic": msg.topic(), "error": err.str()})

    def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | str | None = None,
        headers: Headers | None = None,
        on_delivery: OnDelivery | None = None,
    ) -> None:
        """Queue one message.  ``on_delivery`` also hears this message's outcome (None:
        acknowledged).  Raises :class:`MessageTooLarge` when the message is over this
        producer's ``message.max.bytes``; other refusals raise ``KafkaException``."""
        callback = self._on_delivery if on_delivery is None else partial(self._on_delivery_then, on_delivery)
        while True:
            try:
                self._producer.produce(
                    topic,
                    value=value,
                    key=key,
                    headers=list(headers) if headers else None,
                    on_delivery=callback,
                )
                break
            except BufferError:
                # Local queue full: serve callbacks until there is room, never drop.
                self._producer.poll(0.05)
            except KafkaException as exc:
                err = exc.args[0]
                if err.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                    size = len(value or b"") + len(key or b"") + sum(len(k) + len(v) for k, v in headers or ())
                    raise MessageTooLarge(
                        f"{topic}: a message of about {size} bytes is over message.max.bytes="
                        f"{self.max_message_bytes}"
                    ) from None
                raise
        self._producer.poll(0)

    def flush(self, timeout: float = 60.0) -> DeliveryStats:
        """Wait for every outstanding message; raise if any sent since the last flush was
        not delivered (each failure is reported once, then the count starts again)."""
        remaining = self._producer.flush(timeout)
        if remaining:
            raise DeliveryError(f"{remaining} messages still undelivered after {timeout}s")
        stats, self.stats = self.stats, DeliveryStats()
        if stats.failed:
            raise DeliveryError(f"{stats.failed} messages failed delivery: " + "; ".join(stats.errors))
        return stats

    def pending(self) -> int:
        return len(self._producer)


def envelope_of(msg: Message) -> Envelope:
    """Where a consumed message came from (:func:`schemas.envelope.envelope`, the one rule
    for its timestamp)."""
    return envelope(msg.key(), msg.value(), msg.topic(), msg.partition(), msg.offset(), msg.timestamp())


def encode_snapshot(snapshot: Snapshot) -> tuple[bytes, bytes]:
    """(key, value) of a snapshot on ``metricx.insights.raw``."""
    key = insight_key(snapshot.provider, snapshot.account_id, snapshot.entity_id)
    value = json.dumps(snapshot.to_event(), separators=(",", ":")).encode()
    return key.encode(), value


def publish_snapshots(producer: Producer, snapshots: Iterable[Snapshot], topic: str = RAW_TOPIC) -> int:
    n = 0
    for snap in snapshots:
        key, value = encode_snapshot(snap)
        producer.send(topic, value, key)
        n += 1
    return n


def deadletter_producer(bootstrap: str, client_id: str, extra: Mapping[str, Any] | None = None) -> Producer:
    """The producer every dead letter goes through: it takes a record as large as the
    raw topic's largest plus its headers (the dead-letter topic is created to match)."""
    return Producer(bootstrap, client_id=client_id, extra={
        **(extra or {}),
        "message.max.bytes": DEADLETTER_MESSAGE_MAX_BYTES,
        "compression.type": "none",  # so a batch is never larger than its records
    })


def ensure_topics(bootstrap: str, specs: Iterable[TopicSpec], timeout: float = 30.0) -> None:
    """Create missing topics; an existing topic with fewer partitions is grown to the
    spec's count (more are left alone: partitions cannot shrink, said in the log), and one
    whose configuration differs from its spec gets the spec's values (a dead-letter topic
    created before its size was set must not keep refusing large dead letters)."""
    specs = list(specs)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = admin.list_topics(timeout=timeout).topics
    _align_configs(admin, [s for s in specs if s.name in existing and s.config], timeout)
    _grow(admin, [(s, len(existing[s.name].partitions)) for s in specs if s.name in existing], timeout)
    new = [
        NewTopic(s.name, num_partitions=s.partitions, replication_factor=1, config=dict(s.config))
        for s in specs
        if s.name not in existing
    ]
    if new:
        for name, fut in admin.create_topics(new, operation_timeout=timeout).items():
            try:
                fut.result(timeout)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
            log.info("created topic", extra={"topic": name})
    # Wait until metadata shows every topic with its partitions (creation is async).
    deadline = time.monotonic() + timeout
    names = {s.name: s.partitions for s in specs}
    while time.monotonic() < deadline:
        md = admin.list_topics(timeout=timeout).topics
        if all(n in md and len(md[n].partitions) >= p and md[n].error is None for n, p in names.items()):
            return
        time.sleep(0.2)
    raise TimeoutError(f"topics not ready after {timeout}s: {sorted(names)}")


def _grow(admin: AdminClient, have: list[tuple[TopicSpec, int]], timeout: float) -> None:
    """Add partitions to topics that have fewer than their spec asks for.  (A key's
    partition changes with the count: what a key had sent before stays where it was.)"""
    grow = [NewPartitions(s.name, s.partitions) for s, n in have if n < s.partitions]
    for s, n in have:
        if n > s.partitions:
            log.warning("topic has more partitions than asked for; partitions cannot shrink",
                        extra={"topic": s.name, "partitions": n, "asked": s.partitions})
        elif n < s.partitions:
            log.info("growing topic", extra={"topic": s.name, "from": n, "to": s.partitions})
    for fut in admin.create_partitions(grow, operation_timeout=timeout).values() if grow else ():
        fut.result(timeout)


def _align_configs(admin: AdminClient, specs: list[TopicSpec], timeout: float) -> None:
    if not specs:
        return
    resources = {s.name: ConfigResource(ResourceType.TOPIC, s.name) for s in specs}
    current = {name: fut.result(timeout) for name, fut in
               zip(resources, admin.describe_configs(list(resources.values()), request_timeout=timeout).values(),
                   strict=True)}
    changes = []
    for s in specs:
        differs = {k: v for k, v in s.config.items() if k not in current[s.name] or current[s.name][k].value != v}
        if differs:
            changes.append(ConfigResource(ResourceType.TOPIC, s.name, incremental_configs=[
                ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in differs.items()]))
            log.info("aligning topic configuration", extra={"topic": s.name, "config": differs})
    for fut in admin.incremental_alter_configs(changes, request_timeout=timeout).values() if changes else ():
        fut.result(timeout)


def delete_topics(bootstrap: str, names: Iterable[str], timeout: float = 30.0) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = list(names)
    existing = admin.list_topics(timeout=timeout).topics
    todo = [n for n in names if n in existing]
    if not todo:
        return
    for fut in admin.delete_topics(todo, operation_timeout=timeout).values():
        try:
            fut.result(timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not set(todo) & set(admin.list_topics(timeout=timeout).topics):
            return
        time.sleep(0.2)


def check_reachable(bootstrap: str, timeout: float = 5.0) -> None:
    """Fail fast with a message naming the setting when Kafka is not there."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.connection.setup.timeout.ms": 3000})
    try:
        admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise ConnectionError(
            f"METRICX_KAFKA_BOOTSTRAP={bootstrap}: Kafka is not reachable ({exc.args[0].str()}); "
            "start it with `make services-up` or fix the setting"
        ) from None


def send_dead_letter(producer: Producer, dl: DeadLetter, topic: str = DEADLETTER_TOPIC) -> DeadLetterRecord:
    """Queue ``dl`` on the dead-letter topic, cut to fit this producer when it must be
    (:func:`schemas.envelope.deadletter_record`): whatever the refused record's size or
    shape, this never raises for it (a broken broker still raises, at ``flush``)."""
    env = dl.envelope
    failed_at = datetime.now(UTC)
    limit = producer.max_message_bytes
    while True:
        record = deadletter_record(dl, failed_at, limit)
        try:
            producer.send(topic, record.value, record.key, record.headers)
            break
        except MessageTooLarge:
            # The framing estimate was short of what this producer counts: cut deeper.
            if limit < 4096:
                raise
            limit //= 2
    log.warning(
        "dead-lettered",
        extra={
            "topic": env.topic,
            "partition": env.partition,
            "offset": env.offset,
            "stage": dl.stage,
            "reason": dl.reason[:1000],
            "truncated": record.truncated,
            "value_bytes": len(env.value or b""),
            "key_bytes": len(env.key or b""),
        },
    )
    return record


def flush_until_delivered(producer: Producer, what: str, *, wait_s: float = 10.0) -> DeliveryStats:
    """Flush, and while the broker is away keep waiting (the messages stay queued in the
    client, which reconnects by itself), saying so in the log and ``/readyz``, instead of
    failing the caller after a timeout.  For producers built with ``message.timeout.ms``
    0 (no delivery deadline).  A message the broker refused for good still raises."""
    while True:
        try:
            stats = producer.flush(wait_s)
        except DeliveryError as exc:
            if producer.pending() == 0:
                raise
            HEALTH.down("kafka", f"{what} not acknowledged yet: {exc}")
            continue
        HEALTH.up("kafka")
        return stats

"""The insight dataflow, wired with Bytewax 0.21:

    Kafka metricx.insights.raw
      -> validate --(invalid: dead letter)-------------------------------+
      -> key by entity -> series state (deltas + 15-min buckets)           |
                            --(refused: window / conflict: dead letter)----+
                            --(applied / ignored)--------------------------+-> commit sink
                            --(applied, workspace has rules)                 |
      -> key by campaign -> stop-loss watch (windowed sums) --(alerts)-------+
        commit sink, per batch: send dead letters and wait for the broker's ack,
        one DB transaction (rows + Kafka progress), then the Redis live update.

Only this module and :mod:`pipelines.run` know Bytewax exists; the steps are plain
functions (:mod:`pipelines.steps`), so another engine or a plain loop can drive them.

Delivery guarantee: Bytewax recovery snapshots state and Kafka offsets together every
``METRICX_SNAPSHOT_INTERVAL_S``; after a crash the flow resumes from the last snapshot
and replays what followed (at-least-once).  Every write is idempotent (see
``adapters.timescale``), so totals are exact.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaError, KafkaSource, KafkaSourceMessage
from bytewax.dataflow import Dataflow
from bytewax.inputs import StatefulSourcePartition
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from confluent_kafka import OFFSET_BEGINNING, TIMESTAMP_NOT_AVAILABLE, Consumer, TopicPartition
from confluent_kafka import KafkaError as ConfluentKafkaError

from domain.deltas import Applied, Outcome
from domain.rulebook import RuleBook
from domain.stoploss.watch import DEFAULT_WARMUP
from ground.metrics import HEALTH, KAFKA_ERRORS, SNAPSHOT_SECONDS
from ground.settings import Settings
from pipelines.commit import BackgroundCommitter, Committer
from pipelines.idle_state import idle_expiring_flat_map, idle_expiring_map
from pipelines.steps import (
    SinkItem,
    fold,
    is_refused,
    to_dead_letter,
    validate,
    watch_step,
    watch_target,
)
from schemas.envelope import DeadLetter, Envelope
from schemas.rules import MAX_DAYS

log = logging.getLogger("metricx.pipeline")


def envelope(msg: KafkaSourceMessage[bytes | None, bytes | None]) -> Envelope:
    produced_at = None
    if msg.timestamp is not None and msg.timestamp[0] != TIMESTAMP_NOT_AVAILABLE:
        produced_at = datetime.fromtimestamp(msg.timestamp[1] / 1000, UTC)
    return Envelope(msg.key, msg.value, msg.topic or "", msg.partition or 0, msg.offset or 0, produced_at)


def _validate_message(
    msg: KafkaSourceMessage[bytes | None, bytes | None] | KafkaError[bytes | None, bytes | None],
) -> Any:
    # Our source partitions (_KafkaPartition) never emit errors; the union is only the
    # declared type of Bytewax's source.
    assert isinstance(msg, KafkaSourceMessage)
    return validate(envelope(msg), datetime.now(UTC))


class _CommitPartition(StatefulSinkPartition[SinkItem, None]):
    def __init__(self, committer: BackgroundCommitter) -> None:
        self._committer = committer

    def write_batch(self, values: list[SinkItem]) -> None:
        self._committer.submit(values)

    def snapshot(self) -> None:
        # Called at the end of every epoch, before Bytewax records the epoch as
        # recoverable: wait until the database holds everything written so far.
        with SNAPSHOT_SECONDS.time():
            self._committer.drain()

    def close(self) -> None:
        self._committer.close()


class CommitSink(FixedPartitionedSink[SinkItem, None]):
    """Keyed by entity; one partition (connection + commit thread) per worker."""

    def __init__(self, settings: Settings, consumer: str, partitions: int) -> None:
        self._settings = settings
        self._consumer = consumer
        self._partitions = partitions

    def list_parts(self) -> list[str]:
        return [f"commit-{i}" for i in range(self._partitions)]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _CommitPartition:
        committer = Committer(self._settings, consumer=self._consumer, worker=for_part)
        return _CommitPartition(BackgroundCommitter(committer))


class _StoppablePartition(StatefulSourcePartition[Any, Any]):
    """Ends its partition's input once ``stop`` is set.  When every input has ended,
    Bytewax closes the last epoch like at the end of a bounded topic: the sinks drain,
    state and offsets are snapshotted, and the run returns — a clean stop that the next
    start resumes exactly, where a KeyboardInterrupt raised inside the source's Python
    code made Bytewax panic (and replay the epoch)."""

    def __init__(self, inner: StatefulSourcePartition[Any, Any], stop: threading.Event) -> None:
        self._inner, self._stop = inner, stop

    def next_batch(self) -> Iterable[Any]:
        if self._stop.is_set():
            raise StopIteration
        return self._inner.next_batch()

    def next_awake(self) -> datetime | None:
        return self._inner.next_awake()

    def snapshot(self) -> Any:
        return self._inner.snapshot()

    def close(self) -> None:
        self._inner.close()


# Consumer errors are of two kinds.  The broker being away or moving (transport errors,
# all brokers down, a leader election, metadata not known yet): librdkafka reconnects and
# resumes fetching from its position by itself, so these are logged, counted and shown
# in /readyz, never raised — Bytewax's own source raises on any error and the whole flow
# stopped for a broker restart.  And the ones retrying cannot fix: a fatal client error,
# or the position gone from the log (retention deleted unread data): the flow stops
# with the error, as an operator must decide (``auto.offset.reset=error`` makes the
# second visible instead of silently skipping to the end).
_GONE = frozenset({ConfluentKafkaError.OFFSET_OUT_OF_RANGE, ConfluentKafkaError._AUTO_OFFSET_RESET})


class _KafkaPartition(StatefulSourcePartition[KafkaSourceMessage[bytes | None, bytes | None], int]):
    """One topic partition, read from ``offset``; the resume state is the next offset."""

    def __init__(self, config: dict[str, Any], topic: str, partition: int, offset: int, batch_size: int) -> None:
        self._topic, self._partition, self._offset, self._batch_size = topic, partition, offset, batch_size
        self._eof = False
        self._failed: ConfluentKafkaError | None = None
        self._consumer = Consumer({**config, "error_cb": self._on_error})
        self._consumer.assign([TopicPartition(topic, partition, offset)])

    def _on_error(self, err: ConfluentKafkaError) -> None:
        KAFKA_ERRORS.labels("pipeline", err.name()).inc()
        if err.fatal() or err.code() in _GONE:
            self._failed = err
            return
        HEALTH.down("kafka", f"{self._topic}[{self._partition}]: {err.str()}")
        log.warning("kafka consumer error; the client retries", extra={
            "topic": self._topic, "partition": self._partition, "code": err.name(), "error": err.str()})

    def next_batch(self) -> list[KafkaSourceMessage[bytes | None, bytes | None]]:
        if self._eof:
            raise StopIteration
        msgs = self._consumer.consume(self._batch_size, 0.001)
        batch: list[KafkaSourceMessage[bytes | None, bytes | None]] = []
        last = None
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.code() == ConfluentKafkaError._PARTITION_EOF:
                    self._eof = True
                    break
                self._on_error(err)
                continue
            # Headers are not copied: nothing downstream reads them (a dead letter keeps
            # the original key and value, and says why in headers of its own).
            batch.append(KafkaSourceMessage(
                key=msg.key(), value=msg.value(), topic=msg.topic(), headers=[],
                latency=msg.latency(), offset=msg.offset(), partition=msg.partition(), timestamp=msg.timestamp(),
            ))
            last = msg.offset()
        if self._failed is not None:
            raise RuntimeError(f"kafka {self._topic}[{self._partition}] at offset {self._offset}: "
                               f"{self._failed.str()} ({self._failed.name()}); not retried")
        if last is not None:
            self._offset = last + 1
            HEALTH.up("kafka")
        return batch

    def snapshot(self) -> int:
        return self._offset

    def close(self) -> None:
        self._consumer.close()


class LoggingKafkaSource(KafkaSource):
    """Bytewax's Kafka source (its partition listing, its resume states), with our
    partitions: they say where each one resumes, survive a broker restart, and end
    their input when ``stop`` is set."""

    def __init__(self, brokers: list[str], topics: list[str], *, tail: bool = True,
                 starting_offset: int = OFFSET_BEGINNING, batch_size: int = 1000,
                 stop: threading.Event | None = None) -> None:
        super().__init__(brokers, topics, tail=tail, starting_offset=starting_offset, batch_size=batch_size)
        self._config: dict[str, Any] = {
            # Positions are Bytewax's recovery state, not a consumer group's.
            "group.id": "BYTEWAX_IGNORED",
            "enable.auto.commit": False,
            "bootstrap.servers": ",".join(brokers),
            "enable.partition.eof": not tail,
            "auto.offset.reset": "error",
        }
        self._topic_names = set(topics)
        self._start = starting_offset
        self._batch = batch_size
        self._stop = stop

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> Any:
        log.info(
            "kafka partition assigned",
            extra={"partition": for_part, "resume_offset": resume_state},
        )
        idx, topic = for_part.split("-", 1)
        if topic not in self._topic_names:
            raise RuntimeError(f"recovery state names topic {topic!r}, not one of {sorted(self._topic_names)}")
        offset = self._start if resume_state is None else resume_state
        part = _KafkaPartition(dict(self._config), topic, int(idx), offset, self._batch)
        return part if self._stop is None else _StoppablePartition(part, self._stop)


def _dead_letter_key(dl: DeadLetter) -> str:
    return f"{dl.envelope.topic}:{dl.envelope.partition}"


def _target(book: RuleBook, kv: tuple[str, tuple[Outcome, Envelope]]) -> tuple[str, Applied] | None:
    return watch_target(book, kv[1][0])


# Idle keys lose their state (pipelines.idle_state).  A series (one ad) may go once no
# snapshot it could still receive needs it: a snapshot is accepted up to the restatement
# window after its report date, so an ad silent for longer than that (plus two days for
# time zones and the poll's own lag) can only come back with days it never reported.
# A watch may go once its longest window (MAX_DAYS) holds nothing of what it kept; a
# campaign that comes back starts a new watch, warm-up included.
WATCH_IDLE_TTL = timedelta(days=MAX_DAYS + 2)


def series_idle_ttl(window_days: int) -> timedelta:
    return timedelta(days=window_days + 2)


def build_flow(
    settings: Settings,
    *,
    consumer: str = "pipeline",
    commit_partitions: int = 1,
    book: RuleBook | None = None,
    warmup: timedelta = DEFAULT_WARMUP,
    stop: threading.Event | None = None,
) -> Dataflow:
    """``book``: the stop-loss rules side input (``pipelines.rules_feed`` keeps it
    current); without one the flow has no stop-loss step at all.  ``stop``: once set,
    the input ends and the run returns after its last epoch is committed."""
    flow = Dataflow("metricx_insights")
    source = LoggingKafkaSource(
        settings.brokers,
        [settings.raw_topic],
        tail=True,
        starting_offset=OFFSET_BEGINNING,
        batch_size=settings.kafka_batch_size,
        stop=stop,
    )
    raw = op.input("raw", flow, source)
    checked = op.map("validate", raw, _validate_message)
    valid = op.branch("is_valid", checked, lambda x: not isinstance(x, DeadLetter))
    keyed = op.key_on("by_entity", valid.trues, lambda item: item[0].entity_key)
    folded = idle_expiring_map(
        "series", keyed, partial(fold, window_days=settings.restatement_window_days),
        series_idle_ttl(settings.restatement_window_days),
    )
    refused = op.branch("is_refused", folded, lambda kv: is_refused(kv[1]))
    refusals = op.map_value("refusal", refused.trues, to_dead_letter)
    invalid = op.key_on("dead_letter_key", valid.falses, _dead_letter_key)
    outputs = [refused.falses, invalid, refusals]
    if book is not None:
        # Re-keyed by campaign: one stateful step owns the windowed sums and alert
        # marks of a campaign, its ad sets and its ads.
        watched = op.filter_map("watch_targets", refused.falses, partial(_target, book))
        outputs.append(idle_expiring_flat_map("stoploss", watched, partial(watch_step, book, warmup), WATCH_IDLE_TTL))
    everything = op.merge("all", *outputs)
    op.output("commit", everything, CommitSink(settings, consumer, commit_partitions))
    return flow

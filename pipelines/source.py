"""The flow's Kafka input: Bytewax's Kafka source (its partition listing and resume
states) with partitions of our own, which say where each one resumes, ride out a broker
restart, and end their input when the process is asked to stop (:mod:`ground.stopping`).

Built by :mod:`pipelines.run` and handed to :func:`pipelines.flow.build_flow`; a test
hands the flow Bytewax's ``TestingSource`` instead.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from bytewax.connectors.kafka import KafkaSource, KafkaSourceMessage
from bytewax.inputs import StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka import KafkaError as ConfluentKafkaError

from ground.metrics import HEALTH, KAFKA_ERRORS

log = logging.getLogger("metricx.pipeline")


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

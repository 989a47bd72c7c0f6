"""Consumer lag: how many messages each partition holds beyond a consumer's committed
position.  For the pipeline the committed position is what its database transactions
recorded (``pipeline_progress``), the only position that means "in the tables"; for
the notifier it is its consumer group's committed offsets.

Used by the pipeline's lag gauge (a side thread, :class:`LagMonitor`) and by
``metricx status``; both ask the broker for watermarks with one long-lived client.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaException, TopicPartition

from ground.metrics import CONSUMER_LAG, HEALTH

log = logging.getLogger(__name__)

Watermarks = dict[int, tuple[int, int]]  # partition -> (low, high)


def lag(marks: Watermarks, committed: dict[int, int]) -> dict[int, int]:
    """Per partition: high watermark minus the committed position, where a partition
    with no (or an expired) commit counts from the oldest message still kept."""
    return {p: max(0, high - max(committed.get(p, low), low)) for p, (low, high) in marks.items()}


def pipeline_committed(conn: psycopg.Connection[Any], consumer: str, topic: str) -> dict[int, int]:
    rows = conn.execute("SELECT partition, next_offset FROM pipeline_progress WHERE consumer = %s AND topic = %s",
                        (consumer, topic)).fetchall()
    return {int(p): int(o) for p, o in rows}


class BrokerProbe:
    """Watermarks and group offsets, through one client kept open between calls."""

    def __init__(self, bootstrap: str, *, timeout_s: float = 5.0) -> None:
        self._bootstrap = bootstrap
        self._timeout = timeout_s
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "metricx-lag-probe",
                                   "enable.auto.commit": False, "socket.connection.setup.timeout.ms": 3000,
                                   "error_cb": lambda err: None})  # failures surface as exceptions below

    def partitions(self, topic: str) -> list[int]:
        md = self._consumer.list_topics(topic, timeout=self._timeout)
        t = md.topics.get(topic)
        if t is None or t.error is not None:
            why = t.error.str() if t is not None and t.error is not None else "not found"
            raise KafkaException(f"topic {topic}: {why} (`metricx topics` creates it)")
        return sorted(t.partitions)

    def watermarks(self, topic: str) -> Watermarks:
        return {p: self._consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=self._timeout, cached=False)
                for p in self.partitions(topic)}

    def group_committed(self, group: str, topic: str) -> dict[int, int]:
        """A consumer group's committed offsets (partitions without one are left out)."""
        probe = Consumer({"bootstrap.servers": self._bootstrap, "group.id": group, "enable.auto.commit": False,
                          "error_cb": lambda err: None})
        try:
            tps = probe.committed([TopicPartition(topic, p) for p in self.partitions(topic)], timeout=self._timeout)
        finally:
            probe.close()
        return {tp.partition: tp.offset for tp in tps if tp.offset >= 0}

    def close(self) -> None:
        self._consumer.close()


class LagMonitor:
    """Sets ``metricx_consumer_lag`` for the pipeline every ``interval_s``; also the
    pipeline's Kafka probe when no message flows (``/readyz`` says when the broker is
    back even if nothing is being produced)."""

    def __init__(self, bootstrap: str, dsn: str, *, consumer: str, topic: str, interval_s: float) -> None:
        self._bootstrap, self._dsn, self._consumer, self._topic = bootstrap, dsn, consumer, topic
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metricx-lag", daemon=True)

    def start(self) -> LagMonitor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        probe = BrokerProbe(self._bootstrap)
        try:
            while not self._stop.wait(self._interval):
                self.measure(probe)
        finally:
            probe.close()

    def measure(self, probe: BrokerProbe) -> dict[int, int] | None:
        try:
            marks = probe.watermarks(self._topic)
        except KafkaException as exc:
            HEALTH.down("kafka", f"watermarks of {self._topic}: {exc}")
            return None
        HEALTH.up("kafka")
        try:
            with psycopg.connect(self._dsn, connect_timeout=5) as conn:
                committed = pipeline_committed(conn, self._consumer, self._topic)
        except psycopg.Error as exc:  # the commit path reports the database's health
            log.debug("lag not measured", extra={"error": str(exc).strip()})
            return None
        out = lag(marks, committed)
        for p, n in out.items():
            CONSUMER_LAG.labels(self._consumer, self._topic, str(p)).set(n)
        return out

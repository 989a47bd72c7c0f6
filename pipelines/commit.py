"""The commit point shared by every engine (the Bytewax sink and the plain loop).

Per batch: dead letters are sent and acknowledged by the broker, then one database
transaction writes the rows together with the Kafka progress, then the live update is
published.  A dependency that is away (the broker, the database) is waited for, with
backoff, and shown in ``/readyz``: the epoch cannot close meanwhile and the input is
back-pressured, which is the point.  Redis is best effort (the tables are the truth).
Any other failure raises, so the engine replays from its last checkpoint: nothing is
lost, and replayed rows are identical (idempotent writes).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime

from adapters.kafka import (
    MessageTooLarge,
    Producer,
    deadletter_producer,
    flush_until_delivered,
    send_dead_letter,
)
from adapters.redis_live import LivePublisher
from adapters.timescale import InsightStore
from domain.batch import build_batch, live_messages
from ground.metrics import (
    COMMIT_BATCH,
    COMMIT_RETRIES,
    COMMIT_SECONDS,
    HEALTH,
    LAST_COMMIT,
    PIPELINE_ALERTS,
    SNAPSHOTS,
    dead_lettered,
)
from ground.settings import Settings
from pipelines.steps import SinkItem
from schemas.alerts import alert_payload
from schemas.batch import Batch

log = logging.getLogger("metricx.pipeline")


class Committer:
    def __init__(self, settings: Settings, *, consumer: str = "pipeline", worker: int | str = 0) -> None:
        self._store = InsightStore(settings.database.libpq_url, consumer=consumer)
        self._live = LivePublisher(settings.redis.url, maxlen=settings.redis.live_stream_maxlen,
                                   retry_max_s=settings.retry_max_s)
        # Two producers: dead letters may be as large as the largest raw record (their
        # own size limit, ``deadletter_producer``); alerts are small and go to a topic
        # with Kafka's default limit.  Neither has a delivery timeout: while the broker is
        # away a commit waits for it (the input is back-pressured meanwhile) instead of
        # failing the epoch after two minutes.
        self._dl_producer = deadletter_producer(settings.kafka.bootstrap, client_id="metricx-deadletter",
                                                extra={"message.timeout.ms": 0})
        self._producer = Producer(settings.kafka.bootstrap, client_id="metricx-alerts",
                                  extra={"message.timeout.ms": 0})
        self._dl_topic = settings.kafka.deadletter_topic
        self._alerts_topic = settings.kafka.alerts_topic
        self._retry_max_s = settings.retry_max_s
        self._worker = worker
        self._counts: Counter[str] = Counter()
        self._timings: dict[str, float] = {"build_ms": 0.0, "write_ms": 0.0, "live_ms": 0.0}
        self._last_log = time.monotonic()

    def commit(self, items: Iterable[SinkItem]) -> Batch:
        t0 = time.perf_counter()
        batch = build_batch(items)
        t1 = time.perf_counter()
        if batch.dead:
            for dl in batch.dead:
                send_dead_letter(self._dl_producer, dl, self._dl_topic)
            flush_until_delivered(self._dl_producer, "dead letters")
        self._store.write_with_retry(batch, max_wait=self._retry_max_s, on_failure=_database_failed)
        HEALTH.up("postgres")
        if batch.alerts:
            # After the commit: the table is the truth and the topic at-least-once (a
            # replay republishes the same fingerprints; consumers dedupe on them).
            for alert in batch.alerts:
                try:
                    self._producer.send(self._alerts_topic, json.dumps(alert_payload(alert)).encode(),
                                        alert.workspace_id)
                except MessageTooLarge as exc:
                    # Stored (the table is the truth) but never publishable: raising would
                    # replay this batch and fail here again, for every tenant, for good.
                    log.error("alert stored but too large to publish",
                              extra={"fingerprint": alert.fingerprint[:200], "error": str(exc)})
                    self._counts["alerts_unpublishable"] += 1
            flush_until_delivered(self._producer, "alerts")
            self._counts["alerts"] += len(batch.alerts)
        t2 = time.perf_counter()
        self._live.publish(live_messages(batch, datetime.now(UTC)))
        t3 = time.perf_counter()
        self._timings["build_ms"] += (t1 - t0) * 1000
        self._timings["write_ms"] += (t2 - t1) * 1000
        self._timings["live_ms"] += (t3 - t2) * 1000
        self._counts["commits"] += 1
        _observe(batch, t2 - t0)
        self._count(batch)
        return batch

    def idle(self) -> None:
        """Called by the commit thread when no batch came for a while."""
        self._live.retry_gaps()

    def _count(self, batch: Batch) -> None:
        self._counts["written"] += len(batch.rows)
        self._counts["dead_lettered"] += len(batch.dead)
        self._counts.update(batch.ignored)
        now = time.monotonic()
        if now - self._last_log >= 10:
            log.info(
                "committed",
                extra={
                    "worker": self._worker,
                    **self._counts,
                    **{k: round(v) for k, v in self._timings.items()},
                    "written_per_s": round(self._counts["written"] / (now - self._last_log)),
                    "next_offsets": {f"{t}[{p}]": o for (t, p), o in sorted(batch.progress.items())},
                },
            )
            self._counts.clear()
            self._timings = dict.fromkeys(self._timings, 0.0)
            self._last_log = now

    def close(self) -> None:
        self._dl_producer.flush()
        self._producer.flush()
        self._store.close()
        self._live.close()


def _database_failed(exc: Exception, retry_in_s: float) -> None:
    COMMIT_RETRIES.inc()
    HEALTH.down("postgres", str(exc).strip())


def _observe(batch: Batch, seconds: float) -> None:
    """Metrics of one commit: a handful of counter updates, whatever the batch size."""
    ignored = sum(batch.ignored.values())
    refused = sum(1 for d in batch.dead if d.stage == "series")
    SNAPSHOTS.labels("applied").inc(len(batch.rows))
    if ignored:
        SNAPSHOTS.labels("ignored").inc(ignored)
    if refused:
        SNAPSHOTS.labels("refused").inc(refused)
    if batch.dead:
        for stage in {d.stage for d in batch.dead}:
            dead_lettered(stage, (d.reason for d in batch.dead if d.stage == stage))
    if batch.alerts:
        PIPELINE_ALERTS.inc(len(batch.alerts))
    COMMIT_SECONDS.observe(seconds)
    COMMIT_BATCH.observe(len(batch.rows) + ignored + len(batch.dead) + len(batch.alerts))
    LAST_COMMIT.set(time.time())


class BackgroundCommitter:
    """Runs :meth:`Committer.commit` on a worker thread, so the engine keeps reading,
    validating and folding while PostgreSQL works (the client mostly waits on the socket,
    without the GIL).  Batches queued while a commit is in flight are merged into the
    next one, so commits grow under load instead of queueing up.

    :meth:`drain` is the barrier: it returns once everything submitted is committed, and
    raises if a commit failed.  The Bytewax sink calls it from its epoch snapshot, so a
    recovery snapshot is never taken ahead of the database: at-least-once still holds.
    """

    def __init__(self, committer: Committer, *, depth: int = 8, merge_limit: int = 20_000,
                 idle_s: float = 1.0) -> None:
        self._committer = committer
        self._idle_s = idle_s
        self._queue: queue.Queue[list[SinkItem] | None] = queue.Queue(maxsize=depth)
        self._merge_limit = merge_limit
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="metricx-commit", daemon=True)
        self._thread.start()

    def submit(self, items: list[SinkItem]) -> None:
        self._raise()
        if items:
            self._queue.put(items)

    def drain(self) -> None:
        self._queue.join()
        self._raise()

    def close(self) -> None:
        try:
            self.drain()
        finally:
            self._queue.put(None)
            self._thread.join(timeout=60)
            self._committer.close()

    def _raise(self) -> None:
        if self._error is not None:
            raise RuntimeError("a commit failed; the flow must replay from its last snapshot") from self._error

    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=self._idle_s)
            except queue.Empty:
                try:
                    self._committer.idle()
                except Exception:  # best effort (live-stream housekeeping); never the commits
                    log.exception("idle step failed")
                continue
            if first is None:
                self._queue.task_done()
                return
            merged, taken, stop = list(first), 1, False
            while len(merged) < self._merge_limit:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                taken += 1
                if more is None:
                    stop = True
                    break
                merged.extend(more)
            try:
                if self._error is None:
                    self._committer.commit(merged)
            except BaseException as exc:  # surfaced to the engine by submit()/drain()
                log.exception("commit failed", extra={"items": len(merged)})
                self._error = exc
            finally:
                for _ in range(taken):
                    self._queue.task_done()
            if stop:
                return

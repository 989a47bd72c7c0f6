"""The commit point shared by every engine (the Bytewax sink and the plain loop).

Per batch: dead letters are sent and acknowledged by the broker, then one database
transaction writes the rows together with the Kafka progress, then the live update is
published.  A failure before the commit raises, so the engine replays from its last
checkpoint: nothing is lost, and replayed rows are identical (idempotent writes).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timezone

from connectors.kafka import Producer, send_dead_letter
from connectors.redis_live import LivePublisher
from connectors.timescale import InsightStore
from metricx.settings import Settings
from pipelines.batch import Batch, build_batch, live_messages
from pipelines.steps import SinkItem

log = logging.getLogger("metricx.pipeline")


class Committer:
    def __init__(self, settings: Settings, *, consumer: str = "pipeline", worker: int = 0) -> None:
        self._store = InsightStore(settings.libpq_url, consumer=consumer)
        self._live = LivePublisher(settings.redis_url, maxlen=settings.live_stream_maxlen)
        self._producer = Producer(settings.kafka_bootstrap, client_id="metricx-deadletter")
        self._dl_topic = settings.deadletter_topic
        self._worker = worker
        self._counts: Counter[str] = Counter()
        self._timings: Counter[str] = Counter()
        self._last_log = time.monotonic()

    def commit(self, items: Iterable[SinkItem]) -> Batch:
        t0 = time.perf_counter()
        batch = build_batch(items)
        t1 = time.perf_counter()
        if batch.dead:
            for dl in batch.dead:
                send_dead_letter(self._producer, dl, self._dl_topic)
            self._producer.flush()
        self._store.write_with_retry(batch)
        t2 = time.perf_counter()
        self._live.publish(live_messages(batch, datetime.now(timezone.utc)))
        t3 = time.perf_counter()
        self._timings["build_ms"] += (t1 - t0) * 1000
        self._timings["write_ms"] += (t2 - t1) * 1000
        self._timings["live_ms"] += (t3 - t2) * 1000
        self._counts["commits"] += 1
        self._count(batch)
        return batch

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
            self._timings.clear()
            self._last_log = now

    def close(self) -> None:
        self._producer.flush()
        self._store.close()
        self._live.close()

"""Start the insight dataflow with Bytewax recovery (the ``metricx pipeline`` command):
the topics it writes, the rules feed, the lag gauge, the Kafka source and the commit
sink around :func:`pipelines.flow.build_flow`."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from pathlib import Path

from bytewax._bytewax import cli_main
from bytewax.recovery import RecoveryConfig, init_db_dir
from confluent_kafka import OFFSET_BEGINNING

from adapters.kafka import ensure_topics
from adapters.lag import LagMonitor
from domain.metering import Budget, CostMeter
from domain.rulebook import RuleBook
from ground.gc_tuning import tune_gc
from ground.settings import Settings
from pipelines.flow import build_flow
from pipelines.rules_feed import RulesFeed
from pipelines.sink import CommitSink
from pipelines.source import LoggingKafkaSource

log = logging.getLogger("metricx.pipeline")

# Recovery partitions are fixed when the store is created; state keys are spread over
# them. More than the worker count lets a later run add workers without re-creating it.
RECOVERY_PARTITIONS = 4


def ensure_recovery_dir(path: Path, partitions: int = RECOVERY_PARTITIONS) -> None:
    if any(path.glob("part-*.sqlite3")):
        return
    path.mkdir(parents=True, exist_ok=True)
    init_db_dir(path, partitions)  # type: ignore[no-untyped-call]
    log.info("created recovery store", extra={"dir": str(path), "partitions": partitions})


def run_pipeline(
    settings: Settings,
    *,
    stop: threading.Event,
    workers: int = 1,
    process_id: int | None = None,
    addresses: list[str] | None = None,
    recovery: bool = True,
    consumer: str = "pipeline",
) -> None:
    """Run until ``stop`` is set (then the input ends and the last epoch is committed and
    snapshotted) or the input fails."""
    tune_gc(settings.pipeline.gc_gen0_threshold)
    kafka = settings.kafka
    processes = len(addresses) if addresses else 1
    # What the flow writes to, created (or, for an existing dead-letter topic, sized) here
    # so a fresh broker works without `metricx topics` (the same specs, schemas.topics): a
    # dead-letter topic with Kafka's default size would refuse the largest dead letters.
    writes = {kafka.deadletter_topic} | ({kafka.rules_topic, kafka.alerts_topic} if settings.rules.enabled else set())
    ensure_topics(kafka.bootstrap, [s for s in kafka.topics() if s.name in writes])
    feed = None
    book = None
    if settings.rules.enabled:
        book = RuleBook(meter=CostMeter(Budget(per_snapshot_ns=int(settings.rules.budget_ms * 1_000_000))))
        feed = RulesFeed(
            book, bootstrap=kafka.bootstrap, topic=kafka.rules_topic, deadletter_topic=kafka.deadletter_topic,
            dsn=settings.database.libpq_url, names_refresh_s=settings.rules.names_refresh_s,
        ).start()
    monitor = LagMonitor(kafka.bootstrap, settings.database.libpq_url, consumer=consumer, topic=kafka.raw_topic,
                         interval_s=settings.metrics.lag_interval_s).start()
    source = LoggingKafkaSource(kafka.brokers, [kafka.raw_topic], tail=True, starting_offset=OFFSET_BEGINNING,
                                batch_size=kafka.batch_size, stop=stop)
    sink = CommitSink(settings, consumer, processes * workers)
    flow = build_flow(source, sink, window_days=settings.pipeline.restatement_window_days, book=book,
                      warmup=timedelta(seconds=settings.rules.warmup_s))
    recovery_config = None
    if recovery:
        ensure_recovery_dir(settings.recovery_dir)
        recovery_config = RecoveryConfig(settings.recovery_dir, backup_interval=timedelta(0))  # type: ignore[no-untyped-call]
    log.info(
        "pipeline starting",
        extra={
            "topic": kafka.raw_topic,
            "workers": workers,
            "process_id": process_id,
            "recovery_dir": str(settings.recovery_dir) if recovery else None,
            "snapshot_interval_s": settings.pipeline.snapshot_interval_s,
        },
    )
    try:
        cli_main(  # type: ignore[no-untyped-call]
            flow,
            workers_per_process=workers,
            process_id=process_id,
            addresses=addresses,
            epoch_interval=timedelta(seconds=settings.pipeline.snapshot_interval_s),
            recovery_config=recovery_config,
        )
    finally:
        monitor.stop()
        if feed is not None:
            feed.stop()
    if stop.is_set():
        log.info("pipeline stopped: its last epoch is committed and snapshotted; the next start resumes there")

"""Start the insight dataflow with Bytewax recovery (the ``metricx pipeline`` command)."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from pathlib import Path

from bytewax._bytewax import cli_main
from bytewax.recovery import RecoveryConfig, init_db_dir

from adapters.kafka import TopicSpec, deadletter_topic_spec, ensure_topics
from adapters.lag import LagMonitor
from domain.metering import Budget, CostMeter
from domain.rulebook import RuleBook
from ground.gc_tuning import tune_gc
from ground.settings import Settings
from ground.stopping import stop_on_signals
from pipelines.flow import build_flow

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
    workers: int = 1,
    process_id: int | None = None,
    addresses: list[str] | None = None,
    recovery: bool = True,
    consumer: str = "pipeline",
) -> None:
    tune_gc(settings.gc_gen0_threshold)
    processes = len(addresses) if addresses else 1
    # What the flow writes to, created (or, for an existing dead-letter topic, sized) here
    # so a fresh broker works without `metricx topics` (which creates the same specs): a
    # dead-letter topic with Kafka's default size would refuse the largest dead letters.
    specs = [deadletter_topic_spec(settings.deadletter_topic)]
    if settings.rules_enabled:
        # The flow's side input and output.
        specs += [TopicSpec(settings.rules_topic, 1, {"cleanup.policy": "compact"}), TopicSpec(settings.alerts_topic, 1)]
    ensure_topics(settings.kafka_bootstrap, specs)
    feed = None
    book = None
    if settings.rules_enabled:
        from pipelines.rules_feed import RulesFeed

        book = RuleBook(meter=CostMeter(Budget(per_snapshot_ns=int(settings.rules_budget_ms * 1_000_000))))
        feed = RulesFeed(
            book, bootstrap=settings.kafka_bootstrap, topic=settings.rules_topic,
            deadletter_topic=settings.deadletter_topic, dsn=settings.libpq_url,
            names_refresh_s=settings.rules_names_refresh_s,
        ).start()
    stop = _stop_on_signals()
    monitor = LagMonitor(settings.kafka_bootstrap, settings.libpq_url, consumer=consumer, topic=settings.raw_topic,
                         interval_s=settings.lag_interval_s).start()
    flow = build_flow(
        settings, consumer=consumer, commit_partitions=processes * workers, book=book,
        warmup=timedelta(seconds=settings.rules_warmup_s), stop=stop,
    )
    recovery_config = None
    if recovery:
        ensure_recovery_dir(settings.recovery_dir)
        recovery_config = RecoveryConfig(settings.recovery_dir, backup_interval=timedelta(0))  # type: ignore[no-untyped-call]
    log.info(
        "pipeline starting",
        extra={
            "topic": settings.raw_topic,
            "workers": workers,
            "process_id": process_id,
            "recovery_dir": str(settings.recovery_dir) if recovery else None,
            "snapshot_interval_s": settings.snapshot_interval_s,
        },
    )
    try:
        cli_main(  # type: ignore[no-untyped-call]
            flow,
            workers_per_process=workers,
            process_id=process_id,
            addresses=addresses,
            epoch_interval=timedelta(seconds=settings.snapshot_interval_s),
            recovery_config=recovery_config,
        )
    finally:
        monitor.stop()
        if feed is not None:
            feed.stop()
    if stop.is_set():
        log.info("pipeline stopped: its last epoch is committed and snapshotted; the next start resumes there")


def _stop_on_signals() -> threading.Event:
    """SIGINT / SIGTERM end the input (see ``flow._StoppablePartition``); a second one
    interrupts at once, as Ctrl-C always did (the next start replays the open epoch)."""
    if threading.current_thread() is not threading.main_thread():
        return threading.Event()  # signals reach only the main thread: nothing to install
    return stop_on_signals(second_interrupts=True, on_stop=lambda name: log.info(
        "stopping: ending the input, committing the last epoch", extra={"signal": name}))

"""The same steps as a plain Python consumer loop: no framework, one process.

It exists as the benchmark's ceiling (what the logic costs without Bytewax) and as
proof that the steps are engine-agnostic.  It runs validation, the series state and the
commit point only: no stop-loss watch (so no alerts) and no idle eviction.  It has no
recovery: state lives in memory and the loop reads its partitions from the beginning,
so it is not for production.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from adapters.kafka import envelope_of
from domain.deltas import EntityState
from ground import logs
from ground.gc_tuning import tune_gc
from ground.settings import Settings, load_settings
from ground.stopping import stop_on_signals
from pipelines.commit import BackgroundCommitter, Committer
from pipelines.steps import SinkItem, fold, is_refused, to_dead_letter, validate
from schemas.envelope import DeadLetter


def run_plain(settings: Settings, *, stop: Callable[[], bool], consumer: str = "plain") -> None:
    c = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap,
            "group.id": "metricx-plain-ignored",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 20,
            "queued.min.messages": 20000,
        }
    )
    parts = c.list_topics(settings.kafka.raw_topic, timeout=10).topics[settings.kafka.raw_topic].partitions
    c.assign([TopicPartition(settings.kafka.raw_topic, p, OFFSET_BEGINNING) for p in parts])
    committer = BackgroundCommitter(Committer(settings, consumer=consumer))
    states: dict[str, EntityState] = {}
    window = settings.pipeline.restatement_window_days
    try:
        while not stop():
            msgs = c.consume(settings.kafka.batch_size, 0.05)
            if not msgs:
                continue
            now = datetime.now(UTC)
            items: list[SinkItem] = []
            for m in msgs:
                if m.error() is not None:
                    raise RuntimeError(str(m.error()))
                checked = validate(envelope_of(m), now)
                if isinstance(checked, DeadLetter):
                    items.append(checked)
                    continue
                key = checked[0].entity_key
                states[key], out = fold(states.get(key), checked, window)
                items.append(to_dead_letter(out) if is_refused(out) else out)  # type: ignore[arg-type]
            committer.submit(items)
    finally:
        c.close()
        committer.close()



def main() -> None:
    """``python -m pipelines.plain``: run until SIGINT/SIGTERM (benchmarks start it)."""
    settings = load_settings()
    logs.configure(settings.log_level)
    tune_gc(settings.pipeline.gc_gen0_threshold)  # as the Bytewax pipeline does: the comparison stays fair
    run_plain(settings, stop=stop_on_signals().is_set)


if __name__ == "__main__":
    main()

"""The insight dataflow, wired with Bytewax 0.21:

    Kafka metricx.insights.raw
      -> validate --(invalid: dead letter)-------------------------------+
      -> key by entity -> series state (deltas + 15-min buckets)           |
                            --(refused: window / conflict: dead letter)----+
                            --(applied / ignored)--------------------------+-> commit sink
        commit sink, per batch: send dead letters and wait for the broker's ack,
        one DB transaction (rows + Kafka progress), then the Redis live update.

Only this module and :mod:`pipelines.run` know Bytewax exists; the steps are plain
functions (:mod:`pipelines.steps`), so another engine or a plain loop can drive them.

Delivery guarantee: Bytewax recovery snapshots state and Kafka offsets together every
``METRICX_SNAPSHOT_INTERVAL_S``; after a crash the flow resumes from the last snapshot
and replays what followed (at-least-once).  Every write is idempotent (see
``connectors.timescale``), so totals are exact.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from functools import partial
from typing import Any

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSource, KafkaSourceMessage
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import OFFSET_BEGINNING, TIMESTAMP_NOT_AVAILABLE

from metricx.settings import Settings
from pipelines.commit import Committer
from pipelines.steps import SinkItem, fold, is_refused, to_dead_letter, validate
from schemas.envelope import DeadLetter, Envelope

log = logging.getLogger("metricx.pipeline")


def envelope(msg: KafkaSourceMessage[bytes | None, bytes | None]) -> Envelope:
    produced_at = None
    if msg.timestamp is not None and msg.timestamp[0] != TIMESTAMP_NOT_AVAILABLE:
        produced_at = datetime.fromtimestamp(msg.timestamp[1] / 1000, timezone.utc)
    return Envelope(msg.key, msg.value, msg.topic or "", msg.partition or 0, msg.offset or 0, produced_at)


def _validate_message(msg: KafkaSourceMessage[bytes | None, bytes | None]) -> Any:
    return validate(envelope(msg), datetime.now(timezone.utc))


class _CommitPartition(StatelessSinkPartition[SinkItem]):
    def __init__(self, settings: Settings, consumer: str, worker: int) -> None:
        self._committer = Committer(settings, consumer=consumer, worker=worker)

    def write_batch(self, items: list[SinkItem]) -> None:
        self._committer.commit(items)

    def close(self) -> None:
        self._committer.close()


class CommitSink(DynamicSink[SinkItem]):
    def __init__(self, settings: Settings, consumer: str) -> None:
        self._settings = settings
        self._consumer = consumer

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _CommitPartition:
        return _CommitPartition(self._settings, self._consumer, worker_index)


class LoggingKafkaSource(KafkaSource):
    """Bytewax's Kafka source, saying where each partition resumes (from recovery)."""

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> Any:
        log.info(
            "kafka partition assigned",
            extra={"partition": for_part, "resume_offset": resume_state},
        )
        return super().build_part(step_id, for_part, resume_state)


def build_flow(settings: Settings, *, consumer: str = "pipeline") -> Dataflow:
    flow = Dataflow("metricx_insights")
    source = LoggingKafkaSource(
        settings.brokers,
        [settings.raw_topic],
        tail=True,
        starting_offset=OFFSET_BEGINNING,
        batch_size=settings.kafka_batch_size,
        add_config={"fetch.wait.max.ms": "20", "queued.min.messages": "20000"},
    )
    raw = op.input("raw", flow, source)
    checked = op.map("validate", raw, _validate_message)
    valid = op.branch("is_valid", checked, lambda x: not isinstance(x, DeadLetter))
    keyed = op.key_on("by_entity", valid.trues, lambda item: item[0].entity_key)
    folded = op.stateful_map(
        "series", keyed, partial(fold, window_days=settings.restatement_window_days)
    )
    outcomes = op.key_rm("unkey", folded)
    refused = op.branch("is_refused", outcomes, is_refused)
    refusals = op.map("refusal", refused.trues, to_dead_letter)
    everything = op.merge("all", refused.falses, valid.falses, refusals)
    op.output("commit", everything, CommitSink(settings, consumer))
    return flow

"""The insight dataflow, wired with Bytewax 0.21, between a source and a sink it is given:

    source (Kafka metricx.insights.raw: pipelines.source)
      -> validate --(invalid: dead letter)-------------------------------+
      -> key by entity -> series state (deltas + 15-min buckets)           |
                            --(refused: window / conflict: dead letter)----+
                            --(applied / ignored)--------------------------+-> sink
                            --(applied, workspace has rules)                 |
      -> key by campaign -> stop-loss watch (windowed sums) --(alerts)-------+
        the sink (the commit point: pipelines.sink), per batch: send dead letters and
        wait for the broker's ack, one DB transaction (rows + Kafka progress), then the
        Redis live update.

:func:`build_flow` takes its source and its sink, so the wiring runs in a test with
Bytewax's ``TestingSource`` and ``TestingSink`` and no service; :mod:`pipelines.run`
hands it the Kafka source and the commit sink.  Bytewax is known only to the modules of
this package; the steps are plain functions (:mod:`pipelines.steps`) that the plain loop
(:mod:`pipelines.plain`) drives too.

Delivery guarantee: Bytewax recovery snapshots state and Kafka offsets together every
``METRICX_SNAPSHOT_INTERVAL_S``; after a crash the flow resumes from the last snapshot
and replays what followed (at-least-once).  Every write is idempotent (see
``adapters.timescale``), so totals are exact.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaError, KafkaSourceMessage
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import Sink

from domain.deltas import RESTATEMENT_WINDOW_DAYS, Applied, Outcome
from domain.rulebook import RuleBook
from domain.stoploss.watch import DEFAULT_WARMUP
from pipelines import codecs
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
from schemas.envelope import DeadLetter, Envelope, envelope
from schemas.rules import MAX_DAYS


def _envelope(msg: KafkaSourceMessage[bytes | None, bytes | None]) -> Envelope:
    return envelope(msg.key, msg.value, msg.topic, msg.partition, msg.offset, msg.timestamp)


# What the source emits: Kafka messages (Bytewax's Kafka source declares errors too).
RawMessage = KafkaSourceMessage[bytes | None, bytes | None] | KafkaError[bytes | None, bytes | None]


def _validate_message(msg: RawMessage) -> Any:
    # Our source partitions (pipelines.source) never emit errors; the union is only the
    # declared type of Bytewax's Kafka source.
    assert isinstance(msg, KafkaSourceMessage)
    return validate(_envelope(msg), datetime.now(UTC))


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
    source: Source[RawMessage],
    sink: Sink[tuple[str, SinkItem]],
    *,
    window_days: int = RESTATEMENT_WINDOW_DAYS,
    book: RuleBook | None = None,
    warmup: timedelta = DEFAULT_WARMUP,
) -> Dataflow:
    """The flow from ``source`` (Kafka messages) to ``sink`` (what the commit point takes).
    ``book``: the stop-loss rules side input (``pipelines.rules_feed`` keeps it current);
    without one the flow has no stop-loss step at all."""
    codecs.register()  # the state's compact pickles, and stores written by earlier versions
    flow = Dataflow("metricx_insights")
    raw = op.input("raw", flow, source)
    checked = op.map("validate", raw, _validate_message)
    valid = op.branch("is_valid", checked, lambda x: not isinstance(x, DeadLetter))
    keyed = op.key_on("by_entity", valid.trues, lambda item: item[0].entity_key)
    folded = idle_expiring_map(
        "series", keyed, partial(fold, window_days=window_days), series_idle_ttl(window_days),
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
    op.output("commit", everything, sink)
    return flow

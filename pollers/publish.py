"""Publishing a poll's result: snapshots through the one producer path, refused rows to
the dead-letter topic with the reason, never silently dropped."""

from __future__ import annotations

import json
import logging

from adapters.kafka import Producer, publish_snapshots, send_dead_letter
from adapters.platform import PollResult, Rejected
from ground.metrics import dead_lettered
from schemas.envelope import DEADLETTER_TOPIC, DeadLetter, Envelope
from schemas.insight import RAW_TOPIC

log = logging.getLogger(__name__)

POLL_STAGE = "poll"


def publish_poll(
    producer: Producer,
    result: PollResult,
    *,
    topic: str = RAW_TOPIC,
    deadletter_topic: str = DEADLETTER_TOPIC,
    flush: bool = True,
) -> int:
    """Send the snapshots and dead letters; with ``flush`` wait for the broker (raising
    :class:`adapters.kafka.DeliveryError` if anything was not acknowledged)."""
    n = publish_snapshots(producer, result.snapshots, topic)
    for rej in result.rejected:
        send_dead_letter(producer, to_dead_letter(rej), deadletter_topic)
    if flush:
        producer.flush()
    if result.rejected:
        dead_lettered(POLL_STAGE, (r.reason for r in result.rejected))
    return n


def to_dead_letter(rej: Rejected) -> DeadLetter:
    value = json.dumps(rej.raw, default=str, separators=(",", ":")).encode()
    env = Envelope(
        key=f"{rej.provider}:{rej.account_id}".encode(),
        value=value,
        topic=f"poller.{rej.provider}",
        partition=-1,
        offset=-1,
        produced_at=None,
    )
    return DeadLetter(envelope=env, reason=rej.reason, stage=POLL_STAGE)

"""The Kafka topics metricx uses: names, partitions, sizes and cleanup, listed once.

``metricx topics`` (and so ``make topics`` / ``deploy/services.sh create-topics``, which
call it), the pipeline at start, the notifier's tests and the benchmarks all create them
from :func:`topic_specs`, so a topic never gets one partition count from one tool and
another from the next.

Record sizes: the raw topic's limit is pinned at Kafka's own default (a batch of at most
1,048,588 bytes), so "the largest raw record" is a known number.  A dead letter is that
record plus bounded headers (``schemas.envelope``: about 1.5 KB at most), so its producer
may send records of twice that, uncompressed (a batch then is one record plus 61 bytes
of batch header), and the topic takes that plus room to spare.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

RAW_MAX_MESSAGE_BYTES = 1_048_588
DEADLETTER_MESSAGE_MAX_BYTES = 2 * 1024 * 1024
DEADLETTER_TOPIC_MAX_BYTES = DEADLETTER_MESSAGE_MAX_BYTES + 64 * 1024
# Alerts are few and keyed by workspace; one partition keeps each workspace's alerts in
# order for the one notifier that consumes them (its group can grow with the topic).
ALERTS_PARTITIONS = 1


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: Mapping[str, str] = field(default_factory=dict)


def raw_topic_spec(name: str, partitions: int) -> TopicSpec:
    return TopicSpec(name, partitions, {"max.message.bytes": str(RAW_MAX_MESSAGE_BYTES)})


def deadletter_topic_spec(name: str) -> TopicSpec:
    return TopicSpec(name, 1, {"max.message.bytes": str(DEADLETTER_TOPIC_MAX_BYTES)})


def rules_topic_spec(name: str) -> TopicSpec:
    """Compacted, keyed by rule id: the topic keeps every rule's latest state."""
    return TopicSpec(name, 1, {"cleanup.policy": "compact"})


def alerts_topic_spec(name: str) -> TopicSpec:
    return TopicSpec(name, ALERTS_PARTITIONS)


def topic_specs(*, raw: str, deadletter: str, alerts: str, rules: str, raw_partitions: int) -> list[TopicSpec]:
    """Every topic, with the names the settings give them (``settings.kafka.topics()``)."""
    return [raw_topic_spec(raw, raw_partitions), deadletter_topic_spec(deadletter), alerts_topic_spec(alerts),
            rules_topic_spec(rules)]

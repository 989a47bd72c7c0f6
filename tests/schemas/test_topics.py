"""The topics are sized alike wherever they are created (``deploy/services.sh
create-topics``, ``metricx topics``, the pipeline at start), and the dead-letter topic
takes the largest record the raw topic accepts, with the largest headers, whole."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from adapters.kafka import (
    DEADLETTER_MESSAGE_MAX_BYTES,
    DEADLETTER_TOPIC_MAX_BYTES,
    RAW_MAX_MESSAGE_BYTES,
    deadletter_producer,
)
from ground.settings import REPO_ROOT, Settings
from metricx.cli import topic_specs
from schemas.envelope import DeadLetter, Envelope, deadletter_record

RECORD_BATCH_HEADER = 61  # Kafka's v2 record batch header, in bytes (the protocol's number)


def services_sh_configs() -> dict[str, dict[str, str]]:
    text = (REPO_ROOT / "deploy" / "services.sh").read_text()
    block = text[text.index("local specs=("):]
    block = block[: block.index(")\n")]
    out: dict[str, dict[str, str]] = {}
    for line in re.findall(r'"([^"]+)"', block):
        name, _parts, *cfg = line.split()
        out[name] = dict(c.split("=", 1) for c in cfg)
    return out


def test_services_sh_and_metricx_topics_create_the_same_configs() -> None:
    settings = Settings()
    sh = services_sh_configs()
    py = {s.name: dict(s.config) for s in topic_specs(settings, 4)}
    assert sh == py
    assert sh[settings.raw_topic]["max.message.bytes"] == str(RAW_MAX_MESSAGE_BYTES)
    assert sh[settings.deadletter_topic]["max.message.bytes"] == str(DEADLETTER_TOPIC_MAX_BYTES)


def test_the_dead_letter_producer_and_topic_take_the_largest_raw_record_whole() -> None:
    # A batch of one record fills the raw topic's limit: record = limit - batch header.
    largest = RAW_MAX_MESSAGE_BYTES - RECORD_BATCH_HEADER
    worst = DeadLetter(Envelope(b"k" * 1000, b"v" * (largest - 1000), "t" * 249, 2**31 - 1, 2**63 - 1, None),
                       "r" * 10**6, "validate")
    limit = deadletter_producer("127.0.0.1:1", "test").max_message_bytes  # no broker needed to build one
    assert limit == DEADLETTER_MESSAGE_MAX_BYTES
    assert not deadletter_record(worst, datetime.now(UTC), limit).truncated
    # The producer sends uncompressed batches of at most its limit plus a batch header.
    assert DEADLETTER_TOPIC_MAX_BYTES >= DEADLETTER_MESSAGE_MAX_BYTES + RECORD_BATCH_HEADER

"""``ensure_topics`` against the real broker: it creates, grows and aligns, as it says."""

from __future__ import annotations

import uuid

from confluent_kafka.admin import AdminClient

from adapters.kafka import delete_topics, ensure_topics
from ground.settings import Settings
from schemas.topics import TopicSpec
from tests.integration.conftest import services  # noqa: F401 - fixtures


def partitions(bootstrap: str, name: str) -> int:
    return len(AdminClient({"bootstrap.servers": bootstrap}).list_topics(name, timeout=10).topics[name].partitions)


def test_an_existing_topic_with_fewer_partitions_is_grown_and_its_size_aligned(services: Settings) -> None:  # noqa: F811
    bootstrap = services.kafka.bootstrap
    name = f"metricx.grow.t{uuid.uuid4().hex[:8]}"
    try:
        ensure_topics(bootstrap, [TopicSpec(name, 1)])
        assert partitions(bootstrap, name) == 1
        ensure_topics(bootstrap, [TopicSpec(name, 3)], timeout=30)
        assert partitions(bootstrap, name) == 3
        ensure_topics(bootstrap, [TopicSpec(name, 2)])  # fewer than it has: left alone
        assert partitions(bootstrap, name) == 3
    finally:
        delete_topics(bootstrap, [name])

"""The rules side input against the real Kafka: no rule message, whatever its size or
shape, stops it; refused ones are dead-lettered (stage ``rules``) and the rules after
them are loaded."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from adapters.kafka import Producer, delete_topics, ensure_topics
from domain.rulebook import RuleBook
from ground.settings import Settings
from pipelines.rules_feed import RulesFeed
from schemas.envelope import H_REASON, H_STAGE
from schemas.rules import RuleV1, rule_message
from schemas.topics import TopicSpec, deadletter_topic_spec
from tests.integration.totals import consume_all, header, wait_until

pytestmark = pytest.mark.services


@pytest.fixture
def feed_topics(services: Settings) -> Iterator[tuple[str, str]]:
    suffix = uuid.uuid4().hex[:8]
    rules, dlq = f"metricx.rules.t{suffix}", f"metricx.deadletter.t{suffix}"
    ensure_topics(services.kafka.bootstrap, [TopicSpec(rules, 1, {"cleanup.policy": "compact"}),
                                             deadletter_topic_spec(dlq)])
    yield rules, dlq
    delete_topics(services.kafka.bootstrap, [rules, dlq])


def _rule(rule_id: uuid.UUID) -> bytes:
    return rule_message(RuleV1.model_validate({
        "id": str(rule_id), "workspace_id": str(uuid.uuid4()), "name": "burn", "updated_at": datetime.now(UTC),
        "conditions": {"conditions": [{"metric": "spend", "operator": ">=", "value": "80"}]},
    }))


def test_oversized_rule_messages_are_dead_lettered_and_the_feed_goes_on(
    services: Settings, feed_topics: tuple[str, str]
) -> None:
    rules, dlq = feed_topics
    before, after = uuid.uuid4(), uuid.uuid4()
    # As large as a default producer sends: its dead-letter copy, headers included, is not.
    near_limit = b'{"schema": "metricx.rule.v1", "pad": "' + b"x" * 999_700 + b'"}'
    huge_key, keyed = b"k" * 600_000, _rule(uuid.uuid4())  # a valid rule under a 600 KB key
    p = Producer(services.kafka.bootstrap)
    p.send(rules, _rule(before), str(before))
    near_limit_key = str(uuid.uuid4()).encode()
    p.send(rules, near_limit, near_limit_key)
    p.send(rules, keyed, huge_key)
    p.send(rules, _rule(after), str(after))
    p.flush()

    book = RuleBook()
    feed = RulesFeed(book, bootstrap=services.kafka.bootstrap, topic=rules, deadletter_topic=dlq)
    feed.start(wait_s=0)
    try:
        wait_until(lambda: {str(before), str(after)} <= book.rule_ids(), 60, "the rules around the bad ones")
        dead = consume_all(services.kafka.bootstrap, dlq, 2)
    finally:
        feed.stop()
    assert book.rule_ids() == {str(before), str(after)}
    assert sorted((m.key() or b"", m.value() or b"") for m in dead) == sorted(
        [(huge_key, keyed), (near_limit_key, near_limit)])
    for m in dead:
        assert header(m, H_STAGE) == b"rules"
        reason = header(m, H_REASON)
        assert reason.strip() and len(reason) <= 1000 and b"k" * 100 not in reason

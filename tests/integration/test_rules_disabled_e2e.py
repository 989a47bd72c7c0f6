"""Rules the pipeline stops evaluating reach the merchant: the rules feed (real Kafka and
PostgreSQL) records a workspace over the evaluation budget, and a rule over the limits
published around the API, as ``disabled`` rows with the reason in ``last_error`` (what
``GET /rules`` shows), republishes them, and keeps them out of the book — and the real
``metricx pipeline`` process meters its own evaluations and does the same."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from adapters.kafka import delete_topics, ensure_topics
from domain.metering import Budget, CostMeter
from domain.rulebook import RuleBook
from ground.settings import Settings
from pipelines.rules_feed import RulesFeed
from schemas.rules import RuleIn, RuleV1, parse_rule_message
from schemas.topics import TopicSpec
from serving import rules_store as store
from tests.factories import metrics, snap
from tests.integration.conftest import Pipeline, Topics
from tests.integration.test_stoploss_e2e import BURN, base_time, produce, stored_alerts
from tests.integration.totals import consume_all, header, progress, wait_until

pytestmark = pytest.mark.services

MS = 1_000_000
RULE = {"name": "burn", "scope": {"level": "ad"}, "conditions": BURN}


@pytest.fixture
def rules_topic(services: Settings) -> Iterator[str]:
    name = f"metricx.rules.t{uuid.uuid4().hex[:8]}"
    ensure_topics(services.kafka.bootstrap, [TopicSpec(name, 1, {"cleanup.policy": "compact"})])
    yield name
    delete_topics(services.kafka.bootstrap, [name])


def workspace(database: str) -> uuid.UUID:
    ws = uuid.uuid4()
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("INSERT INTO workspaces (id, name, timezone) VALUES (%s, 'W', 'UTC')", (ws,))
    return ws


def save(database: str, publisher: store.RulePublisher, ws: uuid.UUID, body: dict[str, Any],
         *, around_the_api: bool = False) -> str:
    """A rule saved and published the way the API does (``around_the_api``: its row
    written without the API's validation, as before the limits existed)."""
    with psycopg.connect(database, autocommit=True, row_factory=dict_row) as conn:
        if around_the_api:
            row = conn.execute("INSERT INTO rules (workspace_id, name, definition) VALUES (%s, 'legacy', %s) "
                               "RETURNING id", (ws, Jsonb(body))).fetchone()
            assert row is not None
            rule_id: uuid.UUID = row["id"]
        else:
            rule_id = store.insert_rule(conn, ws, RuleIn.model_validate(body), "test")
        store.publish_ids(conn, publisher, [rule_id])
    return str(rule_id)


def rows(database: str, ws: uuid.UUID) -> dict[str, tuple[str, str | None]]:
    with psycopg.connect(database) as conn:
        return {str(r[0]): (r[1], r[2]) for r in conn.execute(
            "SELECT id, status, last_error FROM rules WHERE workspace_id = %s", (ws,)).fetchall()}


def test_the_feed_records_a_workspace_over_budget_as_disabled(
    services: Settings, database: str, topics: Topics, rules_topic: str, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="metricx.rules")
    publisher = store.RulePublisher(services.kafka.bootstrap, rules_topic)
    slow, other = workspace(database), workspace(database)
    slow_ids = sorted(save(database, publisher, slow, {**RULE, "name": n}) for n in ("a", "b"))
    other_id = save(database, publisher, other, RULE)
    book = RuleBook(meter=CostMeter(Budget(per_snapshot_ns=2 * MS, window=32)))
    feed = RulesFeed(book, bootstrap=services.kafka.bootstrap, topic=rules_topic,
                     deadletter_topic=topics.deadletter, dsn=database).start()
    try:
        assert book.rule_ids() == {*slow_ids, other_id}
        for _ in range(17):  # what the stop-loss step charges for 17 slow snapshots
            book.charge(str(slow), 25 * MS)
            book.charge(str(other), 20_000)
        wait_until(lambda: {s for s, _ in rows(database, slow).values()} == {"disabled"}, 30,
                   "the slow workspace's rules to be recorded as disabled")
        [reason] = {e for _, e in rows(database, slow).values()}
        assert reason is not None and "over budget" in reason and "more than 2 ms" in reason
        assert rows(database, other) == {other_id: ("active", None)}
        assert book.rule_ids() == {other_id}
        # Published: a restarted pipeline loads them as disabled (and so skips them).
        latest = {bytes(m.key() or b"").decode(): m.value() for m in consume_all(services.kafka.bootstrap, rules_topic, 5)}
        assert {parse_rule_message(latest[i] or b"").status for i in slow_ids} == {"disabled"}
        [record] = [r for r in caplog.records if r.getMessage() == "rules recorded as disabled"]
        assert record.workspace_id == str(slow)  # type: ignore[attr-defined]
        # Resumed through the API's store, a rule is evaluated again.
        with psycopg.connect(database, autocommit=True, row_factory=dict_row) as conn:
            assert store.set_status(conn, slow, uuid.UUID(slow_ids[0]), "active")
            store.publish_ids(conn, publisher, [uuid.UUID(slow_ids[0])])
        wait_until(lambda: slow_ids[0] in book.rule_ids(), 30, "the resumed rule in the book")
        assert rows(database, slow)[slow_ids[0]] == ("active", None)
    finally:
        feed.stop()
        publisher.close()


def test_a_rule_over_the_limits_published_around_the_api_is_refused_and_disabled(
    services: Settings, database: str, topics: Topics, rules_topic: str,
) -> None:
    publisher = store.RulePublisher(services.kafka.bootstrap, rules_topic)
    ws = workspace(database)
    cond = {"metric": "spend", "operator": ">=", "value": "80"}
    sixty = {"op": "or", "conditions": [{"op": "and", "conditions": [cond] * 20}] * 3}
    legacy = save(database, publisher, ws, {**RULE, "conditions": sixty}, around_the_api=True)
    fine = save(database, publisher, ws, RULE)
    book = RuleBook()
    feed = RulesFeed(book, bootstrap=services.kafka.bootstrap, topic=rules_topic,
                     deadletter_topic=topics.deadletter, dsn=database).start()
    try:
        assert book.rule_ids() == {fine}
        wait_until(lambda: rows(database, ws)[legacy][0] == "disabled", 30, "the legacy rule to be disabled")
        assert rows(database, ws)[legacy] == ("disabled", "a rule may hold at most 50 conditions; this one has 60")
        assert rows(database, ws)[fine] == ("active", None)
        [dead] = consume_all(services.kafka.bootstrap, topics.deadletter, 1)
        assert dead.key() == legacy.encode()
        assert header(dead, "metricx.dlq.reason") == b"a rule may hold at most 50 conditions; this one has 60"
        assert RuleV1.model_validate_json(dead.value() or b"").status == "active"  # the original, untouched
    finally:
        feed.stop()
        publisher.close()


def test_the_pipeline_meters_its_evaluations_and_disables_an_expensive_book(
    services: Settings, topics: Topics, database: str, pipeline: Pipeline, rules_topic: str,
) -> None:
    """The real ``metricx pipeline`` with a budget no evaluation can meet (1 ns): after
    17 evaluated snapshots the workspace's rules are disabled, recorded with the reason,
    and a later snapshot that would fire them fires nothing."""
    publisher = store.RulePublisher(services.kafka.bootstrap, rules_topic)
    ws = workspace(database)
    rule_id = save(database, publisher, ws, RULE)
    publisher.close()
    pipeline.env.update({"METRICX_RULES_TOPIC": rules_topic, "METRICX_RULES_WARMUP_S": "0",
                         "METRICX_RULES_BUDGET_MS": "0.000001"})
    t0 = base_time()
    day = t0.date()
    quiet = [snap(t0 + timedelta(seconds=i), day, metrics("10", 100, 1), entity=f"ad-{i}", workspace=str(ws))
             for i in range(20)]  # evaluated, never firing (spend 10)
    pipeline.start()
    produce(services, topics.raw, quiet)
    wait_until(lambda: rows(database, ws)[rule_id][0] == "disabled", 90, "the rule to be disabled",
               pipeline.assert_running)
    status, reason = rows(database, ws)[rule_id]
    assert status == "disabled" and reason is not None and "over budget" in reason
    assert "more than 0.001 µs" in reason
    log = pipeline.log(1)
    assert '"msg": "rules disabled"' in log and f'"workspace_id": "{ws}"' in log
    burner = snap(t0 + timedelta(minutes=1), day, metrics("100", 1000, 10), entity="burner", workspace=str(ws))
    produce(services, topics.raw, [burner])
    wait_until(lambda: progress(database, topics.raw) >= len(quiet) + 1, 60, "the burner", pipeline.assert_running)
    assert stored_alerts(database) == set()

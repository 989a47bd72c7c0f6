"""Stop-loss rules through the real path: rules on a compacted Kafka topic -> the running
Bytewax flow -> ``alerts`` rows (with the data) and ``metricx.alerts`` messages.

The expected alerts are written out per scenario ad (the story each one tells), not
derived from the code under test.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from adapters.kafka import Producer, delete_topics, ensure_topics, publish_snapshots
from ground.settings import Settings
from schemas.insight import Snapshot
from schemas.rules import RuleV1, rule_message
from schemas.topics import TopicSpec
from tests.factories import metrics, snap
from tests.integration.conftest import Pipeline, Topics
from tests.integration.test_pipeline_e2e import simulated
from tests.integration.totals import consume_all, progress, wait_until

WS_RULES = str(uuid.uuid4())
BURN = {"op": "and", "conditions": [
    {"metric": "spend", "operator": ">=", "value": "80"},
    {"metric": "conversions", "operator": "=", "value": "0"},
]}


@pytest.fixture
def stoploss_topics(services: Settings, pipeline: Pipeline) -> Iterator[tuple[str, str]]:
    suffix = uuid.uuid4().hex[:8]
    rules, alerts = f"metricx.rules.t{suffix}", f"metricx.alerts.t{suffix}"
    ensure_topics(services.kafka.bootstrap, [TopicSpec(rules, 1, {"cleanup.policy": "compact"}), TopicSpec(alerts, 2)])
    pipeline.env.update({"METRICX_RULES_TOPIC": rules, "METRICX_ALERTS_TOPIC": alerts, "METRICX_RULES_WARMUP_S": "0"})
    yield rules, alerts
    delete_topics(services.kafka.bootstrap, [rules, alerts])


def publish_rule(services: Settings, topic: str, rule_id: str, status: str = "active", version: int = 1,
                 **body: Any) -> None:
    r = RuleV1.model_validate({
        "id": rule_id, "workspace_id": WS_RULES, "name": body.pop("name", "burn"), "conditions": BURN,
        "status": status, "version": version, "updated_at": datetime.now(UTC).isoformat(), **body,
    })
    p = Producer(services.kafka.bootstrap)
    p.send(topic, rule_message(r), rule_id)
    p.flush()


def base_time() -> datetime:
    """Nine minutes of room before now, all on one UTC day (the accounts are in UTC)."""
    now = datetime.now(UTC).replace(microsecond=0)
    return max(now - timedelta(minutes=9), now.replace(hour=0, minute=0, second=0))


def scenario(t0: datetime) -> list[Snapshot]:
    day = t0.date()

    def s(ad: str, minute: int, spend: str, conv: str = "0") -> Snapshot:
        imps = int(float(spend) * 100)
        return snap(t0 + timedelta(minutes=minute), day, metrics(spend, imps, imps // 50, conv),
                    entity=ad, workspace=WS_RULES)

    return [
        s("burner", 0, "30"), s("burner", 1, "60"), s("burner", 2, "90"), s("burner", 3, "120"),
        s("seller", 0, "50", "1"), s("seller", 2, "95", "1"),
        s("late", 1, "85"), s("late", 4, "85", "2"),  # fired, then late conversions: recovered
        s("late", 4, "85", "2"),  # a duplicate delivery changes nothing
    ]


def expected(rule_id: str, day: str) -> set[tuple[str, str]]:
    fp = f"{rule_id}|sim:act-1:ad:{{}}|{day}|{{}}"
    return {
        ("burner", fp.format("burner", "fired")),
        ("late", fp.format("late", "fired")),
        ("late", fp.format("late", "recovered")),
    }


def stored_alerts(database: str) -> set[tuple[str, str]]:
    with psycopg.connect(database) as conn:
        return {(r[0], r[1]) for r in conn.execute("SELECT entity_id, fingerprint FROM alerts")}


def published_alerts(services: Settings, topic: str, at_least: int) -> list[dict[str, Any]]:
    return [json.loads(m.value() or b"null") for m in consume_all(services.kafka.bootstrap, topic, at_least, timeout=20)]


def produce(services: Settings, topic: str, snaps: list[Snapshot]) -> None:
    p = Producer(services.kafka.bootstrap)
    publish_snapshots(p, snaps, topic)
    p.flush()


def test_rules_fire_on_deltas_and_alerts_are_stored_and_published(
    services: Settings, topics: Topics, database: str, pipeline: Pipeline, stoploss_topics: tuple[str, str]
) -> None:
    rules_topic, alerts_topic = stoploss_topics
    rule_id = str(uuid.uuid4())
    publish_rule(services, rules_topic, rule_id, actions={"notify_recovery": True})
    t0 = base_time()
    snaps = scenario(t0)
    produce(services, topics.raw, snaps)
    pipeline.start()
    want = expected(rule_id, t0.date().isoformat())
    wait_until(lambda: stored_alerts(database) == want, 90, "the scenario's alerts", pipeline.assert_running)
    msgs = published_alerts(services, alerts_topic, len(want))
    assert {(m["entity_id"], m["fingerprint"]) for m in msgs} == want
    burner = next(m for m in msgs if m["entity_id"] == "burner")
    assert burner["observed"]["spend"] == "90" and burner["observed"]["roas"] == "0.000000"
    assert burner["observed"]["cpa"] is None and burner["workspace_id"] == WS_RULES
    assert burner["conditions"] == "spend >= 80 AND conversions = 0"


def test_a_kill_and_replay_produces_no_second_alert(
    services: Settings, topics: Topics, database: str, pipeline: Pipeline, stoploss_topics: tuple[str, str]
) -> None:
    rules_topic, alerts_topic = stoploss_topics
    rule_id = str(uuid.uuid4())
    publish_rule(services, rules_topic, rule_id)
    # No recovery snapshot during the test: after kill -9 the flow replays the whole
    # topic, so every alert is evaluated (and emitted) a second time.
    pipeline.env["METRICX_SNAPSHOT_INTERVAL_S"] = "3600"
    t0 = base_time()
    noise = simulated(seed=5, hours=6)
    produce(services, topics.raw, noise[: len(noise) // 2] + scenario(t0) + noise[len(noise) // 2:])
    total = len(noise) + len(scenario(t0))
    pipeline.start()
    want = expected(rule_id, t0.date().isoformat())
    wait_until(lambda: stored_alerts(database) == want and progress(database, topics.raw) >= total, 90,
               "the stream and its alerts", pipeline.assert_running)
    with psycopg.connect(database) as conn:
        first_seen: dict[str, datetime] = dict(conn.execute("SELECT fingerprint, created_at FROM alerts").fetchall())
    pipeline.kill()
    pipeline.start()
    # The replay re-emits every alert on the topic (at-least-once) ...
    msgs = published_alerts(services, alerts_topic, 2 * len(want))
    counts: dict[str, int] = {}
    for m in msgs:
        counts[m["fingerprint"]] = counts.get(m["fingerprint"], 0) + 1
    assert counts == {fp: 2 for _, fp in want}
    # ... with the same fingerprints, so the table gained nothing and changed nothing.
    with psycopg.connect(database) as conn:
        after: dict[str, datetime] = dict(conn.execute("SELECT fingerprint, created_at FROM alerts").fetchall())
    assert after == first_seen


def test_rule_changes_reach_the_running_flow_without_restart(
    services: Settings, topics: Topics, database: str, pipeline: Pipeline, stoploss_topics: tuple[str, str]
) -> None:
    rules_topic, _ = stoploss_topics
    t0 = base_time()
    day = t0.date()

    def ad(name: str, minute: int, spend: str) -> Snapshot:
        return snap(t0 + timedelta(minutes=minute), day, metrics(spend, 1000, 10), entity=name, workspace=WS_RULES)

    pipeline.start()
    produce(services, topics.raw, [ad("early", 0, "90")])
    wait_until(lambda: progress(database, topics.raw) >= 1, 60, "the first snapshot", pipeline.assert_running)
    assert stored_alerts(database) == set()  # no rule yet

    rule_id = str(uuid.uuid4())
    publish_rule(services, rules_topic, rule_id)
    wait_until(lambda: f'"rule_id": "{rule_id}"' in pipeline.log(1), 30, "the rule to be applied", pipeline.assert_running)
    produce(services, topics.raw, [ad("early", 1, "100")])
    wait_until(lambda: {e for e, _ in stored_alerts(database)} == {"early"}, 60, "the new rule to fire")

    publish_rule(services, rules_topic, rule_id, status="paused", version=2)
    wait_until(lambda: '"status": "paused"' in pipeline.log(1), 30, "the pause to be applied", pipeline.assert_running)
    produce(services, topics.raw, [ad("after-pause", 2, "100")])
    wait_until(lambda: progress(database, topics.raw) >= 3, 60, "the last snapshot", pipeline.assert_running)
    assert {e for e, _ in stored_alerts(database)} == {"early"}

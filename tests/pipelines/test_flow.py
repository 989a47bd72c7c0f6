"""The dataflow's wiring, with Bytewax's own testing source and sink and no service:
``build_flow`` takes its source and sink, so everything between them (validation, the
series state, dead letters, re-keying to the stop-loss watch) runs as in production.

The oracle is the simulator's (``expected_totals``: per series, what the platform
reported last), computed without any pipeline code.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.testing import TestingSink, TestingSource, run_main

from adapters.kafka import encode_snapshot
from domain.deltas import Applied, Ignored
from domain.rulebook import RuleBook
from domain.sim.generator import expected_totals, poll_stream
from domain.sim.world import build_world
from pipelines.flow import RawMessage, build_flow
from schemas.alerts import Alert
from schemas.envelope import DeadLetter
from schemas.insight import Snapshot
from schemas.metrics import Metrics
from schemas.rules import RuleV1, to_rule

TOPIC = "metricx.insights.raw"
CREATE_TIME = 1


def messages(snaps: list[Snapshot], extra: tuple[tuple[bytes, bytes], ...] = ()) -> list[RawMessage]:
    out: list[RawMessage] = []
    pairs = [encode_snapshot(s) for s in snaps] + list(extra)
    for offset, (key, value) in enumerate(pairs):
        out.append(KafkaSourceMessage(key=key, value=value, topic=TOPIC, offset=offset, partition=0,
                                      timestamp=(CREATE_TIME, 1_700_000_000_000 + offset)))
    return out


def simulated() -> list[Snapshot]:
    end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)
    return list(poll_stream(build_world(5, ads_per_adset=2), end - timedelta(hours=6), 25, seed=5))


def run(items: list[RawMessage], book: RuleBook | None = None) -> list[Any]:
    out: list[tuple[str, Any]] = []
    run_main(build_flow(TestingSource(items), TestingSink(out), book=book, warmup=timedelta(0)))  # type: ignore[no-untyped-call]
    return [item for _key, item in out]


def test_the_flow_turns_snapshots_into_exact_deltas_and_dead_letters_the_rest() -> None:
    snaps = simulated()
    garbage = (b"sim:a:b", b"{not json")
    items = run(messages(snaps, (garbage,)))
    applied = [o for o, _env in (i for i in items if isinstance(i, tuple)) if isinstance(o, Applied)]
    ignored = [o for o, _env in (i for i in items if isinstance(i, tuple)) if isinstance(o, Ignored)]
    dead = [i for i in items if isinstance(i, DeadLetter)]
    sums: dict[Any, Metrics] = defaultdict(Metrics)
    for a in applied:
        s = a.snapshot
        key = (s.workspace_id, s.provider, s.account_id, s.entity_id, s.report_date)
        sums[key] = sums[key] + a.delta
    assert dict(sums) == expected_totals(snaps)  # the deltas add up to what the platform reported last
    assert len(applied) + len(ignored) == len(snaps) and ignored  # the stream's duplicates changed nothing
    assert [(d.stage, d.envelope.offset, d.envelope.value) for d in dead] == [("validate", len(snaps), garbage[1])]
    # Every item knows where it came from (its Kafka position, its message's time).
    offsets = sorted(env.offset for i in items if isinstance(i, tuple) for _o, env in [i])
    assert offsets == list(range(len(snaps)))


def test_with_a_rule_book_applied_snapshots_reach_the_stop_loss_watch() -> None:
    snaps = simulated()
    ws = snaps[0].workspace_id
    rule = to_rule(RuleV1.model_validate({
        "id": str(uuid.uuid4()), "workspace_id": ws, "name": "any spend", "updated_at": datetime.now(UTC).isoformat(),
        "scope": {"level": "ad"}, "trigger": {"mode": "every_time"},
        "conditions": {"op": "and", "conditions": [{"metric": "spend", "operator": ">", "value": "0"}]}}))
    items = run(messages(snaps), RuleBook([rule]))
    alerts = [i for i in items if isinstance(i, Alert)]
    assert alerts and {a.workspace_id for a in alerts} == {ws}
    # Every alert fired on a snapshot of that workspace that delivered spend.
    fired = {(a.entity_id, a.captured_at) for a in alerts}
    delivered = {(o.snapshot.entity_id, o.snapshot.captured_at) for i in items if isinstance(i, tuple)
                 for o, _env in [i] if isinstance(o, Applied) and o.snapshot.workspace_id == ws
                 and o.delta.spend > Decimal(0)}
    assert fired <= delivered
    # Without the book, the same input makes no alert at all.
    assert not [i for i in run(messages(snaps)) if isinstance(i, Alert)]

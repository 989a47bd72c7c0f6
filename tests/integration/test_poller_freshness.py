"""Freshness of the hot loop through the real Syncer, the fake Graph API, Kafka and
PostgreSQL, on a clock the test sets: yesterday's last minutes after local midnight,
and reads under high usage.

Oracles: the fake's request log (which report dates were asked for), the snapshots on
the topic against the fake's truth, and times computed here from the fixed clock.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from uuid import UUID
from zoneinfo import ZoneInfo

import psycopg
import pytest
import redis

from adapters import connections_store as store
from adapters.crypto import Keyring, generate_key
from adapters.kafka import Producer
from ground.settings import Settings
from pollers.status import status_rows
from pollers.sync import Endpoints, Syncer
from tests.fakes import graph_api as mfake
from tests.integration.conftest import Topics
from tests.integration.totals import consume_all

WS = "2c9e4b1a-7d3f-4e5a-8b6c-0d1e2f3a4b5c"
TZ = "America/New_York"
TOKEN = "EAAfreshnesstoken"


class Clock:
    def __init__(self, t: datetime) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t


@pytest.fixture
def graph() -> Iterator[mfake.FakeGraphApi]:
    with mfake.FakeGraphApi().running() as f:
        yield f


def connect(database: str, keys: Keyring, account_id: str) -> store.Connection:
    with psycopg.connect(database, autocommit=True) as conn:
        store.add(conn, keys, store.NewConnection(workspace_id=UUID(WS), provider="meta", account_id=account_id,
                                                  tokens={"access_token": TOKEN}))
        c = store.get(conn, keys, WS, "meta", account_id)
    assert c is not None
    return c


def syncer(services: Settings, topics: Topics, database: str, keys: Keyring, graph: mfake.FakeGraphApi,
           clock: Clock) -> Syncer:
    return Syncer(database, keys, Producer(services.kafka.bootstrap), redis.Redis.from_url(services.redis.url),
                  Endpoints(meta_graph_url=graph.url), topic=topics.raw, deadletter_topic=topics.deadletter,
                  sleep=lambda s: None, clock=clock, jitter=lambda: 0.5)


def asked_dates(graph: mfake.FakeGraphApi, since: int) -> set[date]:
    out: set[date] = set()
    for r in graph.requests[since:]:
        if "time_range" in r.params:
            tr = json.loads(r.params["time_range"])
            out |= {date.fromisoformat(tr["since"]), date.fromisoformat(tr["until"])}
    return out


def test_after_local_midnight_the_hot_loop_rereads_yesterday_for_a_few_hours(
    services: Settings, topics: Topics, database: str, graph: mfake.FakeGraphApi,
) -> None:
    """Yesterday's last minutes (and a correction made after the last read before local
    midnight) used to wait up to 12 hours for the warm loop."""
    yesterday, today = date(2026, 11, 24), date(2026, 11, 25)
    acct = graph.add_account(mfake.FakeAccount("8080", TOKEN, TZ, "USD"))
    acct.put(mfake.AdDay("c", "s", "81", yesterday, Decimal("10.00"), 100, 5))
    keys = Keyring.parse(f"k1:{generate_key()}", None)
    c = connect(database, keys, "8080")
    clock = Clock(datetime(2026, 11, 25, 4, 50, tzinfo=UTC))  # 23:50 on the 24th in New York
    s = syncer(services, topics, database, keys, graph, clock)
    assert s.sync(c, "hot").status == "ok"
    assert asked_dates(graph, 0) == {yesterday}  # still "today" there

    # The last ten minutes of the day add spend, and Meta settles the day after midnight.
    acct.put(mfake.AdDay("c", "s", "81", yesterday, Decimal("12.40"), 130, 6))
    acct.put(mfake.AdDay("c", "s", "81", today, Decimal("0.30"), 4, 0))
    for minutes_after_midnight, rereads in ((20, True), (170, True), (190, False), (600, False)):
        clock.t = datetime(2026, 11, 25, 5, 0, tzinfo=UTC) + timedelta(minutes=minutes_after_midnight)
        seen = len(graph.requests)
        assert s.sync(c, "hot").status == "ok"
        assert asked_dates(graph, seen) == ({yesterday, today} if rereads else {today}), minutes_after_midnight
    snaps = [json.loads(m.value() or b"") for m in consume_all(services.kafka.bootstrap, topics.raw, 1 + 2 + 2 + 1 + 1)]
    last_of_yesterday = [x for x in snaps if x["report_date"] == yesterday.isoformat()][-1]
    assert (Decimal(str(last_of_yesterday["spend"])), last_of_yesterday["impressions"]) == (Decimal("12.40"), 130)


def usage(pct: float, reset_s: int = 1800) -> dict[str, str]:
    return {"x-ad-account-usage": json.dumps({"acc_id_util_pct": pct, "reset_time_duration": reset_s})}


def status(database: str, now: datetime) -> dict[str, object]:
    with psycopg.connect(database) as conn:
        return status_rows(conn, WS, now=now)[0]


def test_high_usage_slows_todays_reads_gradually_and_says_so(
    services: Settings, topics: Topics, database: str, graph: mfake.FakeGraphApi,
) -> None:
    """A 96 % answer used to end the hot sync as throttled (today's rows, already read,
    thrown away) and push the next read of today out by the reset time (30 minutes)."""
    t0 = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)  # 13:00 in New York
    acct = graph.add_account(mfake.FakeAccount("8181", TOKEN, TZ, "USD"))
    for i in range(3):
        acct.put(mfake.AdDay("c", "s", f"9{i}", date(2026, 11, 25), Decimal("1.25"), 10, 1))
    keys = Keyring.parse(f"k1:{generate_key()}", None)
    c = connect(database, keys, "8181")
    clock = Clock(t0)
    s = syncer(services, topics, database, keys, graph, clock)
    delays: dict[float, timedelta] = {}
    for pct in (40, 90, 96, 99, 100):
        graph.usage_headers = usage(pct)
        o = s.sync(c, "hot")
        assert (o.status, o.snapshots) == ("ok", 3), (pct, o.message)
        row = status(database, clock.t)
        delays[pct] = row["hot_next_run_at"] - clock.t  # type: ignore[operator]
        minutes = -(-delays[pct] // timedelta(minutes=1))  # rounded up
        if pct < 95:
            assert row["freshness"] == f"on time: next read in {minutes} min", row
        else:
            assert row["status"] == "active" and row["freshness"] == (
                f"degraded: next read in {minutes} min because usage {pct} %"), row
    normal = delays[40]
    # Today keeps its cadence below the pause line, then slows by degrees, never as far as
    # twice the normal interval short of the limit itself.
    assert delays[90] == normal
    assert normal < delays[96] < delays[99] < delays[100] <= 2 * normal
    assert delays[96] < timedelta(minutes=30)
    snaps = consume_all(services.kafka.bootstrap, topics.raw, 15)
    assert len(snaps) == 15  # every read's rows were published


def test_a_warm_read_at_high_usage_defers_the_warm_loop_not_todays_reads(
    services: Settings, topics: Topics, database: str, graph: mfake.FakeGraphApi,
) -> None:
    t0 = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)
    acct = graph.add_account(mfake.FakeAccount("8282", TOKEN, TZ, "USD"))
    acct.put(mfake.AdDay("c", "s", "91", date(2026, 11, 20), Decimal("1.25"), 10, 1))
    keys = Keyring.parse(f"k1:{generate_key()}", None)
    c = connect(database, keys, "8282")
    clock = Clock(t0)
    s = syncer(services, topics, database, keys, graph, clock)
    assert s.sync(c, "hot").status == "ok"
    graph.usage_headers = usage(97)
    clock.t = t0 + timedelta(minutes=1)
    warm = s.sync(c, "warm")
    assert warm.status == "throttled" and "97" in warm.message
    row = status(database, clock.t)
    assert row["status"] == "active" and row["throttled_until"] is None
    assert row["warm_next_run_at"] >= clock.t + timedelta(minutes=30)  # type: ignore[operator]
    with psycopg.connect(database, autocommit=True) as conn:
        later = t0 + timedelta(minutes=16)
        assert [x.account_id for x in store.due(conn, keys, later, "hot")] == ["8282"]
        assert store.due(conn, keys, later, "warm") == []


def test_a_platform_block_is_shown_with_its_end(
    services: Settings, topics: Topics, database: str, graph: mfake.FakeGraphApi,
) -> None:
    t0 = datetime.now(UTC)  # the row's first run is due "now" on the database's clock
    acct = graph.add_account(mfake.FakeAccount("8383", TOKEN, TZ, "USD"))
    acct.put(mfake.AdDay("c", "s", "92", t0.astimezone(ZoneInfo(TZ)).date(), Decimal("1.25"), 10, 1))
    keys = Keyring.parse(f"k1:{generate_key()}", None)
    c = connect(database, keys, "8383")
    s = syncer(services, topics, database, keys, graph, Clock(t0))
    graph.usage_headers = {"x-business-use-case-usage": json.dumps(
        {"8383": [{"type": "ads_insights", "call_count": 100, "estimated_time_to_regain_access": 20}]})}
    assert s.sync(c, "hot").status == "throttled"
    row = status(database, t0 + timedelta(minutes=5))
    assert row["status"] == "throttled" and str(row["freshness"]).startswith("throttled: next read in 15 min"), row

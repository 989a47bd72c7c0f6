"""`metricx connections add` and `metricx backfill` as real processes, against the fake
Graph API, Kafka and a fresh database.

The oracle for "what was read" is the fake's own request log (the ``time_range`` of
every insights read it answered), and the dates are computed here from the account's
zone with ``zoneinfo``, apart from the scheduler's code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import psycopg
import pytest

from connectors.connections import store
from connectors.connections.crypto import generate_key
from metricx.settings import REPO_ROOT, Settings
from tests.fakes import graph_api as mfake
from tests.integration.conftest import Topics

WS = "5f1d3a7c-2b8e-4c6a-9d0f-1e2a3b4c5d6e"
KEY = generate_key()
TOKEN = "EAAbackfillclitoken"


@pytest.fixture
def graph() -> Iterator[mfake.FakeGraphApi]:
    with mfake.FakeGraphApi(page_size=50).running() as f:
        f.running_polls = 0  # report runs complete at once: no real 5 s waits in the CLI
        yield f


def env_for(database: str, topics: Topics, graph: mfake.FakeGraphApi) -> dict[str, str]:
    return {**os.environ, "METRICX_DATABASE_URL": database, "METRICX_RAW_TOPIC": topics.raw,
            "METRICX_DEADLETTER_TOPIC": topics.deadletter, "METRICX_TOKEN_KEYS": f"k1:{KEY}",
            "METRICX_META_GRAPH_URL": graph.url, "PYTHONUNBUFFERED": "1"}


def run(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "metricx.cli", *args], input=stdin, capture_output=True,
                          text=True, env=env, cwd=REPO_ROOT, timeout=300)


def local_today(tz: str) -> date:
    return datetime.now(ZoneInfo(tz)).date()


def account(graph: mfake.FakeGraphApi, account_id: str, tz: str, days: int = 100) -> mfake.FakeAccount:
    """One ad with spend on each of the last ``days`` local days."""
    acct = graph.add_account(mfake.FakeAccount(account_id, TOKEN, tz, "USD"))
    today = local_today(tz)
    for d in range(1, days + 1):
        acct.put(mfake.AdDay("c1", "s1", "a1", today - timedelta(days=d), Decimal("1.5"), 10, 1))
    return acct


def days_read(graph: mfake.FakeGraphApi, since: int = 0) -> set[date]:
    """Every report date the fake was asked for (insights reads and report runs)."""
    out: set[date] = set()
    for r in graph.requests[since:]:
        if "time_range" in r.params:
            tr = json.loads(r.params["time_range"])
            d, until = date.fromisoformat(tr["since"]), date.fromisoformat(tr["until"])
            while d <= until:
                out.add(d)
                d += timedelta(days=1)
    return out


def last_days(tz: str, n: int) -> set[date]:
    today = local_today(tz)
    return {today - timedelta(days=k) for k in range(1, n + 1)}


def add(env: dict[str, str], account_id: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return run(env, "connections", "add", "--workspace", WS, "--provider", "meta", "--account-id", account_id,
               *extra, stdin=json.dumps({"access_token": TOKEN}))


def test_the_readme_spelling_act_123_is_accepted_everywhere(
    services: Settings, topics: Topics, database: str, graph: mfake.FakeGraphApi,
) -> None:
    tz = "America/New_York"
    account(graph, "4242", tz, days=3)
    env = env_for(database, topics, graph)
    added = add(env, "act_4242")
    assert added.returncode == 0, added.stderr
    with psycopg.connect(database) as conn:
        assert [r["account_id"] for r in store.status_rows(conn, WS)] == ["4242"]  # one canonical form
    again = add(env, "4242")  # the same account, the other spelling: no second row
    assert again.returncode == 0, again.stderr
    with psycopg.connect(database) as conn:
        assert len(store.status_rows(conn, WS)) == 1
    done = run(env, "backfill", "--workspace", WS, "--provider", "meta", "--account-id", "act_4242", "--days", "2")
    assert done.returncode == 0, done.stderr
    assert days_read(graph) == last_days(tz, 2)

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
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import psycopg
import pytest

from adapters.crypto import generate_key
from ground.settings import REPO_ROOT, Settings
from pollers.status import status_rows
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
        assert [r["account_id"] for r in status_rows(conn, WS)] == ["4242"]  # one canonical form
    again = add(env, "4242")  # the same account, the other spelling: no second row
    assert again.returncode == 0, again.stderr
    with psycopg.connect(database) as conn:
        assert len(status_rows(conn, WS)) == 1
    done = run(env, "backfill", "--workspace", WS, "--provider", "meta", "--account-id", "act_4242", "--days", "2")
    assert done.returncode == 0, done.stderr
    assert days_read(graph) == last_days(tz, 2)


def test_each_backfill_reads_the_range_it_asks_for_and_says_so(
    services: Settings, topics: Topics, database: str, graph: mfake.FakeGraphApi,
) -> None:
    """A second backfill used to do nothing: ``done_through`` from ``--days 2`` made
    ``--days 3`` and ``--days 90`` start after yesterday (no call, no output, exit 0)."""
    tz = "America/Los_Angeles"
    account(graph, "4343", tz)
    env = env_for(database, topics, graph)
    assert add(env, "4343").returncode == 0
    for n in (2, 3, 90):
        before = len(graph.requests)
        done = run(env, "backfill", "--workspace", WS, "--provider", "meta", "--account-id", "4343", "--days", str(n))
        assert done.returncode == 0, done.stderr
        assert days_read(graph, before) == last_days(tz, n), n
        first, last = min(last_days(tz, n)), max(last_days(tz, n))
        # What it read, in the account's days, with the snapshot count the fake holds there.
        assert f"{first}..{last} ({n} days)" in done.stdout and f"{n} snapshots" in done.stdout, done.stdout
    with psycopg.connect(database) as conn:
        row = status_rows(conn, WS)[0]
    assert (row["backfill_from"], row["backfill_until"], row["backfill_pct"]) == (first, last, 100)


def test_add_with_backfill_days_is_the_accounts_days_and_backfill_uses_it(
    services: Settings, topics: Topics, database: str, graph: mfake.FakeGraphApi,
) -> None:
    """``--backfill-days 5`` was recorded from the UTC date and ignored by ``metricx
    backfill`` (which read 90 days).  The account's zone is picked so that its date
    differs from the UTC date now, whatever the hour the test runs at."""
    tz = "Etc/GMT-14" if datetime.now(UTC).hour >= 11 else "Etc/GMT+12"  # UTC+14 / UTC-12
    assert local_today(tz) != datetime.now(UTC).date()
    account(graph, "4444", tz)
    env = env_for(database, topics, graph)
    assert add(env, "act_4444", "--backfill-days", "5").returncode == 0
    done = run(env, "backfill", "--workspace", WS, "--provider", "meta", "--account-id", "4444")
    assert done.returncode == 0, done.stderr
    assert days_read(graph) == last_days(tz, 5)
    assert "(5 days)" in done.stdout


def test_backfill_shows_a_progress_bar_with_rows_days_and_eta(
    services: Settings, topics: Topics, database: str, graph: mfake.FakeGraphApi,
) -> None:
    tz = "Europe/Berlin"
    account(graph, "4545", tz)
    env = env_for(database, topics, graph)
    assert add(env, "4545").returncode == 0
    done = run(env, "backfill", "--workspace", WS, "--provider", "meta", "--account-id", "4545",
               "--days", "20", "--chunk-days", "7")
    assert done.returncode == 0, done.stderr
    bars = [ln for ln in done.stdout.splitlines() if ln.startswith("backfill meta:4545")]
    # One line per chunk (not a terminal: no carriage returns), rows and days as read so far.
    assert [(b.split()[4], b.split()[5]) for b in bars] == [("7/20", "days"), ("14/20", "days"), ("20/20", "days")], bars
    assert [b.split(" rows")[0].rsplit(None, 1)[-1] for b in bars] == ["7", "14", "20"]
    assert all("ETA" in b for b in bars) and "100%" in bars[-1]

"""Fake-platform accounts -> real SDKs -> pollers -> Kafka -> the real pipeline -> tables.

The oracle is the fakes' own truth (what the platform "reported" last per ad-day), in
platform units: Meta decimal strings and one purchase count per row (however many
overlapping action types carry it), Google micros and doubles.  Totals in
``metrics_daily`` (and every other stored view) must equal it, including after a
restatement that lowers yesterday's spend.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest
import redis

from adapters import connections_store as store
from adapters.crypto import Keyring, generate_key
from adapters.kafka import Producer
from domain.backfill_progress import BackfillProgress
from domain.schedule import local_today
from ground.settings import REPO_ROOT, Settings
from pollers.status import status_rows
from pollers.sync import Endpoints, Syncer
from schemas.metrics import Metrics
from tests.databases import refresh_aggregates
from tests.fakes import google_ads_grpc as gfake
from tests.fakes import graph_api as mfake
from tests.fakes import oauth_token as ofake
from tests.integration.conftest import Pipeline, Topics
from tests.integration.totals import (
    SeriesKey,
    consume_all,
    header,
    latest_snapshots,
    normalise,
    per_series,
    wait_until,
)

WS = str(uuid.uuid4())
META_TZ, GOOGLE_TZ = "America/New_York", "Asia/Tokyo"
TABLES = ("metric_deltas", "metrics_15m", "metrics_hourly", "metrics_daily")


@pytest.fixture
def graph() -> Iterator[mfake.FakeGraphApi]:
    with mfake.FakeGraphApi(page_size=10).running() as f:
        yield f


@pytest.fixture
def gads() -> Iterator[gfake.FakeGoogleAds]:
    with gfake.FakeGoogleAds().running() as f:
        yield f


def without_grpc_roots(env: Mapping[str, str]) -> dict[str, str]:
    """The environment minus gRPC's process-wide roots (which the fake sets for this test
    process): a poller process must trust the fake through METRICX_GOOGLE_ADS_CA_FILE."""
    return {k: v for k, v in env.items() if k != "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"}


def meta_truth(acct: mfake.FakeAccount) -> dict[SeriesKey, Metrics]:
    return {(WS, "meta", acct.account_id, r.ad_id, r.day):
            Metrics(r.spend, r.impressions, r.clicks, r.purchases, r.revenue if r.purchases else Decimal(0))
            for r in acct.days.values() if r.impressions > 0}


def google_truth(c: gfake.FakeCustomer) -> dict[SeriesKey, Metrics]:
    return {(WS, "google", c.customer_id, str(r.entity_id), r.day):
            Metrics(Decimal(r.cost_micros) / 1_000_000, r.impressions, r.clicks,
                    Decimal(str(r.conversions)), Decimal(str(r.conversions_value)))
            for r in c.days.values()}


def test_fake_platforms_through_pipeline_exact_totals_with_restatement(
    services: Settings, topics: Topics, database: str, pipeline: Pipeline,
    graph: mfake.FakeGraphApi, gads: gfake.FakeGoogleAds,
) -> None:
    now = datetime.now(UTC)
    m_today, g_today = local_today(now, META_TZ), local_today(now, GOOGLE_TZ)
    macct = graph.add_account(mfake.FakeAccount("1010", "EAAe2etoken", META_TZ, "USD"))
    for i in range(23):
        for d in (m_today - timedelta(days=1), m_today):
            macct.put(mfake.AdDay(f"c{i % 2}", f"s{i % 4}", f"9{i:03d}", d, Decimal(f"{i + 1}.{i % 10}7"),
                                  100 * (i + 1), 3 * i, Decimal(i % 3), Decimal(f"{i * 7}.25")))
    macct.objects = {"campaigns": [{"id": "c0", "name": "Winter sale", "effective_status": "ACTIVE"},
                                   {"id": "c1", "name": "Retargeting", "effective_status": "PAUSED"}],
                     "ads": [{"id": f"9{i:03d}", "name": f"Ad {i}", "effective_status": "ACTIVE",
                              "campaign_id": f"c{i % 2}", "adset_id": f"s{i % 4}"} for i in range(23)]}
    gcust = gads.add(gfake.FakeCustomer("5551234567", "ya29.e2e", GOOGLE_TZ, "JPY", login_customer_id="9990001111"))
    for i in range(8):
        for d in (g_today - timedelta(days=1), g_today):
            gcust.put(gfake.AdDay(70 + i % 2, 80 + i % 3, 800 + i, d, 1_500_000 * (i + 1) + 17, 40 * (i + 1), i, i / 4, i * 3.5))
    gcust.put(gfake.AdDay(77, 999, 999, g_today, 12_340_000, 500, 20, 1.75, 64.5, pmax=True))
    # One malformed Meta row: it must reach the dead-letter topic, not vanish.
    graph.raw_rows["1010"] = [{"ad_id": "bad1", "campaign_id": "c0", "adset_id": "s0", "date_start": m_today.isoformat(),
                               "date_stop": m_today.isoformat(), "spend": "12,5", "impressions": "3", "clicks": "0"}]

    keys = Keyring.parse(f"k1:{generate_key()}", None)
    with psycopg.connect(database, autocommit=True) as conn:
        store.add(conn, keys, store.NewConnection(workspace_id=UUID(WS), provider="meta", account_id="1010",
                                                  tokens={"access_token": "EAAe2etoken"}))
        store.add(conn, keys, store.NewConnection(
            workspace_id=UUID(WS), provider="google", account_id="5551234567", login_customer_id="9990001111",
            tokens={"developer_token": gads.developer_token, "access_token": "ya29.e2e"}))
    syncer = Syncer(database, keys, Producer(services.kafka.bootstrap), redis.Redis.from_url(services.redis.url),
                    Endpoints(meta_graph_url=graph.url, google_endpoint=gads.endpoint),
                    topic=topics.raw, deadletter_topic=topics.deadletter, sleep=lambda s: None)

    outcomes = syncer.run_due()  # both connections are due in both loops on creation
    assert sorted((o.provider, o.loop, o.status) for o in outcomes) == [
        ("google", "hot", "ok"), ("google", "warm", "ok"), ("meta", "hot", "ok"), ("meta", "warm", "ok")]
    assert any(r.method == "POST" for r in graph.requests)  # the warm loop used async report runs
    expected = {**meta_truth(macct), **google_truth(gcust)}
    assert len(expected) == 46 + 17
    pipeline.start()
    wait_until(lambda: normalise(per_series(database, "metrics_daily")) == normalise(expected), 120,
               "daily totals to equal the fakes", pipeline.assert_running)

    # Restatement: Meta lowers yesterday's spend and adds late purchases; Google retracts
    # a conversion.  Only the warm loop reads yesterday.
    for i in (0, 5, 9):
        r = macct.days[(f"9{i:03d}", m_today - timedelta(days=1))]
        r.spend -= Decimal("0.50")
        r.purchases += 1
    gr = gcust.days[(803, g_today - timedelta(days=1))]
    gr.cost_micros -= 250_000
    gr.conversions -= 0.5
    c = store.get(psycopg.connect(database, autocommit=True), keys, WS, "meta", "1010")
    g = store.get(psycopg.connect(database, autocommit=True), keys, WS, "google", "5551234567")
    assert c is not None and g is not None
    assert syncer.sync(c, "warm").status == "ok" and syncer.sync(g, "warm").status == "ok"
    restated = {**meta_truth(macct), **google_truth(gcust)}
    lowered = (WS, "meta", "1010", "9005", m_today - timedelta(days=1))
    assert restated[lowered].spend < expected[lowered].spend
    wait_until(lambda: normalise(per_series(database, "metrics_daily")) == normalise(restated), 120,
               "restated totals", pipeline.assert_running)
    assert normalise(latest_snapshots(database)) == normalise(restated)
    refresh_aggregates(database)  # a restated, already materialised hour shows after a refresh
    for table in TABLES:
        assert normalise(per_series(database, table)) == normalise(restated), table
    with psycopg.connect(database) as conn:
        neg = conn.execute("SELECT count(*) FROM metric_deltas WHERE spend < 0").fetchone()
        assert neg is not None and neg[0] == 4  # three Meta ads + one Google ad restated down
        st = {r["provider"]: r for r in status_rows(conn, WS)}
        ents = {e.entity_id: e for e in store.entities_for_account(conn, WS, "meta", "1010")}
    assert len(ents) == 25 and ents["c1"].name == "Retargeting" and ents["c1"].status == "PAUSED"
    assert (ents["9005"].name, ents["9005"].campaign_id, ents["9005"].adset_id) == ("Ad 5", "c1", "s1")
    assert (st["meta"]["timezone"], st["meta"]["currency"], st["meta"]["status"]) == (META_TZ, "USD", "active")
    assert (st["google"]["timezone"], st["google"]["currency"]) == (GOOGLE_TZ, "JPY")
    assert all(s["hot_next_run_at"] > now + timedelta(minutes=11) for s in st.values())

    dead = consume_all(services.kafka.bootstrap, topics.deadletter, 3)
    assert len(dead) == 3 and all(b"bad1" in (m.value() or b"") for m in dead)  # once per Meta sync
    assert all(header(m, "metricx.dlq.stage") == b"poll" for m in dead)
    assert all(b"spend" in header(m, "metricx.dlq.reason") for m in dead)


def test_expired_meta_token_marks_needs_reauth_and_is_not_polled_again(
    services: Settings, topics: Topics, database: str, graph: mfake.FakeGraphApi,
) -> None:
    graph.add_account(mfake.FakeAccount("2020", "EAAcurrenttoken", META_TZ, "USD"))
    keys = Keyring.parse(f"k1:{generate_key()}", None)
    with psycopg.connect(database, autocommit=True) as conn:
        store.add(conn, keys, store.NewConnection(workspace_id=UUID(WS), provider="meta", account_id="2020",
                                                  tokens={"access_token": "EAAexpiredtoken"}))
    syncer = Syncer(database, keys, Producer(services.kafka.bootstrap), redis.Redis.from_url(services.redis.url),
                    Endpoints(meta_graph_url=graph.url), topic=topics.raw, deadletter_topic=topics.deadletter,
                    sleep=lambda s: None)
    assert [o.status for o in syncer.run_due()] == ["needs_reauth"]
    calls = len(graph.requests)
    assert syncer.run_due() == [] and len(graph.requests) == calls
    with psycopg.connect(database) as conn:
        row = status_rows(conn, WS)[0]
    assert row["status"] == "needs_reauth" and "190" in row["last_error"] and "EAAexpired" not in row["last_error"]


def test_lease_allows_one_sync_per_connection(services: Settings, topics: Topics, database: str,
                                              graph: mfake.FakeGraphApi) -> None:
    from adapters.lease import Lease, lease_key

    graph.add_account(mfake.FakeAccount("3030", "EAAleasetoken", META_TZ, "USD"))
    keys = Keyring.parse(f"k1:{generate_key()}", None)
    with psycopg.connect(database, autocommit=True) as conn:
        store.add(conn, keys, store.NewConnection(workspace_id=UUID(WS), provider="meta", account_id="3030",
                                                  tokens={"access_token": "EAAleasetoken"}))
        c = store.get(conn, keys, WS, "meta", "3030")
    assert c is not None
    r = redis.Redis.from_url(services.redis.url)
    syncer = Syncer(database, keys, Producer(services.kafka.bootstrap), r, Endpoints(meta_graph_url=graph.url),
                    topic=topics.raw, deadletter_topic=topics.deadletter)
    other = Lease(r, lease_key(WS, "meta", "3030"), ttl_s=30)
    assert other.acquire()
    try:
        assert syncer.sync(c, "hot").status == "skipped" and graph.requests == []
        stale = Lease(r, lease_key(WS, "meta", "3030"))
        stale.held = True
        stale.release()  # a process whose lease expired cannot delete another's
        assert r.get(lease_key(WS, "meta", "3030")) == other.token.encode()
    finally:
        other.release()
    assert syncer.sync(c, "hot").status == "ok" and graph.requests
    assert r.get(lease_key(WS, "meta", "3030")) is None


class StepClock:
    """A clock the test moves (the backfill's pace, hence its ETA, is measured on it)."""

    def __init__(self, t: datetime) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t


def report_dates(graph: mfake.FakeGraphApi, since: int = 0) -> set[date]:
    out: set[date] = set()
    for r in graph.requests[since:]:
        if r.method == "POST" and "time_range" in r.params:
            tr = json.loads(r.params["time_range"])
            d = date.fromisoformat(tr["since"])
            while d <= date.fromisoformat(tr["until"]):
                out.add(d)
                d += timedelta(days=1)
    return out


def test_backfill_is_chunked_resumable_and_recorded(services: Settings, topics: Topics, database: str,
                                                    graph: mfake.FakeGraphApi) -> None:
    clock = StepClock(datetime.now(UTC))
    today = local_today(clock.t, META_TZ)
    acct = graph.add_account(mfake.FakeAccount("4040", "EAAbackfilltok", META_TZ, "USD"))
    for d in range(1, 22):
        acct.put(mfake.AdDay("c", "s", "77", today - timedelta(days=d), Decimal("2.5"), 10, 1))
    keys = Keyring.parse(f"k1:{generate_key()}", None)
    with psycopg.connect(database, autocommit=True) as conn:
        store.add(conn, keys, store.NewConnection(workspace_id=UUID(WS), provider="meta", account_id="4040",
                                                  tokens={"access_token": "EAAbackfilltok"}))
        c = store.get(conn, keys, WS, "meta", "4040")
    assert c is not None
    syncer = Syncer(database, keys, Producer(services.kafka.bootstrap), redis.Redis.from_url(services.redis.url),
                    Endpoints(meta_graph_url=graph.url), topic=topics.raw, deadletter_topic=topics.deadletter,
                    sleep=lambda s: None, clock=clock)

    def chunk_done(p: BackfillProgress) -> None:
        clock.t += timedelta(minutes=10)  # each chunk takes ten minutes on the test's clock
        if p.done_days == 7:
            graph.fail_next(mfake.ScriptedError(100))  # the second chunk's first call fails: progress stops

    first = syncer.backfill(c, days=21, chunk_days=7, on_progress=chunk_done)
    assert [o.status for o in first.outcomes] == ["ok", "ok", "error"]  # lookup, chunk 1, chunk 2
    assert report_dates(graph) == {today - timedelta(days=d) for d in range(15, 22)}
    with psycopg.connect(database, autocommit=True) as conn:
        c = store.get(conn, keys, WS, "meta", "4040")
        row = status_rows(conn, WS, now=clock.t)[0]
    assert c is not None and c.backfill_done_through == today - timedelta(days=15)
    # 7 of 21 days in ten minutes: two more chunks of seven, twenty minutes left.
    assert (row["backfill_pct"], row["backfill_rows"]) == (33, 7)
    assert row["backfill_eta"] == clock.t + timedelta(minutes=20)

    seen = len(graph.requests)
    again = syncer.backfill(c, days=21, chunk_days=7)  # the same range, unfinished: resumed
    assert again.resumed_after == today - timedelta(days=15)
    assert [(o.status, o.snapshots) for o in again.outcomes] == [("ok", 0), ("ok", 7), ("ok", 7)]
    assert report_dates(graph, seen) == {today - timedelta(days=d) for d in range(1, 15)}
    with psycopg.connect(database, autocommit=True) as conn:
        c = store.get(conn, keys, WS, "meta", "4040")
        row = status_rows(conn, WS, now=clock.t)[0]
    assert c is not None and c.backfill_done_through == today - timedelta(days=1)
    assert (row["backfill_pct"], row["backfill_rows"], row["backfill_eta"]) == (100, 21, clock.t)

    seen = len(graph.requests)
    asked = syncer.backfill(c, days=21, chunk_days=7)  # finished, asked for again: read again
    assert asked.resumed_after is None and [o.snapshots for o in asked.outcomes] == [0, 7, 7, 7]
    assert report_dates(graph, seen) == {today - timedelta(days=d) for d in range(1, 22)}


def test_metricx_poller_process_runs_both_loops_against_the_fakes(
    services: Settings, topics: Topics, database: str, pipeline: Pipeline,
    graph: mfake.FakeGraphApi, gads: gfake.FakeGoogleAds, tmp_path: Path,
) -> None:
    """`metricx poller` (no --sim) as a real OS process: it finds due connections, syncs
    them, and the pipeline stores exactly what the fakes reported."""
    now = datetime.now(UTC)
    m_today, g_today = local_today(now, META_TZ), local_today(now, GOOGLE_TZ)
    macct = graph.add_account(mfake.FakeAccount("5050", "EAAproctoken", META_TZ, "USD"))
    for i in range(4):
        macct.put(mfake.AdDay("c", "s", f"5{i}", m_today, Decimal(f"{i}.25"), 10 + i, i, Decimal(1), Decimal("9.99")))
        macct.put(mfake.AdDay("c", "s", f"5{i}", m_today - timedelta(days=3), Decimal("7"), 70, 7))
    gcust = gads.add(gfake.FakeCustomer("6060606060", "ya29.proc", GOOGLE_TZ, "JPY"))
    gcust.put(gfake.AdDay(1, 2, 3, g_today, 5_000_000, 100, 3, 0.5, 12.0))
    key = generate_key()
    keys = Keyring.parse(f"k1:{key}", None)
    with psycopg.connect(database, autocommit=True) as conn:
        store.add(conn, keys, store.NewConnection(workspace_id=UUID(WS), provider="meta", account_id="5050",
                                                  tokens={"access_token": "EAAproctoken"}))
        store.add(conn, keys, store.NewConnection(workspace_id=UUID(WS), provider="google", account_id="6060606060",
                                                  tokens={"developer_token": gads.developer_token,
                                                          "access_token": "ya29.proc"}))
    env = {**without_grpc_roots(pipeline.env), "METRICX_TOKEN_KEYS": f"k1:{key}", "METRICX_META_GRAPH_URL": graph.url,
           "METRICX_GOOGLE_ADS_ENDPOINT": gads.endpoint, "METRICX_GOOGLE_ADS_CA_FILE": str(gfake.trust_fake_roots())}
    with open(tmp_path / "poller.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "metricx.cli", "poller", "--interval", "0.5"], env=env,
                                stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
    try:
        pipeline.start()
        expected = {**meta_truth(macct), **google_truth(gcust)}

        def alive() -> None:
            pipeline.assert_running()
            assert proc.poll() is None, (tmp_path / "poller.log").read_text()[-3000:]

        wait_until(lambda: normalise(per_series(database, "metrics_daily")) == normalise(expected), 120,
                   "poller process totals", alive)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0
    with psycopg.connect(database) as conn:
        st = status_rows(conn, WS)
    assert all(r["status"] == "active" and r["last_success_at"] is not None for r in st)
    out = (tmp_path / "poller.log").read_text()
    assert "EAAproctoken" not in out and "ya29.proc" not in out


def test_bad_account_metadata_is_an_error_status_not_a_crash(
    services: Settings, topics: Topics, database: str, graph: mfake.FakeGraphApi,
) -> None:
    graph.add_account(mfake.FakeAccount("7070", "EAAmarstoken", "Mars/Olympus_Mons", "USD"))
    graph.add_account(mfake.FakeAccount("7071", "EAAearthtoken", META_TZ, "USD"))
    keys = Keyring.parse(f"k1:{generate_key()}", None)
    with psycopg.connect(database, autocommit=True) as conn:
        for acct, tok in (("7070", "EAAmarstoken"), ("7071", "EAAearthtoken")):
            store.add(conn, keys, store.NewConnection(workspace_id=UUID(WS), provider="meta", account_id=acct,
                                                      tokens={"access_token": tok}))
    syncer = Syncer(database, keys, Producer(services.kafka.bootstrap), redis.Redis.from_url(services.redis.url),
                    Endpoints(meta_graph_url=graph.url), topic=topics.raw, deadletter_topic=topics.deadletter,
                    sleep=lambda s: None)
    got = {(o.account_id, o.loop): o.status for o in syncer.run_due()}
    assert got == {("7070", "hot"): "error", ("7071", "hot"): "ok", ("7071", "warm"): "ok"}
    with psycopg.connect(database) as conn:
        st = {r["account_id"]: r for r in status_rows(conn, WS)}
    assert st["7070"]["status"] == "error" and "Mars/Olympus_Mons" in st["7070"]["last_error"]
    assert "EAAmars" not in st["7070"]["last_error"]


def test_status_counts_every_api_call_made(
    services: Settings, topics: Topics, database: str, graph: mfake.FakeGraphApi, gads: gfake.FakeGoogleAds,
) -> None:
    """The count used to miss calls of failed syncs (a revoked token's one call, a
    quota-refused call) and the backfill's customer lookup.  Oracle: the fakes' own logs."""
    graph.add_account(mfake.FakeAccount("9090", "EAAcurrenttoken", META_TZ, "USD"))
    today = local_today(datetime.now(UTC), GOOGLE_TZ)
    gq = gads.add(gfake.FakeCustomer("9191919191", "ya29.quota", GOOGLE_TZ, "JPY"))
    gb = gads.add(gfake.FakeCustomer("9292929292", "ya29.backfill", GOOGLE_TZ, "JPY"))
    for cust in (gq, gb):
        cust.put(gfake.AdDay(1, 2, 3, today - timedelta(days=1), 1_000_000, 10, 1, 0.0, 0.0))
    keys = Keyring.parse(f"k1:{generate_key()}", None)
    with psycopg.connect(database, autocommit=True) as conn:
        store.add(conn, keys, store.NewConnection(workspace_id=UUID(WS), provider="meta", account_id="9090",
                                                  tokens={"access_token": "EAArevokedtoken"}))
        for cid, tok in (("9191919191", "ya29.quota"), ("9292929292", "ya29.backfill")):
            store.add(conn, keys, store.NewConnection(workspace_id=UUID(WS), provider="google", account_id=cid,
                                                      tokens={"developer_token": gads.developer_token,
                                                              "access_token": tok}))
        m, q, b = (store.get(conn, keys, WS, p, a) for p, a in
                   (("meta", "9090"), ("google", "9191919191"), ("google", "9292929292")))
    assert m is not None and q is not None and b is not None
    syncer = Syncer(database, keys, Producer(services.kafka.bootstrap), redis.Redis.from_url(services.redis.url),
                    Endpoints(meta_graph_url=graph.url, google_endpoint=gads.endpoint),
                    topic=topics.raw, deadletter_topic=topics.deadletter, sleep=lambda s: None)
    assert syncer.sync(m, "hot").status == "needs_reauth"
    gads.fail_next(gfake.Scripted("pass"), gfake.Scripted("quota", retry_delay_s=30))  # the customer, then refused
    assert syncer.sync(q, "hot").status == "throttled"
    assert syncer.backfill(b, days=3).ok
    with psycopg.connect(database) as conn:
        calls = {r["account_id"]: r["api_calls_today"] for r in status_rows(conn, WS)}
    served = {cid: sum(1 for x in gads.seen if x.customer_id == cid) for cid in ("9191919191", "9292929292")}
    assert served == {"9191919191": 2, "9292929292": 4}  # backfill: lookup, then customer + ads + asset groups
    assert calls == {"9090": len(graph.requests), **served}
    assert calls["9090"] == 1


@pytest.fixture
def oauth() -> Iterator[ofake.FakeTokenEndpoint]:
    with ofake.FakeTokenEndpoint().running() as f:
        yield f


def test_google_refresh_token_connections_renew_through_the_configured_token_endpoint(
    services: Settings, topics: Topics, database: str, gads: gfake.FakeGoogleAds, oauth: ofake.FakeTokenEndpoint,
    tmp_path: Path,
) -> None:
    """The README connected Google with a bare access token (Google expires it after an
    hour).  A real connection is the OAuth client and a refresh token, renewed by the
    poller at ``METRICX_GOOGLE_OAUTH_TOKEN_URL``; a revoked refresh token (``invalid_grant``)
    is ``needs_reauth`` with a message that says what to do."""
    today = local_today(datetime.now(UTC), GOOGLE_TZ)
    renewed = gads.add(gfake.FakeCustomer("7070707070", "ya29.renewed", GOOGLE_TZ, "JPY"))
    renewed.put(gfake.AdDay(1, 2, 3, today, 2_500_000, 10, 1, 0.0, 0.0))
    gads.add(gfake.FakeCustomer("7171717171", "ya29.never", GOOGLE_TZ, "JPY"))
    bare = gads.add(gfake.FakeCustomer("7272727272", "ya29.bareSECRET", GOOGLE_TZ, "JPY"))
    bare.put(gfake.AdDay(4, 5, 6, today, 1_000_000, 10, 1, 0.0, 0.0))
    oauth.grant("1//refreshSECRET", "client-1.apps.googleusercontent.com", "clientSECRET", "ya29.renewed")
    oauth.grant("1//revokedSECRET", "client-1.apps.googleusercontent.com", "clientSECRET", "ya29.never")
    oauth.revoke("1//revokedSECRET")
    key = generate_key()
    keys = Keyring.parse(f"k1:{key}", None)
    client = {"developer_token": gads.developer_token, "client_id": "client-1.apps.googleusercontent.com",
              "client_secret": "clientSECRET"}
    with psycopg.connect(database, autocommit=True) as conn:
        for cid, tokens in (("7070707070", {**client, "refresh_token": "1//refreshSECRET"}),
                            ("7171717171", {**client, "refresh_token": "1//revokedSECRET"}),
                            ("7272727272", {"developer_token": gads.developer_token, "access_token": "ya29.bareSECRET"})):
            store.add(conn, keys, store.NewConnection(workspace_id=UUID(WS), provider="google", account_id=cid,
                                                      tokens=tokens))
    env = {**without_grpc_roots(os.environ), "METRICX_DATABASE_URL": database, "METRICX_RAW_TOPIC": topics.raw,
           "METRICX_DEADLETTER_TOPIC": topics.deadletter, "METRICX_TOKEN_KEYS": f"k1:{key}",
           "METRICX_GOOGLE_ADS_ENDPOINT": gads.endpoint, "METRICX_GOOGLE_OAUTH_TOKEN_URL": oauth.url,
           "METRICX_GOOGLE_ADS_CA_FILE": str(gfake.trust_fake_roots()), "PYTHONUNBUFFERED": "1"}
    with open(tmp_path / "poller.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "metricx.cli", "poller", "--interval", "0.5"], env=env,
                                stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)

    def statuses() -> dict[str, dict[str, Any]]:
        with psycopg.connect(database) as conn:
            return {r["account_id"]: r for r in status_rows(conn, WS)}

    def settled() -> bool:
        assert proc.poll() is None, (tmp_path / "poller.log").read_text()[-3000:]
        st = statuses()
        return (st["7171717171"]["status"] == "needs_reauth"
                and all(st[c]["last_success_at"] is not None and st[c]["warm_next_run_at"] > datetime.now(UTC)
                        for c in ("7070707070", "7272727272")))
    try:
        wait_until(settled, 90, "google connections to settle")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    st = statuses()
    assert st["7070707070"]["status"] == "active" and st["7070707070"]["credential_note"] is None
    assert st["7272727272"]["status"] == "active" and "expire" in str(st["7272727272"]["credential_note"])
    revoked = str(st["7171717171"]["last_error"])
    assert "invalid_grant" in revoked and "reconnect" in revoked, revoked
    # The renewed connection refreshed once for its hot and warm syncs; every ads call carried
    # the renewed token.
    grants = [r.form["refresh_token"] for r in oauth.requests]
    assert grants.count("1//refreshSECRET") == 1 and grants.count("1//revokedSECRET") == 1
    assert {s.metadata["authorization"] for s in gads.seen if s.customer_id == "7070707070"} == {"Bearer ya29.renewed"}
    assert not [s for s in gads.seen if s.customer_id == "7171717171"]  # never called without a token
    out = (tmp_path / "poller.log").read_text()
    assert "SECRET" not in out and "SECRET" not in json.dumps(st, default=str)


def test_every_line_the_poller_process_logs_is_json_without_secrets(
    services: Settings, topics: Topics, database: str, graph: mfake.FakeGraphApi, gads: gfake.FakeGoogleAds,
    oauth: ofake.FakeTokenEndpoint, tmp_path: Path,
) -> None:
    """A failed Google call wrote a plain-text ``Request made: ...`` line into the JSON
    log (the SDK's ``google`` logger bypassed our handler, its INFO lines were lost).
    At DEBUG every library logs its requests (urllib3 the Graph API URLs with the token in
    the query, the google-ads SDK its request headers): each line must be JSON, whatever
    wrote it, and carry no token or secret."""
    now = datetime.now(UTC)
    macct = graph.add_account(mfake.FakeAccount("6161", "EAAlogSECRETtoken", META_TZ, "USD"))
    macct.put(mfake.AdDay("c", "s", "61", local_today(now, META_TZ), Decimal("1.5"), 10, 1))
    gads.developer_token = "devSECRETtoken"
    cust = gads.add(gfake.FakeCustomer("6262626262", "ya29.logSECRET", GOOGLE_TZ, "JPY"))
    cust.put(gfake.AdDay(1, 2, 3, local_today(now, GOOGLE_TZ), 1_000_000, 10, 1, 0.0, 0.0))
    oauth.grant("1//logSECRETrefresh", "client-log.apps", "GOCSPX-logSECRET", "ya29.logSECRET")
    gads.fail_next(gfake.Scripted("pass"), gfake.Scripted("quota", retry_delay_s=600))  # a failed Google call
    key = generate_key()
    keys = Keyring.parse(f"k1:{key}", None)
    with psycopg.connect(database, autocommit=True) as conn:
        store.add(conn, keys, store.NewConnection(workspace_id=UUID(WS), provider="meta", account_id="6161",
                                                  tokens={"access_token": "EAAlogSECRETtoken"}))
        store.add(conn, keys, store.NewConnection(
            workspace_id=UUID(WS), provider="google", account_id="6262626262",
            tokens={"developer_token": "devSECRETtoken", "refresh_token": "1//logSECRETrefresh",
                    "client_id": "client-log.apps", "client_secret": "GOCSPX-logSECRET"}))
    env = {**without_grpc_roots(os.environ), "METRICX_DATABASE_URL": database, "METRICX_RAW_TOPIC": topics.raw,
           "METRICX_DEADLETTER_TOPIC": topics.deadletter, "METRICX_TOKEN_KEYS": f"k1:{key}",
           "METRICX_META_GRAPH_URL": graph.url, "METRICX_GOOGLE_ADS_ENDPOINT": gads.endpoint,
           "METRICX_GOOGLE_OAUTH_TOKEN_URL": oauth.url, "METRICX_GOOGLE_ADS_CA_FILE": str(gfake.trust_fake_roots()),
           "METRICX_LOG_LEVEL": "DEBUG", "PYTHONUNBUFFERED": "1"}
    with open(tmp_path / "stdout", "wb") as out, open(tmp_path / "stderr", "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "metricx.cli", "poller", "--interval", "0.5"], env=env,
                                stdout=out, stderr=err, cwd=REPO_ROOT)

    def settled() -> bool:
        assert proc.poll() is None, (tmp_path / "stderr").read_text()[-3000:]
        with psycopg.connect(database) as conn:
            st = {r["provider"]: r for r in status_rows(conn, WS)}
        return bool(st["google"]["status"] == "throttled" and st["meta"]["warm_next_run_at"] > datetime.now(UTC))
    try:
        wait_until(settled, 90, "both connections synced")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0
    lines = (tmp_path / "stderr").read_text().splitlines()
    records = []
    for n, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"line {n + 1} of {len(lines)} is not JSON: {line[:300]!r}") from None
    assert all(isinstance(r, dict) and {"ts", "level", "logger", "msg"} <= set(r) for r in records)
    by_logger = {r["logger"] for r in records}
    google_sdk = [r for r in records if r["logger"].startswith("google.ads.googleads")]
    # The SDK's summary of the refused call (a warning) and of the calls that went through (info).
    assert any(r["level"] == "warning" and "IsFault: True" in r["msg"] for r in google_sdk), by_logger
    assert any(r["level"] == "info" and "IsFault: False" in r["msg"] for r in google_sdk), by_logger
    assert any(r["logger"].startswith("urllib3") for r in records), by_logger  # DEBUG reached the libraries
    text = "\n".join(lines) + (tmp_path / "stdout").read_text()
    assert "SECRET" not in text, [ln for ln in lines if "SECRET" in ln][:3]

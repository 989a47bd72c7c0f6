"""The page in headless Debian chromium (DevTools protocol): it loads the workspace's
numbers, shows the stream as live, and a snapshot produced into Kafka during the test
(through the real pipeline) appears without a reload."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest
from psycopg.types.json import Jsonb

from adapters import channels_store as channels
from adapters.kafka import Producer, publish_snapshots
from adapters.redis_live import LivePublisher
from ground.settings import Settings
from schemas.alerts import Alert, alert_payload
from tests.integration.conftest import Pipeline, Topics, pipeline, topics  # noqa: F401 - fixtures
from tests.notifier.factory import keyring
from tests.serving.cdp import Browser
from tests.serving.conftest import Issuer, Server, Tenants, snapshot, today_utc, write

SPEND = "document.querySelector('[data-kpi=spend] .value')?.textContent"
STATE = "document.getElementById('conn').dataset.state"
TOP = "Array.from(document.querySelectorAll('#top tbody td:nth-child(2)')).map(td => td.textContent).join(',')"


@pytest.fixture
def browser() -> Iterator[Browser]:
    b = Browser()
    yield b
    b.close()


def test_page_loads_and_updates_live(services: Settings, topics: Topics, pipeline: Pipeline,  # noqa: F811
                                     server: Server, issuer: Issuer, tenants: Tenants, database: str,
                                     browser: Browser) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    day = today_utc()
    early, late = now - timedelta(minutes=2), now - timedelta(minutes=1)
    if early.date() != day:
        early, late = now - timedelta(seconds=20), now - timedelta(seconds=10)
    # Demo data already in the tables (written like the pipeline's sink writes it).
    write(database, [snapshot(tenants.ws_a, campaign="cmp-demo", ad="ad-1", day=day, captured_at=early,
                              spend="30", impressions=3000, clicks=30, revenue="60")])
    token = issuer.token(tenants.alice, workspace_id=str(tenants.ws_a))
    session = browser.open(f"{server.base}/#token={token}")
    assert browser.wait_for(session, SPEND, lambda v: v == "$30.00") == "$30.00"
    assert browser.wait_for(session, STATE, lambda v: v == "live") == "live"
    assert "cmp-demo" in browser.evaluate(session, TOP)
    # A snapshot produced into Kafka now: pipeline -> tables + Redis -> /stream -> page.
    producer = Producer(services.kafka.bootstrap)
    publish_snapshots(producer, [snapshot(tenants.ws_a, campaign="cmp-new", ad="ad-9", day=day, captured_at=late,
                                          spend="12.5", impressions=100, clicks=2, revenue="5")], topics.raw)
    producer.flush()
    pipeline.start()
    assert browser.wait_for(session, SPEND, lambda v: v == "$42.50", timeout=90) == "$42.50"
    assert "cmp-new" in browser.evaluate(session, TOP)
    assert browser.evaluate(session, "location.hash") == ""  # the token does not linger in the address


FEED = "Array.from(document.querySelectorAll('#alerts li')).map(li => li.textContent).join('|')"


def test_alert_feed_shows_a_new_alert_on_the_next_live_event(services: Settings, server: Server, issuer: Issuer,
                                                             tenants: Tenants, database: str,
                                                             browser: Browser) -> None:
    """An alert the pipeline stored shows up in the feed when the next live event
    arrives (the page refetches /alerts, coalesced); names are shown as text, not HTML."""
    now = datetime.now(UTC).replace(microsecond=0)
    write(database, [snapshot(tenants.ws_a, campaign="cmp-demo", ad="ad-1", day=today_utc(),
                              captured_at=now - timedelta(seconds=30), spend="30", impressions=3000)])
    session = browser.open(f"{server.base}/#token={issuer.token(tenants.alice, workspace_id=str(tenants.ws_a))}")
    assert browser.wait_for(session, STATE, lambda v: v == "live") == "live"
    assert browser.evaluate(session, FEED) == "no alerts"
    rule = uuid.uuid4()
    a = Alert(fingerprint=f"{rule}|meta:act-1:ad:ad-1|{today_utc()}|fired", kind="fired",
              workspace_id=str(tenants.ws_a), rule_id=str(rule), rule_version=1, rule_name="<i>Spent 80</i>, no sale",
              conditions="spend >= 80 AND conversions = 0", window="today", provider="meta", account_id="act-1",
              entity_level="ad", entity_id="ad-1", campaign_id="cmp-demo", adset_id="set-1", report_date=today_utc(),
              timezone="UTC", currency="USD", captured_at=now,
              observed=(("spend", Decimal("84.5")), ("conversions", Decimal(0)), ("roas", Decimal(0)),
                        ("cpa", None)), notify=(), pause=False, pause_dry_run=True, resume=False)
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO alerts (fingerprint, workspace_id, rule_id, kind, provider, account_id, entity_level, "
            "entity_id, campaign_id, report_date, currency, captured_at, payload) "
            "VALUES (%s, %s, %s, 'fired', 'meta', 'act-1', 'ad', 'ad-1', 'cmp-demo', %s, 'USD', %s, %s)",
            (a.fingerprint, tenants.ws_a, rule, a.report_date, now, Jsonb(alert_payload(a))))
        # A Slack channel the notifier disabled (410): the page must say alerts stopped there.
        hook = channels.create(conn, keyring(), tenants.ws_a, "slack", "#buyers", "https://hooks.slack.com/services/T/B/x")
        channels.disable(conn, tenants.ws_a, hook.id, "410 channel_is_archived")
    live = LivePublisher(services.redis.url)
    try:
        live.publish({str(tenants.ws_a): {"committed_at": now.isoformat(), "changes": []}})
    finally:
        live.close()
    feed = browser.wait_for(session, FEED, lambda v: "Spent 80" in v, timeout=30)
    assert "<i>Spent 80</i>, no sale" in feed and "ad-1" in feed and "fired" in feed
    assert "spend $84.50" in feed and "cpa —" in feed
    assert browser.evaluate(session, "document.querySelectorAll('#alerts i').length") == 0  # text, never markup
    banner = browser.evaluate(session, "document.getElementById('channel-errors').hidden ? '' : "
                                       "document.getElementById('channel-errors').textContent")
    assert "#buyers" in banner and "410 channel_is_archived" in banner

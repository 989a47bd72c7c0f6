"""The page in headless Debian chromium (DevTools protocol): it loads the workspace's
numbers, shows the stream as live, and a snapshot produced into Kafka during the test
(through the real pipeline) appears without a reload."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from connectors.kafka import Producer, publish_snapshots
from metricx.settings import Settings
from tests.integration.conftest import Pipeline, Topics, pipeline, topics  # noqa: F401 - fixtures
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
    producer = Producer(services.kafka_bootstrap)
    publish_snapshots(producer, [snapshot(tenants.ws_a, campaign="cmp-new", ad="ad-9", day=day, captured_at=late,
                                          spend="12.5", impressions=100, clicks=2, revenue="5")], topics.raw)
    producer.flush()
    pipeline.start()
    assert browser.wait_for(session, SPEND, lambda v: v == "$42.50", timeout=90) == "$42.50"
    assert "cmp-new" in browser.evaluate(session, TOP)
    assert browser.evaluate(session, "location.hash") == ""  # the token does not linger in the address

"""One sync of one connection, and the poller service loop around it.

A sync: take the connection's Redis lease (at most one sync per connection across
poller processes), build that connection's own SDK client from its decrypted tokens,
read the account's time zone and currency, poll the loop's window of local report dates,
publish snapshots (and dead letters) through ``connectors.kafka.Producer`` and wait for
the broker, then record success and the next run - or the failure kind (needs_reauth /
throttled / error) with a token-free message.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import psycopg
import redis
from pydantic import ValidationError

from connectors.connections import store
from connectors.connections.crypto import Keyring
from connectors.connections.errors import SyncFailure, redact
from connectors.connections.lease import Lease, lease_key
from connectors.connections.publish import PollResult, publish_poll
from connectors.connections.resilience import CircuitBreaker
from connectors.connections.schedule import (
    Window,
    backfill_chunks,
    hot_window,
    local_today,
    next_run,
    warm_window,
)
from connectors.google_ads.logic import Budget, OperationBudget
from connectors.google_ads.poller import GoogleAccount, GoogleAdsPoller
from connectors.kafka import Producer
from connectors.meta.poller import GRAPH_URL, MetaAccount, MetaPoller
from connectors.meta.throttle import interval_factor
from metricx.metrics import API_CALLS, HEALTH, PUBLISHED, SYNCS, THROTTLED
from schemas.envelope import DEADLETTER_TOPIC
from schemas.insight import RAW_TOPIC

log = logging.getLogger(__name__)

# An unexpected error is retried after this pause (it is surfaced in the status meanwhile).
ERROR_RETRY_S = 300.0


@dataclass(frozen=True)
class Endpoints:
    """Where the platforms are (overridden by tests to reach the local fakes)."""

    meta_graph_url: str = GRAPH_URL
    google_endpoint: str | None = None


@dataclass
class Outcome:
    account_id: str
    provider: str
    loop: str
    status: Literal["ok", "skipped", "needs_reauth", "throttled", "error"]
    snapshots: int = 0
    rejected: int = 0
    api_calls: int = 0
    message: str = ""
    slowed: bool = False  # the platform's usage headers asked us to slow down or pause


@dataclass
class Syncer:
    db_url: str
    keys: Keyring
    producer: Producer
    redis_client: redis.Redis
    endpoints: Endpoints = field(default_factory=Endpoints)
    topic: str = RAW_TOPIC
    deadletter_topic: str = DEADLETTER_TOPIC
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    sleep: Callable[[float], None] = time.sleep
    google_budget: Budget = field(default_factory=OperationBudget)
    google_breakers: dict[str, CircuitBreaker] = field(default_factory=dict)
    # Budget per developer token (quotas are per token); None -> the one in-process budget.
    google_budget_for: Callable[[str], Budget] | None = None
    lease_ttl_s: float = 900.0

    def _poller(self, c: store.Connection) -> MetaPoller | GoogleAdsPoller:
        if c.provider == "meta":
            t = store.MetaTokens.model_validate(c.tokens)
            return MetaPoller(MetaAccount(c.workspace_id, c.account_id, t.access_token, t.app_secret),
                              graph_url=self.endpoints.meta_graph_url, sleep=self.sleep, clock=self.clock)
        g = store.GoogleTokens.model_validate(c.tokens)
        acct = GoogleAccount(c.workspace_id, c.account_id, g.developer_token, g.access_token, g.refresh_token,
                             g.client_id, g.client_secret, c.login_customer_id)
        budget = self.google_budget_for(g.developer_token) if self.google_budget_for else self.google_budget
        return GoogleAdsPoller(acct, endpoint=self.endpoints.google_endpoint, budget=budget,
                               breakers=self.google_breakers, clock=self.clock, sleep=self.sleep)

    def sync(self, c: store.Connection, loop: Literal["hot", "warm", "backfill"], window: Window | None = None) -> Outcome:
        o = self._sync(c, loop, window)
        SYNCS.labels(o.provider, o.loop, o.status).inc()
        if o.api_calls:
            API_CALLS.labels(o.provider).inc(o.api_calls)
        if o.status == "throttled" or o.slowed:
            THROTTLED.labels(o.provider).inc()
        if o.snapshots:
            PUBLISHED.labels(o.provider).inc(o.snapshots)
        return o

    def _sync(self, c: store.Connection, loop: Literal["hot", "warm", "backfill"], window: Window | None) -> Outcome:
        lease = Lease(self.redis_client, lease_key(c.workspace_id, c.provider, c.account_id), self.lease_ttl_s)
        if not lease.acquire():
            return Outcome(c.account_id, c.provider, loop, "skipped", message="another poller holds the lease")
        ctx: dict[str, Any] = {"workspace_id": c.workspace_id, "provider": c.provider, "account_id": c.account_id, "loop": loop}
        try:
            with psycopg.connect(self.db_url, autocommit=True) as conn:
                poller: MetaPoller | GoogleAdsPoller | None = None
                try:
                    poller = self._poller(c)
                    tz, cur = poller.account_info() if isinstance(poller, MetaPoller) else poller.customer_info()
                    store.set_account_info(conn, c.workspace_id, c.provider, c.account_id, tz, cur)
                    now = self.clock()
                    if window is None:
                        window = hot_window(now, tz) if loop == "hot" else warm_window(now, tz, c.provider)
                    if loop == "warm":
                        # Names/statuses/hierarchy change rarely: refreshed with the warm loop.
                        if isinstance(poller, MetaPoller):
                            ents, bad = poller.entities()
                            publish_poll(self.producer, PollResult([], bad, 0), topic=self.topic,
                                         deadletter_topic=self.deadletter_topic)
                        else:
                            ents = poller.entities()
                        store.upsert_entities(conn, c.workspace_id, c.provider, c.account_id, ents)
                    if isinstance(poller, MetaPoller):
                        # Large reads (restatement window, backfill) through async report runs.
                        result: PollResult = poller.poll(window.since, window.until, timezone=tz, currency=cur,
                                                         use_async=loop != "hot")
                    else:
                        result = poller.poll(window.since, window.until, timezone=tz, currency=cur)
                    publish_poll(self.producer, result, topic=self.topic, deadletter_topic=self.deadletter_topic)
                    # Every request of this sync (account info, entities, insights pages): the
                    # poller is built per sync, so its own counter is the sync's total.
                    calls = poller.api_calls if isinstance(poller, MetaPoller) else poller.operations
                    advice, factor, slowed = 0.0, 1.0, False
                    if isinstance(poller, MetaPoller):
                        d = poller.last_decision
                        advice = d.delay_s if d.action == "pause" else 0.0
                        factor = interval_factor(d)
                        slowed = d.action != "go"
                    nxt = None if loop == "backfill" else next_run(self.clock(), loop, at_least_s=advice, factor=factor)
                    store.record_success(conn, c, self.clock(), loop, nxt, calls,
                                         done_through=window.until if loop == "backfill" else None)
                    log.info("sync ok", extra={**ctx, "snapshots": len(result.snapshots),
                                               "rejected": len(result.rejected), "api_calls": calls})
                    return Outcome(c.account_id, c.provider, loop, "ok", len(result.snapshots), len(result.rejected), calls,
                                   slowed=slowed)
                except SyncFailure as f:
                    retry = f.retry_after_s if f.retry_after_s is not None else (None if f.status == "needs_reauth" else ERROR_RETRY_S)
                    store.record_failure(conn, c, self.clock(), f.status, f.message, retry)  # type: ignore[arg-type]
                    log.warning("sync failed", extra={**ctx, "status": f.status, "error": f.message})
                    return Outcome(c.account_id, c.provider, loop, f.status, message=f.message,  # type: ignore[arg-type]
                                   api_calls=_calls(poller))
                except ValidationError as err:
                    # Stored tokens no longer fit the provider's shape; describe() never
                    # echoes input values (pydantic's own message would, truncated).
                    msg = f"stored tokens invalid: {store.describe(err)}"
                    store.record_failure(conn, c, self.clock(), "error", msg, ERROR_RETRY_S)
                    log.error("sync failed", extra={**ctx, "status": "error", "error": msg})
                    return Outcome(c.account_id, c.provider, loop, "error", message=msg, api_calls=_calls(poller))
                except Exception as exc:  # one connection must never stop the service
                    msg = redact(f"{type(exc).__name__}: {exc}", [str(v) for v in c.tokens.values() if v])
                    store.record_failure(conn, c, self.clock(), "error", msg, ERROR_RETRY_S)
                    log.error("sync failed", extra={**ctx, "status": "error", "error": msg})
                    return Outcome(c.account_id, c.provider, loop, "error", message=msg, api_calls=_calls(poller))
        finally:
            lease.release()

    def backfill(self, c: store.Connection, tz: str, days: int = 90, chunk_days: int = 7) -> list[Outcome]:
        """Chunked history for a new connection, oldest first, resumable from progress."""
        out: list[Outcome] = []
        for w in backfill_chunks(local_today(self.clock(), tz), days, chunk_days, c.backfill_done_through):
            o = self.sync(c, "backfill", w)
            out.append(o)
            if o.status != "ok":
                break
        return out

    def run_due(self, limit: int = 1000) -> list[Outcome]:
        """One pass of both loops over every due connection."""
        out: list[Outcome] = []
        for loop in ("hot", "warm"):
            # Re-read between loops: a hot sync that found an expired token or a throttled
            # account must stop the warm sync of the same connection.
            with psycopg.connect(self.db_url, autocommit=True) as conn:
                due = store.due(conn, self.keys, self.clock(), loop, limit)
            out += [self.sync(c, loop) for c in due]
        return out

    def serve(self, stop: threading.Event, tick_s: float = 5.0) -> None:
        while not stop.is_set():
            began = time.monotonic()
            try:
                outcomes = self.run_due()
            except psycopg.Error as exc:
                # The database or Redis is away: say so and try again next tick.
                HEALTH.down("postgres", type(exc).__name__)
            except redis.RedisError as exc:
                HEALTH.down("redis", type(exc).__name__)
            else:
                HEALTH.up("postgres")
                if outcomes:  # each sync took its lease in Redis
                    HEALTH.up("redis")
            stop.wait(max(0.0, tick_s - (time.monotonic() - began)))


def _calls(poller: MetaPoller | GoogleAdsPoller | None) -> int:
    """Requests a failed sync made before it failed (the poller is built per sync)."""
    if poller is None:
        return 0
    return poller.api_calls if isinstance(poller, MetaPoller) else poller.operations

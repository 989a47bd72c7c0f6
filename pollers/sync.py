"""One sync of one connection, and the poller service loop around it.

A sync: take the connection's Redis lease (at most one sync per connection across
poller processes), build that connection's own SDK client from its decrypted tokens,
read the account's time zone and currency, poll the loop's window of local report dates,
publish snapshots (and dead letters) through ``adapters.kafka.Producer`` and wait for
the broker, then record success and the next run - or the failure kind (needs_reauth /
throttled / error) with a token-free message.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import psycopg
import redis
from google.oauth2.credentials import Credentials
from pydantic import ValidationError

from adapters import connections_store as store
from adapters.crypto import Keyring
from adapters.google_ads.client import TOKEN_URL, GoogleAccount, GoogleApi, credentials_for
from adapters.google_ads.logic import Budget, OperationBudget
from adapters.kafka import Producer
from adapters.lease import Lease, lease_key
from adapters.platform import Poller, PollResult, SyncFailure, redact
from adapters.pollers import PollerContext, build_poller
from domain.backfill_progress import BackfillProgress
from domain.schedule import (
    BACKFILL_CHUNK_DAYS,
    BACKFILL_DAYS,
    Window,
    backfill_chunks,
    backfill_window,
    hot_window,
    local_today,
    next_run,
    warm_window,
)
from ground.metrics import API_CALLS, HEALTH, PUBLISHED, SYNCS, THROTTLED
from ground.resilience import CircuitBreaker
from ground.settings import GRAPH_URL, HOT_YESTERDAY_HOURS
from pollers.publish import publish_poll
from schemas.envelope import DEADLETTER_TOPIC
from schemas.insight import RAW_TOPIC

log = logging.getLogger(__name__)

# An unexpected error is retried after this pause (it is surfaced in the status meanwhile).
ERROR_RETRY_S = 300.0
# A warm loop or backfill stopped by the usage rule waits at least this long (its reads
# are the expensive ones; today's reads go on meanwhile).
LOOP_DEFER_S = 3600.0
MAX_CACHED_CREDENTIALS = 100_000


@dataclass(frozen=True)
class Endpoints:
    """Where the platforms are (overridden by tests to reach the local fakes)."""

    meta_graph_url: str = GRAPH_URL
    google_endpoint: str | None = None
    google_token_url: str = TOKEN_URL  # the OAuth token endpoint renewing refresh-token connections
    google_ca_file: str | None = None  # CA bundle trusted for both Google endpoints (default: system roots)

    @property
    def google(self) -> GoogleApi:
        return GoogleApi(endpoint=self.google_endpoint, token_url=self.google_token_url, ca_file=self.google_ca_file)


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
    timezone: str | None = None  # set by a lookup


@dataclass
class BackfillRun:
    """What a backfill read: its range (None when the account could not be looked up),
    the last day an earlier run had read when this one resumed, and each step's outcome
    (the zone lookup first, then one per chunk, stopping at the first that failed)."""

    window: Window | None
    resumed_after: date | None
    outcomes: list[Outcome]

    @property
    def ok(self) -> bool:
        return all(o.status == "ok" for o in self.outcomes)


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
    google_credentials: dict[str, Credentials] = field(default_factory=dict)
    hot_yesterday_hours: float = HOT_YESTERDAY_HOURS
    jitter: Callable[[], float] = random.random  # next runs' jitter draw, in [0, 1)

    def _context(self) -> PollerContext:
        budget_for = self.google_budget_for or (lambda _token: self.google_budget)
        return PollerContext(self.endpoints.meta_graph_url, self.endpoints.google, self.clock, self.sleep, budget_for,
                             self._google_credentials, self.google_breakers)

    def _google_credentials(self, acct: GoogleAccount, api: GoogleApi) -> Credentials:
        """One ``Credentials`` per connection and grant, kept across syncs: an access token
        renewed once serves the hour (every sync would otherwise call the token endpoint).
        Keyed by a digest of the grant, so reconnecting with new tokens starts afresh."""
        key = hashlib.sha256("\x00".join((acct.workspace_id, acct.customer_id, acct.refresh_token or "",
                                           acct.client_id or "", acct.client_secret or "", acct.access_token or "",
                                           api.token_url)).encode()).hexdigest()
        creds = self.google_credentials.get(key)
        if creds is None:
            if len(self.google_credentials) >= MAX_CACHED_CREDENTIALS:
                self.google_credentials.pop(next(iter(self.google_credentials)))  # the oldest
            creds = self.google_credentials[key] = credentials_for(acct, api)
        return creds

    def sync(self, c: store.Connection, loop: Literal["hot", "warm", "backfill"], window: Window | None = None) -> Outcome:
        """One sync of ``loop`` (``window``: a backfill chunk; else the loop's own window),
        counted in the metrics."""
        o = self._guarded(c, loop, lambda conn, poller: self._sync(conn, c, poller, loop, window))
        SYNCS.labels(o.provider, o.loop, o.status).inc()
        if o.api_calls:
            API_CALLS.labels(o.provider).inc(o.api_calls)
        if o.status == "throttled" or o.slowed:
            THROTTLED.labels(o.provider).inc()
        if o.snapshots:
            PUBLISHED.labels(o.provider).inc(o.snapshots)
        return o

    def _guarded(self, c: store.Connection, loop: str,
                 body: Callable[[psycopg.Connection[Any], Poller], Outcome]) -> Outcome:
        """Run ``body`` under the connection's lease with its own SDK client, and turn every
        failure into the connection's status (a token-free message, never a crash)."""
        lease = Lease(self.redis_client, lease_key(c.workspace_id, c.provider, c.account_id), self.lease_ttl_s)
        if not lease.acquire():
            return Outcome(c.account_id, c.provider, loop, "skipped", message="another poller holds the lease")
        ctx: dict[str, Any] = {"workspace_id": c.workspace_id, "provider": c.provider, "account_id": c.account_id, "loop": loop}
        try:
            with psycopg.connect(self.db_url, autocommit=True) as conn:
                poller: Poller | None = None
                try:
                    poller = build_poller(c, self._context())
                    return body(conn, poller)
                except SyncFailure as f:
                    # A failed sync's calls count too (a refused call is still a call).
                    calls = poller.calls if poller is not None else 0
                    if f.loop_only and loop in ("warm", "backfill"):
                        # Our own usage rule stopped an expensive loop: it alone waits, the
                        # connection stays active and today's reads go on.
                        wait_s = max(f.retry_after_s or 0.0, LOOP_DEFER_S)
                        store.add_calls(conn, c, self.clock(), calls)
                        if loop == "warm":
                            store.defer_warm(conn, c, self.clock() + timedelta(seconds=wait_s))
                        log.warning("loop deferred", extra={**ctx, "status": f.status, "error": f.message,
                                                            "retry_after_s": wait_s})
                        return Outcome(c.account_id, c.provider, loop, f.status, message=f.message,  # type: ignore[arg-type]
                                   api_calls=calls)
                    retry = f.retry_after_s if f.retry_after_s is not None else (None if f.status == "needs_reauth" else ERROR_RETRY_S)
                    store.record_failure(conn, c, self.clock(), f.status, f.message, retry, calls)  # type: ignore[arg-type]
                    log.warning("sync failed", extra={**ctx, "status": f.status, "error": f.message})
                    return Outcome(c.account_id, c.provider, loop, f.status, message=f.message,  # type: ignore[arg-type]
                                   api_calls=calls)
                except ValidationError as err:
                    # Stored tokens no longer fit the provider's shape; describe() never
                    # echoes input values (pydantic's own message would, truncated).
                    msg = f"stored tokens invalid: {store.describe(err)}"
                    calls = poller.calls if poller is not None else 0
                    store.record_failure(conn, c, self.clock(), "error", msg, ERROR_RETRY_S, calls)
                    log.error("sync failed", extra={**ctx, "status": "error", "error": msg})
                    return Outcome(c.account_id, c.provider, loop, "error", message=msg, api_calls=calls)
                except Exception as exc:  # one connection must never stop the service
                    msg = redact(f"{type(exc).__name__}: {exc}", [str(v) for v in c.tokens.values() if v])
                    calls = poller.calls if poller is not None else 0
                    store.record_failure(conn, c, self.clock(), "error", msg, ERROR_RETRY_S, calls)
                    log.error("sync failed", extra={**ctx, "status": "error", "error": msg})
                    return Outcome(c.account_id, c.provider, loop, "error", message=msg, api_calls=calls)
        finally:
            lease.release()

    def _sync(self, conn: psycopg.Connection[Any], c: store.Connection, poller: Poller,
              loop: Literal["hot", "warm", "backfill"], window: Window | None) -> Outcome:
        ctx: dict[str, Any] = {"workspace_id": c.workspace_id, "provider": c.provider, "account_id": c.account_id, "loop": loop}
        tz, cur = poller.account_info()
        store.set_account_info(conn, c.workspace_id, c.provider, c.account_id, tz, cur)
        now = self.clock()
        if window is None:
            window = hot_window(now, tz, self.hot_yesterday_hours) if loop == "hot" else warm_window(now, tz, c.provider)
        if loop == "warm":
            # Names/statuses/hierarchy change rarely: refreshed with the warm loop.
            ents, bad = poller.sync_entities()
            if bad:
                publish_poll(self.producer, PollResult([], bad, 0), topic=self.topic,
                             deadletter_topic=self.deadletter_topic)
            store.upsert_entities(conn, c.workspace_id, c.provider, c.account_id, ents)
        result = poller.read(window.since, window.until, timezone=tz, currency=cur, loop=loop)
        publish_poll(self.producer, result, topic=self.topic, deadletter_topic=self.deadletter_topic)
        calls = poller.calls
        pacing = poller.pacing(loop)
        note, slowed = pacing.note, pacing.slowed
        nxt = None if loop == "backfill" else next_run(self.clock(), loop, at_least_s=pacing.advice_s,
                                                       factor=pacing.factor, r=self.jitter())
        store.record_success(conn, c, self.clock(), loop, nxt, calls,
                             done_through=window.until if loop == "backfill" else None,
                             rows=len(result.snapshots) if loop == "backfill" else 0, pacing_note=note)
        log.info("sync ok", extra={**ctx, "since": window.since.isoformat(), "until": window.until.isoformat(),
                                   "snapshots": len(result.snapshots), "rejected": len(result.rejected),
                                   "api_calls": calls})
        return Outcome(c.account_id, c.provider, loop, "ok", len(result.snapshots), len(result.rejected), calls,
                       slowed=slowed)

    def account_zone(self, c: store.Connection) -> Outcome:
        """Read the account's zone and currency (stored on the connection); ``timezone`` is
        set on an ok outcome.  A backfill needs the zone before it can name its days."""
        def body(conn: psycopg.Connection[Any], poller: Poller) -> Outcome:
            tz, cur = poller.account_info()
            store.set_account_info(conn, c.workspace_id, c.provider, c.account_id, tz, cur)
            store.add_calls(conn, c, self.clock(), poller.calls)
            return Outcome(c.account_id, c.provider, "lookup", "ok", api_calls=poller.calls, timezone=tz)
        return self._guarded(c, "lookup", body)

    def backfill(self, c: store.Connection, days: int | None = None, chunk_days: int = BACKFILL_CHUNK_DAYS,
                 on_progress: Callable[[BackfillProgress], None] | None = None) -> BackfillRun:
        """Read a range of the account's history in chunks, oldest first.

        The range is the ``days`` local days before today; without ``days``, the one
        ``connections add --backfill-days`` asked for, else an unfinished one, else
        :data:`BACKFILL_DAYS`.  Asking for the range last asked for, unfinished, resumes
        after its last day read; any other request reads its whole range (a finished
        range asked for again is read again: restatements happen)."""
        lookup = self.account_zone(c)
        if lookup.status != "ok" or lookup.timezone is None:
            return BackfillRun(None, None, [lookup])
        today = local_today(self.clock(), lookup.timezone)
        recorded = (Window(c.backfill_from, c.backfill_until)
                    if c.backfill_from is not None and c.backfill_until is not None else None)
        unfinished = recorded is not None and (c.backfill_done_through is None or c.backfill_done_through < recorded.until)
        if days is not None:
            window = backfill_window(today, days)
        elif c.backfill_days is not None:
            window = backfill_window(today, c.backfill_days)
        elif recorded is not None and unfinished:
            window = recorded
        else:
            window = backfill_window(today, BACKFILL_DAYS)
        done = c.backfill_done_through
        resume_after = done if (window == recorded and unfinished and done is not None
                                and window.since <= done < window.until) else None
        started = self.clock()
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            rows = store.start_backfill(conn, c, window.since, window.until, started, resume_after)
        run = BackfillRun(window, resume_after, [lookup])
        for w in backfill_chunks(window, chunk_days, resume_after):
            o = self.sync(c, "backfill", w)
            run.outcomes.append(o)
            if o.status != "ok":
                break
            rows += o.snapshots
            if on_progress is not None:
                on_progress(BackfillProgress(window.since, window.until, w.until, rows, started,
                                             window.since if resume_after is None else resume_after + timedelta(days=1)))
        return run

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

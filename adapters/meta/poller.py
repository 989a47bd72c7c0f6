"""Meta Ads poller: the thin SDK-touching part.  Business rules live in
:mod:`adapters.meta.insights` (mapping) and :mod:`adapters.meta.throttle` (usage
headers, error codes); this module only calls the Graph API and applies their decisions.

One :class:`FacebookAdsApi` per connection, passed explicitly to every object: the
SDK's default API is process-global, and with several tenants in one process a global
token would read one merchant's data with another's credentials.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import partial
from typing import Any, TypeVar

import requests
from facebook_business.adobjects.adaccount import AdAccount
from facebook_business.api import Cursor, FacebookAdsApi
from facebook_business.exceptions import FacebookRequestError
from facebook_business.session import FacebookSession

from adapters.entities import Entity, Level, meta_entities
from adapters.meta.insights import INSIGHT_FIELDS, row_to_snapshot
from adapters.meta.reports import run_state, split
from adapters.meta.throttle import ThrottleDecision, classify_error, decide, hot_pacing, interval_factor
from adapters.platform import Loop, NeedsReauth, Pacing, PollResult, Rejected, SyncFailure, Throttled, redact
from ground.resilience import backoff_delay
from ground.settings import GRAPH_URL
from schemas.insight import InvalidInsight, Snapshot

log = logging.getLogger(__name__)

API_VERSION = "v24.0"
PAGE_LIMIT = 500
# A pause shorter than this is waited out inside the sync; a longer one ends the sync
# as "throttled" so the lease is released and other accounts go on.
MAX_INLINE_PAUSE_S = 60.0

T = TypeVar("T")


@dataclass(frozen=True)
class MetaAccount:
    workspace_id: str
    account_id: str  # numeric id, without the "act_" prefix
    access_token: str = field(repr=False)
    app_secret: str | None = field(default=None, repr=False)


class MetaPoller:
    def __init__(
        self,
        account: MetaAccount,
        *,
        graph_url: str = GRAPH_URL,
        api_version: str = API_VERSION,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        max_attempts: int = 5,
        timeout_s: float = 60.0,
        report_poll_s: float = 5.0,
        report_max_polls: int = 120,
    ) -> None:
        if not account.account_id.isdigit():
            raise ValueError(f"meta account id must be numeric (without act_), got {account.account_id!r}")
        self.account = account
        session = FacebookSession(
            app_secret=account.app_secret, access_token=account.access_token, timeout=timeout_s
        )
        session.GRAPH = graph_url.rstrip("/")  # instance override of the class default
        self.api = FacebookAdsApi(session, api_version=api_version)
        self._sleep = sleep
        self._clock = clock
        self._max_attempts = max_attempts
        self.last_decision = ThrottleDecision("go", 0.0, 0.0, "ok")
        self.report_poll_s = report_poll_s
        self.report_max_polls = report_max_polls
        self._stop_at_pause = True

    # -- plumbing -------------------------------------------------------------------------

    @property
    def api_calls(self) -> int:
        return int(self.api.get_num_requests_attempted())

    def _safe(self, text: str) -> str:
        return redact(text, [self.account.access_token, self.account.app_secret or ""])

    def _call(self, fn: Callable[[], T]) -> T:
        """Run one Graph API request with the retry policy: throttle codes back off
        (at least as long as the usage headers ask), 190 stops at once."""
        for attempt in range(self._max_attempts):
            try:
                return fn()
            except FacebookRequestError as err:
                code = err.api_error_code()
                kind = classify_error(code, err.http_status(), bool(err.api_transient_error()))
                msg = self._safe(f"meta error code {code}: {err.api_error_message()}")
                ctx = {"provider": "meta", "account_id": self.account.account_id, "code": code, "attempt": attempt}
                if kind == "reauth":
                    log.warning("meta token refused; connection needs re-auth", extra=ctx)
                    raise NeedsReauth(msg) from None
                if kind == "fatal":
                    log.error("meta request failed", extra={**ctx, "error": msg})
                    raise SyncFailure(msg) from None
                hint = decide(dict(err.http_headers() or {}))
                delay = max(backoff_delay(attempt), hint.delay_s)
                if attempt + 1 >= self._max_attempts or delay > MAX_INLINE_PAUSE_S * 5:
                    raise Throttled(msg, retry_after_s=delay) from None
                log.info("meta throttled; backing off", extra={**ctx, "delay_s": round(delay, 1)})
                self._sleep(delay)
            except requests.RequestException as err:
                if attempt + 1 >= self._max_attempts:
                    raise SyncFailure(self._safe(f"meta transport error: {type(err).__name__}")) from None
                self._sleep(backoff_delay(attempt))
        raise AssertionError("unreachable")

    def _observe(self, headers: Any) -> None:
        """Apply the usage headers of a successful response: a block (a regain time) always
        pauses; the pause line stops the read unless ``poll(stop_at_pause=False)``."""
        d = decide(dict(headers or {}))
        self.last_decision = d  # the freshest headers describe the account now
        if d.action == "pause" and (d.blocked or self._stop_at_pause):
            if d.delay_s > MAX_INLINE_PAUSE_S:
                raise Throttled(f"meta usage high: {d.reason}", retry_after_s=d.delay_s, loop_only=not d.blocked)
            self._sleep(d.delay_s)

    # -- reads ------------------------------------------------------------------------------

    def account_info(self) -> tuple[str, str]:
        """(IANA timezone, ISO currency) of the ad account: report dates are its local days."""
        acct = AdAccount(f"act_{self.account.account_id}", api=self.api)
        data = self._call(lambda: acct.api_get(fields=["timezone_name", "currency"]))
        tz, cur = data.get("timezone_name"), data.get("currency")
        if not isinstance(tz, str) or not isinstance(cur, str):
            raise SyncFailure(f"meta account act_{self.account.account_id}: missing timezone_name/currency")
        return tz, cur

    def insight_rows(self, since: date, until: date) -> list[dict[str, Any]]:
        """Every ad-day row in [since, until], all pages followed to the end."""
        acct = AdAccount(f"act_{self.account.account_id}", api=self.api)
        params = self._params(since, until)
        cursor: Cursor = self._call(lambda: acct.get_insights(fields=list(INSIGHT_FIELDS), params=params))
        return self._pages(cursor)

    @staticmethod
    def _params(since: date, until: date) -> dict[str, Any]:
        return {
            "level": "ad",
            "time_increment": 1,
            "time_range": {"since": since.isoformat(), "until": until.isoformat()},
            "filtering": [{"field": "impressions", "operator": "GREATER_THAN", "value": 0}],
            "limit": PAGE_LIMIT,
        }

    def _pages(self, cursor: Cursor) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        self._observe(cursor.headers())
        while True:
            rows.extend(dict(cursor[i].export_all_data()) for i in range(len(cursor)))
            if not self._call(cursor.load_next_page):
                break
            self._observe(cursor.headers())
        return rows

    def insight_rows_async(self, since: date, until: date) -> list[dict[str, Any]]:
        """The same rows through asynchronous report runs: start a run, poll its status,
        read its pages; a failed/skipped (or never-finishing) run is split in halves and
        retried, down to single days."""
        acct = AdAccount(f"act_{self.account.account_id}", api=self.api)
        todo = [(since, until)]
        rows: list[dict[str, Any]] = []
        while todo:
            s, u = todo.pop(0)
            params = {**self._params(s, u), "fields": list(INSIGHT_FIELDS)}
            run = self._call(partial(acct.get_insights_async, params=params))
            state = "running"
            status: Any = None
            for _ in range(self.report_max_polls):
                info = self._call(partial(run.api_get, fields=["async_status", "async_percent_completion"]))
                status = info.get("async_status")
                state = run_state(status)
                if state != "running":
                    break
                self._sleep(self.report_poll_s)
            if state == "done":
                rows += self._pages(self._call(partial(run.get_insights, params={"limit": PAGE_LIMIT})))
                continue
            halves = split(s, u)
            log.warning("meta report run did not complete; splitting", extra={
                "provider": "meta", "account_id": self.account.account_id, "since": s.isoformat(),
                "until": u.isoformat(), "async_status": str(status), "split": halves is not None})
            if halves is None:
                raise SyncFailure(f"meta report run for act_{self.account.account_id} {s} failed ({status})")
            todo[:0] = list(halves)
        return rows

    def entities(self) -> tuple[list[Entity], list[Rejected]]:
        """Campaigns, ad sets and ads with names, statuses and hierarchy (all pages)."""
        acct = AdAccount(f"act_{self.account.account_id}", api=self.api)
        out: list[Entity] = []
        rejected: list[Rejected] = []
        reads: list[tuple[Level, Callable[[], Cursor]]] = [
            ("campaign", lambda: acct.get_campaigns(fields=["id", "name", "effective_status"], params={"limit": PAGE_LIMIT})),
            ("adset", lambda: acct.get_ad_sets(fields=["id", "name", "effective_status", "campaign_id"],
                                               params={"limit": PAGE_LIMIT})),
            ("ad", lambda: acct.get_ads(fields=["id", "name", "effective_status", "campaign_id", "adset_id"],
                                        params={"limit": PAGE_LIMIT})),
        ]
        for level, read in reads:
            ok, bad = meta_entities(level, self._pages(self._call(read)))
            out += ok
            rejected += [Rejected("meta", self.account.account_id, raw, reason) for raw, reason in bad]
        return out, rejected

    # -- the Poller protocol (adapters.platform) --------------------------------------

    @property
    def calls(self) -> int:
        return self.api_calls

    def sync_entities(self) -> tuple[list[Entity], list[Rejected]]:
        return self.entities()

    def read(self, since: date, until: date, *, timezone: str, currency: str, loop: Loop) -> PollResult:
        """Large reads (restatement window, backfill) through async report runs; today's
        few pages are read through the usage pause line (paced by :meth:`pacing` instead)."""
        return self.poll(since, until, timezone=timezone, currency=currency, use_async=loop != "hot",
                         stop_at_pause=loop != "hot")

    def pacing(self, loop: Loop) -> Pacing:
        d = self.last_decision
        slowed = d.action != "go"  # the platform's usage headers asked us to slow down or pause
        if loop == "hot":
            hot = hot_pacing(d)
            return Pacing(factor=hot.factor, note=hot.note, slowed=slowed)
        return Pacing(advice_s=d.delay_s if d.action == "pause" else 0.0, factor=interval_factor(d), slowed=slowed)

    def poll(self, since: date, until: date, *, timezone: str | None = None, currency: str | None = None,
             use_async: bool = False, stop_at_pause: bool = True) -> PollResult:
        """One sync of [since, until]: snapshots for valid rows, rejections with reasons.
        ``use_async`` reads through report runs (the warm loop and backfills).
        ``stop_at_pause`` False reads on past the usage pause line (today's few pages: the
        caller paces the next read instead, see :func:`throttle.hot_pacing`)."""
        self._stop_at_pause = stop_at_pause
        calls0 = self.api_calls
        if timezone is None or currency is None:
            timezone, currency = self.account_info()
        captured_at = self._clock()
        rows = self.insight_rows_async(since, until) if use_async else self.insight_rows(since, until)
        snaps: list[Snapshot] = []
        rejected: list[Rejected] = []
        for raw in rows:
            try:
                snaps.append(
                    row_to_snapshot(
                        raw,
                        workspace_id=self.account.workspace_id,
                        account_id=self.account.account_id,
                        timezone=timezone,
                        currency=currency,
                        captured_at=captured_at,
                    )
                )
            except InvalidInsight as err:
                rejected.append(Rejected("meta", self.account.account_id, raw, err.reason))
        log.info(
            "meta poll done",
            extra={
                "provider": "meta",
                "workspace_id": self.account.workspace_id,
                "account_id": self.account.account_id,
                "since": since.isoformat(),
                "until": until.isoformat(),
                "snapshots": len(snaps),
                "rejected": len(rejected),
                "api_calls": self.api_calls - calls0,
                "throttle": self.last_decision.action,
            },
        )
        return PollResult(snaps, rejected, self.api_calls - calls0)

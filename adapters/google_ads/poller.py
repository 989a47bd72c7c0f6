"""Google Ads poller: the thin SDK-touching part (rules in :mod:`adapters.google_ads.logic`).

One ``GoogleAdsClient`` per connection (its credentials, developer token and
``login_customer_id`` for manager accounts); every read is a ``SearchStream`` (one
operation per query, whatever its size).  Quota errors trip a per-customer circuit
breaker for the server's ``QuotaErrorDetails.retry_delay``; the sync ends "throttled"
instead of retrying into the quota.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import grpc
from google.ads.googleads.errors import GoogleAdsException
from google.api_core.exceptions import GoogleAPICallError
from google.oauth2.credentials import Credentials

from adapters.entities import Entity
from adapters.google_ads.client import API_VERSION, GoogleApi, build_client, credentials_for, refresh
from adapters.google_ads.client import GoogleAccount as GoogleAccount  # re-exported: callers build accounts
from adapters.google_ads.logic import (
    Budget,
    FailureInfo,
    GoogleEntityRow,
    GoogleRow,
    OperationBudget,
    ad_query,
    asset_group_query,
    authentication_refused,
    classify,
    customer_query,
    entity_queries,
    google_entities,
    quota_delay,
    row_to_snapshot,
)
from adapters.platform import Loop, NeedsReauth, Pacing, PollResult, Rejected, SyncFailure, Throttled, redact
from ground.resilience import CircuitBreaker, backoff_delay
from schemas.insight import InvalidInsight, Snapshot

log = logging.getLogger(__name__)

FAILURE_KEY = f"google.ads.googleads.{API_VERSION}.errors.googleadsfailure-bin"


def failure_info(status: grpc.StatusCode | None, failure: Any, message: str = "") -> FailureInfo:
    """Plain facts from a GoogleAdsFailure (proto-plus) for :func:`logic.classify`."""
    types: list[str] = []
    values: list[str] = []
    delay: float | None = None
    msgs: list[str] = []
    for err in getattr(failure, "errors", None) or []:
        code_pb = type(err.error_code).pb(err.error_code)
        which = code_pb.WhichOneof("error_code")
        if which:
            types.append(which)
            values.append(getattr(err.error_code, which).name)
        rd = err.details.quota_error_details.retry_delay
        if isinstance(rd, timedelta) and rd.total_seconds() > 0:
            delay = max(delay or 0.0, rd.total_seconds())
        if err.message:
            msgs.append(err.message)
    return FailureInfo(
        status=status.name if status is not None else "UNKNOWN",
        error_types=tuple(types),
        error_values=tuple(values),
        retry_delay_s=delay,
        message="; ".join(msgs) or message,
    )


def info_from_rpc(exc: Exception) -> FailureInfo:
    """RESOURCE_EXHAUSTED / INTERNAL are not wrapped by the SDK: read the failure from
    the trailing metadata ourselves."""
    from google.ads.googleads.v26.errors.types.errors import GoogleAdsFailure

    call: Any = exc
    status = call.code() if isinstance(exc, grpc.RpcError) and hasattr(call, "code") else getattr(exc, "grpc_status_code", None)
    failure = None
    trailing = call.trailing_metadata() if isinstance(exc, grpc.RpcError) and hasattr(call, "trailing_metadata") else None
    for key, value in trailing or ():
        if key == FAILURE_KEY:
            try:
                failure = GoogleAdsFailure.deserialize(value)
            except Exception:
                failure = None
    details = call.details() if isinstance(exc, grpc.RpcError) and hasattr(call, "details") else str(exc)
    return failure_info(status, failure, details or "")


class GoogleAdsPoller:
    def __init__(
        self,
        account: GoogleAccount,
        *,
        endpoint: str | None = None,
        api: GoogleApi | None = None,
        credentials: Credentials | None = None,
        budget: Budget | None = None,
        breakers: dict[str, CircuitBreaker] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], None] = time.sleep,
        max_attempts: int = 3,
        timeout_s: float = 600.0,
    ) -> None:
        if not account.customer_id.isdigit():
            raise ValueError(f"google customer id must be digits only, got {account.customer_id!r}")
        self.account = account
        self.api = api if api is not None else GoogleApi(endpoint=endpoint)
        # ``credentials`` may be shared across syncs of this connection (an access token
        # renewed once lasts the hour, not one sync).
        self.credentials = credentials if credentials is not None else credentials_for(account, self.api)
        self.client = build_client(account, self.api, self.credentials)
        self.service = self.client.get_service("GoogleAdsService")
        self.budget: Budget = budget if budget is not None else OperationBudget()
        self.breakers = breakers if breakers is not None else {}
        self._monotonic = monotonic
        self._clock = clock
        self._sleep = sleep
        self._max_attempts = max_attempts
        self._timeout_s = timeout_s
        self.operations = 0

    @property
    def breaker(self) -> CircuitBreaker:
        return self.breakers.setdefault(self.account.customer_id, CircuitBreaker())

    def _safe(self, text: str) -> str:
        return redact(text, self.account.secrets())

    def _search(self, query: str) -> list[Any]:
        cid = self.account.customer_id
        renewed_after_refusal = False
        for attempt in range(self._max_attempts):
            now = self._monotonic()
            if not self.breaker.allows(now):
                raise Throttled(f"google customer {cid}: quota circuit open", retry_after_s=self.breaker.open_until - now)
            if not self.budget.try_spend(self._clock().date(), cid):
                raise Throttled(f"google daily operations budget ({self.budget.daily_limit}) exhausted", retry_after_s=3600.0)
            refresh(self.credentials, self.account, self.api)  # before the call: a refusal here is the OAuth one
            self.operations += 1
            try:
                rows: list[Any] = []
                # A deadline on every stream: a stuck connection must end as a failed sync
                # (and release the lease), not hold the poller forever.
                for batch in self.service.search_stream(customer_id=cid, query=query, timeout=self._timeout_s):
                    rows.extend(batch.results)
                self.breaker.reset()
                return rows
            except GoogleAdsException as exc:
                info = failure_info(exc.error.code(), exc.failure)
            except GoogleAPICallError as exc:
                # RESOURCE_EXHAUSTED / INTERNAL pass the SDK's interceptor unwrapped and
                # api_core remaps them; the gRPC call (with trailing metadata) is .response.
                info = self._info_from_rpc(exc.response if isinstance(exc.response, grpc.RpcError) else exc)
            except grpc.RpcError as exc:
                info = self._info_from_rpc(exc)
            kind = classify(info)
            msg = self._safe(f"google {info.status} {','.join(info.error_values)}: {info.message}")
            ctx = {"provider": "google", "account_id": cid, "status": info.status, "attempt": attempt}
            if kind == "reauth":
                if authentication_refused(info) and self.account.renewable and not renewed_after_refusal:
                    # The access token was revoked or expired early: renew it once and retry.
                    renewed_after_refusal = refresh(self.credentials, self.account, self.api, force=True)
                    log.info("google access token refused; renewed", extra=ctx)
                    continue
                log.warning("google credentials refused; connection needs re-auth", extra=ctx)
                if not self.account.renewable and authentication_refused(info):
                    msg += (" (a bare access_token expires about an hour after it was issued: reconnect with "
                            "client_id, client_secret and refresh_token)")
                raise NeedsReauth(msg)
            if kind == "quota":
                delay = quota_delay(info)
                self.breaker.trip(self._monotonic(), delay)
                log.warning("google quota error; circuit open", extra={**ctx, "retry_after_s": delay})
                raise Throttled(msg, retry_after_s=delay)
            if kind == "fatal" or attempt + 1 >= self._max_attempts:
                log.error("google request failed", extra={**ctx, "error": msg})
                raise SyncFailure(msg)
            self._sleep(backoff_delay(attempt))
        raise AssertionError("unreachable")

    @staticmethod
    def _info_from_rpc(exc: Exception) -> FailureInfo:
        return info_from_rpc(exc)

    def customer_info(self) -> tuple[str, str]:
        """(IANA time zone, ISO currency), read once per sync."""
        rows = self._search(customer_query())
        if not rows or not rows[0].customer.time_zone or not rows[0].customer.currency_code:
            raise SyncFailure(f"google customer {self.account.customer_id}: no time_zone/currency_code")
        return rows[0].customer.time_zone, rows[0].customer.currency_code

    def rows(self, since: date, until: date) -> list[GoogleRow]:
        out = [self._ad_row(r) for r in self._search(ad_query(since, until))]
        out += [self._pmax_row(r) for r in self._search(asset_group_query(since, until))]
        return out

    def entities(self) -> list[Entity]:
        """Names, statuses and hierarchy of ads, ad groups, campaigns and asset groups."""
        ads_q, groups_q = entity_queries()
        rows = [GoogleEntityRow((r.campaign.id, r.campaign.name, r.campaign.status.name),
                                (r.ad_group.id, r.ad_group.name, r.ad_group.status.name),
                                (r.ad_group_ad.ad.id, r.ad_group_ad.ad.name, r.ad_group_ad.status.name))
                for r in self._search(ads_q)]
        rows += [GoogleEntityRow((r.campaign.id, r.campaign.name, r.campaign.status.name),
                                 (r.asset_group.id, r.asset_group.name, r.asset_group.status.name), None)
                 for r in self._search(groups_q)]
        return google_entities(rows)

    @staticmethod
    def _ad_row(r: Any) -> GoogleRow:
        m = r.metrics
        return GoogleRow("ad", r.campaign.id, r.ad_group.id, r.ad_group_ad.ad.id, r.segments.date,
                         m.cost_micros, m.impressions, m.clicks, m.conversions, m.conversions_value)

    @staticmethod
    def _pmax_row(r: Any) -> GoogleRow:
        m = r.metrics
        return GoogleRow("asset_group", r.campaign.id, r.asset_group.id, r.asset_group.id, r.segments.date,
                         m.cost_micros, m.impressions, m.clicks, m.conversions, m.conversions_value)

    # -- the Poller protocol (adapters.platform) --------------------------------------

    @property
    def calls(self) -> int:
        return self.operations

    def account_info(self) -> tuple[str, str]:
        return self.customer_info()

    def sync_entities(self) -> tuple[list[Entity], list[Rejected]]:
        return self.entities(), []

    def read(self, since: date, until: date, *, timezone: str, currency: str, loop: Loop) -> PollResult:
        return self.poll(since, until, timezone=timezone, currency=currency)

    def pacing(self, loop: Loop) -> Pacing:
        return Pacing()  # quota errors open the customer's circuit breaker instead

    def poll(self, since: date, until: date, *, timezone: str | None = None, currency: str | None = None) -> PollResult:
        """One sync of [since, until]; time zone and currency are read first unless the
        caller has just read them (once per sync)."""
        ops0 = self.operations
        if timezone is None or currency is None:
            timezone, currency = self.customer_info()
        tz = timezone
        captured_at = self._clock()
        snaps: list[Snapshot] = []
        rejected: list[Rejected] = []
        for row in self.rows(since, until):
            try:
                snaps.append(row_to_snapshot(row, workspace_id=self.account.workspace_id,
                                             customer_id=self.account.customer_id, timezone=tz,
                                             currency=currency, captured_at=captured_at))
            except InvalidInsight as err:
                rejected.append(Rejected("google", self.account.customer_id, _row_dict(row), err.reason))
        log.info("google poll done", extra={
            "provider": "google", "workspace_id": self.account.workspace_id,
            "account_id": self.account.customer_id, "since": since.isoformat(), "until": until.isoformat(),
            "snapshots": len(snaps), "rejected": len(rejected), "operations": self.operations - ops0})
        return PollResult(snaps, rejected, self.operations - ops0)


def _row_dict(row: GoogleRow) -> dict[str, Any]:
    return {k: getattr(row, k) for k in row.__dataclass_fields__}


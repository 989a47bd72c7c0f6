"""The real google-ads client over a real TLS gRPC channel to the local GoogleAdsService fake."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from google.oauth2.credentials import Credentials

from adapters.google_ads.client import GoogleAccount, GoogleApi
from adapters.google_ads.logic import OperationBudget
from adapters.google_ads.poller import GoogleAdsPoller
from adapters.platform import NeedsReauth, SyncFailure, Throttled
from ground.resilience import CircuitBreaker
from tests.fakes.google_ads_grpc import AdDay, FakeCustomer, FakeGoogleAds, Scripted
from tests.fakes.oauth_token import FakeTokenEndpoint

WS = "7b0c5a0e-8a51-4d43-9a52-3c5f2f0e7a10"
NOW = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)
TODAY = date(2026, 11, 25)


@pytest.fixture
def fake() -> Iterator[FakeGoogleAds]:
    with FakeGoogleAds().running() as f:
        yield f


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def populate(fake: FakeGoogleAds, cid: str = "1234567890", token: str = "ya29.a",
             login_customer_id: str | None = None) -> FakeCustomer:
    c = fake.add(FakeCustomer(cid, token, login_customer_id=login_customer_id))
    for i in range(7):
        for d in (TODAY - timedelta(days=1), TODAY):
            c.put(AdDay(100 + i % 2, 200 + i % 3, 300 + i, d, 1_000_000 * i + 123, 50 + i, i, i / 3, i * 12.5))
    c.put(AdDay(900, 901, 901, TODAY, 4_560_000, 1000, 30, 2.5, 250.75, pmax=True))
    return c


def poller(fake: FakeGoogleAds, cid: str = "1234567890", token: str = "ya29.a", **kw: object) -> GoogleAdsPoller:
    acct = GoogleAccount(WS, cid, "devtok-fake", access_token=token,
                         login_customer_id=kw.pop("login", None))  # type: ignore[arg-type]
    return GoogleAdsPoller(acct, endpoint=fake.endpoint, clock=lambda: NOW, sleep=lambda s: None, **kw)  # type: ignore[arg-type]


def test_ads_and_pmax_stream_with_exact_values(fake: FakeGoogleAds) -> None:
    c = populate(fake)
    result = poller(fake).poll(TODAY - timedelta(days=1), TODAY)
    assert not result.rejected
    got = {(s.entity_id, s.report_date): s for s in result.snapshots}
    assert set(got) == {(str(k[0]), k[1]) for k in c.days}
    for (eid, d), truth in c.days.items():
        s = got[(str(eid), d)]
        assert s.metrics.spend == Decimal(truth.cost_micros) / Decimal(1_000_000)
        assert s.metrics.conversions == Decimal(str(round(truth.conversions, 6)))
        assert s.metrics.revenue == Decimal(str(truth.conversions_value))
        assert (s.metrics.impressions, s.metrics.clicks) == (truth.impressions, truth.clicks)
        assert s.entity_level == ("asset_group" if truth.pmax else "ad")
        assert (s.timezone, s.currency) == ("Europe/Berlin", "EUR")
    assert result.api_calls == 3  # customer + ad_group_ad + asset_group: one operation each
    assert [q.query.split(" FROM ")[1].split()[0] for q in fake.seen] == ["customer", "ad_group_ad", "asset_group"]


def test_manager_account_sends_login_customer_id(fake: FakeGoogleAds) -> None:
    populate(fake, login_customer_id="5550001111")
    with pytest.raises(NeedsReauth):
        poller(fake).poll(TODAY, TODAY)
    result = poller(fake, login="5550001111").poll(TODAY, TODAY)
    assert len(result.snapshots) == 8
    assert fake.seen[-1].metadata["login-customer-id"] == "5550001111"


def test_quota_error_opens_the_customer_breaker_for_retry_delay(fake: FakeGoogleAds) -> None:
    populate(fake)
    populate(fake, cid="2222222222", token="ya29.b")
    clock, breakers = Clock(), {}  # type: ignore[var-annotated]
    p = poller(fake, monotonic=clock, breakers=breakers)
    other = poller(fake, cid="2222222222", token="ya29.b", monotonic=clock, breakers=breakers)
    fake.fail_next(Scripted("quota", retry_delay_s=45))
    with pytest.raises(Throttled) as exc:
        p.poll(TODAY, TODAY)
    assert exc.value.retry_after_s == 45.0
    calls = len(fake.seen)
    clock.t += 44
    with pytest.raises(Throttled):  # still open: no call reaches the server
        p.poll(TODAY, TODAY)
    assert len(fake.seen) == calls
    assert len(other.poll(TODAY, TODAY).snapshots) == 8  # another customer is not blocked
    clock.t += 1
    assert len(p.poll(TODAY, TODAY).snapshots) == 8
    assert isinstance(breakers["1234567890"], CircuitBreaker) and breakers["1234567890"].failures == 0


def test_expired_token_needs_reauth_without_leaking_it(fake: FakeGoogleAds) -> None:
    populate(fake)
    with pytest.raises(NeedsReauth) as exc:
        poller(fake, token="ya29.EXPIREDsecret").poll(TODAY, TODAY)
    assert "ya29.EXPIREDsecret" not in str(exc.value) and "UNAUTHENTICATED" in str(exc.value)
    fake.fail_next(Scripted("auth"))
    with pytest.raises(NeedsReauth):
        poller(fake).poll(TODAY, TODAY)


def test_transient_unavailable_is_retried(fake: FakeGoogleAds) -> None:
    populate(fake)
    fake.fail_next(Scripted("unavailable"))
    assert len(poller(fake).poll(TODAY, TODAY).snapshots) == 8
    fake.fail_next(*[Scripted("unavailable")] * 3)
    with pytest.raises(SyncFailure):
        poller(fake).poll(TODAY, TODAY)


def test_daily_budget_stops_before_calling(fake: FakeGoogleAds) -> None:
    populate(fake)
    budget = OperationBudget(daily_limit=4)
    assert poller(fake, budget=budget).poll(TODAY, TODAY).api_calls == 3
    before = len(fake.seen)
    with pytest.raises(Throttled, match="budget"):
        poller(fake, budget=budget).poll(TODAY, TODAY)
    assert len(fake.seen) == before + 1  # the 4th operation ran, the 5th never left


def test_entity_sync_reads_names_statuses_and_hierarchy(fake: FakeGoogleAds) -> None:
    c = populate(fake)
    c.names = {100: "Brand search", 302: "Headline A", 901: "PMax shoes"}
    c.statuses = {302: "PAUSED", 100: "ENABLED", 201: "REMOVED"}
    by_id = {e.entity_id: e for e in poller(fake).entities()}
    assert {e.entity_level for e in by_id.values()} == {"campaign", "adset", "ad", "asset_group"}
    assert len([e for e in by_id.values() if e.entity_level == "ad"]) == 7
    assert (by_id["302"].name, by_id["302"].status, by_id["302"].campaign_id, by_id["302"].adset_id) == (
        "Headline A", "PAUSED", "100", "202")
    assert (by_id["100"].name, by_id["100"].entity_level) == ("Brand search", "campaign")
    assert by_id["201"].status == "REMOVED" and by_id["201"].entity_level == "adset"
    assert (by_id["901"].name, by_id["901"].entity_level, by_id["901"].campaign_id) == ("PMax shoes", "asset_group", "900")


CLIENT_ID, CLIENT_SECRET = "client-9.apps.googleusercontent.com", "GOCSPX-clientSECRET"


@pytest.fixture
def oauth() -> Iterator[FakeTokenEndpoint]:
    with FakeTokenEndpoint().running() as f:
        yield f


def renewable(fake: FakeGoogleAds, oauth: FakeTokenEndpoint, refresh_token: str = "1//refreshSECRET",
              credentials: Credentials | None = None) -> GoogleAdsPoller:
    acct = GoogleAccount(WS, "1234567890", "devtok-fake", refresh_token=refresh_token, client_id=CLIENT_ID,
                         client_secret=CLIENT_SECRET)
    return GoogleAdsPoller(acct, api=GoogleApi(fake.endpoint, oauth.url), credentials=credentials,
                           clock=lambda: NOW, sleep=lambda s: None)


def test_a_refresh_token_is_renewed_at_the_token_endpoint_and_a_refused_token_once_more(
    fake: FakeGoogleAds, oauth: FakeTokenEndpoint,
) -> None:
    c = populate(fake, token="ya29.first")
    oauth.grant("1//refreshSECRET", CLIENT_ID, CLIENT_SECRET, "ya29.first", "ya29.second")
    p = renewable(fake, oauth)
    assert len(p.poll(TODAY, TODAY).snapshots) == 8
    assert [(r.form["grant_type"], r.form["client_id"], r.status) for r in oauth.requests] == [
        ("refresh_token", CLIENT_ID, 200)]
    # The same credentials in the next sync: no new refresh while the hour lasts.
    again = renewable(fake, oauth, credentials=p.credentials)
    assert len(again.poll(TODAY, TODAY).snapshots) == 8 and len(oauth.requests) == 1
    # Google revokes the access token early: refused once, renewed, retried.
    c.token = "ya29.second"
    seen = len(fake.seen)
    assert len(renewable(fake, oauth, credentials=p.credentials).poll(TODAY, TODAY).snapshots) == 8
    assert len(oauth.requests) == 2
    assert [s.metadata["authorization"] for s in fake.seen[seen:seen + 2]] == ["Bearer ya29.first", "Bearer ya29.second"]


@pytest.mark.parametrize(("revoke", "secret", "code"), [
    (True, CLIENT_SECRET, "invalid_grant"), (False, "GOCSPX-wrongSECRET", "invalid_client")])
def test_a_refused_grant_needs_reauth_and_says_what_to_do(
    fake: FakeGoogleAds, oauth: FakeTokenEndpoint, revoke: bool, secret: str, code: str,
) -> None:
    populate(fake, token="ya29.never")
    oauth.grant("1//refreshSECRET", CLIENT_ID, CLIENT_SECRET, "ya29.never")
    if revoke:
        oauth.revoke("1//refreshSECRET")
    acct = GoogleAccount(WS, "1234567890", "devtok-fake", refresh_token="1//refreshSECRET", client_id=CLIENT_ID,
                         client_secret=secret)
    with pytest.raises(NeedsReauth) as exc:
        GoogleAdsPoller(acct, api=GoogleApi(fake.endpoint, oauth.url), sleep=lambda s: None).poll(TODAY, TODAY)
    assert code in exc.value.message and "reconnect" in exc.value.message
    assert "SECRET" not in exc.value.message and fake.seen == []  # never called Google Ads without a token


def test_a_bare_access_token_refused_says_it_cannot_be_renewed(fake: FakeGoogleAds) -> None:
    populate(fake, token="ya29.current")
    with pytest.raises(NeedsReauth) as exc:
        poller(fake, token="ya29.expiredSECRET").poll(TODAY, TODAY)
    assert "refresh_token" in exc.value.message and "SECRET" not in exc.value.message

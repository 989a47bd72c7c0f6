"""Google Ads pause / resume through the real google-ads SDK (its own gRPC transport,
interceptors and error handling) against the protocol-level fake, audited in
``entity_actions`` exactly like Meta's: dry runs recorded, real calls made at most once."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from adapters.google_ads.client import GoogleAccount, GoogleApi
from adapters.google_ads.status import GoogleStatusError, GoogleStatusSetter, resource_name
from notifier import actions
from schemas.alerts import AlertV1
from tests.fakes.google_ads_grpc import FakeCustomer, FakeGoogleAds, Scripted
from tests.fakes.oauth_token import FakeTokenEndpoint
from tests.integration.conftest import database, services  # noqa: F401  (fixtures)
from tests.notifier.factory import GOOGLE_CID, GOOGLE_DEV, GOOGLE_TOKEN, alert, google_connection, keyring

CID, TOKEN, DEV = GOOGLE_CID, GOOGLE_TOKEN, GOOGLE_DEV
MANAGER = "5550001111"
GROUP, CAMPAIGN, AD, PMAX = "4410001", "7770002", "9990003", "8880004"


def never(*_: Any) -> None:
    raise AssertionError("the platform must not be called")


@pytest.fixture
def conn(database: str) -> Iterator[psycopg.Connection[Any]]:  # noqa: F811
    with psycopg.connect(database, autocommit=True) as c:
        google_connection(c)
        yield c


@pytest.fixture
def fake() -> Iterator[FakeGoogleAds]:
    with FakeGoogleAds(developer_token=DEV).running() as f:
        f.add(FakeCustomer(CID, TOKEN))
        yield f


def google(fake: FakeGoogleAds) -> GoogleStatusSetter:
    return GoogleStatusSetter(fake.endpoint, timeout_s=10.0)


def g_alert(i: int, level: str = "ad", entity: str = AD, account: str = CID, **kw: Any) -> AlertV1:
    adset = GROUP if level in ("ad", "adset") else None
    return alert(i, provider="google", account=account, entity_level=level, entity=entity, adset_id=adset,
                 campaign_id=CAMPAIGN, **kw)


def audit(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT provider, entity_level, entity_id, action, dry_run, outcome, error "
                        "FROM entity_actions ORDER BY id").fetchall()


def sent(fake: FakeGoogleAds) -> list[tuple[str, str, str, str, str, list[str]]]:
    return [(m.service, m.customer_id, m.operation, m.resource_name, m.status, m.update_mask) for m in fake.mutations]


def test_pause_ad_ad_group_campaign_and_asset_group(conn: psycopg.Connection[Any], fake: FakeGoogleAds) -> None:
    setter = google(fake)
    alerts = [g_alert(1, "ad", AD, pause=True, dry_run=False), g_alert(2, "adset", GROUP, pause=True, dry_run=False),
              g_alert(3, "campaign", CAMPAIGN, pause=True, dry_run=False),
              g_alert(4, "asset_group", PMAX, pause=True, dry_run=False)]
    assert [actions.apply(conn, keyring(), a, never, setter) for a in alerts] == ["done"] * 4
    assert sent(fake) == [
        ("AdGroupAdService", CID, "update", f"customers/{CID}/adGroupAds/{GROUP}~{AD}", "PAUSED", ["status"]),
        ("AdGroupService", CID, "update", f"customers/{CID}/adGroups/{GROUP}", "PAUSED", ["status"]),
        ("CampaignService", CID, "update", f"customers/{CID}/campaigns/{CAMPAIGN}", "PAUSED", ["status"]),
        ("AssetGroupService", CID, "update", f"customers/{CID}/assetGroups/{PMAX}", "PAUSED", ["status"]),
    ]
    md = fake.mutations[0].metadata
    assert md["authorization"] == f"Bearer {TOKEN}" and md["developer-token"] == DEV
    assert "login-customer-id" not in md
    assert audit(conn) == [("google", "ad", AD, "pause", False, "done", None),
                           ("google", "adset", GROUP, "pause", False, "done", None),
                           ("google", "campaign", CAMPAIGN, "pause", False, "done", None),
                           ("google", "asset_group", PMAX, "pause", False, "done", None)]
    assert fake.customers[CID].statuses == {int(AD): "PAUSED", int(GROUP): "PAUSED", int(CAMPAIGN): "PAUSED",
                                            int(PMAX): "PAUSED"}


def test_redelivered_alert_does_nothing(conn: psycopg.Connection[Any], fake: FakeGoogleAds) -> None:
    a = g_alert(1, pause=True, dry_run=False)
    assert actions.apply(conn, keyring(), a, never, google(fake)) == "done"
    assert actions.apply(conn, keyring(), a, never, google(fake)) is None
    assert actions.apply(conn, keyring(), a, never, never) is None
    assert len(fake.mutations) == 1
    assert [r[3:6] for r in audit(conn)] == [("pause", False, "done")]


def test_dry_run_calls_nothing_and_is_audited_would(conn: psycopg.Connection[Any], fake: FakeGoogleAds) -> None:
    a = g_alert(1, pause=True, dry_run=True)
    assert actions.apply(conn, keyring(), a, never, never) == "would"
    assert actions.apply(conn, keyring(), a, never, never) is None
    rec = g_alert(1, kind="recovered", pause=True, dry_run=True, resume=True)
    assert actions.apply(conn, keyring(), rec, never, never) == "would"  # a dry-run pause resumes in dry run
    assert fake.mutations == []
    assert [r[3:7] for r in audit(conn)] == [("pause", True, "would", None), ("resume", True, "would", None)]


def test_resume_only_after_a_pause_metricx_made(conn: psycopg.Connection[Any], fake: FakeGoogleAds) -> None:
    setter = google(fake)
    # Never paused by metricx: a person's pause stays.
    assert actions.apply(conn, keyring(), g_alert(5, entity="9990005", kind="recovered", pause=True, dry_run=False,
                                                  resume=True), never, setter) is None
    # The pause failed: nothing to undo.
    fake.fail_next(Scripted("not_found"))
    assert actions.apply(conn, keyring(), g_alert(6, entity="9990006", pause=True, dry_run=False), never,
                         setter) == "failed"
    assert actions.apply(conn, keyring(), g_alert(6, entity="9990006", kind="recovered", pause=True, dry_run=False,
                                                  resume=True), never, setter) is None
    assert len(fake.mutations) == 1
    # Paused by metricx: the recovery enables it again, once.
    assert actions.apply(conn, keyring(), g_alert(7, pause=True, dry_run=False), never, setter) == "done"
    rec = g_alert(7, kind="recovered", pause=True, dry_run=False, resume=True)
    assert actions.apply(conn, keyring(), rec, never, setter) == "done"
    assert actions.apply(conn, keyring(), rec, never, setter) is None
    ad = f"customers/{CID}/adGroupAds/{GROUP}~{AD}"
    assert [(m.resource_name, m.status, m.update_mask) for m in fake.mutations[1:]] == [
        (ad, "PAUSED", ["status"]), (ad, "ENABLED", ["status"])]
    assert fake.customers[CID].statuses[int(AD)] == "ENABLED"
    assert [r[3:6] for r in audit(conn)] == [("pause", False, "failed"), ("pause", False, "done"),
                                             ("resume", False, "done")]


def test_google_error_is_audited_failed_without_secrets(conn: psycopg.Connection[Any], fake: FakeGoogleAds) -> None:
    # The platform's message echoes the credentials back: they must not reach the audit.
    fake.fail_next(Scripted("not_found", message=f"Ad not found (token {TOKEN}, developer token {DEV})."))
    a = g_alert(1, pause=True, dry_run=False)
    assert actions.apply(conn, keyring(), a, never, google(fake)) == "failed"
    [(_, _, _, _, _, outcome, error)] = audit(conn)
    assert outcome == "failed"
    assert error.startswith("google error INVALID_ARGUMENT RESOURCE_NOT_FOUND: Ad not found (token ***")
    assert TOKEN not in error and DEV not in error
    assert actions.apply(conn, keyring(), a, never, google(fake)) is None  # not retried
    assert len(fake.mutations) == 1


def test_expired_token_fails_with_the_authentication_error(conn: psycopg.Connection[Any], fake: FakeGoogleAds) -> None:
    fake.fail_next(Scripted("auth"))
    assert actions.apply(conn, keyring(), g_alert(1, "campaign", CAMPAIGN, pause=True, dry_run=False), never,
                         google(fake)) == "failed"
    [error] = [r[6] for r in audit(conn)]
    assert "UNAUTHENTICATED" in error and "OAUTH_TOKEN_EXPIRED" in error and TOKEN not in error
    assert int(CAMPAIGN) not in fake.customers[CID].statuses


def test_manager_account_sends_login_customer_id(conn: psycopg.Connection[Any], fake: FakeGoogleAds) -> None:
    fake.customers[CID].login_customer_id = MANAGER
    google_connection(conn, login_customer_id=MANAGER)
    dashed = g_alert(1, pause=True, dry_run=False, account=f"{CID[:3]}-{CID[3:6]}-{CID[6:]}")
    assert actions.apply(conn, keyring(), dashed, never, google(fake)) == "done"
    assert fake.mutations[0].metadata["login-customer-id"] == MANAGER
    assert (fake.mutations[0].customer_id, fake.mutations[0].resource_name) == (
        CID, f"customers/{CID}/adGroupAds/{GROUP}~{AD}")


def test_missing_connection_or_ad_group_fails_visibly(conn: psycopg.Connection[Any], fake: FakeGoogleAds) -> None:
    other = alert(1, provider="google", account="999", entity=AD, pause=True, dry_run=False)
    assert actions.apply(conn, keyring(), other, never, google(fake)) == "failed"
    no_group = alert(2, provider="google", account=CID, entity=AD, adset_id=None, pause=True, dry_run=False)
    assert actions.apply(conn, keyring(), no_group, never, google(fake)) == "failed"
    no_setter = g_alert(3, entity="9990033", pause=True, dry_run=False)
    assert actions.apply(conn, keyring(), no_setter, never) == "failed"
    errors = [r[6] for r in audit(conn)]
    assert "no google connection for customer 999" in errors[0]
    assert "ad group id must be digits" in errors[1]
    assert "no google status setter" in errors[2] and TOKEN not in errors[2]
    assert fake.mutations == []


def test_resource_names() -> None:
    assert resource_name("123-456-7890", "ad", "11", "22") == "customers/1234567890/adGroupAds/22~11"
    assert resource_name(CID, "adset", "22") == f"customers/{CID}/adGroups/22"
    assert resource_name(CID, "campaign", "33") == f"customers/{CID}/campaigns/33"
    assert resource_name(CID, "asset_group", "44") == f"customers/{CID}/assetGroups/44"
    with pytest.raises(ValueError, match="level"):
        resource_name(CID, "keyword", "1")
    with pytest.raises(ValueError, match="campaign id"):
        resource_name(CID, "campaign", "cmp-9")


def test_a_refresh_token_connection_pauses_with_a_renewed_token_or_says_why_not(fake: FakeGoogleAds) -> None:
    """The pause/resume action renews the connection's access token at the configured
    OAuth token endpoint (as the poller does) instead of Google's fixed one."""
    fake.customers[CID].token = "ya29.renewedForAction"
    account = GoogleAccount("ws", CID, DEV, refresh_token="1//actionSECRET", client_id="c.apps",
                            client_secret="GOCSPX-SECRET")
    with FakeTokenEndpoint().running() as oauth:
        oauth.grant("1//actionSECRET", "c.apps", "GOCSPX-SECRET", "ya29.renewedForAction")
        setter = GoogleStatusSetter(api=GoogleApi(fake.endpoint, oauth.url), timeout_s=10.0)
        assert setter(account, "campaign", CAMPAIGN, None, "PAUSED") == f"customers/{CID}/campaigns/{CAMPAIGN}"
        assert fake.mutations[-1].metadata["authorization"] == "Bearer ya29.renewedForAction"
        oauth.revoke("1//actionSECRET")
        with pytest.raises(GoogleStatusError) as exc:
            setter(account, "campaign", CAMPAIGN, None, "ENABLED")
    assert "invalid_grant" in str(exc.value) and "SECRET" not in str(exc.value)
    assert len(fake.mutations) == 1

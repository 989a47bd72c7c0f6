"""``METRICX_GOOGLE_ADS_CA_FILE``: the Google Ads endpoint and the OAuth token endpoint
trusted through a private CA (a proxy, a staging fake), per client, without gRPC's
process-wide ``GRPC_DEFAULT_SSL_ROOTS_FILE_PATH``.  The fakes here present a certificate
from a CA generated in the test, which nothing else in the process trusts."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from adapters.google_ads.client import GoogleAccount, GoogleApi
from adapters.google_ads.poller import GoogleAdsPoller
from adapters.platform import SyncFailure
from tests.fakes.google_ads_grpc import AdDay, FakeCustomer, FakeGoogleAds
from tests.fakes.oauth_token import FakeTokenEndpoint
from tests.fakes.tls import TlsMaterial, private_ca

WS = "7b0c5a0e-8a51-4d43-9a52-3c5f2f0e7a10"
TODAY = date(2026, 11, 25)


@pytest.fixture
def tls(tmp_path: Path) -> TlsMaterial:
    return private_ca(tmp_path / "pki")


@pytest.fixture
def fake(tls: TlsMaterial) -> Iterator[FakeGoogleAds]:
    with FakeGoogleAds().running(tls=(tls.cert_pem, tls.key_pem)) as f:
        c = f.add(FakeCustomer("1234567890", "ya29.private"))
        c.put(AdDay(1, 2, 3, TODAY, 1_230_000, 10, 1, 0.5, 2.0))
        yield f


def poll(fake: FakeGoogleAds, api: GoogleApi, account: GoogleAccount | None = None) -> int:
    acct = account or GoogleAccount(WS, "1234567890", "devtok-fake", access_token="ya29.private")
    p = GoogleAdsPoller(acct, api=api, clock=lambda: datetime(2026, 11, 25, 12, tzinfo=UTC), sleep=lambda s: None,
                        max_attempts=1)
    return len(p.poll(TODAY, TODAY).snapshots)


def test_the_ads_endpoint_is_trusted_through_the_configured_ca(fake: FakeGoogleAds, tls: TlsMaterial) -> None:
    assert poll(fake, GoogleApi(fake.endpoint, ca_file=str(tls.ca_file))) == 1
    with pytest.raises(SyncFailure) as exc:  # the process's own roots do not know this CA
        poll(fake, GoogleApi(fake.endpoint))
    assert "UNAVAILABLE" in exc.value.message


def test_the_token_endpoint_is_trusted_through_the_same_ca(fake: FakeGoogleAds, tls: TlsMaterial) -> None:
    acct = GoogleAccount(WS, "1234567890", "devtok-fake", refresh_token="1//r", client_id="c", client_secret="s")
    with FakeTokenEndpoint().running(tls=(tls.cert_file, tls.key_file)) as oauth:
        oauth.grant("1//r", "c", "s", "ya29.private")
        assert oauth.url.startswith("https://")
        assert poll(fake, GoogleApi(fake.endpoint, oauth.url, ca_file=str(tls.ca_file)), acct) == 1
        with pytest.raises(SyncFailure, match="token endpoint"):
            poll(fake, GoogleApi(fake.endpoint, oauth.url), acct)
    assert len(oauth.requests) == 1  # the untrusted endpoint was never sent the grant

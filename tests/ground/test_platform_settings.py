"""The pollers' settings: a wrong value fails at start-up naming its variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from ground.settings import ConfigError, PlatformSettings, load_settings
from tests.fakes.tls import private_ca

NAMES = ("METRICX_GOOGLE_ADS_CA_FILE", "METRICX_GOOGLE_OAUTH_TOKEN_URL", "METRICX_HOT_YESTERDAY_HOURS",
         "METRICX_META_GRAPH_URL", "METRICX_GOOGLE_ADS_ENDPOINT", "METRICX_GOOGLE_DAILY_OPERATIONS")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for n in NAMES:
        monkeypatch.delenv(n, raising=False)


def load_poller_settings() -> PlatformSettings:
    return load_settings().platforms


def test_defaults_are_googles_and_metas_own(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_poller_settings()
    assert (s.google_ads_ca_file, s.google_ads_endpoint, s.google_oauth_token_url) == (
        None, None, "https://oauth2.googleapis.com/token")
    assert s.hot_yesterday_hours == 3.0


def test_a_ca_bundle_and_a_token_url_are_taken(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    tls = private_ca(tmp_path)
    monkeypatch.setenv("METRICX_GOOGLE_ADS_CA_FILE", str(tls.ca_file))
    monkeypatch.setenv("METRICX_GOOGLE_OAUTH_TOKEN_URL", "https://oauth.internal:8443/token")
    s = load_poller_settings()
    assert (s.google_ads_ca_file, s.google_oauth_token_url) == (tls.ca_file, "https://oauth.internal:8443/token")


@pytest.mark.parametrize(("name", "value"), [
    ("METRICX_GOOGLE_ADS_CA_FILE", "/nonexistent/ca.pem"),
    ("METRICX_GOOGLE_ADS_CA_FILE", "NOT_PEM"),
    ("METRICX_GOOGLE_OAUTH_TOKEN_URL", "ftp://oauth/token"),
    ("METRICX_HOT_YESTERDAY_HOURS", "25"),
    ("METRICX_GOOGLE_ADS_ENDPOINT", "localhost"),
    ("METRICX_GOOGLE_DAILY_OPERATIONS", "0"),
])
def test_a_wrong_value_names_its_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str,
                                          value: str) -> None:
    if value == "NOT_PEM":
        (tmp_path / "x.pem").write_text("hello")
        value = str(tmp_path / "x.pem")
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        load_poller_settings()

"""The real pollers' own settings (``METRICX_*``), apart from the shared ones in
:mod:`ground.settings` (as the notifier's are), so a wrong value fails at start-up with
the variable's name."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from adapters.google_ads.client import MAX_CA_FILE_BYTES, TOKEN_URL
from adapters.google_ads.logic import BASIC_DAILY_OPERATIONS
from adapters.meta.poller import GRAPH_URL
from domain.schedule import HOT_YESTERDAY_HOURS
from ground.settings import ENV_PREFIX, ConfigError


class PollerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    # Platform endpoints (default: the real ones); staging and the tests point them at fakes.
    meta_graph_url: str = GRAPH_URL
    google_ads_endpoint: str | None = None  # host:port; None is Google's
    # Where refresh-token connections renew their access token (Google's OAuth endpoint).
    google_oauth_token_url: str = TOKEN_URL
    # A PEM CA bundle trusted (instead of the system roots) for the Google Ads endpoint and
    # the token endpoint: a proxy or a fake behind a private CA.
    google_ads_ca_file: Path | None = None
    # Operations per developer token per day (Explorer 2,880; Basic 15,000).
    google_daily_operations: int = BASIC_DAILY_OPERATIONS
    # The hot loop re-reads yesterday this many hours after the account's local midnight.
    hot_yesterday_hours: float = HOT_YESTERDAY_HOURS

    @field_validator("meta_graph_url", "google_oauth_token_url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")) or len(v) > 2048:
            raise ValueError("expected an http(s):// URL")
        return v

    @field_validator("google_ads_endpoint")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is not None and (len(v) > 255 or not v.rpartition(":")[2].isdigit()):
            raise ValueError("expected host:port")
        return v or None

    @field_validator("google_ads_ca_file")
    @classmethod
    def _ca_file(cls, v: Path | None) -> Path | None:
        if v is None or str(v) == "":
            return None
        try:
            data = v.read_bytes()[: MAX_CA_FILE_BYTES + 1]
        except OSError as err:
            raise ValueError(f"cannot read {str(v)[:200]}: {err.strerror}") from None
        if len(data) > MAX_CA_FILE_BYTES or b"-----BEGIN CERTIFICATE-----" not in data:
            raise ValueError(f"expected a PEM certificate bundle of at most {MAX_CA_FILE_BYTES} bytes")
        return v

    @field_validator("google_daily_operations")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v < 1:
            raise ValueError("must be >= 1")
        return v

    @field_validator("hot_yesterday_hours")
    @classmethod
    def _hours(cls, v: float) -> float:
        if not 0 <= v <= 24:
            raise ValueError("must be between 0 and 24")
        return v


def load_poller_settings() -> PollerSettings:
    try:
        return PollerSettings()
    except ValidationError as err:
        lines = []
        for e in err.errors(include_url=False, include_input=False):
            name = ENV_PREFIX + str(e["loc"][0]).upper() if e["loc"] else "settings"
            lines.append(f"{name}: {e['msg']}")
        raise ConfigError("invalid poller configuration: " + "; ".join(lines)) from None

"""The notifier's own settings (``METRICX_*``), apart from the shared ones in
:mod:`ground.settings` so the API and pipeline never need SMTP credentials to start."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from domain.alert_messages import MAX_ALERTS_PER_MESSAGE
from ground.settings import ENV_PREFIX, ConfigError


class NotifierSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_starttls: bool = False
    smtp_ca_file: Path | None = None  # extra CA for STARTTLS (a private relay); system CAs otherwise
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str = "metricx <alerts@metricx.localhost>"
    smtp_timeout_s: float = 20.0

    dashboard_url: str = "http://127.0.0.1:8000"
    slack_min_interval_s: float = 1.0  # Slack's documented limit: 1 message/s per webhook
    slack_timeout_s: float = 10.0
    notifier_group_id: str = "metricx-notifier"
    notifier_senders: int = 4  # sender threads (channels are sent to in parallel, each one in order)
    notifier_action_workers: int = 8  # platform pause/resume calls in flight at once (one per entity)
    notifier_batch_size: int = 100  # alerts per Slack message: 10 in full, the rest one line each
    notifier_poll_s: float = 0.2  # idle sleep of the sender between outbox scans
    notifier_max_attempts: int = 8  # then the delivery is dead
    notifier_retry_base_s: float = 5.0
    notifier_retry_max_s: float = 900.0
    # A claimed delivery not marked sent/failed within this long is treated as crashed
    # mid-send and becomes 'unknown' (must exceed the longest send: timeouts above).
    notifier_send_lease_s: float = 60.0
    meta_graph_url: str = "https://graph.facebook.com"  # tests point it at the fake Graph API
    # Google Ads API host:port for pause/resume (the poller's variable); None is Google's.
    google_ads_endpoint: str | None = None
    # The OAuth token endpoint renewing refresh-token connections (the poller's variable).
    google_oauth_token_url: str = "https://oauth2.googleapis.com/token"
    google_ads_ca_file: Path | None = None  # CA bundle for both Google endpoints (the poller's variable)

    @field_validator("notifier_batch_size")
    @classmethod
    def _batch(cls, v: int) -> int:
        if not 1 <= v <= MAX_ALERTS_PER_MESSAGE:
            raise ValueError(f"must be between 1 and {MAX_ALERTS_PER_MESSAGE}")
        return v

    @field_validator("notifier_max_attempts", "smtp_port", "notifier_senders", "notifier_action_workers")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v < 1:
            raise ValueError("must be >= 1")
        return v

    @field_validator("slack_min_interval_s", "notifier_send_lease_s", "notifier_retry_base_s", "smtp_timeout_s",
                     "slack_timeout_s")
    @classmethod
    def _positive_float(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("must be > 0")
        return v


def load_notifier_settings() -> NotifierSettings:
    try:
        return NotifierSettings()
    except ValidationError as err:
        lines = []
        for e in err.errors(include_url=False, include_input=False):
            name = ENV_PREFIX + str(e["loc"][0]).upper() if e["loc"] else "settings"
            lines.append(f"{name}: {e['msg']}")
        raise ConfigError("invalid notifier configuration: " + "; ".join(lines)) from None

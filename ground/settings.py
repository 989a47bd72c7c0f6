"""All configuration, from ``METRICX_*`` environment variables (documented in the README),
as one composed root: :class:`Settings`, with one section per concern.

Why one root: a process loads it once (:func:`load_settings`), a wrong value fails at
start-up with one message that names the variable, whichever concern it belongs to, and
nothing else in the code reads the environment.  Why sections: a reader finds the Kafka
settings under ``settings.kafka``, the server's under ``settings.serving``; each section
reads its own variables, so a test builds one section with explicit values
(``Settings(database=DatabaseSettings(url=...))``) and lets the others default.

Checks that only one process needs (the server's token issuer) are methods that process
calls, never validators: the pipeline must start without auth configuration.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.alerts import MAX_ALERTS_PER_MESSAGE
from schemas.envelope import DEADLETTER_TOPIC
from schemas.insight import RAW_TOPIC
from schemas.topics import TopicSpec, topic_specs

REPO_ROOT = Path(__file__).resolve().parent.parent
ENV_PREFIX = "METRICX_"

# Platform defaults (the real endpoints; staging and the tests point the settings at fakes).
GRAPH_URL = "https://graph.facebook.com"
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
# A CA bundle larger than this is not a CA bundle (the system's is ~200 KB).
MAX_CA_FILE_BYTES = 1 << 20
# Google Ads operations per developer token per day (Basic access; Explorer has 2,880).
BASIC_DAILY_OPERATIONS = 15_000
# Yesterday is re-read by the hot loop this long after the account's local midnight.
HOT_YESTERDAY_HOURS = 3.0


class ConfigError(RuntimeError):
    """A setting is malformed or points at something unreachable."""


def _var(name: str, default: Any) -> Any:
    """A field read from the variable ``METRICX_<name>`` (its attribute name is shorter)."""
    return Field(default, validation_alias=ENV_PREFIX + name)


class Section(BaseSettings):
    """One concern's variables.  Field names are the variables without ``METRICX_``
    unless the field says otherwise (:func:`_var`)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True, validate_by_name=True)


def _positive(v: float) -> float:
    if v <= 0:
        raise ValueError("must be > 0")
    return v


def _at_least_one(v: int) -> int:
    if v < 1:
        raise ValueError("must be >= 1")
    return v


class KafkaSettings(Section):
    bootstrap: str = _var("KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    batch_size: int = _var("KAFKA_BATCH_SIZE", 2000)  # messages per read
    raw_topic: str = RAW_TOPIC
    deadletter_topic: str = DEADLETTER_TOPIC
    rules_topic: str = "metricx.rules"  # compacted, keyed by rule id (schemas.rules)
    alerts_topic: str = "metricx.alerts"  # keyed by workspace (schemas.alerts)
    raw_partitions: int = 4  # partitions of the input topic (`metricx topics`)

    @field_validator("bootstrap")
    @classmethod
    def _bootstrap(cls, v: str) -> str:
        for part in v.split(","):
            if not re.fullmatch(r"[A-Za-z0-9_.\-\[\]:]+:\d{1,5}", part.strip()):
                raise ValueError(f"expected host:port[,host:port...], got {v!r}")
        return v

    _counts = field_validator("batch_size", "raw_partitions")(_at_least_one)

    @property
    def brokers(self) -> list[str]:
        return [b.strip() for b in self.bootstrap.split(",")]

    def topics(self, raw_partitions: int | None = None) -> list[TopicSpec]:
        """Every topic under these names (``schemas.topics``, the one list)."""
        return topic_specs(raw=self.raw_topic, deadletter=self.deadletter_topic, alerts=self.alerts_topic,
                           rules=self.rules_topic, raw_partitions=raw_partitions or self.raw_partitions)


class DatabaseSettings(Section):
    url: str = _var("DATABASE_URL", "postgresql://metricx:metricx@127.0.0.1:5432/metricx")
    # auto: use TimescaleDB when the extension is available, plain PostgreSQL otherwise.
    timescaledb: Literal["auto", "on", "off"] = "auto"

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^postgres(ql)?(\+psycopg)?://", v):
            raise ValueError(f"expected a postgresql:// URL, got {v!r}")
        return v

    @property
    def sqlalchemy_url(self) -> str:
        return re.sub(r"^postgres(ql)?(\+psycopg)?://", "postgresql+psycopg://", self.url)

    @property
    def libpq_url(self) -> str:
        return re.sub(r"^postgres(ql)?\+psycopg://", "postgresql://", self.url)


class RedisSettings(Section):
    url: str = _var("REDIS_URL", "redis://127.0.0.1:6379/0")
    live_stream_maxlen: int = 10_000

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^(redis|rediss|unix)://", v):
            raise ValueError(f"expected a redis:// URL, got {v!r}")
        return v


class PipelineSettings(Section):
    # Bytewax recovery: state and Kafka offsets are snapshotted every this many seconds;
    # after a crash at most this much input is replayed (and rewritten idempotently).
    snapshot_interval_s: int = 5
    # Young garbage collections every this many net allocations in the pipeline
    # processes (0: Python's default, 700); see ground/gc_tuning.py.
    gc_gen0_threshold: int = 50_000
    restatement_window_days: int = 35

    _counts = field_validator("snapshot_interval_s", "restatement_window_days")(_at_least_one)

    @field_validator("gc_gen0_threshold")
    @classmethod
    def _not_negative(cls, v: int) -> int:
        if v < 0:
            raise ValueError("must be >= 0 (0 keeps Python's default)")
        return v


class RulesSettings(Section):
    # Stop-loss rules: evaluated in the flow when on; aggregate (ad set / campaign) rules
    # wait this long after a watch starts, so every child ad has reported once.
    enabled: bool = _var("RULES_ENABLED", True)
    warmup_s: int = _var("RULES_WARMUP_S", 1800)
    names_refresh_s: int = _var("RULES_NAMES_REFRESH_S", 60)
    # Evaluation budget (domain.metering): a workspace whose rules take longer than
    # this per snapshot, on most of its latest snapshots, has them disabled.
    budget_ms: float = _var("RULES_BUDGET_MS", 2.0)

    @field_validator("budget_ms")
    @classmethod
    def _budget(cls, v: float) -> float:
        if not v * 1_000_000 >= 1:
            raise ValueError("must be at least 0.000001 (one nanosecond)")
        return v


class MetricsSettings(Section):
    # Each long-running process (pipeline, notifier, pollers) serves /metrics, /healthz
    # and /readyz on this port when it is set (0: any free port, logged); the API server
    # has them on its own port.  A pipeline cluster adds its process id.
    port: int | None = _var("METRICS_PORT", None)
    host: str = _var("METRICS_HOST", "127.0.0.1")
    # How often the pipeline and the notifier compare their positions with the broker's.
    lag_interval_s: float = 5.0
    # Metricx processes `metricx status` asks for /readyz: "name=http://host:port,...".
    status_services: str = ""

    @field_validator("port")
    @classmethod
    def _port(cls, v: int | None) -> int | None:
        if v is not None and not 0 <= v <= 65535:
            raise ValueError("must be a TCP port (0: any free port), or unset for no endpoint")
        return v

    _interval = field_validator("lag_interval_s")(_positive)


DEV_ISSUER = "metricx-dev"
_PROCESS_SECRET = secrets.token_urlsafe(32)


class ServingSettings(Section):
    """The HTTP server (``METRICX_AUTH_*``, ``METRICX_DEV_ISSUER``, ``METRICX_STREAM_*``,
    ``METRICX_SSE_*``, ...)."""

    # The only issuer whose tokens are accepted; its JWKS is fetched from auth_jwks_url
    # (never from a URL found in a token).
    auth_issuer: str = DEV_ISSUER
    auth_audience: str = "metricx"
    auth_jwks_url: str | None = None
    # Fixed by configuration: the token's own "alg" header is never trusted.
    auth_algorithm: Literal["RS256", "ES256"] = "ES256"
    auth_leeway_s: int = 30
    # Cached JWKS lifetime, and the shortest gap between refetches triggered by an
    # unknown "kid" (so forged kids cannot hammer the issuer).
    jwks_cache_s: int = 600
    jwks_min_refresh_s: float = 10.0

    # Local development issuer: verifies tokens against a key pair kept in
    # dev_issuer_dir (and lets `metricx token` mint them).  Never enable in production.
    dev_issuer: bool = False
    dev_issuer_dir: Path | None = None

    # EventSource cannot send headers: /stream also accepts a short-lived token minted
    # by POST /stream/token, HMAC-signed with this secret (random per process if unset;
    # set it when several server processes sit behind one address).
    stream_token_secret: str | None = None
    stream_token_ttl_s: int = 120

    # Database connections per server process (requests wait for a free one).
    db_pool_size: int = 16

    # Largest request body accepted (413 above it, before any route or auth runs): four
    # times the largest rule (16 KiB serialised), room for any channel body.
    max_body_bytes: int = 64 * 1024

    sse_queue_size: int = 64
    sse_coalesce_ms: int = 250
    sse_heartbeat_s: float = 15.0
    sse_block_ms: int = 200
    # An open stream re-checks that its user is still a member this often (the answer is
    # cached that long per user and workspace); it also ends at its token's expiry.
    sse_recheck_s: float = 30.0

    # Comma-separated extra Slack webhook hosts (tests, development); http is allowed for them.
    slack_webhook_hosts: str = ""

    _counts = field_validator("db_pool_size", "stream_token_ttl_s", "sse_queue_size", "sse_coalesce_ms",
                              "sse_block_ms", "max_body_bytes")(_at_least_one)
    _recheck = field_validator("sse_recheck_s")(_positive)

    @field_validator("auth_jwks_url")
    @classmethod
    def _jwks(cls, v: str | None) -> str | None:
        if v and not v.startswith(("https://", "http://127.", "http://localhost")):
            raise ValueError("must be https:// (plain http only on loopback)")
        return v

    def require_key_source(self) -> None:
        """The server verifies tokens: it needs an issuer's JWKS or the dev issuer.  Called
        by the server and ``metricx token`` (the other processes never need auth)."""
        if not self.dev_issuer and not self.auth_jwks_url:
            raise ConfigError("invalid serving configuration: METRICX_AUTH_JWKS_URL is required unless "
                              "METRICX_DEV_ISSUER=1 (no token could be verified)")

    def stream_secret(self) -> bytes:
        return (self.stream_token_secret or _PROCESS_SECRET).encode()

    @property
    def extra_webhook_hosts(self) -> frozenset[str]:
        return frozenset(h.strip().lower() for h in self.slack_webhook_hosts.split(",") if h.strip())


class NotifierSettings(Section):
    """Alert delivery: SMTP, Slack, the notifier's own pace and retries."""

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

    @field_validator("notifier_batch_size")
    @classmethod
    def _batch(cls, v: int) -> int:
        if not 1 <= v <= MAX_ALERTS_PER_MESSAGE:
            raise ValueError(f"must be between 1 and {MAX_ALERTS_PER_MESSAGE}")
        return v

    _counts = field_validator("notifier_max_attempts", "smtp_port", "notifier_senders",
                              "notifier_action_workers")(_at_least_one)
    _durations = field_validator("slack_min_interval_s", "notifier_send_lease_s", "notifier_retry_base_s",
                                 "smtp_timeout_s", "slack_timeout_s")(_positive)


class PlatformSettings(Section):
    """Where the ad platforms are and how much of them we may use (the pollers read
    insights there, the notifier pauses and resumes there)."""

    meta_graph_url: str = GRAPH_URL
    google_ads_endpoint: str | None = None  # host:port; None is Google's
    # Where refresh-token connections renew their access token (Google's OAuth endpoint).
    google_oauth_token_url: str = GOOGLE_TOKEN_URL
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

    _operations = field_validator("google_daily_operations")(_at_least_one)

    @field_validator("hot_yesterday_hours")
    @classmethod
    def _hours(cls, v: float) -> float:
        if not 0 <= v <= 24:
            raise ValueError("must be between 0 and 24")
        return v

    @property
    def google_ca_path(self) -> str | None:
        return str(self.google_ads_ca_file) if self.google_ads_ca_file else None


class TokenKeySettings(Section):
    """The keys that encrypt platform tokens and channel secrets at rest (parsed, and
    refused with the variable's name, by ``adapters.crypto.Keyring.from_settings`` when a
    process first needs them: a server without keys still serves dashboards)."""

    keys: SecretStr = _var("TOKEN_KEYS", SecretStr(""))  # kid:base64key[,kid:base64key...]
    key_id: str | None = _var("TOKEN_KEY_ID", None)  # the active key id (new encryptions use it)


class Settings(Section):
    """The root: process-wide values, and one section per concern."""

    data_dir: Path = REPO_ROOT / ".data"  # service data and the pipeline's recovery store
    log_level: str = "INFO"
    # Longest pause between two attempts to reach a dependency that is down.
    retry_max_s: float = 10.0

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)
    rules: RulesSettings = Field(default_factory=RulesSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    notifier: NotifierSettings = Field(default_factory=NotifierSettings)
    platforms: PlatformSettings = Field(default_factory=PlatformSettings)
    tokens: TokenKeySettings = Field(default_factory=TokenKeySettings)

    _retry = field_validator("retry_max_s")(_positive)

    @property
    def recovery_dir(self) -> Path:
        return self.data_dir / "recovery"

    @property
    def dev_issuer_dir(self) -> Path:
        return self.serving.dev_issuer_dir or self.data_dir / "dev-issuer"


SECTIONS: tuple[type[Section], ...] = (Settings, KafkaSettings, DatabaseSettings, RedisSettings, PipelineSettings,
                                       RulesSettings, MetricsSettings, ServingSettings, NotifierSettings,
                                       PlatformSettings, TokenKeySettings)


def variable(section: type[Section] | str, field: str) -> str:
    """The environment variable of ``field`` (a field name or its variable already)."""
    if field.startswith(ENV_PREFIX):
        return field
    cls = next((s for s in SECTIONS if s is section or s.__name__ == section), None)
    info = cls.model_fields.get(field) if cls is not None else None
    alias = info.validation_alias if info is not None else None
    return alias if isinstance(alias, str) else ENV_PREFIX + field.upper()


def describe(err: ValidationError) -> str:
    """One line per refused value, naming its variable and never echoing the value (a
    secret may be what was mistyped)."""
    lines = []
    for e in err.errors(include_url=False, include_input=False):
        name = variable(err.title, str(e["loc"][0])) if e["loc"] else "settings"
        lines.append(f"{name}: {str(e['msg']).removeprefix('Value error, ')}")
    return "; ".join(lines)


def load_settings() -> Settings:
    """The whole configuration; :class:`ConfigError` naming every malformed variable."""
    try:
        return Settings()
    except ValidationError as err:
        raise ConfigError("invalid configuration: " + describe(err)) from None

"""All configuration, from ``METRICX_*`` environment variables (documented in the README).

A wrong value fails at start-up with a message that names the variable, so an operator
never has to guess which of three URLs was mistyped.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
ENV_PREFIX = "METRICX_"


class ConfigError(RuntimeError):
    """A setting is malformed or points at something unreachable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    kafka_bootstrap: str = "127.0.0.1:9092"
    database_url: str = "postgresql://metricx:metricx@127.0.0.1:5432/metricx"
    redis_url: str = "redis://127.0.0.1:6379/0"

    raw_topic: str = "metricx.insights.raw"
    deadletter_topic: str = "metricx.deadletter"
    rules_topic: str = "metricx.rules"  # compacted, keyed by rule id (schemas.rules)
    alerts_topic: str = "metricx.alerts"  # keyed by workspace (schemas.alerts)
    # auto: use TimescaleDB when the extension is available, plain PostgreSQL otherwise.
    timescaledb: Literal["auto", "on", "off"] = "auto"

    data_dir: Path = REPO_ROOT / ".data"
    # Bytewax recovery: state and Kafka offsets are snapshotted every this many seconds;
    # after a crash at most this much input is replayed (and rewritten idempotently).
    snapshot_interval_s: int = 5
    # Young garbage collections every this many net allocations in the pipeline
    # processes (0: Python's default, 700); see metricx/gc_tuning.py.
    gc_gen0_threshold: int = 50_000
    restatement_window_days: int = 35
    kafka_batch_size: int = 2000
    live_stream_maxlen: int = 10_000
    log_level: str = "INFO"
    # Stop-loss rules: evaluated in the flow when on; aggregate (ad set / campaign) rules
    # wait this long after a watch starts, so every child ad has reported once.
    rules_enabled: bool = True
    rules_warmup_s: int = 1800
    rules_names_refresh_s: int = 60
    # Evaluation budget (domain.metering): a workspace whose rules take longer than
    # this per snapshot, on most of its latest snapshots, has them disabled.
    rules_budget_ms: float = 2.0
    # Operations: each long-running process (pipeline, notifier, pollers) serves
    # /metrics, /healthz and /readyz on this port when it is set (0: any free port, logged);
    # the API server has them on its own port.  A pipeline cluster adds its process id.
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    # How often the pipeline compares its committed offsets with the broker's (lag gauge).
    lag_interval_s: float = 5.0
    # Longest pause between two attempts to reach a dependency that is down.
    retry_max_s: float = 10.0

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap(cls, v: str) -> str:
        for part in v.split(","):
            if not re.fullmatch(r"[A-Za-z0-9_.\-\[\]:]+:\d{1,5}", part.strip()):
                raise ValueError(f"expected host:port[,host:port...], got {v!r}")
        return v

    @field_validator("database_url")
    @classmethod
    def _database(cls, v: str) -> str:
        if not re.match(r"^postgres(ql)?(\+psycopg)?://", v):
            raise ValueError(f"expected a postgresql:// URL, got {v!r}")
        return v

    @field_validator("redis_url")
    @classmethod
    def _redis(cls, v: str) -> str:
        if not re.match(r"^(redis|rediss|unix)://", v):
            raise ValueError(f"expected a redis:// URL, got {v!r}")
        return v

    @field_validator("snapshot_interval_s", "restatement_window_days", "kafka_batch_size")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v < 1:
            raise ValueError("must be >= 1")
        return v

    @field_validator("rules_budget_ms")
    @classmethod
    def _budget(cls, v: float) -> float:
        if not v * 1_000_000 >= 1:
            raise ValueError("must be at least 0.000001 (one nanosecond)")
        return v

    @field_validator("metrics_port")
    @classmethod
    def _port(cls, v: int | None) -> int | None:
        if v is not None and not 0 <= v <= 65535:
            raise ValueError("must be a TCP port (0: any free port), or unset for no endpoint")
        return v

    @field_validator("lag_interval_s", "retry_max_s")
    @classmethod
    def _positive_s(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("must be > 0")
        return v

    @field_validator("gc_gen0_threshold")
    @classmethod
    def _not_negative(cls, v: int) -> int:
        if v < 0:
            raise ValueError("must be >= 0 (0 keeps Python's default)")
        return v

    @property
    def recovery_dir(self) -> Path:
        return self.data_dir / "recovery"

    @property
    def brokers(self) -> list[str]:
        return [b.strip() for b in self.kafka_bootstrap.split(",")]

    @property
    def sqlalchemy_url(self) -> str:
        return re.sub(r"^postgres(ql)?(\+psycopg)?://", "postgresql+psycopg://", self.database_url)

    @property
    def libpq_url(self) -> str:
        return re.sub(r"^postgres(ql)?\+psycopg://", "postgresql://", self.database_url)


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as err:
        lines = []
        for e in err.errors(include_url=False):
            name = ENV_PREFIX + str(e["loc"][0]).upper() if e["loc"] else "settings"
            lines.append(f"{name}: {e['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(lines)) from None

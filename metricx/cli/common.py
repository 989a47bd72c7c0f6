"""What every subcommand shares: the settings with logging configured, and the two ways a
command meets its dependencies (a one-shot command fails fast; a service waits)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from adapters.kafka import check_reachable as check_kafka
from adapters.redis_live import check_reachable as check_redis
from adapters.timescale import check_reachable as check_db
from ground import logs
from ground.metrics import serve_metrics
from ground.retry import Backoff, wait_until_reachable
from ground.settings import Settings, load_settings

Command = Callable[[argparse.Namespace], int]


def settings_and_logs() -> Settings:
    """The settings (``ConfigError`` naming a bad variable), with JSON logging set up."""
    settings = load_settings()
    logs.configure(settings.log_level)
    return settings


def checks(settings: Settings, *, kafka: bool = False, db: bool = False,
           redis: bool = False) -> dict[str, Callable[[], None]]:
    """Each asked-for dependency's reachability check (raises ``ConnectionError`` naming
    the setting)."""
    out: dict[str, Callable[[], None]] = {}
    if kafka:
        out["kafka"] = lambda: check_kafka(settings.kafka.bootstrap)
    if db:
        out["postgres"] = lambda: check_db(settings.database.libpq_url)
    if redis:
        out["redis"] = lambda: check_redis(settings.redis.url)
    return out


def require(settings: Settings, *, kafka: bool = False, db: bool = False, redis: bool = False) -> None:
    """One-shot commands: fail fast, with a message naming the setting."""
    for check in checks(settings, kafka=kafka, db=db, redis=redis).values():
        check()


def start_service(settings: Settings, process: str, *, port_offset: int = 0, kafka: bool = False,
                  db: bool = False, redis: bool = False) -> None:
    """A long-running process: its /metrics, /healthz, /readyz endpoint first (so it
    can say what it waits for), then wait, with backoff, until its dependencies answer."""
    port = settings.metrics.port
    if port:
        port += port_offset
    serve_metrics(settings.metrics.host, port, process)
    wait_until_reachable(checks(settings, kafka=kafka, db=db, redis=redis),
                         backoff=Backoff(cap_s=settings.retry_max_s))


def bounded(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text[:20]!r}") from None
        if not lo <= n <= hi:
            raise argparse.ArgumentTypeError(f"must be between {lo} and {hi}")
        return n
    return parse

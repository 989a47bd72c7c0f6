"""A wrong setting stops start-up with a message that names the variable."""

from __future__ import annotations

import socket

import pytest

from adapters.kafka import check_reachable as kafka_ok
from adapters.redis_live import check_reachable as redis_ok
from adapters.timescale import check_reachable as db_ok
from ground.settings import ConfigError, load_settings
from metricx.cli import main


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("METRICX_KAFKA_BOOTSTRAP", "localhost"),
        ("METRICX_DATABASE_URL", "mysql://x@y/z"),
        ("METRICX_REDIS_URL", "127.0.0.1:6379"),
        ("METRICX_SNAPSHOT_INTERVAL_S", "0"),
        ("METRICX_TIMESCALEDB", "maybe"),
    ],
)
def test_malformed_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch, var: str, value: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError, match=var):
        load_settings()


def test_defaults_are_the_documented_local_services(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("METRICX_KAFKA_BOOTSTRAP", "METRICX_DATABASE_URL", "METRICX_REDIS_URL"):
        monkeypatch.delenv(var, raising=False)
    s = load_settings()
    assert s.kafka.bootstrap == "127.0.0.1:9092"
    assert s.database.url.endswith("@127.0.0.1:5432/metricx")
    assert s.redis.url == "redis://127.0.0.1:6379/0"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_services_name_the_variable() -> None:
    port = _closed_port()
    with pytest.raises(ConnectionError, match="METRICX_DATABASE_URL"):
        db_ok(f"postgresql://x:y@127.0.0.1:{port}/db", timeout=2)
    with pytest.raises(ConnectionError, match="METRICX_REDIS_URL"):
        redis_ok(f"redis://127.0.0.1:{port}/0")
    with pytest.raises(ConnectionError, match="METRICX_KAFKA_BOOTSTRAP"):
        kafka_ok(f"127.0.0.1:{port}", timeout=3)


def test_the_cli_fails_fast_with_the_message(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("METRICX_DATABASE_URL", f"postgresql://x:y@127.0.0.1:{_closed_port()}/db")
    assert main(["migrate"]) == 2
    assert "METRICX_DATABASE_URL" in capsys.readouterr().err

"""The metrics module's own logic: reason classes, dependency health, the endpoint,
backoff and waiting for dependencies (no services needed)."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter

from adapters.kafka import encode_snapshot
from domain.deltas import apply_snapshot
from ground.metrics import REASON_CLASSES, Health, MetricsServer, reason_class
from ground.retry import Backoff, wait_until_reachable
from schemas.insight import InvalidInsight, parse_insight
from tests.factories import metrics, snap


def reason_of(value: bytes | None, key: bytes | None = None) -> str:
    with pytest.raises(InvalidInsight) as err:
        parse_insight(value, key, datetime.now(UTC))
    return err.value.reason


def test_dead_letter_reasons_fold_into_a_fixed_vocabulary() -> None:
    """Reasons as the real validators word them; the classes are written out here."""
    good = snap(datetime(2026, 3, 1, 12, tzinfo=UTC), date(2026, 3, 1), metrics("1", 10, 1))
    key, value = encode_snapshot(good)
    later = snap(datetime.now(UTC) + timedelta(days=2), date(2026, 3, 1), metrics("1", 10, 1))
    cases = {
        reason_of(b"{not json"): "invalid_json",
        reason_of(b"[1, 2]"): "not_an_object",
        reason_of(None): "tombstone",
        reason_of(value, b"sim:other:ad-9"): "key_mismatch",
        reason_of(value): "missing_key",
        reason_of(encode_snapshot(later)[1], key): "future_capture",
        reason_of(value.replace(b'"spend":"1"', b'"spend":"lots"'), key): "schema",
    }
    state, _ = apply_snapshot(None, good)
    _, refused = apply_snapshot(state, snap(good.captured_at, good.report_date, metrics("2", 10, 1)))
    cases[refused.reason] = "conflict"  # type: ignore[union-attr]
    _, old = apply_snapshot(None, snap(datetime(2026, 3, 1, tzinfo=UTC), date(2026, 1, 1), metrics()))
    cases[old.reason] = "outside_window"  # type: ignore[union-attr]
    assert {r: reason_class(r) for r in cases} == cases
    assert reason_class(f"something new {uuid.uuid4()}") == "other"
    assert len(set(REASON_CLASSES)) == len(REASON_CLASSES)  # bounded label values


def test_health_logs_each_transition_once_and_reports(caplog: pytest.LogCaptureFixture) -> None:
    t = [100.0]
    health = Health(clock=lambda: t[0])
    health.up("postgres")
    assert health.ready()
    with caplog.at_level(logging.INFO, logger="metricx.health"):
        for _ in range(3):
            health.down("postgres", "connection refused")
        t[0] += 12.5
        health.up("postgres")
        health.up("postgres")
    msgs = [(r.getMessage(), getattr(r, "dependency", None)) for r in caplog.records]
    assert msgs == [("dependency down; retrying with backoff", "postgres"), ("dependency back", "postgres")]
    assert caplog.records[1].down_s == 12.5  # type: ignore[attr-defined]
    health.down("kafka", "all brokers down")
    report = health.report()
    assert report["status"] == "unavailable" and not health.ready()
    assert report["dependencies"]["kafka"]["up"] is False and "all brokers down" in report["dependencies"]["kafka"]["error"]
    assert report["dependencies"]["postgres"]["up"] is True


def test_metrics_endpoint_serves_metrics_health_and_readiness() -> None:
    registry = CollectorRegistry()
    Counter("metricx_test_things", "things", registry=registry).inc(3)
    health = Health()
    server = MetricsServer("127.0.0.1", 0, health=health, registry=registry)
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert "metricx_test_things_total 3.0" in httpx.get(f"{base}/metrics").text
        assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
        health.up("redis")
        assert httpx.get(f"{base}/readyz").status_code == 200
        health.down("redis", "Connection refused")
        r = httpx.get(f"{base}/readyz")
        assert r.status_code == 503 and r.json()["dependencies"]["redis"]["up"] is False
        assert httpx.get(f"{base}/nope").status_code == 404
    finally:
        server.close()


def test_backoff_doubles_up_to_its_cap_and_resets() -> None:
    b = Backoff(base_s=0.5, cap_s=4.0)
    assert [b.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    b.reset()
    assert b.next() == 0.5


def test_waiting_for_dependencies_retries_until_each_answers() -> None:
    attempts = {"postgres": 0, "kafka": 0}

    def flaky(name: str, failures: int) -> None:
        attempts[name] += 1
        if attempts[name] <= failures:
            raise ConnectionError(f"METRICX_X: {name} is not reachable")

    health = Health()
    ok = wait_until_reachable({"postgres": lambda: flaky("postgres", 2), "kafka": lambda: flaky("kafka", 0)},
                              backoff=Backoff(base_s=0.001, cap_s=0.002), health=health)
    assert ok and attempts == {"postgres": 3, "kafka": 1} and health.ready()
    stop = threading.Event()
    stop.set()
    assert wait_until_reachable({"postgres": lambda: flaky("postgres", 99)}, stop=stop, health=health) is False
    assert json.loads(json.dumps(health.report()))["dependencies"]["postgres"]["up"] is False

"""What an operator can scrape: the Prometheus metrics of every metricx process, the
state of each process's dependencies (``/readyz``), and the small HTTP endpoint that
serves both for the processes without a web server of their own (pipeline, notifier,
pollers; the API server mounts the same pages, :mod:`serving.observability`).

Why one module: every layer counts something (the commit sink, the notifier's sender,
the pollers, the server), and metric objects are process-wide by nature, so they live at
the bottom, importable by everyone, next to nothing else.  Labels are bounded by
construction: providers, stages, channel kinds, states and routes are small fixed sets,
and a dead letter's free-text reason is folded into a class (:func:`reason_class`), so
a flood of bad input can never grow the number of series.

Costs on the hot path are per batch, never per snapshot.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest
from prometheus_client.registry import CollectorRegistry

log = logging.getLogger("metricx.health")

# -- the pipeline ------------------------------------------------------------------------

SNAPSHOTS = Counter(
    "metricx_pipeline_snapshots", "Snapshots the pipeline committed, by outcome: applied (a row written), "
    "ignored (a duplicate or an older capture of a known series), refused (dead-lettered by the series step)",
    ["outcome"])
COMMIT_SECONDS = Histogram(
    "metricx_pipeline_commit_seconds", "One commit: dead letters acknowledged, the database transaction "
    "(rows + Kafka progress), alerts published; retries while a dependency is down included",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
COMMIT_BATCH = Histogram(
    "metricx_pipeline_commit_batch_size", "Items (applied, ignored, refused, invalid, alerts) in one commit",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 20_000, 50_000))
COMMIT_RETRIES = Counter(
    "metricx_pipeline_commit_retries", "Database writes that failed on the connection and were retried")
LAST_COMMIT = Gauge("metricx_pipeline_last_commit_timestamp_seconds", "Unix time of the last successful commit")
SNAPSHOT_SECONDS = Histogram(
    "metricx_pipeline_recovery_snapshot_seconds", "At each epoch's recovery snapshot: how long the sink waited "
    "for the database to hold everything before Bytewax may record the epoch",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
PIPELINE_ALERTS = Counter("metricx_pipeline_alerts", "Stop-loss alerts committed and published by the pipeline")
LIVE_UPDATES = Counter(
    "metricx_pipeline_live_updates", "Per-workspace live updates after a commit: published to Redis, failed, or "
    "skipped while Redis is being retried (the dashboards then get a reset)", ["result"])
KAFKA_ERRORS = Counter(
    "metricx_kafka_client_errors", "Errors reported by a Kafka client (transient ones are retried by the client)",
    ["client", "code"])

# -- shared by the pipeline, the notifier and the pollers ----------------------------------

DEAD_LETTERS = Counter(
    "metricx_dead_letters", "Messages sent to the dead-letter topic, by stage (validate, series, notifier, rules, "
    "poll) and reason class", ["stage", "reason"])
CONSUMER_LAG = Gauge(
    "metricx_consumer_lag", "Messages on a partition after the consumer's committed position (for the pipeline: "
    "the offsets its database transactions recorded)", ["consumer", "topic", "partition"])
DEPENDENCY_UP = Gauge("metricx_dependency_up", "1 when this process's last use of the dependency worked",
                      ["dependency"])

# -- the notifier ----------------------------------------------------------------------------

NOTIFIER_ALERTS = Counter("metricx_notifier_alerts", "Alert messages the notifier consumed, by result",
                          ["result"])
DELIVERIES = Counter(
    "metricx_alert_deliveries", "Alert deliveries by channel kind and the state this process moved them to "
    "(sent, failed, rate_limited, dead, disabled, unknown, not_attempted)", ["channel", "state"])

# -- the pollers -------------------------------------------------------------------------------

API_CALLS = Counter("metricx_platform_api_calls", "Requests (Google Ads: operations) made to an ad platform",
                    ["provider"])
THROTTLED = Counter(
    "metricx_platform_throttled", "Syncs the platform slowed down or stopped (usage near its limit, rate or quota "
    "errors)", ["provider"])
SYNCS = Counter("metricx_poller_syncs", "Connection syncs by provider, loop and outcome",
                ["provider", "loop", "status"])
PUBLISHED = Counter("metricx_poller_snapshots_published", "Snapshots a poller published to Kafka", ["provider"])

# -- the API server --------------------------------------------------------------------------------

HTTP_SECONDS = Histogram(
    "metricx_http_request_duration_seconds", "HTTP requests by route template (not the raw path), method and "
    "status code; a stream counts until its response starts", ["route", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))


def dead_lettered(stage: str, reasons: Iterable[str]) -> None:
    """Count dead letters of one stage (called per batch with its reasons)."""
    counts: dict[str, int] = {}
    for r in reasons:
        c = reason_class(r)
        counts[c] = counts.get(c, 0) + 1
    for c, n in counts.items():
        DEAD_LETTERS.labels(stage, c).inc(n)


# Free-text reasons (schemas.insight, domain.deltas, schemas.alerts, the pollers' row
# mappers) folded into a fixed vocabulary, first match wins.
_REASONS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(p)) for name, p in (
        ("invalid_json", r"^not valid JSON"),
        ("not_an_object", r"^value is not a JSON object"),
        ("tombstone", r"^message has no value|^empty message"),
        ("missing_key", r"^message has no key"),
        ("key_mismatch", r"^key .* does not match|^key .* is not the rule's id|^key .* is not a rule id"),
        ("future_capture", r"is in the future"),
        ("outside_window", r"outside the restatement window"),
        ("series_closed", r"was closed \(state evicted"),
        ("conflict", r"^conflicting snapshot"),
        ("database_refused", r"^database refused"),
        ("too_large", r"too (large|long|big)|exceeds"),
        ("platform_row", r"^(meta|google)\b.*\brow\b"),
        ("schema", r"^[\w.\[\]-]+: "),
    ))
REASON_CLASSES = (*(n for n, _ in _REASONS), "other")


def reason_class(reason: str) -> str:
    for name, pattern in _REASONS:
        if pattern.search(reason):
            return name
    return "other"


# -- dependency health -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DependencyState:
    up: bool
    error: str | None
    since: datetime  # when it last changed (wall clock, for people)
    since_mono: float


class Health:
    """What this process learned about its dependencies from its own attempts to use
    them (a commit, a flush, a poll), not from a separate prober: "down" means work is
    waiting on it.  Transitions are logged once each way, so an outage is two log lines
    (down, with the error; back, with how long it lasted), not one per retry."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._deps: dict[str, DependencyState] = {}
        self._clock = clock

    def up(self, dep: str) -> None:
        now = self._clock()
        with self._lock:
            prev = self._deps.get(dep)
            if prev is not None and prev.up:
                return
            self._deps[dep] = DependencyState(True, None, datetime.now(UTC), now)
        DEPENDENCY_UP.labels(dep).set(1)
        if prev is not None:
            log.warning("dependency back", extra={"dependency": dep, "down_s": round(now - prev.since_mono, 1)})

    def down(self, dep: str, error: str) -> None:
        now = self._clock()
        with self._lock:
            prev = self._deps.get(dep)
            if prev is not None and not prev.up:
                return
            self._deps[dep] = DependencyState(False, error[:300], datetime.now(UTC), now)
        DEPENDENCY_UP.labels(dep).set(0)
        log.error("dependency down; retrying with backoff", extra={"dependency": dep, "error": error[:300]})

    def ready(self) -> bool:
        with self._lock:
            return all(s.up for s in self._deps.values())

    def report(self) -> dict[str, Any]:
        with self._lock:
            deps = dict(self._deps)
        return {
            "status": "ok" if all(s.up for s in deps.values()) else "unavailable",
            "dependencies": {
                name: {"up": s.up, "since": s.since.isoformat(timespec="seconds"),
                       **({"error": s.error} if s.error else {})}
                for name, s in sorted(deps.items())
            },
        }


HEALTH = Health()


# -- the endpoint ----------------------------------------------------------------------------


class MetricsServer:
    """``/metrics`` (Prometheus text format), ``/healthz`` (the process answers) and
    ``/readyz`` (200 when every dependency it used last worked, 503 and which one
    otherwise) on a thread of their own."""

    def __init__(self, host: str, port: int, *, health: Health = HEALTH,
                 registry: CollectorRegistry = REGISTRY) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(owner.registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    self._send(200, b'{"status":"ok"}', "application/json")
                elif path == "/readyz":
                    body = owner.health.report()
                    self._send(200 if body["status"] == "ok" else 503, json.dumps(body).encode(), "application/json")
                else:
                    self._send(404, b'{"detail":"not found"}', "application/json")

            def _send(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.health = health
        self.registry = registry
        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="metricx-metrics", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def serve_metrics(host: str, port: int | None, process: str) -> MetricsServer | None:
    """Start the endpoint when a port is configured (0: any free one); a port already
    taken is logged, not fatal: losing metrics must not stop the work."""
    if port is None:
        return None
    try:
        server = MetricsServer(host, port)
    except OSError as exc:
        log.error("metrics endpoint not started", extra={"service": process, "host": host, "port": port,
                                                          "error": str(exc)})
        return None
    log.info("metrics endpoint listening", extra={"service": process, "host": host, "port": server.port,
                                                  "paths": ["/metrics", "/healthz", "/readyz"]})
    return server

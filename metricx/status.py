"""``metricx status``: the operator's one-screen answer to "is it working?".

Services (Kafka, PostgreSQL, Redis, and any metricx process given by its URL), the
pipeline's last commit and lag per partition, the notifier's lag and stuck deliveries,
and the ad-platform connections that need someone to sign in again.  Exit code 0 when
all is well, 1 when something needs attention (each reason is printed), so it can gate
a deploy script or a cron job.

Gathering (I/O) and judging (:func:`problems`, pure) are separate, so the rules for
"unhealthy" are tested without services.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
from confluent_kafka import KafkaException

from adapters.kafka import check_reachable as kafka_reachable
from adapters.lag import BrokerProbe, lag, pipeline_committed
from adapters.redis_live import check_reachable as redis_reachable
from adapters.timescale import check_reachable as db_reachable
from ground.settings import Settings


@dataclass
class Service:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class ConsumerLag:
    topic: str
    partitions: dict[int, int] = field(default_factory=dict)  # partition -> messages behind
    error: str | None = None

    @property
    def total(self) -> int:
        return sum(self.partitions.values())


@dataclass
class Report:
    at: datetime
    services: list[Service] = field(default_factory=list)
    pipeline_lag: ConsumerLag | None = None
    last_commit: datetime | None = None
    notifier_lag: ConsumerLag | None = None
    deliveries: dict[str, int] = field(default_factory=dict)  # status -> count
    stuck: list[dict[str, Any]] = field(default_factory=list)  # a sample of the stuck deliveries
    stuck_total: int = 0
    connections: dict[str, int] = field(default_factory=dict)  # status -> count
    reauth: list[str] = field(default_factory=list)  # workspace/provider/account
    schema_error: str | None = None  # the database answers but is not migrated

    @property
    def commit_age_s(self) -> float | None:
        return None if self.last_commit is None else (self.at - self.last_commit).total_seconds()


def problems(r: Report, *, stale_after_s: float) -> list[str]:
    """Why the system needs attention (empty: healthy).  A pipeline with nothing to read
    may be idle for hours; one with messages waiting and no commit for ``stale_after_s``
    is stalled.  'unknown' deliveries always need a human (maybe sent, never resent)."""
    out = [f"{s.name} is down: {s.detail}" for s in r.services if not s.ok]
    if r.schema_error:
        out.append(f"database schema missing ({r.schema_error}): run `metricx migrate`")
    for what, lag_ in (("pipeline", r.pipeline_lag), ("notifier", r.notifier_lag)):
        if lag_ is not None and lag_.error:
            out.append(f"{what} lag unknown: {lag_.error}")
    if r.pipeline_lag is not None and r.pipeline_lag.total > 0:
        age = r.commit_age_s
        if age is None or age > stale_after_s:
            since = "never committed" if age is None else f"last commit {age:.0f} s ago"
            out.append(f"pipeline stalled: {r.pipeline_lag.total} messages waiting, {since}")
    if r.stuck_total:
        out.append(f"{r.stuck_total} alert deliveries stuck (unknown, or overdue with no sender)")
    if r.reauth:
        out.append(f"{len(r.reauth)} connections need re-auth: {', '.join(r.reauth[:5])}")
    return out


# -- gathering -------------------------------------------------------------------------------

STUCK_WHERE = """
    status = 'unknown'
    OR (status IN ('pending', 'failed') AND next_attempt_at < now() - make_interval(secs => %(stale)s))
    OR (status = 'sending' AND next_attempt_at < now() - make_interval(secs => %(stale)s))
"""


def _service(name: str, check: Callable[[], None]) -> Service:
    try:
        check()
    except ConnectionError as exc:
        return Service(name, False, str(exc))
    return Service(name, True)


def _readyz(name: str, base: str) -> Service:
    url = base.rstrip("/") + "/readyz"
    try:
        r = httpx.get(url, timeout=5)
    except httpx.HTTPError as exc:
        return Service(name, False, f"{url}: {type(exc).__name__}")
    if r.status_code == 200:
        return Service(name, True, url)
    try:
        body = json.dumps(r.json(), separators=(",", ":"))[:300]
    except ValueError:
        body = r.text[:300]
    return Service(name, False, f"{url}: {r.status_code} {body}")


def gather(settings: Settings, *, endpoints: Sequence[tuple[str, str]], notifier_group: str,
           stale_after_s: float) -> Report:
    report = Report(datetime.now(UTC))
    report.services = [
        _service("kafka", lambda: kafka_reachable(settings.kafka.bootstrap)),
        _service("postgres", lambda: db_reachable(settings.database.libpq_url)),
        _service("redis", lambda: redis_reachable(settings.redis.url)),
        *(_readyz(name, url) for name, url in endpoints),
    ]
    up = {s.name for s in report.services if s.ok}
    committed: dict[int, int] | None = None
    if "postgres" in up:
        try:
            committed = _from_database(settings, report, stale_after_s)
        except psycopg.errors.UndefinedTable as exc:
            report.schema_error = str(exc).splitlines()[0]
    if "kafka" in up:
        probe = BrokerProbe(settings.kafka.bootstrap)
        try:
            report.pipeline_lag = _lag(settings.kafka.raw_topic, lambda: committed or {}, probe)
            report.notifier_lag = _lag(settings.kafka.alerts_topic,
                                       lambda: probe.group_committed(notifier_group, settings.kafka.alerts_topic), probe)
        finally:
            probe.close()
    return report


def _from_database(settings: Settings, report: Report, stale_after_s: float) -> dict[int, int]:
    """Fill in what the database knows; returns the pipeline's committed offsets."""
    with psycopg.connect(settings.database.libpq_url, connect_timeout=5) as conn:
        committed = pipeline_committed(conn, "pipeline", settings.kafka.raw_topic)
        row = conn.execute("SELECT max(committed_at) FROM pipeline_progress WHERE consumer = 'pipeline'").fetchone()
        report.last_commit = row[0] if row else None
        report.deliveries = dict(conn.execute("SELECT status, count(*) FROM alert_deliveries GROUP BY status"
                                              ).fetchall())
        params = {"stale": stale_after_s}
        total = conn.execute(f"SELECT count(*) FROM alert_deliveries WHERE {STUCK_WHERE}", params).fetchone()
        report.stuck_total = int(total[0]) if total else 0
        cur = conn.execute(
            f"SELECT fingerprint, channel_id::text, status, attempts, left(last_error, 120) AS last_error "
            f"FROM alert_deliveries WHERE {STUCK_WHERE} ORDER BY created_at LIMIT 10", params)
        names = [d.name for d in cur.description or ()]
        report.stuck = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        report.connections = dict(conn.execute("SELECT status, count(*) FROM connections GROUP BY status"
                                               ).fetchall())
        report.reauth = [f"{r[0]}/{r[1]}/{r[2]}" for r in conn.execute(
            "SELECT workspace_id::text, provider, account_id FROM connections WHERE status = 'needs_reauth' "
            "ORDER BY 1, 2, 3").fetchall()]
    return committed


def _lag(topic: str, committed: Callable[[], dict[int, int]], probe: BrokerProbe) -> ConsumerLag:
    try:
        return ConsumerLag(topic, lag(probe.watermarks(topic), committed()))
    except KafkaException as exc:
        return ConsumerLag(topic, error=str(exc))


# -- printing ----------------------------------------------------------------------------------


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _lag_line(name: str, c: ConsumerLag | None) -> list[str]:
    if c is None:
        return [f"{name:<12} lag unknown (Kafka unreachable)"]
    if c.error:
        return [f"{name:<12} lag unknown: {c.error}"]
    parts = " ".join(f"[{p}]={n}" for p, n in sorted(c.partitions.items()))
    return [f"{name:<12} lag {c.total} on {c.topic} {parts}"]


def render(r: Report, issues: list[str]) -> str:
    lines = [f"metricx status at {r.at.isoformat(timespec='seconds')}", "services"]
    lines += [f"  {s.name:<10} {'ok' if s.ok else 'DOWN'}  {s.detail}".rstrip() for s in r.services]
    lines += _lag_line("pipeline", r.pipeline_lag)
    lines.append(f"{'':<12} last commit {_ago(r.commit_age_s)}"
                 + (f" ({r.last_commit.isoformat(timespec='seconds')})" if r.last_commit else ""))
    lines += _lag_line("notifier", r.notifier_lag)
    counts = ", ".join(f"{k} {v}" for k, v in sorted(r.deliveries.items())) or "none"
    lines.append(f"{'deliveries':<12} {counts}; stuck {r.stuck_total}")
    lines += [f"  stuck {d['status']}: {d['fingerprint']} -> channel {d['channel_id']} "
              f"(attempts {d['attempts']}) {d['last_error'] or ''}".rstrip() for d in r.stuck]
    conns = ", ".join(f"{k} {v}" for k, v in sorted(r.connections.items())) or "none"
    lines.append(f"{'connections':<12} {conns}")
    lines += [f"  needs re-auth: {c}" for c in r.reauth]
    lines.append("status: OK" if not issues else "status: ATTENTION")
    lines += [f"  - {i}" for i in issues]
    return "\n".join(lines)


def as_json(r: Report, issues: list[str]) -> str:
    d = asdict(r)
    d["commit_age_s"] = r.commit_age_s
    d["healthy"] = not issues
    d["problems"] = issues
    return json.dumps(d, default=str, indent=1)


def parse_endpoints(items: Sequence[str]) -> list[tuple[str, str]]:
    """``name=http://host:port`` pairs (``--service`` options, ``METRICX_STATUS_SERVICES``)."""
    out = []
    for item in items:
        for part in item.split(","):
            part = part.strip()
            if not part:
                continue
            name, sep, url = part.partition("=")
            if not sep or not name or not url.startswith(("http://", "https://")):
                raise ValueError(f"expected name=http://host:port, got {part!r}")
            out.append((name.strip(), url.strip()))
    return out

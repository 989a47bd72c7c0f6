"""Per-workspace live updates on Redis Streams, published after each database commit.

Streams rather than plain pub/sub so that a dashboard server that reconnects can
resume from the last entry id it saw (``XREAD`` from ``Last-Event-ID``).  Each stream is
capped (``MAXLEN ~``), so an idle dashboard never makes Redis grow without bound.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import redis

from ground.metrics import HEALTH, LIVE_UPDATES

log = logging.getLogger(__name__)

LIVE_STREAM_PREFIX = "metricx:live:"


def live_stream_key(workspace_id: str) -> str:
    return f"{LIVE_STREAM_PREFIX}{workspace_id}"


class LivePublisher:
    """Publishes after each commit; while Redis is away it retries with backoff instead of
    on every commit (a hung Redis would otherwise cost every commit its socket timeout),
    and remembers which workspaces lost updates: when Redis answers again each of them
    first gets a ``gap`` entry, which the server turns into a ``reset`` event (the page
    reloads its totals from the tables, the truth)."""

    def __init__(self, url: str, *, maxlen: int = 10_000, retry_max_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._maxlen = maxlen
        self._clock = clock
        self._retry_max_s = retry_max_s
        self._delay = 0.0
        self._retry_at = 0.0
        self._gaps: set[str] = set()  # workspaces whose updates were lost (bounded by the workspaces)
        self.failed = 0

    def publish(self, messages: Mapping[str, Mapping[str, Any]]) -> None:
        """XADD one entry per workspace.  Failures are logged and counted, not raised:
        the database already holds the truth, and a dashboard re-reads it on reconnect;
        stalling ingestion because Redis is away would be the worse failure."""
        if not messages and not self._gaps:
            return
        now = self._clock()
        if now < self._retry_at:
            self._gaps.update(messages)
            if messages:
                LIVE_UPDATES.labels("skipped").inc(len(messages))
            return
        try:
            pipe = self._redis.pipeline(transaction=False)
            stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            for ws in sorted(self._gaps):
                self._xadd(pipe, ws, {"schema": "metricx.live.v1", "workspace_id": ws, "committed_at": stamp,
                                      "changes": [], "gap": True})
            for ws, msg in messages.items():
                self._xadd(pipe, ws, msg)
            pipe.execute()
        except redis.RedisError as exc:
            self.failed += len(messages)
            self._gaps.update(messages)
            self._delay = min(self._retry_max_s, max(0.5, self._delay * 2))
            self._retry_at = now + self._delay
            if messages:
                LIVE_UPDATES.labels("failed").inc(len(messages))
            HEALTH.down("redis", str(exc))
            log.error(
                "live update not published",
                extra={"error": str(exc), "workspaces": len(messages), "failed_total": self.failed,
                       "retry_in_s": self._delay},
            )
            return
        if self._gaps:
            log.info("live streams told to reload after lost updates", extra={"workspaces": len(self._gaps)})
            self._gaps.clear()
        self._delay = 0.0
        if messages:
            LIVE_UPDATES.labels("published").inc(len(messages))
        HEALTH.up("redis")

    def retry_gaps(self) -> None:
        """Between commits (an idle flow): once Redis may be back, tell the dashboards that
        lost updates to reload now rather than at their workspace's next commit."""
        if self._gaps and self._clock() >= self._retry_at:
            self.publish({})

    def _xadd(self, pipe: Any, ws: str, msg: Mapping[str, Any]) -> None:
        pipe.xadd(live_stream_key(ws), {"data": json.dumps(msg, separators=(",", ":"))},
                  maxlen=self._maxlen, approximate=True)

    def close(self) -> None:
        self._redis.close()


def check_reachable(url: str) -> None:
    try:
        client = redis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3)
        client.ping()
        client.close()
    except redis.RedisError as exc:
        raise ConnectionError(
            f"METRICX_REDIS_URL: Redis is not reachable ({exc}); "
            "start it with `make services-up` or fix the setting"
        ) from None

"""Per-workspace live updates on Redis Streams, published after each database commit.

Streams rather than plain pub/sub so that a dashboard server that reconnects can
resume from the last entry id it saw (``XREAD`` from ``Last-Event-ID``).  Each stream is
capped (``MAXLEN ~``), so an idle dashboard never makes Redis grow without bound.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import redis

log = logging.getLogger(__name__)

LIVE_STREAM_PREFIX = "metricx:live:"


def live_stream_key(workspace_id: str) -> str:
    return f"{LIVE_STREAM_PREFIX}{workspace_id}"


class LivePublisher:
    def __init__(self, url: str, *, maxlen: int = 10_000) -> None:
        self._redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._maxlen = maxlen
        self.failed = 0

    def publish(self, messages: Mapping[str, Mapping[str, Any]]) -> None:
        """XADD one entry per workspace.  Failures are logged and counted, not raised:
        the database already holds the truth, and a dashboard re-reads it on reconnect;
        stalling ingestion because Redis is away would be the worse failure."""
        if not messages:
            return
        try:
            pipe = self._redis.pipeline(transaction=False)
            for ws, msg in messages.items():
                pipe.xadd(
                    live_stream_key(ws),
                    {"data": json.dumps(msg, separators=(",", ":"))},
                    maxlen=self._maxlen,
                    approximate=True,
                )
            pipe.execute()
        except redis.RedisError as exc:
            self.failed += len(messages)
            log.error(
                "live update not published",
                extra={"error": str(exc), "workspaces": len(messages), "failed_total": self.failed},
            )

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

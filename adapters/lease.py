"""At most one sync per connection across poller processes: a Redis lease.

``SET key token NX PX ttl`` takes it; release and renewal are compare-and-act Lua
scripts, so a process whose lease expired (GC pause, network) can never delete or extend
the lease another process has taken since.
"""

from __future__ import annotations

import secrets
from types import TracebackType

import redis

_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"
_RENEW = ("if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) "
          "else return 0 end")


def lease_key(workspace_id: str, provider: str, account_id: str) -> str:
    return f"metricx:lease:{workspace_id}:{provider}:{account_id}"


class Lease:
    def __init__(self, client: redis.Redis, key: str, ttl_s: float = 900.0) -> None:
        self.client, self.key, self.ttl_ms = client, key, int(ttl_s * 1000)
        self.token = secrets.token_hex(16)
        self.held = False

    def acquire(self) -> bool:
        self.held = bool(self.client.set(self.key, self.token, nx=True, px=self.ttl_ms))
        return self.held

    def renew(self) -> bool:
        self.held = bool(self.client.eval(_RENEW, 1, self.key, self.token, self.ttl_ms))
        return self.held

    def release(self) -> None:
        if self.held:
            self.client.eval(_RELEASE, 1, self.key, self.token)
            self.held = False

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.release()

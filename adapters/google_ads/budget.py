"""The Google Ads daily operations budget shared by every poller process (Redis).

Quotas are per developer token per day, so an in-process counter
(:class:`adapters.google_ads.logic.OperationBudget`) undercounts as soon as two poller
processes run.  Here each operation is an atomic ``INCRBY`` on a per-day key (rolled back
when it would pass the limit), with per-customer counts in a hash for the status view.
The developer token is never part of a key: a SHA-256 prefix names it.
"""

from __future__ import annotations

import hashlib
from datetime import date

import redis

from ground.settings import BASIC_DAILY_OPERATIONS

_SPEND = """
local used = redis.call('INCRBY', KEYS[1], ARGV[1])
if used > tonumber(ARGV[2]) then
  redis.call('DECRBY', KEYS[1], ARGV[1])
  return 0
end
redis.call('EXPIRE', KEYS[1], 172800)
redis.call('HINCRBY', KEYS[2], ARGV[3], ARGV[1])
redis.call('EXPIRE', KEYS[2], 172800)
return 1
"""


class RedisOperationBudget:
    def __init__(self, client: redis.Redis, developer_token: str, daily_limit: int = BASIC_DAILY_OPERATIONS) -> None:
        self.client = client
        self.daily_limit = daily_limit
        self._tag = hashlib.sha256(developer_token.encode()).hexdigest()[:16]

    def _keys(self, day: date) -> tuple[str, str]:
        base = f"metricx:gads:ops:{self._tag}:{day.isoformat()}"
        return base, base + ":customers"

    def try_spend(self, today: date, customer_id: str, n: int = 1) -> bool:
        total, per = self._keys(today)
        return bool(self.client.eval(_SPEND, 2, total, per, n, self.daily_limit, customer_id))

    def used(self, today: date) -> int:
        v = self.client.get(self._keys(today)[0])
        return int(v) if v is not None else 0

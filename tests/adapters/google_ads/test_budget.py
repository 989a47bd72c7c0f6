"""The shared daily operations budget on the real Redis: two pollers, one quota."""

from __future__ import annotations

import uuid
from datetime import date

import redis

from adapters.google_ads.budget import RedisOperationBudget
from ground.settings import Settings
from tests.integration.conftest import services  # noqa: F401  (fixture)


def test_two_processes_share_one_daily_limit(services: Settings) -> None:  # noqa: F811
    token = f"devtok-{uuid.uuid4()}"
    r = redis.Redis.from_url(services.redis.url)
    a, b = RedisOperationBudget(r, token, daily_limit=5), RedisOperationBudget(r, token, daily_limit=5)
    day, next_day = date(2026, 11, 25), date(2026, 11, 26)
    results = [a.try_spend(day, "111"), b.try_spend(day, "222"), a.try_spend(day, "111", 2), b.try_spend(day, "222", 2),
               b.try_spend(day, "222"), a.try_spend(day, "111")]
    assert results == [True, True, True, False, True, False]
    assert a.used(day) == 5 and b.used(day) == 5
    per = {k.decode(): int(v) for k, v in r.hgetall(a._keys(day)[1]).items()}  # type: ignore[union-attr]
    assert per == {"111": 3, "222": 2}
    assert a.try_spend(next_day, "111") and a.used(next_day) == 1  # a new day, a new quota
    assert token not in a._keys(day)[0]
    other = RedisOperationBudget(r, f"devtok-{uuid.uuid4()}", daily_limit=5)
    assert other.try_spend(day, "111")  # quotas are per developer token
    r.delete(*a._keys(day), *a._keys(next_day), *other._keys(day))

"""StreamGuard and MembershipCache on a hand-moved clock (no services, no waiting)."""

from __future__ import annotations

import asyncio
import threading
import uuid

from serving.stream_guard import MembershipCache, StreamGuard

WS = uuid.uuid4()


class Clock:
    def __init__(self, t: float = 1_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_guard_ends_at_expiry_and_waits_no_longer_than_a_recheck() -> None:
    clock = Clock()
    asked: list[float] = []

    async def member() -> bool:
        asked.append(clock.t)
        return True

    guard = StreamGuard(expires_at=1_100.0, recheck_s=30.0, still_member=member, clock=clock)

    async def run() -> None:
        assert guard.wait_s() == 30.0
        assert await guard.verdict() is None and asked == []  # not due yet
        clock.t = 1_031.0
        assert await guard.verdict() is None and asked == [1_031.0]
        clock.t = 1_090.0
        assert guard.wait_s() == 0.0  # the re-check (due at 1,061) is overdue
        assert await guard.verdict() is None and asked == [1_031.0, 1_090.0]
        assert guard.wait_s() == 10.0  # the expiry comes before the next re-check
        clock.t = 1_100.0
        ending = await guard.verdict()
        assert ending is not None and ending.event == "expired"
        assert asked == [1_031.0, 1_090.0]  # expiry needs no query

    asyncio.run(run())


def test_guard_ends_when_the_membership_is_gone() -> None:
    clock = Clock()
    answers = [True, False]

    async def member() -> bool:
        return answers.pop(0)

    guard = StreamGuard(expires_at=10_000.0, recheck_s=5.0, still_member=member, clock=clock)

    async def run() -> None:
        clock.t += 5
        assert await guard.verdict() is None
        clock.t += 5
        ending = await guard.verdict()
        assert ending is not None and ending.event == "revoked" and "member" in ending.reason

    asyncio.run(run())


def test_membership_cache_asks_once_per_interval_per_user_and_workspace() -> None:
    clock = Clock()
    release = threading.Event()
    calls: list[tuple[str, uuid.UUID]] = []
    members = {("ana", WS)}

    def check(sub: str, ws: uuid.UUID) -> bool:
        calls.append((sub, ws))
        release.wait(10)
        return (sub, ws) in members

    cache = MembershipCache(check, ttl_s=30.0, clock=clock)

    async def run() -> None:
        many = [asyncio.ensure_future(cache.is_member("ana", WS)) for _ in range(50)]
        other = asyncio.ensure_future(cache.is_member("bo", WS))
        await asyncio.sleep(0)  # let every lookup register before the query answers
        release.set()
        assert await asyncio.gather(*many) == [True] * 50
        assert await other is False
        assert sorted(calls) == [("ana", WS), ("bo", WS)]  # one query per pair
        clock.t += 29
        members.clear()
        assert await cache.is_member("ana", WS) is True  # still the remembered answer
        clock.t += 1
        assert await cache.is_member("ana", WS) is False
        assert len(calls) == 3

    asyncio.run(run())


def test_a_failed_check_keeps_the_stream_and_is_asked_again() -> None:
    clock = Clock()
    calls = 0

    def check(sub: str, ws: uuid.UUID) -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("database down")
        return False

    cache = MembershipCache(check, ttl_s=30.0, clock=clock)

    async def run() -> None:
        assert await cache.is_member("ana", WS) is True
        assert await cache.is_member("ana", WS) is False  # not remembered: asked again
        assert calls == 2

    asyncio.run(run())

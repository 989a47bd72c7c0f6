"""The simulated poller publishes through ``adapters.kafka.Producer``: valid messages,
one flush per live poll, failures surfaced, exact counts in bulk mode."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from adapters.kafka import DeliveryError, DeliveryStats, Headers, OnDelivery, Producer, encode_snapshot
from domain.sim.generator import bulk_stream, expected_totals
from domain.sim.world import World, build_world
from pollers.sim import run_bulk, run_live
from schemas.insight import RAW_TOPIC, Snapshot, parse_insight

T0 = datetime(2024, 7, 1, 9, 30, tzinfo=UTC)


class FakeProducer(Producer):
    """Records what would go to Kafka; no broker involved."""

    def __init__(self, fail_on_flush: int | None = None) -> None:  # no super(): no librdkafka
        self.stats = DeliveryStats()
        self.sent: list[tuple[str, bytes, bytes | str | None]] = []
        self.flush_marks: list[int] = []
        self.fail_on_flush = fail_on_flush

    def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | str | None = None,
        headers: Headers | None = None,
        on_delivery: OnDelivery | None = None,
    ) -> None:
        self.sent.append((topic, value, key))

    def flush(self, timeout: float = 60.0) -> DeliveryStats:
        self.flush_marks.append(len(self.sent))
        if self.fail_on_flush is not None and len(self.flush_marks) >= self.fail_on_flush:
            raise DeliveryError("1 messages failed delivery: broker said no")
        self.stats.delivered = len(self.sent)
        return self.stats

    def pending(self) -> int:
        return 0


def ticking_clock(start: datetime, step: timedelta) -> tuple[list[datetime], Iterator[datetime]]:
    seen: list[datetime] = []

    def ticks() -> Iterator[datetime]:
        t = start
        while True:
            seen.append(t)
            yield t
            t += step

    return seen, ticks()


def parsed(producer: FakeProducer) -> list[Snapshot]:
    out = []
    for topic, value, key in producer.sent:
        assert topic == RAW_TOPIC
        assert isinstance(key, bytes)
        out.append(parse_insight(value, key))
    return out


@pytest.fixture(scope="module")
def world() -> World:
    return build_world(3)


def test_run_live_publishes_every_ad_each_poll_and_flushes_each_poll(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    seen, ticks = ticking_clock(T0, timedelta(seconds=5))
    producer = FakeProducer()
    with caplog.at_level(logging.INFO, logger="pollers.sim"):
        total = run_live(
            producer,
            world,
            interval_s=0,
            seed=1,
            clock=lambda: next(ticks),
            max_polls=3,
            speedup=60,
        )
    assert total == len(producer.sent)
    assert len(producer.flush_marks) == 3 and producer.flush_marks[-1] == total
    snaps = parsed(producer)
    for s in snaps:
        assert parse_insight(encode_snapshot(s)[1], encode_snapshot(s)[0], now=seen[-1]) == s  # nothing from the future
    polls = [r for r in caplog.records if getattr(r, "event", None) == "sim_poll"]
    assert len(polls) == 3
    assert [r.snapshots for r in polls] == [  # type: ignore[attr-defined]
        b - a for a, b in zip([0, *producer.flush_marks], producer.flush_marks, strict=False)
    ]
    assert all(r.duration_ms >= 0 for r in polls)  # type: ignore[attr-defined]


def today_spend(snaps: list[Snapshot]) -> list[Decimal]:
    """Total spend of each poll's "today" snapshots, in poll order."""
    by_poll: dict[datetime, Decimal] = {}
    for s in snaps:
        if s.report_date == s.captured_at.astimezone(ZoneInfo(s.timezone)).date():
            by_poll[s.captured_at] = by_poll.get(s.captured_at, Decimal(0)) + s.metrics.spend
    return [by_poll[t] for t in sorted(by_poll)]


@pytest.mark.parametrize("speedup", [1.0, 60.0])
def test_run_live_moves_visibly_between_polls_seconds_apart(world: World, speedup: float) -> None:
    _, ticks = ticking_clock(datetime(2024, 7, 1, 18, 0, tzinfo=UTC), timedelta(seconds=5))
    producer = FakeProducer()
    run_live(
        producer,
        world,
        interval_s=0,
        seed=1,
        clock=lambda: next(ticks),
        max_polls=3,
        speedup=speedup,
        restatement_rate=0,
        duplicate_rate=0,
        out_of_order_rate=0,
    )
    snaps = parsed(producer)
    assert len(snaps) == 3 * len(world.ads)  # every ad, every poll
    spend = today_spend(snaps)
    assert len(spend) == 3
    assert spend[0] < spend[1] < spend[2]


def test_run_live_keeps_captured_at_increasing_when_the_clock_stalls(world: World) -> None:
    producer = FakeProducer()
    run_live(producer, world, interval_s=0, seed=1, clock=lambda: T0, max_polls=3)
    instants = sorted({s.captured_at for s in parsed(producer)})
    assert instants == [T0, T0 + timedelta(milliseconds=1), T0 + timedelta(milliseconds=2)]


class SignalledDuringTheWait(threading.Event):
    """A stop flag that a signal sets while the poller waits for its next poll: the wait
    returns at once, set (as ``threading.Event.wait`` does when another thread sets it)."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        self.set()
        return True


def test_run_live_stops_on_the_event(world: World) -> None:
    """Between polls the loop waits on the stop flag itself (never a sleep), so a stop
    during the 30 s wait ends it after the poll in hand."""
    stop = SignalledDuringTheWait()
    _, ticks = ticking_clock(T0, timedelta(seconds=1))
    producer = FakeProducer()
    run_live(producer, world, interval_s=30, seed=1, clock=lambda: next(ticks), stop=stop)
    assert len(stop.waits) == 1 and 0 < (stop.waits[0] or 0) <= 30  # it waited for the next poll on the flag
    assert len(producer.flush_marks) == 1


def test_run_live_raises_on_delivery_failure(world: World) -> None:
    _, ticks = ticking_clock(T0, timedelta(seconds=5))
    producer = FakeProducer(fail_on_flush=2)
    with pytest.raises(DeliveryError):
        run_live(producer, world, interval_s=0, seed=1, clock=lambda: next(ticks), max_polls=5)
    assert len(producer.flush_marks) == 2


def test_run_bulk_publishes_exactly_n_past_snapshots(world: World) -> None:
    end = datetime(2024, 3, 10, 12, 0, tzinfo=UTC)
    for n in (0, 1, 107, 108, 1000, 2500):
        producer = FakeProducer()
        assert run_bulk(producer, world, snapshots=n, seed=4, end_utc=end) == n
        assert len(producer.sent) == n
        assert producer.flush_marks == [n]
        snaps = parsed(producer)
        assert all(s.captured_at <= end for s in snaps)
        assert snaps == list(bulk_stream(world, snapshots=n, seed=4, end_utc=end))
    # The poll schedule ends at end_utc; extra messages (finals, restatements) can use up
    # the quota before the last poll is complete, never after end_utc.
    assert end - timedelta(minutes=30) < max(s.captured_at for s in snaps) <= end
    assert expected_totals(snaps) == expected_totals(
        bulk_stream(world, snapshots=2500, seed=4, end_utc=end)
    )


def test_run_bulk_refuses_a_future_end(world: World) -> None:
    with pytest.raises(ValueError):
        run_bulk(
            FakeProducer(),
            world,
            snapshots=10,
            seed=1,
            end_utc=datetime.now(UTC) + timedelta(hours=1),
        )


class VirtualClock:
    """Pacing time that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, pause: float) -> None:
        assert pause > 0, "run_bulk only sleeps when it is ahead of schedule"
        self.now += pause


def test_run_bulk_paces_to_the_requested_rate(world: World) -> None:
    clock = VirtualClock()
    sent_at: list[float] = []

    class Timed(FakeProducer):
        def send(self, topic: str, value: bytes, key: bytes | str | None = None,
                 headers: Headers | None = None, on_delivery: OnDelivery | None = None) -> None:
            sent_at.append(clock.now)
            super().send(topic, value, key, headers, on_delivery)

    rate = 2000.0
    n = run_bulk(Timed(), world, snapshots=400, seed=1, end_utc=T0, rate=rate,
                 monotonic=clock.monotonic, sleep=clock.sleep)
    assert n == len(sent_at) == 400
    # Never ahead of the schedule: the i-th message waits for the end of the last
    # whole batch before it (batches of rate/200 = 10 messages)...
    for i, t in enumerate(sent_at):
        assert t - 100.0 >= (i // 10) * 10 / rate - 1e-9
    # ...and never behind it: the whole run took exactly n / rate of pacing time.
    assert abs((clock.now - 100.0) - n / rate) < 1e-9

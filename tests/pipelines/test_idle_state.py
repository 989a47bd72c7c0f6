"""Idle keys lose their state (``pipelines.idle_state``): the logic on its own with a
hand-driven clock, real Bytewax runs on a clock the source moves (an idle key starts
over while a busy one keeps counting), and a recovery store written by
``op.stateful_map`` resuming in it."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import DynamicSource, StatelessSourcePartition
from bytewax.operators import StatefulLogic
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main

from pipelines.flow import WATCH_IDLE_TTL, series_idle_ttl
from pipelines.idle_state import IdleExpiringLogic, idle_expiring_map
from schemas.rules import MAX_DAYS


class Clock:
    def __init__(self) -> None:
        self.t = datetime(2026, 11, 26, 12, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.t


def count(state: int | None, _: str) -> tuple[int | None, Iterable[int]]:
    n = (state or 0) + 1
    return n, (n,)


def test_the_logic_keeps_state_while_items_come_and_drops_it_after_the_idle_time() -> None:
    clock, ttl = Clock(), timedelta(hours=1)
    logic: IdleExpiringLogic[str, int, int] = IdleExpiringLogic(count, ttl, clock, None, clock())
    assert logic.notify_at() == clock.t + ttl
    clock.t += timedelta(minutes=50)
    assert logic.on_item("x") == ((1,), StatefulLogic.RETAIN)
    assert logic.notify_at() == clock.t + ttl  # an item moves the deadline on
    clock.t += timedelta(minutes=59)
    assert logic.on_notify() == ((), StatefulLogic.RETAIN)  # a notification that raced the item
    assert logic.on_item("x") == ((2,), StatefulLogic.RETAIN)
    assert logic.snapshot() == 2
    clock.t += ttl
    assert logic.on_notify() == ((), StatefulLogic.DISCARD)


def test_the_mapper_can_still_drop_state_itself() -> None:
    clock = Clock()
    logic: IdleExpiringLogic[str, int, int] = IdleExpiringLogic(lambda s, v: (None, (0,)), timedelta(hours=1),
                                                                clock, 5, clock())
    assert logic.on_item("x") == ((0,), StatefulLogic.DISCARD)


def test_resumed_state_gets_a_full_idle_time_from_the_restart() -> None:
    clock = Clock()
    logic: IdleExpiringLogic[str, int, int] = IdleExpiringLogic(count, timedelta(days=3), clock, 41, clock())
    assert logic.notify_at() == clock.t + timedelta(days=3)
    assert logic.on_item("x") == ((42,), StatefulLogic.RETAIN)


def test_ttls_outlast_what_the_state_serves() -> None:
    # A series must outlive the restatement window, a watch its longest window.
    assert series_idle_ttl(35) > timedelta(days=35)
    assert timedelta(days=MAX_DAYS) < WATCH_IDLE_TTL


class _Ticking(StatelessSourcePartition[Any]):
    """Emits its items one per batch; a float moves ``clock`` on by that many seconds
    (no real pause: the idle time is measured on the clock the flow is given)."""

    def __init__(self, items: list[Any], clock: Clock) -> None:
        self._items, self._clock = list(items), clock

    def next_batch(self) -> list[Any]:
        while self._items and isinstance(self._items[0], float):
            self._clock.t += timedelta(seconds=self._items.pop(0))
        if not self._items:
            raise StopIteration
        return [self._items.pop(0)]


class Ticking(DynamicSource[Any]):
    def __init__(self, items: list[Any], clock: Clock) -> None:
        self._items, self._clock = items, clock

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Ticking:
        return _Ticking(self._items, self._clock)


def idle_run(ttl: timedelta) -> list[tuple[str, int]]:
    """Key ``a`` goes quiet for 1.2 s of the flow's clock, ``b`` keeps arriving every
    0.1 s.  The clock starts in the past, so Bytewax's timers are always due: whether a
    key is forgotten is decided by the idle time on the flow's clock alone, never by how
    fast this machine runs the flow."""
    clock = Clock()
    items: list[Any] = ["a", "b"]
    for _ in range(12):  # 1.2 s of b alone
        items += [0.1, "b"]
    items += ["a"]
    out: list[tuple[str, int]] = []
    flow = Dataflow("idle")
    keyed = op.key_on("key", op.input("in", flow, Ticking(items, clock)), lambda x: x)
    counted = idle_expiring_map("count", keyed, lambda s, _: ((s or 0) + 1, (s or 0) + 1), ttl, now=clock)
    op.output("out", counted, TestingSink(out))
    run_main(flow)  # type: ignore[no-untyped-call]
    return out


def test_an_idle_key_starts_over_while_a_busy_one_keeps_counting() -> None:
    """Real Bytewax timers: ``a`` counts from 1 again, ``b`` never does."""
    out = idle_run(timedelta(seconds=0.6))
    assert [n for k, n in out if k == "a"] == [1, 1]  # forgotten while idle
    assert [n for k, n in out if k == "b"] == list(range(1, 14))  # never idle that long


def test_a_key_idle_for_less_than_the_idle_time_keeps_counting() -> None:
    """The control: the same run with a longer idle time forgets nothing."""
    out = idle_run(timedelta(seconds=1.5))
    assert [n for k, n in out if k == "a"] == [1, 2]
    assert [n for k, n in out if k == "b"] == list(range(1, 14))


def _running_count(step: str, items: list[str], out: list[tuple[str, int]], new: bool) -> Dataflow:
    flow = Dataflow("resume")
    keyed = op.key_on("key", op.input("in", flow, TestingSource(items)), lambda x: x)

    def mapper(s: int | None, _: str) -> tuple[int, int]:
        return (s or 0) + 1, (s or 0) + 1

    if new:
        counted = idle_expiring_map(step, keyed, mapper, timedelta(days=1))
    else:
        counted = op.stateful_map(step, keyed, mapper)
    op.output("out", counted, TestingSink(out))
    return flow


def test_a_recovery_store_written_by_stateful_map_resumes_here(tmp_path: Path) -> None:
    """Same step ids as Bytewax's ``stateful_map``: upgrading keeps every key's state."""
    init_db_dir(tmp_path, 1)  # type: ignore[no-untyped-call]
    recovery = RecoveryConfig(str(tmp_path))  # type: ignore[no-untyped-call]
    first: list[tuple[str, int]] = []
    run_main(_running_count("series", ["a", "a", "b"], first, new=False), epoch_interval=timedelta(0),
             recovery_config=recovery)  # type: ignore[no-untyped-call]
    assert sorted(first) == [("a", 1), ("a", 2), ("b", 1)]
    # The source resumes after the three items it already gave; the counts go on.
    second: list[tuple[str, int]] = []
    run_main(_running_count("series", ["a", "a", "b", "a", "b"], second, new=True), epoch_interval=timedelta(0),
             recovery_config=recovery)  # type: ignore[no-untyped-call]
    assert sorted(second) == [("a", 3), ("b", 2)]

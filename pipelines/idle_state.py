"""Bytewax stateful steps whose per-key state is dropped after a long idle time.

Why: ``op.stateful_map`` keeps a key's state until the mapper returns ``None``, and the
mapper only runs when an item arrives — so an ad that stopped delivering (ended,
deleted, its account disconnected) kept its series state, and a campaign its stop-loss
watch, for ever.  Merchants create ads all the time; over months the state, each
epoch's snapshot and the resume time would grow without bound.

The idle time is *processing* time (no item for this key for ``ttl`` on this worker's
clock), never event time: a replay or backfill of old snapshots keeps its state while
it runs.  It is not snapshotted, so a restart gives every key a fresh ``ttl`` (a resume
never evicts at once what it just restored).

When dropping is safe is the caller's business (see :mod:`pipelines.flow`): a series
state may go only once no snapshot could need it, i.e. after the restatement window.

The operators mirror Bytewax's own ``stateful_map`` / ``stateful_flat_map`` step ids
(``<id>.stateful_flat_map.stateful`` and ``<id>.stateful``), so a recovery store written
by a flow built with those resumes here unchanged.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

import bytewax.operators as op
from bytewax.dataflow import operator
from bytewax.operators import KeyedStream, StatefulLogic

V = TypeVar("V")
W = TypeVar("W")
S = TypeVar("S")

Now = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(eq=False)
class IdleExpiringLogic(StatefulLogic[V, W, S], Generic[V, W, S]):
    """One key's state; discarded when the mapper says so (``None``) or after ``ttl``
    without an item."""

    mapper: Callable[[S | None, V], tuple[S | None, Iterable[W]]]
    ttl: timedelta
    now: Now
    state: S | None
    last_item_at: datetime

    def on_item(self, value: V) -> tuple[Iterable[W], bool]:
        s, ws = self.mapper(self.state, value)
        self.last_item_at = self.now()
        if s is None:
            return ws, StatefulLogic.DISCARD
        self.state = s
        return ws, StatefulLogic.RETAIN

    def on_notify(self) -> tuple[Iterable[W], bool]:
        # Bytewax only notifies at (or after) notify_at, and an item moves notify_at on;
        # the check keeps a notification that raced an item from dropping live state.
        if self.now() - self.last_item_at >= self.ttl:
            return (), StatefulLogic.DISCARD
        return (), StatefulLogic.RETAIN

    def notify_at(self) -> datetime:
        return self.last_item_at + self.ttl

    def snapshot(self) -> S:
        assert self.state is not None
        return copy.deepcopy(self.state)


@operator
def idle_expiring_flat_map(
    step_id: str,
    up: KeyedStream[V],
    mapper: Callable[[S | None, V], tuple[S | None, Iterable[W]]],
    ttl: timedelta,
    now: Now = utc_now,
) -> KeyedStream[W]:
    """``op.stateful_flat_map``, plus: a key idle for ``ttl`` loses its state."""

    def builder(resume_state: S | None) -> IdleExpiringLogic[V, W, S]:
        return IdleExpiringLogic(mapper, ttl, now, resume_state, now())

    return op.stateful("stateful", up, builder)


@operator
def idle_expiring_map(
    step_id: str,
    up: KeyedStream[V],
    mapper: Callable[[S | None, V], tuple[S | None, W]],
    ttl: timedelta,
    now: Now = utc_now,
) -> KeyedStream[W]:
    """``op.stateful_map``, plus: a key idle for ``ttl`` loses its state."""

    def one(state: S | None, value: V) -> tuple[S | None, Iterable[W]]:
        s, w = mapper(state, value)
        return s, (w,)

    return idle_expiring_flat_map("stateful_flat_map", up, one, ttl, now)

"""Deterministic snapshot generation for the simulated platform.

The platform reports, like Meta and Google do, *cumulative* values per ad for an
account-local report date.  This module produces that feed, including what makes real
feeds hard: local-midnight rollover (with a final full-day snapshot of yesterday, DST
days of 23/25 hours, +5:45 zones), restatements of past days that move values up *and*
down, duplicate deliveries and late (out-of-order) deliveries.

Design choices, and why:

* Pure functions of their inputs.  Time is a parameter (never the wall clock) and all
  randomness comes from ``random.Random`` instances seeded by the caller, so a seed
  reproduces a stream bit for bit (the intraday curve itself is in ``curve``).
* Values are integers (cents, counts) inside; ``Decimal`` and JSON appear only at the
  edge.  The intraday curve is strictly increasing and every derived value is a floor of
  a monotone function of it, so cumulative values can never go backwards within a day.
* The hot path yields plain tuples; :func:`poll_stream_encoded` formats the Kafka value
  with one f-string per message and is byte-identical to
  ``adapters.kafka.encode_snapshot`` of the corresponding :class:`Snapshot` (tested).
"""

from __future__ import annotations

import json
import math
import random
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from itertools import islice
from typing import NamedTuple

from domain.sim.curve import (
    DayParams,
    Vals,
    cumulative,
    day_bounds,
    day_params,
    local_day,
    to_metrics,
    utc_ms,
    values_at,
)
from domain.sim.world import Ad, World
from schemas.insight import INSIGHT_SCHEMA, Snapshot, insight_key, zone
from schemas.metrics import Metrics

__all__ = [
    "DEFAULT_DUPLICATE_RATE",
    "DEFAULT_INTERVAL",
    "DEFAULT_OUT_OF_ORDER_RATE",
    "DEFAULT_RESTATEMENT_RATE",
    "SeriesKey",
    "SimEvent",
    "Simulation",
    "bulk_stream",
    "bulk_stream_encoded",
    "cumulative",
    "expected_totals",
    "local_day",
    "poll_events",
    "poll_stream",
    "poll_stream_encoded",
    "utc_ms",
]

# (kind, ad index, report date, captured_at, captured_at as wire text, values)
Item = tuple[int, int, date, datetime, str, Vals]
SeriesKey = tuple[str, str, str, str, date]

TODAY, FINAL, RESTATEMENT = 0, 1, 2
ON_TIME, LATE, DUPLICATE = 0, 1, 2
KIND_NAMES = ("today", "final", "restatement")
DELIVERY_NAMES = ("on_time", "late", "duplicate")

DEFAULT_INTERVAL = timedelta(minutes=15)
DEFAULT_RESTATEMENT_RATE = 0.002
DEFAULT_DUPLICATE_RATE = 0.001
DEFAULT_OUT_OF_ORDER_RATE = 0.001
RESTATEMENT_WINDOW_DAYS = 28  # Meta's restatement window

_ONE_MS = timedelta(milliseconds=1)
_CENTS = tuple(f"{n:02d}" for n in range(100))  # faster than a :02d format spec
_NEVER = sys.maxsize


class SimEvent(NamedTuple):
    """A delivered snapshot with how it came to be (for tests and debugging).

    ``kind``: ``today`` (the hot poll), ``final`` (yesterday's full day, captured just
    after local midnight) or ``restatement`` (a changed past day).  ``delivery``:
    ``on_time``, ``late`` (arrived after a newer snapshot of its series) or
    ``duplicate`` (an identical re-delivery).
    """

    kind: str
    delivery: str
    snapshot: Snapshot


def _wire_time(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class _Wire:
    """Per-ad constant parts of the JSON value, in ``Snapshot.to_event`` field order."""

    key: bytes
    head: str  # ... "adset_id":..., "report_date":"
    mid: str  # ","timezone":...,"captured_at":"


def _wire(ad: Ad) -> _Wire:
    head = json.dumps(
        {
            "schema": INSIGHT_SCHEMA,
            "workspace_id": ad.workspace_id,
            "provider": ad.provider,
            "account_id": ad.account_id,
            "entity_level": "ad",
            "entity_id": ad.id,
            "campaign_id": ad.campaign_id,
            "adset_id": ad.adset_id,
            "report_date": "",
        },
        separators=(",", ":"),
    )[:-2]
    mid = json.dumps(
        {"timezone": ad.timezone, "currency": ad.currency, "captured_at": ""}, separators=(",", ":")
    )[1:-2]
    return _Wire(insight_key(ad.provider, ad.account_id, ad.id).encode(), head, '",' + mid)


class Simulation:
    """The platform as a poller sees it: call a ``poll_*`` method with increasing instants.

    State carried between polls: each ad's current local day (to detect the midnight
    rollover and emit yesterday's final), the last restated values per past series (so
    a restatement is relative to what was last reported), and the held-back / duplicate
    delivery queues.  Restatements and delivery faults draw from two separate random
    streams, so changing one rate does not reshuffle the other.  Random events are drawn
    as geometric gaps (how many trials until the next event) rather than one
    ``random()`` per message: the same Bernoulli process, a fraction of the cost.
    """

    def __init__(
        self,
        world: World,
        *,
        seed: int,
        restatement_rate: float = DEFAULT_RESTATEMENT_RATE,
        duplicate_rate: float = DEFAULT_DUPLICATE_RATE,
        out_of_order_rate: float = DEFAULT_OUT_OF_ORDER_RATE,
        speedup: float = 1.0,
    ) -> None:
        for name, rate in (
            ("restatement_rate", restatement_rate),
            ("duplicate_rate", duplicate_rate),
            ("out_of_order_rate", out_of_order_rate),
        ):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {rate}")
        if not speedup > 0.0:
            raise ValueError("speedup must be > 0")
        self.world = world
        self.seed = seed
        self.ads = world.ads
        self.restatement_rate = restatement_rate
        self.duplicate_rate = duplicate_rate
        self.out_of_order_rate = out_of_order_rate
        self.speedup = speedup
        self._tz_names = sorted({a.timezone for a in self.ads})
        tz_index = {name: i for i, name in enumerate(self._tz_names)}
        self._ad_tz = [tz_index[a.timezone] for a in self.ads]
        self._day: list[DayParams | None] = [None] * len(self.ads)
        self._day_date: list[date | None] = [None] * len(self.ads)
        self._restated: dict[tuple[int, date], Vals] = {}
        self._restate_rng = random.Random(f"metricx.sim.restatements/{seed}")
        self._fault_rng = random.Random(f"metricx.sim.delivery/{seed}")
        self._restate_gap = _gap(self._restate_rng, restatement_rate)
        self._dup_gap = _gap(self._fault_rng, duplicate_rate)
        self._ooo_gap = _gap(self._fault_rng, out_of_order_rate)
        self._held: dict[int, Item] = {}  # ad index -> today's snapshot held back
        self._dups: list[tuple[int, Item]] = []  # (due position in this poll, item)
        self._last_t: datetime | None = None
        self._pruned_on = date.min
        self._wires: tuple[list[bytes], list[str], list[str]] | None = None

    # -- the true sequence -------------------------------------------------------------

    def _true_items(self, t: datetime) -> list[Item]:
        cap = _wire_time(t)
        ts = t.timestamp()
        speedup = self.speedup
        local: list[tuple[date, float]] = []
        for tz in self._tz_names:
            d = t.astimezone(zone(tz)).date()
            start, length = day_bounds(tz, d)
            local.append((d, (ts - start) / length * speedup))
        items: list[Item] = []
        append = items.append
        ad_tz, days, day_dates = self._ad_tz, self._day, self._day_date
        restate = self.restatement_rate > 0.0
        gap = self._restate_gap
        for i, tzi in enumerate(ad_tz):
            d, x = local[tzi]
            day = days[i]
            if day is None or day_dates[i] != d:
                closed = self._roll_over(append, i, d, t, cap)
                day = days[i]
                assert day is not None
            else:
                closed = None
            append((TODAY, i, d, t, cap, values_at(day, x)))
            if restate:
                gap -= 1
                if gap < 0:
                    gap = _gap(self._restate_rng, self.restatement_rate)
                    self._restate(append, i, d, t, cap, closed)
        self._restate_gap = gap
        return items

    def _roll_over(
        self, append: Callable[[Item], None], i: int, d: date, t: datetime, cap: str
    ) -> date | None:
        """Start ad ``i``'s new local day ``d``; return the day closed by a final, if any."""
        day, prev = self._day[i], self._day_date[i]
        self._day[i] = day_params(self.ads[i], self.seed, d)
        self._day_date[i] = d
        if day is None or prev is None:
            return None
        # Real platforms keep reporting yesterday: the first poll after local midnight
        # captures its full-day total.
        append((FINAL, i, prev, t, cap, values_at(day, self.speedup)))
        return prev

    def _restate(
        self,
        append: Callable[[Item], None],
        i: int,
        today: date,
        t: datetime,
        cap: str,
        closed: date | None,
    ) -> None:
        rng = self._restate_rng
        # Late conversions concentrate on recent days.
        back = 1 + int(RESTATEMENT_WINDOW_DAYS * rng.random() ** 2)
        target = today - timedelta(days=back)
        if target == closed:
            # Its final was captured at this same instant; a second value at the same
            # captured_at would make "latest" ambiguous.
            target -= timedelta(days=1)
        key = (i, target)
        ad = self.ads[i]
        base = self._restated.get(key)
        if base is None:
            # Never restated: what was last reported is the full-day final.
            base = values_at(day_params(ad, self.seed, target), self.speedup)
        new = _restated(base, float(ad.aov), rng)
        if new is None:
            return
        self._restated[key] = new
        append((RESTATEMENT, i, target, t, cap, new))

    def _prune(self, t: datetime) -> None:
        """Once per UTC day, forget restated values that fell out of the window (bounded
        memory for a live poller running for weeks)."""
        today = t.date()
        if today == self._pruned_on:
            return
        self._pruned_on = today
        horizon = today - timedelta(days=RESTATEMENT_WINDOW_DAYS + 3)
        self._restated = {k: v for k, v in self._restated.items() if k[1] >= horizon}

    # -- delivery faults ---------------------------------------------------------------

    def _deliver(self, items: list[Item]) -> tuple[list[Item], dict[int, int]]:
        """The delivered order: ``items`` with some held back until after the next
        snapshot of their series, and some delivered twice.  Returns the messages and
        ``{position: LATE | DUPLICATE}`` for the ones not delivered on time."""
        ooo, dup = self.out_of_order_rate, self.duplicate_rate
        if not (ooo or dup or self._held or self._dups):
            return items, {}
        rng = self._fault_rng
        out: list[Item] = []
        append = out.append
        labels: dict[int, int] = {}
        held = self._held
        dups = self._dups
        due = min((d for d, _ in dups), default=_NEVER)
        ooo_gap, dup_gap = self._ooo_gap, self._dup_gap
        for item in items:
            if ooo and item[0] == TODAY:
                ooo_gap -= 1
                if ooo_gap < 0:
                    ooo_gap = _gap(rng, ooo)
                    if item[1] not in held:
                        held[item[1]] = item
                        continue
            append(item)
            if dup:
                dup_gap -= 1
                if dup_gap < 0:
                    dup_gap = _gap(rng, dup)
                    # Re-delivered identically right after or a few messages later.
                    dups.append((len(out) + rng.randrange(4), item))
                    due = min(due, dups[-1][0])
            if held:
                late = held.get(item[1])
                if late is not None and late[2] == item[2]:
                    del held[item[1]]
                    labels[len(out)] = LATE
                    append(late)
            if due <= len(out):
                keep = []
                for d, it in dups:
                    if d <= len(out):
                        labels[len(out)] = DUPLICATE
                        append(it)
                    else:
                        keep.append((d, it))
                dups[:] = keep
                due = min((d for d, _ in dups), default=_NEVER)
        # Positions are per poll: what is still queued is due early in the next one.
        dups[:] = [(max(0, d - len(out)), it) for d, it in dups]
        self._ooo_gap, self._dup_gap = ooo_gap, dup_gap
        return out, labels

    def _poll(self, t: datetime) -> tuple[list[Item], dict[int, int]]:
        t = utc_ms(t)
        if self._last_t is not None and t <= self._last_t:
            raise ValueError(f"poll time {t.isoformat()} is not after {self._last_t.isoformat()}")
        self._last_t = t
        self._prune(t)
        return self._deliver(self._true_items(t))

    def _drain(self) -> tuple[list[Item], dict[int, int]]:
        """Release what is still held back or queued (end of a finite stream); held
        snapshots never got a newer one delivered before them, so they count as on time."""
        out = list(self._held.values())
        labels = {}
        for _, item in self._dups:
            labels[len(out)] = DUPLICATE
            out.append(item)
        self._held.clear()
        self._dups.clear()
        return out, labels

    # -- public ------------------------------------------------------------------------

    @property
    def last_poll(self) -> datetime | None:
        return self._last_t

    def poll_snapshots(self, t: datetime) -> list[Snapshot]:
        """Everything the platform delivers for one poll at instant ``t`` (aware; rounded
        down to the millisecond; must be later than the previous poll, because
        ``captured_at`` is strictly increasing per series)."""
        return [self.snapshot(it) for it in self._poll(t)[0]]

    def poll_events(self, t: datetime) -> list[SimEvent]:
        return self._events(*self._poll(t))

    def poll_encoded(self, t: datetime) -> list[tuple[bytes, bytes]]:
        return self._encode_all(self._poll(t)[0])

    def drain_snapshots(self) -> list[Snapshot]:
        return [self.snapshot(it) for it in self._drain()[0]]

    def drain_events(self) -> list[SimEvent]:
        return self._events(*self._drain())

    def drain_encoded(self) -> list[tuple[bytes, bytes]]:
        return self._encode_all(self._drain()[0])

    def _events(self, items: list[Item], labels: dict[int, int]) -> list[SimEvent]:
        return [
            SimEvent(KIND_NAMES[it[0]], DELIVERY_NAMES[labels.get(n, ON_TIME)], self.snapshot(it))
            for n, it in enumerate(items)
        ]

    def snapshot(self, item: Item) -> Snapshot:
        ad = self.ads[item[1]]
        return Snapshot(
            ad.workspace_id,
            ad.provider,
            ad.account_id,
            "ad",
            ad.id,
            ad.campaign_id,
            ad.adset_id,
            item[2],
            ad.timezone,
            ad.currency,
            item[3],
            to_metrics(item[5]),
        )

    def _encode_all(self, items: list[Item]) -> list[tuple[bytes, bytes]]:
        """(key, value) pairs byte-identical to ``encode_snapshot(self.snapshot(item))``.

        One f-string per message over precomputed per-ad JSON fragments; a list per poll
        rather than a generator, since a generator step per message costs as much as a
        third of the formatting itself.
        """
        if self._wires is None:
            wires = [_wire(a) for a in self.ads]
            self._wires = ([w.key for w in wires], [w.head for w in wires], [w.mid for w in wires])
        keys, heads, mids = self._wires
        iso = {d: d.isoformat() for d in {it[2] for it in items}}
        c = _CENTS
        return [
            (
                keys[i],
                (
                    f'{heads[i]}{iso[d]}{mids[i]}{cap}","spend":"{s // 100}.{c[s % 100]}",'
                    f'"impressions":{imps},"clicks":{clicks},'
                    f'"conversions":"{conv // 100}.{c[conv % 100]}",'
                    f'"revenue":"{rev // 100}.{c[rev % 100]}"}}'
                ).encode(),
            )
            for _, i, d, _, cap, (s, imps, clicks, conv, rev) in items
        ]


def _gap(rng: random.Random, p: float) -> int:
    """Trials before the next success of a Bernoulli(p) process (geometric draw)."""
    if p <= 0.0:
        return _NEVER
    if p >= 1.0:
        return 0
    return int(math.log(1.0 - rng.random()) / math.log1p(-p))


def _restated(base: Vals, aov: float, rng: random.Random) -> Vals | None:
    """A past day's values after a correction: conversions/revenue mostly up (late
    attribution), sometimes retracted; spend, clicks and impressions sometimes credited
    down a little (invalid activity).  ``None`` for a day with nothing to correct."""
    s, imps, clicks, conv, rev = base
    if not (s or imps or clicks or conv or rev):
        return None
    r = rng.random
    u = r()
    if u < 0.75:
        dconv = max(1, round(conv * 0.15 * r()))
    elif u < 0.9:
        dconv = -min(conv, max(1, round(conv * 0.05 * r())))
    else:
        dconv = 0
    conv2 = conv + dconv
    rev2 = max(0, rev + round(dconv * aov * (0.7 + 0.6 * r()))) if conv2 else 0
    u = r()
    s2 = s - int(s * 0.02 * r()) if u < 0.3 else (s + int(s * 0.01 * r()) if u < 0.35 else s)
    imps2 = imps - int(imps * 0.01 * r()) if r() < 0.15 else imps
    clicks2 = clicks - int(clicks * 0.03 * r()) if r() < 0.3 else clicks
    if imps2 and clicks2 > imps2:
        clicks2 = imps2
    new = (s2, imps2, clicks2, conv2, rev2)
    if new == base:
        new = (s2, imps2, clicks2, conv2 + 1, rev2 + max(1, round(aov)))
    return new


def _batches(
    sim: Simulation, start_utc: datetime, polls: int, interval: timedelta
) -> Iterator[tuple[list[Item], dict[int, int]]]:
    if interval <= timedelta(0) or interval % _ONE_MS:
        raise ValueError("interval must be a positive whole number of milliseconds")
    start = utc_ms(start_utc)
    for n in range(polls):
        yield sim._poll(start + n * interval)
    yield sim._drain()


def poll_events(
    world: World,
    start_utc: datetime,
    polls: int,
    interval: timedelta = DEFAULT_INTERVAL,
    *,
    seed: int,
    restatement_rate: float = DEFAULT_RESTATEMENT_RATE,
    duplicate_rate: float = DEFAULT_DUPLICATE_RATE,
    out_of_order_rate: float = DEFAULT_OUT_OF_ORDER_RATE,
    speedup: float = 1.0,
) -> Iterator[SimEvent]:
    """:func:`poll_stream` with each snapshot labelled by kind and delivery."""
    sim = Simulation(
        world,
        seed=seed,
        restatement_rate=restatement_rate,
        duplicate_rate=duplicate_rate,
        out_of_order_rate=out_of_order_rate,
        speedup=speedup,
    )
    for items, labels in _batches(sim, start_utc, polls, interval):
        yield from sim._events(items, labels)


def poll_stream(
    world: World,
    start_utc: datetime,
    polls: int,
    interval: timedelta = DEFAULT_INTERVAL,
    *,
    seed: int,
    restatement_rate: float = DEFAULT_RESTATEMENT_RATE,
    duplicate_rate: float = DEFAULT_DUPLICATE_RATE,
    out_of_order_rate: float = DEFAULT_OUT_OF_ORDER_RATE,
    speedup: float = 1.0,
) -> Iterator[Snapshot]:
    """Snapshots of ``polls`` polls of every ad at ``start_utc + k * interval``.

    Per poll and ad: today's cumulative (account-local today), after a local midnight
    also yesterday's final, and at ``restatement_rate`` a restated past day; delivery
    faults at ``duplicate_rate`` / ``out_of_order_rate`` per message.
    """
    sim = Simulation(
        world,
        seed=seed,
        restatement_rate=restatement_rate,
        duplicate_rate=duplicate_rate,
        out_of_order_rate=out_of_order_rate,
        speedup=speedup,
    )
    snapshot = sim.snapshot
    for items, _ in _batches(sim, start_utc, polls, interval):
        for item in items:
            yield snapshot(item)


def poll_stream_encoded(
    world: World,
    start_utc: datetime,
    polls: int,
    interval: timedelta = DEFAULT_INTERVAL,
    *,
    seed: int,
    restatement_rate: float = DEFAULT_RESTATEMENT_RATE,
    duplicate_rate: float = DEFAULT_DUPLICATE_RATE,
    out_of_order_rate: float = DEFAULT_OUT_OF_ORDER_RATE,
    speedup: float = 1.0,
) -> Iterator[tuple[bytes, bytes]]:
    """:func:`poll_stream` as Kafka ``(key, value)`` pairs, without building objects."""
    sim = Simulation(
        world,
        seed=seed,
        restatement_rate=restatement_rate,
        duplicate_rate=duplicate_rate,
        out_of_order_rate=out_of_order_rate,
        speedup=speedup,
    )
    for items, _ in _batches(sim, start_utc, polls, interval):
        yield from sim._encode_all(items)


def _bulk_polls(
    world: World, snapshots: int, end_utc: datetime, interval: timedelta
) -> tuple[datetime, int]:
    """(first poll instant, number of polls) for exactly ``snapshots`` messages ending at
    ``end_utc``: enough whole polls of every ad, the last one at ``end_utc``."""
    if snapshots < 0:
        raise ValueError("snapshots must be >= 0")
    polls = max(1, math.ceil(snapshots / max(1, len(world.ads))))
    return utc_ms(end_utc) - (polls - 1) * interval, polls


def bulk_stream(
    world: World,
    *,
    snapshots: int,
    seed: int,
    end_utc: datetime,
    interval: timedelta = DEFAULT_INTERVAL,
    restatement_rate: float = DEFAULT_RESTATEMENT_RATE,
    duplicate_rate: float = DEFAULT_DUPLICATE_RATE,
    out_of_order_rate: float = DEFAULT_OUT_OF_ORDER_RATE,
) -> Iterator[Snapshot]:
    """Exactly ``snapshots`` snapshots: the first ones of polls every ``interval`` whose
    schedule ends at ``end_utc``; what ``poller.run_bulk`` publishes, so a benchmark can
    compute its oracle from it.

    Enough polls are scheduled for one "today" snapshot per ad and poll; finals,
    restatements and duplicates come on top, so the quota may run out a little before
    the last poll completes.  Nothing is ever captured after ``end_utc``.
    """
    start, polls = _bulk_polls(world, snapshots, end_utc, interval)
    stream = poll_stream(
        world,
        start,
        polls,
        interval,
        seed=seed,
        restatement_rate=restatement_rate,
        duplicate_rate=duplicate_rate,
        out_of_order_rate=out_of_order_rate,
    )
    return islice(stream, snapshots)


def bulk_stream_encoded(
    world: World,
    *,
    snapshots: int,
    seed: int,
    end_utc: datetime,
    interval: timedelta = DEFAULT_INTERVAL,
    restatement_rate: float = DEFAULT_RESTATEMENT_RATE,
    duplicate_rate: float = DEFAULT_DUPLICATE_RATE,
    out_of_order_rate: float = DEFAULT_OUT_OF_ORDER_RATE,
) -> Iterator[tuple[bytes, bytes]]:
    """:func:`bulk_stream` as Kafka ``(key, value)`` pairs (the same messages)."""
    start, polls = _bulk_polls(world, snapshots, end_utc, interval)
    stream = poll_stream_encoded(
        world,
        start,
        polls,
        interval,
        seed=seed,
        restatement_rate=restatement_rate,
        duplicate_rate=duplicate_rate,
        out_of_order_rate=out_of_order_rate,
    )
    return islice(stream, snapshots)


def expected_totals(snapshots: Iterable[Snapshot]) -> dict[SeriesKey, Metrics]:
    """Test oracle: per series, the metrics of the snapshot with the greatest captured_at.

    That is what the platform finally reports for the series, whatever order (or how
    many times) the snapshots were delivered in.
    """
    latest: dict[SeriesKey, Snapshot] = {}
    for snap in snapshots:
        key = (snap.workspace_id, snap.provider, snap.account_id, snap.entity_id, snap.report_date)
        seen = latest.get(key)
        if seen is None or snap.captured_at > seen.captured_at:
            latest[key] = snap
    return {key: snap.metrics for key, snap in latest.items()}

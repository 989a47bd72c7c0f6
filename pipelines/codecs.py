"""How the flow's state is pickled into (and restored from) the Bytewax recovery store:
compact, and able to read what earlier versions wrote.  Apart from the state classes
(``domain.deltas.EntityState``, ``domain.stoploss.state.WatchState``), which are plain
data; :func:`register` installs the codec (``copyreg``) for the processes that snapshot
them, the pipeline and the tests of this codec.

Why a codec: Bytewax pickles every changed key's state at each epoch snapshot; with 50k
entities the generic dataclass pickle (~60 µs a key) cost more than the deltas.  Flat
tuples of ints and strings pickle several times faster and smaller (a Decimal pickles
~10x slower than its string).

Why legacy names: a recovery store names the function that restores each state.  Stores
written before the restore functions moved here name ``pipelines.deltas._restore_entity``,
``pipelines.stoploss._restore_watch_v2`` and, older still, ``pipelines.stoploss._restore_watch``
(the first watch layout: every ad's values per day, no totals); :func:`register` makes
those names resolve to the functions here, so an upgrade resumes the store it finds.
"""

from __future__ import annotations

import copyreg
import sys
import types
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from domain.deltas import EntityState, SeriesState
from domain.stoploss.state import Mark, WatchState
from schemas.metrics import Metrics

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SERIES_FIELDS = 13


def micros(ts: datetime) -> int:
    d = ts - EPOCH  # integer arithmetic: exact, and several times faster than ``// timedelta(microseconds=1)``
    return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds


def from_micros(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def pack(m: Metrics) -> tuple[str, int, int, str, str]:
    return (str(m.spend), m.impressions, m.clicks, str(m.conversions), str(m.revenue))


def unpack(f: tuple[Any, ...]) -> Metrics:
    return Metrics(Decimal(f[0]), f[1], f[2], Decimal(f[3]), Decimal(f[4]))


# -- a series state: every report date's cumulative and bucket base, flat ----------------


def reduce_entity(state: EntityState) -> tuple[Callable[..., EntityState], tuple[Any, ...]]:
    flat: list[object] = []
    for d, s in state.series.items():
        flat += (d.toordinal(), micros(s.captured_at), *pack(s.cumulative), micros(s.bucket_start),
                 *pack(s.bucket_base))
    closed = state.closed_through.toordinal() if state.closed_through else 0
    latest = state.latest_local_day.toordinal() if state.latest_local_day else 0
    return (restore_entity, (closed, latest, tuple(flat)))


def restore_entity(closed: int, latest: int, flat: tuple[Any, ...]) -> EntityState:
    series = {}
    for i in range(0, len(flat), SERIES_FIELDS):
        f = flat[i : i + SERIES_FIELDS]
        series[date.fromordinal(f[0])] = SeriesState(from_micros(f[1]), unpack(f[2:7]), from_micros(f[7]),
                                                     unpack(f[8:13]))
    return EntityState(series, date.fromordinal(closed) if closed else None,
                       date.fromordinal(latest) if latest else None)


# -- a campaign's watch ----------------------------------------------------------------


def reduce_watch(w: WatchState) -> tuple[Callable[..., WatchState], tuple[Any, ...]]:
    # (List comprehensions: a generator per nested container costs more than its items.)
    seen = [(d.toordinal(), tuple(ads)) for d, ads in w.seen.items()]
    totals = [(k, [(d.toordinal(), *pack(m)) for d, m in v.items()]) for k, v in w.totals.items()]
    days = [(d.toordinal(), [(c, *pack(m)) for c, m in ch.items()]) for d, ch in w.days.items()]
    hours = [(c, [(k, *pack(m)) for k, m in h.items()]) for c, h in w.hours.items()]
    marks = [
        (t, r, m.fired_day.toordinal() if m.fired_day else 0,
         micros(m.last_fired_at) if m.last_fired_at else None, m.open_alert,
         m.open_day.toordinal() if m.open_day else 0)
        for t, ms in w.marks.items() for r, m in ms.items()
    ]
    return (restore_watch, (
        micros(w.since), seen, totals, days, w.parents, hours, marks,
        w.latest_day.toordinal() if w.latest_day else 0, w.rules_seen,
        micros(w.hours_since) if w.hours_since else None,
    ))


def restore_watch(since: int, seen: list[Any], totals: list[Any], days: list[Any],
                  parents: dict[str, str | None], hours: list[Any], marks: list[Any], latest: int,
                  rules_seen: int, hours_since: int | None) -> WatchState:
    state = WatchState(
        from_micros(since),
        {date.fromordinal(d): set(ads) for d, ads in seen},
        {k: {date.fromordinal(x[0]): unpack(x[1:]) for x in v} for k, v in totals},
        {date.fromordinal(d): {c[0]: unpack(c[1:]) for c in ch} for d, ch in days},
        parents,
        {c: {k[0]: unpack(k[1:]) for k in h} for c, h in hours},
        {},
        date.fromordinal(latest) if latest else None,
        rules_seen,
        from_micros(hours_since) if hours_since is not None else None,
    )
    for t, r, fired, last, open_alert, open_day in marks:
        state.marks.setdefault(t, {})[r] = Mark(
            date.fromordinal(fired) if fired else None, from_micros(last) if last is not None else None,
            open_alert, date.fromordinal(open_day) if open_day else None)
    return state


def restore_watch_v1(since: int, days: tuple[Any, ...], parents: dict[str, str | None], hours: tuple[Any, ...],
                     marks: tuple[Any, ...], latest: int, rules_seen: int, hours_since: int | None,
                     contributes: dict[str, tuple[str, ...]]) -> WatchState:
    """A watch snapshotted by the first version (every ad's values per day, totals
    derived): the totals are summed from those values; the ads' days stay until a fold
    finds no rule needing them."""
    state = restore_watch(since, [], [], list(days), parents, list(hours), list(marks), latest, rules_seen,
                          hours_since)
    for d, children in state.days.items():
        state.seen[d] = set(children)
        for child, m in children.items():
            for k in contributes.get(child, ()):
                per_day = state.totals.setdefault(k, {})
                prev = per_day.get(d)
                per_day[d] = m if prev is None else prev + m
    return state


# The restore functions' names in stores written before they moved here.
LEGACY_NAMES: dict[str, dict[str, Callable[..., object]]] = {
    "pipelines.deltas": {"_restore_entity": restore_entity},
    "pipelines.stoploss": {"_restore_watch_v2": restore_watch, "_restore_watch": restore_watch_v1},
}


def register() -> None:
    """Pickle the flow's states with this codec, and let stores written before it load
    (idempotent).  The modules named in :data:`LEGACY_NAMES` exist only for unpickling."""
    copyreg.pickle(EntityState, reduce_entity)
    copyreg.pickle(WatchState, reduce_watch)
    for name, functions in LEGACY_NAMES.items():
        if name not in sys.modules:
            module = types.ModuleType(name, f"restore functions of recovery stores written before {__name__}")
            for attr, fn in functions.items():
                setattr(module, attr, fn)
            sys.modules[name] = module

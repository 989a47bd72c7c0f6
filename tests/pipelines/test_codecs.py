"""The recovery store's codec (``pipelines.codecs``): states pickle through it, and a
store written before the restore functions moved still loads."""

from __future__ import annotations

import pickle
import pickletools
from datetime import UTC, date, datetime

from domain.deltas import EntityState, apply_snapshot
from domain.stoploss.state import Mark, WatchState
from pipelines import codecs
from tests.factories import metrics, snap

DAY = date(2026, 3, 10)
T0 = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)


def globals_named(blob: bytes) -> set[str]:
    """The module.name pairs a pickle will import when loaded."""
    out, strings = set(), []
    for op, arg, _ in pickletools.genops(blob):
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(arg)
        elif op.name == "STACK_GLOBAL":
            out.add(f"{strings[-2]}.{strings[-1]}")
        elif op.name == "GLOBAL":
            out.add(str(arg).replace(" ", "."))
    return out


def test_states_pickle_through_the_codec_and_back() -> None:
    codecs.register()
    entity, _ = apply_snapshot(None, snap(T0, DAY, metrics("90", 9000, 180)))
    watch = WatchState(T0, {DAY: {"ad-1"}}, {"campaign:c": {DAY: metrics("90", 9000, 180)}},
                       marks={"ad-1": {"r": Mark(DAY, T0, "fp|fired", DAY)}})
    for state, restore in ((entity, "pipelines.codecs.restore_entity"), (watch, "pipelines.codecs.restore_watch")):
        blob = pickle.dumps(state)
        assert restore in globals_named(blob)  # the compact form, not the generic dataclass pickle
        assert pickle.loads(blob) == state


def test_a_store_written_before_the_move_still_loads() -> None:
    """A recovery store written before issue 12 names the restore functions by their old
    modules; those names resolve to the codec's functions."""
    codecs.register()
    entity, _ = apply_snapshot(None, snap(T0, DAY, metrics("90", 9000, 180)))
    assert isinstance(entity, EntityState)
    # Protocol 0 names globals as text lines, so the old name can be written in.
    new = pickle.dumps(entity, protocol=0)
    old = new.replace(b"cpipelines.codecs\nrestore_entity\n", b"cpipelines.deltas\n_restore_entity\n")
    assert old != new and "pipelines.deltas._restore_entity" in globals_named(old)
    assert pickle.loads(old) == entity
    watch = WatchState(T0, {DAY: {"ad-1"}}, {"campaign:c": {DAY: metrics("90", 9000, 180)}})
    new = pickle.dumps(watch, protocol=0)
    old = new.replace(b"cpipelines.codecs\nrestore_watch\n", b"cpipelines.stoploss\n_restore_watch_v2\n")
    assert old != new and pickle.loads(old) == watch

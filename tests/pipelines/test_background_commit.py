"""The background commit thread: drain is a barrier, failures reach the engine."""

from __future__ import annotations

import threading

import pytest

from pipelines.commit import BackgroundCommitter
from pipelines.steps import SinkItem
from schemas.envelope import DeadLetter, Envelope


def item(n: int) -> SinkItem:
    """A stand-in sink item known by its number (the offset): the committer never looks inside."""
    return DeadLetter(Envelope(b"k", b"v", "raw", 0, n, None), "stand-in", "validate")


def number(it: SinkItem) -> int:
    assert isinstance(it, DeadLetter)
    return it.envelope.offset


class SlowStore:
    """Stands in for Committer (same duck type): records what was committed (by number), when asked to."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.committed: list[int] = []
        self.release = threading.Event()
        self.fail_on = fail_on
        self.closed = False

    def commit(self, items: list[SinkItem]) -> None:
        self.release.wait(5)
        numbers = [number(it) for it in items]
        if self.fail_on is not None and self.fail_on in numbers:
            raise RuntimeError("database said no")
        self.committed.extend(numbers)

    def idle(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def test_drain_waits_for_every_submitted_batch() -> None:
    store = SlowStore()
    bg = BackgroundCommitter(store, depth=4)  # type: ignore[arg-type]
    for i in range(3):
        bg.submit([item(i)])
    assert store.committed == []  # still held by the store
    store.release.set()
    bg.drain()
    assert sorted(store.committed) == [0, 1, 2]
    assert store.committed == sorted(store.committed)  # order kept
    bg.close()
    assert store.closed


def test_a_failed_commit_is_raised_and_nothing_after_it_is_committed() -> None:
    store = SlowStore(fail_on=1)
    store.release.set()
    bg = BackgroundCommitter(store, depth=1)  # type: ignore[arg-type]
    bg.submit([item(0)])
    bg.drain()
    bg.submit([item(1)])
    with pytest.raises(RuntimeError, match="replay"):
        bg.drain()
    with pytest.raises(RuntimeError):
        bg.submit([item(2)])
    assert store.committed == [0]

"""The background commit thread: drain is a barrier, failures reach the engine."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from pipelines.commit import BackgroundCommitter


class SlowStore:
    """Stands in for Committer (same duck type): records what was committed, when asked to."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.committed: list[Any] = []
        self.release = threading.Event()
        self.fail_on = fail_on
        self.closed = False

    def commit(self, items: list[Any]) -> None:
        self.release.wait(5)
        if self.fail_on is not None and self.fail_on in items:
            raise RuntimeError("database said no")
        self.committed.extend(items)

    def close(self) -> None:
        self.closed = True


def test_drain_waits_for_every_submitted_batch() -> None:
    store = SlowStore()
    bg = BackgroundCommitter(store, depth=4)  # type: ignore[arg-type]
    for i in range(3):
        bg.submit([i])
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
    bg.submit([0])
    bg.drain()
    bg.submit([1])
    with pytest.raises(RuntimeError, match="replay"):
        bg.drain()
    with pytest.raises(RuntimeError):
        bg.submit([2])
    assert store.committed == [0]

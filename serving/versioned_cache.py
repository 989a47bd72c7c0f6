"""A small LRU whose entries carry the version of the data they were computed from: an
entry is returned only for the same version, so the cache can save work but never
serve old numbers (no TTL).  Thread-safe: FastAPI runs sync routes in a thread pool."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class VersionedCache(Generic[V]):
    """At most ``max_entries`` entries and ``max_weight`` total weight (``weigh`` of each
    value, 1 by default); the least recently used go first.  A ``None`` version (the
    data's version is unknown) neither hits nor stores."""

    def __init__(self, max_entries: int = 512, max_weight: int | None = None,
                 weigh: Callable[[V], int] | None = None) -> None:
        self._max_entries = max_entries
        self._max_weight = max_weight
        self._weigh = weigh or (lambda _v: 1)
        self._entries: OrderedDict[Hashable, tuple[Hashable, V, int]] = OrderedDict()
        self._weight = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable, version: Hashable | None) -> V | None:
        if version is None:
            return None
        with self._lock:
            hit = self._entries.get(key)
            if hit is None or hit[0] != version:
                self.misses += 1
                return None
            self.hits += 1
            self._entries.move_to_end(key)
            return hit[1]

    def put(self, key: Hashable, version: Hashable | None, value: V) -> None:
        if version is None:
            return
        weight = self._weigh(value)
        if self._max_weight is not None and weight > self._max_weight:
            return  # larger than the whole cache: not kept
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._weight -= old[2]
            self._entries[key] = (version, value, weight)
            self._weight += weight
            while len(self._entries) > self._max_entries or (
                    self._max_weight is not None and self._weight > self._max_weight):
                _, (_, _, w) = self._entries.popitem(last=False)
                self._weight -= w

    def __len__(self) -> int:
        return len(self._entries)

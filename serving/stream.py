"""Live updates: one Redis Streams reader per server process, fanned out to bounded
per-client queues.

- The reader (:class:`Hub`) ``XREAD``s every stream ``metricx:live:<workspace>`` that has
  at least one client, from the last id it delivered, so no entry falls between reads.
- Each client owns an ``asyncio.Queue`` of ``METRICX_SSE_QUEUE_SIZE`` entries.  When it is
  full the client is *dropped*: unsubscribed at once (memory stays bounded) and sent a
  final ``dropped`` event when its connection drains; the page reconnects with
  ``Last-Event-ID`` and misses nothing that Redis still holds.
- A client's events are coalesced: at most one ``update`` per ``METRICX_SSE_COALESCE_MS``,
  carrying the summed changes of every entry since the last one and the newest entry id.
- An entry is decoded and encoded as an ``update`` event once, when it is read, and
  the same bytes go to every client that has nothing else to coalesce it with (the
  usual case): with 1,000 clients, per-client JSON and SSE encoding was most of the
  delivery delay.
- Resume: ``Last-Event-ID`` (a Redis stream id) replays the entries after it with
  ``XRANGE``; if the stream was trimmed past it, a ``reset`` event tells the page to
  reload its totals from ``/dashboard``.  So does a ``gap`` entry: the pipeline's mark
  that updates were lost while Redis was away.

The ``metricx.live.v1`` messages are a signal; the tables are the truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import redis.asyncio as aioredis
from sse_starlette import ServerSentEvent

from adapters.redis_live import live_stream_key
from serving.stream_guard import StreamGuard

log = logging.getLogger(__name__)

STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
MAX_ID_PART = 2**64 - 1  # Redis stream ids are two unsigned 64-bit numbers
Entry = tuple[str, dict[str, Any]]


def is_stream_id(text: str) -> bool:
    """A Redis stream id Redis itself would take (``ms-seq``, each part < 2**64): a
    larger one passed a digits-only check, then Redis refused it inside the stream."""
    if not STREAM_ID.match(text):
        return False
    ms, seq = id_key(text)
    return ms <= MAX_ID_PART and seq <= MAX_ID_PART


def id_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def coalesce(entries: Iterable[Entry]) -> dict[str, Any]:
    """Sum the ``changes`` of several ``metricx.live.v1`` entries per provider, account,
    currency, report date and bucket (pure; money stays exact decimal strings)."""
    merged: dict[tuple[str, ...], dict[str, Any]] = {}
    committed_at = None
    n = 0
    for _, msg in entries:
        n += 1
        committed_at = msg.get("committed_at", committed_at)
        for c in msg.get("changes", []):
            key = (c["provider"], c["account_id"], c["currency"], c["report_date"], c["bucket_start"])
            acc = merged.get(key)
            if acc is None:
                merged[key] = {**c}
                continue
            for m in ("spend", "conversions", "revenue"):
                acc[m] = str(Decimal(str(acc[m])) + Decimal(str(c[m])))
            for m in ("impressions", "clicks"):
                acc[m] = int(acc[m]) + int(c[m])
    return {"committed_at": committed_at, "entries": n, "changes": list(merged.values())}


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _decode(fields: dict[bytes, bytes]) -> dict[str, Any] | None:
    try:
        msg = json.loads(fields[b"data"])
    except (KeyError, ValueError):
        return None
    return msg if isinstance(msg, dict) else None


def update_event(entries: list[Entry]) -> ServerSentEvent:
    return ServerSentEvent(json.dumps(coalesce(entries)), event="update", id=entries[-1][0])


@dataclass(frozen=True, slots=True, eq=False)
class Live:
    """One stream entry as fanned out, shared by all of its workspace's clients."""

    entry: Entry
    order: tuple[int, int]
    # The entry alone as an ``update`` event, encoded once for every client.
    wire: bytes

    @classmethod
    def of(cls, entry: Entry) -> Live:
        wire = gap_event(entry[0]) if is_gap(entry) else update_event([entry])
        return cls(entry, id_key(entry[0]), wire.encode())


def is_gap(entry: Entry) -> bool:
    """The pipeline could not publish some updates (Redis was away) and says so once it
    can (``adapters.redis_live``): the client must reload its totals."""
    return entry[1].get("gap") is True


def gap_event(entry_id: str) -> ServerSentEvent:
    return ServerSentEvent(json.dumps({"reason": "live updates were lost while Redis was unavailable; reload totals"}),
                           event="reset", id=entry_id)


@dataclass(eq=False)
class Client:
    workspace_id: str
    queue: asyncio.Queue[Live]
    start_id: str
    dropped: bool = False
    delivered: int = field(default=0)
    # Set when the hub drops this client, to cut a coalescing wait short.
    kicked: asyncio.Event = field(default_factory=asyncio.Event)


class Hub:
    """The process's single Redis reader and its subscribers."""

    def __init__(self, redis_url: str, *, queue_size: int, block_ms: int) -> None:
        # Bounded: a reconnect storm waits for a connection instead of failing.
        self._redis = aioredis.Redis(connection_pool=aioredis.BlockingConnectionPool.from_url(
            redis_url, max_connections=32, timeout=10, socket_connect_timeout=5))
        self._lookups: dict[str, asyncio.Future[str]] = {}
        self._queue_size = queue_size
        self._block_ms = block_ms
        self._clients: dict[str, set[Client]] = {}
        self._last: dict[str, str] = {}  # stream key -> last id read
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self.dropped_total = 0

    @property
    def redis(self) -> aioredis.Redis:
        return self._redis

    def client_count(self) -> int:
        return sum(len(c) for c in self._clients.values())

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="metricx-live-reader")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._redis.aclose()

    async def last_id(self, workspace_id: str) -> str:
        rows: Any = await self._redis.xrevrange(live_stream_key(workspace_id), "+", "-", count=1)
        return _text(rows[0][0]) if rows else "0-0"

    async def subscribe(self, workspace_id: str) -> Client:
        key = live_stream_key(workspace_id)
        if key not in self._last:
            # One lookup per workspace however many clients arrive at once.
            pending = self._lookups.get(key)
            if pending is None:
                pending = self._lookups[key] = asyncio.ensure_future(self.last_id(workspace_id))

                def forget(_: asyncio.Future[str], k: str = key) -> None:
                    self._lookups.pop(k, None)

                pending.add_done_callback(forget)
            start = await asyncio.shield(pending)
            self._last.setdefault(key, start)
        client = Client(workspace_id, asyncio.Queue(self._queue_size), self._last[key])
        self._clients.setdefault(workspace_id, set()).add(client)
        self._changed.set()
        log.info("stream client joined", extra={"workspace_id": workspace_id, "clients": self.client_count()})
        return client

    def unsubscribe(self, client: Client) -> None:
        peers = self._clients.get(client.workspace_id)
        if peers is not None:
            peers.discard(client)
            if not peers:
                del self._clients[client.workspace_id]
                self._last.pop(live_stream_key(client.workspace_id), None)

    async def backlog(self, workspace_id: str, after: str) -> tuple[list[Entry], bool]:
        """Entries after ``after`` and whether the stream still reaches back to it."""
        key = live_stream_key(workspace_id)
        # Nothing follows the largest id (and Redis refuses an exclusive range from it).
        rows: Any = [] if id_key(after) == (MAX_ID_PART, MAX_ID_PART) else \
            await self._redis.xrange(key, f"({after}", "+")
        try:
            info: Any = await self._redis.xinfo_stream(key)
        except aioredis.ResponseError:  # no such stream: nothing was ever missed
            complete = True
        else:
            complete = self._reaches_back(info, after)
        out = [(_text(i), m) for i, f in rows if (m := _decode(f)) is not None]
        return out, complete

    @staticmethod
    def _reaches_back(info: dict[str, Any], after: str) -> bool:
        """Whether every entry after ``after`` is still in the stream.  If entries were
        ever removed (MAXLEN trimming), the oldest remaining one must not be newer than
        the client's position (conservative: may ask for one needless reload)."""
        removed = int(info.get("entries-added") or 0) > int(info.get("length") or 0)
        if not removed:
            return True
        first = info.get("first-entry")
        oldest = first[0] if first else info.get("last-generated-id", b"0-0")
        oldest_id = oldest.decode() if isinstance(oldest, bytes) else str(oldest)
        return id_key(after) >= id_key(oldest_id)

    def _fan_out(self, workspace_id: str, entry: Entry) -> None:
        clients = self._clients.get(workspace_id)
        if not clients:
            return
        live = Live.of(entry)
        for client in list(clients):
            try:
                client.queue.put_nowait(live)
            except asyncio.QueueFull:
                client.dropped = True
                client.kicked.set()
                self.dropped_total += 1
                self.unsubscribe(client)
                log.warning("slow stream client dropped",
                            extra={"workspace_id": workspace_id, "queue_size": self._queue_size})

    async def _run(self) -> None:
        while True:
            try:
                if not self._last:
                    self._changed.clear()
                    await self._changed.wait()
                    continue
                streams: dict[Any, Any] = dict(self._last)
                got: Any = await self._redis.xread(streams, count=1000, block=self._block_ms)
                for raw_key, items in got or []:
                    key = _text(raw_key)
                    ws = key.removeprefix("metricx:live:")
                    for raw_id, fields in items:
                        sid = _text(raw_id)
                        if key in self._last:
                            self._last[key] = sid
                        msg = _decode(fields)
                        if msg is not None:
                            self._fan_out(ws, (sid, msg))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("live reader error; retrying", extra={"error": str(exc)})
                await asyncio.sleep(1.0)


async def events(hub: Hub, client: Client, *, last_event_id: str | None, coalesce_ms: int,
                 guard: StreamGuard | None = None) -> AsyncIterator[ServerSentEvent | bytes]:
    """The event sequence of one connection: ``ready`` (or the resumed backlog), then
    coalesced ``update`` events; ``dropped`` last if the client fell behind, ``expired``
    or ``revoked`` last when ``guard`` ends the stream (token expiry, membership gone)."""
    getter: asyncio.Future[Live] | None = None
    try:
        seen = client.start_id
        if last_event_id is not None:
            backlog, complete = await hub.backlog(client.workspace_id, last_event_id)
            if not complete:
                yield ServerSentEvent(json.dumps({"reason": "history trimmed; reload totals"}),
                                      event="reset", id=seen)
            if backlog:
                seen = backlog[-1][0]
                yield gap_event(seen) if any(is_gap(e) for e in backlog) else update_event(backlog)
            elif complete:
                seen = last_event_id if id_key(last_event_id) > id_key(seen) else seen
                yield ServerSentEvent(json.dumps({"last_event_id": seen, "resumed": True}), event="ready", id=seen)
        else:
            yield ServerSentEvent(json.dumps({"last_event_id": seen, "resumed": False}), event="ready", id=seen)
        loop = asyncio.get_running_loop()
        interval = coalesce_ms / 1000
        last_sent = 0.0
        seen_key = id_key(seen)
        while True:
            if guard is not None:
                ending = await guard.verdict()
                if ending is not None:
                    log.info("stream ended", extra={"workspace_id": client.workspace_id, "reason": ending.event})
                    # No id: the client's Last-Event-ID stays where its data is.
                    yield ServerSentEvent(json.dumps({"reason": ending.reason, "last_event_id": seen}),
                                          event=ending.event)
                    return
            if getter is None:
                # Kept across waits that time out (never cancelled while the stream
                # lives), so an entry taken off the queue is never lost.
                getter = asyncio.ensure_future(client.queue.get())
            if guard is not None and not getter.done():
                await asyncio.wait({getter}, timeout=guard.wait_s())
                if not getter.done():
                    continue
            first = await getter
            getter = None
            wait = last_sent + interval - loop.time()
            if wait > 0 and not client.dropped:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(client.kicked.wait(), timeout=wait)
            batch = [first]
            while not client.queue.empty():
                batch.append(client.queue.get_nowait())
            if client.dropped:
                yield ServerSentEvent(json.dumps({"reason": "client too slow; reconnect with Last-Event-ID",
                                                  "last_event_id": seen}), event="dropped")
                return
            fresh = [e for e in batch if e.order > seen_key]
            if not fresh:
                continue
            seen, seen_key = fresh[-1].entry[0], fresh[-1].order
            last_sent = loop.time()
            client.delivered += len(fresh)
            if len(fresh) == 1:
                yield fresh[0].wire
            elif any(is_gap(e.entry) for e in fresh):
                yield gap_event(seen)
            else:
                yield update_event([e.entry for e in fresh])
    finally:
        if getter is not None:
            getter.cancel()
        hub.unsubscribe(client)

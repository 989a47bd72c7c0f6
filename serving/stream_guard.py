"""When an open ``/stream`` must end, though its client is still reading.

A stream is authorised once, when it opens; it may then last hours.  Two things can
take that authority away while it is open:

- its token expires (the stream token's ``exp``, or the bearer token's ``exp`` plus the
  accepted clock skew): a stream opened a second before expiry used to live on;
- its user stops being a member of the workspace: a removed member kept receiving it.

:class:`StreamGuard` holds the deadline and re-checks the membership every
``METRICX_SSE_RECHECK_S`` through :class:`MembershipCache`, which asks the database at
most once per interval per (user, workspace) however many streams that user has open.
The stream's event loop asks :meth:`StreamGuard.wait_s` how long it may wait for news
before asking :meth:`StreamGuard.verdict` again, so it waits on its queue, never
sleeps.  The clock is injectable (tests move time, they do not wait for it).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio

log = logging.getLogger(__name__)

Clock = Callable[[], float]
MembershipCheck = Callable[[str, uuid.UUID], bool]  # blocking (database); run in a thread
MAX_CACHED = 10_000

EXPIRED = "token expired; get a new stream token and reconnect with Last-Event-ID"
REVOKED = "no longer a member of this workspace"


@dataclass(frozen=True, slots=True)
class Ending:
    """Why a stream ends: the event it sends last (``expired`` or ``revoked``)."""

    event: str
    reason: str


class MembershipCache:
    """(user, workspace) -> member?, remembered for ``ttl_s``; concurrent questions about
    one pair share one database query.  A failed query is logged and answers "still a
    member" (the token's expiry still ends the stream), and is not remembered."""

    def __init__(self, check: MembershipCheck, ttl_s: float, clock: Clock = time.monotonic) -> None:
        self._check = check
        self._ttl_s = ttl_s
        self._clock = clock
        self._known: dict[tuple[str, uuid.UUID], tuple[bool, float]] = {}
        self._pending: dict[tuple[str, uuid.UUID], asyncio.Future[bool]] = {}
        self.queries = 0

    def remember(self, sub: str, workspace_id: uuid.UUID, member: bool) -> None:
        if len(self._known) >= MAX_CACHED:
            self._known.clear()
        self._known[(sub, workspace_id)] = (member, self._clock())

    async def is_member(self, sub: str, workspace_id: uuid.UUID) -> bool:
        key = (sub, workspace_id)
        hit = self._known.get(key)
        if hit is not None and self._clock() - hit[1] < self._ttl_s:
            return hit[0]
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = asyncio.ensure_future(self._ask(sub, workspace_id))
            pending.add_done_callback(lambda _f: self._pending.pop(key, None))
        return await asyncio.shield(pending)

    async def _ask(self, sub: str, workspace_id: uuid.UUID) -> bool:
        self.queries += 1
        try:
            member = await anyio.to_thread.run_sync(self._check, sub, workspace_id)
        except Exception as exc:
            log.warning("stream membership not re-checked; keeping the stream until its token expires",
                        extra={"sub": sub, "workspace_id": str(workspace_id), "error": str(exc)})
            return True
        self.remember(sub, workspace_id, member)
        return member


@dataclass
class StreamGuard:
    expires_at: float  # seconds since the epoch, on ``clock``
    recheck_s: float
    still_member: Callable[[], Awaitable[bool]]
    clock: Clock = time.time
    _next_check: float = field(init=False)

    def __post_init__(self) -> None:
        self._next_check = self.clock() + self.recheck_s

    def wait_s(self) -> float:
        """How long the stream may wait for news before the next :meth:`verdict`; never
        longer than one re-check interval, so a moved clock is noticed within it."""
        now = self.clock()
        return max(0.0, min(self.expires_at - now, self._next_check - now, self.recheck_s))

    async def verdict(self) -> Ending | None:
        """The reason to end now, if any (the membership query only when it is due)."""
        now = self.clock()
        if now >= self.expires_at:
            return Ending("expired", EXPIRED)
        if now >= self._next_check:
            self._next_check = now + self.recheck_s
            if not await self.still_member():
                return Ending("revoked", REVOKED)
        return None

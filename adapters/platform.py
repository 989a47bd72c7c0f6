"""What every ad platform's poller is to the poller service: the :class:`Poller`
protocol (``adapters.meta.poller.MetaPoller``, ``adapters.google_ads.poller.GoogleAdsPoller``
implement it; ``adapters.pollers`` builds the right one for a connection), what a read
returns, and how a sync can fail.

Failures, as the connection's status sees them: the poller turns platform-specific
errors into one of these so the scheduler and ``metricx connections status`` speak one
language: ``needs_reauth`` stops polling until a human reconnects, ``throttled`` waits,
``error`` is surfaced with its message.  Messages never contain tokens (the pollers
build them from codes and platform messages, and :func:`redact` scrubs any secret that
might have been echoed back).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal, Protocol

from adapters.entities import Entity
from schemas.insight import Snapshot

Loop = Literal["hot", "warm", "backfill"]


class SyncFailure(RuntimeError):
    status = "error"

    def __init__(self, message: str, retry_after_s: float | None = None, *, loop_only: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s
        # True when the platform still answers and only this loop chose to stop (its own
        # usage rule): the loop waits, the connection's other loops go on.
        self.loop_only = loop_only


class NeedsReauth(SyncFailure):
    """The platform refused the token (expired, revoked): retrying cannot help."""

    status = "needs_reauth"


class Throttled(SyncFailure):
    """Rate limited or out of quota; ``retry_after_s`` says when to come back."""

    status = "throttled"


def redact(text: str, secrets: Iterable[str]) -> str:
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "***")
    return text


@dataclass
class Rejected:
    """One platform row we could not turn into a valid snapshot, and why."""

    provider: str
    account_id: str
    raw: dict[str, Any]
    reason: str


@dataclass
class PollResult:
    snapshots: list[Snapshot]
    rejected: list[Rejected]
    api_calls: int


@dataclass(frozen=True)
class Pacing:
    """What the platform's usage said about the next run: wait at least ``advice_s``,
    stretch the loop's interval by ``factor``, with a ``note`` for the status; ``slowed``
    when the platform asked us to slow down or pause."""

    advice_s: float = 0.0
    factor: float = 1.0
    note: str | None = None
    slowed: bool = False


class Poller(Protocol):
    """One connection's reads, built for one sync (its counters are the sync's)."""

    @property
    def calls(self) -> int:
        """Every request made so far (refused and failed ones too)."""

    def account_info(self) -> tuple[str, str]:
        """(IANA time zone, ISO currency) of the account."""

    def sync_entities(self) -> tuple[list[Entity], list[Rejected]]:
        """The entity tree (campaigns, ad sets / ad groups, ads, asset groups) and the
        rows that could not be read as entities."""

    def read(self, since: date, until: date, *, timezone: str, currency: str, loop: Loop) -> PollResult:
        """Snapshots of the account's local report dates ``since..until``."""

    def pacing(self, loop: Loop) -> Pacing:
        """What the platform's usage says about this loop's next run."""


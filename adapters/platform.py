"""How a sync can fail, as the connection's status sees it.

The poller turns platform-specific errors into one of these so the scheduler and
``metricx connections status`` speak one language: ``needs_reauth`` stops polling until a
human reconnects, ``throttled`` waits, ``error`` is surfaced with its message.
Messages never contain tokens (the pollers build them from codes and platform messages,
and :func:`redact` scrubs any secret that might have been echoed back).
"""

from __future__ import annotations

from collections.abc import Iterable


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

"""Slack incoming webhooks: one POST per message, the reply classified for the outbox.

Why classify here and decide in the notifier: the HTTP details (``200 ok``, 429 with
``Retry-After``, the "channel is gone" statuses) are Slack's; what to do with the rows is
the outbox's.  The webhook URL is a credential: it never appears in a log or an error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import httpx

log = logging.getLogger("metricx.notifier")

# Statuses after which retrying cannot help: the webhook was revoked, the channel archived
# or deleted, or the payload is invalid (Slack answers e.g. 404 no_service, 410
# channel_is_archived, 403 action_prohibited, 400 invalid_blocks).
PERMANENT = frozenset({400, 401, 403, 404, 410})
DEFAULT_RETRY_AFTER_S = 1.0
MAX_RETRY_AFTER_S = 3600.0

Outcome = Literal["sent", "retry", "permanent"]


@dataclass(frozen=True, slots=True)
class SlackResult:
    outcome: Outcome
    error: str | None = None
    retry_after_s: float | None = None  # Slack asked us to wait (429); None: our backoff
    status: int | None = None


def retry_after(value: str | None) -> float:
    """Seconds from a ``Retry-After`` header (Slack sends delta-seconds); a missing or odd
    value still waits a little rather than hammering."""
    if value is None:
        return DEFAULT_RETRY_AFTER_S
    try:
        secs = float(value.strip())
    except ValueError:
        return DEFAULT_RETRY_AFTER_S
    if not secs > 0:  # zero, negative or NaN
        return DEFAULT_RETRY_AFTER_S
    return min(MAX_RETRY_AFTER_S, secs)


def classify(status: int, body: str, headers: httpx.Headers | dict[str, str]) -> SlackResult:
    text = body.strip()[:200]
    if status == 200 and text == "ok":
        return SlackResult("sent", status=status)
    if status == 429:
        ra = headers.get("Retry-After") if isinstance(headers, dict) else headers.get("retry-after")
        return SlackResult("retry", f"slack 429 rate limited: {text}", retry_after(ra), status)
    if status in PERMANENT:
        return SlackResult("permanent", f"slack webhook refused with {status}: {text or 'no body'}", status=status)
    return SlackResult("retry", f"slack webhook answered {status}: {text or 'no body'}", status=status)


class SlackClient:
    def __init__(self, *, timeout_s: float = 10.0, transport: httpx.BaseTransport | None = None) -> None:
        self._http = httpx.Client(timeout=timeout_s, transport=transport, follow_redirects=False,
                                  headers={"User-Agent": "metricx-notifier"})

    def post(self, webhook_url: str, message: dict[str, Any]) -> SlackResult:
        try:
            resp = self._http.post(webhook_url, json=message)
        except httpx.TimeoutException as exc:
            return SlackResult("retry", f"slack request timed out ({type(exc).__name__})")
        except httpx.HTTPError as exc:
            # str(exc) may carry the URL (the secret): only the exception type is kept.
            return SlackResult("retry", f"slack request failed ({type(exc).__name__})")
        return classify(resp.status_code, resp.text, resp.headers)

    def close(self) -> None:
        self._http.close()

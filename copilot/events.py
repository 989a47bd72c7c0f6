"""What one question produces, in order: our own typed events, not the SDK's.

A question yields, in this order (each as one server-sent event named by ``kind``):

* ``query`` - a tool call the model asked for, after validation (``copilot.tools``);
* ``rows`` - that call's result table, before any prose that can cite it;
* ``rule_draft`` - a rule the user may confirm through the Rules API (never saved here);
* ``text`` - the answer as it is written, already through the number guard;
* then exactly one terminal event: ``done`` (citations, verified flag, sources, usage,
  cost) or ``error`` (a typed ``code`` and a readable ``message``; usage so far, because
  a failed question still costs what the API reported).

Events are frozen dataclasses; :func:`as_dict` gives the JSON payload.  The codes are a
closed list so the page can choose a message or a retry button without parsing text.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

ErrorCode = Literal[
    "disabled",  # no METRICX_ANTHROPIC_API_KEY: the copilot is off
    "auth",  # the API refused the key (401/403)
    "rate_limited",  # the API's own rate limit (429) outlasted the SDK's retries
    "overloaded",  # 529 / overloaded_error outlasted the retries, or came mid-stream
    "upstream_error",  # any other API failure (5xx, an unexpected in-stream error)
    "bad_request",  # the API refused our request (400): our bug, logged with details
    "model_unavailable",  # the configured model does not exist for this key (404)
    "timeout",  # the HTTP read or connect timeout
    "connection",  # the connection broke (refused, reset, a cut stream)
    "deadline",  # the question's overall deadline passed
    "tool_limit",  # the model kept calling tools past the per-question limit
    "max_tokens",  # the answer hit the output-token limit and is cut
    "refused",  # the model declined (stop_reason refusal)
    "context_too_long",  # the conversation no longer fits the model's context
    "user_rate_limited",  # our per-user limit (the route's)
    "budget_exhausted",  # the workspace's daily budget (the route's)
    "internal",  # a bug of ours; the message says no more
]

# Retrying the same question later may succeed for these.
RETRYABLE: frozenset[str] = frozenset({
    "rate_limited", "overloaded", "upstream_error", "timeout", "connection", "deadline", "user_rate_limited",
})


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """Tokens as the API reported them, summed over the question's requests, and their
    cost in USD (None when the model has no known price)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    requests: int = 0
    cost_usd: Decimal | None = Decimal(0)


@dataclass(frozen=True, slots=True)
class Citation:
    ref: str  # "t1.r2.spend"
    value: str  # the formatted value the server wrote in its place


@dataclass(frozen=True, slots=True)
class Source:
    """Where an answer's numbers come from: one tool result table."""

    table: str
    tool: str
    period_start: date | None
    period_end: date | None
    timezone: str | None
    currencies: tuple[str, ...]
    freshness: datetime | None  # newest data the result includes
    settling: tuple[date, ...] = ()  # days whose conversions may still change


@dataclass(frozen=True, slots=True)
class QueryEvent:
    call_id: str
    tool: str
    input: dict[str, Any]  # the validated tool input, as JSON
    kind: Literal["query"] = "query"


@dataclass(frozen=True, slots=True)
class RowsEvent:
    call_id: str
    table: str  # "t1": what citations name
    columns: tuple[str, ...]
    kinds: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]  # formatted cells, as the answer shows them
    truncated: bool
    kind: Literal["rows"] = "rows"


@dataclass(frozen=True, slots=True)
class RuleDraftEvent:
    call_id: str
    rule: dict[str, Any]  # a valid ``RuleIn`` body for ``POST /rules``
    summary: str
    kind: Literal["rule_draft"] = "rule_draft"


@dataclass(frozen=True, slots=True)
class TextEvent:
    text: str
    kind: Literal["text"] = "text"


@dataclass(frozen=True, slots=True)
class DoneEvent:
    verified: bool  # every figure was a citation the server filled in
    masked: int  # figures the guard replaced
    citations: tuple[Citation, ...]
    sources: tuple[Source, ...]
    usage: UsageTotals
    model: str
    tool_calls: int
    kind: Literal["done"] = "done"


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    code: ErrorCode
    message: str
    usage: UsageTotals = field(default_factory=UsageTotals)
    kind: Literal["error"] = "error"

    @property
    def retryable(self) -> bool:
        return self.code in RETRYABLE


Event = QueryEvent | RowsEvent | RuleDraftEvent | TextEvent | DoneEvent | ErrorEvent
TERMINAL = (DoneEvent, ErrorEvent)


def as_dict(ev: Event) -> dict[str, Any]:
    """The event's JSON payload (decimals and dates as strings)."""
    out = _jsonable(asdict(ev))
    if isinstance(ev, ErrorEvent):
        out["retryable"] = ev.retryable
    assert isinstance(out, dict)
    return out


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, Decimal):
        return format(v, "f")
    if isinstance(v, date | datetime):
        return v.isoformat()
    return v

"""The `metricx.insight.v1` event: one cumulative "so far today" poll of one ad entity.

Pollers publish it to Kafka topic ``metricx.insights.raw`` with key
``provider:account_id:entity_id``; the pipeline validates every message with
:func:`parse_insight` before anything else looks at it.  Field names here are the
column names in the database and the JSON names in the API: one name per idea.

The Pydantic model is the edge (it says *why* a message is refused); inside the
pipeline the plain :class:`Snapshot` dataclass travels, because it is cheaper and
carries no validation machinery.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Literal
from uuid import UUID
from zoneinfo import ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from schemas.edge import preview
from schemas.fastpath import fast_parse
from schemas.metrics import Metrics
from schemas.snapshot import (
    ENTITY_LEVELS,
    INSIGHT_SCHEMA,
    MAX_CLOCK_SKEW,
    MAX_COUNT,
    MAX_MONEY,
    MAX_REPORT_AGE,
    PROVIDERS,
    RAW_TOPIC,
    Snapshot,
    insight_key,
    zone,
)

# Re-exported: callers know these as parts of the contract.
__all__ = [
    "ENTITY_LEVELS", "INSIGHT_SCHEMA", "MAX_CLOCK_SKEW", "MAX_COUNT", "MAX_MONEY", "MAX_REPORT_AGE", "PROVIDERS",
    "RAW_TOPIC", "InsightV1", "InvalidInsight", "Snapshot", "insight_key", "parse_insight", "zone",
]

Provider = Literal["meta", "google", "tiktok", "sim"]
EntityLevel = Literal["ad", "adset", "campaign", "asset_group"]

# The README's "wrong types" are refused, not coerced: Pydantic's lax mode would store
# ``true`` or ``100.0`` as a count, ``"2"`` as clicks, a Unix time as a date and
# ``"1_000"`` (Python's Decimal syntax) as money.  ASCII digits only: ``\d`` would let
# other scripts' digits through, which Decimal reads as numbers too.
_DECIMAL_TEXT = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_NON_FINITE_TEXT = re.compile(r"[+-]?(nan|inf|infinity)", re.IGNORECASE)  # refused as "not finite"
_DATE_TEXT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DATETIME_TEXT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}")


def _json_type(v: object) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int | float | Decimal):
        return "a number"
    if isinstance(v, str):
        return "a string"
    return "an array" if isinstance(v, list) else "an object"


def _decimal_text(v: object) -> object:
    """Money: a JSON number, or a string of one (``"12.34"``, ``"-5"``, ``"1e3"``)."""
    if isinstance(v, str) and not (_DECIMAL_TEXT.fullmatch(v) or _NON_FINITE_TEXT.fullmatch(v)):
        raise ValueError("must be a decimal number such as 12.34 (no blanks, underscores, '+' or words)")
    if isinstance(v, bool) or not isinstance(v, str | int | float | Decimal):
        raise ValueError(f"must be a decimal number or a string of one, not {_json_type(v)}")
    return v


def _date_text(v: object) -> object:
    if isinstance(v, date) and not isinstance(v, datetime):
        return v  # built in Python (the pollers)
    if not isinstance(v, str):
        raise ValueError(f"must be a date string YYYY-MM-DD, not {_json_type(v)}")
    if not _DATE_TEXT.fullmatch(v):
        raise ValueError("must be a date string YYYY-MM-DD")
    return v


def _datetime_text(v: object) -> object:
    if isinstance(v, datetime):
        return v  # built in Python (the pollers)
    if not isinstance(v, str):
        raise ValueError(f"must be an RFC 3339 time string, not {_json_type(v)}")
    if not _DATETIME_TEXT.match(v):
        raise ValueError("must be an RFC 3339 time string (YYYY-MM-DDTHH:MM:SSZ)")
    return v


# Ids are opaque platform strings; ':' is the Kafka key separator, so it is refused.
Id = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.\-]+$")]
# The constraints first: after a Python validator they would run in Python too (3x slower).
Money = Annotated[
    Decimal,
    Field(ge=0, le=MAX_MONEY, max_digits=24, decimal_places=6, allow_inf_nan=False),
    BeforeValidator(_decimal_text),
]
Count = Annotated[int, Field(strict=True, ge=0, le=MAX_COUNT)]
ReportDate = Annotated[date, BeforeValidator(_date_text)]


def _check_zone(name: str) -> str:
    try:
        zone(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown IANA timezone {name!r}") from None
    return name


def _to_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-23:59: past the last representable instant
        raise ValueError("captured_at is out of range") from None


class InsightV1(BaseModel):
    """Wire form of one snapshot, exactly as documented in the README."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_: Literal["metricx.insight.v1"] = Field(alias="schema")
    workspace_id: UUID
    provider: Provider
    account_id: Id
    entity_level: EntityLevel
    entity_id: Id
    campaign_id: Id
    adset_id: Id | None = None
    report_date: ReportDate
    timezone: Annotated[str, AfterValidator(_check_zone)]
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
    captured_at: Annotated[AwareDatetime, BeforeValidator(_datetime_text), AfterValidator(_to_utc)]
    spend: Money
    impressions: Count
    clicks: Count
    conversions: Money
    revenue: Money

    @model_validator(mode="after")
    def _report_date_fits_capture(self) -> InsightV1:
        try:
            local_day = self.captured_at.astimezone(zone(self.timezone)).date()
        except OverflowError:  # year 1 or 9999 seen from a zone that leaves the calendar
            raise ValueError(f"captured_at {self.captured_at.isoformat()} is out of range in {self.timezone}") from None
        if self.report_date > local_day:
            raise ValueError(
                f"report_date {self.report_date} has not begun in {self.timezone} "
                f"at captured_at {self.captured_at.isoformat()}"
            )
        if local_day - self.report_date > MAX_REPORT_AGE:
            raise ValueError(
                f"report_date {self.report_date} is more than {MAX_REPORT_AGE.days} days "
                f"before captured_at"
            )
        if self.clicks > self.impressions and self.impressions > 0:
            # Platforms can report clicks with 0 impressions (click-through on a
            # cached creative), but never more clicks than a non-zero impression count.
            raise ValueError(f"clicks {self.clicks} exceed impressions {self.impressions}")
        return self

    @property
    def key(self) -> str:
        return insight_key(self.provider, self.account_id, self.entity_id)

    def to_snapshot(self) -> Snapshot:
        return Snapshot(
            workspace_id=str(self.workspace_id),
            provider=self.provider,
            account_id=self.account_id,
            entity_level=self.entity_level,
            entity_id=self.entity_id,
            campaign_id=self.campaign_id,
            adset_id=self.adset_id,
            report_date=self.report_date,
            timezone=self.timezone,
            currency=self.currency,
            captured_at=self.captured_at,
            metrics=Metrics(
                spend=self.spend,
                impressions=self.impressions,
                clicks=self.clicks,
                conversions=self.conversions,
                revenue=self.revenue,
            ),
        )


class InvalidInsight(ValueError):
    """A message that is not a valid `metricx.insight.v1`; ``reason`` is for humans."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


MAX_REASON_ERRORS = 5


def _short(name: str, limit: int = 40) -> str:
    return name if len(name) <= limit else f"{name[:limit]}…({len(name)} characters)"


def _describe(err: ValidationError) -> str:
    """Where and what, for the first few errors; never the input itself (a reason goes
    into a dead-letter header, and a field *name* can be as large as the message)."""
    errors = err.errors(include_url=False, include_input=False)
    parts = []
    for e in errors[:MAX_REASON_ERRORS]:
        loc = ".".join(_short(str(x)) for x in e["loc"]) or "message"
        parts.append(f"{loc}: {e['msg']}")
    if len(errors) > MAX_REASON_ERRORS:
        parts.append(f"and {len(errors) - MAX_REASON_ERRORS} more errors")
    return "; ".join(parts)


def _validate_model(value: bytes) -> Snapshot:
    """The contract's own validation (Pydantic): authoritative, and says why."""
    try:
        model = InsightV1.model_validate_json(value)
    except ValidationError as err:
        if any(e["type"] == "json_invalid" for e in err.errors()):
            raise InvalidInsight(f"not valid JSON: {err.errors()[0]['msg']}") from None
        if any(e["type"] == "model_type" for e in err.errors()):
            raise InvalidInsight("value is not a JSON object") from None
        raise InvalidInsight(_describe(err)) from None
    return model.to_snapshot()


def parse_insight(value: bytes | None, key: bytes | None, now: datetime | None = None) -> Snapshot:
    """Validate one raw Kafka message; raise :class:`InvalidInsight` with a readable reason.

    The common, well-formed message takes a fast path (:func:`schemas.fastpath.fast_parse`)
    that only ever *accepts* what the Pydantic model accepts; anything it is not sure of
    goes through the model, which decides and explains.

    ``key`` is the Kafka key, required: it must be ``provider:account_id:entity_id`` of
    the payload, or the entity's snapshots could land on several partitions, out of order.
    ``now`` enables the clock check (a snapshot from the future means a broken clock
    upstream, and would poison the "latest snapshot" of its series forever).
    """
    if value is None:
        raise InvalidInsight("message has no value (tombstone)")
    snap = fast_parse(value)
    if snap is None:
        snap = _validate_model(value)
    expected = insight_key(snap.provider, snap.account_id, snap.entity_id)
    if key is None:
        raise InvalidInsight(f"message has no key; expected {expected!r}")
    if key != expected.encode():
        raise InvalidInsight(f"key {preview(key)} does not match payload key {expected!r}")
    if now is not None and snap.captured_at > now + MAX_CLOCK_SKEW:
        raise InvalidInsight(
            f"captured_at {snap.captured_at.isoformat()} is in the future "
            f"(now {now.isoformat()})"
        )
    return snap

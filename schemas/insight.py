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

import functools
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from schemas.metrics import Metrics

INSIGHT_SCHEMA = "metricx.insight.v1"
RAW_TOPIC = "metricx.insights.raw"

PROVIDERS = ("meta", "google", "tiktok", "sim")
ENTITY_LEVELS = ("ad", "adset", "campaign", "asset_group")

# Bounds that separate a real ad account from a broken upstream.  A single entity
# spending ten billion a day in any currency, or reporting a restatement for a day more
# than ~13 months back, is a bug upstream, not data.
MAX_MONEY = Decimal("10000000000")
MAX_COUNT = 10**13
MAX_REPORT_AGE = timedelta(days=400)
MAX_CLOCK_SKEW = timedelta(minutes=10)

Provider = Literal["meta", "google", "tiktok", "sim"]
EntityLevel = Literal["ad", "adset", "campaign", "asset_group"]

# Ids are opaque platform strings; ':' is the Kafka key separator, so it is refused.
Id = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.\-]+$")]
Money = Annotated[
    Decimal,
    Field(ge=0, le=MAX_MONEY, max_digits=24, decimal_places=6, allow_inf_nan=False),
]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]


@functools.lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    """Resolve an IANA zone once; the pipeline asks for the same few zones constantly."""
    return ZoneInfo(name)


def _check_zone(name: str) -> str:
    try:
        zone(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown IANA timezone {name!r}") from None
    return name


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


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
    report_date: date
    timezone: Annotated[str, AfterValidator(_check_zone)]
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
    captured_at: Annotated[AwareDatetime, AfterValidator(_to_utc)]
    spend: Money
    impressions: Count
    clicks: Count
    conversions: Money
    revenue: Money

    @model_validator(mode="after")
    def _report_date_fits_capture(self) -> InsightV1:
        local_day = self.captured_at.astimezone(zone(self.timezone)).date()
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


def insight_key(provider: str, account_id: str, entity_id: str) -> str:
    """Kafka key: every snapshot of one entity lands on one partition, in order."""
    return f"{provider}:{account_id}:{entity_id}"


@dataclass(slots=True)
class Snapshot:
    """A validated cumulative snapshot, the unit the pure pipeline logic works on."""

    workspace_id: str
    provider: str
    account_id: str
    entity_level: str
    entity_id: str
    campaign_id: str
    adset_id: str | None
    report_date: date
    timezone: str
    currency: str
    captured_at: datetime
    metrics: Metrics

    @property
    def entity_key(self) -> str:
        """State key: one entity of one workspace (all its report dates)."""
        return f"{self.workspace_id}:{self.provider}:{self.account_id}:{self.entity_id}"

    def to_event(self) -> dict[str, Any]:
        """The JSON-ready wire form (money as decimal strings)."""
        m = self.metrics
        return {
            "schema": INSIGHT_SCHEMA,
            "workspace_id": self.workspace_id,
            "provider": self.provider,
            "account_id": self.account_id,
            "entity_level": self.entity_level,
            "entity_id": self.entity_id,
            "campaign_id": self.campaign_id,
            "adset_id": self.adset_id,
            "report_date": self.report_date.isoformat(),
            "timezone": self.timezone,
            "currency": self.currency,
            "captured_at": self.captured_at.astimezone(UTC)
            .isoformat()
            .replace("+00:00", "Z"),
            "spend": str(m.spend),
            "impressions": m.impressions,
            "clicks": m.clicks,
            "conversions": str(m.conversions),
            "revenue": str(m.revenue),
        }


class InvalidInsight(ValueError):
    """A message that is not a valid `metricx.insight.v1`; ``reason`` is for humans."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors(include_url=False, include_input=False):
        loc = ".".join(str(x) for x in e["loc"]) or "message"
        parts.append(f"{loc}: {e['msg']}")
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


def parse_insight(
    value: bytes | None, key: bytes | None = None, now: datetime | None = None
) -> Snapshot:
    """Validate one raw Kafka message; raise :class:`InvalidInsight` with a readable reason.

    The common, well-formed message takes a fast path (:func:`schemas.fastpath.fast_parse`)
    that only ever *accepts* what the Pydantic model accepts; anything it is not sure of
    goes through the model, which decides and explains.

    ``now`` enables the clock check (a snapshot from the future means a broken clock
    upstream, and would poison the "latest snapshot" of its series forever).
    """
    if value is None:
        raise InvalidInsight("message has no value (tombstone)")
    snap = fast_parse(value)
    if snap is None:
        snap = _validate_model(value)
    if key is not None:
        expected = insight_key(snap.provider, snap.account_id, snap.entity_id)
        try:
            got = key.decode()
        except UnicodeDecodeError:
            got = repr(key)
        if got != expected:
            raise InvalidInsight(f"key {got!r} does not match payload key {expected!r}")
    if now is not None and snap.captured_at > now + MAX_CLOCK_SKEW:
        raise InvalidInsight(
            f"captured_at {snap.captured_at.isoformat()} is in the future "
            f"(now {now.isoformat()})"
        )
    return snap


from schemas.fastpath import fast_parse  # noqa: E402  (fastpath imports this module)

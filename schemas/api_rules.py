"""Request and response models of the stop-loss API: rules, channels, alerts, dry-runs.

Rule bodies are ``schemas.rules.RuleIn`` (the contract shared with the pipeline), so the
API cannot accept a field the pipeline would not understand.  Money, conversions and
ratios are exact decimals serialised as strings, as everywhere else in the API; an
undefined ratio is ``null``.  Channel secrets (Slack webhook URLs, recipient lists) are
accepted here and never returned: a channel's response shows its status and last error.
"""

from __future__ import annotations

import re
import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from schemas.edge import NO_NUL
from schemas.rules import RuleV1

# ---- rules ---------------------------------------------------------------------------


class RuleOut(RuleV1):
    """A stored rule: exactly what ``metricx.rules`` carries, plus its bookkeeping.
    ``last_error``: why the pipeline disabled it (``status`` ``disabled``)."""

    last_error: str | None = None
    created_by: str | None = None
    created_at: datetime


class RuleList(BaseModel):
    rules: list[RuleOut]


class DryRunEntity(BaseModel):
    """One entity the rule would fire on now."""

    provider: str
    account_id: str
    level: Literal["ad", "adset", "campaign"]
    entity_id: str
    name: str | None = Field(description="from the synced entities table; null when not synced yet")
    campaign_id: str | None
    campaign_name: str | None
    adset_id: str | None
    currency: str
    observed: dict[str, Decimal | int | None] = Field(description="all measures and ratios; undefined ratios are null")


class DryRunOut(BaseModel):
    rule: str = Field(description="the conditions as text")
    window: str
    evaluated: int = Field(description="entities in scope with data in the window")
    no_delivery: int = Field(description="entities with no spend and no impressions in the window: never fire")
    guarded_out: int = Field(description="entities below the minimum-data guards")
    would_fire: int
    truncated: bool = Field(description="more entities were in scope than one dry-run evaluates")
    entities: list[DryRunEntity] = Field(description="those that would fire, by spend, at most `limit`")


# ---- channels ------------------------------------------------------------------------

Name = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True), NO_NUL]
# Deliberately plain: one mailbox, no display names, no quoted local parts, a dotted domain.
_EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SlackChannelIn(_Strict):
    kind: Literal["slack"]
    name: Name
    # The host is checked by the route against the allowed webhook hosts (a setting).
    webhook_url: Annotated[str, StringConstraints(min_length=10, max_length=500, strip_whitespace=True), NO_NUL]


class EmailChannelIn(_Strict):
    kind: Literal["email"]
    name: Name
    recipients: list[Annotated[str, StringConstraints(max_length=254, strip_whitespace=True), NO_NUL]] = Field(
        min_length=1, max_length=50)

    @field_validator("recipients")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        bad = [a for a in v if not _EMAIL.match(a)]
        if bad:
            raise ValueError(f"not an email address: {', '.join(repr(a) for a in bad[:5])}")
        seen: dict[str, str] = {}
        for a in v:
            seen.setdefault(a.lower(), a)
        return list(seen.values())


ChannelIn = Annotated[SlackChannelIn | EmailChannelIn, Field(discriminator="kind")]


class ChannelOut(BaseModel):
    """A channel without its secret; ``last_error`` says why a disabled channel stopped."""

    id: uuid.UUID
    kind: Literal["slack", "email"]
    name: str
    status: Literal["enabled", "disabled"]
    last_error: str | None
    disabled_at: datetime | None
    created_at: datetime
    updated_at: datetime


class ChannelList(BaseModel):
    channels: list[ChannelOut]


# ---- alerts --------------------------------------------------------------------------


class DeliveryOut(BaseModel):
    channel_id: uuid.UUID
    channel_name: str | None
    status: Literal["pending", "sending", "sent", "failed", "dead", "unknown"]
    attempts: int
    last_error: str | None
    sent_at: datetime | None


class AlertOut(BaseModel):
    fingerprint: str
    kind: Literal["fired", "recovered"]
    created_at: datetime
    rule_id: uuid.UUID
    rule_name: str | None
    conditions: str | None
    window: str | None
    provider: str
    account_id: str
    entity_level: str
    entity_id: str
    entity_name: str | None
    campaign_id: str
    report_date: date
    currency: str
    captured_at: datetime
    observed: dict[str, Decimal | int | None]
    deliveries: list[DeliveryOut]


class AlertList(BaseModel):
    alerts: list[AlertOut]


class EntityActionOut(BaseModel):
    id: int
    fingerprint: str
    provider: str
    account_id: str
    entity_level: str
    entity_id: str
    action: Literal["pause", "resume"]
    dry_run: bool
    outcome: Literal["done", "would", "failed"]
    error: str | None
    created_at: datetime


class EntityActionList(BaseModel):
    actions: list[EntityActionOut]

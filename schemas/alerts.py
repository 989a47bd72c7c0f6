"""The ``metricx.alert.v1`` event: one rule firing (or recovering) on one entity.

The pipeline writes it to the ``alerts`` table (primary key ``fingerprint``, in the same
transaction as the data that made it fire) and then publishes it on ``metricx.alerts``
keyed by workspace.  The fingerprint makes both idempotent: a replay after a crash
evaluates the same snapshots in the same order, produces the same fingerprints, and
inserts nothing new; consumers (the notifier) dedupe on it too.

Fingerprint: ``<rule id>|<provider>:<account>:<level>:<entity>|<slot>|<kind>`` where the
slot is the account day (``once_per_day``) or the ``captured_at`` of the snapshot that
fired (``cooldown``, ``every_time``), and a recovery notice reuses the fingerprint of the
alert it recovers with kind ``recovered``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from schemas.edge import Invalid, first_error

ALERT_SCHEMA = "metricx.alert.v1"
ALERTS_TOPIC = "metricx.alerts"
# The most alerts one Slack message carries (domain.alert_messages lays them out; the
# notifier's batch size is bounded by it).
MAX_ALERTS_PER_MESSAGE = 100

AlertKind = Literal["fired", "recovered"]


@dataclass(frozen=True, slots=True)
class EmailContent:
    """One alert as an email (``domain.alert_messages`` writes it, ``adapters.email`` sends it)."""

    subject: str
    text: str


@dataclass(frozen=True, slots=True)
class Alert:
    """Inside the pipeline: what fired, on what, with the numbers that made it fire."""

    fingerprint: str
    kind: str  # "fired" | "recovered"
    workspace_id: str
    rule_id: str
    rule_version: int
    rule_name: str
    conditions: str  # human text, e.g. "spend >= 80 AND conversions = 0"
    window: str  # "today" | "hours:6" | "days:3"
    provider: str
    account_id: str
    entity_level: str
    entity_id: str
    campaign_id: str
    adset_id: str | None
    report_date: date  # the account day the evaluation was made in
    timezone: str
    currency: str
    captured_at: datetime  # of the snapshot whose delta triggered the evaluation
    observed: tuple[tuple[str, Decimal | int | None], ...]  # metric -> value (ratios may be None)
    notify: tuple[str, ...]  # channel ids
    pause: bool
    pause_dry_run: bool
    resume: bool  # a recovery that should resume what the alert paused


def _num(v: Decimal | int | None) -> str | int | None:
    return v if v is None or isinstance(v, int) else str(v)


def alert_payload(a: Alert) -> dict[str, Any]:
    """The JSON of ``metricx.alert.v1`` (and of the ``alerts.payload`` column)."""
    return {
        "schema": ALERT_SCHEMA,
        "fingerprint": a.fingerprint,
        "kind": a.kind,
        "workspace_id": a.workspace_id,
        "rule_id": a.rule_id,
        "rule_version": a.rule_version,
        "rule_name": a.rule_name,
        "conditions": a.conditions,
        "window": a.window,
        "provider": a.provider,
        "account_id": a.account_id,
        "entity_level": a.entity_level,
        "entity_id": a.entity_id,
        "campaign_id": a.campaign_id,
        "adset_id": a.adset_id,
        "report_date": a.report_date.isoformat(),
        "timezone": a.timezone,
        "currency": a.currency,
        "captured_at": a.captured_at.isoformat().replace("+00:00", "Z"),
        "observed": {k: _num(v) for k, v in a.observed},
        "actions": {
            "notify": list(a.notify),
            "pause": {"enabled": a.pause, "dry_run": a.pause_dry_run},
            "resume": a.resume,
        },
    }


# ---- the edge: consumers validate what they read ------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PauseV1(_Strict):
    enabled: bool
    dry_run: bool


class ActionsV1(_Strict):
    notify: list[UUID]
    pause: PauseV1
    resume: bool


class AlertV1(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_: Literal["metricx.alert.v1"] = Field(alias="schema")
    fingerprint: Annotated[str, Field(min_length=1, max_length=600)]
    kind: AlertKind
    workspace_id: UUID
    rule_id: UUID
    rule_version: int
    rule_name: str
    conditions: str
    window: str
    provider: str
    account_id: str
    entity_level: str
    entity_id: str
    campaign_id: str
    adset_id: str | None
    report_date: date
    timezone: str
    currency: str
    captured_at: AwareDatetime
    observed: dict[str, Decimal | int | None]
    actions: ActionsV1


class InvalidAlert(Invalid):
    pass


def parse_alert(value: bytes | None) -> AlertV1:
    if not value:
        raise InvalidAlert("empty message")
    try:
        return AlertV1.model_validate_json(value)
    except ValidationError as exc:
        raise InvalidAlert(first_error(exc)) from None

"""The ``alerts`` table's one insert: by the pipeline, in the same transaction as the
rows that made the alert fire (``adapters.timescale``), and by the notifier, for an
alert it hears of first (``notifier.outbox``).  The fingerprint is the key, so a
replayed batch or a redelivered message inserts nothing (``schemas.alerts``)."""

from __future__ import annotations

import json
from typing import Any

from psycopg.types.json import Jsonb

from schemas.alerts import Alert, AlertV1, alert_payload

INSERT_ALERT = (
    "INSERT INTO alerts (fingerprint, workspace_id, rule_id, kind, provider, account_id, entity_level, "
    "entity_id, campaign_id, report_date, currency, captured_at, payload) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (fingerprint) DO NOTHING"
)


def alert_row(a: Alert) -> tuple[Any, ...]:
    """``INSERT_ALERT``'s parameters for an alert the pipeline made."""
    return (
        a.fingerprint, a.workspace_id, a.rule_id, a.kind, a.provider, a.account_id, a.entity_level,
        a.entity_id, a.campaign_id, a.report_date, a.currency, a.captured_at, Jsonb(alert_payload(a)),
    )


def message_row(a: AlertV1) -> tuple[Any, ...]:
    """``INSERT_ALERT``'s parameters for an alert read from ``metricx.alerts``."""
    payload = a.model_dump(mode="json", by_alias=True)
    return (
        a.fingerprint, a.workspace_id, a.rule_id, a.kind, a.provider, a.account_id, a.entity_level,
        a.entity_id, a.campaign_id, a.report_date, a.currency, a.captured_at, json.dumps(payload),
    )

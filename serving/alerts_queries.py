"""Reads of what the stop-loss pipeline and notifier stored: alerts (the pipeline's
``metricx.alert.v1`` payloads), their delivery outbox, and the entity action audit.

Used by ``GET /alerts``, ``GET /alerts/actions`` and the dashboard's alert feed.  The
payload is the contract (``schemas.alerts``); the typed columns beside it are only for
filtering and ordering.  Every query filters on the workspace in SQL.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Final

import psycopg

from schemas.api_rules import AlertOut, DeliveryOut, EntityActionOut

Conn = psycopg.Connection[dict[str, Any]]

ALERTS_SQL: Final = """
SELECT a.fingerprint, a.kind, a.created_at, a.rule_id, a.provider, a.account_id, a.entity_level, a.entity_id,
       a.campaign_id, a.report_date, a.currency, a.captured_at,
       a.payload ->> 'rule_name' AS rule_name, a.payload ->> 'conditions' AS conditions,
       a.payload ->> 'window' AS "window", coalesce(a.payload -> 'observed', '{}'::jsonb) AS observed,
       nullif(e.name, '') AS entity_name,
       coalesce((
         SELECT jsonb_agg(jsonb_build_object(
                  'channel_id', d.channel_id, 'channel_name', ch.name, 'status', d.status,
                  'attempts', d.attempts, 'last_error', d.last_error, 'sent_at', d.sent_at)
                ORDER BY d.created_at, d.channel_id)
         FROM alert_deliveries d LEFT JOIN channels ch ON ch.id = d.channel_id AND ch.workspace_id = a.workspace_id
         WHERE d.fingerprint = a.fingerprint AND d.workspace_id = a.workspace_id
       ), '[]'::jsonb) AS deliveries
FROM alerts a
LEFT JOIN entities e ON e.workspace_id = a.workspace_id AND e.provider = a.provider
     AND e.account_id = a.account_id AND e.entity_id = a.entity_id
WHERE a.workspace_id = %(ws)s
  AND (%(rule)s::uuid IS NULL OR a.rule_id = %(rule)s)
  AND (%(kind)s::text IS NULL OR a.kind = %(kind)s)
  AND (%(since)s::timestamptz IS NULL OR a.created_at >= %(since)s)
ORDER BY a.created_at DESC, a.fingerprint DESC
LIMIT %(limit)s
"""

ACTIONS_SQL: Final = """
SELECT id, fingerprint, provider, account_id, entity_level, entity_id, action, dry_run, outcome, error, created_at
FROM entity_actions
WHERE workspace_id = %(ws)s AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s)
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s
"""


def alerts(conn: Conn, ws: uuid.UUID, *, limit: int, rule_id: uuid.UUID | None = None, kind: str | None = None,
           since: datetime | None = None) -> list[AlertOut]:
    """Newest first, each with its deliveries (one per channel) and the entity's name
    when the pollers synced it."""
    rows = conn.execute(ALERTS_SQL, {"ws": ws, "rule": rule_id, "kind": kind, "since": since,
                                     "limit": limit}).fetchall()
    return [AlertOut(**{k: v for k, v in r.items() if k != "deliveries"},
                     deliveries=[DeliveryOut.model_validate(d) for d in r["deliveries"]]) for r in rows]


def latest_alerts(conn: Conn, ws: uuid.UUID, limit: int = 10) -> list[AlertOut]:
    """The dashboard's alert feed."""
    return alerts(conn, ws, limit=limit)


def entity_actions(conn: Conn, ws: uuid.UUID, *, limit: int, since: datetime | None = None) -> list[EntityActionOut]:
    rows = conn.execute(ACTIONS_SQL, {"ws": ws, "since": since, "limit": limit}).fetchall()
    return [EntityActionOut.model_validate(r) for r in rows]

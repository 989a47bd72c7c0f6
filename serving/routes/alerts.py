"""``GET /alerts`` and ``GET /alerts/actions``: what fired, whether it was delivered,
and what was paused or resumed (dry runs included) — read-only, for every member."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import Query

from schemas.api_rules import AlertList, EntityActionList
from schemas.edge import ApiDateTime
from serving import alerts_queries as q
from serving.deps import Conn, CurrentWorkspace
from serving.json_route import api_router

router = api_router(tags=["alerts"])

Limit = Annotated[int, Query(ge=1, le=500)]
Since = Annotated[ApiDateTime | None, Query(description="only those stored at or after this instant (ISO 8601)")]


@router.get("/alerts", response_model=AlertList)
def list_alerts(
    ws: CurrentWorkspace,
    conn: Conn,
    rule_id: Annotated[uuid.UUID | None, Query()] = None,
    kind: Annotated[Literal["fired", "recovered"] | None, Query()] = None,
    since: Since = None,
    limit: Limit = 50,
) -> AlertList:
    """Newest first, each with the numbers that fired it and one delivery status per
    channel (``pending``/``sending``/``sent``/``failed``/``dead``/``unknown``)."""
    return AlertList(alerts=q.alerts(conn, ws.id, limit=limit, rule_id=rule_id, kind=kind, since=since))


@router.get("/alerts/actions", response_model=EntityActionList)
def list_actions(ws: CurrentWorkspace, conn: Conn, since: Since = None, limit: Limit = 50) -> EntityActionList:
    """The audit of pause/resume actions taken (or, in dry-run mode, that would have
    been taken) on ad platform entities."""
    return EntityActionList(actions=q.entity_actions(conn, ws.id, limit=limit, since=since))

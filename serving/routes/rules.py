"""``/rules``: stop-loss rules of a workspace — CRUD, pause/resume and dry-runs.

Reads are open to every member; writes need the owner or admin role.  A write commits
the row and then publishes the rule (or a tombstone) on the compacted rules topic and
waits for the broker's ack, because "saved" must mean "the pipeline will evaluate it".
If the publish fails the answer is 503 "saved but not yet live; retry": the row is
committed, and repeating the request (an unchanged PUT, a second pause, a second
DELETE) publishes the database's current state again.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import HTTPException, Query, Request, Response

from schemas.api_rules import DryRunOut, RuleList, RuleOut
from schemas.rules import RuleIn, RuleV1, to_rule
from serving import rules_store as store
from serving.auth import Caller
from serving.container import services_of
from serving.deps import Conn, CurrentCaller, CurrentWorkspace, WritableWorkspace, WriteConn
from serving.dryrun import dry_run
from serving.json_route import api_router

log = logging.getLogger(__name__)
router = api_router(tags=["rules"])

NOT_FOUND = "rule not found"
NOT_LIVE = "saved but not yet live; retry"
Limit = Annotated[int, Query(ge=1, le=500, description="entities listed (those that would fire, by spend)")]
Responses = dict[int | str, dict[str, Any]]
_503: Responses = {503: {"description": NOT_LIVE + " (the change is stored; repeating the request publishes it)"}}
_422: Responses = {422: {"description": "invalid rule, a rule over the limits (conditions, size, rules per "
                                        "workspace or per ad account), or a channel id that is not a channel "
                                        "of this workspace"}}


def _publisher(request: Request) -> store.RulePublisher:
    return services_of(request.app).rules_publisher


def _check_channels(conn: Conn, ws: uuid.UUID, body: RuleIn) -> None:
    missing = store.foreign_channels(conn, ws, body.actions.notify)
    if missing:
        raise HTTPException(422, [{
            "type": "value_error", "loc": ["body", "actions", "notify"],
            "msg": "not a channel of this workspace: " + ", ".join(str(m) for m in missing),
            "input": [str(m) for m in missing],
        }])


def _limit(exc: store.RuleLimit) -> HTTPException:
    return HTTPException(422, [{"type": "value_error", "loc": ["body"], "msg": str(exc), "input": None}])


def _publish(request: Request, conn: WriteConn, ws: uuid.UUID, rule_id: uuid.UUID) -> RuleOut | None:
    try:
        return store.publish_current(conn, _publisher(request), ws, rule_id)
    except store.PublishFailed as exc:
        log.error("rule saved but not published", extra={"rule_id": str(rule_id), "error": str(exc)})
        # Location names the stored rule, so a client whose POST got this answer
        # retries with a PUT of the same body instead of creating a second rule.
        raise HTTPException(503, NOT_LIVE, headers={"Retry-After": "5", "Location": f"/rules/{rule_id}"}) from None


def _who(caller: Caller) -> str:
    return caller.sub


@router.get("/rules", response_model=RuleList)
def list_rules(ws: CurrentWorkspace, conn: Conn) -> RuleList:
    return RuleList(rules=store.list_rules(conn, ws.id))


@router.post("/rules", response_model=RuleOut, status_code=201, responses={**_422, **_503})
def create_rule(request: Request, body: RuleIn, caller: CurrentCaller, ws: WritableWorkspace, conn: Conn,
                wconn: WriteConn) -> RuleOut:
    _check_channels(conn, ws.id, body)
    try:
        rule_id = store.insert_rule(wconn, ws.id, body, _who(caller))
    except store.RuleLimit as exc:
        raise _limit(exc) from None
    log.info("rule created", extra={"workspace_id": str(ws.id), "rule_id": str(rule_id)})
    out = _publish(request, wconn, ws.id, rule_id)
    if out is None:  # deleted between the commit and the publish
        raise HTTPException(409, "the rule was deleted meanwhile")
    return out


@router.post("/rules/dry-run", response_model=DryRunOut, responses=_422)
def dry_run_body(body: RuleIn, ws: CurrentWorkspace, conn: Conn, limit: Limit = 100) -> DryRunOut:
    """Evaluate a rule that is not saved yet against the stored data: which entities
    would fire now, with the numbers.  Any member may dry-run."""
    rule = to_rule(RuleV1(**body.model_dump(), id=uuid.uuid4(), workspace_id=ws.id, updated_at=datetime.now(UTC)))
    return dry_run(conn, ws.id, rule, limit)


@router.get("/rules/{rule_id}", response_model=RuleOut)
def get_rule(rule_id: uuid.UUID, ws: CurrentWorkspace, conn: Conn) -> RuleOut:
    out = store.get_rule(conn, ws.id, rule_id)
    if out is None:
        raise HTTPException(404, NOT_FOUND)
    return out


@router.put("/rules/{rule_id}", response_model=RuleOut, responses={**_422, **_503})
def update_rule(request: Request, rule_id: uuid.UUID, body: RuleIn, ws: WritableWorkspace, conn: Conn,
                wconn: WriteConn) -> RuleOut:
    """Replace the rule's definition; the version goes up when anything changed (an
    identical PUT keeps it and publishes again: the way to retry after a 503)."""
    _check_channels(conn, ws.id, body)
    try:
        updated = store.update_rule(wconn, ws.id, rule_id, body)
    except store.RuleLimit as exc:
        raise _limit(exc) from None
    if not updated:
        raise HTTPException(404, NOT_FOUND)
    out = _publish(request, wconn, ws.id, rule_id)
    if out is None:
        raise HTTPException(404, NOT_FOUND)
    return out


def _set_status(request: Request, rule_id: uuid.UUID, ws: WritableWorkspace, wconn: WriteConn,
                status: str) -> RuleOut:
    if not store.set_status(wconn, ws.id, rule_id, status):
        raise HTTPException(404, NOT_FOUND)
    out = _publish(request, wconn, ws.id, rule_id)
    if out is None:
        raise HTTPException(404, NOT_FOUND)
    return out


@router.post("/rules/{rule_id}/pause", response_model=RuleOut, responses=_503)
def pause_rule(request: Request, rule_id: uuid.UUID, ws: WritableWorkspace, wconn: WriteConn) -> RuleOut:
    """Stop evaluating the rule (the pipeline forgets its open alerts)."""
    return _set_status(request, rule_id, ws, wconn, "paused")


@router.post("/rules/{rule_id}/resume", response_model=RuleOut, responses=_503)
def resume_rule(request: Request, rule_id: uuid.UUID, ws: WritableWorkspace, wconn: WriteConn) -> RuleOut:
    """Evaluate the rule again — a paused one, or one the pipeline disabled (its
    ``last_error`` said why; it is cleared)."""
    return _set_status(request, rule_id, ws, wconn, "active")


@router.delete("/rules/{rule_id}", status_code=204, response_class=Response, responses=_503)
def delete_rule(request: Request, rule_id: uuid.UUID, ws: WritableWorkspace, wconn: WriteConn) -> Response:
    """Delete and publish a tombstone.  A rule that is not (or no longer) in this
    workspace is a 404, but the database's state of that id is published again first:
    repeating a DELETE that got a 503 re-sends the tombstone (for an id some other
    workspace owns, that re-sends its unchanged rule, which changes nothing)."""
    deleted = store.delete_rule(wconn, ws.id, rule_id)
    _publish(request, wconn, ws.id, rule_id)
    if not deleted:
        raise HTTPException(404, NOT_FOUND)
    return Response(status_code=204)


@router.post("/rules/{rule_id}/dry-run", response_model=DryRunOut)
def dry_run_saved(rule_id: uuid.UUID, ws: CurrentWorkspace, conn: Conn, limit: Limit = 100) -> DryRunOut:
    """Evaluate a saved rule (paused ones too) against the stored data."""
    out = store.get_rule(conn, ws.id, rule_id)
    if out is None:
        raise HTTPException(404, NOT_FOUND)
    return dry_run(conn, ws.id, to_rule(out), limit)

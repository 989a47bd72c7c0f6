"""``GET /stream`` (server-sent events) and ``POST /stream/token`` (its credential)."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Header, HTTPException, Request, Response
from sse_starlette import EventSourceResponse, ServerSentEvent

from schemas.api import StreamToken
from serving.auth import expires_at, mint_stream_token
from serving.deps import (
    STREAM_COOKIE,
    CurrentCaller,
    CurrentWorkspace,
    Services,
    StreamCaller,
    StreamWorkspace,
)
from serving.json_route import api_router
from serving.stream import events, is_stream_id
from serving.stream_guard import StreamGuard

log = logging.getLogger(__name__)
router = api_router(tags=["stream"])


@router.post("/stream/token", response_model=StreamToken)
def stream_token(request: Request, response: Response, services: Services, caller: CurrentCaller,
                 ws: CurrentWorkspace) -> StreamToken:
    """A short-lived token for one workspace's stream (EventSource cannot send an
    Authorization header): returned in the body for ``?token=`` and set as an HttpOnly,
    SameSite=Strict cookie scoped to ``/stream``."""
    s = services.settings.serving
    now = services.clock()
    minted = mint_stream_token(s, caller.sub, str(ws.id), now=now, not_after=int(caller.claims["exp"]))
    ttl = max(0, minted.exp - int(now))
    response.set_cookie(STREAM_COOKIE, minted.token, max_age=ttl, httponly=True,
                        samesite="strict", path="/stream", secure=request.url.scheme == "https")
    return StreamToken(token=minted.token, expires_in=ttl, stream_url=f"/stream?workspace_id={ws.id}")


@router.get("/stream", response_class=EventSourceResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "events: ready, update, reset, dropped, expired, revoked, heartbeat"}})
async def stream(
    request: Request,
    services: Services,
    caller: StreamCaller,
    ws: StreamWorkspace,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> EventSourceResponse:
    """Live ``update`` events for the workspace (coalesced), resumable with the
    ``Last-Event-ID`` header (or ``?last_event_id=``), ``heartbeat`` events in between.
    The stream ends with an ``expired`` event when its token expires and a ``revoked``
    event once its user is no longer a member (re-checked every METRICX_SSE_RECHECK_S):
    mint a new stream token and reconnect with Last-Event-ID."""
    resume = last_event_id or request.query_params.get("last_event_id")
    if resume is not None and not is_stream_id(resume):
        raise HTTPException(422, "Last-Event-ID must be a Redis stream id like 1700000000000-0 "
                                 "(two numbers below 2**64)")
    s = services.settings.serving
    hub = services.live_hub()
    memberships = services.memberships
    memberships.remember(caller.sub, ws.id, True)  # just resolved by StreamWorkspace

    async def still_member() -> bool:
        return await memberships.is_member(caller.sub, ws.id)

    guard = StreamGuard(expires_at(s, caller), s.sse_recheck_s, still_member, services.clock)
    client = await hub.subscribe(str(ws.id))
    return EventSourceResponse(
        events(hub, client, last_event_id=resume, coalesce_ms=s.sse_coalesce_ms, guard=guard),
        ping=s.sse_heartbeat_s,
        # A named event, not a comment: the page's EventSource can see it and tell
        # "live" from "stale".  No id, so it never moves Last-Event-ID.
        ping_message_factory=lambda: ServerSentEvent("{}", event="heartbeat"),
        send_timeout=30,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )

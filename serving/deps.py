"""Request dependencies: the app's services (``serving.container``), a database
connection, the authenticated caller and the workspace they may read.  Routes declare
what they need as ``Annotated`` types.

Every tenant-data route depends on :data:`CurrentWorkspace`, which resolves only if the
token's ``sub`` has a membership row for the requested workspace; queries then filter
on that workspace id in SQL.  All refusals use fixed bodies: a caller cannot tell an
expired token from a forged one, nor someone else's workspace from a missing one.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import psycopg
from fastapi import Depends, HTTPException, Query, Request
from fastapi.security import APIKeyCookie, APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer

from ground.settings import ServingSettings, Settings
from serving.auth import AuthError, Caller, verify_stream_token
from serving.container import AppServices, services_of
from serving.dashboard_service import DashboardService
from serving.db import ConnectionPool
from serving.stream import Hub

log = logging.getLogger(__name__)

UNAUTHENTICATED = "not authenticated"
FORBIDDEN = "no access to this workspace"
STREAM_COOKIE = "metricx_stream"


def unauthenticated() -> HTTPException:
    return HTTPException(401, UNAUTHENTICATED, headers={"WWW-Authenticate": "Bearer"})


def get_services(request: Request) -> AppServices:
    return services_of(request.app)


Services = Annotated[AppServices, Depends(get_services)]


def get_settings(services: Services) -> Settings:
    return services.settings


def get_serving_settings(services: Services) -> ServingSettings:
    return services.settings.serving


def get_dashboard(services: Services) -> DashboardService:
    return services.dashboard


def get_hub(services: Services) -> Hub:
    return services.live_hub()


AppSettings = Annotated[Settings, Depends(get_settings)]
ServingConfig = Annotated[ServingSettings, Depends(get_serving_settings)]
Dashboard = Annotated[DashboardService, Depends(get_dashboard)]
LiveHub = Annotated[Hub, Depends(get_hub)]


def get_conn(services: Services) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    """A pooled autocommit, read-only connection for the request (reads only)."""
    with services.pool.connection() as conn:
        yield conn


def get_write_conn(services: Services) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    """A pooled autocommit connection that may write, from the separate write pool;
    routes open an explicit ``conn.transaction()`` around what must be atomic."""
    with services.write_pool.connection() as conn:
        yield conn


# Documents the scheme in OpenAPI; auto_error=False so that a missing or non-Bearer
# header gets our uniform 401 rather than FastAPI's own 403.
bearer_scheme = HTTPBearer(auto_error=False, description="JWT from the configured issuer (Clerk-compatible)")
BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]


def get_caller(request: Request, credentials: BearerCredentials) -> Caller:
    """The verified bearer token's subject; 401 otherwise."""
    if credentials is None or not credentials.credentials.strip():
        log.info("request refused", extra={"reason": "no bearer token", "path": request.url.path})
        raise unauthenticated()
    verifier = services_of(request.app).verifier
    try:
        return verifier.verify(credentials.credentials.strip())
    except AuthError as exc:
        log.info("request refused", extra={"reason": str(exc), "path": request.url.path})
        raise unauthenticated() from None


stream_query = APIKeyQuery(name="token", auto_error=False, scheme_name="StreamToken",
                           description="short-lived token from POST /stream/token")
stream_cookie = APIKeyCookie(name=STREAM_COOKIE, auto_error=False, scheme_name="StreamCookie",
                             description="HttpOnly cookie set by POST /stream/token")


def get_stream_caller(
    request: Request,
    credentials: BearerCredentials,
    query_token: Annotated[str | None, Depends(stream_query)],
    cookie_token: Annotated[str | None, Depends(stream_cookie)],
) -> Caller:
    """For /stream: a bearer token, else the short-lived stream token from the query
    (``?token=``) or the HttpOnly cookie set by ``POST /stream/token``."""
    if request.headers.get("authorization"):
        return get_caller(request, credentials)
    token = query_token or cookie_token
    if not token:
        log.info("stream refused", extra={"reason": "no token"})
        raise unauthenticated()
    try:
        return verify_stream_token(services_of(request.app).settings.serving, token)
    except AuthError as exc:
        log.info("stream refused", extra={"reason": str(exc)})
        raise unauthenticated() from None


CurrentCaller = Annotated[Caller, Depends(get_caller)]
StreamCaller = Annotated[Caller, Depends(get_stream_caller)]
Conn = Annotated[psycopg.Connection[dict[str, Any]], Depends(get_conn)]
WriteConn = Annotated[psycopg.Connection[dict[str, Any]], Depends(get_write_conn)]


@dataclass(frozen=True, slots=True)
class Workspace:
    id: uuid.UUID
    name: str
    timezone: str
    role: str


MEMBERSHIP_SQL = """
SELECT w.id, w.name, w.timezone, m.role
FROM memberships m JOIN users u ON u.id = m.user_id JOIN workspaces w ON w.id = m.workspace_id
WHERE u.sub = %(sub)s AND m.workspace_id = %(ws)s
"""


def _requested_workspace(caller: Caller, workspace_id: str | None) -> uuid.UUID:
    raw = workspace_id or caller.claims.get("workspace_id")
    if not isinstance(raw, str) or not raw:
        raise HTTPException(400, "workspace_id is required (query parameter)")
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise HTTPException(422, "workspace_id must be a UUID") from None


def is_member(pool: ConnectionPool, sub: str, ws: uuid.UUID) -> bool:
    """Whether ``sub`` still has a membership in ``ws`` (an open stream re-checks this)."""
    with pool.connection() as conn:
        return conn.execute(MEMBERSHIP_SQL, {"sub": sub, "ws": ws}).fetchone() is not None


def resolve_workspace(conn: psycopg.Connection[dict[str, Any]], caller: Caller, ws: uuid.UUID) -> Workspace:
    row = conn.execute(MEMBERSHIP_SQL, {"sub": caller.sub, "ws": ws}).fetchone()
    if row is None:
        log.info("workspace refused", extra={"sub": caller.sub, "workspace_id": str(ws)})
        raise HTTPException(403, FORBIDDEN)
    return Workspace(row["id"], row["name"], row["timezone"], row["role"])


WorkspaceParam = Annotated[
    str | None,
    Query(description="Workspace to read; defaults to the token's workspace_id claim."),
]


def get_workspace(caller: CurrentCaller, conn: Conn, workspace_id: WorkspaceParam = None) -> Workspace:
    return resolve_workspace(conn, caller, _requested_workspace(caller, workspace_id))


def get_stream_workspace(request: Request, caller: StreamCaller, workspace_id: WorkspaceParam = None) -> Workspace:
    """Like :func:`get_workspace`, but the connection is returned *before* the response
    starts: a stream lasts hours and must not pin a database connection."""
    ws = _requested_workspace(caller, workspace_id)
    # A stream token is bound to the workspace it was minted for.
    bound = caller.claims.get("workspace_id") if caller.claims.get("aud") == "metricx-stream" else None
    if bound is not None and str(bound) != str(ws):
        raise HTTPException(403, FORBIDDEN)
    with services_of(request.app).pool.connection() as conn:
        return resolve_workspace(conn, caller, ws)


CurrentWorkspace = Annotated[Workspace, Depends(get_workspace)]

WRITER_ROLES = frozenset({"owner", "admin"})
WRITER_REQUIRED = "this needs the owner or admin role in the workspace"


def get_writable_workspace(ws: CurrentWorkspace) -> Workspace:
    """The workspace, if the caller may change its settings (rules, channels): viewers
    read only.  A member learns only that their role is too low."""
    if ws.role not in WRITER_ROLES:
        log.info("write refused", extra={"workspace_id": str(ws.id), "role": ws.role})
        raise HTTPException(403, WRITER_REQUIRED)
    return ws


WritableWorkspace = Annotated[Workspace, Depends(get_writable_workspace)]
StreamWorkspace = Annotated[Workspace, Depends(get_stream_workspace)]

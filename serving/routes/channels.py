"""``/channels``: where a workspace's alerts go (Slack incoming webhooks, email).

The secret (a webhook URL is a bearer credential; recipients are personal data) is
encrypted at rest by ``adapters.channels_store`` and never returned: a channel shows
its kind, name, status and ``last_error``, so a channel the notifier disabled after a
permanent Slack error is visible and can be re-enabled once fixed.

Slack webhooks must be ``https://hooks.slack.com/...``: the server posts alert text to
that URL, and accepting any URL would let a workspace admin make it call internal
addresses.  ``METRICX_SLACK_WEBHOOK_HOSTS`` adds hosts (plain http allowed for them) for
tests and development, e.g. ``127.0.0.1,localhost``.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any
from urllib.parse import urlsplit

from fastapi import HTTPException, Request, Response

from adapters import channels_store as store
from adapters.crypto import Keyring, TokenKeyError
from schemas.api_rules import ChannelIn, ChannelList, ChannelOut, EmailChannelIn
from serving import rules_store
from serving.container import services_of
from serving.deps import Conn, CurrentWorkspace, WritableWorkspace, WriteConn
from serving.json_route import api_router

log = logging.getLogger(__name__)
router = api_router(tags=["channels"])

SLACK_HOST = "hooks.slack.com"
NOT_FOUND = "channel not found"


def _keyring(request: Request) -> Keyring:
    """Loaded on first use: a server without channel keys still serves dashboards."""
    services = services_of(request.app)
    ring = services.keyring
    if ring is None:
        try:
            ring = services.keyring = Keyring.from_settings(services.settings.tokens)
        except TokenKeyError as exc:
            log.error("channel secrets cannot be encrypted", extra={"error": str(exc)})
            raise HTTPException(503, "channels need METRICX_TOKEN_KEYS configured on the server") from None
    return ring


def _invalid(field: str, msg: str, value: Any = None) -> HTTPException:
    return HTTPException(422, [{"type": "value_error", "loc": ["body", field], "msg": msg, "input": value}])


# One or more plain segments after /services/: no "." or ".." (the HTTP client would
# normalise them out of /services/), no percent-escapes, no empty segment.
_SLACK_PATH = re.compile(r"^/services(?:/[A-Za-z0-9_-]+)+$")
SLACK_FORM = f"must be a Slack incoming webhook: https://{SLACK_HOST}/services/..."


def check_webhook(url: str, extra_hosts: frozenset[str]) -> None:
    """Refuse (422) anything but a Slack incoming webhook, or a URL on an extra host.
    ``urlsplit`` and ``.port`` raise on malformed URLs (an unbalanced bracket, a port
    that is not a number or out of range): those are refusals too, never a 500."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError:
        raise _invalid("webhook_url", SLACK_FORM) from None
    if parts.username or parts.password:
        raise _invalid("webhook_url", "a webhook URL carries no user:password")
    if host in extra_hosts and parts.scheme in ("http", "https"):
        return
    if parts.scheme != "https" or host != SLACK_HOST or port not in (None, 443) \
            or not _SLACK_PATH.match(parts.path) or parts.fragment:
        raise _invalid("webhook_url", SLACK_FORM)


def _out(c: store.Channel) -> ChannelOut:
    return ChannelOut.model_validate(c, from_attributes=True)


@router.get("/channels", response_model=ChannelList)
def list_channels(ws: CurrentWorkspace, conn: Conn) -> ChannelList:
    return ChannelList(channels=[_out(c) for c in store.list_all(conn, ws.id)])


@router.post("/channels", response_model=ChannelOut, status_code=201,
             responses={422: {"description": "invalid webhook URL or email address"}})
def create_channel(request: Request, body: ChannelIn, ws: WritableWorkspace, wconn: WriteConn) -> ChannelOut:
    """Email recipients are stored comma-separated (the notifier splits on commas)."""
    if isinstance(body, EmailChannelIn):
        secret = ",".join(body.recipients)
    else:
        check_webhook(body.webhook_url, services_of(request.app).settings.serving.extra_webhook_hosts)
        secret = body.webhook_url
    ring = _keyring(request)
    with wconn.transaction():
        c = store.create(wconn, ring, ws.id, body.kind, body.name, secret)
    log.info("channel created", extra={"workspace_id": str(ws.id), "channel_id": str(c.id), "kind": c.kind})
    return _out(c)


@router.delete("/channels/{channel_id}", status_code=204, response_class=Response,
               responses={409: {"description": "rules still notify this channel"}})
def delete_channel(channel_id: uuid.UUID, ws: WritableWorkspace, wconn: WriteConn) -> Response:
    """Refused while a rule notifies the channel: its alerts would silently go nowhere."""
    with wconn.transaction():
        users = rules_store.rules_using_channel(wconn, ws.id, channel_id)
        if users:
            raise HTTPException(409, "channel is used by rules: " + ", ".join(repr(n) for n in users[:20]))
        if not store.delete(wconn, ws.id, channel_id):
            raise HTTPException(404, NOT_FOUND)
    return Response(status_code=204)


@router.post("/channels/{channel_id}/enable", response_model=ChannelOut)
def enable_channel(channel_id: uuid.UUID, ws: WritableWorkspace, wconn: WriteConn) -> ChannelOut:
    """Turn a disabled channel back on (after fixing what the error said)."""
    with wconn.transaction():
        if not store.enable(wconn, ws.id, channel_id):
            raise HTTPException(404, NOT_FOUND)
        c = store.get(wconn, ws.id, channel_id)
    assert c is not None
    return _out(c)

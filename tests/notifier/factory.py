"""Builders for alert payloads, workspaces, channels and ad-platform connections in a test database."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg

from adapters import channels_store as channels
from adapters import connections_store as store
from adapters.crypto import Keyring, generate_key
from schemas.alerts import AlertV1

KEY = generate_key()
WS = uuid.UUID("7b0c5a0e-8a51-4d43-9a52-3c5f2f0e7a10")
OTHER_WS = uuid.UUID("00000000-0000-4000-8000-000000000001")
RULE = "5d1f7c3a-1111-4b2c-9d3e-000000000001"
META_TOKEN = "EAAtok111secret"
GOOGLE_CID, GOOGLE_TOKEN, GOOGLE_DEV = "1234567890", "ya29.google-access-secret", "devtok-fake"


def keyring() -> Keyring:
    return Keyring.parse(f"k1:{KEY}", None)


def payload(i: int = 0, *, kind: str = "fired", notify: list[uuid.UUID] | None = None, ws: uuid.UUID = WS,
            pause: bool = False, dry_run: bool = True, resume: bool = False, entity: str | None = None,
            provider: str = "meta", account: str = "111", **over: Any) -> dict[str, Any]:
    entity = entity or f"2385{i:06d}"
    p: dict[str, Any] = {
        "schema": "metricx.alert.v1",
        "fingerprint": f"{RULE}|{provider}:{account}:ad:{entity}|2026-11-25|{kind}",
        "kind": kind,
        "workspace_id": str(ws),
        "rule_id": RULE,
        "rule_version": 3,
        "rule_name": "Spend without sales",
        "conditions": "spend >= 80 AND conversions = 0",
        "window": "today",
        "provider": provider,
        "account_id": account,
        "entity_level": "ad",
        "entity_id": entity,
        "campaign_id": "cmp-9",
        "adset_id": "set-4",
        "report_date": "2026-11-25",
        "timezone": "America/New_York",
        "currency": "USD",
        "captured_at": "2026-11-25T18:00:00Z",
        "observed": {"spend": "80.50", "conversions": 0, "revenue": "0", "roas": "0", "cpa": None},
        "actions": {"notify": [str(c) for c in (notify or [])], "pause": {"enabled": pause, "dry_run": dry_run},
                    "resume": resume},
    }
    p.update(over)
    return p


def alert(i: int = 0, **kw: Any) -> AlertV1:
    return AlertV1.model_validate(payload(i, **kw))


def workspace(conn: psycopg.Connection[Any], ws: uuid.UUID = WS) -> None:
    conn.execute("INSERT INTO workspaces (id, name) VALUES (%s, 'Shop') ON CONFLICT DO NOTHING", (ws,))


def channel(conn: psycopg.Connection[Any], kind: channels.ChannelKind, secret: str, *, ws: uuid.UUID = WS,
            name: str = "alerts") -> uuid.UUID:
    workspace(conn, ws)
    return channels.create(conn, keyring(), ws, kind, name, secret).id


def meta_connection(conn: psycopg.Connection[Any], account: str = "111", token: str = META_TOKEN) -> None:
    """The workspace's Meta ad account, as the pause/resume actions read it."""
    workspace(conn)
    store.add(conn, keyring(), store.NewConnection(workspace_id=WS, provider="meta", account_id=account,
                                                   tokens={"access_token": token}))


def google_connection(conn: psycopg.Connection[Any], customer: str = GOOGLE_CID,
                      login_customer_id: str | None = None) -> None:
    """The workspace's Google Ads customer, as the pause/resume actions read it."""
    workspace(conn)
    store.add(conn, keyring(), store.NewConnection(workspace_id=WS, provider="google", account_id=customer,
                                                   login_customer_id=login_customer_id,
                                                   tokens={"developer_token": GOOGLE_DEV,
                                                           "access_token": GOOGLE_TOKEN}))

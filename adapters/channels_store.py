"""Notification channels in PostgreSQL, their secret encrypted at rest.

A Slack incoming-webhook URL is a bearer credential (whoever has it can post into the
channel), so it is stored like an OAuth token: AES-256-GCM under the token keyring, the
associated data binding it to its workspace and channel id.  Email recipients go through
the same path, so there is one way to read a channel and nothing to forget.

Every function takes the workspace id and filters on it in SQL.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row

from adapters.crypto import Keyring

ChannelKind = Literal["slack", "email"]
_COLUMNS = "id, workspace_id, kind, name, status, last_error, disabled_at, created_at, updated_at"


@dataclass(frozen=True, slots=True)
class Channel:
    """A channel as the API shows it: never the secret."""

    id: uuid.UUID
    workspace_id: uuid.UUID
    kind: str
    name: str
    status: str  # "enabled" | "disabled"
    last_error: str | None
    disabled_at: datetime | None
    created_at: datetime
    updated_at: datetime


def _aad(workspace_id: uuid.UUID, channel_id: uuid.UUID) -> bytes:
    return f"metricx.channel.v1|{workspace_id}|{channel_id}".encode()


def _row(r: dict[str, Any]) -> Channel:
    return Channel(**{k: r[k] for k in Channel.__dataclass_fields__})


def create(conn: psycopg.Connection[Any], keyring: Keyring, workspace_id: uuid.UUID, kind: ChannelKind,
           name: str, secret: str) -> Channel:
    channel_id = uuid.uuid4()
    key_id, blob = keyring.encrypt(secret.encode(), _aad(workspace_id, channel_id))
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"INSERT INTO channels (id, workspace_id, kind, name, secret_key_id, secret_ciphertext) "
            f"VALUES (%s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
            (channel_id, workspace_id, kind, name, key_id, blob),
        )
        row = cur.fetchone()
    assert row is not None
    return _row(row)


def list_all(conn: psycopg.Connection[Any], workspace_id: uuid.UUID) -> list[Channel]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM channels WHERE workspace_id = %s ORDER BY created_at, id",
                    (workspace_id,))
        return [_row(r) for r in cur.fetchall()]


def get(conn: psycopg.Connection[Any], workspace_id: uuid.UUID, channel_id: uuid.UUID) -> Channel | None:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM channels WHERE workspace_id = %s AND id = %s",
                    (workspace_id, channel_id))
        row = cur.fetchone()
    return _row(row) if row else None


def delete(conn: psycopg.Connection[Any], workspace_id: uuid.UUID, channel_id: uuid.UUID) -> bool:
    cur = conn.execute("DELETE FROM channels WHERE workspace_id = %s AND id = %s", (workspace_id, channel_id))
    return cur.rowcount == 1


def enable(conn: psycopg.Connection[Any], workspace_id: uuid.UUID, channel_id: uuid.UUID) -> bool:
    """Turn a channel back on after its owner fixed what disabled it."""
    cur = conn.execute(
        "UPDATE channels SET status = 'enabled', last_error = NULL, disabled_at = NULL, updated_at = clock_timestamp() "
        "WHERE workspace_id = %s AND id = %s",
        (workspace_id, channel_id),
    )
    return cur.rowcount == 1


def disable(conn: psycopg.Connection[Any], workspace_id: uuid.UUID, channel_id: uuid.UUID, error: str) -> None:
    """A permanent delivery error (Slack 400/403/404/410, SMTP 5xx on every recipient):
    stop sending and keep the reason where the API and dashboard show it."""
    conn.execute(
        "UPDATE channels SET status = 'disabled', last_error = %s, disabled_at = clock_timestamp(), "
        "updated_at = clock_timestamp() WHERE workspace_id = %s AND id = %s",
        (error[:1000], workspace_id, channel_id),
    )


def secret(conn: psycopg.Connection[Any], keyring: Keyring, workspace_id: uuid.UUID, channel_id: uuid.UUID) -> str:
    """The decrypted webhook URL or recipient list; only the notifier calls this."""
    row = conn.execute(
        "SELECT secret_key_id, secret_ciphertext FROM channels WHERE workspace_id = %s AND id = %s",
        (workspace_id, channel_id),
    ).fetchone()
    if row is None:
        raise LookupError(f"channel {channel_id} not found in workspace {workspace_id}")
    return keyring.decrypt(row[0], bytes(row[1]), _aad(workspace_id, channel_id)).decode()

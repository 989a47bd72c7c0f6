"""The connections table: add, read with decrypted tokens, status, progress, key rotation.

Every per-connection query names its workspace; the only cross-workspace reads are the
scheduler's "what is due" and the key rotation, both system operations by design.
Tokens are JSON objects (Meta: ``{"access_token", "app_secret"?}``; Google:
``{"developer_token", "refresh_token" | "access_token", "client_id"?, "client_secret"?}``),
validated here at the edge, encrypted before they reach SQL.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal
from uuid import UUID

import psycopg
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from adapters.crypto import Keyring, TokenKeyError, aad_for
from adapters.entities import Entity
from adapters.google_ads.client import BARE_TOKEN_NOTE
from schemas.accounts import canonical_account_id

log = logging.getLogger(__name__)

Status = Literal["active", "needs_reauth", "throttled", "error"]
MAX_ERROR_CHARS = 500


class MetaTokens(BaseModel):
    model_config = ConfigDict(extra="forbid")
    access_token: str = Field(min_length=8)
    app_secret: str | None = None


class GoogleTokens(BaseModel):
    model_config = ConfigDict(extra="forbid")
    developer_token: str = Field(min_length=4)
    access_token: str | None = None
    refresh_token: str | None = None
    client_id: str | None = None
    client_secret: str | None = None

    @model_validator(mode="after")
    def _one_credential(self) -> GoogleTokens:
        if not (self.access_token or (self.refresh_token and self.client_id and self.client_secret)):
            raise ValueError("need access_token, or refresh_token with client_id and client_secret")
        return self


class NewConnection(BaseModel):
    """What `metricx connections add` accepts (and, later, the API)."""

    model_config = ConfigDict(extra="forbid")
    workspace_id: UUID
    provider: Literal["meta", "google"]
    # The platforms' own spellings (act_123, 123-456-7890) are accepted; stored canonical.
    account_id: str = Field(max_length=64)
    display_name: str = Field(default="", max_length=200)
    login_customer_id: str | None = Field(default=None, max_length=64)
    tokens: dict[str, Any]

    @field_validator("account_id")
    @classmethod
    def _canonical_account(cls, v: str, info: ValidationInfo) -> str:
        provider = info.data.get("provider")
        return canonical_account_id(provider, v) if provider else v

    @field_validator("login_customer_id")
    @classmethod
    def _canonical_login(cls, v: str | None) -> str | None:
        return None if v is None else canonical_account_id("google", v)

    @model_validator(mode="after")
    def _tokens_fit_provider(self) -> NewConnection:
        try:
            if self.provider == "meta":
                MetaTokens.model_validate(self.tokens)
            else:
                GoogleTokens.model_validate(self.tokens)
        except ValidationError as err:
            raise ValueError(f"{self.provider} tokens: {describe(err)}") from None
        if self.provider == "meta" and self.login_customer_id is not None:
            raise ValueError("login_customer_id is a Google Ads setting")
        return self


def describe(err: ValidationError) -> str:
    """Readable reasons without echoing any input (inputs may be tokens)."""
    return "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'input'}: {e['msg']}"
                     for e in err.errors(include_url=False, include_input=False, include_context=False))


@dataclass
class Connection:
    workspace_id: str
    provider: str
    account_id: str
    display_name: str
    timezone: str | None
    currency: str | None
    login_customer_id: str | None
    status: str
    last_error: str | None
    tokens: dict[str, Any] = field(repr=False)
    hot_next_run_at: datetime | None = None
    warm_next_run_at: datetime | None = None
    throttled_until: datetime | None = None
    backfill_from: date | None = None
    backfill_done_through: date | None = None
    backfill_until: date | None = None
    backfill_days: int | None = None  # requested by `connections add --backfill-days`, not started


COLUMNS = ("workspace_id::text, provider, account_id, display_name, timezone, currency, login_customer_id, "
           "status, last_error, token_key_id, token_ciphertext, hot_next_run_at, warm_next_run_at, "
           "throttled_until, backfill_from, backfill_done_through, backfill_until, backfill_days")


def _row(keys: Keyring, r: tuple[Any, ...]) -> Connection:
    ws, prov, acct = r[0], r[1], r[2]
    plain = keys.decrypt(r[9], bytes(r[10]), aad_for(ws, prov, acct))
    return Connection(ws, prov, acct, r[3], r[4], r[5], r[6], r[7], r[8], json.loads(plain),
                      r[11], r[12], r[13], r[14], r[15], r[16], r[17])


def credential_note(new: NewConnection) -> str | None:
    """A warning about the credentials, shown in the status (never token material): a
    Google connection without a refresh token stops within the hour."""
    if new.provider == "google":
        g = GoogleTokens.model_validate(new.tokens)
        if not (g.refresh_token and g.client_id and g.client_secret):
            return BARE_TOKEN_NOTE
    return None


def add(conn: psycopg.Connection[Any], keys: Keyring, new: NewConnection) -> None:
    """Insert or replace a connection's tokens (re-connecting resets the status)."""
    ws = str(new.workspace_id)
    kid, blob = keys.encrypt(json.dumps(new.tokens, separators=(",", ":")).encode(),
                             aad_for(ws, new.provider, new.account_id))
    conn.execute(
        """INSERT INTO connections (workspace_id, provider, account_id, display_name, login_customer_id,
                                    token_key_id, token_ciphertext, credential_note)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
           ON CONFLICT (workspace_id, provider, account_id) DO UPDATE SET
             display_name = EXCLUDED.display_name, login_customer_id = EXCLUDED.login_customer_id,
             token_key_id = EXCLUDED.token_key_id, token_ciphertext = EXCLUDED.token_ciphertext,
             credential_note = EXCLUDED.credential_note,
             status = 'active', last_error = NULL, throttled_until = NULL, updated_at = now()""",
        (ws, new.provider, new.account_id, new.display_name, new.login_customer_id, kid, blob,
         credential_note(new)),
    )
    log.info("connection saved", extra={"workspace_id": ws, "provider": new.provider,
                                        "account_id": new.account_id, "token_key_id": kid})


def get(conn: psycopg.Connection[Any], keys: Keyring, workspace_id: str, provider: str, account_id: str) -> Connection | None:
    r = conn.execute(f"SELECT {COLUMNS} FROM connections WHERE workspace_id = %s AND provider = %s AND account_id = %s",
                     (workspace_id, provider, account_id)).fetchone()
    return _row(keys, r) if r else None


def due(conn: psycopg.Connection[Any], keys: Keyring, now: datetime, loop: Literal["hot", "warm"], limit: int = 1000) -> list[Connection]:
    """Connections whose ``loop`` run is due: active ones, and throttled / errored ones
    once their pause is over; ``needs_reauth`` waits for a human to reconnect.
    System-wide by design: the scheduler serves every workspace."""
    col = "hot_next_run_at" if loop == "hot" else "warm_next_run_at"
    rows = conn.execute(
        f"""SELECT {COLUMNS} FROM connections
            WHERE status IN ('active', 'throttled', 'error') AND coalesce(throttled_until, '-infinity') <= %s
              AND {col} <= %s ORDER BY {col} LIMIT %s""", (now, now, limit)).fetchall()
    out: list[Connection] = []
    for r in rows:
        try:
            out.append(_row(keys, r))
        except TokenKeyError as err:
            # One undecryptable token (a key id missing from METRICX_TOKEN_KEYS) must not
            # stop every other connection: surface it on the row and retry in an hour.
            log.error("connection token cannot be decrypted", extra={
                "workspace_id": r[0], "provider": r[1], "account_id": r[2], "token_key_id": r[9]})
            conn.execute(
                "UPDATE connections SET status = 'error', last_error = %s, throttled_until = %s, updated_at = now() "
                "WHERE workspace_id = %s AND provider = %s AND account_id = %s",
                (str(err), now + timedelta(hours=1), r[0], r[1], r[2]))
    return out


def set_account_info(conn: psycopg.Connection[Any], workspace_id: str, provider: str, account_id: str,
                     timezone: str, currency: str) -> None:
    conn.execute("UPDATE connections SET timezone = %s, currency = %s, updated_at = now() "
                 "WHERE workspace_id = %s AND provider = %s AND account_id = %s",
                 (timezone, currency, workspace_id, provider, account_id))


# Calls are counted per UTC day (the platforms' quotas roll over on their own clocks;
# this is the operator's view of how busy a connection is).
_ADD_CALLS = ("api_calls_today = CASE WHEN api_calls_day = %s::date THEN api_calls_today + %s ELSE %s END, "
              "api_calls_day = %s::date")


def record_success(conn: psycopg.Connection[Any], c: Connection, now: datetime, loop: Literal["hot", "warm", "backfill"],
                   next_run: datetime | None, calls: int, done_through: date | None = None, rows: int = 0,
                   pacing_note: str | None = None) -> None:
    """A sync went through: status active, the loop's next run, ``calls`` counted, for a
    backfill chunk the progress (``done_through``, ``rows`` read), and for the hot loop
    why its next read is late (``pacing_note``; None: on time)."""
    col = {"hot": "hot_next_run_at", "warm": "warm_next_run_at", "backfill": "hot_next_run_at"}[loop]
    conn.execute(
        f"""UPDATE connections SET status = 'active', last_error = NULL, throttled_until = NULL,
              last_sync_at = %s, last_success_at = %s, {col} = coalesce(%s, {col}),
              backfill_done_through = coalesce(%s, backfill_done_through),
              backfill_rows = backfill_rows + %s,
              pacing_note = CASE WHEN %s THEN %s ELSE pacing_note END,
              {_ADD_CALLS}, updated_at = now()
            WHERE workspace_id = %s AND provider = %s AND account_id = %s""",
        (now, now, next_run, done_through, rows, loop == "hot", pacing_note[:MAX_ERROR_CHARS] if pacing_note else None,
         now.date(), calls, calls, now.date(), c.workspace_id, c.provider, c.account_id))


def defer_warm(conn: psycopg.Connection[Any], c: Connection, until: datetime) -> None:
    """The warm loop waits until ``until``; status and the hot loop are untouched."""
    conn.execute("UPDATE connections SET warm_next_run_at = %s, updated_at = now() "
                 "WHERE workspace_id = %s AND provider = %s AND account_id = %s",
                 (until, c.workspace_id, c.provider, c.account_id))


def record_failure(conn: psycopg.Connection[Any], c: Connection, now: datetime, status: Status, message: str,
                   retry_after_s: float | None = None, calls: int = 0) -> None:
    """A sync failed: its status and message, when to retry, and the ``calls`` it made."""
    until = now + timedelta(seconds=retry_after_s) if retry_after_s else None
    conn.execute(
        f"""UPDATE connections SET status = %s, last_error = %s, last_sync_at = %s, throttled_until = %s,
              {_ADD_CALLS}, updated_at = now()
            WHERE workspace_id = %s AND provider = %s AND account_id = %s""",
        (status, message[:MAX_ERROR_CHARS], now, until, now.date(), calls, calls, now.date(),
         c.workspace_id, c.provider, c.account_id))


def add_calls(conn: psycopg.Connection[Any], c: Connection, now: datetime, calls: int) -> None:
    """Count calls made outside a sync's success or failure (a lookup, a deferred loop)."""
    conn.execute(f"UPDATE connections SET {_ADD_CALLS}, updated_at = now() "
                 "WHERE workspace_id = %s AND provider = %s AND account_id = %s",
                 (now.date(), calls, calls, now.date(), c.workspace_id, c.provider, c.account_id))


def request_backfill(conn: psycopg.Connection[Any], workspace_id: str, provider: str, account_id: str,
                     days: int) -> None:
    """Record ``connections add --backfill-days``: a count of the account's days, turned
    into dates by the first backfill (only it knows the account's zone)."""
    conn.execute("UPDATE connections SET backfill_days = %s, updated_at = now() "
                 "WHERE workspace_id = %s AND provider = %s AND account_id = %s",
                 (days, workspace_id, provider, account_id))


def start_backfill(conn: psycopg.Connection[Any], c: Connection, since: date, until: date, now: datetime,
                   resume_after: date | None = None) -> int:
    """A backfill run of ``since`` .. ``until`` begins (a new range: progress reset; the
    same range resumed: progress kept, ``resume_after`` the last day already read).
    Returns the rows already read in the range (0 for a new one)."""
    run_from = since if resume_after is None else resume_after + timedelta(days=1)
    r = conn.execute(
        """UPDATE connections SET backfill_from = %s, backfill_until = %s, backfill_days = NULL,
              backfill_done_through = %s,
              backfill_rows = CASE WHEN %s::date IS NULL THEN 0 ELSE backfill_rows END,
              backfill_run_started_at = %s, backfill_run_from = %s, updated_at = now()
            WHERE workspace_id = %s AND provider = %s AND account_id = %s RETURNING backfill_rows""",
        (since, until, resume_after, resume_after, now, run_from, c.workspace_id, c.provider, c.account_id)).fetchone()
    return int(r[0]) if r else 0


def status_rows(conn: psycopg.Connection[Any], workspace_id: str | None = None,
                now: datetime | None = None) -> list[dict[str, Any]]:
    """The stored status of each connection: no token material, ever.  ``api_calls_today``
    is as of ``now`` (default: the database's clock, kept as ``at``); what it means for
    freshness and backfill progress is ``pollers.status``'s business."""
    where, args = ("WHERE workspace_id = %s", (workspace_id,)) if workspace_id else ("", ())
    cur = conn.execute(
        f"""SELECT workspace_id::text, provider, account_id, display_name, timezone, currency, status, last_error,
                   throttled_until, last_success_at, hot_next_run_at, warm_next_run_at, pacing_note, backfill_days,
                   backfill_from, backfill_until, backfill_done_through, backfill_rows, backfill_run_started_at,
                   backfill_run_from, api_calls_today, api_calls_day, token_key_id, credential_note, now() AS db_now
            FROM connections {where} ORDER BY workspace_id, provider, account_id""", args)
    names = [d.name for d in cur.description or ()]
    out = []
    for r in cur.fetchall():
        row = dict(zip(names, r, strict=True))
        at = now or row.pop("db_now")
        row.pop("db_now", None)
        if row["api_calls_day"] is not None and row["api_calls_day"] != at.astimezone(UTC).date():
            row["api_calls_today"] = 0  # counted on another (UTC) day
        row["at"] = at
        out.append(row)
    return out


def reencrypt_all(conn: psycopg.Connection[Any], keys: Keyring) -> int:
    """Re-encrypt every token not under the active key; returns how many moved.  Rows are
    locked while rewritten, so a concurrent `connections add` is never lost."""
    rows = conn.execute(
        "SELECT workspace_id::text, provider, account_id, token_key_id, token_ciphertext FROM connections "
        "WHERE token_key_id <> %s FOR UPDATE", (keys.active,)).fetchall()
    for ws, prov, acct, kid, blob in rows:
        aad = aad_for(ws, prov, acct)
        new_kid, new_blob = keys.encrypt(keys.decrypt(kid, bytes(blob), aad), aad)
        conn.execute("UPDATE connections SET token_key_id = %s, token_ciphertext = %s, updated_at = now() "
                     "WHERE workspace_id = %s AND provider = %s AND account_id = %s",
                     (new_kid, new_blob, ws, prov, acct))
    log.info("tokens re-encrypted", extra={"rows": len(rows), "token_key_id": keys.active})
    return len(rows)


def upsert_entities(conn: psycopg.Connection[Any], workspace_id: str, provider: str, account_id: str,
           entities: Sequence[Entity]) -> int:
    if not entities:
        return 0
    with conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO entities (workspace_id, provider, account_id, entity_id, entity_level, name, status,
                                     campaign_id, adset_id, synced_at)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, now())
               ON CONFLICT (workspace_id, provider, account_id, entity_id) DO UPDATE SET
                 entity_level = EXCLUDED.entity_level, name = EXCLUDED.name, status = EXCLUDED.status,
                 campaign_id = EXCLUDED.campaign_id, adset_id = EXCLUDED.adset_id, synced_at = now()""",
            [(workspace_id, provider, account_id, e.entity_id, e.entity_level, e.name, e.status, e.campaign_id,
              e.adset_id) for e in entities])
    return len(entities)


def entities_for_account(conn: psycopg.Connection[Any], workspace_id: str, provider: str, account_id: str) -> list[Entity]:
    rows = conn.execute(
        "SELECT entity_id, entity_level, name, status, campaign_id, adset_id FROM entities "
        "WHERE workspace_id = %s AND provider = %s AND account_id = %s ORDER BY entity_level, entity_id",
        (workspace_id, provider, account_id)).fetchall()
    return [Entity(*r) for r in rows]

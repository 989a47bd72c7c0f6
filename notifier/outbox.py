"""The delivery outbox (``alert_deliveries``): one row per (alert, channel).

The rule that makes delivery exactly-once-or-visible: a delivery is *claimed* (status
``sending``, attempts + 1) in a transaction that commits before anything is sent.  A crash
after that commit can therefore never send twice: the row is not due any more.  The price
is an honest gap: a crash between the commit and the 'sent' mark leaves the row
``sending``; once its lease (``next_attempt_at`` of a claimed row = claim time + lease)
expires, :func:`expire_sending` turns it ``unknown`` — surfaced, never resent by itself.
The window is kept small: rows are claimed per channel, only as many as one message
carries, right before that message goes out, and marked right after it.

Per channel, deliveries are serialized: the claim locks the channel row, and a channel with
a live ``sending`` lease or a ``failed`` row still waiting (429 Retry-After, 5xx backoff)
is not claimed at all — so a Retry-After is honoured for every alert of the webhook, also
by another notifier process or after a restart.  Ingest holds a share lock on the channels
it queues on until it commits; a claim skips such a channel for that moment, and a
sender disabling it waits, so nothing is queued on a channel behind its final sweep.

Functions take a connection in autocommit mode; each unit of work is its own transaction.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from adapters import channels_store as channels
from adapters.alerts_store import INSERT_ALERT, message_row
from ground.metrics import DELIVERIES
from schemas.alerts import AlertV1

log = logging.getLogger("metricx.notifier")

MAX_ERROR_CHARS = 1000


@dataclass(frozen=True, slots=True)
class IngestResult:
    alert_created: bool  # False when the pipeline (or an earlier copy) wrote it already
    queued: list[uuid.UUID] = field(default_factory=list)
    dead: list[uuid.UUID] = field(default_factory=list)  # disabled channels, recorded as dead
    ignored: list[uuid.UUID] = field(default_factory=list)  # unknown or another workspace's


@dataclass(frozen=True, slots=True)
class Claimed:
    fingerprint: str
    channel_id: uuid.UUID
    workspace_id: uuid.UUID
    channel_kind: str
    attempts: int  # including this one
    payload: dict[str, Any]


def _idle(conn: psycopg.Connection[Any]) -> None:
    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise RuntimeError("outbox functions need an idle connection (autocommit), so their transaction commits")


def ingest(conn: psycopg.Connection[Any], alert: AlertV1) -> IngestResult:
    """Record the alert (if the pipeline did not already) and one delivery per channel it
    names in its own workspace.  Idempotent: a duplicate message changes nothing."""
    ws = alert.workspace_id
    with conn.transaction():
        cur = conn.execute(INSERT_ALERT, message_row(alert))
        created = cur.rowcount == 1
        wanted = list(dict.fromkeys(alert.actions.notify))
        # FOR SHARE: a sender disabling one of these channels (Slack 410) waits until this
        # transaction commits, so its sweep of the channel's queue sees the rows queued here;
        # without the lock a row queued on the just-disabled channel stayed 'pending' forever.
        rows = conn.execute(
            "SELECT id, status, last_error FROM channels WHERE workspace_id = %s AND id = ANY(%s) "
            "ORDER BY id FOR SHARE",
            (ws, wanted),
        ).fetchall()
        known = {r[0]: (r[1], r[2]) for r in rows}
        queued: list[uuid.UUID] = []
        dead: list[uuid.UUID] = []
        ignored = [c for c in wanted if c not in known]
        for cid in wanted:
            if cid not in known:
                continue
            status, error = known[cid]
            if status == "enabled":
                conn.execute(
                    "INSERT INTO alert_deliveries (fingerprint, channel_id, workspace_id) VALUES (%s, %s, %s) "
                    "ON CONFLICT (fingerprint, channel_id) DO NOTHING",
                    (alert.fingerprint, cid, ws),
                )
                queued.append(cid)
            else:
                conn.execute(
                    "INSERT INTO alert_deliveries (fingerprint, channel_id, workspace_id, status, last_error) "
                    "VALUES (%s, %s, %s, 'dead', %s) ON CONFLICT (fingerprint, channel_id) DO NOTHING",
                    (alert.fingerprint, cid, ws, f"channel disabled: {error or 'no reason recorded'}"[:MAX_ERROR_CHARS]),
                )
                dead.append(cid)
    if ignored:
        log.warning("alert names channels that are not in its workspace; ignored",
                    extra={"fingerprint": alert.fingerprint, "workspace_id": str(ws),
                           "channel_ids": [str(c) for c in ignored]})
    return IngestResult(created, queued, dead, ignored)


def claim(
    conn: psycopg.Connection[Any],
    limit: int,
    *,
    lease_s: float = 60.0,
    exclude: Iterable[uuid.UUID] = (),
    slack_min_interval_s: float = 0.0,
) -> list[Claimed]:
    """Claim up to ``limit`` due deliveries (one for email) of ONE ready channel (the one waiting longest),
    committed as 'sending' before returning.  ``exclude``: channels this process holds back
    (its own per-webhook pacing).  ``slack_min_interval_s``: a Slack channel that got a
    message less than this long ago is not ready (pacing that survives restarts and holds
    across processes).  Empty when nothing is due."""
    _idle(conn)
    skip = list(exclude)
    with conn.transaction():
        candidates = conn.execute(
            """SELECT d.channel_id FROM alert_deliveries d
               JOIN channels c ON c.id = d.channel_id AND c.status = 'enabled'
               WHERE d.status IN ('pending', 'failed') AND d.next_attempt_at <= clock_timestamp()
                 AND NOT (d.channel_id = ANY(%s))
               GROUP BY d.channel_id ORDER BY min(d.next_attempt_at) LIMIT 20""",
            (skip,),
        ).fetchall()
        for (cid,) in candidates:
            # The channel row lock serializes claims per channel across notifier processes.
            ch = conn.execute(
                "SELECT kind, workspace_id FROM channels WHERE id = %s AND status = 'enabled' FOR UPDATE SKIP LOCKED",
                (cid,),
            ).fetchone()
            if ch is None:
                continue
            gap = slack_min_interval_s if ch[0] == "slack" else 0.0
            # A Slack message carries the whole batch; emails go one by one, so claiming one
            # at a time keeps a crash from stranding not-yet-sent mails as 'unknown'.
            n = limit if ch[0] == "slack" else 1
            held = conn.execute(
                """SELECT 1 FROM alert_deliveries WHERE channel_id = %s
                   AND ((status IN ('failed', 'sending') AND next_attempt_at > clock_timestamp())
                        OR (status = 'sent' AND sent_at > clock_timestamp() - make_interval(secs => %s)))
                   LIMIT 1""",
                (cid, gap),
            ).fetchone()
            if held:
                continue  # waiting out a Retry-After / backoff, or another process is sending
            rows = conn.execute(
                """UPDATE alert_deliveries d
                   SET status = 'sending', attempts = d.attempts + 1,
                       next_attempt_at = clock_timestamp() + make_interval(secs => %s)
                   FROM (SELECT fingerprint FROM alert_deliveries
                         WHERE channel_id = %s AND status IN ('pending', 'failed')
                           AND next_attempt_at <= clock_timestamp()
                         ORDER BY created_at, fingerprint LIMIT %s FOR UPDATE SKIP LOCKED) due,
                        alerts a
                   WHERE d.channel_id = %s AND d.fingerprint = due.fingerprint AND a.fingerprint = d.fingerprint
                   RETURNING d.fingerprint, d.attempts, a.payload, a.created_at""",
                (lease_s, cid, n, cid),
            ).fetchall()
            if not rows:
                continue
            rows.sort(key=lambda r: (r[3], r[0]))
            return [Claimed(r[0], cid, ch[1], ch[0], r[1], r[2]) for r in rows]
    return []


def mark_sent(conn: psycopg.Connection[Any], channel_id: uuid.UUID, fingerprints: Sequence[str]) -> None:
    """Also from 'unknown': a send that outlived its lease did arrive, and that is the truth."""
    conn.execute(
        """UPDATE alert_deliveries SET status = 'sent', sent_at = clock_timestamp(), last_error = NULL,
                  next_attempt_at = clock_timestamp()
           WHERE channel_id = %s AND fingerprint = ANY(%s) AND status IN ('sending', 'unknown')""",
        (channel_id, list(fingerprints)),
    )


def mark_failed(
    conn: psycopg.Connection[Any],
    channel_id: uuid.UUID,
    fingerprints: Sequence[str],
    error: str,
    delay_s: float,
    *,
    max_attempts: int,
    counts: bool = True,
) -> None:
    """Back to the queue after ``delay_s``; dead once ``max_attempts`` are used up.
    ``counts=False`` (a 429): being told to wait is not a failed attempt."""
    conn.execute(
        """UPDATE alert_deliveries
           SET attempts = attempts - %s,
               status = CASE WHEN attempts - %s >= %s THEN 'dead' ELSE 'failed' END,
               next_attempt_at = clock_timestamp() + make_interval(secs => %s), last_error = %s
           WHERE channel_id = %s AND fingerprint = ANY(%s) AND status IN ('sending', 'unknown')""",
        (0 if counts else 1, 0 if counts else 1, max_attempts, delay_s, error[:MAX_ERROR_CHARS],
         channel_id, list(fingerprints)),
    )


def mark_dead(conn: psycopg.Connection[Any], channel_id: uuid.UUID, fingerprints: Sequence[str], error: str) -> None:
    """A permanent refusal: never retried; the reply is kept in ``last_error``."""
    conn.execute(
        """UPDATE alert_deliveries SET status = 'dead', last_error = %s
           WHERE channel_id = %s AND fingerprint = ANY(%s) AND status IN ('sending', 'unknown')""",
        (error[:MAX_ERROR_CHARS], channel_id, list(fingerprints)),
    )


def disable_channel(conn: psycopg.Connection[Any], workspace_id: uuid.UUID, channel_id: uuid.UUID,
                    fingerprints: Sequence[str], error: str) -> None:
    """The channel is gone (Slack 404/410, ...): disable it with the error the API shows,
    and kill what it still had queued — sending there can only fail the same way."""
    with conn.transaction():
        channels.disable(conn, workspace_id, channel_id, error)
        mark_dead(conn, channel_id, fingerprints, error)
        conn.execute(
            """UPDATE alert_deliveries SET status = 'dead', last_error = %s
               WHERE channel_id = %s AND status IN ('pending', 'failed')""",
            (f"channel disabled: {error}"[:MAX_ERROR_CHARS], channel_id),
        )
    log.warning("channel disabled after a permanent delivery error",
                extra={"workspace_id": str(workspace_id), "channel_id": str(channel_id), "error": error[:300]})


def expire_sending(conn: psycopg.Connection[Any]) -> int:
    """Deliveries whose sender died mid-send (lease over) become 'unknown': maybe sent,
    maybe not; we cannot ask Slack or the mail relay, so they are shown, never resent."""
    cur = conn.execute(
        """UPDATE alert_deliveries d SET status = 'unknown',
                  last_error = 'notifier stopped while sending; delivery not confirmed and not retried'
           FROM channels c
           WHERE c.id = d.channel_id AND d.status = 'sending' AND d.next_attempt_at <= clock_timestamp()
           RETURNING d.fingerprint, d.channel_id, c.kind""")
    rows = cur.fetchall()
    for kind in {r[2] for r in rows}:
        DELIVERIES.labels(kind, "unknown").inc(sum(1 for r in rows if r[2] == kind))
    if rows:
        log.warning("deliveries left 'sending' by a stopped notifier are now 'unknown' (not resent)",
                    extra={"count": len(rows), "deliveries": [f"{r[0]}@{r[1]}" for r in rows[:20]]})
    return len(rows)


def entity_names(conn: psycopg.Connection[Any], payloads: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Names of the entities (and their campaign / ad set) from the pollers' entity sync."""
    names: dict[str, str] = {}
    keys: dict[tuple[str, str, str], set[str]] = {}
    for p in payloads:
        ids = keys.setdefault((str(p["workspace_id"]), str(p["provider"]), str(p["account_id"])), set())
        ids.update(str(x) for x in (p.get("entity_id"), p.get("campaign_id"), p.get("adset_id")) if x)
    for (ws, provider, account), ids in keys.items():
        rows = conn.execute(
            "SELECT entity_id, name FROM entities WHERE workspace_id = %s AND provider = %s AND account_id = %s "
            "AND entity_id = ANY(%s) AND name <> ''",
            (ws, provider, account, sorted(ids)),
        ).fetchall()
        names.update({r[0]: r[1] for r in rows})
    return names


def action_outcomes(conn: psycopg.Connection[Any], fingerprints: Sequence[str]) -> dict[str, str]:
    rows = conn.execute("SELECT fingerprint, outcome FROM entity_actions WHERE fingerprint = ANY(%s)",
                        (list(fingerprints),)).fetchall()
    return {r[0]: r[1] for r in rows}

"""Rules in PostgreSQL and on the compacted ``metricx.rules`` topic.

The database is the source of truth; the topic is how the running pipeline learns of a
change within seconds.  A write is two steps — commit the row, then publish — and the
publish step never sends what the request *meant*, it sends what the database holds
*now* for that rule id (the row as ``RuleV1``, or a tombstone when there is no row),
under a per-rule advisory lock.  So:

- two concurrent updates cannot leave the topic on the older version (whoever publishes
  last re-reads the newest row);
- a failed publish is repaired by any later write of the same rule, by repeating the
  request (an unchanged PUT republishes), or by ``metricx rules sync``;
- whatever fails for one rule (the broker or the producer refusing its message, say for
  its size, or a stored row that is no longer a valid rule) fails that rule alone, with
  a reason: the API answers 503, and a sync reports it and publishes every other rule;
- a DELETE racing an update ends as a tombstone.

Every function takes the workspace id and filters on it in SQL.  Publishing lives in
``adapters.rules_topic`` (the pipeline's rules feed publishes rules it disables).

A create or an update also holds the workspace's rule counts to the limits of
``schemas.rules`` (rules per workspace, rules an ad account meets), under a
per-workspace advisory lock so two concurrent creates cannot both take the last place.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import psycopg
from confluent_kafka import Consumer, KafkaException, TopicPartition
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from adapters.rules_topic import (
    COLUMNS,
    Conn,
    Published,
    PublishFailed,
    RulePublisher,
    disable_rules,
    publish_current,
    publish_ids,
    to_out,
    to_v1,
)
from schemas.api_rules import RuleOut
from schemas.rules import MAX_RULES_PER_ACCOUNT, MAX_RULES_PER_WORKSPACE, RuleBody, definition

__all__ = ["COLUMNS", "Conn", "PublishFailed", "Published", "RuleLimit", "RulePublisher", "disable_rules", "publish_current",
           "publish_ids", "to_out", "to_v1"]

log = logging.getLogger(__name__)

# ---- reads -------------------------------------------------------------------------


def list_rules(conn: Conn, ws: uuid.UUID) -> list[RuleOut]:
    rows = conn.execute(f"SELECT {COLUMNS} FROM rules WHERE workspace_id = %s ORDER BY created_at, id",
                        (ws,)).fetchall()
    return [to_out(r) for r in rows]


def get_rule(conn: Conn, ws: uuid.UUID, rule_id: uuid.UUID) -> RuleOut | None:
    row = conn.execute(f"SELECT {COLUMNS} FROM rules WHERE workspace_id = %s AND id = %s", (ws, rule_id)).fetchone()
    return to_out(row) if row else None


def foreign_channels(conn: Conn, ws: uuid.UUID, channel_ids: Iterable[uuid.UUID]) -> list[uuid.UUID]:
    """The ids among ``channel_ids`` that are not channels of this workspace."""
    wanted = list(dict.fromkeys(channel_ids))
    if not wanted:
        return []
    rows = conn.execute("SELECT id FROM channels WHERE workspace_id = %s AND id = ANY(%s)", (ws, wanted)).fetchall()
    found = {r["id"] for r in rows}
    return [c for c in wanted if c not in found]


def rules_using_channel(conn: Conn, ws: uuid.UUID, channel_id: uuid.UUID) -> list[str]:
    rows = conn.execute(
        "SELECT name FROM rules WHERE workspace_id = %s AND definition -> 'actions' -> 'notify' ? %s ORDER BY name",
        (ws, str(channel_id)),
    ).fetchall()
    return [r["name"] for r in rows]


# ---- writes (each in its own transaction; the caller publishes afterwards) -----------


class RuleLimit(ValueError):
    """The workspace has no room for this rule; the message names the limit."""


_NO_ACCOUNTS = "jsonb_array_length(coalesce(definition -> 'scope' -> 'account_ids', '[]'::jsonb)) = 0"


def check_room(conn: Conn, ws: uuid.UUID, body: RuleBody, replacing: uuid.UUID | None = None) -> None:
    """Raise :class:`RuleLimit` if storing ``body`` (in place of ``replacing``) would
    take the workspace over its rule limits.  Stored rules count whatever their status
    (a paused rule may be resumed at any time, without a check)."""
    other = replacing or uuid.UUID(int=0)
    row = conn.execute(
        f"SELECT count(*) AS total, count(*) FILTER (WHERE {_NO_ACCOUNTS}) AS everywhere "
        "FROM rules WHERE workspace_id = %s AND id <> %s", (ws, other)).fetchone()
    assert row is not None
    if row["total"] + 1 > MAX_RULES_PER_WORKSPACE:
        raise RuleLimit(f"a workspace may hold at most {MAX_RULES_PER_WORKSPACE} rules; this one has "
                        f"{row['total']} (delete rules it no longer needs)")
    accounts = sorted(set(body.scope.account_ids))
    # Rules scoped to each account (the ones named by this rule; every account when this
    # rule is for all of them).
    per_account = conn.execute(
        "SELECT a.account, count(DISTINCT r.id) AS n FROM rules r, "
        "jsonb_array_elements_text(coalesce(r.definition -> 'scope' -> 'account_ids', '[]'::jsonb)) AS a(account) "
        "WHERE r.workspace_id = %s AND r.id <> %s AND (%s OR a.account = ANY(%s)) "
        "GROUP BY a.account ORDER BY n DESC, a.account LIMIT 1",
        (ws, other, not accounts, accounts)).fetchone()
    busiest: str | None = accounts[0] if accounts else None
    scoped = 0
    if per_account is not None:
        busiest, scoped = per_account["account"], per_account["n"]
    meets = row["everywhere"] + scoped + 1
    if meets > MAX_RULES_PER_ACCOUNT:
        where = f"ad account {busiest!r}" if busiest is not None else "every ad account"
        raise RuleLimit(f"an ad account may meet at most {MAX_RULES_PER_ACCOUNT} rules (those scoped to it "
                        f"and those for all accounts); with this rule {where} would meet {meets}")


def _lock_workspace_rules(conn: Conn, ws: uuid.UUID) -> None:
    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 4243))", (str(ws),))


def insert_rule(conn: Conn, ws: uuid.UUID, body: RuleBody, created_by: str) -> uuid.UUID:
    """Raises :class:`RuleLimit` (nothing stored) when the workspace has no room."""
    with conn.transaction():
        _lock_workspace_rules(conn, ws)
        check_room(conn, ws, body)
        row = conn.execute(
            "INSERT INTO rules (workspace_id, name, definition, created_by) VALUES (%s, %s, %s, %s) RETURNING id",
            (ws, body.name, Jsonb(definition(body)), created_by),
        ).fetchone()
    assert row is not None
    rule_id: uuid.UUID = row["id"]
    return rule_id


def update_rule(conn: Conn, ws: uuid.UUID, rule_id: uuid.UUID, body: RuleBody) -> bool:
    """Replace the definition; the version moves only when something changed, so
    repeating a PUT (after a failed publish) republishes without inventing a version.
    False when there is no such rule; :class:`RuleLimit` when the new scope has no room."""
    with conn.transaction():
        _lock_workspace_rules(conn, ws)
        exists = conn.execute("SELECT 1 FROM rules WHERE workspace_id = %s AND id = %s", (ws, rule_id)).fetchone()
        if exists is None:
            return False
        check_room(conn, ws, body, replacing=rule_id)
        cur = conn.execute(
            "UPDATE rules SET name = %(name)s, definition = %(def)s, "
            "version = version + (definition IS DISTINCT FROM %(def)s OR name IS DISTINCT FROM %(name)s)::int, "
            "updated_at = CASE WHEN definition IS DISTINCT FROM %(def)s OR name IS DISTINCT FROM %(name)s "
            "THEN clock_timestamp() ELSE updated_at END "
            "WHERE workspace_id = %(ws)s AND id = %(id)s",
            {"name": body.name, "def": Jsonb(definition(body)), "ws": ws, "id": rule_id},
        )
        return cur.rowcount == 1


def set_status(conn: Conn, ws: uuid.UUID, rule_id: uuid.UUID, status: str) -> bool:
    """Pause or resume (a disabled rule too: the person resuming it has read why it was
    disabled, and a change of status clears that reason); a no-op (already in that
    status) keeps the version."""
    with conn.transaction():
        cur = conn.execute(
            "UPDATE rules SET status = %(st)s, version = version + (status <> %(st)s)::int, "
            "last_error = CASE WHEN status <> %(st)s THEN NULL ELSE last_error END, "
            "updated_at = CASE WHEN status <> %(st)s THEN clock_timestamp() ELSE updated_at END "
            "WHERE workspace_id = %(ws)s AND id = %(id)s",
            {"st": status, "ws": ws, "id": rule_id},
        )
        return cur.rowcount == 1


def delete_rule(conn: Conn, ws: uuid.UUID, rule_id: uuid.UUID) -> bool:
    with conn.transaction():
        cur = conn.execute("DELETE FROM rules WHERE workspace_id = %s AND id = %s", (ws, rule_id))
        return cur.rowcount == 1


# ---- `metricx rules sync` -------------------------------------------------------------


@dataclass(frozen=True)
class SyncResult:
    published: int
    tombstoned: int
    failed: dict[uuid.UUID, str]  # rule id -> why it is not on the topic


def live_keys(bootstrap: str, topic: str, timeout_s: float = 30.0) -> set[str]:
    """Rule ids whose latest message on the topic is not a tombstone (reads the whole
    compacted topic up to its current end)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"metricx-rules-sync-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        md = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if md is None or md.error is not None:
            return set()
        ends: dict[int, int] = {}
        assign = []
        for p in md.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
            if high > low:
                ends[p] = high
                assign.append(TopicPartition(topic, p, low))
        keys: dict[str, bool] = {}
        if not assign:
            return set()
        consumer.assign(assign)
        done: set[int] = set()
        deadline = time.monotonic() + timeout_s
        while len(done) < len(ends):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} took longer than {timeout_s}s")
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                raise KafkaException(msg.error())
            key = msg.key()
            if key is not None:
                keys[key.decode() if isinstance(key, bytes) else str(key)] = msg.value() is not None
            offset = msg.offset()
            if offset is not None and offset + 1 >= ends[msg.partition() or 0]:
                done.add(msg.partition() or 0)
        return {k for k, alive in keys.items() if alive}
    finally:
        consumer.close()


def sync_all(database_url: str, publisher: RulePublisher, *, prune: bool = True,
             chunk: int = 200) -> SyncResult:
    """Republish every rule in the database; with ``prune``, tombstone ids the topic
    still holds but the database does not (after restoring an older database backup).
    Each chunk goes through :func:`publish_ids` (re-read under the per-rule locks), so a
    concurrent API write is never overwritten by an older value.  A rule that cannot be
    published is skipped and reported in ``failed``; every other rule is published.
    Idempotent."""
    with psycopg.connect(database_url, row_factory=dict_row, autocommit=True) as conn:
        ids: list[uuid.UUID] = [r["id"] for r in conn.execute("SELECT id FROM rules ORDER BY id").fetchall()]
        if prune:
            known = {str(i) for i in ids}
            for key in sorted(live_keys(publisher.bootstrap, publisher.topic) - known):
                try:
                    ids.append(uuid.UUID(key))
                except ValueError:
                    log.warning("ignoring a non-uuid key on the rules topic", extra={"key": key})
        published = tombstoned = 0
        failed: dict[uuid.UUID, str] = {}
        for i in range(0, len(ids), chunk):
            result = publish_ids(conn, publisher, ids[i:i + chunk])
            failed.update(result.failed)
            for out in result.live.values():
                if out is None:
                    tombstoned += 1
                else:
                    published += 1
    return SyncResult(published=published, tombstoned=tombstoned, failed=failed)

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
- a DELETE racing an update ends as a tombstone.

Every function takes the workspace id and filters on it in SQL.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaException, TopicPartition
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from connectors.kafka import DeliveryError, Producer
from schemas.api_rules import RuleOut
from schemas.rules import RuleIn, RuleV1, definition, rule_message

log = logging.getLogger(__name__)

Conn = psycopg.Connection[dict[str, Any]]
COLUMNS = "id, workspace_id, name, definition, status, version, created_by, created_at, updated_at"


class PublishFailed(RuntimeError):
    """The row is committed but the broker did not acknowledge the rule in time."""


def to_out(row: dict[str, Any]) -> RuleOut:
    return RuleOut.model_validate({
        **row["definition"], "id": row["id"], "workspace_id": row["workspace_id"], "status": row["status"],
        "version": row["version"], "updated_at": row["updated_at"], "created_by": row["created_by"],
        "created_at": row["created_at"],
    })


def to_v1(row: dict[str, Any]) -> RuleV1:
    """The topic's message: the stored rule without the API-only bookkeeping."""
    out = to_out(row)
    return RuleV1.model_validate(out.model_dump(by_alias=True, exclude={"created_by", "created_at"}))


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


def insert_rule(conn: Conn, ws: uuid.UUID, body: RuleIn, created_by: str) -> uuid.UUID:
    with conn.transaction():
        row = conn.execute(
            "INSERT INTO rules (workspace_id, name, definition, created_by) VALUES (%s, %s, %s, %s) RETURNING id",
            (ws, body.name, Jsonb(definition(body)), created_by),
        ).fetchone()
    assert row is not None
    rule_id: uuid.UUID = row["id"]
    return rule_id


def update_rule(conn: Conn, ws: uuid.UUID, rule_id: uuid.UUID, body: RuleIn) -> bool:
    """Replace the definition; the version moves only when something changed, so
    repeating a PUT (after a failed publish) republishes without inventing a version."""
    with conn.transaction():
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
    """Pause or resume; a no-op (already in that status) keeps the version."""
    with conn.transaction():
        cur = conn.execute(
            "UPDATE rules SET status = %(st)s, version = version + (status <> %(st)s)::int, "
            "updated_at = CASE WHEN status <> %(st)s THEN clock_timestamp() ELSE updated_at END "
            "WHERE workspace_id = %(ws)s AND id = %(id)s",
            {"st": status, "ws": ws, "id": rule_id},
        )
        return cur.rowcount == 1


def delete_rule(conn: Conn, ws: uuid.UUID, rule_id: uuid.UUID) -> bool:
    with conn.transaction():
        cur = conn.execute("DELETE FROM rules WHERE workspace_id = %s AND id = %s", (ws, rule_id))
        return cur.rowcount == 1


# ---- publishing ----------------------------------------------------------------------


class RulePublisher:
    """One idempotent producer per server process, created on first use.

    Sends are serialised (a lock around send + flush) so each request's flush covers
    exactly its own message and reports its own failure."""

    def __init__(self, bootstrap: str, topic: str, *, timeout_s: float = 5.0) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.timeout_s = timeout_s
        self._producer: Producer | None = None
        self._lock = threading.Lock()

    def _get(self) -> Producer:
        if self._producer is None:
            ms = int(self.timeout_s * 1000)
            self._producer = Producer(self.bootstrap, client_id="metricx-rules", linger_ms=0,
                                      extra={"message.timeout.ms": ms, "socket.connection.setup.timeout.ms": ms})
        return self._producer

    def publish(self, messages: Iterable[tuple[uuid.UUID, bytes | None]]) -> int:
        """Send ``(rule id, value or None for a tombstone)`` and wait for the broker's ack."""
        with self._lock:
            producer = self._get()
            n = 0
            for rule_id, value in messages:
                producer.send(self.topic, value, str(rule_id).encode())  # type: ignore[arg-type]
                n += 1
            try:
                producer.flush(self.timeout_s + 1.0)
            except DeliveryError as exc:
                raise PublishFailed(str(exc)) from None
            return n

    def close(self) -> None:
        with self._lock:
            if self._producer is not None and self._producer.pending():
                try:
                    self._producer.flush(self.timeout_s)
                except DeliveryError as exc:
                    log.warning("rules left unpublished at shutdown", extra={"error": str(exc)})


def publish_ids(conn: Conn, publisher: RulePublisher, ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, RuleOut | None]:
    """Publish what the database holds now for each id (a tombstone where nothing),
    holding per-rule advisory locks so publications of one rule happen in commit order.
    Ids are global (uuids), so this never filters by workspace.  Raises
    :class:`PublishFailed` (the rows stay committed)."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    with conn.transaction():
        for rule_id in wanted:  # sorted: two publishers never wait on each other in a cycle
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 4242))", (str(rule_id),))
        rows = {r["id"]: r for r in conn.execute(f"SELECT {COLUMNS} FROM rules WHERE id = ANY(%s)",
                                                 (wanted,)).fetchall()}
        publisher.publish([(i, rule_message(to_v1(rows[i])) if i in rows else None) for i in wanted])
    return {i: to_out(rows[i]) if i in rows else None for i in wanted}


def publish_current(conn: Conn, publisher: RulePublisher, ws: uuid.UUID, rule_id: uuid.UUID) -> RuleOut | None:
    """After a write of one rule: publish its current state; the stored rule if it is
    (still) in ``ws``."""
    out = publish_ids(conn, publisher, [rule_id])[rule_id]
    return out if out is not None and out.workspace_id == ws else None


# ---- `metricx rules sync` -------------------------------------------------------------


@dataclass(frozen=True)
class SyncResult:
    published: int
    tombstoned: int


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
    concurrent API write is never overwritten by an older value.  Idempotent."""
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
        for i in range(0, len(ids), chunk):
            for out in publish_ids(conn, publisher, ids[i:i + chunk]).values():
                if out is None:
                    tombstoned += 1
                else:
                    published += 1
    return SyncResult(published=published, tombstoned=tombstoned)

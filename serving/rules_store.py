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

Every function takes the workspace id and filters on it in SQL.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from pydantic import ValidationError

from connectors.kafka import DeliveryError, Producer
from schemas.api_rules import RuleOut
from schemas.edge import first_error
from schemas.rules import RuleIn, RuleV1, definition, rule_message

log = logging.getLogger(__name__)

Conn = psycopg.Connection[dict[str, Any]]
COLUMNS = "id, workspace_id, name, definition, status, version, created_by, created_at, updated_at"


class PublishFailed(RuntimeError):
    """Rows are committed but some rules are not on the topic; ``failed`` says which and
    why (rule id -> reason)."""

    def __init__(self, failed: Mapping[uuid.UUID, str]) -> None:
        self.failed = dict(failed)
        shown = [f"{i}: {why}" for i, why in list(self.failed.items())[:5]]
        more = len(self.failed) - len(shown)
        super().__init__("; ".join(shown) + (f"; and {more} more" if more > 0 else ""))


def to_out(row: dict[str, Any]) -> RuleOut:
    return RuleOut.model_validate({
        **row["definition"], "id": row["id"], "workspace_id": row["workspace_id"], "status": row["status"],
        "version": row["version"], "updated_at": row["updated_at"], "created_by": row["created_by"],
        "created_at": row["created_at"],
    })


def to_v1(out: RuleOut) -> RuleV1:
    """The topic's message: the stored rule without the API-only bookkeeping."""
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
        """Send ``(rule id, value or None for a tombstone)`` and wait for the broker's ack.
        Raises :class:`PublishFailed` naming every rule that was not acknowledged (the
        others are on the topic): each message's own delivery report decides, so one
        refused rule never takes the others with it."""
        with self._lock:
            producer = self._get()
            reports: dict[uuid.UUID, str | None] = {}
            failed: dict[uuid.UUID, str] = {}
            sent: list[uuid.UUID] = []
            for rule_id, value in messages:
                try:
                    producer.send(self.topic, value, str(rule_id).encode(),  # type: ignore[arg-type]
                                  on_delivery=partial(_report, reports, rule_id))
                except DeliveryError as exc:  # over the producer's message.max.bytes
                    failed[rule_id] = str(exc)
                except KafkaException as exc:
                    failed[rule_id] = exc.args[0].str()
                else:
                    sent.append(rule_id)
            with contextlib.suppress(DeliveryError):  # each message's own report is read below
                producer.flush(self.timeout_s + 1.0)
            for rule_id in sent:
                why = reports.get(rule_id, "not acknowledged by the broker in time")
                if why is not None:
                    failed[rule_id] = why
            if failed:
                raise PublishFailed(failed)
            return len(sent)

    def close(self) -> None:
        with self._lock:
            if self._producer is not None and self._producer.pending():
                try:
                    self._producer.flush(self.timeout_s)
                except DeliveryError as exc:
                    log.warning("rules left unpublished at shutdown", extra={"error": str(exc)})


def _report(reports: dict[uuid.UUID, str | None], rule_id: uuid.UUID, err: KafkaError | None) -> None:
    reports[rule_id] = None if err is None else err.str()


@dataclass(frozen=True)
class Published:
    """What :func:`publish_ids` did: per id, the stored rule now on the topic (None: a
    tombstone), and the ids it could not publish, with why."""

    live: dict[uuid.UUID, RuleOut | None]
    failed: dict[uuid.UUID, str]


def publish_ids(conn: Conn, publisher: RulePublisher, ids: Iterable[uuid.UUID]) -> Published:
    """Publish what the database holds now for each id (a tombstone where nothing),
    holding per-rule advisory locks so publications of one rule happen in commit order.
    Ids are global (uuids), so this never filters by workspace.  Never raises for one
    rule: a row that is no longer a valid rule, or a message the producer or the broker
    refuses, lands in ``failed`` (the rows stay committed)."""
    wanted = sorted(set(ids))
    if not wanted:
        return Published({}, {})
    live: dict[uuid.UUID, RuleOut | None] = {}
    failed: dict[uuid.UUID, str] = {}
    with conn.transaction():
        for rule_id in wanted:  # sorted: two publishers never wait on each other in a cycle
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 4242))", (str(rule_id),))
        rows = {r["id"]: r for r in conn.execute(f"SELECT {COLUMNS} FROM rules WHERE id = ANY(%s)",
                                                 (wanted,)).fetchall()}
        messages: list[tuple[uuid.UUID, bytes | None]] = []
        for i in wanted:
            if i not in rows:
                live[i] = None
                messages.append((i, None))
                continue
            try:
                out = to_out(rows[i])
                messages.append((i, rule_message(to_v1(out))))
                live[i] = out
            except ValidationError as exc:
                failed[i] = f"the stored rule is not a valid rule: {first_error(exc)}"
        try:
            publisher.publish(messages)
        except PublishFailed as exc:
            failed.update(exc.failed)
    for i in failed:
        live.pop(i, None)
        log.error("rule not published", extra={"rule_id": str(i), "error": failed[i]})
    return Published(live, failed)


def publish_current(conn: Conn, publisher: RulePublisher, ws: uuid.UUID, rule_id: uuid.UUID) -> RuleOut | None:
    """After a write of one rule: publish its current state; the stored rule if it is
    (still) in ``ws``.  Raises :class:`PublishFailed` when it is not on the topic."""
    result = publish_ids(conn, publisher, [rule_id])
    if result.failed:
        raise PublishFailed(result.failed)
    out = result.live[rule_id]
    return out if out is not None and out.workspace_id == ws else None


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

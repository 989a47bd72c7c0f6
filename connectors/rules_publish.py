"""What the database holds for a rule, published on the compacted ``metricx.rules``
topic — shared by the API (``serving.rules_store``) and the pipeline's rules feed, which
disables rules the pipeline must stop evaluating.

The publish step never sends what a writer *meant*, it sends what the database holds
*now* for that rule id (the row as ``RuleV1``, or a tombstone when there is no row),
under a per-rule advisory lock, so the topic always ends on the newest row.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterable
from typing import Any

import psycopg

from connectors.kafka import DeliveryError, Producer
from schemas.api_rules import RuleOut
from schemas.rules import RuleV1, rule_message

log = logging.getLogger(__name__)

Conn = psycopg.Connection[dict[str, Any]]
COLUMNS = "id, workspace_id, name, definition, status, last_error, version, created_by, created_at, updated_at"


class PublishFailed(RuntimeError):
    """The row is committed but the broker did not acknowledge the rule in time."""


def to_out(row: dict[str, Any]) -> RuleOut:
    return RuleOut.model_validate({
        **row["definition"], "id": row["id"], "workspace_id": row["workspace_id"], "status": row["status"],
        "version": row["version"], "updated_at": row["updated_at"], "last_error": row["last_error"],
        "created_by": row["created_by"], "created_at": row["created_at"],
    })


def to_v1(row: dict[str, Any]) -> RuleV1:
    """The topic's message: the stored rule without the API-only bookkeeping."""
    out = to_out(row)
    return RuleV1.model_validate(out.model_dump(by_alias=True, exclude={"last_error", "created_by", "created_at"}))


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



# ---- the pipeline's side: rules it must stop evaluating -------------------------------


def disable_rules(conn: Conn, ws: uuid.UUID, ids: Iterable[uuid.UUID], reason: str) -> list[uuid.UUID]:
    """Mark the rules (those of ``ws`` still active) ``disabled`` with ``reason`` as
    their ``last_error``, a new version each; the ids changed, for publishing.  A rule
    paused, deleted or already disabled meanwhile is left as it is."""
    with conn.transaction():
        rows = conn.execute(
            "UPDATE rules SET status = 'disabled', last_error = %s, version = version + 1, "
            "updated_at = clock_timestamp() WHERE workspace_id = %s AND id = ANY(%s) AND status = 'active' "
            "RETURNING id", (reason[:2000], ws, list(ids))).fetchall()
    return sorted(r["id"] for r in rows)

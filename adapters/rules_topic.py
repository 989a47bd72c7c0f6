"""What the database holds for a rule, published on the compacted ``metricx.rules``
topic — shared by the API (``serving.rules_store``) and the pipeline's rules feed, which
disables rules the pipeline must stop evaluating.

The publish step never sends what a writer *meant*, it sends what the database holds
*now* for that rule id (the row as ``RuleV1``, or a tombstone when there is no row),
under a per-rule advisory lock, so the topic always ends on the newest row.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import psycopg
from confluent_kafka import KafkaError, KafkaException
from pydantic import ValidationError

from adapters.kafka import DeliveryError, Producer
from schemas.api_rules import RuleOut
from schemas.edge import first_error
from schemas.rules import RuleV1, rule_message

log = logging.getLogger(__name__)

Conn = psycopg.Connection[dict[str, Any]]
COLUMNS = "id, workspace_id, name, definition, status, last_error, version, created_by, created_at, updated_at"


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
        "version": row["version"], "updated_at": row["updated_at"], "last_error": row["last_error"],
        "created_by": row["created_by"], "created_at": row["created_at"],
    })


def to_v1(out: RuleOut) -> RuleV1:
    """The topic's message: the stored rule without the API-only bookkeeping."""
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

"""Keeps a :class:`~domain.rulebook.RuleBook` current from the compacted
``metricx.rules`` topic (and entity names from the pollers' ``entities`` table).

Every pipeline process runs one feed: it reads *all* partitions of the rules topic from
the beginning, without a consumer group (each process needs every rule: a broadcast
side input, which Bytewax has no operator for), then follows new changes, so a rule
saved through the API is evaluated by the running flow within about a second.  A bad
rule message is dead-lettered and skipped; the feed never stops the pipeline.

The feed also records what the pipeline stopped evaluating: an active rule over the
per-rule limits (``schemas.rules.limit_problem``: stored before the limits, or published
around the API) is dead-lettered and taken out, and a workspace whose rules went over
the evaluation budget (``RuleBook.on_disable``) has them marked ``disabled`` in the
database with the reason as ``last_error`` and republished (``adapters.rules_topic``),
so the merchant sees why in ``GET /rules`` and a restarted pipeline does not load them.
A failed write is retried every few seconds.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from typing import Any

import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from psycopg.rows import dict_row

from adapters.kafka import DeliveryError, Producer, deadletter_producer, envelope_of, send_dead_letter
from adapters.rules_topic import PublishFailed, RulePublisher, disable_rules, publish_ids
from domain.rulebook import NameKey, RuleBook
from ground.metrics import dead_lettered
from schemas.edge import preview
from schemas.envelope import DeadLetter
from schemas.rules import InvalidRule, limit_problem, parse_rule_message, to_rule

DISABLE_RETRY_S = 5.0

log = logging.getLogger("metricx.rules")


class RulesFeed:
    def __init__(
        self,
        book: RuleBook,
        *,
        bootstrap: str,
        topic: str,
        deadletter_topic: str,
        dsn: str | None = None,
        names_refresh_s: float = 60.0,
    ) -> None:
        self.book = book
        self._bootstrap = bootstrap
        self._topic = topic
        self._dl_topic = deadletter_topic
        self._dsn = dsn
        self._names_refresh_s = names_refresh_s
        self._names_at = 0.0
        self._stop = threading.Event()
        self.ready = threading.Event()  # set once the topic's existing rules are loaded
        self._thread = threading.Thread(target=self._run, name="metricx-rules-feed", daemon=True)
        # (workspace, rule ids, reason) to record as disabled; filled from the dataflow
        # (over budget) and from _apply (over the limits), written by the feed's thread.
        self._disables: queue.SimpleQueue[tuple[str, list[str], str]] = queue.SimpleQueue()
        self._retry: list[tuple[str, list[str], str]] = []
        self._retry_at = 0.0
        self._publisher: RulePublisher | None = None
        self.disabled_recorded = 0  # rules marked disabled in the database by this feed
        book.on_disable(self.record_disabled)

    def start(self, wait_s: float = 30.0) -> RulesFeed:
        """Start following; wait (bounded) until the rules already on the topic are in
        the book, so a restarted flow replays with the same rules it had."""
        self._thread.start()
        if not self.ready.wait(wait_s):
            log.warning("rules feed not caught up; starting the flow anyway", extra={"topic": self._topic})
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._retry_at = 0.0
            self._write_disabled()  # what the last epochs disabled, before the process ends
        if self._publisher is not None:
            self._publisher.close()

    def record_disabled(self, workspace_id: str, rule_ids: list[str], reason: str) -> None:
        """Queue rules the pipeline stopped evaluating, to be marked ``disabled`` (called
        from the dataflow: only a queue put)."""
        if rule_ids:
            self._disables.put((workspace_id, rule_ids, reason))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._follow()
            except Exception:  # a broker hiccup must not kill the side input
                log.exception("rules feed failed; restarting in 2 s", extra={"topic": self._topic})
                self._stop.wait(2.0)

    def _follow(self) -> None:
        consumer = Consumer({
            "bootstrap.servers": self._bootstrap,
            "group.id": "metricx-rules-feed",  # required by librdkafka; never committed
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        })
        producer = deadletter_producer(self._bootstrap, client_id="metricx-rules-feed")
        try:
            meta = consumer.list_topics(self._topic, timeout=10)
            topic_meta = meta.topics.get(self._topic)
            if topic_meta is None or topic_meta.error is not None:
                raise KafkaException(f"rules topic {self._topic!r} is not available")
            parts = [TopicPartition(self._topic, p, OFFSET_BEGINNING) for p in topic_meta.partitions]
            consumer.assign(parts)
            pending = {p.partition for p in parts}
            while not self._stop.is_set():
                msg = consumer.poll(0.5)
                self._refresh_names()
                self._write_disabled()
                if msg is None:
                    continue
                err = msg.error()
                if err is not None:
                    if err.code() == -191:  # _PARTITION_EOF: caught up on that partition
                        pending.discard(msg.partition() or 0)
                        if not pending and not self.ready.is_set():
                            log.info("rules loaded", extra={"topic": self._topic, "rules": len(self.book)})
                            self.ready.set()
                        continue
                    raise KafkaException(err)
                self._apply(msg, producer)
        finally:
            consumer.close()
            producer.flush(10)

    def _apply(self, msg: Any, producer: Producer) -> None:
        key = msg.key()
        value = msg.value()
        rule_id = key.decode(errors="replace") if key else ""
        if value is not None and len(rule_id) > 64:
            # A rule id is a UUID: a longer key is refused without repeating it.
            self._dead_letter(msg, producer, f"key {preview(key)} is not a rule id")
            return
        if value is None:
            self.book.remove(rule_id)
            log.info("rule deleted", extra={"rule_id": rule_id, "offset": msg.offset()})
            return
        try:
            rule = parse_rule_message(value)
            if str(rule.id) != rule_id:
                raise InvalidRule(f"key {rule_id!r} is not the rule's id {rule.id}")
        except InvalidRule as exc:
            self._dead_letter(msg, producer, exc.reason)
            return
        problem = limit_problem(rule) if rule.status == "active" else None
        if problem is not None:
            # Never evaluated: the limits bound what one rule may cost every tenant.
            self.book.remove(rule_id)
            self._dead_letter(msg, producer, problem)
            self.record_disabled(str(rule.workspace_id), [rule_id], problem)
            log.warning("rule refused: over the limits",
                        extra={"rule_id": rule_id, "workspace_id": str(rule.workspace_id), "reason": problem})
            return
        if rule.status == "active":
            self.book.put(to_rule(rule))
        else:
            self.book.remove(rule_id)
        log.info(
            "rule applied",
            extra={"rule_id": rule_id, "workspace": str(rule.workspace_id), "version": rule.version,
                   "status": rule.status, "offset": msg.offset()},
        )

    def _dead_letter(self, msg: Any, producer: Producer, reason: str) -> None:
        send_dead_letter(producer, DeadLetter(envelope_of(msg), reason, "rules"), self._dl_topic)
        producer.flush(10)
        dead_lettered("rules", [reason])

    def _write_disabled(self) -> None:
        """Mark queued rules ``disabled`` with their reason and publish them (what the
        database now holds); keep them for a retry if the database or broker fails."""
        while True:
            try:
                self._retry.append(self._disables.get_nowait())
            except queue.Empty:
                break
        if not self._retry or time.monotonic() < self._retry_at:
            return
        if self._dsn is None:
            for ws, ids, reason in self._retry:
                log.warning("rules disabled in this process only (no database to record them in)",
                            extra={"workspace_id": ws, "rule_ids": ids, "reason": reason})
            self._retry.clear()
            return
        if self._publisher is None:
            self._publisher = RulePublisher(self._bootstrap, self._topic)
        try:
            with psycopg.connect(self._dsn, autocommit=True, row_factory=dict_row, connect_timeout=5) as conn:
                while self._retry:
                    ws, ids, reason = self._retry[0]
                    wanted = [uuid.UUID(i) for i in ids]
                    changed = disable_rules(conn, uuid.UUID(ws), wanted, reason)
                    # All of them, not only those changed now: a retry after a failed
                    # publish finds them disabled already, and must still publish.
                    result = publish_ids(conn, self._publisher, wanted)
                    if result.failed:
                        raise PublishFailed(result.failed)
                    self._retry.pop(0)
                    self.disabled_recorded += len(changed)
                    if changed:
                        log.warning("rules recorded as disabled", extra={
                            "workspace_id": ws, "rule_ids": [str(i) for i in changed], "reason": reason})
        except (psycopg.Error, PublishFailed, DeliveryError) as exc:
            self._retry_at = time.monotonic() + DISABLE_RETRY_S
            log.error("disabled rules not recorded yet; retrying", extra={"error": str(exc).strip(),
                                                                          "pending": len(self._retry)})

    def _refresh_names(self) -> None:
        """Names only for workspaces whose rules filter on them (the pipeline never
        needs names otherwise)."""
        now = time.monotonic()
        if self._dsn is None or now - self._names_at < self._names_refresh_s:
            return
        self._names_at = now
        workspaces = sorted(self.book.name_filtered_workspaces())
        if not workspaces:
            return
        try:
            with psycopg.connect(self._dsn, connect_timeout=5) as conn:
                rows = conn.execute(
                    "SELECT workspace_id::text, provider, account_id, entity_id, name FROM entities "
                    "WHERE workspace_id = ANY(%s::uuid[]) AND name <> ''",
                    (workspaces,),
                ).fetchall()
        except psycopg.Error as exc:
            log.warning("entity names not refreshed", extra={"error": str(exc).strip()})
            return
        names: dict[NameKey, str] = {(r[0], r[1], r[2], r[3]): r[4] for r in rows}
        self.book.set_names(names)

"""Keeps a :class:`~pipelines.rulebook.RuleBook` current from the compacted
``metricx.rules`` topic (and entity names from the pollers' ``entities`` table).

Every pipeline process runs one feed: it reads *all* partitions of the rules topic from
the beginning, without a consumer group (each process needs every rule: a broadcast
side input, which Bytewax has no operator for), then follows new changes, so a rule
saved through the API is evaluated by the running flow within about a second.  A bad
rule message is dead-lettered and skipped; the feed never stops the pipeline.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from connectors.kafka import Producer, send_dead_letter
from metricx.metrics import dead_lettered
from pipelines.rulebook import NameKey, RuleBook
from schemas.envelope import DeadLetter, Envelope
from schemas.rules import InvalidRule, parse_rule_message, to_rule

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
        producer = Producer(self._bootstrap, client_id="metricx-rules-feed")
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
        if value is None:
            self.book.remove(rule_id)
            log.info("rule deleted", extra={"rule_id": rule_id, "offset": msg.offset()})
            return
        try:
            rule = parse_rule_message(value)
            if str(rule.id) != rule_id:
                raise InvalidRule(f"key {rule_id!r} is not the rule's id {rule.id}")
        except InvalidRule as exc:
            ts = msg.timestamp()
            env = Envelope(key, value, msg.topic() or self._topic, msg.partition() or 0, msg.offset() or 0,
                           datetime.fromtimestamp(ts[1] / 1000, UTC) if ts and ts[1] > 0 else None)
            send_dead_letter(producer, DeadLetter(env, exc.reason, "rules"), self._dl_topic)
            producer.flush(10)
            dead_lettered("rules", [exc.reason])
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

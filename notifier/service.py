"""The notifier process: ``metricx.alerts`` -> outbox -> Slack / email (+ pause/resume).

Two loops in one process:

* the consumer (main thread) validates each alert, runs the pause/resume actions (Meta
  or Google Ads; in parallel across entities, :mod:`notifier.action_pool`),
  records it and its deliveries in the outbox (one committed transaction per poll
  batch), and only then commits the Kafka offsets — a crash anywhere re-reads messages
  whose ingest is idempotent, so nothing is lost and nothing is queued twice;
* the sender (a thread, its own connection) claims due deliveries one channel at a time
  (committed as 'sending' before the send), sends one message, marks the outcome.

Pacing: at most one Slack message per ``slack_min_interval_s`` per webhook (in this
process; across processes the per-channel claim lock serializes sends), a 429's
Retry-After held for the whole channel in the database.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaError, KafkaException, Message

from adapters import channels_store as channels
from adapters.crypto import Keyring, TokenKeyError
from adapters.email import EmailSender, parse_recipients
from adapters.google_ads.client import GoogleApi
from adapters.google_ads.status import GoogleStatusSetter
from adapters.kafka import Producer, deadletter_producer, envelope_of, flush_until_delivered, send_dead_letter
from adapters.meta.status import MetaStatusSetter
from adapters.slack import SlackClient
from domain.alert_messages import email_message, slack_message
from ground.metrics import CONSUMER_LAG, DELIVERIES, HEALTH, KAFKA_ERRORS, NOTIFIER_ALERTS, dead_lettered
from ground.resilience import backoff_delay
from ground.retry import Backoff
from ground.settings import ConfigError, NotifierSettings, Settings
from notifier import outbox
from notifier.action_pool import ActionPool
from schemas.alerts import AlertV1, EmailContent, InvalidAlert, parse_alert
from schemas.envelope import DeadLetter

log = logging.getLogger("metricx.notifier")

EXPIRE_EVERY_S = 10.0
CONSUME_BATCH = 500


class Sender:
    """Claims and sends; one instance per sender thread."""

    def __init__(
        self,
        ns: NotifierSettings,
        keyring: Keyring,
        *,
        slack: SlackClient | None = None,
        email: EmailSender | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ns = ns
        self.keyring = keyring
        self.slack = slack or SlackClient(timeout_s=ns.slack_timeout_s)
        self.email = email or EmailSender(ns)
        self.clock = clock
        self.not_before: dict[uuid.UUID, float] = {}  # per-webhook pacing in this process
        # Outcome marks a lost database connection kept from being written, replayed once
        # the sender is connected again (they are idempotent): a message sent while the
        # database restarts is still marked 'sent', and claimed deliveries it never sent
        # go back to the queue, instead of both ending 'unknown' when their lease expires.
        self.owed: list[tuple[Callable[..., None], tuple[Any, ...], dict[str, Any]]] = []

    def _mark(self, conn: psycopg.Connection[Any], fn: Callable[..., None], *args: Any, **kwargs: Any) -> None:
        try:
            fn(conn, *args, **kwargs)
        except psycopg.OperationalError:
            self.owed.append((fn, args, kwargs))
            raise

    def _release(self, channel_id: uuid.UUID, fingerprints: list[str], kind: str) -> None:
        """Claimed but certainly not sent (the database went away first): owed back to the queue."""
        DELIVERIES.labels(kind, "not_attempted").inc(len(fingerprints))
        self.owed.append((outbox.mark_failed, (channel_id, fingerprints, "not attempted: database connection lost", 0.0),
                          {"max_attempts": self.ns.notifier_max_attempts, "counts": False}))

    def settle(self, conn: psycopg.Connection[Any]) -> None:
        """Write the owed marks, oldest first (each is removed once written)."""
        if self.owed:
            log.info("writing delivery outcomes kept while the database was away", extra={"marks": len(self.owed)})
        while self.owed:
            fn, args, kwargs = self.owed[0]
            fn(conn, *args, **kwargs)
            self.owed.pop(0)

    def _backoff(self, attempts: int) -> float:
        return backoff_delay(max(0, attempts - 1), base_s=self.ns.notifier_retry_base_s, cap_s=self.ns.notifier_retry_max_s)

    def send_once(self, conn: psycopg.Connection[Any]) -> int:
        """Claim one channel's due batch and send it; the number of deliveries handled."""
        now = self.clock()
        paced = [cid for cid, t in self.not_before.items() if t > now]
        for cid in [cid for cid, t in self.not_before.items() if t <= now]:
            del self.not_before[cid]
        batch = outbox.claim(conn, self.ns.notifier_batch_size, lease_s=self.ns.notifier_send_lease_s, exclude=paced,
                             slack_min_interval_s=self.ns.slack_min_interval_s)
        if not batch:
            return 0
        first = batch[0]
        fps = [c.fingerprint for c in batch]
        ctx = {"channel_id": str(first.channel_id), "workspace_id": str(first.workspace_id),
               "kind": first.channel_kind, "alerts": len(batch)}
        try:
            secret = channels.secret(conn, self.keyring, first.workspace_id, first.channel_id)
            names = outbox.entity_names(conn, [c.payload for c in batch])
            outcomes = outbox.action_outcomes(conn, fps)
            if first.channel_kind == "slack":
                rendered: Any = slack_message([c.payload for c in batch], names, self.ns.dashboard_url, outcomes)
            else:
                rendered = [email_message(c.payload, names, self.ns.dashboard_url, outcomes.get(c.fingerprint))
                            for c in batch]
        except psycopg.OperationalError:
            self._release(first.channel_id, fps, first.channel_kind)
            raise
        except (TokenKeyError, LookupError, ValueError, KeyError, psycopg.Error) as exc:
            # Nothing was sent: back to the queue, it is a retry like any other.
            err = f"could not prepare the message: {type(exc).__name__}: {exc}"[:500]
            log.error("delivery not attempted", extra={**ctx, "error": err})
            DELIVERIES.labels(first.channel_kind, "failed").inc(len(fps))
            self._mark(conn, outbox.mark_failed, first.channel_id, fps, err, self._backoff(first.attempts),
                       max_attempts=self.ns.notifier_max_attempts)
            return len(batch)
        if first.channel_kind == "slack":
            self._slack(conn, batch, secret, rendered, ctx)
        else:
            self._email(conn, batch, secret, rendered, ctx)
        return len(batch)

    def _slack(self, conn: psycopg.Connection[Any], batch: list[outbox.Claimed], url: str,
               message: dict[str, Any], ctx: dict[str, Any]) -> None:
        first = batch[0]
        fps = [c.fingerprint for c in batch]
        result = self.slack.post(url, message)
        # Mark first (the narrowest possible 'unknown' window), then log.
        wait = max(self.ns.slack_min_interval_s, result.retry_after_s or 0.0)
        self.not_before[first.channel_id] = self.clock() + wait
        if result.outcome == "sent":
            DELIVERIES.labels("slack", "sent").inc(len(fps))
            self._mark(conn, outbox.mark_sent, first.channel_id, fps)
            log.info("slack message sent", extra=ctx)
        elif result.outcome == "permanent":
            DELIVERIES.labels("slack", "disabled").inc(len(fps))
            self._mark(conn, outbox.disable_channel, first.workspace_id, first.channel_id, fps,
                       result.error or "refused")
        elif result.retry_after_s is not None:
            DELIVERIES.labels("slack", "rate_limited").inc(len(fps))
            self._mark(conn, outbox.mark_failed, first.channel_id, fps, result.error or "rate limited",
                       result.retry_after_s, max_attempts=self.ns.notifier_max_attempts, counts=False)
            log.warning("slack rate limited; holding the webhook", extra={**ctx, "retry_after_s": result.retry_after_s})
        else:
            delay = self._backoff(first.attempts)
            DELIVERIES.labels("slack", "failed").inc(len(fps))
            self._mark(conn, outbox.mark_failed, first.channel_id, fps, result.error or "failed", delay,
                       max_attempts=self.ns.notifier_max_attempts)
            log.warning("slack delivery failed; will retry",
                        extra={**ctx, "error": result.error, "delay_s": round(delay, 1), "attempt": first.attempts})

    def _email(self, conn: psycopg.Connection[Any], batch: list[outbox.Claimed], secret: str,
               contents: list[EmailContent], ctx: dict[str, Any]) -> None:
        recipients = parse_recipients(secret)
        for i, (c, content) in enumerate(zip(batch, contents, strict=True)):
            rest = [x.fingerprint for x in batch[i + 1:]]
            result = self.email.send(recipients, c.fingerprint, content)
            try:
                if not self._email_outcome(conn, c, result.outcome, result.error, rest, ctx):
                    return
            except psycopg.OperationalError:
                if rest:
                    self._release(c.channel_id, rest, "email")
                raise

    def _email_outcome(self, conn: psycopg.Connection[Any], c: outbox.Claimed, outcome: str, error: str | None,
                       rest: list[str], ctx: dict[str, Any]) -> bool:
        """Mark one email's outcome; whether the rest of the batch may still be sent."""
        if outcome == "sent":
            DELIVERIES.labels("email", "sent").inc()
            self._mark(conn, outbox.mark_sent, c.channel_id, [c.fingerprint])
            return True
        err = error or outcome
        if outcome == "dead":
            DELIVERIES.labels("email", "dead").inc()
            self._mark(conn, outbox.mark_dead, c.channel_id, [c.fingerprint], err)
            log.warning("email refused permanently; dead-lettered", extra={**ctx, "fingerprint": c.fingerprint,
                                                                           "error": err})
            return True
        if outcome == "disable":
            DELIVERIES.labels("email", "disabled").inc(1 + len(rest))
            self._mark(conn, outbox.disable_channel, c.workspace_id, c.channel_id, [c.fingerprint, *rest], err)
            return False
        delay = self._backoff(c.attempts)
        DELIVERIES.labels("email", "failed").inc()
        self._mark(conn, outbox.mark_failed, c.channel_id, [c.fingerprint], err, delay,
                   max_attempts=self.ns.notifier_max_attempts)
        if rest:  # not attempted: back in the queue without using up an attempt
            DELIVERIES.labels("email", "not_attempted").inc(len(rest))
            self._mark(conn, outbox.mark_failed, c.channel_id, rest, f"not attempted: {err}", delay,
                       max_attempts=self.ns.notifier_max_attempts, counts=False)
        log.warning("email delivery failed; will retry",
                    extra={**ctx, "fingerprint": c.fingerprint, "error": err, "delay_s": round(delay, 1)})
        return False

    def close(self) -> None:
        self.slack.close()
        self.email.close()


def sender_loop(db_url: str, sender: Sender, stop: threading.Event, kick: threading.Event,
                retry_max_s: float = 10.0) -> None:
    conn: psycopg.Connection[Any] | None = None
    last_expire = 0.0
    backoff = Backoff(cap_s=retry_max_s)
    while not stop.is_set():
        try:
            if conn is None or conn.closed:
                conn = psycopg.connect(db_url, autocommit=True, connect_timeout=5)
                sender.settle(conn)
            if time.monotonic() - last_expire >= EXPIRE_EVERY_S:
                outbox.expire_sending(conn)
                last_expire = time.monotonic()
            sent = sender.send_once(conn)
            backoff.reset()
            HEALTH.up("postgres")
            if sent:
                continue
        except psycopg.OperationalError as exc:
            delay = backoff.next()
            HEALTH.down("postgres", str(exc).strip())
            log.error("sender lost the database; reconnecting", extra={"error": str(exc)[:300], "retry_in_s": delay})
            if conn is not None:
                conn.close()
            conn = None
            stop.wait(delay)
            continue
        except Exception:
            log.exception("sender step failed; its claimed deliveries will surface as 'unknown'")
        kick.wait(sender.ns.notifier_poll_s)
        kick.clear()
    if conn is not None:
        conn.close()
    sender.close()


def consume_batch(conn: psycopg.Connection[Any], producer: Producer, settings: Settings, pool: ActionPool,
                  msgs: list[Message]) -> int:
    """Validate, act, ingest (one committed transaction); the caller commits offsets after."""
    alerts: list[tuple[Message, AlertV1]] = []
    dead: list[str] = []
    for m in msgs:
        err = m.error()
        if err is not None:
            if err.fatal():
                raise KafkaException(err)
            if err.code() != KafkaError._PARTITION_EOF:
                KAFKA_ERRORS.labels("notifier", err.name()).inc()
                log.warning("kafka consumer error", extra={"error": err.str()})
            continue
        try:
            alerts.append((m, parse_alert(m.value())))
        except InvalidAlert as exc:
            send_dead_letter(producer, DeadLetter(envelope_of(m), exc.reason, "notifier"), settings.kafka.deadletter_topic)
            dead.append(exc.reason)
    if dead:
        # The dead letters are safe before their offsets are committed.
        flush_until_delivered(producer, "notifier dead letters")
        _count_dead(dead)
        dead = []
    # Actions first, so the messages can say what happened (each is claimed in the audit
    # before its call: a redelivered alert skips it); in parallel across entities.
    pool.run([a for _, a in alerts])
    try:
        with conn.transaction():
            results = [(a, outbox.ingest(conn, a)) for _, a in alerts]
    except (psycopg.DataError, psycopg.IntegrityError):
        # One alert the database refuses (e.g. a NUL character in a name) must not stop
        # the topic: record the others one by one, dead-letter the refused one.
        results = []
        for m, a in alerts:
            try:
                results.append((a, outbox.ingest(conn, a)))
            except (psycopg.DataError, psycopg.IntegrityError) as exc:
                reason = f"database refused the alert: {type(exc).__name__}: {str(exc)[:300]}"
                send_dead_letter(producer, DeadLetter(envelope_of(m), reason, "notifier"), settings.kafka.deadletter_topic)
                dead.append(reason)
        if dead:
            flush_until_delivered(producer, "notifier dead letters")
            _count_dead(dead)
    for a, r in results:
        log.info("alert recorded", extra={"fingerprint": a.fingerprint, "workspace_id": str(a.workspace_id),
                                          "kind": a.kind, "queued": len(r.queued), "dead": len(r.dead),
                                          "new": r.alert_created})
    NOTIFIER_ALERTS.labels("recorded").inc(len(results))
    return len(results)


def _count_dead(reasons: list[str]) -> None:
    NOTIFIER_ALERTS.labels("dead_lettered").inc(len(reasons))
    dead_lettered("notifier", reasons)


def run_notifier(settings: Settings, stop: threading.Event) -> int:
    """Consume, record and deliver until ``stop`` is set (``metricx notifier`` sets it on
    SIGINT/SIGTERM through :func:`ground.stopping.stop_on_signals`)."""
    ns = settings.notifier
    try:
        keyring = Keyring.from_settings(settings.tokens)
    except TokenKeyError as exc:
        raise ConfigError(f"the notifier decrypts channel secrets: {exc}") from None
    kick = threading.Event()
    # Several senders, so one slow webhook or relay does not delay every other channel;
    # the per-channel claim lock keeps each channel's messages one at a time.
    threads = [threading.Thread(target=sender_loop, args=(settings.database.libpq_url, Sender(ns, keyring), stop, kick,
                                                          settings.retry_max_s),
                                name=f"notifier-sender-{i}", daemon=True) for i in range(ns.notifier_senders)]
    for t in threads:
        t.start()
    consumer = Consumer({
        "bootstrap.servers": settings.kafka.bootstrap,
        "group.id": ns.notifier_group_id,
        "enable.auto.commit": False,
        "on_commit": _committed,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
        "client.id": "metricx-notifier",
        # A killed notifier's partitions move to its replacement after this long (default 45 s).
        "session.timeout.ms": 10_000,
    })
    # Dead letters only, with no delivery deadline: a broker restart delays them, never drops them.
    producer = deadletter_producer(settings.kafka.bootstrap, client_id="metricx-notifier",
                                   extra={"message.timeout.ms": 0})
    platforms = settings.platforms
    pool = ActionPool(settings.database.libpq_url, keyring, MetaStatusSetter(platforms.meta_graph_url),
                      GoogleStatusSetter(api=GoogleApi(platforms.google_ads_endpoint, platforms.google_oauth_token_url,
                                                       platforms.google_ca_path)),
                      ns.notifier_action_workers)
    consumer.subscribe([settings.kafka.alerts_topic])
    log.info("notifier started", extra={"topic": settings.kafka.alerts_topic, "group": ns.notifier_group_id})
    intake = _Intake(settings, producer, pool)
    lag_at = 0.0
    try:
        while not stop.is_set():
            if time.monotonic() - lag_at >= settings.metrics.lag_interval_s:
                _probe_kafka(consumer, settings.kafka.alerts_topic)
                _measure_lag(consumer)
                lag_at = time.monotonic()
            # Short: consume() waits the whole timeout unless a full batch is there, and
            # alerts trickle in; the wait was most of an alert's time to its channel.
            msgs = consumer.consume(num_messages=CONSUME_BATCH, timeout=0.05)
            if not msgs:
                continue
            recorded = intake.record(msgs, stop)
            if recorded is None:
                break  # stopping while the database was away: nothing committed, re-read next start
            if recorded:
                kick.set()
            _commit(consumer)
    finally:
        stop.set()
        intake.close()
        pool.close()
        consumer.close()
        for t in threads:
            t.join(timeout=ns.notifier_send_lease_s)
        producer.flush(10)
    log.info("notifier stopped")
    return 0


class _Intake:
    """Records consumed batches, holding on to a batch while the database is away: the
    consumer has moved past it, so giving up would skip it until the next restart."""

    def __init__(self, settings: Settings, producer: Producer, pool: ActionPool) -> None:
        self._settings, self._producer, self._pool = settings, producer, pool
        self._conn: psycopg.Connection[Any] | None = None
        self._backoff = Backoff(cap_s=settings.retry_max_s)

    def record(self, msgs: list[Message], stop: threading.Event) -> int | None:
        """How many alerts were recorded; None if ``stop`` was set while waiting."""
        while True:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = psycopg.connect(self._settings.database.libpq_url, autocommit=True, connect_timeout=5)
                n = consume_batch(self._conn, self._producer, self._settings, self._pool, msgs)
            except psycopg.OperationalError as exc:
                delay = self._backoff.next()
                HEALTH.down("postgres", str(exc).strip())
                log.error("alert intake lost the database; retrying the batch",
                          extra={"error": str(exc)[:300], "alerts": len(msgs), "retry_in_s": delay})
                self.close()
                if stop.wait(delay):
                    return None
                continue
            self._backoff.reset()
            HEALTH.up("postgres")
            return n

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _commit(consumer: Consumer) -> None:
    """Commit the consumed positions, asynchronously: a synchronous commit waits for the
    group coordinator with no deadline, so a broker restart right after a batch froze the
    whole intake (and /readyz with it) until the broker came back.  The outcome arrives in
    :func:`_committed` during the next ``consume``; a commit the broker could not take is
    covered by the next one, and a restart meanwhile re-reads a batch whose intake is
    idempotent."""
    try:
        consumer.commit(asynchronous=True)
    except KafkaException as exc:
        err = exc.args[0]
        if not isinstance(err, KafkaError) or err.fatal():
            raise
        if err.code() != KafkaError._NO_OFFSET:
            _committed(err, [])


def _committed(err: KafkaError | None, partitions: list[Any]) -> None:
    if err is None:
        HEALTH.up("kafka")
        return
    if err.code() == KafkaError._NO_OFFSET:
        return
    KAFKA_ERRORS.labels("notifier", err.name()).inc()
    HEALTH.down("kafka", f"offset commit: {err.str()}")


def _probe_kafka(consumer: Consumer, topic: str) -> None:
    """One metadata request: the broker's health in /readyz also while no alert flows
    (consume() keeps quiet about a broker that is away)."""
    try:
        md = consumer.list_topics(topic, timeout=2)
        t = md.topics.get(topic)
        if t is None or t.error is not None:
            raise KafkaException(t.error if t is not None else f"topic {topic!r} not found")
    except KafkaException as exc:
        HEALTH.down("kafka", f"metadata of {topic}: {exc}")
        return
    HEALTH.up("kafka")


def _measure_lag(consumer: Consumer) -> None:
    """Per assigned partition: the broker's high watermark (as of the last fetch, no
    request) minus this consumer's position."""
    try:
        parts = consumer.assignment()
        for tp in consumer.position(parts):
            _, high = consumer.get_watermark_offsets(tp, cached=True)
            if high >= 0 and tp.offset >= 0:
                CONSUMER_LAG.labels("notifier", tp.topic, str(tp.partition)).set(max(0, high - tp.offset))
    except KafkaException as exc:
        log.debug("notifier lag not measured", extra={"error": str(exc)})

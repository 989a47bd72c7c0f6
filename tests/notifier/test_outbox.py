"""The outbox and the sender on a real PostgreSQL, against the Slack and SMTP fakes.

A controllable clock drives the sender's own pacing; the database's hold on a channel
(429 Retry-After, backoff) is real time, so those tests check the hold, not its length.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from adapters.slack import SlackClient
from ground.settings import NotifierSettings
from notifier import outbox
from notifier.service import Sender
from tests.fakes.slack_server import FakeSlack, Reply, fingerprints_in
from tests.fakes.smtp_server import FakeSmtp
from tests.integration.conftest import database, services  # noqa: F401  (fixtures)
from tests.notifier.factory import OTHER_WS, WS, alert, channel, keyring, workspace
from tests.pg_locks import waiting_on_a_lock


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def conn(database: str) -> Iterator[psycopg.Connection[Any]]:  # noqa: F811
    with psycopg.connect(database, autocommit=True) as c:
        yield c


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack().running() as f:
        yield f


@pytest.fixture
def smtp() -> Iterator[FakeSmtp]:
    with FakeSmtp().running() as f:
        yield f


def rows(conn: psycopg.Connection[Any], channel_id: uuid.UUID | None = None) -> dict[str, tuple[Any, ...]]:
    q = "SELECT fingerprint, status, attempts, last_error, next_attempt_at - clock_timestamp() FROM alert_deliveries"
    params: tuple[Any, ...] = ()
    if channel_id is not None:
        q += " WHERE channel_id = %s"
        params = (channel_id,)
    return {r[0]: r[1:] for r in conn.execute(q, params).fetchall()}


def make_sender(smtp: FakeSmtp | None = None, clock: Clock | None = None, **kw: Any) -> Sender:
    # Batches of 10 here, so 12 alerts make two messages (the default of 100 would not).
    kw.setdefault("notifier_batch_size", 10)
    ns = NotifierSettings(smtp_port=smtp.port if smtp else 25, smtp_from="alerts@metricx.test",
                          notifier_retry_base_s=30, **kw)
    return Sender(ns, keyring(), slack=SlackClient(timeout_s=5), clock=clock or Clock())


def test_ingest_queues_own_channels_and_is_idempotent(conn: psycopg.Connection[Any]) -> None:
    a_slack = channel(conn, "slack", "http://127.0.0.1:9/hook")
    a_mail = channel(conn, "email", "a@shop.test")
    off = channel(conn, "slack", "http://127.0.0.1:9/off")
    conn.execute("UPDATE channels SET status = 'disabled', last_error = 'slack 410: channel_is_archived' WHERE id = %s",
                 (off,))
    foreign = channel(conn, "slack", "http://127.0.0.1:9/other", ws=OTHER_WS)
    unknown = uuid.uuid4()
    a = alert(1, notify=[a_slack, a_mail, off, foreign, unknown])
    r = outbox.ingest(conn, a)
    assert r.alert_created and set(r.queued) == {a_slack, a_mail} and r.dead == [off]
    assert set(r.ignored) == {foreign, unknown}
    got = {(c, s) for c, s in conn.execute("SELECT channel_id, status FROM alert_deliveries").fetchall()}
    assert got == {(a_slack, "pending"), (a_mail, "pending"), (off, "dead")}
    assert "channel_is_archived" in conn.execute("SELECT last_error FROM alert_deliveries WHERE channel_id = %s",
                                                 (off,)).fetchone()[0]  # type: ignore[index]
    again = outbox.ingest(conn, a)
    assert not again.alert_created
    assert conn.execute("SELECT count(*) FROM alert_deliveries").fetchone() == (3,)
    payload = conn.execute("SELECT payload FROM alerts").fetchone()[0]  # type: ignore[index]
    assert payload["fingerprint"] == a.fingerprint and payload["actions"]["notify"][0] == str(a_slack)


def test_claim_commits_sending_before_returning_and_expires_to_unknown(conn: psycopg.Connection[Any], database: str) -> None:  # noqa: F811
    ch = channel(conn, "slack", "http://127.0.0.1:9/hook")
    for i in range(3):
        outbox.ingest(conn, alert(i, notify=[ch]))
    got = outbox.claim(conn, 2, lease_s=0.5)
    assert [c.attempts for c in got] == [1, 1] and got[0].payload["schema"] == "metricx.alert.v1"
    with psycopg.connect(database) as other:  # another session sees the claim: it is committed
        statuses = sorted(r[0] for r in other.execute("SELECT status FROM alert_deliveries").fetchall())
    assert statuses == ["pending", "sending", "sending"]
    assert outbox.claim(conn, 10, lease_s=0.5) == []  # the channel is busy while a send is in flight
    conn.execute("SELECT pg_sleep(0.6)")
    assert outbox.expire_sending(conn) == 2
    st = rows(conn, ch)
    assert sorted(s[0] for s in st.values()) == ["pending", "unknown", "unknown"]
    again = outbox.claim(conn, 10)
    assert len(again) == 1 and again[0].fingerprint not in {c.fingerprint for c in got}  # unknown never resent


def test_claim_requires_an_idle_connection(conn: psycopg.Connection[Any], database: str) -> None:  # noqa: F811
    with psycopg.connect(database) as c:  # not autocommit: a transaction is open after any statement
        c.execute("SELECT 1")
        with pytest.raises(RuntimeError):
            outbox.claim(c, 1)


def test_slack_batches_and_paces_per_webhook(conn: psycopg.Connection[Any], slack: FakeSlack) -> None:
    url = slack.hook("a")
    ch = channel(conn, "slack", url)
    alerts = [alert(i, notify=[ch]) for i in range(12)]
    for a in alerts:
        outbox.ingest(conn, a)
    clock = Clock()
    s = make_sender(clock=clock)
    assert s.send_once(conn) == 10
    assert s.send_once(conn) == 0  # 1 message/s per webhook: the rest waits
    assert make_sender().send_once(conn) == 0  # in any process: the last send time is in the outbox
    clock.t += 1.0
    conn.execute("UPDATE alert_deliveries SET sent_at = sent_at - interval '1 second'")  # a second passes
    assert s.send_once(conn) == 2
    bodies = [r.body for r in slack.requests_to(url)]
    assert len(bodies) == 2 and len(bodies[0]["blocks"]) <= 50
    sent = [fp for b in bodies for fp in fingerprints_in(b)]
    assert sorted(sent) == sorted(a.fingerprint for a in alerts)
    assert {v[0] for v in rows(conn).values()} == {"sent"}


def test_pacing_is_per_webhook(conn: psycopg.Connection[Any], slack: FakeSlack) -> None:
    ch_a, ch_b = channel(conn, "slack", slack.hook("a")), channel(conn, "slack", slack.hook("b"))
    outbox.ingest(conn, alert(1, notify=[ch_a, ch_b]))
    s = make_sender()
    assert s.send_once(conn) == 1 and s.send_once(conn) == 1  # b is not held back by a's pacing
    assert len(slack.received) == 2


def test_429_holds_the_whole_channel_without_using_attempts(conn: psycopg.Connection[Any], slack: FakeSlack) -> None:
    url = slack.hook("a")
    slack.script(url, Reply(429, "rate_limited", retry_after=30))
    ch = channel(conn, "slack", url)
    outbox.ingest(conn, alert(1, notify=[ch]))
    clock = Clock()
    s = make_sender(clock=clock)
    assert s.send_once(conn) == 1
    [(status, attempts, err, wait)] = rows(conn).values()
    assert (status, attempts) == ("failed", 0) and "429" in err and 25 < wait.total_seconds() <= 30
    outbox.ingest(conn, alert(2, notify=[ch]))  # a new alert for the same webhook waits too
    clock.t += 100  # even when this process's own pacing would allow it
    assert s.send_once(conn) == 0
    assert len(slack.requests_to(url)) == 1
    # A second notifier process (fresh memory) must respect the hold as well.
    assert make_sender().send_once(conn) == 0


def test_410_disables_the_channel_and_kills_its_queue(conn: psycopg.Connection[Any], slack: FakeSlack) -> None:
    url = slack.hook("a")
    slack.gone(url, 410, "channel_is_archived")
    ch = channel(conn, "slack", url)
    for i in range(12):
        outbox.ingest(conn, alert(i, notify=[ch]))
    assert make_sender().send_once(conn) == 10
    status, err = conn.execute("SELECT status, last_error FROM channels WHERE id = %s", (ch,)).fetchone()  # type: ignore[misc]
    assert status == "disabled" and "410" in err and "channel_is_archived" in err
    assert {v[0] for v in rows(conn).values()} == {"dead"}
    assert make_sender().send_once(conn) == 0
    assert len(slack.received) == 1
    r = outbox.ingest(conn, alert(99, notify=[ch]))
    assert r.dead == [ch]


def test_a_channel_disabled_while_an_alert_is_queued_on_it_leaves_nothing_pending(
    conn: psycopg.Connection[Any], database: str,  # noqa: F811
) -> None:
    """The race CI once lost: the consumer queues an alert on a channel (transaction still
    open) while a sender gets a 410 there and sweeps the channel's queue.  The sweep must
    see the queued row, or it stays 'pending' on a disabled channel, never sent or killed."""
    ch = channel(conn, "slack", "http://127.0.0.1:9/hook")
    with psycopg.connect(database, autocommit=True) as consumer, \
            psycopg.connect(database, autocommit=True) as sender:
        sender_pid = sender.info.backend_pid
        done = threading.Event()
        with consumer.transaction():  # the consumer's batch transaction
            outbox.ingest(consumer, alert(1, notify=[ch]))

            def disable() -> None:
                outbox.disable_channel(sender, WS, ch, [], "slack webhook refused with 410: channel_is_archived")
                done.set()

            t = threading.Thread(target=disable)
            t.start()
            # Either the sender waits for the consumer's commit (the fix) or it finishes
            # first; give it the time to do the latter before committing.
            deadline = time.monotonic() + 5.0
            while not done.is_set() and not waiting_on_a_lock(database, sender_pid) \
                    and time.monotonic() < deadline:
                time.sleep(0.02)
        t.join(10)
        assert not t.is_alive()
    assert {v[0] for v in rows(conn, ch).values()} == {"dead"}
    assert outbox.ingest(conn, alert(2, notify=[ch])).dead == [ch]


def test_5xx_backs_off_and_dies_after_max_attempts(conn: psycopg.Connection[Any], slack: FakeSlack) -> None:
    url = slack.hook("a")
    slack.script(url, Reply(500, "oops"), Reply(500, "oops"))
    ch = channel(conn, "slack", url)
    outbox.ingest(conn, alert(1, notify=[ch]))
    s = make_sender(notifier_max_attempts=2)
    assert s.send_once(conn) == 1
    [(status, attempts, err, wait)] = rows(conn).values()
    assert (status, attempts) == ("failed", 1) and "500" in err and wait.total_seconds() > 10
    conn.execute("UPDATE alert_deliveries SET next_attempt_at = clock_timestamp()")  # time passes
    s.not_before.clear()
    assert s.send_once(conn) == 1
    [(status, attempts, err, _)] = rows(conn).values()
    assert (status, attempts) == ("dead", 2)
    conn.execute("UPDATE alert_deliveries SET next_attempt_at = clock_timestamp()")
    s.not_before.clear()
    assert s.send_once(conn) == 0


def test_email_4xx_retried_then_sent_and_5xx_dead(conn: psycopg.Connection[Any], smtp: FakeSmtp) -> None:
    ch = channel(conn, "email", "buyer@shop.test, boss@shop.test")
    a1, a2 = alert(1, notify=[ch]), alert(2, notify=[ch])
    outbox.ingest(conn, a1)
    outbox.ingest(conn, a2)
    smtp.script_data("451 4.3.0 try again later")
    s = make_sender(smtp)
    assert s.send_once(conn) == 1  # emails are claimed one at a time
    st = rows(conn)
    assert st[a1.fingerprint][:2] == ("failed", 1) and "451" in st[a1.fingerprint][2]
    assert st[a2.fingerprint][:2] == ("pending", 0)
    assert s.send_once(conn) == 0  # the relay deferred: the channel waits out the backoff
    conn.execute("UPDATE alert_deliveries SET next_attempt_at = clock_timestamp()")
    smtp.script_data("554 5.7.1 rejected")
    assert s.send_once(conn) == 1 and s.send_once(conn) == 1
    st = rows(conn)
    assert st[a1.fingerprint][0] == "dead" and "554 5.7.1 rejected" in st[a1.fingerprint][2]
    assert st[a2.fingerprint][0] == "sent"
    assert [m.fingerprint for m in smtp.mails] == [a2.fingerprint]
    assert smtp.mails[0].message["Subject"].startswith("[metricx] Alert:")


def test_names_and_action_outcome_reach_the_message(conn: psycopg.Connection[Any], slack: FakeSlack) -> None:
    url = slack.hook("a")
    ch = channel(conn, "slack", url)
    a = alert(1, notify=[ch], pause=True, dry_run=True)
    conn.execute("INSERT INTO connections (workspace_id, provider, account_id, token_key_id, token_ciphertext) "
                 "VALUES (%s, 'meta', '111', 'k1', '\\x00')", (a.workspace_id,))
    conn.execute("INSERT INTO entities (workspace_id, provider, account_id, entity_id, entity_level, name) "
                 "VALUES (%s, 'meta', '111', %s, 'ad', 'Video 3'), (%s, 'meta', '111', 'cmp-9', 'campaign', 'BF')",
                 (a.workspace_id, a.entity_id, a.workspace_id))
    outbox.ingest(conn, a)
    make_sender().send_once(conn)
    text = json.dumps(slack.received[0].body, ensure_ascii=False)
    assert "Video 3" in text and '\\"BF\\"' in text and "paused (dry run)" in text


def test_workspace_row_needed_only_for_channels(conn: psycopg.Connection[Any]) -> None:
    workspace(conn)
    r = outbox.ingest(conn, alert(1, notify=[]))
    assert r.alert_created and r.queued == []


def test_an_alert_storm_leaves_in_one_message_per_webhook(conn: psycopg.Connection[Any], slack: FakeSlack) -> None:
    """With the default batch, a burst of 37 alerts for one webhook is one message (10 in
    full, 27 as linked lines), not four messages a second apart."""
    url = slack.hook("storm")
    ch = channel(conn, "slack", url)
    alerts = [alert(i, notify=[ch]) for i in range(37)]
    for a in alerts:
        outbox.ingest(conn, a)
    assert make_sender(notifier_batch_size=NotifierSettings().notifier_batch_size).send_once(conn) == 37
    [request] = slack.requests_to(url)
    assert sorted(fingerprints_in(request.body)) == sorted(a.fingerprint for a in alerts)


def test_a_send_whose_mark_met_a_lost_connection_is_marked_sent_after_reconnecting(
    conn: psycopg.Connection[Any], slack: FakeSlack, database: str,  # noqa: F811
) -> None:
    """The database connection dies while Slack is answering (a PostgreSQL restart): the
    message went out, so the sender keeps the 'sent' mark and writes it once it is
    connected again; before, the row stayed 'sending' and later became 'unknown'."""
    url = slack.hook("a")
    ch = channel(conn, "slack", url)
    a = alert(1, notify=[ch])
    outbox.ingest(conn, a)
    slack.script(url, Reply(delay_s=1.0))
    s = make_sender()
    with psycopg.connect(database, autocommit=True) as sending:
        pid = sending.info.backend_pid

        def cut_when_slack_is_answering() -> None:
            while not slack.requests_to(url):
                time.sleep(0.01)
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))

        cutter = threading.Thread(target=cut_when_slack_is_answering)
        cutter.start()
        with pytest.raises(psycopg.OperationalError):
            s.send_once(sending)
        cutter.join()
    assert rows(conn)[a.fingerprint][0] == "sending"
    with psycopg.connect(database, autocommit=True) as fresh:
        s.settle(fresh)
    assert rows(conn)[a.fingerprint][0] == "sent" and not s.owed
    assert [fingerprints_in(r.body) for r in slack.requests_to(url)] == [[a.fingerprint]]  # sent once


def test_claimed_deliveries_never_sent_go_back_to_the_queue_after_a_lost_connection(
    conn: psycopg.Connection[Any], slack: FakeSlack, database: str,  # noqa: F811
) -> None:
    """The connection dies after the claim, before the send (preparing the message):
    nothing went out, so the deliveries are queued again instead of ending 'unknown'."""
    url = slack.hook("a")
    ch = channel(conn, "slack", url)
    a = alert(2, notify=[ch])
    outbox.ingest(conn, a)
    s = make_sender()
    with psycopg.connect(database, autocommit=True) as sending, psycopg.connect(database) as locker:
        # Only the message's preparation reads `entities` (the claim does not): hold the
        # table, and cut the sender's connection while it waits there.
        locker.execute("LOCK TABLE entities IN ACCESS EXCLUSIVE MODE")
        pid = sending.info.backend_pid

        def cut_when_preparing() -> None:
            while not waiting_on_a_lock(database, pid):
                time.sleep(0.01)
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))

        cutter = threading.Thread(target=cut_when_preparing)
        cutter.start()
        with pytest.raises(psycopg.OperationalError):
            s.send_once(sending)
        cutter.join()
        locker.rollback()
    assert rows(conn)[a.fingerprint][:2] == ("sending", 1)
    with psycopg.connect(database, autocommit=True) as fresh:
        s.settle(fresh)
    status, attempts, *_ = rows(conn)[a.fingerprint]
    assert (status, attempts) == ("failed", 0) and not slack.requests_to(url)
    assert make_sender().send_once(conn) == 1  # due again at once, and sent
    assert rows(conn)[a.fingerprint][0] == "sent"

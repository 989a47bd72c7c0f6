"""`metricx notifier` as a real process on real Kafka and PostgreSQL, killed -9 mid-burst
and restarted: every alert reaches every channel once (or is surfaced as 'unknown' — the
one honest gap: killed between "claimed" and "marked"), never twice; 429 Retry-After and
1 message/s per webhook hold across the restart; a 410 disables its channel; duplicate
messages on the topic and an invalid one (dead-lettered) change nothing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer

from adapters.kafka import Producer, delete_topics, ensure_topics
from ground.settings import REPO_ROOT, Settings
from schemas.envelope import H_STAGE
from schemas.topics import TopicSpec, deadletter_topic_spec
from tests.fakes.google_ads_grpc import FakeCustomer, FakeGoogleAds
from tests.fakes.graph_api import FakeAccount, FakeGraphApi
from tests.fakes.slack_server import FakeSlack, Reply, fingerprints_in
from tests.fakes.smtp_server import FakeSmtp
from tests.notifier.factory import (
    GOOGLE_CID,
    GOOGLE_DEV,
    GOOGLE_TOKEN,
    KEY,
    META_TOKEN,
    WS,
    channel,
    google_connection,
    meta_connection,
    payload,
)

N_ALERTS = 40
RETRY_AFTER_S = 2.0
MIN_INTERVAL_S = 1.0

pytestmark = pytest.mark.services


class Notifier:
    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env, self.log_dir, self.runs = env, log_dir, 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.runs += 1
        with open(self.log_dir / f"notifier-{self.runs}.log", "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "metricx.cli", "notifier"], env=self.env,
                                         stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)

    def log(self) -> str:
        return (self.log_dir / f"notifier-{self.runs}.log").read_text(errors="replace")

    def assert_running(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"notifier exited with {self.proc.returncode}:\n{self.log()[-4000:]}")

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def topics(services: Settings) -> Iterator[tuple[str, str]]:
    suffix = uuid.uuid4().hex[:8]
    alerts, dlq = f"metricx.alerts.t{suffix}", f"metricx.deadletter.t{suffix}"
    ensure_topics(services.kafka.bootstrap, [TopicSpec(alerts, 4), deadletter_topic_spec(dlq)])
    yield alerts, dlq
    delete_topics(services.kafka.bootstrap, [alerts, dlq])


def notifier_env(database: str, topics: tuple[str, str], **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "METRICX_DATABASE_URL": database,
        "METRICX_ALERTS_TOPIC": topics[0],
        "METRICX_DEADLETTER_TOPIC": topics[1],
        "METRICX_NOTIFIER_GROUP_ID": f"metricx-notifier-{uuid.uuid4().hex[:8]}",
        "METRICX_TOKEN_KEYS": f"k1:{KEY}",
        "METRICX_TOKEN_KEY_ID": "k1",
        "METRICX_DASHBOARD_URL": "https://app.metricx.test",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def send_alerts(producer: Producer, topic: str, payloads: Sequence[dict[str, Any] | bytes]) -> None:
    """As the pipeline publishes them (keyed by workspace); bytes go as they are."""
    for p in payloads:
        producer.send(topic, p if isinstance(p, bytes) else json.dumps(p).encode(), str(WS).encode())
    producer.flush()


def wait_for(cond: Any, what: str, notifier: Notifier, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        notifier.assert_running()
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}:\n{notifier.log()[-3000:]}")
        time.sleep(0.1)


def test_kill9_mid_burst_every_alert_once_per_channel(
    services: Settings, database: str, topics: tuple[str, str], tmp_path: Path,
) -> None:
    alerts_topic, dlq_topic = topics
    with FakeSlack().running() as slack, FakeSmtp().running() as smtp, \
            psycopg.connect(database, autocommit=True) as conn:
        hook_a, hook_b, hook_c = slack.hook("a"), slack.hook("b"), slack.hook("c")
        slack.script(hook_a, Reply(429, "rate_limited", retry_after=RETRY_AFTER_S))
        slack.gone(hook_c, 410, "channel_is_archived")
        # b answers slowly, so the kill is likely to land while a message is in flight
        slack.script(hook_b, *[Reply(delay_s=0.3)] * 20)
        ch_a, ch_b, ch_c = channel(conn, "slack", hook_a), channel(conn, "slack", hook_b), channel(conn, "slack", hook_c)
        ch_mail = channel(conn, "email", "buyer@shop.test, boss@shop.test")
        chans = {ch_a: "slack-a", ch_b: "slack-b", ch_c: "slack-c", ch_mail: "email"}

        payloads = [payload(i, notify=[ch_a, ch_b, ch_mail] + ([ch_c] if i % 4 == 0 else [])) for i in range(N_ALERTS)]
        fps = {p["fingerprint"] for p in payloads}
        producer = Producer(services.kafka.bootstrap, client_id="test-alerts")
        first, later = payloads[:30], payloads[30:]
        send_alerts(producer, alerts_topic, first)

        env = notifier_env(
            database, topics,
            METRICX_SMTP_HOST="127.0.0.1",
            METRICX_SMTP_PORT=str(smtp.port),
            METRICX_SMTP_FROM="alerts@metricx.test",
            METRICX_SLACK_MIN_INTERVAL_S=str(MIN_INTERVAL_S),
            # Small batches, so the burst takes several messages per webhook and the kill
            # lands between them (the default batch would carry it in one).
            METRICX_NOTIFIER_BATCH_SIZE="10",
            METRICX_NOTIFIER_SEND_LEASE_S="5",
        )
        notifier = Notifier(env, tmp_path)
        try:
            notifier.start()
            wait_for(lambda: len(slack.requests_to(hook_b)) >= 1, "the first message to webhook b", notifier)
            notifier.kill9()  # b has 3 messages to send at 1/s: this is mid-burst
            killed_at_requests = len(slack.received)
            # While it is down: the rest of the burst, duplicates (the pipeline replayed, or
            # a producer retried) and one invalid message.
            # valid JSON and a valid alert, but PostgreSQL refuses NUL characters: dead-lettered too
            poison = payload(99, notify=[ch_a], pause=True, dry_run=True, rule_name="bad\u0000name")
            send_alerts(producer, alerts_topic, [*later, *payloads[:5], *later[:3],
                                                 b'{"schema": "metricx.alert.v1", "kind": "fired"}', poison])
            notifier.start()

            def settled() -> bool:
                open_rows = conn.execute("SELECT count(*) FROM alert_deliveries WHERE status IN "
                                         "('pending', 'failed', 'sending')").fetchone()
                total = conn.execute("SELECT count(*) FROM alert_deliveries").fetchone()
                expected = N_ALERTS * 3 + N_ALERTS // 4
                return open_rows == (0,) and total == (expected,)

            try:
                wait_for(settled, "every delivery to reach a final state", notifier)
            except AssertionError as exc:  # say which deliveries did not settle, and why
                rows = conn.execute(
                    "SELECT status, attempts, round(extract(epoch FROM next_attempt_at - now())), "
                    "left(last_error, 120), count(*) FROM alert_deliveries GROUP BY 1, 2, 3, 4 ORDER BY 1").fetchall()
                raise AssertionError(f"{exc}\ndeliveries (status, attempts, due in s, error, n): {rows}") from None
            assert notifier.proc is not None
            notifier.proc.send_signal(signal.SIGTERM)  # a clean stop: exits 0
            assert notifier.proc.wait(timeout=60) == 0, notifier.log()[-3000:]
            assert '"notifier stopped"' in notifier.log()
        finally:
            notifier.kill9()

        # -- what the fakes received -----------------------------------------------------
        got: Counter[tuple[str, str]] = Counter()
        for r in slack.received:
            if r.answered == 200:
                name = {hook_a: "slack-a", hook_b: "slack-b"}[slack.url + r.path]
                for fp in fingerprints_in(r.body):
                    got[(fp, name)] += 1
        for m in smtp.mails:
            got[(m.fingerprint, "email")] += 1
        assert all(n == 1 for n in got.values()), [k for k, n in got.items() if n > 1]  # never twice

        rows = conn.execute("SELECT fingerprint, channel_id, status, last_error FROM alert_deliveries").fetchall()
        status = {(fp, chans[cid]): (st, err) for fp, cid, st, err in rows}
        assert {fp for fp, _ in status} == fps  # the duplicates and the invalid message queued nothing new
        for (fp, name), (st, err) in status.items():
            if name == "slack-c" and st != "unknown":
                assert st == "dead" and "410" in err, (fp, st, err)
            elif st == "sent":
                assert got[(fp, name)] == 1, (fp, name)
            else:
                # The honest gap: killed after the claim committed, before the mark.
                assert st == "unknown", (fp, name, st, err)
        unknown = [k for k, (st, _) in status.items() if st == "unknown"]
        per_channel = Counter(name for _, name in unknown)
        assert all(n <= 10 for n in per_channel.values()), per_channel  # at most the one batch in flight
        assert per_channel["email"] <= 1  # emails are claimed one at a time
        delivered_or_unknown = {k for k in status if k[1] != "slack-c"}
        assert delivered_or_unknown == {k for k in set(got) | set(unknown) if k[1] != "slack-c"}  # none lost silently

        # -- the 410 disabled its channel, with the error the API shows ----------------------
        st_c, err_c = conn.execute("SELECT status, last_error FROM channels WHERE id = %s", (ch_c,)).fetchone()  # type: ignore[misc]
        assert st_c == "disabled" and "410" in err_c and "channel_is_archived" in err_c
        # one request, or two when the kill cut off the first (its batch is then 'unknown')
        reqs_c = slack.requests_to(hook_c)
        assert 1 <= len(reqs_c) <= 2 and reqs_c[-1].answered == 410
        assert len(reqs_c) == 1 or Counter(n for _, n in unknown)["slack-c"] > 0

        # -- protocol: Retry-After honoured, 1 message/s per webhook, across the restart ----
        reqs_a = slack.requests_to(hook_a)
        assert reqs_a[0].answered == 429 and len(reqs_a) >= 2
        assert reqs_a[1].at >= reqs_a[0].at + RETRY_AFTER_S
        for hook in (hook_a, hook_b):
            times = [r.at for r in slack.requests_to(hook)]
            gaps = [b - a for a, b in pairwise(times)]
            assert all(g >= MIN_INTERVAL_S for g in gaps), (hook, gaps)
        assert killed_at_requests < len(slack.received)  # the restart did the rest

        # -- the invalid message went to the dead-letter topic, marked by this stage ---------
        c = Consumer({"bootstrap.servers": services.kafka.bootstrap, "group.id": f"t-{uuid.uuid4().hex[:6]}",
                      "auto.offset.reset": "earliest"})
        c.subscribe([dlq_topic])
        dead: list[Any] = []
        deadline = time.monotonic() + 30
        while len(dead) < 2 and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is not None and msg.error() is None:
                dead.append(msg)
        c.close()
        assert len(dead) == 2 and all(dict(d.headers() or [])[H_STAGE] == b"notifier" for d in dead)
        assert b"bad\\u0000name" in dead[1].value()  # the original bytes, untouched


GROUP = "4410001"


def test_pause_and_resume_on_both_platforms_through_the_notifier_process(
    services: Settings, database: str, topics: tuple[str, str], tmp_path: Path,
) -> None:
    """The wiring the unit tests of ``actions.apply`` cannot see: the notifier process
    reads the platform endpoints from its settings, decrypts each account's tokens,
    pauses a Meta ad and a Google Ads ad for real (the fakes speak Graph API and gRPC),
    resumes them on recovery, and says so in the Slack message."""
    alerts_topic, _ = topics
    with FakeSlack().running() as slack, FakeGraphApi().running() as graph, \
            FakeGoogleAds(developer_token=GOOGLE_DEV).running() as gads, \
            psycopg.connect(database, autocommit=True) as conn:
        graph.add_account(FakeAccount("111", META_TOKEN))
        gads.add(FakeCustomer(GOOGLE_CID, GOOGLE_TOKEN))
        hook = slack.hook("a")
        ch = channel(conn, "slack", hook)
        meta_connection(conn)
        google_connection(conn)
        meta_ad, google_ad = "2385000001", "9990003"

        def alerts(kind: str) -> list[dict[str, Any]]:
            resume = kind == "recovered"
            return [payload(1, kind=kind, notify=[ch], pause=True, dry_run=False, resume=resume, entity=meta_ad),
                    payload(2, kind=kind, notify=[ch], pause=True, dry_run=False, resume=resume, entity=google_ad,
                            provider="google", account=GOOGLE_CID, adset_id=GROUP, campaign_id="7770002")]

        def actions_done() -> list[tuple[Any, ...]]:
            return conn.execute("SELECT provider, entity_id, action, outcome FROM entity_actions "
                                "ORDER BY action DESC, provider DESC").fetchall()

        def slack_texts() -> str:
            return json.dumps([r.body for r in slack.requests_to(hook) if r.answered == 200])

        producer = Producer(services.kafka.bootstrap, client_id="test-alerts")
        notifier = Notifier(notifier_env(database, topics, METRICX_META_GRAPH_URL=graph.url,
                                         METRICX_GOOGLE_ADS_ENDPOINT=gads.endpoint,
                                         METRICX_SLACK_MIN_INTERVAL_S="0.2"), tmp_path)
        try:
            notifier.start()
            send_alerts(producer, alerts_topic, alerts("fired"))
            wait_for(lambda: len(actions_done()) == 2 and "Paused on the platform" in slack_texts(),
                     "both pauses and their message", notifier)
            send_alerts(producer, alerts_topic, alerts("recovered"))
            wait_for(lambda: len(actions_done()) == 4 and "Resumed on the platform" in slack_texts(),
                     "both resumes and their message", notifier)
        finally:
            notifier.kill9()

        assert actions_done() == [("meta", meta_ad, "resume", "done"), ("google", google_ad, "resume", "done"),
                                  ("meta", meta_ad, "pause", "done"), ("google", google_ad, "pause", "done")]
        assert [(u.object_id, u.status, u.token) for u in graph.status_updates] == [
            (meta_ad, "PAUSED", META_TOKEN), (meta_ad, "ACTIVE", META_TOKEN)]
        ad = f"customers/{GOOGLE_CID}/adGroupAds/{GROUP}~{google_ad}"
        assert [(m.resource_name, m.status, m.metadata["authorization"]) for m in gads.mutations] == [
            (ad, "PAUSED", f"Bearer {GOOGLE_TOKEN}"), (ad, "ENABLED", f"Bearer {GOOGLE_TOKEN}")]
        assert gads.customers[GOOGLE_CID].statuses == {int(google_ad): "ENABLED"}
        assert conn.execute("SELECT DISTINCT status FROM alert_deliveries").fetchall() == [("sent",)]
        assert META_TOKEN not in notifier.log() and GOOGLE_TOKEN not in notifier.log()


def test_an_alert_message_as_large_as_the_topic_takes_is_dead_lettered_and_the_next_recorded(
    services: Settings, database: str, topics: tuple[str, str], tmp_path: Path,
) -> None:
    """Its dead-letter copy (headers included) is over a default producer's limit: the
    notifier must not die on it, and must not stop the alerts after it."""
    alerts_topic, dlq_topic = topics
    big = b'{"schema": "metricx.alert.v1", "pad": "' + b"x" * 999_700 + b'"}'
    after = payload(1)
    send_alerts(Producer(services.kafka.bootstrap), alerts_topic, [big, after])
    notifier = Notifier(notifier_env(database, topics), tmp_path)
    with psycopg.connect(database, autocommit=True) as conn:
        try:
            notifier.start()
            wait_for(lambda: conn.execute("SELECT count(*) FROM alerts WHERE fingerprint = %s",
                                          (after["fingerprint"],)).fetchone() == (1,),
                     "the alert after the large one", notifier)
        finally:
            notifier.kill9()
    c = Consumer({"bootstrap.servers": services.kafka.bootstrap, "group.id": f"t-{uuid.uuid4().hex[:6]}",
                  "auto.offset.reset": "earliest"})
    c.subscribe([dlq_topic])
    msg = None
    deadline = time.monotonic() + 30
    while msg is None and time.monotonic() < deadline:
        m = c.poll(0.5)
        msg = m if m is not None and m.error() is None else None
    c.close()
    assert msg is not None and msg.value() == big  # whole: the dead-letter topic takes it
    assert dict(msg.headers() or [])[H_STAGE] == b"notifier"

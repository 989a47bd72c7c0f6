"""Pause / resume through the real facebook-business SDK against the fake Graph API,
audited in ``entity_actions``: dry runs recorded, real calls made at most once."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import UUID

import psycopg
import pytest

from adapters.meta.status import MetaStatusSetter
from notifier import actions
from tests.fakes.graph_api import FakeAccount, FakeGraphApi, ScriptedError
from tests.integration.conftest import database, services  # noqa: F401  (fixtures)
from tests.notifier.factory import META_TOKEN, WS, alert, keyring, meta_connection

TOKEN = META_TOKEN


@pytest.fixture
def conn(database: str) -> Iterator[psycopg.Connection[Any]]:  # noqa: F811
    with psycopg.connect(database, autocommit=True) as c:
        meta_connection(c)
        yield c


@pytest.fixture
def graph() -> Iterator[FakeGraphApi]:
    with FakeGraphApi().running() as f:
        f.add_account(FakeAccount("111", TOKEN))
        yield f


def audit(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT action, dry_run, outcome, error FROM entity_actions ORDER BY id").fetchall()


def test_dry_run_is_recorded_and_calls_nothing(conn: psycopg.Connection[Any], graph: FakeGraphApi) -> None:
    a = alert(1, pause=True, dry_run=True)
    meta = MetaStatusSetter(graph.url)
    assert actions.apply(conn, keyring(), a, meta) == "would"
    assert actions.apply(conn, keyring(), a, meta) is None
    assert audit(conn) == [("pause", True, "would", None)]
    assert graph.status_updates == []


def test_real_pause_once_then_resume_on_recovery(conn: psycopg.Connection[Any], graph: FakeGraphApi) -> None:
    meta = MetaStatusSetter(graph.url)
    a = alert(1, pause=True, dry_run=False)
    assert actions.apply(conn, keyring(), a, meta) == "done"
    assert actions.apply(conn, keyring(), a, meta) is None  # a redelivered alert never pauses twice
    rec = alert(1, kind="recovered", pause=True, dry_run=False, resume=True)
    assert actions.apply(conn, keyring(), rec, meta) == "done"
    assert [(u.object_id, u.status, u.token) for u in graph.status_updates] == [
        (a.entity_id, "PAUSED", TOKEN), (a.entity_id, "ACTIVE", TOKEN)]
    assert audit(conn) == [("pause", False, "done", None), ("resume", False, "done", None)]


def test_campaign_level_and_no_action_when_not_asked(conn: psycopg.Connection[Any], graph: FakeGraphApi) -> None:
    meta = MetaStatusSetter(graph.url)
    c = alert(2, pause=True, dry_run=False, entity_level="campaign", entity="cmp-777")
    assert actions.apply(conn, keyring(), c, meta) == "done"
    assert actions.apply(conn, keyring(), alert(3), meta) is None
    assert actions.apply(conn, keyring(), alert(4, kind="recovered", pause=True, dry_run=False), meta) is None
    assert [(u.object_id, u.status) for u in graph.status_updates] == [("cmp-777", "PAUSED")]


def test_platform_refusal_is_recorded_failed_without_the_token(conn: psycopg.Connection[Any], graph: FakeGraphApi) -> None:
    graph.fail_next(ScriptedError(code=100, status=400))
    a = alert(1, pause=True, dry_run=False)
    assert actions.apply(conn, keyring(), a, MetaStatusSetter(graph.url)) == "failed"
    [(_, _, outcome, error)] = audit(conn)
    assert outcome == "failed" and "meta error 100" in error and TOKEN not in error
    assert actions.apply(conn, keyring(), a, MetaStatusSetter(graph.url)) is None  # not retried


def test_crash_mid_call_stays_visible_and_is_not_retried(conn: psycopg.Connection[Any]) -> None:
    a = alert(1, pause=True, dry_run=False)

    def crash(tokens: dict[str, Any], level: str, entity: str, status: str) -> None:
        raise SystemExit("killed")  # not an Exception: like a process dying mid-call

    with pytest.raises(SystemExit):
        actions.apply(conn, keyring(), a, crash)
    [(_, _, outcome, error)] = audit(conn)
    assert outcome == "failed" and error == actions.IN_FLIGHT

    def never(*_: Any) -> None:
        raise AssertionError("must not be called again")

    assert actions.apply(conn, keyring(), a, never) is None


def test_missing_connections_fail_visibly(conn: psycopg.Connection[Any]) -> None:
    def never(*_: Any) -> None:
        raise AssertionError("not called")

    g = alert(1, pause=True, dry_run=False, provider="google", account="1234567890")
    assert actions.apply(conn, keyring(), g, never) == "failed"
    m = alert(2, pause=True, dry_run=False, account="999")
    assert actions.apply(conn, keyring(), m, never) == "failed"
    errors = [r[3] for r in audit(conn)]
    assert "no google connection for customer 1234567890" in errors[0] and "no meta connection" in errors[1]
    assert UUID(str(WS))  # workspace-scoped lookups only


def test_resume_only_what_metricx_paused(conn: psycopg.Connection[Any], graph: FakeGraphApi) -> None:
    meta = MetaStatusSetter(graph.url)
    rec = alert(5, kind="recovered", pause=True, dry_run=False, resume=True)
    assert actions.apply(conn, keyring(), rec, meta) is None  # never paused: a person's pause stays
    graph.fail_next(ScriptedError(code=100, status=400))
    assert actions.apply(conn, keyring(), alert(6, pause=True, dry_run=False), meta) == "failed"
    assert actions.apply(conn, keyring(), alert(6, kind="recovered", pause=True, dry_run=False, resume=True),
                         meta) is None  # the pause failed: nothing to undo
    assert graph.status_updates == []
    assert actions.fired_fingerprint(rec.fingerprint) == alert(5).fingerprint

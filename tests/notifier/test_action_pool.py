"""A batch's pause / resume calls run in parallel across entities (bounded by the
worker count) and in order within one entity, against the fake Graph API made slow."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from adapters.meta.status import MetaStatusSetter
from notifier.action_pool import ActionPool, by_entity
from tests.fakes.graph_api import FakeAccount, FakeGraphApi
from tests.integration.conftest import database, services  # noqa: F401  (fixtures)
from tests.notifier.factory import META_TOKEN, alert, keyring, meta_connection

TOKEN = META_TOKEN


def test_groups_per_entity_in_arrival_order_and_skips_alerts_without_action() -> None:
    a0 = alert(0, pause=True, dry_run=False)
    b = alert(1, pause=True, dry_run=True)
    none = alert(2)  # notify only
    a0_back = alert(0, kind="recovered", pause=True, dry_run=False, resume=True)
    other_account = alert(0, account="222", pause=True, dry_run=False)  # same ad id, another account
    groups = by_entity([a0, b, none, a0_back, other_account])
    assert [[a.fingerprint for a in g] for g in groups] == [
        [a0.fingerprint, a0_back.fingerprint], [b.fingerprint], [other_account.fingerprint]]


@pytest.fixture
def graph() -> Iterator[FakeGraphApi]:
    with FakeGraphApi().running() as f:
        f.add_account(FakeAccount("111", TOKEN))
        f.status_delay_s = 0.3
        yield f


@pytest.fixture
def conn(database: str) -> Iterator[psycopg.Connection[Any]]:  # noqa: F811
    with psycopg.connect(database, autocommit=True) as c:
        meta_connection(c)
        yield c


@pytest.mark.parametrize("workers", [1, 4])
def test_calls_overlap_up_to_the_worker_count_and_keep_each_entitys_order(
    conn: psycopg.Connection[Any], graph: FakeGraphApi, database: str, workers: int,  # noqa: F811
) -> None:
    fired = [alert(i, pause=True, dry_run=False) for i in range(8)]
    back = alert(0, kind="recovered", pause=True, dry_run=False, resume=True)
    pool = ActionPool(database, keyring(), MetaStatusSetter(graph.url), None, workers)
    try:
        pool.run([*fired, back])
    finally:
        pool.close()
    if workers == 1:
        assert graph.status_max_in_flight == 1
    else:
        assert 2 <= graph.status_max_in_flight <= workers
    rows = conn.execute("SELECT entity_id, action, outcome FROM entity_actions ORDER BY entity_id, action").fetchall()
    assert rows == sorted([(a.entity_id, "pause", "done") for a in fired] + [(back.entity_id, "resume", "done")])
    # The resume of ad 0 came after its pause (it needs the pause's 'done' to act at all).
    assert [u.status for u in graph.status_updates if u.object_id == back.entity_id] == ["PAUSED", "ACTIVE"]
    assert len(graph.status_updates) == 9

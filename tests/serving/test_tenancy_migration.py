"""0003 (tenancy branch): creates its three tables with their constraints, and its
downgrade drops exactly them (the backbone's tables stay)."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from schemas.migrate import downgrade, upgrade

TENANCY = {"users", "workspaces", "memberships"}
# 0004 (rules), 0006 (its indexes) and 0009 (disabled rules) build on the tenancy branch: unwinding tenancy unwinds them too.
ON_TENANCY = {"rules", "channels", "alerts", "alert_deliveries", "entity_actions"}


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()}


def test_downgrade_drops_what_it_created(database: str) -> None:
    sa = database.replace("postgresql://", "postgresql+psycopg://", 1)
    before = tables(database)
    assert before >= TENANCY | {"metrics_daily", "metrics_15m"}
    downgrade(sa, "tenancy@-4")
    after = tables(database)
    assert after == before - TENANCY - ON_TENANCY
    upgrade(sa, "auto")
    assert tables(database) == before


def test_roles_and_membership_constraints(database: str) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        ws = uuid.uuid4()
        conn.execute("INSERT INTO workspaces (id, name, timezone) VALUES (%s, 'W', 'Europe/Berlin')", (ws,))
        uid = conn.execute("INSERT INTO users (sub) VALUES ('u') RETURNING id").fetchone()
        assert uid is not None
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("INSERT INTO memberships VALUES (%s, %s, 'superuser')", (uid[0], ws))
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO users (sub) VALUES ('u')")
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute("INSERT INTO memberships (user_id, workspace_id, role) VALUES (%s, %s, 'viewer')",
                         (uid[0], uuid.uuid4()))
        conn.execute("INSERT INTO memberships (user_id, workspace_id, role) VALUES (%s, %s, 'admin')", (uid[0], ws))
        conn.execute("DELETE FROM workspaces WHERE id = %s", (ws,))
        left = conn.execute("SELECT count(*) FROM memberships").fetchone()
        assert left == (0,)

"""Tenancy: users (identified by the issuer's ``sub``), workspaces (with the IANA
timezone their dashboard days are cut in) and memberships with a role.

Branches from 0001 (label ``tenancy``) so it can land independently of other work that
also branches there; ``schemas.migrate.upgrade`` upgrades to all heads.

Revision ID: 0003
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0001"
branch_labels = ("tenancy",)
depends_on = None


def upgrade() -> None:
    op.execute("""
CREATE TABLE users (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    sub         text        NOT NULL UNIQUE CHECK (length(sub) BETWEEN 1 AND 255),
    email       text,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
)""")
    op.execute("""
CREATE TABLE workspaces (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    timezone    text        NOT NULL DEFAULT 'UTC',
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
)""")
    op.execute("""
CREATE TABLE memberships (
    user_id       uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    workspace_id  uuid        NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    role          text        NOT NULL CHECK (role IN ('owner', 'admin', 'viewer')),
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (user_id, workspace_id)
)""")
    op.execute("CREATE INDEX memberships_workspace ON memberships (workspace_id)")


def downgrade() -> None:
    for t in ("memberships", "workspaces", "users"):
        op.execute(f"DROP TABLE IF EXISTS {t}")

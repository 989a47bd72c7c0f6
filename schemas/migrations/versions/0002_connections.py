"""Ad-platform connections (per workspace, tokens encrypted) and the synced entity
hierarchy (campaigns, ad sets, ads, asset groups with names and statuses).

Plain tables on both flavours (TimescaleDB and PostgreSQL): they are small, updated in
place, and never time-partitioned.

* ``connections``: one row per (workspace, provider, account).  ``token_ciphertext`` is
  AES-256-GCM (nonce || ciphertext+tag) under key ``token_key_id`` (see
  ``adapters/crypto.py``); plaintext tokens never touch the database.
  Status, last error, throttling and the scheduler's next runs / backfill progress live
  here so ``metricx connections status`` can show them.
* ``entities``: keyed by ids (workspace, provider, account, entity), never by names.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
CREATE TABLE connections (
    workspace_id       uuid        NOT NULL,
    provider           text        NOT NULL CHECK (provider IN ('meta', 'google')),
    account_id         text        NOT NULL CHECK (account_id ~ '^[A-Za-z0-9_.\\-]{1,128}$'),
    display_name       text        NOT NULL DEFAULT '',
    timezone           text,
    currency           text        CHECK (currency IS NULL OR currency ~ '^[A-Z]{3}$'),
    login_customer_id  text,
    status             text        NOT NULL DEFAULT 'active'
                       CHECK (status IN ('active', 'needs_reauth', 'throttled', 'error')),
    last_error         text,
    token_key_id       text        NOT NULL,
    token_ciphertext   bytea       NOT NULL,
    throttled_until    timestamptz,
    last_sync_at       timestamptz,
    last_success_at    timestamptz,
    hot_next_run_at    timestamptz NOT NULL DEFAULT now(),
    warm_next_run_at   timestamptz NOT NULL DEFAULT now(),
    backfill_from      date,
    backfill_done_through date,
    api_calls_today    integer     NOT NULL DEFAULT 0,
    api_calls_day      date,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, provider, account_id)
)""")
    op.execute("CREATE INDEX connections_due ON connections (status, hot_next_run_at)")
    op.execute("CREATE INDEX connections_key_id ON connections (token_key_id)")
    op.execute("""
CREATE TABLE entities (
    workspace_id  uuid        NOT NULL,
    provider      text        NOT NULL,
    account_id    text        NOT NULL,
    entity_id     text        NOT NULL,
    entity_level  text        NOT NULL CHECK (entity_level IN ('ad', 'adset', 'campaign', 'asset_group')),
    name          text        NOT NULL DEFAULT '',
    status        text        NOT NULL DEFAULT '',
    campaign_id   text,
    adset_id      text,
    synced_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, provider, account_id, entity_id),
    FOREIGN KEY (workspace_id, provider, account_id)
        REFERENCES connections (workspace_id, provider, account_id) ON DELETE CASCADE
)""")
    op.execute("CREATE INDEX entities_ws_campaign ON entities (workspace_id, provider, account_id, campaign_id)")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS entities")
    op.execute("DROP TABLE IF EXISTS connections")

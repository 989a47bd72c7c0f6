"""Stop-loss rules, notification channels, alerts and their delivery outbox.

- ``rules``: per workspace; ``definition`` is the ``schemas.rules.RuleIn`` JSON, the same
  body the API takes and ``metricx.rules`` carries.
- ``channels``: where alerts go.  A Slack webhook URL is a secret (anyone holding it can
  post), so ``secret_ciphertext`` holds it AES-GCM encrypted like OAuth tokens; an
  email channel keeps its recipients in ``secret_ciphertext`` too (one code path).
  A permanent delivery error disables the channel and keeps the error for the API.
- ``alerts``: one row per fingerprint (``schemas.alerts``), written by the pipeline in
  the same transaction as the data that fired it: a replay inserts nothing.
- ``alert_deliveries``: the notifier's outbox, one row per (alert, channel); the attempt
  is recorded before anything is sent, so a restart never sends twice.
- ``entity_actions``: the audit of pause/resume actions (dry runs included).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
CREATE TABLE rules (
    id            uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id  uuid        NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name          text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    definition    jsonb       NOT NULL,
    status        text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'paused')),
    version       integer     NOT NULL DEFAULT 1 CHECK (version >= 1),
    created_by    text,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at    timestamptz NOT NULL DEFAULT clock_timestamp()
)""")
    op.execute("CREATE INDEX rules_workspace ON rules (workspace_id)")
    op.execute("""
CREATE TABLE channels (
    id                 uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id       uuid        NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    kind               text        NOT NULL CHECK (kind IN ('slack', 'email')),
    name               text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    secret_key_id      text        NOT NULL,
    secret_ciphertext  bytea       NOT NULL,
    status             text        NOT NULL DEFAULT 'enabled' CHECK (status IN ('enabled', 'disabled')),
    last_error         text,
    disabled_at        timestamptz,
    created_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at         timestamptz NOT NULL DEFAULT clock_timestamp()
)""")
    op.execute("CREATE INDEX channels_workspace ON channels (workspace_id)")
    op.execute("""
CREATE TABLE alerts (
    fingerprint   text        PRIMARY KEY,
    workspace_id  uuid        NOT NULL,
    rule_id       uuid        NOT NULL,
    kind          text        NOT NULL CHECK (kind IN ('fired', 'recovered')),
    provider      text        NOT NULL,
    account_id    text        NOT NULL,
    entity_level  text        NOT NULL,
    entity_id     text        NOT NULL,
    campaign_id   text        NOT NULL,
    report_date   date        NOT NULL,
    currency      text        NOT NULL,
    captured_at   timestamptz NOT NULL,
    payload       jsonb       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp()
)""")
    op.execute("CREATE INDEX alerts_ws_created ON alerts (workspace_id, created_at DESC)")
    op.execute("CREATE INDEX alerts_rule ON alerts (rule_id, created_at DESC)")
    op.execute("""
CREATE TABLE alert_deliveries (
    fingerprint      text        NOT NULL REFERENCES alerts (fingerprint) ON DELETE CASCADE,
    channel_id       uuid        NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    workspace_id     uuid        NOT NULL,
    status           text        NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'dead', 'unknown')),
    attempts         integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_error       text,
    sent_at          timestamptz,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (fingerprint, channel_id)
)""")
    op.execute(
        "CREATE INDEX alert_deliveries_due ON alert_deliveries (next_attempt_at) "
        "WHERE status IN ('pending', 'failed')"
    )
    op.execute("""
CREATE TABLE entity_actions (
    id            bigserial   PRIMARY KEY,
    fingerprint   text        NOT NULL,
    workspace_id  uuid        NOT NULL,
    provider      text        NOT NULL,
    account_id    text        NOT NULL,
    entity_level  text        NOT NULL,
    entity_id     text        NOT NULL,
    action        text        NOT NULL CHECK (action IN ('pause', 'resume')),
    dry_run       boolean     NOT NULL,
    outcome       text        NOT NULL CHECK (outcome IN ('done', 'would', 'failed')),
    error         text,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (fingerprint, action)
)""")
    op.execute("CREATE INDEX entity_actions_ws ON entity_actions (workspace_id, created_at DESC)")


def downgrade() -> None:
    for t in ("entity_actions", "alert_deliveries", "alerts", "channels", "rules"):
        op.execute(f"DROP TABLE IF EXISTS {t}")

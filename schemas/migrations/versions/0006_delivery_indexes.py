"""Indexes for the notifier's per-channel checks: its sender asks, per channel, whether a
send is in flight, when the last message left and what is due; and its lease sweep
looks for deliveries stuck in ``sending``.  Without these both scan the outbox.

Revision ID: 0006
Revises: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX alert_deliveries_channel ON alert_deliveries (channel_id, status, next_attempt_at)")
    op.execute("CREATE INDEX alert_deliveries_sending ON alert_deliveries (next_attempt_at) WHERE status = 'sending'")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS alert_deliveries_sending")
    op.execute("DROP INDEX IF EXISTS alert_deliveries_channel")

"""Rules the pipeline stopped evaluating: status ``disabled`` and the reason.

The pipeline disables a rule it must not evaluate — over the per-rule limits, or its
workspace's rules over the evaluation budget (``domain.metering``) — and records why
in ``last_error``, so the merchant sees it in ``GET /rules``; a resume clears it.

Revision ID: 0009
Revises: 0006
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE rules DROP CONSTRAINT IF EXISTS rules_status_check")
    op.execute("ALTER TABLE rules ADD CONSTRAINT rules_status_check "
               "CHECK (status IN ('active', 'paused', 'disabled'))")
    op.execute("ALTER TABLE rules ADD COLUMN last_error text CHECK (length(last_error) <= 2000)")


def downgrade() -> None:
    op.execute("UPDATE rules SET status = 'paused' WHERE status = 'disabled'")
    op.execute("ALTER TABLE rules DROP COLUMN IF EXISTS last_error")
    op.execute("ALTER TABLE rules DROP CONSTRAINT IF EXISTS rules_status_check")
    op.execute("ALTER TABLE rules ADD CONSTRAINT rules_status_check CHECK (status IN ('active', 'paused'))")

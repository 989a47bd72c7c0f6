"""Connections: the backfill's requested range and progress, and why freshness is degraded.

* ``backfill_days``: what ``connections add --backfill-days N`` asked for, not yet
  started.  A count, not a date: the dates are the account's own days, known only once
  its zone has been read (the first backfill resolves them).
* ``backfill_until``: the last day of the range being (or last) backfilled;
  ``backfill_from`` .. ``backfill_until`` is the range, ``backfill_done_through`` the
  progress.  A backfill asking for the same range resumes after ``done_through``;
  another range starts over.
* ``backfill_rows``: snapshots read so far in that range; ``backfill_run_started_at``
  and ``backfill_run_from``: when the current run started and its first day, so the
  status can estimate the time left from this run's own pace.
* ``pacing_note``: why the next read of today is later than the normal cadence (the
  platform's usage answer), shown by ``connections status``; NULL when it is not.
* ``credential_note``: a warning about the stored credentials (a bare Google access
  token expires within the hour), shown by ``connections status``.  Never token material.

Revision ID: 0011
Revises: 0002 (the connections branch)
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
ALTER TABLE connections
    ADD COLUMN backfill_days integer CHECK (backfill_days IS NULL OR backfill_days BETWEEN 1 AND 1100),
    ADD COLUMN backfill_until date,
    ADD COLUMN backfill_rows bigint NOT NULL DEFAULT 0,
    ADD COLUMN backfill_run_started_at timestamptz,
    ADD COLUMN backfill_run_from date,
    ADD COLUMN pacing_note text,
    ADD COLUMN credential_note text""")


def downgrade() -> None:
    op.execute("""
ALTER TABLE connections
    DROP COLUMN IF EXISTS backfill_days,
    DROP COLUMN IF EXISTS backfill_until,
    DROP COLUMN IF EXISTS backfill_rows,
    DROP COLUMN IF EXISTS backfill_run_started_at,
    DROP COLUMN IF EXISTS backfill_run_from,
    DROP COLUMN IF EXISTS pacing_note,
    DROP COLUMN IF EXISTS credential_note""")

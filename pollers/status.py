"""What ``metricx connections status`` shows of each connection: its stored status
(``adapters.connections_store``, never a token), how fresh today's data is and how far
its backfill got, as of a moment (the database's clock by default)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from adapters import connections_store as store
from domain.backfill_progress import BackfillProgress
from domain.freshness import freshness


def status_rows(conn: psycopg.Connection[Any], workspace_id: str | None = None,
                now: datetime | None = None) -> list[dict[str, Any]]:
    """The stored rows plus ``freshness``, ``backfill_pct`` and ``backfill_eta``."""
    out = []
    for row in store.status_rows(conn, workspace_id, now):
        at = row.pop("at")
        row["freshness"] = freshness(row["status"], row["hot_next_run_at"], row["throttled_until"],
                                     row["pacing_note"], at)
        row["backfill_pct"], row["backfill_eta"] = None, None
        if row["backfill_from"] is not None and row["backfill_until"] is not None:
            p = BackfillProgress(row["backfill_from"], row["backfill_until"], row["backfill_done_through"],
                                 row["backfill_rows"], row["backfill_run_started_at"], row["backfill_run_from"])
            row["backfill_pct"], row["backfill_eta"] = p.pct, p.eta(at)
        out.append(row)
    return out

"""For tests that force an interleaving: is that session blocked on a row or table lock?"""

from __future__ import annotations

import psycopg


def waiting_on_a_lock(url: str, pid: int) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    return row is not None and row[0] == "Lock"

"""Platform actions of one consumed batch, run in parallel across entities.

Why: a pause is a synchronous platform call (up to its timeout), and the intake commits
a batch's deliveries only after its actions — the messages say what was done.  One at a
time, an alert storm of 100 pauses against a slow Graph API held every alert of the
batch (and the topic behind it) for minutes.  Calls for different entities are
independent; those for one entity (a pause, then its resume, redelivered in one batch)
keep their order, so a resume still finds the pause it undoes.  Each worker thread has
its own autocommit connection: ``actions.apply`` commits its audit claim before calling.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg

from adapters.crypto import Keyring
from notifier import actions
from schemas.alerts import AlertV1

log = logging.getLogger("metricx.notifier")

EntityKey = tuple[str, str, str, str, str]


def by_entity(alerts: Sequence[AlertV1]) -> list[list[AlertV1]]:
    """The alerts that ask for an action, grouped per entity, each group in arrival order."""
    groups: dict[EntityKey, list[AlertV1]] = {}
    for a in alerts:
        if actions.wanted(a) is not None:
            key = (str(a.workspace_id), a.provider, a.account_id, a.entity_level, a.entity_id)
            groups.setdefault(key, []).append(a)
    return list(groups.values())


class ActionPool:
    def __init__(self, db_url: str, keyring: Keyring, meta: actions.StatusSetter,
                 google: actions.GoogleSetter | None, workers: int) -> None:
        self._db_url, self._keyring, self._meta, self._google = db_url, keyring, meta, google
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="notifier-action")
        self._local = threading.local()
        self._conns: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()

    def _conn(self) -> psycopg.Connection[Any]:
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = psycopg.connect(self._db_url, autocommit=True)
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    def _run_group(self, group: list[AlertV1]) -> None:
        conn = self._conn()
        for a in group:
            try:
                actions.apply(conn, self._keyring, a, self._meta, self._google)
            except (psycopg.DataError, psycopg.IntegrityError) as exc:  # the ingest dead-letters it
                log.error("entity action not recorded", extra={"fingerprint": a.fingerprint, "error": str(exc)[:300]})
            except psycopg.OperationalError:
                conn.close()  # a fresh connection next time; the batch is consumed again
                raise

    def run(self, alerts: Sequence[AlertV1]) -> None:
        """Returns when every action of the batch is done; re-raises a database failure
        (the caller then neither records nor commits the batch, and reads it again)."""
        futures = [self._pool.submit(self._run_group, g) for g in by_entity(alerts)]
        errors = [f.exception() for f in futures]
        for exc in errors:
            if exc is not None:
                raise exc

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        with self._lock:
            for c in self._conns:
                c.close()
            self._conns.clear()

"""A small bounded pool of database connections (read-only unless asked otherwise).

Opening a PostgreSQL connection costs ~15 ms here (SCRAM authentication), more than most
queries; requests borrow an idle connection instead.  At most ``max_size`` are open at
once, so a burst (1,000 EventSources reconnecting together) waits for a free connection
instead of exhausting the server's ``max_connections``; a wait longer than
``acquire_timeout_s`` is a 503.  (A stand-in until ``psycopg-pool`` is a pinned
dependency.)
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row

log = logging.getLogger(__name__)

Conn = psycopg.Connection[dict[str, Any]]


class PoolExhausted(RuntimeError):
    """No connection became free in time."""


class ConnectionPool:
    def __init__(self, url: str, *, max_size: int = 16, acquire_timeout_s: float = 10.0,
                 read_only: bool = True) -> None:
        self._url = url
        # Reads get read-only sessions, so a query bug can never write; the few write
        # routes use a separate, smaller pool built with read_only=False.
        self._read_only = read_only
        self._idle: queue.LifoQueue[Conn] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(max_size)
        self._timeout = acquire_timeout_s

    def _open(self) -> Conn:
        conn = psycopg.connect(self._url, autocommit=True, row_factory=dict_row, connect_timeout=5)
        if self._read_only:
            conn.execute("SET default_transaction_read_only = on")
        return conn

    @contextmanager
    def connection(self) -> Iterator[Conn]:
        """An idle connection (or a new one); returned to the pool only if healthy."""
        if not self._slots.acquire(timeout=self._timeout):
            log.error("database pool exhausted", extra={"timeout_s": self._timeout})
            raise PoolExhausted("no database connection available")
        healthy = False
        conn: Conn | None = None
        try:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                conn = self._open()
            yield conn
            healthy = True
        except psycopg.OperationalError:
            # The server restarted or the network dropped: the idle connections are from
            # the same moment and as dead as this one; the next requests open fresh ones
            # instead of each failing once on a stale connection.
            self.close()
            raise
        finally:
            if conn is not None:
                if healthy and not conn.closed and conn.info.transaction_status == TransactionStatus.IDLE:
                    self._idle.put_nowait(conn)
                else:
                    conn.close()
            self._slots.release()

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return

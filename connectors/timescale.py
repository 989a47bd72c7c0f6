"""Batched, idempotent writes of pipeline output to PostgreSQL / TimescaleDB.

One :class:`~pipelines.batch.Batch` is one transaction: rows are binary-COPYed into
per-connection temporary staging tables, then moved with ``INSERT ... SELECT ... ON
CONFLICT``.  Append-only tables ignore rows they already hold (a replay after a crash
rewrites nothing); rollup tables take the newer row only (``last_captured_at`` guard),
so a replayed or reordered batch can never move a total backwards.

``use_copy=False`` writes the same statements with plain parameterised INSERTs, for
servers without ``COPY FROM STDIN`` (the PGlite TimescaleDB conformance server).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from pipelines.batch import Batch, Row
from schemas.columns import (
    BUCKET_COLUMNS,
    BUCKET_KEY,
    DAILY_COLUMNS,
    DELTA_COLUMNS,
    MEASURES,
    PROGRESS_COLUMNS,
    PROGRESS_KEY,
    SERIES_KEY,
    SNAPSHOT_COLUMNS,
    SNAPSHOT_KEY,
)

log = logging.getLogger(__name__)

_PG_TYPES = {
    "workspace_id": "uuid",
    "report_date": "date",
    "captured_at": "timestamptz",
    "bucket_start": "timestamptz",
    "last_captured_at": "timestamptz",
    "produced_at": "timestamptz",
    "spend": "numeric",
    "conversions": "numeric",
    "revenue": "numeric",
    "impressions": "int8",
    "clicks": "int8",
    "source_partition": "int4",
    "source_offset": "int8",
    "partition": "int4",
    "next_offset": "int8",
}


def _types(columns: Sequence[str]) -> list[str]:
    return [_PG_TYPES.get(c, "text") for c in columns]


class _Target:
    """One destination table and how rows already there are treated."""

    def __init__(self, table: str, columns: Sequence[str], key: Sequence[str], update: Sequence[str] = (),
                 guard: str | None = None, extra_set: str = "") -> None:
        self.table = table
        self.stage = f"stage_{table}"
        self.columns = tuple(columns)
        cols = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
        if update:
            sets = sql.SQL(", ").join(
                sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in update
            )
            if extra_set:
                sets = sql.SQL(", ").join([sets, sql.SQL(extra_set)])  # type: ignore[arg-type]
            conflict = sql.SQL("DO UPDATE SET {sets}").format(sets=sets)
            if guard:
                conflict = sql.SQL("{c} WHERE {g}").format(c=conflict, g=sql.SQL(guard))  # type: ignore[arg-type]
        else:
            conflict = sql.SQL("DO NOTHING")
        on_conflict = sql.SQL("ON CONFLICT ({key}) {conflict}").format(
            key=sql.SQL(", ").join(sql.Identifier(c) for c in key), conflict=conflict
        )
        self.create_stage = sql.SQL(
            "CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {table} INCLUDING DEFAULTS) "
            "ON COMMIT DELETE ROWS"
        ).format(stage=sql.Identifier(self.stage), table=sql.Identifier(table))
        self.copy = sql.SQL("COPY {stage} ({cols}) FROM STDIN (FORMAT BINARY)").format(
            stage=sql.Identifier(self.stage), cols=cols
        )
        self.move = sql.SQL("INSERT INTO {table} ({cols}) SELECT {cols} FROM {stage} {oc}").format(
            table=sql.Identifier(table), cols=cols, stage=sql.Identifier(self.stage), oc=on_conflict
        )
        self.insert = sql.SQL("INSERT INTO {table} ({cols}) VALUES ({ph}) {oc}").format(
            table=sql.Identifier(table),
            cols=cols,
            ph=sql.SQL(", ").join(sql.Placeholder() * len(columns)),
            oc=on_conflict,
        )
        self.types = _types(columns)


def _rollup(table: str, columns: Sequence[str], key: Sequence[str], extra_set: str = "") -> _Target:
    update = [c for c in columns if c not in key]
    return _Target(
        table, columns, key, update,
        guard=f"{table}.last_captured_at <= EXCLUDED.last_captured_at",
        extra_set=extra_set,
    )


SNAPSHOTS = _Target("insight_snapshots", SNAPSHOT_COLUMNS, SNAPSHOT_KEY)
DELTAS = _Target("metric_deltas", DELTA_COLUMNS, SNAPSHOT_KEY)
BUCKETS = _rollup("metrics_15m", BUCKET_COLUMNS, BUCKET_KEY)
DAILY = _rollup("metrics_daily", DAILY_COLUMNS, SERIES_KEY, extra_set="updated_at = clock_timestamp()")
PROGRESS = _Target(
    "pipeline_progress", PROGRESS_COLUMNS, PROGRESS_KEY, ["next_offset"],
    guard="pipeline_progress.next_offset <= EXCLUDED.next_offset",
    extra_set="committed_at = clock_timestamp()",
)
assert set(MEASURES) <= set(BUCKETS.columns)


class InsightStore:
    """Owns one connection; :meth:`write` is one transaction per batch."""

    def __init__(self, dsn: str, *, consumer: str = "pipeline", use_copy: bool = True) -> None:
        self.dsn = dsn
        self.consumer = consumer
        self.use_copy = use_copy
        self._uuids: dict[str, uuid.UUID] = {}
        self._conn: psycopg.Connection[Any] | None = None

    def _connect(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            conn = psycopg.connect(self.dsn, autocommit=True)
            if self.use_copy:
                for t in (SNAPSHOTS, DELTAS, BUCKETS, DAILY):
                    conn.execute(t.create_stage)
            self._conn = conn
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _ws(self, rows: list[Row]) -> list[Row]:
        """Workspace ids travel as strings; the uuid column's binary format wants UUIDs."""
        cache = self._uuids
        out = []
        for r in rows:
            ws = cache.get(r[0])
            if ws is None:
                ws = cache[r[0]] = uuid.UUID(r[0])
            out.append((ws, *r[1:]))
        return out

    def write(self, batch: Batch) -> None:
        progress = [(self.consumer, t, p, o) for (t, p), o in batch.progress.items()]
        parts = (
            (SNAPSHOTS, self._ws(batch.snapshots)),
            (DELTAS, self._ws(batch.deltas)),
            (BUCKETS, self._ws(list(batch.buckets.values()))),
            (DAILY, self._ws(list(batch.daily.values()))),
        )
        conn = self._connect()
        with conn.transaction(), conn.cursor() as cur:
            for target, rows in parts:
                if not rows:
                    continue
                if self.use_copy:
                    with cur.copy(target.copy) as copy:
                        copy.set_types(target.types)
                        for row in rows:
                            copy.write_row(row)
                    cur.execute(target.move)
                else:
                    cur.executemany(target.insert, rows)
            if progress:
                cur.executemany(PROGRESS.insert, progress)

    def write_with_retry(self, batch: Batch, *, max_wait: float = 30.0) -> None:
        """Retry connection-level failures forever (with backoff) rather than lose or crash:
        the flow stalls while the database is away and resumes where it was."""
        delay = 0.5
        while True:
            try:
                self.write(batch)
                return
            except psycopg.OperationalError as exc:
                log.warning(
                    "database write failed, retrying",
                    extra={"error": str(exc).strip(), "retry_in_s": delay, "rows": len(batch.snapshots)},
                )
                self.close()
                time.sleep(delay)
                delay = min(delay * 2, max_wait)


def check_reachable(dsn: str, timeout: int = 5) -> None:
    try:
        with psycopg.connect(dsn, connect_timeout=timeout) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        raise ConnectionError(
            f"METRICX_DATABASE_URL: PostgreSQL is not reachable ({str(exc).strip()}); "
            "start it with `make services-up` or fix the setting"
        ) from None

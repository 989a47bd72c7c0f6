"""Batched, idempotent writes of pipeline output to PostgreSQL / TimescaleDB.

One :class:`~domain.batch.Batch` is one transaction: its rows are binary-COPYed
into a per-connection temporary staging table (one row per applied snapshot), then
four set-based statements move them, in one round trip:

- ``insight_snapshots`` and ``metric_deltas``: ``ON CONFLICT DO NOTHING`` (keyed by
  series and ``captured_at``), so a replay after a crash rewrites nothing;
- ``metrics_15m`` and ``metrics_daily``: the newest staged row per key (``DISTINCT
  ON``), absolute values, replacing a stored row only if it is not newer
  (``last_captured_at`` guard), so a replayed or reordered batch never moves a total
  backwards.

Every read of a hypertable inside those statements is also bounded by the batch's
first and last report date or bucket, as constants (``BOUNDS``, bound client-side):
TimescaleDB excludes chunks from a data-modifying statement's plan only on constants,
and without them each staged row probed the index of every chunk the table had (400
days of ``metrics_15m`` are 58 chunks; ``metrics_daily`` keeps every day).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg

from adapters.alerts_store import INSERT_ALERT, alert_row
from schemas.batch import Batch, Row
from schemas.columns import (
    BUCKET_COLUMNS,
    BUCKET_KEY,
    BUCKET_MEASURES,
    DAILY_COLUMNS,
    DELTA_COLUMNS,
    DELTA_MEASURES,
    IDENTITY,
    SERIES_KEY,
    SNAPSHOT_COLUMNS,
    SNAPSHOT_KEY,
    STAGE_COLUMNS,
)
from schemas.measures import MEASURES

log = logging.getLogger(__name__)

STAGE = "stage_insights"
# The batch's first and last report date and 15-minute bucket (``batch_bounds``).
BOUNDS = ("first_day", "last_day", "first_bucket", "last_bucket")
DAYS = "BETWEEN %(first_day)s AND %(last_day)s"
BUCKETS = "BETWEEN %(first_bucket)s AND %(last_bucket)s"
_TYPES = {
    "workspace_id": "uuid",
    "report_date": "date",
    "captured_at": "timestamptz",
    "bucket_start": "timestamptz",
    "produced_at": "timestamptz",
    "source_partition": "int4",
    "source_offset": "int8",
}
for _m in (MEASURES, DELTA_MEASURES, BUCKET_MEASURES):
    _TYPES.update(zip(_m, ("numeric", "int8", "int8", "numeric", "numeric"), strict=True))
STAGE_TYPES = [_TYPES.get(c, "text") for c in STAGE_COLUMNS]


def _cols(cols: tuple[str, ...]) -> str:
    return ", ".join(cols)


def _upsert_newest(table: str, columns: tuple[str, ...], key: tuple[str, ...], select: str,
                   extra_set: str = "") -> str:
    sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c not in key)
    return (
        f"INSERT INTO {table} ({_cols(columns)}) "
        f"SELECT DISTINCT ON ({_cols(key)}) {select} FROM {STAGE} "
        f"ORDER BY {_cols(key)}, captured_at DESC "
        f"ON CONFLICT ({_cols(key)}) DO UPDATE SET {sets}{extra_set} "
        f"WHERE {table}.last_captured_at <= EXCLUDED.last_captured_at"
    )


# The campaign-day rollup (migration 0005), in the same transaction, after
# metrics_daily: the touched campaign-days are *recomputed* from metrics_daily (never
# incremented), so a replay rewrites the same sums.  Two commit partitions can touch one
# campaign-day through different ads, so first each locks its rows in key order (a
# placeholder insert whose ON CONFLICT branch locks existing rows without writing
# them); the sums are taken by a later statement, whose fresh READ COMMITTED snapshot
# sees whatever the previous lock holder committed.  Summing inside the locking
# statement would read a stale snapshot and the last writer would win.
CAMPAIGN_KEY5 = ("workspace_id", "provider", "account_id", "campaign_id", "report_date")
CAMPAIGN_KEY = (*CAMPAIGN_KEY5, "currency")
_CK5, _CK = _cols(CAMPAIGN_KEY5), _cols(CAMPAIGN_KEY)
ACCOUNT_KEY4 = ("workspace_id", "provider", "account_id", "report_date")
ACCOUNT_KEY = (*ACCOUNT_KEY4, "currency")
_AK4, _AK = _cols(ACCOUNT_KEY4), _cols(ACCOUNT_KEY)
# Account-days (ACCOUNT_KEY) that lost a campaign-day in this transaction (temporary).
GONE = "stage_gone_campaign_days"


def _eq(a: str, b: str, keys: tuple[str, ...]) -> str:
    return " AND ".join(f"{a}.{k} = {b}.{k}" for k in keys)


def _row(alias: str, cols: tuple[str, ...]) -> str:
    return ", ".join(f"{alias}.{c}" for c in cols)


_TZ_MEASURES = ("timezone", *MEASURES)
CAMPAIGN_DAILY = [
    f"INSERT INTO metrics_campaign_daily ({_CK}, timezone) "
    f"SELECT DISTINCT ON ({_CK}) {_CK}, timezone FROM {STAGE} ORDER BY {_CK} "
    f"ON CONFLICT ({_CK}) DO UPDATE SET timezone = EXCLUDED.timezone WHERE false",
    # One index probe of metrics_daily (workspace_id, report_date, campaign_id) per
    # touched campaign-day (LATERAL: the plan cannot turn into a scan of the table).
    f"WITH t AS (SELECT DISTINCT {_CK5} FROM {STAGE}), "
    f"s AS (SELECT t.*, x.* FROM t CROSS JOIN LATERAL ("
    f"SELECT d.currency, min(d.timezone) AS timezone, sum(d.spend) AS spend, "
    f"sum(d.impressions)::bigint AS impressions, sum(d.clicks)::bigint AS clicks, "
    f"sum(d.conversions) AS conversions, sum(d.revenue) AS revenue FROM metrics_daily d "
    f"WHERE {_eq('d', 't', CAMPAIGN_KEY5)} AND d.report_date {DAYS} GROUP BY d.currency) x) "
    f"UPDATE metrics_campaign_daily c SET "
    + ", ".join(f"{m} = s.{m}" for m in _TZ_MEASURES)
    + f", updated_at = clock_timestamp() FROM s WHERE {_eq('c', 's', CAMPAIGN_KEY)} "
    f"AND ({_row('c', _TZ_MEASURES)}) IS DISTINCT FROM ({_row('s', _TZ_MEASURES)})",
    # A touched campaign-day (in a currency) without any ad row left (its ads moved to
    # another currency, or a placeholder for a row the guard refused): gone.  Its
    # account-day is noted, so the account-day is rewritten even when the gone row
    # summed to zero (its version must move: the dashboard ranks that account again).
    f"WITH gone AS (DELETE FROM metrics_campaign_daily c USING (SELECT DISTINCT {_CK5} FROM {STAGE}) t "
    f"WHERE {_eq('c', 't', CAMPAIGN_KEY5)} AND NOT EXISTS (SELECT 1 FROM metrics_daily d "
    f"WHERE {_eq('d', 'c', CAMPAIGN_KEY)} AND d.report_date {DAYS}) "
    f"RETURNING {_row('c', ACCOUNT_KEY)}) "
    f"INSERT INTO {GONE} SELECT DISTINCT * FROM gone",
]


# The account-day rollup (migration 0007), right after the campaign-days and the same
# way: lock the touched account-days (per staged currency) in key order with a
# placeholder insert, recompute their sums from metrics_campaign_daily in a later
# statement (whose snapshot sees the campaign-days other partitions committed while
# this one waited, and this transaction's own), then delete emptied rows.  Two
# partitions writing different campaigns of one account never meet on a campaign-day
# row, only here.  Every writer takes all its campaign-day locks before any account-day
# lock, each set in key order, so the two phases cannot deadlock each other.
ACCOUNT_DAILY = [
    f"INSERT INTO metrics_account_daily ({_AK}, timezone) "
    f"SELECT DISTINCT ON ({_AK}) {_AK}, timezone FROM {STAGE} ORDER BY {_AK} "
    f"ON CONFLICT ({_AK}) DO UPDATE SET timezone = EXCLUDED.timezone WHERE false",
    # One probe of metrics_campaign_daily's (workspace_id, report_date, provider,
    # account_id) index per touched account-day.
    f"WITH t AS (SELECT DISTINCT {_AK4} FROM {STAGE}), "
    f"s AS (SELECT t.*, x.* FROM t CROSS JOIN LATERAL ("
    f"SELECT c.currency, min(c.timezone) AS timezone, sum(c.spend) AS spend, "
    f"sum(c.impressions)::bigint AS impressions, sum(c.clicks)::bigint AS clicks, "
    f"sum(c.conversions) AS conversions, sum(c.revenue) AS revenue, "
    f"max(c.updated_at) AS changed_at FROM metrics_campaign_daily c "
    f"WHERE {_eq('c', 't', ACCOUNT_KEY4)} GROUP BY c.currency) x) "
    f"UPDATE metrics_account_daily a SET "
    + ", ".join(f"{m} = s.{m}" for m in _TZ_MEASURES)
    + f", updated_at = clock_timestamp() FROM s WHERE {_eq('a', 's', ACCOUNT_KEY)} "
    f"AND (({_row('a', _TZ_MEASURES)}) IS DISTINCT FROM ({_row('s', _TZ_MEASURES)}) "
    # ...or a campaign-day under it was written by this transaction (whose updated_at is
    # at least its start), even if the account's sums came out the same: the account-day
    # row's version then stands for everything beneath it (serving.queries.day_versions).
    f"OR s.changed_at >= now() "
    f"OR EXISTS (SELECT 1 FROM {GONE} g WHERE {_eq('g', 's', ACCOUNT_KEY)}))",
    # A touched account-day (in a currency) without any campaign-day left: gone.
    f"DELETE FROM metrics_account_daily a USING (SELECT DISTINCT {_AK4} FROM {STAGE}) t "
    f"WHERE {_eq('a', 't', ACCOUNT_KEY4)} AND NOT EXISTS (SELECT 1 FROM metrics_campaign_daily c "
    f"WHERE {_eq('c', 'a', ACCOUNT_KEY)})",
]


# The account 15-minute rollup (migration 0008), kept by differences, right before the
# metrics_15m upsert: for each ad bucket the upsert will write (the newest staged row
# per key, unless the stored row is newer: the upsert's own guard), subtract the stored
# ad row (in its currency, which differs when an ad's currency changed) and add the
# staged one, counting ad rows; then delete account buckets left with no ad row.  The
# stored side is read from metrics_15m itself and the added side is exactly what the
# upsert writes, so the rollup equals metrics_15m's sums whatever was written, and a
# replay subtracts and adds the same values.  One statement, all its rows in key order
# (no lock-order cycles between commit partitions).  Only the commit partition owning
# an ad writes its rows, so nothing changes them in between.
BUCKET_ACCOUNT_KEY5 = ("workspace_id", "provider", "account_id", "report_date", "bucket_start")
BUCKET_ACCOUNT_KEY = ("workspace_id", "provider", "account_id", "report_date", "currency", "bucket_start")
_BK = _cols(BUCKET_ACCOUNT_KEY)
_BUCKET_ADDS = ", ".join(f"{c} = metrics_account_15m.{c} + EXCLUDED.{c}" for c in (*MEASURES, "ad_rows"))
ACCOUNT_15M = [
    "WITH j AS (SELECT n.*, m.currency AS old_currency, m.last_captured_at AS old_at, "
    + ", ".join(f"m.{c} AS old_{c}" for c in MEASURES)
    + f" FROM (SELECT DISTINCT ON ({_cols(BUCKET_KEY)}) {_cols(BUCKET_KEY)}, currency, captured_at, "
    f"{_cols(BUCKET_MEASURES)} FROM {STAGE} ORDER BY {_cols(BUCKET_KEY)}, captured_at DESC) n "
    f"LEFT JOIN metrics_15m m ON {_eq('m', 'n', BUCKET_KEY)} AND m.bucket_start {BUCKETS} "
    f"WHERE m.last_captured_at IS NULL OR m.last_captured_at <= n.captured_at), "
    f"d AS (SELECT {_cols(BUCKET_ACCOUNT_KEY)}, "
    + ", ".join(f"{b} AS {c}" for b, c in zip(BUCKET_MEASURES, MEASURES, strict=True))
    + ", 1 AS ad_rows FROM j UNION ALL "
    "SELECT workspace_id, provider, account_id, report_date, old_currency, bucket_start, "
    + ", ".join(f"-old_{c}" for c in MEASURES)
    + ", -1 FROM j WHERE old_at IS NOT NULL) "
    f"INSERT INTO metrics_account_15m ({_BK}, {_cols(MEASURES)}, ad_rows) "
    f"SELECT {_BK}, " + ", ".join(f"sum({c})" for c in (*MEASURES, "ad_rows"))
    + f" FROM d GROUP BY {_BK} ORDER BY {_BK} ON CONFLICT ({_BK}) DO UPDATE SET {_BUCKET_ADDS}",
    f"DELETE FROM metrics_account_15m a USING (SELECT DISTINCT {_cols(BUCKET_ACCOUNT_KEY5)} FROM {STAGE}) t "
    f"WHERE {_eq('a', 't', BUCKET_ACCOUNT_KEY5)} AND a.bucket_start {BUCKETS} AND a.ad_rows = 0",
]


_ID = _cols(IDENTITY)
MOVE = ";\n".join(
    [
        f"INSERT INTO insight_snapshots ({_cols(SNAPSHOT_COLUMNS)}) "
        f"SELECT {_cols(SNAPSHOT_COLUMNS)} FROM {STAGE} ON CONFLICT ({_cols(SNAPSHOT_KEY)}) DO NOTHING",
        f"INSERT INTO metric_deltas ({_cols(DELTA_COLUMNS)}) "
        f"SELECT {_ID}, currency, captured_at, bucket_start, {_cols(DELTA_MEASURES)} FROM {STAGE} "
        f"ON CONFLICT ({_cols(SNAPSHOT_KEY)}) DO NOTHING",
        *ACCOUNT_15M,
        _upsert_newest(
            "metrics_15m", BUCKET_COLUMNS, BUCKET_KEY,
            f"{_ID}, currency, bucket_start, {_cols(BUCKET_MEASURES)}, captured_at",
        ),
        _upsert_newest(
            "metrics_daily", DAILY_COLUMNS, SERIES_KEY,
            f"{_ID}, timezone, currency, {_cols(MEASURES)}, captured_at",
            extra_set=", updated_at = clock_timestamp()",
        ),
        *CAMPAIGN_DAILY,
        *ACCOUNT_DAILY,
    ]
)
assert tuple(c for c in BUCKET_COLUMNS[-1:]) == ("last_captured_at",)
assert DAILY_COLUMNS[-1] == "last_captured_at"

CREATE_STAGE = (
    f"CREATE TEMP TABLE IF NOT EXISTS {STAGE} ("
    + ", ".join(f"{c} {t}" for c, t in zip(STAGE_COLUMNS, STAGE_TYPES, strict=True))
    + ") ON COMMIT DELETE ROWS;\n"
    f"CREATE TEMP TABLE IF NOT EXISTS {GONE} ("
    + ", ".join(f"{c} {_TYPES.get(c, 'text')}" for c in ACCOUNT_KEY)
    + ") ON COMMIT DELETE ROWS"
)
COPY_STAGE = f"COPY {STAGE} ({_cols(STAGE_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
INSERT_STAGE = f"INSERT INTO {STAGE} ({_cols(STAGE_COLUMNS)}) VALUES ({', '.join(['%s'] * len(STAGE_COLUMNS))})"
_DAY, _BUCKET = STAGE_COLUMNS.index("report_date"), STAGE_COLUMNS.index("bucket_start")


def batch_bounds(rows: list[Row]) -> dict[str, Any]:
    """``MOVE``'s parameters: the first and last report date and bucket of the staged
    rows (every hypertable row a statement reads lies between them)."""
    days = [r[_DAY] for r in rows]
    buckets = [r[_BUCKET] for r in rows]
    return dict(zip(BOUNDS, (min(days), max(days), min(buckets), max(buckets)), strict=True))


def run_move(conn: psycopg.Connection[Any], rows: list[Row], sql: str | None = None) -> None:
    """``sql`` (default ``MOVE``; tests run parts of it) for the staged ``rows``: several
    statements in one round trip, so their bounds are bound client-side, as constants."""
    with psycopg.ClientCursor(conn) as cur:
        cur.execute(sql if sql is not None else MOVE, batch_bounds(rows))
UPSERT_PROGRESS = (
    "INSERT INTO pipeline_progress (consumer, topic, partition, next_offset) VALUES (%s, %s, %s, %s) "
    "ON CONFLICT (consumer, topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset, "
    "committed_at = clock_timestamp() WHERE pipeline_progress.next_offset <= EXCLUDED.next_offset"
)

class InsightStore:
    """Owns one connection; :meth:`write` is one transaction per batch."""

    def __init__(self, dsn: str, *, consumer: str = "pipeline") -> None:
        self.dsn = dsn
        self.consumer = consumer
        self._uuids: dict[str, uuid.UUID] = {}
        self._conn: psycopg.Connection[Any] | None = None

    def _connect(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            conn = psycopg.connect(self.dsn, autocommit=True)
            conn.execute(CREATE_STAGE)
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
        rows = self._ws(batch.rows)
        conn = self._connect()
        with conn.transaction(), conn.cursor() as cur:
            if rows:
                with cur.copy(COPY_STAGE) as copy:
                    copy.set_types(STAGE_TYPES)
                    for row in rows:
                        copy.write_row(row)
                run_move(conn, rows)
            if batch.alerts:
                cur.executemany(INSERT_ALERT, [alert_row(x) for x in batch.alerts])
            if progress:
                cur.executemany(UPSERT_PROGRESS, progress)

    def write_with_retry(
        self,
        batch: Batch,
        *,
        max_wait: float = 30.0,
        on_failure: Callable[[psycopg.OperationalError, float], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Retry connection-level failures forever (with backoff) rather than lose or crash:
        the flow stalls while the database is away and resumes where it was.  ``on_failure``
        lets the caller say so (health, metrics) without this module knowing about them."""
        delay = 0.5
        while True:
            try:
                self.write(batch)
                return
            except psycopg.OperationalError as exc:
                log.warning(
                    "database write failed, retrying",
                    extra={"error": str(exc).strip(), "retry_in_s": delay, "rows": len(batch.rows)},
                )
                if on_failure is not None:
                    on_failure(exc, delay)
                self.close()
                sleep(delay)
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

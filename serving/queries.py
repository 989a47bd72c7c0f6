"""The SQL behind the API.  Every statement filters ``workspace_id = %(ws)s`` (the
caller's resolved workspace) and ``currency = %(cur)s`` (sums never mix currencies);
identifiers are chosen from fixed maps, never from input.  Sums only: ratios are made by
``domain.kpis`` after aggregation, exactly like the analysts' queries in the README.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Final

import psycopg

from domain.kpis import Sums
from serving.timeframes import Grain, Period

Conn = psycopg.Connection[dict[str, Any]]

SUMS: Final = (
    "coalesce(sum(spend), 0) AS spend, coalesce(sum(impressions), 0)::bigint AS impressions, "
    "coalesce(sum(clicks), 0)::bigint AS clicks, coalesce(sum(conversions), 0) AS conversions, "
    "coalesce(sum(revenue), 0) AS revenue"
)
# Reads that need no ad grain use the rollups the pipeline keeps equal to metrics_daily's
# sums in the same transaction: the campaign-day one (~20x fewer rows than
# metrics_daily) for anything by campaign, the account-day one (fewer still, by the
# number of campaigns per account) for KPIs, currencies, spend mix and daily series by
# provider or account, and the account 15-minute one (equal to metrics_15m's sums) for
# intraday series by provider or account.
CAMPAIGN_DAILY: Final = "metrics_campaign_daily"
ACCOUNT_DAILY: Final = "metrics_account_daily"
ACCOUNT_15M: Final = "metrics_account_15m"
# grain -> (source relation, bucket expression); every source is filtered on
# report_date so a day's buckets always add up to the day's total (restatements are
# booked in the last bucket of their date).  Hours are metrics_15m's, bucketed here:
# metrics_hourly is a continuous aggregate on TimescaleDB, where a restatement into an
# hour it already materialised waits for the next refresh, and answers must be exact.
SOURCES: Final[dict[str, tuple[str, str]]] = {
    "15m": ("metrics_15m", "bucket_start"),
    "hour": ("metrics_15m", "time_bucket(INTERVAL '1 hour', bucket_start)"),
    "day": (CAMPAIGN_DAILY, "report_date"),
}
# The same at account grain (migrations 0007 and 0008), for questions without a campaign:
# the account buckets are metrics_15m's sums, so their hours are the same sums.
ACCOUNT_SOURCES: Final[dict[str, tuple[str, str]]] = {
    "15m": (ACCOUNT_15M, "bucket_start"),
    "hour": (ACCOUNT_15M, "time_bucket(INTERVAL '1 hour', bucket_start)"),
    "day": (ACCOUNT_DAILY, "report_date"),
}
GROUP_COLUMNS: Final = ("provider", "account_id", "campaign_id")
WHERE: Final = "workspace_id = %(ws)s AND currency = %(cur)s AND report_date BETWEEN %(start)s AND %(end)s"


def sums_of(row: dict[str, Any]) -> Sums:
    return Sums(Decimal(row["spend"]), int(row["impressions"]), int(row["clicks"]),
                Decimal(row["conversions"]), Decimal(row["revenue"]))


def _params(ws: uuid.UUID, cur: str, p: Period, **extra: Any) -> dict[str, Any]:
    return {"ws": ws, "cur": cur, "start": p.start, "end": p.end, **extra}


def currencies(conn: Conn, ws: uuid.UUID, periods: Sequence[Period]) -> list[str]:
    """Currencies with data in any of ``periods``, largest spend first."""
    start = min(p.start for p in periods)
    end = max(p.end for p in periods)
    rows = conn.execute(
        f"SELECT currency FROM {ACCOUNT_DAILY} WHERE workspace_id = %(ws)s "
        "AND report_date BETWEEN %(start)s AND %(end)s GROUP BY currency "
        "ORDER BY sum(spend) DESC, currency",
        {"ws": ws, "start": start, "end": end},
    ).fetchall()
    return [r["currency"] for r in rows]


# A version of an account-day row: the commit rewrites the row (a new xmin) whenever
# anything beneath it changed in that transaction (adapters.timescale.ACCOUNT_DAILY),
# and deletes it when nothing is left, so the versions of an account's rows over some
# days change exactly when any campaign-day, ad-day or 15-minute bucket of that account
# on those days changes.  Hashed with the row's key, xor-combined (order-free), counted.
ROW_VERSION: Final = "hashtextextended(account_id || ':' || report_date || ':' || xmin::text, 0)"

Version = tuple[int, int]  # (xor of the rows' hashes, number of rows)
AccountKey = tuple[str, str, str]  # (currency, provider, account_id)
PREVIOUS, SETTLED, HOT = 0, 1, 2  # the parts of Daily.versions


@dataclass(frozen=True, slots=True)
class Daily:
    """(currency, provider, report_date, sums) rows over both periods, and the version
    of each account's rows in each part of the range (previous period, settled days,
    hot days)."""

    rows: list[tuple[str, str, date, Sums]]
    versions: dict[tuple[AccountKey, int], Version]

    def accounts(self, currency: str, part: int) -> dict[tuple[str, str], Version]:
        """(provider, account_id) -> version, for accounts with rows in ``part``."""
        return {(k[1], k[2]): v for (k, p), v in self.versions.items() if p == part and k[0] == currency}


def daily_by_provider(conn: Conn, ws: uuid.UUID, start: date, settled: date, hot: date, end: date) -> Daily:
    """One scan of ``start..end`` (``settled`` and ``hot`` are the first days of the
    settled and hot parts): the KPIs of both periods, the currencies, the spend mix, the
    daily series, and the versions that tell whether reads made earlier over a part of
    the range, for an account, still hold."""
    rows = conn.execute(
        f"SELECT currency, provider, report_date, account_id, "
        f"CASE WHEN report_date < %(settled)s THEN {PREVIOUS} WHEN report_date < %(hot)s THEN {SETTLED} "
        f"ELSE {HOT} END AS part, GROUPING(account_id) AS by_day, {SUMS}, "
        f"bit_xor({ROW_VERSION}) AS version, count(*) AS n FROM {ACCOUNT_DAILY} "
        "WHERE workspace_id = %(ws)s AND report_date BETWEEN %(start)s AND %(end)s "
        "GROUP BY GROUPING SETS ((currency, provider, report_date), (currency, provider, account_id, part))",
        {"ws": ws, "start": start, "settled": settled, "hot": hot, "end": end},
    ).fetchall()
    return Daily([(r["currency"], r["provider"], r["report_date"], sums_of(r)) for r in rows if r["by_day"]],
                 {((r["currency"], r["provider"], r["account_id"]), r["part"]): (int(r["version"]), int(r["n"]))
                  for r in rows if not r["by_day"]})


def series(conn: Conn, ws: uuid.UUID, cur: str, p: Period, grain: Grain,
           group_by: str | None = "provider", filters: dict[str, str] | None = None
           ) -> list[tuple[str | None, datetime | date, Sums]]:
    """(group key, bucket, sums) ordered by group then bucket."""
    table, bucket = SOURCES[grain]
    if group_by is not None and group_by not in GROUP_COLUMNS:
        raise ValueError(f"cannot group by {group_by!r}")
    if group_by != "campaign_id" and "campaign_id" not in (filters or {}):
        # No campaign in the question: the account rollups answer it.
        table, bucket = ACCOUNT_SOURCES[grain]
    key = group_by or "NULL::text"
    where, params = WHERE, _params(ws, cur, p)
    for col, val in (filters or {}).items():
        if col not in GROUP_COLUMNS:
            raise ValueError(f"cannot filter on {col!r}")
        where += f" AND {col} = %({col})s"
        params[col] = val
    rows = conn.execute(
        f"SELECT {key} AS key, {bucket} AS bucket, {SUMS} FROM {table} WHERE {where} "
        "GROUP BY 1, 2 ORDER BY 1, 2",
        params,
    ).fetchall()
    return [(r["key"], r["bucket"], sums_of(r)) for r in rows]


CampaignKey = tuple[str, str, str]  # (provider, account_id, campaign_id)


def campaign_sums(conn: Conn, ws: uuid.UUID, cur: str, p: Period, accounts: Sequence[tuple[str, str]]
                  ) -> dict[tuple[str, str], dict[CampaignKey, Sums]]:
    """Each listed (provider, account)'s campaigns' sums over ``p`` (the dashboard ranks
    them itself, after adding the parts it read apart)."""
    rows = conn.execute(
        f"SELECT provider, account_id, campaign_id, {SUMS} FROM {CAMPAIGN_DAILY} WHERE {WHERE} "
        "AND (provider, account_id) IN (SELECT * FROM unnest(%(providers)s::text[], %(accounts)s::text[])) "
        "GROUP BY 1, 2, 3",
        _params(ws, cur, p, providers=[a[0] for a in accounts], accounts=[a[1] for a in accounts]),
    ).fetchall()
    out: dict[tuple[str, str], dict[CampaignKey, Sums]] = {a: {} for a in accounts}
    for r in rows:
        out[(r["provider"], r["account_id"])][(r["provider"], r["account_id"], r["campaign_id"])] = sums_of(r)
    return out


ENTITY_IDS: Final = (
    "SELECT DISTINCT provider, account_id, campaign_id, adset_id, entity_id, entity_level "
    "FROM metrics_daily WHERE workspace_id = %(ws)s"
)
# With the synced hierarchy (the connections migration's ``entities`` table): names and
# statuses, and ads that exist but have not delivered yet.  Every join repeats the
# workspace filter.
ENTITIES_NAMED: Final = f"""
WITH ids AS (
  {ENTITY_IDS}
  UNION
  SELECT provider, account_id, campaign_id, adset_id, entity_id, entity_level FROM entities
  WHERE workspace_id = %(ws)s AND entity_level IN ('ad', 'asset_group') AND campaign_id IS NOT NULL
)
SELECT i.provider, i.account_id, i.campaign_id, i.adset_id, i.entity_id, i.entity_level,
       nullif(e.name, '') AS name, nullif(e.status, '') AS status,
       nullif(c.name, '') AS campaign_name, nullif(c.status, '') AS campaign_status,
       nullif(s.name, '') AS adset_name
FROM ids i
LEFT JOIN entities e ON e.workspace_id = %(ws)s AND e.provider = i.provider
     AND e.account_id = i.account_id AND e.entity_id = i.entity_id
LEFT JOIN entities c ON c.workspace_id = %(ws)s AND c.provider = i.provider
     AND c.account_id = i.account_id AND c.entity_id = i.campaign_id
LEFT JOIN entities s ON s.workspace_id = %(ws)s AND s.provider = i.provider
     AND s.account_id = i.account_id AND s.entity_id = i.adset_id
ORDER BY 1, 2, 3, 4 NULLS FIRST, 5 LIMIT %(limit)s
"""
ENTITIES_BARE: Final = f"""
SELECT *, NULL::text AS name, NULL::text AS status, NULL::text AS campaign_name,
       NULL::text AS campaign_status, NULL::text AS adset_name
FROM ({ENTITY_IDS}) i ORDER BY 1, 2, 3, 4 NULLS FIRST, 5 LIMIT %(limit)s
"""


def entities(conn: Conn, ws: uuid.UUID, limit: int) -> list[dict[str, Any]]:
    """Entities seen in ``metrics_daily`` (ids), named from the synced ``entities``
    table when that migration is present."""
    row = conn.execute("SELECT to_regclass('public.entities') IS NOT NULL AS named").fetchone()
    sql = ENTITIES_NAMED if row and row["named"] else ENTITIES_BARE
    return conn.execute(sql, {"ws": ws, "limit": limit}).fetchall()

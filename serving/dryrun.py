"""Dry-run: what a rule would fire on right now, from the stored data.

The stream evaluates rules on each new delta against state it keeps; a dry-run cannot
replay that, so it sums the stored tables over the rule's window per target entity and
asks the same pure judge (``domain.stoploss.watch.judge``) — same ratios of sums, same
guards, same "an undefined ratio satisfies nothing".  Targets mirror the pipeline's:
an ad level rule looks at leaf entities (ads, asset groups); an ad set at its ads
grouped by ``adset_id`` (or an ad set row itself); a campaign at everything under it.

Windows: ``today`` and ``days`` read ``metrics_daily`` with each row's *own* account
timezone deciding "today"; ``hours`` reads ``metric_deltas`` captured in the last N
hours.  An entity with neither spend nor impressions in the window had no delivery, and
the stream never fires on those: it is counted, not judged.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any, Final

import psycopg

from domain.kpis import Sums
from domain.stoploss.conditions import judge
from schemas.api_rules import DryRunEntity, DryRunOut
from schemas.rules import Rule

Conn = psycopg.Connection[dict[str, Any]]

MAX_EVALUATED: Final = 50_000  # targets judged per dry-run; beyond it the answer says truncated

TARGET: Final = {
    "ad": "CASE WHEN entity_level IN ('ad', 'asset_group') THEN entity_id END",
    "adset": "CASE WHEN entity_level = 'adset' THEN entity_id "
             "WHEN entity_level IN ('ad', 'asset_group') THEN adset_id END",
    "campaign": "CASE WHEN entity_level = 'campaign' THEN entity_id ELSE campaign_id END",
}
# Every account's local date is within a day of UTC's: the constant bounds let the
# (workspace_id, report_date) index narrow the scan before the per-row timezone decides.
_NEAR: Final = ("report_date BETWEEN (now() AT TIME ZONE 'UTC')::date - %(n)s::int "
                "AND (now() AT TIME ZONE 'UTC')::date + 1")
WINDOW: Final = {
    "today": f"FROM metrics_daily WHERE {_NEAR} AND report_date = (now() AT TIME ZONE timezone)::date",
    "days": f"FROM metrics_daily WHERE {_NEAR} AND report_date > (now() AT TIME ZONE timezone)::date - %(n)s::int "
            "AND report_date <= (now() AT TIME ZONE timezone)::date",
    "hours": "FROM metric_deltas WHERE captured_at > now() - make_interval(hours => %(n)s::int)",
}

SQL: Final = """
WITH rows AS (
  SELECT provider, account_id, {target} AS target_id, campaign_id, adset_id, currency,
         spend, impressions, clicks, conversions, revenue
  {window}
    AND workspace_id = %(ws)s
    AND (cardinality(%(providers)s::text[]) = 0 OR provider = ANY(%(providers)s))
    AND (cardinality(%(accounts)s::text[]) = 0 OR account_id = ANY(%(accounts)s))
    AND (cardinality(%(campaigns)s::text[]) = 0 OR campaign_id = ANY(%(campaigns)s))
), sums AS (
  SELECT provider, account_id, target_id, currency,
         min(campaign_id) AS campaign_id, min(adset_id) AS adset_id,
         sum(spend) AS spend, sum(impressions)::bigint AS impressions, sum(clicks)::bigint AS clicks,
         sum(conversions) AS conversions, sum(revenue) AS revenue
  FROM rows WHERE target_id IS NOT NULL
  GROUP BY provider, account_id, target_id, currency
)
SELECT s.*, nullif(e.name, '') AS name, nullif(c.name, '') AS campaign_name
FROM sums s
LEFT JOIN entities e ON e.workspace_id = %(ws)s AND e.provider = s.provider
     AND e.account_id = s.account_id AND e.entity_id = s.target_id
LEFT JOIN entities c ON c.workspace_id = %(ws)s AND c.provider = s.provider
     AND c.account_id = s.account_id AND c.entity_id = s.campaign_id
WHERE %(name)s::text IS NULL OR strpos(lower(e.name), %(name)s) > 0
ORDER BY s.spend DESC, s.provider, s.account_id, s.target_id, s.currency
LIMIT %(cap)s
"""


def window_text(rule: Rule) -> str:
    return "today" if rule.window == "today" else f"{rule.window}:{rule.window_n}"


def dry_run(conn: Conn, ws: uuid.UUID, rule: Rule, limit: int) -> DryRunOut:
    sql = SQL.format(target=TARGET[rule.level], window=WINDOW[rule.window])
    rows = conn.execute(sql, {
        "ws": ws, "n": rule.window_n, "providers": sorted(rule.providers), "accounts": sorted(rule.account_ids),
        "campaigns": sorted(rule.campaign_ids), "name": rule.name_contains, "cap": MAX_EVALUATED + 1,
    }).fetchall()
    truncated = len(rows) > MAX_EVALUATED
    evaluated = no_delivery = guarded_out = 0
    firing: list[DryRunEntity] = []
    would_fire = 0
    for r in rows[:MAX_EVALUATED]:
        evaluated += 1
        sums = Sums(Decimal(r["spend"]), int(r["impressions"]), int(r["clicks"]), Decimal(r["conversions"]),
                    Decimal(r["revenue"]))
        if sums.spend == 0 and sums.impressions == 0:
            no_delivery += 1
            continue
        verdict = judge(rule, sums)
        if not verdict.guarded:
            guarded_out += 1
            continue
        if not verdict.matched:
            continue
        would_fire += 1
        if len(firing) < limit:  # rows come by spend, largest first
            firing.append(DryRunEntity(
                provider=r["provider"], account_id=r["account_id"], level=rule.level,  # type: ignore[arg-type]
                entity_id=r["target_id"], name=r["name"],
                campaign_id=r["campaign_id"] if rule.level != "campaign" else r["target_id"],
                campaign_name=r["campaign_name"] if rule.level != "campaign" else r["name"],
                adset_id=r["adset_id"] if rule.level == "ad" else (r["target_id"] if rule.level == "adset" else None),
                currency=r["currency"], observed=verdict.observed,
            ))
    return DryRunOut(rule=rule.describe(), window=window_text(rule), evaluated=evaluated, no_delivery=no_delivery,
                     guarded_out=guarded_out, would_fire=would_fire, truncated=truncated, entities=firing)

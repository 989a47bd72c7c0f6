"""Every campaign's sums over a dashboard period, re-reading only what changed.

The period is read in parts (its settled days and its hot days, see
``timeframes.split_hot``) and per ad account: a part of one account is reused while
that account's rows in that part keep their version (``queries.Daily``), so a commit of
one campaign's poll makes the next load read that account's hot days again, nothing
else; a restatement of a settled day, that account's settled days.  The versions are
read before the sums, so a change committed in between only costs a second read."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from domain.kpis import Sums, accumulate
from serving import queries as q
from serving.timeframes import Period
from serving.versioned_cache import VersionedCache

AccountSums = dict[q.CampaignKey, Sums]
Cache = VersionedCache[AccountSums]
# Bounded by the campaigns held (about 0.4 KB each): 200,000 is about 80 MB at most.
CACHE_ENTRIES = 20_000
CACHE_CAMPAIGNS = 200_000


def new_cache() -> Cache:
    return VersionedCache[AccountSums](CACHE_ENTRIES, CACHE_CAMPAIGNS, weigh=len)


def campaign_totals(conn: q.Conn, cache: Cache | None, ws: uuid.UUID, cur: str,
                    parts: Iterable[tuple[Period, dict[tuple[str, str], q.Version]]]) -> dict[q.CampaignKey, Sums]:
    """``parts``: (days, {(provider, account): version of its rows in those days}).
    Accounts without rows in a part have no campaign sums there either (an account-day
    row exists exactly while campaign-days exist beneath it)."""
    totals: dict[q.CampaignKey, Sums] = {}
    for days, accounts in parts:
        pieces: list[AccountSums] = []
        stale: list[tuple[str, str]] = []
        for account, version in accounts.items():
            hit = cache.get((ws, cur, days, account), version) if cache is not None else None
            if hit is None:
                stale.append(account)
            else:
                pieces.append(hit)
        if stale:
            for account, sums in q.campaign_sums(conn, ws, cur, days, stale).items():
                if cache is not None:
                    cache.put((ws, cur, days, account), accounts[account], sums)
                pieces.append(sums)
        for piece in pieces:
            accumulate(totals, piece)  # never into a cached piece: totals is our own
    return totals

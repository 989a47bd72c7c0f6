"""The simulated entity tree: workspaces -> ad accounts -> campaigns -> ad sets -> ads.

Everything is drawn from one ``random.Random(seed)``, so a seed names a world: tests,
benchmarks and the live demo can rebuild exactly the same accounts, ids, names,
timezones and ad economics without sharing any state.  Accounts deliberately span
awkward timezones (+5:30, +5:45, both DST hemispheres, UTC) and currencies with very
different magnitudes (USD vs INR/NPR), because those are what break day bucketing and
money handling downstream.

Ids are what the pipeline keys on; names exist for dashboards and are allowed to repeat
across parents (as real names do), but are unique among siblings so a chart legend is
readable.
"""

from __future__ import annotations

import itertools
import math
import random
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property

PROVIDER = "sim"

TIMEZONES: tuple[str, ...] = (
    "America/Los_Angeles",
    "America/New_York",
    "Europe/Berlin",
    "Asia/Kolkata",  # +5:30
    "Asia/Kathmandu",  # +5:45
    "Australia/Sydney",  # southern-hemisphere DST
    "UTC",
    "Pacific/Auckland",  # +12/+13, the first to roll over
)
CURRENCIES: tuple[str, ...] = ("USD", "EUR", "INR", "NPR", "AUD", "NZD", "GBP")

# The currency an account in that zone usually bills in; some accounts bill in another
# one (a Berlin agency account paying in USD), which is why currency travels per record.
_ZONE_CURRENCY = {
    "America/Los_Angeles": "USD",
    "America/New_York": "USD",
    "Europe/Berlin": "EUR",
    "Asia/Kolkata": "INR",
    "Asia/Kathmandu": "NPR",
    "Australia/Sydney": "AUD",
    "UTC": "GBP",
    "Pacific/Auckland": "NZD",
}
_ZONE_REGION = {
    "America/Los_Angeles": "US West",
    "America/New_York": "US East",
    "Europe/Berlin": "DACH",
    "Asia/Kolkata": "India",
    "Asia/Kathmandu": "Nepal",
    "Australia/Sydney": "Australia",
    "UTC": "Global",
    "Pacific/Auckland": "New Zealand",
}
# Units of currency per USD: keeps budgets plausible (an INR budget is ~83x a USD one).
_FX = {"USD": 1.0, "EUR": 0.92, "GBP": 0.79, "AUD": 1.52, "NZD": 1.65, "INR": 83.0, "NPR": 133.0}

_BRANDS = (
    "Acme Outdoor",
    "Northwind Coffee",
    "Bluebird Apparel",
    "Kestrel Fitness",
    "Lumen Skincare",
    "Harbor Home",
    "Tandem Bikes",
    "Saffron Kitchen",
    "Pixel Toys",
    "Summit Travel",
    "Juniper Pets",
    "Copper Audio",
)
_SEASONS = (
    "Spring Sale",
    "Summer Launch",
    "Back to School",
    "Black Friday",
    "Holiday",
    "New Year",
    "Evergreen",
    "Clearance",
    "Mother's Day",
    "Prime Week",
)
_THEMES = (
    "Bestsellers",
    "New Arrivals",
    "Bundles",
    "Gift Cards",
    "Retargeting",
    "Prospecting",
    "Brand",
    "Catalog",
)
_OBJECTIVES = ("Sales", "Conversions", "Traffic", "Leads", "App Installs")
_AGES = ("18-24", "25-34", "35-44", "45-54", "55+", "18-65+")
_AUDIENCES = (
    "Lookalike 1%",
    "Lookalike 3%",
    "Broad",
    "Interests: Outdoors",
    "Interests: Fitness",
    "Retargeting 30d",
    "Cart Abandoners 7d",
    "Advantage+",
    "Past Buyers 180d",
)
_FORMATS = ("Video 15s", "Video 6s", "Carousel", "Static", "UGC Video", "Reel", "Story")
_HOOKS = (
    "Free Shipping",
    "20% Off",
    "Testimonial",
    "How It Works",
    "Unboxing",
    "Before/After",
    "Limited Drop",
    "Founder Story",
)


@dataclass(frozen=True, slots=True)
class Curve:
    """How an ad delivers over its local day.

    Delivery intensity is ``1 + amplitude * cos(2*pi*(f - peak_hour/24))`` over the day
    fraction ``f``; ``demand`` is the day's would-be spend as a multiple of the daily
    budget, so ``demand > 1`` exhausts the budget before midnight (a flat tail, as
    budget-capped ads really show) and ``demand == 0`` is a paused ad that reports zeros.
    ``amplitude`` stays below 0.9 so the cumulative curve is strictly increasing even
    after the per-day wiggle is added (see ``generator``).
    """

    name: str
    amplitude: float
    peak_hour: float
    demand: float


@dataclass(frozen=True, slots=True)
class Workspace:
    id: str  # UUID string, fixed per seed
    name: str


@dataclass(frozen=True, slots=True)
class Account:
    workspace_id: str
    provider: str
    id: str
    name: str
    timezone: str
    currency: str


@dataclass(frozen=True, slots=True)
class Campaign:
    account_id: str
    id: str
    name: str
    objective: str


@dataclass(frozen=True, slots=True)
class AdSet:
    campaign_id: str
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class Ad:
    """One ad with everything a snapshot needs denormalised onto it (the hot path reads
    these fields once per poll, so no lookups up the tree)."""

    workspace_id: str
    provider: str
    account_id: str
    campaign_id: str
    adset_id: str
    id: str
    name: str
    timezone: str
    currency: str
    daily_budget: Decimal  # account currency
    cpm: Decimal  # account currency per 1000 impressions
    ctr: float  # clicks / impressions
    cvr: float  # conversions / clicks
    aov: Decimal  # revenue / conversion, account currency
    curve: Curve
    salt: int  # per-ad 64-bit salt: keys the ad's per-day randomness


@dataclass(frozen=True)
class World:
    seed: int
    workspaces: tuple[Workspace, ...]
    accounts: tuple[Account, ...]
    campaigns: tuple[Campaign, ...]
    adsets: tuple[AdSet, ...]
    ads: tuple[Ad, ...]
    names: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @cached_property
    def ads_by_id(self) -> dict[str, Ad]:
        return {a.id: a for a in self.ads}

    @cached_property
    def accounts_by_id(self) -> dict[str, Account]:
        return {a.id: a for a in self.accounts}

    def name_of(self, entity_id: str) -> str:
        """Human name of any entity id (workspace, account, campaign, ad set, ad)."""
        return self.names[entity_id]


def _unique(name: str, seen: set[str]) -> str:
    candidate, n = name, 2
    while candidate in seen:
        candidate = f"{name} ({n})"
        n += 1
    seen.add(candidate)
    return candidate


def _money(value: float) -> Decimal:
    return Decimal(f"{value:.2f}")


_SHAPES: tuple[tuple[str, int], ...] = (
    ("diurnal", 35),
    ("evening", 20),
    ("morning", 14),
    ("flat", 10),
    ("budget_capped", 18),
    ("paused", 3),
)


_SHAPE_NAMES = [s for s, _ in _SHAPES]
_SHAPE_CUM_WEIGHTS = list(itertools.accumulate(w for _, w in _SHAPES))


def _draw_curve(rng: random.Random) -> Curve:
    name = rng.choices(_SHAPE_NAMES, cum_weights=_SHAPE_CUM_WEIGHTS)[0]
    if name == "diurnal":
        return Curve(name, rng.uniform(0.5, 0.8), rng.uniform(12.0, 16.0), rng.uniform(0.75, 1.0))
    if name == "evening":
        return Curve(name, rng.uniform(0.6, 0.85), rng.uniform(19.0, 22.0), rng.uniform(0.75, 1.0))
    if name == "morning":
        return Curve(name, rng.uniform(0.4, 0.7), rng.uniform(7.0, 11.0), rng.uniform(0.75, 1.0))
    if name == "flat":
        return Curve(name, rng.uniform(0.0, 0.15), rng.uniform(0.0, 24.0), rng.uniform(0.85, 1.0))
    if name == "budget_capped":
        return Curve(name, rng.uniform(0.4, 0.7), rng.uniform(11.0, 16.0), rng.uniform(1.3, 2.0))
    return Curve("paused", 0.0, 12.0, 0.0)


def _draw_ad_economics(
    rng: random.Random, currency: str
) -> tuple[Decimal, Decimal, float, float, Decimal]:
    fx = _FX[currency]
    budget_usd = math.exp(rng.uniform(math.log(20.0), math.log(2000.0)))
    budget = _money(max(1.0, round(budget_usd * fx / 5.0) * 5.0))
    cpm = _money(rng.uniform(4.0, 25.0) * fx)
    ctr = rng.uniform(0.004, 0.035)
    cvr = rng.uniform(0.01, 0.08)
    aov = _money(rng.uniform(15.0, 180.0) * fx)
    return budget, cpm, ctr, cvr, aov


def _build(
    seed: int,
    workspaces: int,
    accounts_per_workspace: int,
    campaigns_per_account: int,
    adsets_per_campaign: int,
    ads_per_adset: int,
    timezones: Sequence[str] | None,
    limit: int | None,
) -> World:
    rng = random.Random(seed)
    pool = list(timezones) if timezones else list(TIMEZONES)
    # Shuffle the pool and cycle through it, so any world with >= len(pool) accounts
    # covers every zone (the awkward ones must not depend on luck), yet which account
    # gets which zone still varies by seed.
    rng.shuffle(pool)
    # Per-seed id bases: two worlds publishing into one topic do not share entity ids.
    base = rng.randrange(100, 1000) * 100_000
    names: dict[str, str] = {}
    ws_out: list[Workspace] = []
    acc_out: list[Account] = []
    cmp_out: list[Campaign] = []
    set_out: list[AdSet] = []
    ad_out: list[Ad] = []
    counters = {"act": 0, "cmp": 0, "adset": 0, "ad": 0}

    def next_id(kind: str) -> str:
        counters[kind] += 1
        return f"sim-{kind}-{base + counters[kind]}"

    def full() -> bool:
        return limit is not None and len(ad_out) >= limit

    brands = rng.sample(_BRANDS, len(_BRANDS))
    brand_seen: set[str] = set()
    for w in range(workspaces):
        if full():
            break
        ws_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        brand = _unique(brands[w % len(brands)], brand_seen)
        ws_out.append(Workspace(ws_id, brand))
        names[ws_id] = brand
        acc_seen: set[str] = set()
        for _ in range(accounts_per_workspace):
            if full():
                break
            tz = pool[len(acc_out) % len(pool)]
            currency = (
                _ZONE_CURRENCY.get(tz, "USD") if rng.random() < 0.85 else rng.choice(CURRENCIES)
            )
            acc = Account(
                ws_id,
                PROVIDER,
                next_id("act"),
                _unique(f"{brand} {_ZONE_REGION.get(tz, tz)} ({currency})", acc_seen),
                tz,
                currency,
            )
            acc_out.append(acc)
            names[acc.id] = acc.name
            cmp_seen: set[str] = set()
            for _ in range(campaigns_per_account):
                if full():
                    break
                objective = rng.choice(_OBJECTIVES)
                cmp_name = f"{rng.choice(_SEASONS)} {rng.choice(_THEMES)} | {objective}"
                cmp = Campaign(acc.id, next_id("cmp"), _unique(cmp_name, cmp_seen), objective)
                cmp_out.append(cmp)
                names[cmp.id] = cmp.name
                set_seen: set[str] = set()
                for _ in range(adsets_per_campaign):
                    if full():
                        break
                    geo = _ZONE_REGION.get(tz, "Global")
                    set_name = f"{geo} {rng.choice(_AGES)} {rng.choice(_AUDIENCES)}"
                    adset = AdSet(cmp.id, next_id("adset"), _unique(set_name, set_seen))
                    set_out.append(adset)
                    names[adset.id] = adset.name
                    ad_seen: set[str] = set()
                    for v in range(ads_per_adset):
                        if full():
                            break
                        budget, cpm, ctr, cvr, aov = _draw_ad_economics(rng, currency)
                        ad_name = f"{rng.choice(_FORMATS)} - {rng.choice(_HOOKS)} v{v + 1}"
                        ad = Ad(
                            workspace_id=ws_id,
                            provider=PROVIDER,
                            account_id=acc.id,
                            campaign_id=cmp.id,
                            adset_id=adset.id,
                            id=next_id("ad"),
                            name=_unique(ad_name, ad_seen),
                            timezone=tz,
                            currency=currency,
                            daily_budget=budget,
                            cpm=cpm,
                            ctr=ctr,
                            cvr=cvr,
                            aov=aov,
                            curve=_draw_curve(rng),
                            salt=rng.getrandbits(64),
                        )
                        ad_out.append(ad)
                        names[ad.id] = ad.name
    return World(
        seed, tuple(ws_out), tuple(acc_out), tuple(cmp_out), tuple(set_out), tuple(ad_out), names
    )


def build_world(
    seed: int,
    workspaces: int = 3,
    accounts_per_workspace: int = 2,
    campaigns_per_account: int = 3,
    adsets_per_campaign: int = 2,
    ads_per_adset: int = 3,
    *,
    timezones: Sequence[str] | None = None,
) -> World:
    """A small, fully regular world; ``timezones`` overrides the zone pool (tests use it
    to pin a +5:45 or a DST zone)."""
    return _build(
        seed,
        workspaces,
        accounts_per_workspace,
        campaigns_per_account,
        adsets_per_campaign,
        ads_per_adset,
        timezones,
        None,
    )


# Shape of a benchmark world: 200 ads per account, 10 accounts per workspace, so 50,000
# ads are 250 accounts in 25 workspaces (an agency-sized tenant mix).
_BENCH_SHAPE = (10, 10, 4, 5)


def build_world_for_entities(
    seed: int, n_ads: int, *, timezones: Sequence[str] | None = None
) -> World:
    """A world with exactly ``n_ads`` ads, for benchmarks (e.g. 50,000)."""
    if n_ads < 1:
        raise ValueError("n_ads must be >= 1")
    accounts_per_ws, campaigns, adsets, ads = _BENCH_SHAPE
    per_ws = accounts_per_ws * campaigns * adsets * ads
    workspaces = math.ceil(n_ads / per_ws)
    return _build(seed, workspaces, accounts_per_ws, campaigns, adsets, ads, timezones, n_ads)


def iter_tree(world: World) -> Iterator[tuple[Workspace, Account, Campaign, AdSet, Ad]]:
    """Every ad with its ancestors (for seeding dimension tables / dashboards)."""
    ws = {w.id: w for w in world.workspaces}
    acc = {a.id: a for a in world.accounts}
    cmp = {c.id: c for c in world.campaigns}
    sets = {s.id: s for s in world.adsets}
    for ad in world.ads:
        yield ws[ad.workspace_id], acc[ad.account_id], cmp[ad.campaign_id], sets[ad.adset_id], ad

"""The simulated entity tree: reproducible by seed, well-formed, and covering the
awkward timezones/currencies on purpose."""

from __future__ import annotations

import re
import uuid
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.sim.world import CURRENCIES, TIMEZONES, build_world, build_world_for_entities, iter_tree


def test_same_seed_same_world_and_different_seed_different_world() -> None:
    a, b, c = build_world(5), build_world(5), build_world(6)
    assert a == b
    assert a.names == b.names
    assert a != c
    assert {w.id for w in a.workspaces}.isdisjoint({w.id for w in c.workspaces})


def test_default_shape_and_links() -> None:
    w = build_world(1)
    assert (len(w.workspaces), len(w.accounts), len(w.campaigns), len(w.adsets), len(w.ads)) == (
        3,
        6,
        18,
        36,
        108,
    )
    for kind in (w.workspaces, w.accounts, w.campaigns, w.adsets, w.ads):
        ids = [e.id for e in kind]
        assert len(ids) == len(set(ids))
    seen = 0
    for ws, acc, cmp, adset, ad in iter_tree(w):
        seen += 1
        assert acc.workspace_id == ws.id == ad.workspace_id
        assert cmp.account_id == acc.id == ad.account_id
        assert adset.campaign_id == cmp.id == ad.campaign_id
        assert ad.adset_id == adset.id
        assert (ad.timezone, ad.currency, ad.provider) == (acc.timezone, acc.currency, acc.provider)
    assert seen == len(w.ads)


def test_ids_and_attributes_fit_the_event_contract() -> None:
    w = build_world(2, workspaces=4)
    id_pattern = re.compile(r"[A-Za-z0-9_.\-]{1,128}")  # schemas.insight.Id
    for ws in w.workspaces:
        assert uuid.UUID(ws.id).version == 4
        assert ws.name
    for acc in w.accounts:
        assert acc.provider == "sim"
        assert re.fullmatch(r"sim-act-\d+", acc.id)
        assert acc.timezone in TIMEZONES
        assert acc.currency in CURRENCIES
    for ad in w.ads:
        for ident in (ad.account_id, ad.campaign_id, ad.adset_id, ad.id):
            assert id_pattern.fullmatch(ident), ident
        assert ad.daily_budget > 0 and ad.daily_budget.as_tuple().exponent == -2
        assert ad.cpm > 0 and ad.aov > 0
        assert 0 < ad.ctr < 1 and 0 < ad.cvr < 1
        assert 0 <= ad.curve.amplitude < 0.9
        assert ad.curve.demand >= 0
        assert w.name_of(ad.id) == ad.name


def test_names_are_human_and_unique_among_siblings() -> None:
    w = build_world(3, ads_per_adset=6)
    families = {
        "accounts": [(a.workspace_id, a.name) for a in w.accounts],
        "campaigns": [(c.account_id, c.name) for c in w.campaigns],
        "adsets": [(s.campaign_id, s.name) for s in w.adsets],
        "ads": [(a.adset_id, a.name) for a in w.ads],
    }
    for family, pairs in families.items():
        assert max(Counter(pairs).values()) == 1, family
        assert all(re.search(r"[A-Za-z]{3}", name) for _, name in pairs), family


def test_every_zone_is_covered_once_there_are_enough_accounts() -> None:
    for seed in range(5):
        w = build_world(seed, workspaces=4, accounts_per_workspace=2)
        assert {a.timezone for a in w.accounts} == set(TIMEZONES)


def test_timezone_pool_can_be_pinned() -> None:
    w = build_world(1, timezones=["Asia/Kathmandu"])
    assert {a.timezone for a in w.accounts} == {"Asia/Kathmandu"}


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32), n_ads=st.integers(1, 2500))
def test_build_world_for_entities_has_exactly_n_ads(seed: int, n_ads: int) -> None:
    w = build_world_for_entities(seed, n_ads)
    assert len(w.ads) == n_ads
    assert len({a.id for a in w.ads}) == n_ads
    # No empty parents are left behind by the truncation.
    assert {a.account_id for a in w.ads} == {a.id for a in w.accounts}
    assert {a.adset_id for a in w.ads} == {s.id for s in w.adsets}


def test_benchmark_sized_world() -> None:
    w = build_world_for_entities(7, 20_000)
    assert len(w.ads) == 20_000
    assert len(w.accounts) >= len(TIMEZONES)
    assert {a.timezone for a in w.accounts} == set(TIMEZONES)

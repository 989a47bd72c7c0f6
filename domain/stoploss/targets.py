"""Which targets a snapshot concerns: the ad itself, its ad set and its campaign (each a
rule level), the aggregate keys its values add to, and which rules it is in scope of."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

from domain.deltas import Applied
from schemas.rules import Rule

LEAF_LEVELS = frozenset({"ad", "asset_group"})


class Target(NamedTuple):
    """What a rule judges: an ad, an ad set or a campaign (a tuple: built three times
    per snapshot, where a frozen dataclass costs several times more)."""

    level: str
    target_id: str


def contributes_to(applied: Applied) -> tuple[str, ...]:
    s = applied.snapshot
    if s.entity_level == "campaign":
        return (f"campaign:{s.entity_id}",)
    if s.entity_level == "adset":
        return (f"adset:{s.entity_id}", f"campaign:{s.campaign_id}")
    if s.adset_id:
        return (f"adset:{s.adset_id}", f"campaign:{s.campaign_id}")
    return (f"campaign:{s.campaign_id}",)


def targets_for(applied: Applied, levels: Iterable[str]) -> list[Target]:
    s = applied.snapshot
    out = []
    for level in levels:
        if level == "ad":
            if s.entity_level in LEAF_LEVELS:
                out.append(Target("ad", s.entity_id))
        elif level == "adset":
            if s.entity_level == "adset":
                out.append(Target("adset", s.entity_id))
            elif s.entity_level in LEAF_LEVELS and s.adset_id:
                out.append(Target("adset", s.adset_id))
        elif level == "campaign":
            out.append(Target("campaign", s.entity_id if s.entity_level == "campaign" else s.campaign_id))
    return out


def watch_key(applied: Applied) -> str:
    """The campaign a snapshot belongs to: the key of its watch."""
    s = applied.snapshot
    return f"{s.workspace_id}:{s.provider}:{s.account_id}:{s.campaign_id}"


def in_scope(rule: Rule, applied: Applied, t: Target, name_of: Callable[[str], str | None]) -> bool:
    s = applied.snapshot
    if rule.providers and s.provider not in rule.providers:
        return False
    if rule.account_ids and s.account_id not in rule.account_ids:
        return False
    if rule.campaign_ids and s.campaign_id not in rule.campaign_ids:
        return False
    if rule.name_contains is not None:
        name = name_of(t.target_id)
        return name is not None and rule.name_contains in name.lower()
    return True

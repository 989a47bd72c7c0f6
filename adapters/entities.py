"""The synced entity hierarchy (campaigns, ad sets / ad groups, ads, asset groups), so
the dashboard shows names and rules can scope by them.  Keyed by ids, never names.

Pure: the entity type and validation of the platforms' entity payloads.  Storage
(workspace-scoped) is in :mod:`adapters.connections_store`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

Level = Literal["campaign", "adset", "ad", "asset_group"]
_ID = r"^[A-Za-z0-9_.\-]{1,128}$"


@dataclass(frozen=True)
class Entity:
    entity_id: str
    entity_level: Level
    name: str
    status: str
    campaign_id: str | None
    adset_id: str | None


class _MetaEntity(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = Field(pattern=_ID)
    name: str = Field(default="", max_length=1000)
    effective_status: str = Field(default="", max_length=64)
    campaign_id: str | None = Field(default=None, pattern=_ID)
    adset_id: str | None = Field(default=None, pattern=_ID)


def meta_entities(level: Level, rows: Iterable[dict[str, Any]]) -> tuple[list[Entity], list[tuple[dict[str, Any], str]]]:
    """(valid entities, (raw, reason) rejections) from Graph API campaign/adset/ad objects."""
    ok: list[Entity] = []
    bad: list[tuple[dict[str, Any], str]] = []
    for raw in rows:
        try:
            e = _MetaEntity.model_validate(raw)
        except ValidationError as err:
            bad.append((raw, f"meta {level}: " + "; ".join(
                f"{'.'.join(str(x) for x in x_['loc'])}: {x_['msg']}" for x_ in err.errors(include_url=False))))
            continue
        campaign = e.id if level == "campaign" else e.campaign_id
        adset = e.id if level == "adset" else e.adset_id
        if level != "campaign" and campaign is None:
            bad.append((raw, f"meta {level} {e.id}: no campaign_id"))
            continue
        ok.append(Entity(e.id, level, e.name, e.effective_status, campaign, adset))
    return ok, bad


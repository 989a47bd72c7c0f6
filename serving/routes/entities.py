"""``GET /entities``: the campaign -> ad set -> ad tree of the workspace.

Ids come from ``metrics_daily``; names and statuses from the synced ``entities`` table
when it exists (a name not synced yet falls back to the id, an unknown status is null).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from schemas.api import Ad, AdSet, Campaign, Entities
from serving import queries as q
from serving.deps import Conn, CurrentWorkspace
from serving.json_route import api_router

router = api_router(tags=["entities"])


@router.get("/entities", response_model=Entities)
def entities(ws: CurrentWorkspace, conn: Conn,
             limit: Annotated[int, Query(ge=1, le=100_000, description="max ads listed")] = 20_000) -> Entities:
    campaigns: dict[tuple[str, str, str], Campaign] = {}
    adsets: dict[tuple[str, str, str, str | None], AdSet] = {}
    for r in q.entities(conn, ws.id, limit):
        ck = (r["provider"], r["account_id"], r["campaign_id"])
        camp = campaigns.get(ck)
        if camp is None:
            camp = campaigns[ck] = Campaign(provider=ck[0], account_id=ck[1], campaign_id=ck[2],
                                            name=r["campaign_name"] or ck[2], status=r["campaign_status"],
                                            adsets=[])
        ak = (*ck, r["adset_id"])
        aset = adsets.get(ak)
        if aset is None:
            aset = adsets[ak] = AdSet(adset_id=r["adset_id"], name=r["adset_name"] or r["adset_id"], ads=[])
            camp.adsets.append(aset)
        aset.ads.append(Ad(entity_id=r["entity_id"], entity_level=r["entity_level"],
                           name=r["name"] or r["entity_id"], status=r["status"]))
    return Entities(campaigns=list(campaigns.values()))

"""A simulated ad platform: a deterministic entity tree, its delivery curves and a poller.

Why it exists: the pipeline has to be exercised with the awkward parts of real ad data
(account-local days, DST, restatements up *and* down, duplicate and late deliveries)
at benchmark volumes, without network access or an ad account, and reproducibly by seed.
"""

from domain.sim.generator import (
    SimEvent,
    Simulation,
    bulk_stream,
    bulk_stream_encoded,
    cumulative,
    expected_totals,
    local_day,
    poll_events,
    poll_stream,
    poll_stream_encoded,
)
from domain.sim.world import Ad, World, build_world, build_world_for_entities

__all__ = [
    "Ad",
    "SimEvent",
    "Simulation",
    "World",
    "build_world",
    "build_world_for_entities",
    "bulk_stream",
    "bulk_stream_encoded",
    "cumulative",
    "expected_totals",
    "local_day",
    "poll_events",
    "poll_stream",
    "poll_stream_encoded",
]

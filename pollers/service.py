"""The real poller service, as the settings describe it: a :class:`~pollers.sync.Syncer`
with one producer, one Redis client, the platforms' endpoints and the Google operations
budget shared through Redis (``Syncer.serve`` is its loop; ``Syncer.backfill`` reads
history)."""

from __future__ import annotations

import redis

from adapters.crypto import Keyring
from adapters.google_ads.budget import RedisOperationBudget
from adapters.kafka import Producer
from ground.settings import Settings
from pollers.sync import Endpoints, Syncer


def build_syncer(settings: Settings) -> Syncer:
    """Raises ``adapters.crypto.TokenKeyError`` when the token keys are missing or bad."""
    platforms = settings.platforms
    endpoints = Endpoints(meta_graph_url=platforms.meta_graph_url, google_endpoint=platforms.google_ads_endpoint,
                          google_token_url=platforms.google_oauth_token_url, google_ca_file=platforms.google_ca_path)
    client = redis.Redis.from_url(settings.redis.url)
    limit = platforms.google_daily_operations
    return Syncer(settings.database.libpq_url, Keyring.from_settings(settings.tokens),
                  Producer(settings.kafka.bootstrap, client_id="metricx-poller"), client, endpoints,
                  topic=settings.kafka.raw_topic, deadletter_topic=settings.kafka.deadletter_topic,
                  google_budget_for=lambda token: RedisOperationBudget(client, token, limit),
                  hot_yesterday_hours=platforms.hot_yesterday_hours)


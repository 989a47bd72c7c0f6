"""Pause and resume on Meta: ``status`` PAUSED / ACTIVE on an ad, ad set or campaign,
through the facebook-business SDK with the connection's own token.  Whether to call it
at all, and only once, is the caller's business (``notifier.actions``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from facebook_business.adobjects.ad import Ad
from facebook_business.adobjects.adset import AdSet
from facebook_business.adobjects.campaign import Campaign
from facebook_business.api import FacebookAdsApi
from facebook_business.session import FacebookSession

from adapters.meta.poller import API_VERSION

_META_CLASSES: dict[str, Callable[..., Any]] = {"ad": Ad, "adset": AdSet, "campaign": Campaign}


class MetaStatusSetter:
    """Sets ``status`` on a Meta ad / ad set / campaign with the connection's own token."""

    def __init__(self, graph_url: str, api_version: str = API_VERSION, timeout_s: float = 30.0) -> None:
        self.graph_url = graph_url.rstrip("/")
        self.api_version = api_version
        self.timeout_s = timeout_s

    def __call__(self, tokens: dict[str, Any], level: str, entity_id: str, status: str) -> None:
        cls = _META_CLASSES.get(level)
        if cls is None:
            raise ValueError(f"meta cannot set status on level {level!r}")
        session = FacebookSession(app_secret=tokens.get("app_secret"), access_token=tokens["access_token"],
                                  timeout=self.timeout_s)
        session.GRAPH = self.graph_url  # per-instance, as in the poller: never the global API
        api = FacebookAdsApi(session, api_version=self.api_version)
        cls(entity_id, api=api).api_update(params={"status": status})

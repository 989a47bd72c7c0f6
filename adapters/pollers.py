"""Which poller reads a connection: the registry provider -> builder, so the poller
service (``pollers.sync``) and ``metricx backfill`` never branch on the provider.  A new
platform is a module implementing ``adapters.platform.Poller`` and one entry here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from google.oauth2.credentials import Credentials

from adapters import connections_store as store
from adapters.google_ads.client import GoogleAccount, GoogleApi
from adapters.google_ads.logic import Budget
from adapters.google_ads.poller import GoogleAdsPoller
from adapters.meta.poller import MetaAccount, MetaPoller
from adapters.platform import Poller, SyncFailure
from ground.resilience import CircuitBreaker


@dataclass
class PollerContext:
    """What a poller needs beyond the connection: where the platforms are, the clocks,
    and what outlives one sync (the Google budgets, breakers and credentials)."""

    meta_graph_url: str
    google: GoogleApi
    clock: Callable[[], datetime]
    sleep: Callable[[float], None]
    google_budget: Callable[[str], Budget]  # by developer token (quotas are per token)
    google_credentials: Callable[[GoogleAccount, GoogleApi], Credentials]
    google_breakers: dict[str, CircuitBreaker] = field(default_factory=dict)


def _meta(c: store.Connection, ctx: PollerContext) -> Poller:
    t = store.MetaTokens.model_validate(c.tokens)
    return MetaPoller(MetaAccount(c.workspace_id, c.account_id, t.access_token, t.app_secret),
                      graph_url=ctx.meta_graph_url, sleep=ctx.sleep, clock=ctx.clock)


def _google(c: store.Connection, ctx: PollerContext) -> Poller:
    g = store.GoogleTokens.model_validate(c.tokens)
    acct = GoogleAccount(c.workspace_id, c.account_id, g.developer_token, g.access_token, g.refresh_token,
                         g.client_id, g.client_secret, c.login_customer_id)
    return GoogleAdsPoller(acct, api=ctx.google, credentials=ctx.google_credentials(acct, ctx.google),
                           budget=ctx.google_budget(g.developer_token), breakers=ctx.google_breakers,
                           clock=ctx.clock, sleep=ctx.sleep)


BUILDERS: dict[str, Callable[[store.Connection, PollerContext], Poller]] = {"meta": _meta, "google": _google}


def build_poller(c: store.Connection, ctx: PollerContext) -> Poller:
    """The connection's own poller (its own SDK client, from its decrypted tokens)."""
    builder = BUILDERS.get(c.provider)
    if builder is None:
        raise SyncFailure(f"no poller for provider {c.provider[:20]!r}")
    return builder(c, ctx)

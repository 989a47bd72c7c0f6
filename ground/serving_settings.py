"""Serving settings (``METRICX_AUTH_*``, ``METRICX_DEV_ISSUER``, ``METRICX_STREAM_*``,
``METRICX_SSE_*``), kept beside the backbone's ``ground.settings`` so the pipeline never
needs auth configuration.  A wrong value fails at start-up naming the variable."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Literal

from pydantic import ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ground.settings import ENV_PREFIX, ConfigError, load_settings

DEV_ISSUER = "metricx-dev"


class ServingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    # The only issuer whose tokens are accepted; its JWKS is fetched from auth_jwks_url
    # (never from a URL found in a token).
    auth_issuer: str = DEV_ISSUER
    auth_audience: str = "metricx"
    auth_jwks_url: str | None = None
    # Fixed by configuration: the token's own "alg" header is never trusted.
    auth_algorithm: Literal["RS256", "ES256"] = "ES256"
    auth_leeway_s: int = 30
    # Cached JWKS lifetime, and the shortest gap between refetches triggered by an
    # unknown "kid" (so forged kids cannot hammer the issuer).
    jwks_cache_s: int = 600
    jwks_min_refresh_s: float = 10.0

    # Local development issuer: verifies tokens against a key pair kept in
    # dev_issuer_dir (and lets `metricx token` mint them).  Never enable in production.
    dev_issuer: bool = False
    dev_issuer_dir: Path | None = None

    # EventSource cannot send headers: /stream also accepts a short-lived token minted
    # by POST /stream/token, HMAC-signed with this secret (random per process if unset;
    # set it when several server processes sit behind one address).
    stream_token_secret: str | None = None
    stream_token_ttl_s: int = 120

    # Database connections per server process (requests wait for a free one).
    db_pool_size: int = 16

    # Largest request body accepted (413 above it, before any route or auth runs): four
    # times the largest rule (16 KiB serialised), room for any channel body.
    max_body_bytes: int = 64 * 1024

    sse_queue_size: int = 64
    sse_coalesce_ms: int = 250
    sse_heartbeat_s: float = 15.0
    sse_block_ms: int = 200
    # An open stream re-checks that its user is still a member this often (the answer is
    # cached that long per user and workspace); it also ends at its token's expiry.
    sse_recheck_s: float = 30.0

    @model_validator(mode="after")
    def _issuer_source(self) -> ServingSettings:
        if not self.dev_issuer and not self.auth_jwks_url:
            raise ValueError(
                "METRICX_AUTH_JWKS_URL is required unless METRICX_DEV_ISSUER=1 (no token could be verified)"
            )
        if self.auth_jwks_url and not self.auth_jwks_url.startswith(("https://", "http://127.", "http://localhost")):
            raise ValueError("METRICX_AUTH_JWKS_URL must be https:// (plain http only on loopback)")
        for name in ("db_pool_size", "stream_token_ttl_s", "sse_queue_size", "sse_coalesce_ms", "sse_block_ms",
                     "max_body_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{ENV_PREFIX}{name.upper()} must be >= 1")
        if self.sse_recheck_s <= 0:
            raise ValueError(f"{ENV_PREFIX}SSE_RECHECK_S must be > 0")
        return self

    def dev_dir(self) -> Path:
        return self.dev_issuer_dir or (load_settings().data_dir / "dev-issuer")

    def stream_secret(self) -> bytes:
        return (self.stream_token_secret or _PROCESS_SECRET).encode()


_PROCESS_SECRET = secrets.token_urlsafe(32)


def load_serving_settings() -> ServingSettings:
    try:
        return ServingSettings()
    except ValidationError as err:
        msgs = [str(e["msg"]).removeprefix("Value error, ") for e in err.errors(include_url=False)]
        raise ConfigError("invalid serving configuration: " + "; ".join(msgs)) from None

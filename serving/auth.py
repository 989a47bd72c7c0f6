"""Bearer-token verification (pyjwt) against the configured issuer's JWKS.

Rules, each one closing a known hole:
- the algorithm comes from configuration (``METRICX_AUTH_ALGORITHM``), never from the
  token: ``alg: none`` and HS256-signed-with-the-public-key tokens are refused before any
  key is touched, and the key's type must match the algorithm;
- keys come only from ``METRICX_AUTH_JWKS_URL`` (or the local dev issuer), never from a
  URL in the token (``jku``/``x5u`` are ignored);
- the JWKS is cached and refetched when a token names an unknown ``kid`` (key rotation),
  at most once per ``METRICX_JWKS_MIN_REFRESH_S``;
- ``exp``, ``nbf``, ``iss``, ``aud`` and ``sub`` are required and checked.

Every failure raises :class:`AuthError`; callers answer all of them with the same 401
body so a client learns nothing about why (the reason goes to the log).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ground.settings import ServingSettings
from serving.dev_issuer import load_or_create_key, public_jwk

log = logging.getLogger(__name__)

STREAM_AUDIENCE = "metricx-stream"
STREAM_ALGORITHM = "HS256"


class AuthError(Exception):
    """A token was missing or not acceptable; the message is for logs only."""


@dataclass(frozen=True, slots=True)
class Caller:
    sub: str
    claims: dict[str, Any]


JwksFetcher = Callable[[], dict[str, Any]]


def http_fetcher(url: str, timeout_s: float = 5.0) -> JwksFetcher:
    def fetch() -> dict[str, Any]:
        r = httpx.get(url, timeout=timeout_s, follow_redirects=False)
        r.raise_for_status()
        body = r.json()
        if not isinstance(body, dict) or not isinstance(body.get("keys"), list):
            raise ValueError("JWKS document has no 'keys' list")
        return body

    return fetch


class JwksCache:
    """kid -> public key, refreshed after ``cache_s`` or on an unknown kid."""

    def __init__(self, fetch: JwksFetcher, *, cache_s: float, min_refresh_s: float) -> None:
        self._fetch = fetch
        self._cache_s = cache_s
        self._min_refresh_s = min_refresh_s
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._lock = threading.Lock()
        self.fetches = 0

    def _refresh(self) -> None:
        self._fetched_at = time.monotonic()
        self.fetches += 1
        try:
            doc = self._fetch()
        except Exception as exc:
            log.error("JWKS fetch failed", extra={"error": str(exc)})
            return
        keys: dict[str, jwt.PyJWK] = {}
        for raw in doc["keys"]:
            if not isinstance(raw, dict) or not isinstance(raw.get("kid"), str):
                continue
            try:
                keys[raw["kid"]] = jwt.PyJWK(raw)
            except jwt.PyJWTError as exc:
                log.warning("JWKS key skipped", extra={"kid": raw.get("kid"), "error": str(exc)})
        self._keys = keys
        log.info("JWKS refreshed", extra={"keys": len(keys)})

    def get(self, kid: str) -> jwt.PyJWK | None:
        with self._lock:
            now = time.monotonic()
            stale = self._fetched_at is None or now - self._fetched_at > self._cache_s
            may_refetch = self._fetched_at is None or now - self._fetched_at >= self._min_refresh_s
            if stale or (kid not in self._keys and may_refetch):
                self._refresh()
            return self._keys.get(kid)


def _key_matches(algorithm: str, key: object) -> bool:
    if algorithm == "RS256":
        return isinstance(key, rsa.RSAPublicKey)
    if algorithm == "ES256":
        return isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)
    return False


class Verifier:
    def __init__(self, settings: ServingSettings, jwks: JwksCache) -> None:
        self.settings = settings
        self.jwks = jwks

    @classmethod
    def from_settings(cls, settings: ServingSettings, dev_dir: Path) -> Verifier:
        """``dev_dir``: where the development issuer keeps its key (used without a JWKS)."""
        if settings.auth_jwks_url:
            fetch = http_fetcher(settings.auth_jwks_url)
        else:  # dev issuer (the server refuses to start with neither: require_key_source)
            key = load_or_create_key(dev_dir, settings.auth_algorithm)
            doc = {"keys": [public_jwk(key, settings.auth_algorithm)]}

            def fetch() -> dict[str, Any]:
                return doc

        return cls(settings, JwksCache(fetch, cache_s=settings.jwks_cache_s,
                                       min_refresh_s=settings.jwks_min_refresh_s))

    def verify(self, token: str) -> Caller:
        alg = self.settings.auth_algorithm
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise AuthError(f"malformed token: {exc}") from None
        if header.get("alg") != alg:
            raise AuthError(f"alg {header.get('alg')!r} is not the configured {alg}")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthError("token has no kid")
        jwk = self.jwks.get(kid)
        if jwk is None:
            raise AuthError(f"unknown kid {kid!r}")
        if not _key_matches(alg, jwk.key):
            raise AuthError(f"key {kid!r} is not a {alg} key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                jwk.key,
                algorithms=[alg],
                audience=self.settings.auth_audience,
                issuer=self.settings.auth_issuer,
                leeway=self.settings.auth_leeway_s,
                options={"require": ["exp", "iss", "aud", "sub"], "verify_nbf": True},
            )
        except jwt.PyJWTError as exc:
            raise AuthError(f"rejected: {type(exc).__name__}: {exc}") from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise AuthError("sub is empty")
        return Caller(sub, claims)


@dataclass(frozen=True, slots=True)
class StreamTokenMinted:
    token: str
    exp: int  # seconds since the epoch


def mint_stream_token(settings: ServingSettings, sub: str, workspace_id: str, now: float | None = None,
                      not_after: int | None = None) -> StreamTokenMinted:
    """A short-lived token for EventSource (which cannot send headers), scoped to one
    user and one workspace; membership is re-checked when it is used and while its
    stream is open.  ``not_after``: the minting credential's own ``exp`` — a stream
    token never outlives the token it was minted with."""
    t = int(now if now is not None else time.time())
    exp = t + settings.stream_token_ttl_s
    if not_after is not None:
        exp = min(exp, not_after)
    claims = {"aud": STREAM_AUDIENCE, "sub": sub, "workspace_id": workspace_id, "iat": t, "exp": exp}
    return StreamTokenMinted(jwt.encode(claims, settings.stream_secret(), algorithm=STREAM_ALGORITHM), exp)


def verify_stream_token(settings: ServingSettings, token: str) -> Caller:
    try:
        claims: dict[str, Any] = jwt.decode(
            token, settings.stream_secret(), algorithms=[STREAM_ALGORITHM], audience=STREAM_AUDIENCE,
            options={"require": ["exp", "aud", "sub", "workspace_id"]},
        )
    except jwt.PyJWTError as exc:
        raise AuthError(f"stream token rejected: {type(exc).__name__}") from None
    return Caller(str(claims["sub"]), claims)


def expires_at(settings: ServingSettings, caller: Caller) -> float:
    """Until when the caller's credential is accepted (seconds since the epoch): a
    stream token's ``exp``; a bearer token's ``exp`` plus the accepted clock skew."""
    exp = float(caller.claims["exp"])
    return exp if caller.claims.get("aud") == STREAM_AUDIENCE else exp + settings.auth_leeway_s

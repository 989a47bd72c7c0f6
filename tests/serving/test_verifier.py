"""The verifier on its own: algorithm pinning for RS256, JWKS refresh throttling, and a
failing issuer.  The key set is handed in as a plain function (the production fetcher is
exercised over HTTP in test_auth.py)."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ground.settings import ConfigError, ServingSettings
from serving.auth import AuthError, JwksCache, Verifier
from serving.dev_issuer import mint, public_jwk

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


class Keys:
    def __init__(self, *docs: dict[str, Any]) -> None:
        self.keys = list(docs)
        self.calls = 0
        self.fail = False

    def __call__(self) -> dict[str, Any]:
        self.calls += 1
        if self.fail:
            raise OSError("issuer unreachable")
        return {"keys": self.keys}


def verifier(alg: str, keys: Keys, min_refresh_s: float = 0) -> Verifier:
    s = ServingSettings(auth_issuer="iss", auth_audience="aud", auth_jwks_url="https://iss.example/jwks",
                        auth_algorithm=alg, dev_issuer=False)  # type: ignore[arg-type]
    return Verifier(s, JwksCache(keys, cache_s=600, min_refresh_s=min_refresh_s))


def token(key: Any, alg: str, **over: Any) -> str:
    return mint(key, alg, issuer=over.pop("iss", "iss"), audience=over.pop("aud", "aud"), sub="u1", **over)


def test_rs256_configured_accepts_rs256_and_refuses_es256() -> None:
    keys = Keys(public_jwk(RSA_KEY, "RS256"), public_jwk(EC_KEY, "ES256"))
    v = verifier("RS256", keys)
    assert v.verify(token(RSA_KEY, "RS256")).sub == "u1"
    with pytest.raises(AuthError, match="not the configured RS256"):
        v.verify(token(EC_KEY, "ES256"))


def test_es256_header_with_rsa_key_behind_kid_refused() -> None:
    """A kid that names an RSA key while the header says ES256: key type must match."""
    rsa_jwk = public_jwk(RSA_KEY, "RS256")
    v = verifier("ES256", Keys(rsa_jwk))
    forged = jwt.encode({"iss": "iss", "aud": "aud", "sub": "u1", "exp": int(time.time()) + 60},
                        EC_KEY, algorithm="ES256", headers={"kid": rsa_jwk["kid"]})
    with pytest.raises(AuthError, match="not a ES256 key"):
        v.verify(forged)


def test_unknown_kids_do_not_hammer_the_issuer() -> None:
    keys = Keys(public_jwk(EC_KEY, "ES256"))
    v = verifier("ES256", keys, min_refresh_s=3600)
    stranger = ec.generate_private_key(ec.SECP256R1())
    for _ in range(5):
        with pytest.raises(AuthError, match="unknown kid"):
            v.verify(token(stranger, "ES256"))
    assert keys.calls == 1


def test_issuer_outage_keeps_cached_keys() -> None:
    keys = Keys(public_jwk(EC_KEY, "ES256"))
    v = verifier("ES256", keys)
    assert v.verify(token(EC_KEY, "ES256")).sub == "u1"
    keys.fail = True
    with pytest.raises(AuthError):
        v.verify(token(ec.generate_private_key(ec.SECP256R1()), "ES256"))  # refetch fails
    assert v.verify(token(EC_KEY, "ES256")).sub == "u1"  # the known key still works
    assert keys.calls == 2


def test_leeway_bounds_expiry() -> None:
    v = verifier("ES256", Keys(public_jwk(EC_KEY, "ES256")))
    now = time.time()
    assert v.verify(token(EC_KEY, "ES256", ttl_s=60, now=now - 80)).sub == "u1"  # 20 s late: within 30 s
    with pytest.raises(AuthError, match="ExpiredSignature"):
        v.verify(token(EC_KEY, "ES256", ttl_s=60, now=now - 120))


def test_settings_refuse_to_start_without_a_key_source() -> None:
    # The server and `metricx token` ask (the other processes never need auth settings).
    with pytest.raises(ConfigError, match="METRICX_AUTH_JWKS_URL is required"):
        ServingSettings(dev_issuer=False, auth_jwks_url=None).require_key_source()
    with pytest.raises(ValueError, match="https"):
        ServingSettings(auth_jwks_url="http://issuer.example/jwks")

"""The local development issuer: one key pair on disk, tokens with Clerk-style claims.

Exists so the demo and tests run without an identity provider.  Only used when
``METRICX_DEV_ISSUER=1``; the server then verifies against this key's public half exactly
as it would against a remote JWKS (same algorithm pinning, same claim checks).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

KEY_FILE = "private_key.pem"


def _generate(algorithm: str) -> PrivateKeyTypes:
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"unsupported algorithm {algorithm!r}")


def load_or_create_key(directory: Path, algorithm: str) -> PrivateKeyTypes:
    """The dev issuer's private key, created (mode 0600) on first use.  A key of the
    wrong type for ``algorithm`` is replaced, since it could never verify anything."""
    path = directory / f"{algorithm.lower()}_{KEY_FILE}"
    if path.exists():
        return serialization.load_pem_private_key(path.read_bytes(), password=None)
    directory.mkdir(parents=True, exist_ok=True)
    key = _generate(algorithm)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.replace(tmp, path)
    return key


def public_jwk(key: PrivateKeyTypes, algorithm: str) -> dict[str, Any]:
    """The public JWK (with a stable ``kid``: the RFC 7638 thumbprint) of ``key``."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        jwk: dict[str, Any] = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    elif isinstance(key, rsa.RSAPrivateKey):
        jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    else:
        raise ValueError("unsupported key type")
    jwk["kid"] = thumbprint(jwk)
    jwk["alg"] = algorithm
    jwk["use"] = "sig"
    return jwk


def thumbprint(jwk: dict[str, Any]) -> str:
    import base64
    import hashlib

    members = ("crv", "kty", "x", "y") if jwk["kty"] == "EC" else ("e", "kty", "n")
    canon = json.dumps({k: jwk[k] for k in members}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(canon.encode()).digest()).rstrip(b"=").decode()


def mint(
    key: PrivateKeyTypes,
    algorithm: str,
    *,
    issuer: str,
    audience: str,
    sub: str,
    workspace_id: str | None = None,
    ttl_s: int = 3600,
    now: float | None = None,
) -> str:
    """A signed token: ``sub`` is the user (as Clerk does), ``workspace_id`` the default
    workspace the page opens."""
    t = int(now if now is not None else time.time())
    claims: dict[str, Any] = {"iss": issuer, "aud": audience, "sub": sub, "iat": t, "nbf": t, "exp": t + ttl_s}
    if workspace_id:
        claims["workspace_id"] = workspace_id
    kid = public_jwk(key, algorithm)["kid"]
    return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid})  # type: ignore[arg-type]

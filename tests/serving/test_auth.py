"""Every protected route refuses every bad credential with the same status and body.

The route list is taken from the app itself and compared with the table below, so a new
route cannot be added without being covered here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi.testclient import TestClient

from ground.settings import Settings
from serving.dev_issuer import public_jwk
from tests.serving.conftest import AUDIENCE, ISSUER, Issuer, Tenants, fresh_database, seed_tenants

PUBLIC = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/")}
# (method, path, extra query) for every protected route
PROTECTED: list[tuple[str, str, dict[str, str]]] = [
    ("GET", "/dashboard", {}),
    ("GET", "/entities", {}),
    ("GET", "/analytics/timeseries", {"metric": "spend"}),
    ("POST", "/stream/token", {}),
    ("GET", "/stream", {}),
    ("GET", "/rules", {}),
    ("POST", "/rules", {}),
    ("POST", "/rules/dry-run", {}),
    ("GET", "/rules/{rule_id}", {}),
    ("PUT", "/rules/{rule_id}", {}),
    ("DELETE", "/rules/{rule_id}", {}),
    ("POST", "/rules/{rule_id}/pause", {}),
    ("POST", "/rules/{rule_id}/resume", {}),
    ("POST", "/rules/{rule_id}/dry-run", {}),
    ("GET", "/channels", {}),
    ("POST", "/channels", {}),
    ("DELETE", "/channels/{channel_id}", {}),
    ("POST", "/channels/{channel_id}/enable", {}),
    ("GET", "/alerts", {}),
    ("GET", "/alerts/actions", {}),
]
# Path parameters are filled with an id nobody has; with a good token such a request
# gets past auth and fails on the request itself, which the positive control expects.
PATH_IDS = {"rule_id": "6f1c2c9e-0000-4000-8000-000000000001", "channel_id": "6f1c2c9e-0000-4000-8000-000000000002"}
ACCEPTED_STATUS = {
    ("POST", "/rules"): 422, ("POST", "/rules/dry-run"): 422, ("PUT", "/rules/{rule_id}"): 422,
    ("POST", "/channels"): 422,
    **{(m, p): 404 for m, p, _ in PROTECTED if "{" in p and (m, p) != ("PUT", "/rules/{rule_id}")},
}
UNAUTH = {"detail": "not authenticated"}
FORBIDDEN = {"detail": "no access to this workspace"}


# This suite only reads: one database and one pair of tenants for the whole module.
@pytest.fixture(scope="module")
def module_db(services: Settings) -> Iterator[str]:
    with fresh_database(services) as url:
        yield url


@pytest.fixture(scope="module")
def module_tenants(module_db: str) -> Tenants:
    return seed_tenants(module_db)


@pytest.fixture
def database(module_db: str) -> str:
    return module_db


@pytest.fixture
def tenants(module_tenants: Tenants) -> Tenants:
    return module_tenants


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(sub: str, **over: Any) -> dict[str, Any]:
    now = int(time.time())
    c: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "nbf": now, "exp": now + 600}
    c.update(over)
    return c


def unsigned(header: dict[str, Any], body: dict[str, Any]) -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(body).encode())}."


def hs256_with_public_key(iss: Issuer, sub: str) -> str:
    """The classic key-confusion forgery: HMAC keyed with the issuer's public key PEM."""
    pem = iss.key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": iss.kid}).encode())
    body = b64(json.dumps(claims(sub)).encode())
    sig = hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def rs256_published(iss: Issuer, sub: str) -> str:
    """A genuinely RS256-signed token whose key *is* in the JWKS: refused because the
    configured algorithm is ES256 (alg is never taken from the token)."""
    rkey = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = public_jwk(rkey, "RS256")
    iss.published.append(jwk)
    return jwt.encode(claims(sub), rkey, algorithm="RS256", headers={"kid": jwk["kid"]})


BAD_TOKENS: dict[str, Callable[[Issuer, str], str | None]] = {
    "no token": lambda iss, sub: None,
    "not a jwt": lambda iss, sub: "abc.def",
    "expired": lambda iss, sub: iss.token(sub, exp=int(time.time()) - 3600, iat=int(time.time()) - 7200,
                                          nbf=int(time.time()) - 7200),
    "not yet valid": lambda iss, sub: iss.token(sub, nbf=int(time.time()) + 3600),
    "no exp": lambda iss, sub: iss.token(sub, exp=None),
    "alg none": lambda iss, sub: unsigned({"alg": "none", "typ": "JWT", "kid": iss.kid}, claims(sub)),
    "HS256 with public key": hs256_with_public_key,
    "RS256 key in jwks": rs256_published,
    "wrong issuer": lambda iss, sub: iss.token(sub, iss="https://evil.test"),
    "wrong audience": lambda iss, sub: iss.token(sub, aud="someone-else"),
    "unknown kid": lambda iss, sub: iss.token(sub, key=ec.generate_private_key(ec.SECP256R1()), kid="rotated-away"),
    "known kid, other key": lambda iss, sub: iss.token(sub, key=ec.generate_private_key(ec.SECP256R1())),
    "jku pointing elsewhere": lambda iss, sub: jwt.encode(
        claims(sub), ec.generate_private_key(ec.SECP256R1()), algorithm="ES256",
        headers={"kid": "attacker", "jku": "http://127.0.0.1:1/jwks.json"}),
    "empty sub": lambda iss, sub: iss.token(""),
}


def call(client: TestClient, method: str, path: str, params: dict[str, str], token: str | None,
         scheme: str = "Bearer") -> Any:
    headers = {"Authorization": f"{scheme} {token}"} if token is not None else {}
    return client.request(method, path.format(**PATH_IDS), params=params, headers=headers)


def test_every_route_is_in_the_table(client: TestClient) -> None:
    """Taken from the OpenAPI document (what the app really serves), plus the page."""
    spec = client.get("/openapi.json").json()
    routes = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops} | {("GET", "/")}
    assert client.get("/").status_code == 200
    assert routes == PUBLIC | {(m, p) for m, p, _ in PROTECTED}


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
@pytest.mark.parametrize(("method", "path", "extra"), PROTECTED, ids=[f"{m} {p}" for m, p, _ in PROTECTED])
def test_bad_token_refused(client: TestClient, issuer: Issuer, tenants: Tenants, case: str,
                           method: str, path: str, extra: dict[str, str]) -> None:
    token = BAD_TOKENS[case](issuer, tenants.alice)
    r = call(client, method, path, {"workspace_id": str(tenants.ws_a), **extra}, token)
    assert r.status_code == 401, r.text
    assert r.json() == UNAUTH
    assert r.headers["www-authenticate"] == "Bearer"
    assert "set-cookie" not in r.headers


@pytest.mark.parametrize(("method", "path", "extra"), PROTECTED, ids=[f"{m} {p}" for m, p, _ in PROTECTED])
def test_other_workspace_refused_like_a_missing_one(client: TestClient, issuer: Issuer, tenants: Tenants,
                                                     method: str, path: str, extra: dict[str, str]) -> None:
    token = issuer.token(tenants.alice, workspace_id=str(tenants.ws_a))
    other = call(client, method, path, {"workspace_id": str(tenants.ws_b), **extra}, token)
    missing = call(client, method, path, {"workspace_id": "00000000-0000-4000-8000-000000000000", **extra}, token)
    assert (other.status_code, other.json()) == (403, FORBIDDEN)
    assert (missing.status_code, missing.json()) == (403, FORBIDDEN)
    assert str(tenants.ws_b) not in other.text and "Shop B" not in other.text


@pytest.mark.parametrize(("method", "path", "extra"), [p for p in PROTECTED if p[1] != "/stream"],
                         ids=[f"{m} {p}" for m, p, _ in PROTECTED if p != "/stream"])
def test_valid_token_accepted(client: TestClient, issuer: Issuer, tenants: Tenants,
                              method: str, path: str, extra: dict[str, str]) -> None:
    """The positive control: the same call with a good token for the caller's own
    workspace succeeds (so the refusals above are about the token, not the request)."""
    r = call(client, method, path, {"workspace_id": str(tenants.ws_a), **extra}, issuer.token(tenants.alice))
    assert r.status_code == ACCEPTED_STATUS.get((method, path), 200), r.text


def test_workspace_defaults_to_token_claim(client: TestClient, issuer: Issuer, tenants: Tenants) -> None:
    r = client.get("/dashboard", headers={"Authorization": f"Bearer {issuer.token(tenants.bob, workspace_id=str(tenants.ws_b))}"})
    assert r.status_code == 200
    assert r.json()["workspace"] == {"id": str(tenants.ws_b), "name": "Shop B", "timezone": "UTC", "role": "viewer"}


def test_wrong_scheme_refused(client: TestClient, issuer: Issuer, tenants: Tenants) -> None:
    r = call(client, "GET", "/dashboard", {"workspace_id": str(tenants.ws_a)}, issuer.token(tenants.alice), "Basic")
    assert (r.status_code, r.json()) == (401, UNAUTH)


def test_key_rotation_refetches_jwks_once(client: TestClient, issuer: Issuer, tenants: Tenants) -> None:
    """A token signed by a newly published key is accepted after one refetch; an
    unknown kid does not make the server fetch any URL but the configured one."""
    params = {"workspace_id": str(tenants.ws_a)}
    assert call(client, "GET", "/entities", params, issuer.token(tenants.alice)).status_code == 200
    before = issuer.hits
    new_key = ec.generate_private_key(ec.SECP256R1())
    jwk = public_jwk(new_key, "ES256")
    issuer.published.append(jwk)
    r = call(client, "GET", "/entities", params, issuer.token(tenants.alice, key=new_key, kid=jwk["kid"]))
    assert r.status_code == 200
    assert issuer.hits == before + 1
    assert call(client, "GET", "/entities", params, issuer.token(tenants.alice)).status_code == 200
    assert issuer.hits == before + 1  # known kid: served from the cache


def test_stream_token_bound_to_its_workspace(client: TestClient, issuer: Issuer, tenants: Tenants) -> None:
    r = call(client, "POST", "/stream/token", {"workspace_id": str(tenants.ws_a)}, issuer.token(tenants.alice))
    assert r.status_code == 200
    body = r.json()
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/stream" in cookie
    # A stream token never works as an API bearer token ...
    assert call(client, "GET", "/dashboard", {"workspace_id": str(tenants.ws_a)}, body["token"]).status_code == 401
    # ... nor for another workspace, even one its user could not read anyway.
    r2 = client.get("/stream", params={"workspace_id": str(tenants.ws_b), "token": body["token"]})
    assert (r2.status_code, r2.json()) == (403, FORBIDDEN)


@pytest.mark.parametrize("case", ["wrong secret", "expired", "main-issuer token as stream token"])
def test_bad_stream_token_refused(client: TestClient, issuer: Issuer, tenants: Tenants, case: str) -> None:
    now = int(time.time())
    base = {"aud": "metricx-stream", "sub": tenants.alice, "workspace_id": str(tenants.ws_a), "iat": now,
            "exp": now + 60}
    token = {
        "wrong secret": jwt.encode(base, "not-the-server-secret-0123456789abc", algorithm="HS256"),
        "expired": jwt.encode({**base, "exp": now - 10}, "test-stream-secret-0123456789abcdef", algorithm="HS256"),
        "main-issuer token as stream token": issuer.token(tenants.alice, workspace_id=str(tenants.ws_a)),
    }[case]
    r = client.get("/stream", params={"workspace_id": str(tenants.ws_a), "token": token})
    assert (r.status_code, r.json()) == (401, UNAUTH)


@pytest.mark.parametrize(("path", "params"), [
    ("/dashboard", {"timeframe": "bad", "workspace_id": "nope"}),
    ("/analytics/timeseries", {}),
    ("/stream", {"workspace_id": "nope"}),
])
def test_authentication_comes_before_validation(client: TestClient, path: str, params: dict[str, str]) -> None:
    """Without a token even a malformed request gets the plain 401, not a 422 that
    would describe the API's parameters to an anonymous caller."""
    r = client.get(path, params=params)
    assert (r.status_code, r.json()) == (401, UNAUTH)

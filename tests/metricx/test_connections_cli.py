"""`metricx connections add|status|rotate-key` as real processes against a fresh database."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psycopg

from adapters import connections_store as store
from adapters.crypto import Keyring, generate_key
from ground.settings import REPO_ROOT
from tests.integration.conftest import database, services  # noqa: F401  (fixtures)

WS = "7b0c5a0e-8a51-4d43-9a52-3c5f2f0e7a10"
K1, K2 = generate_key(), generate_key()


def run(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "metricx.cli", *args], input=stdin, capture_output=True,
                          text=True, env=env, cwd=REPO_ROOT, timeout=60)


def test_add_status_rotate(database: str) -> None:  # noqa: F811
    env = {**os.environ, "METRICX_DATABASE_URL": database, "METRICX_TOKEN_KEYS": f"old:{K1}"}
    tokens = json.dumps({"developer_token": "devSECRET1", "access_token": "ya29.SECRETtoken"})
    added = run(env, "connections", "add", "--workspace", WS, "--provider", "google", "--account-id", "1234567890",
                "--login-customer-id", "999", "--display-name", "Shop DE", stdin=tokens)
    assert added.returncode == 0, added.stderr
    assert "SECRET" not in added.stdout + added.stderr
    # A bare Google access token expires within the hour: said on add and in the status.
    assert "warning" in added.stderr and "refresh_token" in added.stderr

    bad = run(env, "connections", "add", "--workspace", WS, "--provider", "meta", "--account-id", "1",
              stdin=json.dumps({"access_token": "EAAxSECRETx", "unexpected": 1}))
    assert bad.returncode == 2 and "tokens" in bad.stderr and "SECRET" not in bad.stderr

    status = run(env, "connections", "status", "--workspace", WS, "--json")
    assert status.returncode == 0, status.stderr
    rows = json.loads(status.stdout)
    assert [(r["provider"], r["account_id"], r["display_name"], r["status"], r["token_key_id"]) for r in rows] == [
        ("google", "1234567890", "Shop DE", "active", "old")]
    assert "SECRET" not in status.stdout and "expires" in rows[0]["credential_note"]

    table = run(env, "connections", "status")
    assert table.returncode == 0 and table.stdout.splitlines()[0].startswith("workspace_id\tprovider\taccount_id")
    assert f"{WS}\tgoogle\t1234567890\tShop DE\tactive" in table.stdout and "SECRET" not in table.stdout

    env2 = {**env, "METRICX_TOKEN_KEYS": f"old:{K1},new:{K2}", "METRICX_TOKEN_KEY_ID": "new"}
    rotated = run(env2, "connections", "rotate-key")
    assert rotated.returncode == 0 and "re-encrypted 1 " in rotated.stdout, rotated.stderr
    with psycopg.connect(database) as conn:
        c = store.get(conn, Keyring.parse(f"new:{K2}", None), WS, "google", "1234567890")
    assert c is not None and c.tokens["access_token"] == "ya29.SECRETtoken" and c.login_customer_id == "999"

    nokeys = run({**env, "METRICX_TOKEN_KEYS": ""}, "connections", "rotate-key")
    assert nokeys.returncode == 2 and "METRICX_TOKEN_KEYS" in nokeys.stderr

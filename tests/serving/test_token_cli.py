"""``metricx token`` as a real process, and the dev issuer end to end through the API."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from fastapi.testclient import TestClient

from ground.settings import REPO_ROOT, DatabaseSettings, ServingSettings, Settings
from serving.app import create_app


def run_token(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "metricx.cli", "token", *args], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)


def test_refused_without_dev_issuer(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("METRICX_DEV_ISSUER")}
    env["METRICX_AUTH_JWKS_URL"] = "https://issuer.example/jwks.json"
    r = run_token(env, "--user", "u1", "--workspace", str(uuid.uuid4()))
    assert r.returncode == 2
    assert "METRICX_DEV_ISSUER" in r.stderr and r.stdout == ""


def test_dev_token_opens_the_granted_workspace_only(services: Settings, database: str, tmp_path: Path) -> None:
    ws, other = uuid.uuid4(), uuid.uuid4()
    env = {**os.environ, "METRICX_DEV_ISSUER": "1", "METRICX_DEV_ISSUER_DIR": str(tmp_path / "dev"),
           "METRICX_DATABASE_URL": database}
    bad = run_token(env, "--user", "u1", "--workspace", "nope")
    assert bad.returncode == 2 and "UUID" in bad.stderr
    r = run_token(env, "--user", "demo-user", "--workspace", str(ws), "--grant", "owner",
                  "--timezone", "Asia/Kathmandu", "--name", "Demo")
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    key_files = list((tmp_path / "dev").iterdir())
    assert len(key_files) == 1 and oct(key_files[0].stat().st_mode & 0o777) == "0o600"
    app = create_app(Settings(database=DatabaseSettings(url=database), redis=services.redis,
                              serving=ServingSettings(dev_issuer=True, dev_issuer_dir=tmp_path / "dev",
                                                      auth_jwks_url=None)))
    with TestClient(app) as c:
        h = {"Authorization": f"Bearer {token}"}
        ok = c.get("/dashboard", headers=h)
        assert ok.status_code == 200, ok.text
        assert ok.json()["workspace"] == {"id": str(ws), "name": "Demo", "timezone": "Asia/Kathmandu",
                                          "role": "owner"}
        assert c.get("/dashboard", params={"workspace_id": str(other)}, headers=h).status_code == 403
    # A token minted by another dev key (another machine's) is not accepted.
    env2 = {**env, "METRICX_DEV_ISSUER_DIR": str(tmp_path / "dev2")}
    foreign = run_token(env2, "--user", "demo-user", "--workspace", str(ws)).stdout.strip()
    with TestClient(app) as c:
        assert c.get("/dashboard", headers={"Authorization": f"Bearer {foreign}"}).status_code == 401

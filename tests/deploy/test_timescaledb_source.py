"""``deploy/timescaledb.sh source``: where ``make setup`` takes TimescaleDB's source from,
and what it checks.  The script runs for real (bash, tar, curl); the "upstream" is a
local HTTP server serving archives made here, so no test needs the network.

The script is copied into a scratch checkout (``<tmp>/repo/deploy/``) so the vendored
location it looks at, ``<tmp>/shared/vendor/``, belongs to the test.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import shutil
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ground.settings import REPO_ROOT

SCRIPT = REPO_ROOT / "deploy" / "timescaledb.sh"
VERSION = "2.28.3"
ARCHIVE = f"timescaledb-{VERSION}.tar.gz"


def _sha256_in_script() -> str:
    for line in SCRIPT.read_text().splitlines():
        if line.startswith("SHA256="):
            return line.split("=", 1)[1]
    raise AssertionError("no SHA256= line in deploy/timescaledb.sh")


def _vendor_readme_sha256() -> str | None:
    """The checksum the vendor README records, read independently of the script."""
    archive = real_archive()
    for readme in (REPO_ROOT.parent / "shared" / "vendor" / "README.md",
                   *([archive.parent / "README.md"] if archive else [])):
        if readme.exists():
            for line in readme.read_text().splitlines():
                if ARCHIVE in line and "|" in line:
                    return line.rstrip(" |").rsplit("|", 1)[-1].strip(" `")
    return None


def real_archive() -> Path | None:
    for p in (os.environ.get("TIMESCALEDB_SOURCE"), REPO_ROOT.parent / "shared" / "vendor" / ARCHIVE):
        if p and Path(p).is_file():
            return Path(p)
    return None


def source_tarball(version: str, top: str = f"timescaledb-{VERSION}") -> bytes:
    """A tar.gz shaped like the GitHub tag tarball: one top folder, version.config."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in (
            ("version.config", f"version = {version}\nprevious_version = 2.28.2\n"),
            ("CMakeLists.txt", "# not built by these tests\n"),
        ):
            data = text.encode()
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A scratch repo with the script, and its (empty) ../shared/vendor/."""
    repo = tmp_path / "repo"
    (repo / "deploy").mkdir(parents=True)
    shutil.copy(SCRIPT, repo / "deploy" / "timescaledb.sh")
    (tmp_path / "shared" / "vendor").mkdir(parents=True)
    return repo


class Upstream:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        upstream = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                upstream.requests.append(self.path)
                body = upstream.files.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    up = Upstream()
    t = threading.Thread(target=up.server.serve_forever, daemon=True)
    t.start()
    yield up
    up.server.shutdown()
    up.server.server_close()


def run(repo: Path, *args: str | Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TIMESCALEDB_")}
    return subprocess.run(
        ["bash", str(repo / "deploy" / "timescaledb.sh"), *(str(a) for a in args)],
        env={**base, **env}, capture_output=True, text=True, timeout=120,
    )


def fake_postgres(tmp_path: Path) -> Path:
    """A PostgreSQL bin folder whose pg_config points at folders of this test."""
    bin_dir, share, lib = tmp_path / "pg" / "bin", tmp_path / "pg" / "share", tmp_path / "pg" / "lib"
    for d in (bin_dir, share / "extension", lib):
        d.mkdir(parents=True)
    pg_config = bin_dir / "pg_config"
    pg_config.write_text(
        "#!/bin/sh\ncase $1 in\n"
        f"  --sharedir) echo {share} ;;\n  --pkglibdir) echo {lib} ;;\n"
        "  --version) echo 'PostgreSQL 15.99' ;;\n  *) exit 1 ;;\nesac\n"
    )
    pg_config.chmod(0o755)
    return bin_dir


def test_the_script_checks_the_checksum_the_vendor_readme_records() -> None:
    recorded = _vendor_readme_sha256()
    if recorded is None:
        pytest.skip("no ../shared/vendor/README.md next to this checkout")
    assert _sha256_in_script() == recorded


def test_a_source_archive_with_other_bytes_is_refused_naming_the_variable(checkout: Path, tmp_path: Path) -> None:
    fake = tmp_path / ARCHIVE
    fake.write_bytes(source_tarball(VERSION))  # right version, not the vendored bytes
    r = run(checkout, "source", tmp_path / "src", TIMESCALEDB_SOURCE=str(fake))
    assert r.returncode == 1, r.stderr
    assert "TIMESCALEDB_SOURCE" in r.stderr and hashlib.sha256(fake.read_bytes()).hexdigest() in r.stderr
    assert not (tmp_path / "src" / "version.config").exists()


def test_a_missing_source_file_is_an_error_naming_the_variable(checkout: Path, tmp_path: Path) -> None:
    r = run(checkout, "source", tmp_path / "src", TIMESCALEDB_SOURCE=str(tmp_path / "nowhere.tar.gz"))
    assert r.returncode == 1
    assert "TIMESCALEDB_SOURCE" in r.stderr and "nowhere.tar.gz" in r.stderr


def test_the_vendored_archive_is_found_next_to_the_checkout_and_checked(checkout: Path, tmp_path: Path,
                                                                        upstream: Upstream) -> None:
    (tmp_path / "shared" / "vendor" / ARCHIVE).write_bytes(source_tarball(VERSION))
    r = run(checkout, "source", tmp_path / "src", TIMESCALEDB_URL=upstream.url + "/tag.tar.gz")
    assert r.returncode == 1, r.stderr
    assert "vendored archive" in r.stderr and "sha256" in r.stderr
    assert upstream.requests == []  # a vendored archive is never bypassed for a download


def test_the_real_archive_unpacks_as_the_pinned_version(checkout: Path, tmp_path: Path) -> None:
    archive = real_archive()
    if archive is None:
        pytest.skip("no TimescaleDB source archive (TIMESCALEDB_SOURCE or ../shared/vendor/)")
    shutil.copy(archive, tmp_path / "shared" / "vendor" / ARCHIVE)
    r = run(checkout, "source", tmp_path / "src")
    assert r.returncode == 0, r.stderr
    assert f"version = {VERSION}" in (tmp_path / "src" / "version.config").read_text()
    assert (tmp_path / "src" / "tsl").is_dir()  # the community features' sources


def test_a_download_of_the_right_version_is_taken(checkout: Path, tmp_path: Path, upstream: Upstream) -> None:
    upstream.files["/tag.tar.gz"] = source_tarball(VERSION)
    r = run(checkout, "source", tmp_path / "src", TIMESCALEDB_URL=upstream.url + "/tag.tar.gz")
    assert r.returncode == 0, r.stderr
    assert upstream.requests == ["/tag.tar.gz"]
    assert f"version = {VERSION}" in (tmp_path / "src" / "version.config").read_text()


def test_a_download_of_another_version_is_refused(checkout: Path, tmp_path: Path, upstream: Upstream) -> None:
    upstream.files["/tag.tar.gz"] = source_tarball("2.29.0", top="timescaledb-2.29.0")
    r = run(checkout, "source", tmp_path / "src", TIMESCALEDB_URL=upstream.url + "/tag.tar.gz")
    assert r.returncode == 1
    assert "2.29.0" in r.stderr and VERSION in r.stderr


def test_no_source_reachable_says_what_to_set_and_is_not_an_error_of_setup(checkout: Path, tmp_path: Path,
                                                                          upstream: Upstream) -> None:
    r = run(checkout, "source", tmp_path / "src", TIMESCALEDB_URL=upstream.url + "/missing.tar.gz")  # a 404: offline
    assert r.returncode == 4  # `install` turns this into a warning and exit 0
    assert "TIMESCALEDB_SOURCE" in r.stderr and "plain PostgreSQL" in r.stderr
    assert upstream.requests == ["/missing.tar.gz"]


def test_install_without_a_source_warns_and_leaves_plain_postgresql_working(checkout: Path, tmp_path: Path,
                                                                           upstream: Upstream) -> None:
    pg_bin = fake_postgres(tmp_path)
    r = run(checkout, "install", POSTGRES_BIN=str(pg_bin), TIMESCALEDB_URL=upstream.url + "/missing.tar.gz")
    assert r.returncode == 0, r.stderr  # `make setup` goes on
    assert "TIMESCALEDB_SOURCE" in r.stderr
    assert run(checkout, "status", POSTGRES_BIN=str(pg_bin)).returncode == 3


def test_an_installed_extension_is_used_as_is(checkout: Path, tmp_path: Path, upstream: Upstream) -> None:
    pg_bin = fake_postgres(tmp_path)
    share, lib = tmp_path / "pg" / "share", tmp_path / "pg" / "lib"
    (share / "extension" / "timescaledb.control").write_text("default_version = '2.28.1'\n")
    for so in ("timescaledb.so", "timescaledb-2.28.1.so"):
        (lib / so).write_bytes(b"")
    r = run(checkout, "install", POSTGRES_BIN=str(pg_bin), TIMESCALEDB_URL=upstream.url + "/tag.tar.gz")
    assert r.returncode == 0, r.stderr
    assert "2.28.1" in r.stdout and "nothing to do" in r.stdout
    assert upstream.requests == []  # nothing fetched, nothing built
    status = run(checkout, "status", POSTGRES_BIN=str(pg_bin))
    assert (status.returncode, status.stdout.strip()) == (0, "2.28.1")


def test_the_pinned_release_built_without_our_patches_is_rebuilt(checkout: Path, tmp_path: Path,
                                                                 upstream: Upstream) -> None:
    """Without deploy/timescaledb-patches, every background job fails on PostgreSQL 15.20:
    a 2.28.3 installed some other way is not 'used as is'."""
    shutil.copytree(SCRIPT.parent / "timescaledb-patches", checkout / "deploy" / "timescaledb-patches")
    pg_bin = fake_postgres(tmp_path)
    share, lib = tmp_path / "pg" / "share", tmp_path / "pg" / "lib"
    (share / "extension" / "timescaledb.control").write_text(f"default_version = '{VERSION}'\n")
    for so in ("timescaledb.so", f"timescaledb-{VERSION}.so"):
        (lib / so).write_bytes(b"")
    status = run(checkout, "status", POSTGRES_BIN=str(pg_bin))
    assert status.returncode == 3 and "patches" in status.stdout
    r = run(checkout, "install", POSTGRES_BIN=str(pg_bin), TIMESCALEDB_URL=upstream.url + "/missing.tar.gz")
    assert "rebuilding" in r.stdout
    assert upstream.requests == ["/missing.tar.gz"]  # it went for the source (and found none)


def test_the_patches_apply_to_the_real_archive(checkout: Path, tmp_path: Path) -> None:
    archive = real_archive()
    if archive is None:
        pytest.skip("no TimescaleDB source archive (TIMESCALEDB_SOURCE or ../shared/vendor/)")
    shutil.copytree(SCRIPT.parent / "timescaledb-patches", checkout / "deploy" / "timescaledb-patches")
    r = run(checkout, "source", tmp_path / "src", TIMESCALEDB_SOURCE=str(archive))
    assert r.returncode == 0, r.stderr
    assert "patched: 0001-bgw-job-portal-done.patch" in r.stdout
    assert "portal->status = PORTAL_DONE;" in (tmp_path / "src" / "tsl/src/bgw_policy/job.c").read_text()

"""Fixtures for tests that need a real TimescaleDB: the PGlite/WASM build served by
``deploy/timescale-lite/server.mjs`` (install it once with ``make tslite-install``).

One server per test session, shared by every test that asks for ``tslite_dsn``:
tests must use their own table/schema names, and must close each connection before
opening the next (the server serves one connection at a time). Set ``TSLITE_DSN``
to run these tests against an already running server (e.g. a real TimescaleDB).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.timescale.tslite import running_tslite


@pytest.fixture(scope="session")
def tslite_dsn() -> Iterator[str]:
    external = os.environ.get("TSLITE_DSN")
    if external:
        yield external
        return
    with running_tslite() as dsn:
        yield dsn

"""Fixtures for tests that need TimescaleDB (marker ``timescale``): the services'
PostgreSQL 15 with TimescaleDB 2.28 preloaded (``make setup`` builds it,
``deploy/services.sh`` preloads it).  Each test module migrates databases of its own.

A server without a usable TimescaleDB fails these tests with what to change, never
skips them, unless the plain lane was asked for: ``METRICX_TIMESCALEDB=off make test``
runs every other test on plain PostgreSQL and skips these.
"""

from __future__ import annotations

import pytest

from adapters.timescale import check_reachable
from ground.settings import load_settings
from tests.databases import timescale_problem


@pytest.fixture(scope="session")
def timescale_admin_url() -> str:
    """The libpq URL of the services' database, on a server that can give new databases
    the TimescaleDB flavour."""
    settings = load_settings()
    if settings.database.timescaledb == "off":
        pytest.skip("METRICX_TIMESCALEDB=off: the plain-PostgreSQL lane leaves TimescaleDB out")
    try:
        check_reachable(settings.database.libpq_url)
    except ConnectionError as exc:
        pytest.fail(f"{exc}\n(these tests need the real services: `make services-up`, or run `make test`)")
    problem = timescale_problem(settings.database.libpq_url)
    if problem:
        pytest.fail(problem)
    return settings.database.libpq_url

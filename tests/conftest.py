"""Markers by what a test needs, from the fixtures it uses (transitively), so nobody has
to remember them: ``make test-unit`` runs ``-m "not services and not timescale and not
browser and not faults"`` with every service down.

* ``services``: the real Kafka, PostgreSQL and Redis (the ``services`` fixture, which
  ``database``, ``topics``, ``pipeline``, the serving fixtures... all use);
* ``timescale``: TimescaleDB preloaded (``timescale_admin_url``, or a ``database``
  parametrized to the ``timescaledb`` flavour);
* ``browser``: Debian's chromium (``browser``);
* ``faults``: the fault suite's own services (``fault_services``).
"""

from __future__ import annotations

import pytest

NEEDS: dict[str, str] = {
    "services": "services",
    "timescale_admin_url": "timescale",
    "browser": "browser",
    "fault_services": "faults",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        for fixture, marker in NEEDS.items():
            if fixture in names:
                item.add_marker(marker)
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("database") == "timescaledb":
            item.add_marker("timescale")

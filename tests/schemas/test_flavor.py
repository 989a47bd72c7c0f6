"""The flavour decision: what ``METRICX_TIMESCALEDB`` gives on a server in each state.

The case that used to break: the extension's files installed, the server started without
``shared_preload_libraries`` (``CREATE EXTENSION`` then fails with "must be preloaded").
"""

from __future__ import annotations

import pytest

from schemas.flavor import ServerFacts, TimescaleUnavailable, choose

NOTHING = ServerFacts(installed=False, available=False, preloaded=False)
FILES_ONLY = ServerFacts(installed=False, available=True, preloaded=False)
READY = ServerFacts(installed=False, available=True, preloaded=True)
IN_USE = ServerFacts(installed=True, available=True, preloaded=True)


def test_auto_takes_timescaledb_only_when_the_server_preloads_it() -> None:
    assert choose("auto", READY).timescale
    assert choose("auto", IN_USE).timescale
    assert not choose("auto", NOTHING).timescale


def test_auto_on_a_server_without_the_preload_falls_back_and_says_what_to_change() -> None:
    flavour = choose("auto", FILES_ONLY)
    assert not flavour.timescale
    assert flavour.note is not None and "shared_preload_libraries" in flavour.note


def test_on_refuses_with_the_change_to_make() -> None:
    with pytest.raises(TimescaleUnavailable, match="shared_preload_libraries"):
        choose("on", FILES_ONLY)
    with pytest.raises(TimescaleUnavailable, match="make setup"):
        choose("on", NOTHING)
    assert choose("on", READY).timescale


def test_off_is_plain_whatever_the_server_has() -> None:
    for facts in (NOTHING, FILES_ONLY, READY, IN_USE):
        assert not choose("off", facts).timescale

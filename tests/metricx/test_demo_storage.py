"""``make demo`` says which storage its database runs on, and what to change when it is
plain PostgreSQL although TimescaleDB could be used."""

from __future__ import annotations

from metricx.demo import storage_line


def test_timescaledb_is_named_with_its_version() -> None:
    assert storage_line("2.28.3", True, "auto").startswith("TimescaleDB 2.28.3")


def test_plain_by_choice_says_so() -> None:
    assert "METRICX_TIMESCALEDB=off" in storage_line(None, True, "off")


def test_a_database_older_than_the_extension_says_how_to_start_over() -> None:
    line = storage_line(None, True, "auto")
    assert line.startswith("plain PostgreSQL") and "make clean" in line


def test_no_extension_says_how_to_get_it() -> None:
    line = storage_line(None, False, "auto")
    assert line.startswith("plain PostgreSQL") and "make setup" in line

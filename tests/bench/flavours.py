"""The storage flavours a benchmark runs on in one run, and their figures side by side.

Every figure that involves the database is measured on TimescaleDB and on plain
PostgreSQL: two databases on the same server (the flavour is per database), measured
one after the other, so what the hypertables, their chunk routing and the continuous
aggregates' invalidation logs cost is the ratio of two figures of the same run on the
same machine.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from ground.settings import Settings
from tests.databases import FLAVOURS, timescale_problem

LABELS = {"timescaledb": "TimescaleDB", "postgresql": "PostgreSQL"}


def add_argument(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--flavours", default="timescaledb,postgresql",
                    help="storage flavours to measure, in this order (timescaledb, postgresql)")


def chosen(settings: Settings, arg: str) -> list[str]:
    """The flavours asked for that this server can give; TimescaleDB is left out, with
    the reason, when the server cannot (the plain figures still come)."""
    out = []
    for f in (x.strip() for x in arg.split(",") if x.strip()):
        if f not in FLAVOURS:
            raise SystemExit(f"--flavours: unknown flavour {f!r} (timescaledb, postgresql)")
        if f == "timescaledb" and (problem := timescale_problem(settings.database.libpq_url)):
            print(f"TimescaleDB left out: {problem}", flush=True)
            continue
        out.append(f)
    if not out:
        raise SystemExit("--flavours: nothing to measure")
    return out


def mode(flavour: str) -> str:
    """The METRICX_TIMESCALEDB value that migrates a database into ``flavour``."""
    return FLAVOURS[flavour]


Value = float | None


def side_by_side(title: str, rows: Sequence[tuple[str, dict[str, Value]]], flavours: Sequence[str],
                 fmt: Callable[[float], str] = lambda v: f"{v:,.0f}") -> str:
    """``rows``: (figure, {flavour: value}); a last column TimescaleDB / PostgreSQL when
    both were measured."""
    both = "timescaledb" in flavours and "postgresql" in flavours
    width = max([len(r[0]) for r in rows] + [len(title)])
    head = f"  {title:<{width}}" + "".join(f"{LABELS[f]:>14}" for f in flavours) + ("    TS / PG" if both else "")
    lines = [head]
    for name, values in rows:
        cells = "".join(f"{fmt(v):>14}" if (v := values.get(f)) is not None else f"{'—':>14}" for f in flavours)
        ratio = ""
        if both:
            ts, pg = values.get("timescaledb"), values.get("postgresql")
            ratio = f"{ts / pg:>11.2f}" if ts is not None and pg else f"{'—':>11}"
        lines.append(f"  {name:<{width}}{cells}{ratio}")
    return "\n".join(lines)

"""Run the Alembic migrations programmatically (``metricx migrate``, tests, the demo)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, pool

from schemas.flavor import timescale_installed

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str, timescaledb: str = "auto") -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["timescaledb"] = timescaledb
    return cfg


def upgrade(sqlalchemy_url: str, timescaledb: str = "auto", revision: str = "heads") -> str:
    """Migrate to ``revision``; returns the flavour in use ("timescaledb" or "postgresql")."""
    engine = create_engine(sqlalchemy_url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            cfg = alembic_config(sqlalchemy_url, timescaledb)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
            conn.commit()
            return "timescaledb" if timescale_installed(conn) else "postgresql"
    finally:
        engine.dispose()


def downgrade(sqlalchemy_url: str, revision: str = "base") -> None:
    engine = create_engine(sqlalchemy_url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            cfg = alembic_config(sqlalchemy_url)
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, revision)
            conn.commit()
    finally:
        engine.dispose()

"""Alembic environment: runs the migrations on the connection ``schemas.migrate`` gives."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine, pool

config = context.config
connection = config.attributes.get("connection")


def _run(conn: Connection) -> None:
    context.configure(connection=conn, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


if connection is not None:
    _run(connection)
else:
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "", poolclass=pool.NullPool)
    with engine.connect() as conn:
        _run(conn)

"""Alembic environment: the URL comes from the caller (`ledgerq init`), never from a file."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from ledgerq.shared.schema import metadata

url = context.config.get_main_option("sqlalchemy.url")
if not url:
    raise RuntimeError("no sqlalchemy.url: run the migrations with `ledgerq init`")
engine = create_engine(url)
with engine.begin() as connection:
    # One migrator at a time: two `ledgerq init` racing must not both create tables.
    connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7171001)")
    context.configure(connection=connection, target_metadata=metadata)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()

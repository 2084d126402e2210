"""Engines and the facts fixed at `ledgerq init` (P)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import psycopg
from psycopg.rows import namedtuple_row
from psycopg.types.json import set_json_loads
from sqlalchemy import Connection, Engine, create_engine, select, text
from sqlalchemy.dialects.postgresql import insert

from ledgerq.shared.errors import ConfigurationError
from ledgerq.shared.schema import ledger_config, partitions
from ledgerq.shared.settings import Settings

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def make_engine(settings: Settings, *, pool_size: int | None = None, **connect_args: Any) -> Engine:
    size = pool_size if pool_size is not None else settings.db_pool_size
    return create_engine(
        settings.sqlalchemy_url,
        pool_size=size,
        # No overflow: a connection opened past the pool is closed on return, and under load that
        # churn (a Postgres backend forked per checkout) costs more than waiting for a pooled one.
        max_overflow=0,
        pool_pre_ping=True,
        pool_recycle=1800,
        # Keepalives and a TCP user timeout: a silently dropped network fails a query in seconds
        # instead of hanging it (and the partition) for the kernel's default of many minutes.
        connect_args={
            "connect_timeout": 5,
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 3,
            "tcp_user_timeout": 10_000,
            **connect_args,
        },
    )


def driver_cursor(conn: Connection) -> psycopg.Cursor[Any]:
    """The driver's cursor inside SQLAlchemy's transaction, rows as named tuples, JSON read by orjson.

    For the hot paths' fixed statements: SQLAlchemy's per-statement compile-cache lookup and result
    wrapping cost more than the statement on rounds of one or two commands."""
    driver: psycopg.Connection[Any] = conn.connection.driver_connection  # type: ignore[assignment]
    cursor = driver.cursor(row_factory=namedtuple_row)
    set_json_loads(_json_loads, cursor)
    return cursor


def _json_loads(data: bytes | str) -> Any:
    """orjson, or the standard library for what orjson refuses (a number beyond a double, which
    jsonb's numeric keeps), so a stored document reads back as before."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def migrate(settings: Settings) -> None:
    """Create or migrate the schema to the newest revision (Alembic)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", settings.sqlalchemy_url.replace("%", "%%"))
    command.upgrade(config, "head")


def fix_partitions(engine: Engine, wanted: int) -> int:
    """Store P on first run; refuse another P later. Returns the stored P."""
    with engine.begin() as conn:
        conn.execute(insert(ledger_config).values(key="partitions", value=str(wanted)).on_conflict_do_nothing())
        stored = int(
            conn.execute(select(ledger_config.c.value).where(ledger_config.c.key == "partitions")).scalar_one()
        )
        if stored != wanted:
            raise ConfigurationError(
                f"this database was initialised with {stored} partitions; LEDGERQ_PARTITIONS={wanted} "
                "would reroute accounts. Set LEDGERQ_PARTITIONS to the stored value."
            )
        conn.execute(insert(partitions).values([{"partition": p} for p in range(stored)]).on_conflict_do_nothing())
    return stored


def check_partitions(engine: Engine, wanted: int) -> None:
    """API and workers refuse to run with a P other than the one stored at init."""
    with engine.connect() as conn:
        stored = conn.execute(
            select(ledger_config.c.value).where(ledger_config.c.key == "partitions")
        ).scalar_one_or_none()
    if stored is None:
        raise ConfigurationError("the database is not initialised: run `ledgerq init` first")
    if int(stored) != wanted:
        raise ConfigurationError(
            f"this database was initialised with {stored} partitions but LEDGERQ_PARTITIONS={wanted}"
        )


def ping(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))

"""Migration 0007 on a ledger that already holds applied commands: they stay reversible."""

from __future__ import annotations

import json
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import text

from ledgerq.shared.db import MIGRATIONS_DIR, make_engine
from ledgerq.shared.settings import Settings
from tests.conftest import PARTITIONS, uid


def test_commands_applied_before_0007_get_their_reversible_amount(servers: Any) -> None:
    postgres, redis = servers
    settings = Settings(
        database_url=postgres.create_database(uid("m7").replace("-", "_")), redis_url=redis.url, partitions=PARTITIONS
    )
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", settings.sqlalchemy_url.replace("%", "%%"))
    command.upgrade(config, "0006")
    engine = make_engine(settings, pool_size=1)
    rows = {
        "dep": ("deposit", "applied", {"amount": 700, "currency": "USD"}),
        "tx": (
            "transaction",
            "applied",
            {"currency": "USD", "legs": [{"amount": -90}, {"amount": 60}, {"amount": 30}]},
        ),
        "late": ("withdraw", "queued", {"amount": 5, "currency": "USD"}),
    }
    with engine.begin() as conn:
        for command_id, (kind, status, payload) in rows.items():
            conn.execute(
                text(
                    "INSERT INTO commands (id, payload_hash, type, partition, payload, status, finished_at) VALUES "
                    "(:i, 'h', :t, 0, CAST(:p AS jsonb), :s, CASE WHEN :s = 'queued' THEN NULL ELSE now() END)"
                ),
                {"i": command_id, "t": kind, "p": json.dumps(payload), "s": status},
            )
    command.upgrade(config, "head")
    with engine.connect() as conn:
        found = dict(conn.execute(text("SELECT id, reversible_amount FROM commands")).all())
    engine.dispose()
    assert found == {"dep": 700, "tx": 90, "late": None}

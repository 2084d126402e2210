"""The Citus plan's check (`ledgerq.ops.citus`): every table has a place in it, the README lists
what the schema still lacks, and a schema laid out as the plan asks passes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from ledgerq.ops.citus import DISTRIBUTED, LOCAL, REFERENCE, distribute_sql, gaps
from tests.conftest import uid

README = Path(__file__).resolve().parents[2] / "README.md"

READY = """
CREATE TABLE partitions (partition int PRIMARY KEY, epoch bigint NOT NULL DEFAULT 0);
CREATE TABLE accounts (partition int, id text, balance bigint, PRIMARY KEY (partition, id));
CREATE TABLE commands (partition int, id text, status text, PRIMARY KEY (partition, id));
CREATE TABLE entries (partition int, account_id text, seq bigint, command_id text,
    PRIMARY KEY (partition, account_id, seq), UNIQUE (partition, command_id, account_id),
    FOREIGN KEY (partition, account_id) REFERENCES accounts (partition, id));
CREATE TABLE holds (partition int, id text, account_id text, PRIMARY KEY (partition, id),
    FOREIGN KEY (partition, id) REFERENCES commands (partition, id));
CREATE TABLE events (partition int, id bigint, PRIMARY KEY (partition, id));
CREATE TABLE ledger_config (key text PRIMARY KEY, value text);
CREATE TABLE api_keys (id text PRIMARY KEY);
CREATE TABLE webhooks (id text PRIMARY KEY);
CREATE TABLE audit_log (id bigint PRIMARY KEY);
CREATE TABLE webhook_deliveries (id bigint PRIMARY KEY, webhook_id text REFERENCES webhooks (id), event_id bigint);
"""


def test_every_table_of_the_schema_has_a_place_in_the_plan(engine: Any) -> None:
    found = gaps(engine)
    assert [g.line() for g in found if g.problem == "not in the plan"] == []
    assert set(DISTRIBUTED).isdisjoint(REFERENCE) and set(DISTRIBUTED).isdisjoint(LOCAL)


def test_the_readme_lists_every_change_the_check_finds(engine: Any) -> None:
    """Docs that match the code: README "Scaling out" quotes the check's output line for line."""
    readme = README.read_text()
    found = gaps(engine)
    assert found, "the schema is ready: say so in the README and drop the list"
    assert f"ledgerq on Citus: {len(found)} schema changes before" in readme
    missing = [g.line() for g in found if f"- {g.line()}" not in readme]
    assert missing == [], missing
    for statement in distribute_sql(4):
        assert statement in readme, statement


@pytest.fixture
def scratch_url(servers: Any) -> str:
    postgres, _ = servers
    return str(postgres.create_database(uid("citus").replace("-", "_"))).replace(
        "postgresql://", "postgresql+psycopg://"
    )


def test_a_schema_laid_out_for_citus_passes_and_a_key_without_the_partition_fails(scratch_url: str) -> None:
    engine = create_engine(scratch_url)
    try:
        with engine.begin() as conn:
            conn.execute(text(READY))
        assert gaps(engine) == []
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE commands ADD CONSTRAINT commands_id UNIQUE (id)"))
            conn.execute(text("ALTER TABLE holds ADD FOREIGN KEY (partition, account_id) REFERENCES accounts"))
            conn.execute(text("ALTER TABLE webhook_deliveries ADD FOREIGN KEY (event_id) REFERENCES audit_log"))
            conn.execute(text("ALTER TABLE webhook_deliveries ADD COLUMN p int"))
            conn.execute(text("ALTER TABLE webhook_deliveries ADD FOREIGN KEY (p, event_id) REFERENCES events"))
            conn.execute(text("CREATE TABLE stray (id int PRIMARY KEY)"))
        problems = [g.line() for g in gaps(engine)]
        assert problems == [
            "stray: not in the plan -> classify it: distributed, reference or local",
            "commands: unique commands_id (id) lacks partition -> make it (partition, id), and claim each id also "
            "in a table distributed by it, in the same claim transaction, so a rival payload routed to another "
            "partition still conflicts",
            "webhook_deliveries: a coordinator table's foreign key (p, event_id) -> events -> drop it",
        ], problems
    finally:
        engine.dispose()

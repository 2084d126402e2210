"""Postgres roles: the API's role cannot write the ledger; no service role can rewrite history."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from redis import Redis
from sqlalchemy import create_engine, text
from sqlalchemy.exc import ProgrammingError

from ledgerq.api.context import Context
from ledgerq.api.inprocess import LedgerClient
from ledgerq.shared.settings import Settings
from ledgerq.worker.runner import PartitionRunner
from tests.conftest import uid


def login_as(engine: Any, settings: Settings, group: str) -> Settings:
    user = uid(group).replace("-", "_")
    with engine.begin() as conn:
        conn.execute(text(f'CREATE ROLE "{user}" LOGIN IN ROLE {group}'))
    return settings.model_copy(update={"database_url": settings.database_url.replace("postgres@", f"{user}@")})


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO entries (account_id, seq, command_id, amount, balance_after, counterparty) "
        "VALUES ('a', 1, 'c', 1, 1, 'b')",
        "UPDATE accounts SET balance = balance + 1",
        "UPDATE commands SET status = 'applied', finished_at = now()",
        "UPDATE partitions SET epoch = epoch + 1",
        "DELETE FROM entries",
        "UPDATE entries SET amount = 1",
        "TRUNCATE entries",
        # Webhook secrets are for the webhook process only; deliveries are its to record.
        "SELECT secret FROM webhooks",
        "SELECT * FROM webhooks",
        "INSERT INTO webhook_attempts (delivery_id, n, made_by) VALUES (1, 1, 'x')",
        "UPDATE webhook_deliveries SET attempts = 0",
        "INSERT INTO events (id, type, command_id) VALUES (1, 'command.applied', 'c')",
        "UPDATE audit_log SET status = 200",
        "DELETE FROM reconciliation_items",
    ],
)
def test_the_api_role_cannot_write_the_ledger(engine: Any, settings: Settings, statement: str) -> None:
    api = create_engine(login_as(engine, settings, "ledgerq_api").sqlalchemy_url)
    with pytest.raises(ProgrammingError, match="permission denied"), api.begin() as conn:
        conn.execute(text(statement))
    api.dispose()


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM entries",
        "UPDATE entries SET amount = 1",
        "TRUNCATE entries",
        "INSERT INTO api_keys (id, secret_hash, scope) VALUES ('x', 'y', 'admin')",
        "DELETE FROM audit_log",
        "INSERT INTO webhooks (id, url, events, secret, fanout_cursor) VALUES ('w', 'http://x', '{}', 's', 0)",
        "UPDATE webhooks SET url = 'http://elsewhere'",
        "DELETE FROM webhook_deliveries",
        "INSERT INTO reconciliations (id, source, summary) VALUES ('r', 'api', '{}')",
    ],
)
def test_the_worker_role_cannot_rewrite_history_or_keys(engine: Any, settings: Settings, statement: str) -> None:
    worker = create_engine(login_as(engine, settings, "ledgerq_worker").sqlalchemy_url)
    with pytest.raises(ProgrammingError, match="permission denied"), worker.begin() as conn:
        conn.execute(text(statement))
    worker.dispose()


def test_the_service_runs_with_only_its_roles(engine: Any, settings: Settings) -> None:
    """The grants are enough: the API role accepts a command, the worker role applies it."""
    api_ctx = Context.build(login_as(engine, settings, "ledgerq_api"))
    worker_settings = login_as(engine, settings, "ledgerq_worker")
    client = LedgerClient(api_ctx)
    account = uid("roles")
    with api_ctx.engine.begin() as conn:
        conn.execute(text("INSERT INTO accounts (id, currency) VALUES (:a, 'USD')"), {"a": account})
    command_id = uid("c")
    done = client.submit({"id": command_id, "type": "deposit", "account_id": account, "amount": 3, "currency": "USD"})
    stop = threading.Event()
    worker_engine = create_engine(worker_settings.sqlalchemy_url)
    runner = PartitionRunner(done.partition, worker_settings, worker_engine, Redis.from_url(settings.redis_url), stop)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        row = client.wait(command_id, 30)
        assert row is not None and row["status"] == "applied"
    finally:
        stop.set()
        thread.join(timeout=10)
        worker_engine.dispose()
        api_ctx.close()

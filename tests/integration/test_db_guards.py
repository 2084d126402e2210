"""The database refuses bad rows by itself: raw SQL that bypasses ledgerq's code."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError

from shared.schema import metadata
from tests.conftest import uid


def seed(conn: Any, balance: int = 0) -> tuple[str, str, str]:
    """An account with one applied deposit, written by hand."""
    account, world, command = uid("raw"), "@world:USD:raw", uid("cmd")
    conn.execute(
        text("INSERT INTO accounts (id, currency, kind) VALUES (:w, 'USD', 'system') ON CONFLICT DO NOTHING"),
        {"w": world},
    )
    conn.execute(text("INSERT INTO accounts (id, currency) VALUES (:a, 'USD')"), {"a": account})
    conn.execute(
        text("INSERT INTO commands (id, payload_hash, type, partition, payload) VALUES (:c, 'h', 'deposit', 0, '{}')"),
        {"c": command},
    )
    if balance:
        conn.execute(
            text(
                "INSERT INTO entries (account_id, seq, command_id, amount, balance_after, counterparty) "
                "VALUES (:a, 1, :c, :n, :n, :w), (:w, (SELECT coalesce(max(seq), 0) + 1 FROM entries "
                "WHERE account_id = :w), :c, -:n, 0, :a)"
            ),
            {"a": account, "c": command, "n": balance, "w": world},
        )
    return account, world, command


def test_schema_matches_the_migrations(scratch_engine: Any) -> None:
    """The tables the code describes are exactly the ones Alembic created."""
    with scratch_engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE entries SET amount = amount + 1 WHERE account_id = :a",
        "DELETE FROM entries WHERE account_id = :a",
        "TRUNCATE entries CASCADE",
    ],
)
def test_entries_cannot_be_changed_or_removed(scratch_engine: Any, statement: str) -> None:
    """Invariant 5: history is immutable, whoever asks."""
    with scratch_engine.begin() as conn:
        account, _, _ = seed(conn, balance=100)
    with pytest.raises(DBAPIError, match="immutable"), scratch_engine.begin() as conn:
        conn.execute(text(statement), {"a": account})
    with scratch_engine.connect() as conn:
        assert conn.execute(text("SELECT amount FROM entries WHERE account_id = :a"), {"a": account}).scalar() == 100


def test_unbalanced_entries_are_refused_at_commit(scratch_engine: Any) -> None:
    """Invariant 4: a command's legs must sum to zero, checked by a deferred trigger."""
    with pytest.raises(DBAPIError, match="do not balance"), scratch_engine.begin() as conn:
        account, world, command = seed(conn)
        conn.execute(
            text(
                "INSERT INTO entries (account_id, seq, command_id, amount, balance_after, counterparty) "
                "VALUES (:a, 1, :c, 500, 500, :w)"
            ),
            {"a": account, "c": command, "w": world},
        )


def test_overdraft_is_refused_by_check(scratch_engine: Any) -> None:
    """Invariant 3, second line of defence: the CHECK on accounts."""
    with scratch_engine.begin() as conn:
        account, _, _ = seed(conn)
    with pytest.raises(IntegrityError, match="accounts_no_overdraft"), scratch_engine.begin() as conn:
        conn.execute(text("UPDATE accounts SET balance = -1 WHERE id = :a"), {"a": account})
    with scratch_engine.begin() as conn:  # within the limit is fine
        conn.execute(text("UPDATE accounts SET overdraft_limit = 5, balance = -5 WHERE id = :a"), {"a": account})


def test_a_command_cannot_post_twice_to_an_account(scratch_engine: Any) -> None:
    """Exactly once at the lowest level: one leg per (command, account)."""
    with scratch_engine.begin() as conn:
        account, world, command = seed(conn, balance=100)
    with pytest.raises(IntegrityError, match="entries_command_account"), scratch_engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO entries (account_id, seq, command_id, amount, balance_after, counterparty) "
                "VALUES (:a, 2, :c, 100, 200, :w)"
            ),
            {"a": account, "c": command, "w": world},
        )


def test_command_ids_are_unique_and_statuses_closed(scratch_engine: Any) -> None:
    with scratch_engine.begin() as conn:
        _, _, command = seed(conn)
    with pytest.raises(IntegrityError), scratch_engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO commands (id, payload_hash, type, partition, payload) VALUES (:c, 'h', 'deposit', 0, '{}')"
            ),
            {"c": command},
        )
    with pytest.raises(IntegrityError), scratch_engine.begin() as conn:
        conn.execute(text("UPDATE commands SET status = 'applied' WHERE id = :c"), {"c": command})  # no finished_at
    with pytest.raises(IntegrityError), scratch_engine.begin() as conn:
        conn.execute(text("UPDATE commands SET status = 'lost', finished_at = now() WHERE id = :c"), {"c": command})

"""The database refuses bad rows by itself: raw SQL that bypasses ledgerq's code."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError

from ledgerq.shared.schema import metadata
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
        text(
            "INSERT INTO commands (id, payload_hash, type, partition, payload) "
            """VALUES (:c, 'h', 'deposit', 0, '{"currency": "USD"}')"""
        ),
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


LEG = (
    "INSERT INTO entries (account_id, seq, command_id, amount, balance_after, counterparty) "
    "VALUES (:a, :seq, :c, :n, :n, :w)"
)


def test_legs_split_over_statements_must_each_balance(scratch_engine: Any) -> None:
    """Invariant 4 for any split of legs: the statement trigger sees one leg alone and refuses it,
    although a second statement could have balanced it before commit."""
    with pytest.raises(DBAPIError, match="do not balance"), scratch_engine.begin() as conn:
        account, world, command = seed(conn)
        conn.execute(text(LEG), {"a": account, "seq": 1, "c": command, "n": 500, "w": world})
        conn.execute(text(LEG), {"a": world, "seq": 10**9, "c": command, "n": -500, "w": account})


def test_no_legs_for_a_final_command_or_in_another_currency(scratch_engine: Any) -> None:
    """Balanced legs are still refused once the command is final, or in a currency not the command's."""
    pair = (
        "INSERT INTO entries (account_id, seq, command_id, amount, balance_after, counterparty) "
        "VALUES (:a, :seq, :c, 7, 7, :w), (:w, :wseq, :c, -7, -7, :a)"
    )
    with scratch_engine.begin() as conn:
        account, world, command = seed(conn)
        conn.execute(text("UPDATE commands SET status = 'rejected', finished_at = now() WHERE id = :c"), {"c": command})
    with pytest.raises(DBAPIError, match="do not balance"), scratch_engine.begin() as conn:
        conn.execute(text(pair), {"a": account, "seq": 1, "c": command, "w": world, "wseq": 10**9 + 1})
    with scratch_engine.begin() as conn:
        euro, euro_world, euro_command = uid("eur"), "@world:EUR:raw", uid("cmd")
        conn.execute(text("INSERT INTO accounts (id, currency) VALUES (:a, 'EUR')"), {"a": euro})
        conn.execute(
            text("INSERT INTO accounts (id, currency, kind) VALUES (:w, 'EUR', 'system') ON CONFLICT DO NOTHING"),
            {"w": euro_world},
        )
        conn.execute(
            text(
                "INSERT INTO commands (id, payload_hash, type, partition, payload) "
                """VALUES (:c, 'h', 'deposit', 0, '{"currency": "USD"}')"""
            ),
            {"c": euro_command},
        )
    with pytest.raises(DBAPIError, match="do not balance"), scratch_engine.begin() as conn:
        conn.execute(text(pair), {"a": euro, "seq": 1, "c": euro_command, "w": euro_world, "wseq": 10**9 + 2})
    with scratch_engine.begin() as conn:  # the same pair in the command's currency is accepted
        conn.execute(text('UPDATE commands SET payload = \'{"currency": "EUR"}\' WHERE id = :c'), {"c": euro_command})
        conn.execute(text(pair), {"a": euro, "seq": 1, "c": euro_command, "w": euro_world, "wseq": 10**9 + 3})


def test_unbalanced_entries_are_refused(scratch_engine: Any) -> None:
    """Invariant 4: a command's legs must sum to zero, checked per INSERT statement by a trigger."""
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


@pytest.mark.parametrize("prefix", ["shop/1:", "shop 1", "x" * 129, "~"])
def test_a_key_prefix_outside_the_id_charset_is_refused(scratch_engine: Any, prefix: str) -> None:
    """A `/` in a prefix would let scoped ids collide and its commands fail at the worker."""
    with pytest.raises(IntegrityError), scratch_engine.begin() as conn:
        conn.execute(
            text("INSERT INTO api_keys (id, secret_hash, scope, prefix) VALUES (:i, 'h', 'write', :p)"),
            {"i": uid("k")[:32], "p": prefix},
        )

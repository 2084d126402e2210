"""Accounts for every door (HTTP routes and the in-process client): create idempotently, read, list by
id prefix, page through entries."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from pydantic import TypeAdapter
from sqlalchemy import Connection, Select, select, text
from sqlalchemy.dialects.postgresql import insert

from ledgerq.api.context import Context
from ledgerq.shared.commands import NewAccount
from ledgerq.shared.errors import Conflict, NotFound
from ledgerq.shared.schema import accounts, entries
from ledgerq.shared.scoping import shown_id

NEW_ACCOUNT = TypeAdapter(NewAccount)


def create_account(ctx: Context, new: NewAccount) -> tuple[bool, dict[str, Any]]:
    """(created, the account): the same attributes again is not an error; other ones are a `Conflict`."""
    with ctx.engine.begin() as conn:
        inserted = conn.execute(
            insert(accounts)
            .values(id=new.id, currency=new.currency, overdraft_limit=new.overdraft_limit, metadata=new.metadata)
            .on_conflict_do_nothing(index_elements=["id"])
            .returning(accounts.c.id)
        ).scalar_one_or_none()
        row = read_account(conn, new.id)
        if row is None:  # only a concurrent delete could do this, and accounts are never deleted
            raise NotFound(f"account {new.id!r} not found")
        # Metadata is compared as jsonb, by Postgres: `1e23` sent again equals the stored 1e+23, which
        # comes back to Python as an int and would differ from the float in the request.
        same_metadata = (
            inserted is not None
            or conn.execute(
                text("SELECT metadata = CAST(:m AS jsonb) FROM accounts WHERE id = :id"),
                {"m": json.dumps(new.metadata), "id": new.id},
            ).scalar_one()
        )
    if inserted is None and not (
        same_metadata and (row["currency"], row["overdraft_limit"]) == (new.currency, new.overdraft_limit)
    ):
        raise Conflict(f"account {new.id!r} exists with other attributes")
    return inserted is not None, row


_SHOWN = (
    accounts.c.id,
    accounts.c.currency,
    accounts.c.balance,
    accounts.c.held,
    (accounts.c.balance - accounts.c.held).label("available"),
    accounts.c.overdraft_limit,
    accounts.c.entry_count,
    accounts.c.metadata,
    accounts.c.updated_at,
)
"""The columns of an account as the API shows it (`AccountOut`)."""


def read_account(conn: Connection, account_id: str) -> dict[str, Any] | None:
    """A user account as the API shows it (system accounts such as `@world` are not shown)."""
    row = conn.execute(select(*_SHOWN).where(accounts.c.id == account_id, accounts.c.kind == "user")).one_or_none()
    return None if row is None else dict(row._mapping)


def narrower_prefix(asked: str, confined: str) -> str | None:
    """The prefix that ids must start with to match both `asked` and a key's `confined` prefix (the
    longer one when one extends the other), or None when no id can match both."""
    if asked.startswith(confined):
        return asked
    if confined.startswith(asked):
        return confined
    return None


def accounts_page(
    ctx: Context,
    prefix: str,
    after_id: str,
    limit: int,
    kind: Literal["user", "system"] = "user",
    key_prefix: str = "",
) -> dict[str, Any]:
    """Up to `limit` accounts of `kind` whose id starts with `prefix` (and with a confined key's
    `key_prefix`), after `after_id` in id order, with the cursor for the next page.

    Ids are ordered and compared in the database's collation, the primary key's order, so paging is
    consistent whatever the locale; `LIKE 'p%'` is an index range under the C collation."""
    both = narrower_prefix(prefix, key_prefix)
    if both is None:  # e.g. `shop2:` asked by a key confined to `shop1:`: nothing, not an error
        return {"accounts": [], "next_after_id": None}
    query = select(*_SHOWN).where(accounts.c.kind == kind)
    if both:
        query = query.where(accounts.c.id.startswith(both, autoescape=True))  # `_` in an id is no wildcard
    if after_id:
        query = query.where(accounts.c.id > after_id)
    with ctx.engine.connect() as conn:
        rows = conn.execute(query.order_by(accounts.c.id).limit(limit)).all()
    found = [dict(r._mapping) for r in rows]
    return {"accounts": found, "next_after_id": found[-1]["id"] if len(found) == limit else None}


def get_account(ctx: Context, account_id: str) -> dict[str, Any]:
    with ctx.engine.connect() as conn:
        row = read_account(conn, account_id)
    if row is None:
        raise NotFound(f"account {account_id!r} not found")
    return row


def entries_page(ctx: Context, account_id: str, after_seq: int, limit: int, prefix: str = "") -> dict[str, Any] | None:
    """Up to `limit` entries after `after_seq`, with each command id as a key with `prefix` names it
    (so it can read each one back); None if there is no such account."""
    with ctx.engine.connect() as conn:
        if read_account(conn, account_id) is None:
            return None
        rows = conn.execute(
            select(
                entries.c.seq,
                entries.c.command_id,
                entries.c.amount,
                entries.c.balance_after,
                entries.c.counterparty,
                entries.c.created_at,
            )
            .where(entries.c.account_id == account_id, entries.c.seq > after_seq)
            .order_by(entries.c.seq)
            .limit(limit)
        ).all()
    found = [{**r._mapping, "command_id": shown_id(prefix, r.command_id)} for r in rows]
    return {"entries": found, "next_after_seq": found[-1]["seq"] if len(found) == limit else None}


def balance_as_of(
    ctx: Context, account_id: str, *, seq: int | None = None, at: datetime | None = None
) -> dict[str, Any]:
    """The balance after the account's last entry at or before `seq` (or time `at`), read from that
    entry's `balance_after`: one index lookup whatever the history (`seq` 0 and balance 0 before the
    first entry). `at` in the answer is that entry's time (null before the first)."""
    query = balance_query(account_id, seq=seq, at=at)
    with ctx.engine.connect() as conn:
        if read_account(conn, account_id) is None:
            raise NotFound(f"account {account_id!r} not found")
        row = conn.execute(query).first()
    if row is None:
        return {"account_id": account_id, "balance": 0, "seq": 0, "at": None}
    return {"account_id": account_id, "balance": row.balance_after, "seq": row.seq, "at": row.created_at}


def balance_query(account_id: str, *, seq: int | None = None, at: datetime | None = None) -> Select[Any]:
    """The last entry at or before `seq` or `at`: a backward walk of one index that stops at one row."""
    query = select(entries.c.seq, entries.c.balance_after, entries.c.created_at).where(
        entries.c.account_id == account_id
    )
    if at is None:  # the primary key (account_id, seq)
        return query.where(entries.c.seq <= (seq or 0)).order_by(entries.c.seq.desc()).limit(1)
    # entries_account_time (account_id, created_at, seq)
    return query.where(entries.c.created_at <= at).order_by(entries.c.created_at.desc(), entries.c.seq.desc()).limit(1)

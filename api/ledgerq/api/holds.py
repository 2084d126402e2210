"""Holds for every door (HTTP routes and the in-process client): one hold, an account's holds."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from ledgerq.api.accounts import read_account
from ledgerq.api.context import Context
from ledgerq.shared.apikeys import ApiKey
from ledgerq.shared.errors import NotFound
from ledgerq.shared.schema import holds
from ledgerq.shared.scoping import shown_id, stored_id

_COLUMNS = (
    holds.c.id,
    holds.c.account_id,
    holds.c.to_account_id,
    holds.c.amount,
    holds.c.currency,
    holds.c.status,
    holds.c.captured_amount,
    holds.c.expires_at,
    holds.c.finished_at,
)


def hold_view(ctx: Context, hold_id: str, key: ApiKey | None = None) -> dict[str, Any]:
    """The hold placed by the command stored as `hold_id`; NotFound before it is applied, for a
    rejected hold, and for a hold on an account outside the key's prefix."""
    with ctx.engine.connect() as conn:
        row = conn.execute(select(*_COLUMNS).where(holds.c.id == hold_id)).one_or_none()
    if row is None or (key is not None and not key.covers(row.account_id)):
        shown = shown_id(key.prefix if key else "", hold_id)
        raise NotFound(
            f"hold {shown!r} not found: no hold command has this id, or it is not applied yet, or it was rejected"
        )
    return {**row._mapping, "id": shown_id(key.prefix if key else "", row.id)}


def holds_page(
    ctx: Context, account_id: str, status: str | None, after_id: str, limit: int, prefix: str = ""
) -> dict[str, Any]:
    """Up to `limit` of the account's holds after `after_id` (as the key names it), by id."""
    with ctx.engine.connect() as conn:
        if read_account(conn, account_id) is None:
            raise NotFound(f"account {account_id!r} not found")
        query = select(*_COLUMNS).where(holds.c.account_id == account_id)
        if status is not None:
            query = query.where(holds.c.status == status)
        if after_id:
            query = query.where(holds.c.id > stored_id(prefix, after_id))
        rows = conn.execute(query.order_by(holds.c.id).limit(limit)).all()
    found = [{**r._mapping, "id": shown_id(prefix, r.id)} for r in rows]
    return {"holds": found, "next_after_id": found[-1]["id"] if len(found) == limit else None}

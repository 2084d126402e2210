"""The events outbox as readers page through it (HTTP and the in-process door).

Only events of transactions older than every transaction still running are read (migration 0008
says why that makes resuming after the last id seen exact). A key confined to an account prefix
sees the events that touch its accounts, with only those accounts and their legs.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from ledgerq.api.context import Context
from ledgerq.shared.apikeys import ApiKey
from ledgerq.shared.scoping import shown_id

_PAGE = """
SELECT id, type, command_id, accounts, at, data FROM events
 WHERE id > :after AND xid < pg_snapshot_xmin(pg_current_snapshot()) {confined}
 ORDER BY id
 LIMIT :n
"""
_ALL = text(_PAGE.format(confined=""))
_CONFINED = text(_PAGE.format(confined="AND EXISTS (SELECT 1 FROM unnest(accounts) a WHERE starts_with(a, :prefix))"))


def events_page(ctx: Context, after_id: int, limit: int, key: ApiKey | None = None) -> dict[str, Any]:
    """Up to `limit` events after `after_id`, in id order; `next_after_id` is where to resume (the last
    id returned, or `after_id` again when there is nothing new)."""
    prefix = key.prefix if key else ""
    query, params = (_CONFINED, {"prefix": prefix}) if prefix else (_ALL, {})
    with ctx.engine.connect() as conn:
        rows = conn.execute(query, {"after": after_id, "n": limit, **params}).all()
    found = [_shown(dict(r._mapping), prefix) for r in rows]
    return {"events": found, "next_after_id": found[-1]["id"] if found else after_id}


def _shown(event: dict[str, Any], prefix: str) -> dict[str, Any]:
    if not prefix:
        return event
    data = dict(event["data"])
    result = data.get("result")
    if isinstance(result, dict) and "entries" in result:
        data["result"] = {**result, "entries": [e for e in result["entries"] if e["account_id"].startswith(prefix)]}
    if "hold_id" in data:
        data["hold_id"] = shown_id(prefix, data["hold_id"])
    return {
        **event,
        "command_id": shown_id(prefix, event["command_id"]),
        "accounts": [a for a in event["accounts"] if a.startswith(prefix)],
        "data": data,
    }

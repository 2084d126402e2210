"""The events outbox as readers page through it (HTTP and the in-process door).

Only events of transactions older than every transaction still running are read (migration 0008
says why that makes resuming after the last id seen exact). A key confined to an account prefix
sees the events that touch its accounts (ledgerq.shared.event_view).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from ledgerq.api.context import Context
from ledgerq.shared.apikeys import ApiKey
from ledgerq.shared.event_view import COLUMNS, TOUCHES_PREFIX, VISIBLE, shown_event

_PAGE = f"""
SELECT {COLUMNS} FROM events
 WHERE id > :after AND {VISIBLE} {{confined}}
 ORDER BY id
 LIMIT :n
"""
_ALL = text(_PAGE.format(confined=""))
_CONFINED = text(_PAGE.format(confined=f"AND {TOUCHES_PREFIX}"))


def events_page(ctx: Context, after_id: int, limit: int, key: ApiKey | None = None) -> dict[str, Any]:
    """Up to `limit` events after `after_id`, in id order; `next_after_id` is where to resume (the last
    id returned, or `after_id` again when there is nothing new)."""
    prefix = key.prefix if key else ""
    query, params = (_CONFINED, {"prefix": prefix}) if prefix else (_ALL, {})
    with ctx.engine.connect() as conn:
        rows = conn.execute(query, {"after": after_id, "n": limit, **params}).all()
    found = [shown_event(dict(r._mapping), prefix) for r in rows]
    return {"events": found, "next_after_id": found[-1]["id"] if found else after_id}

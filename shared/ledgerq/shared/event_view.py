"""An event as a reader sees it: the same for `GET /v1/events` and a webhook's delivery body.

A key (or a webhook made by a key) confined to an account prefix sees the events that touch its
accounts, with only those accounts and their legs, and ids as that key sees them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from ledgerq.shared.scoping import shown_id

COLUMNS = "id, type, command_id, accounts, at, data"
VISIBLE = "xid < pg_snapshot_xmin(pg_current_snapshot())"
"""SQL: the event's transaction is older than every one still running, so no event with a lower id
can still appear (migration 0008 says why); readers and the webhook fan-out read only these."""
TOUCHES_PREFIX = "EXISTS (SELECT 1 FROM unnest(accounts) a WHERE starts_with(a, :prefix))"
"""SQL: the event touches an account of the key's prefix (bound as `:prefix`)."""


def shown_event(event: dict[str, Any], prefix: str) -> dict[str, Any]:
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


def event_body(event: dict[str, Any]) -> bytes:
    """The JSON a webhook receives: the event as `GET /v1/events` lists it, compact UTF-8."""
    at: datetime = event["at"]
    shown = {**event, "at": at.astimezone(UTC).isoformat().replace("+00:00", "Z")}
    return json.dumps(shown, separators=(",", ":"), ensure_ascii=False).encode()

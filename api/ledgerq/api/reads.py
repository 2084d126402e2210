"""The read side, for every door (HTTP routes and the in-process client): a command as a key may see
it, and the long-poll schedule that waits for it to be final.

A key confined to an account prefix sees another key's command only where it touches one of its
accounts, and of any command only its own accounts' legs (`ledgerq.shared.scoping` has the id forms).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from ledgerq.api.context import Context
from ledgerq.shared.apikeys import ApiKey
from ledgerq.shared.commands import REVERSIBLE_TYPES
from ledgerq.shared.schema import CommandStatus, commands
from ledgerq.shared.scoping import is_own, shown_id

POLL_S_MIN = 0.02
POLL_S_MAX = 0.25


@dataclass
class Poll:
    """Until `deadline` (monotonic s), re-read after 20 ms, then twice as long each time, at most 250 ms."""

    deadline: float
    delay_s: float = POLL_S_MIN

    def due(self) -> bool:
        return time.monotonic() >= self.deadline

    def next_sleep_s(self) -> float:
        sleep_s = min(self.delay_s, max(0.0, self.deadline - time.monotonic()))
        self.delay_s = min(self.delay_s * 2, POLL_S_MAX)
        return sleep_s


def touched_accounts(payload: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(every account a stored payload names, the ones it debits) — `@world` aside."""
    if "legs" in payload:
        legs = payload["legs"]
        return [leg["account_id"] for leg in legs], [leg["account_id"] for leg in legs if leg["amount"] < 0]
    named = [a for a in (payload.get("account_id"), payload.get("to_account_id")) if a]
    return named, [] if payload.get("type") == "deposit" else named[:1]


def command_view(ctx: Context, command_id: str, key: ApiKey | None = None) -> dict[str, Any] | None:
    """The command stored as `command_id`, shaped as `CommandOut` for `key` (None: the in-process door,
    which shares the database and so sees everything); None if unknown or not the key's to see."""
    with ctx.engine.connect() as conn:
        row = conn.execute(
            select(
                commands.c.id,
                commands.c.type,
                commands.c.status,
                commands.c.partition,
                commands.c.payload,
                commands.c.error_code,
                commands.c.error_detail,
                commands.c.result,
                commands.c.accepted_at,
                commands.c.finished_at,
                commands.c.reversed_amount,
            ).where(commands.c.id == command_id)
        ).one_or_none()
    if row is None:
        return None
    result, detail = row.result, row.error_detail or ""
    prefix = key.prefix if key else ""
    if key and prefix:
        # A confined key sees only its accounts' legs, even of its own commands: the others' balances
        # (another tenant's, or the `@world` account every tenant's deposits move) are not its to see.
        named, debited = touched_accounts(row.payload)
        if result:  # a capture, void or reversal names its accounts only in what it posted or released
            named = [*named, *(e["account_id"] for e in result.get("entries", ())), result.get("account_id") or ""]
        if not is_own(prefix, row.id) and not any(key.covers(a) for a in named):
            return None  # another key's command that touches none of this key's accounts
        if result and "entries" in result:
            result = {**result, "entries": [e for e in result["entries"] if key.covers(e["account_id"])]}
        elif result and "account_id" in result and not key.covers(result["account_id"]):
            result = None
        if not all(key.covers(a) for a in debited):  # a rejection's detail speaks of the debited accounts
            detail = "withheld: it concerns an account outside this key's prefix"
    status = row.status
    job_key = ctx.settings.redis_keys.job_key(command_id, row.partition)
    if status == CommandStatus.QUEUED and ctx.redis.hget(job_key, "status") == b"started":
        status = CommandStatus.STARTED
    out: dict[str, Any] = {
        "id": shown_id(prefix, row.id),
        "type": row.type,
        "status": status,
        "partition": row.partition,
        "result": result,
        "accepted_at": row.accepted_at,
        "finished_at": row.finished_at,
    }
    if row.error_code:
        out["error"] = {"code": row.error_code, "detail": detail}
    if status == CommandStatus.APPLIED and row.type in REVERSIBLE_TYPES:
        out["reversed_amount"] = row.reversed_amount
    return out

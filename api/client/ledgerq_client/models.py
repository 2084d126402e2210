"""What the API answers, as small frozen dataclasses (no validation library: the server validated)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

CommandType = Literal["deposit", "withdraw", "transfer", "transaction", "hold", "capture", "void", "reversal"]
"""Every command's `type`, as `Command.type` shows it."""
SubmitType = Literal["deposit", "withdraw", "transfer", "hold"]
"""The types `submit` sends: one account, an amount and a currency (`transaction`, `capture`, `void`
and `reversal` have calls of their own)."""
CommandStatus = Literal["queued", "started", "applied", "rejected", "failed"]
HoldStatus = Literal["pending", "captured", "voided", "expired"]
EventType = Literal["command.applied", "command.rejected", "command.failed", "hold.expired"]
"""Every event's `type` today; `Event.type` is a plain `str` so a newer server's types still parse."""
FINAL_STATUSES: frozenset[str] = frozenset({"applied", "rejected", "failed"})


def _time(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(str(value))


@dataclass(frozen=True, slots=True)
class Accepted:
    """A submit's answer: 202 (new) or 200 (`replayed`: the id was known; nothing new queued)."""

    id: str
    status: str
    partition: int
    replayed: bool


@dataclass(frozen=True, slots=True)
class CommandError:
    code: str
    detail: str


@dataclass(frozen=True, slots=True)
class Command:
    id: str
    type: str
    status: str
    partition: int
    accepted_at: datetime
    error: CommandError | None = None
    result: dict[str, Any] | None = None
    finished_at: datetime | None = None
    reversed_amount: int | None = None  # an applied deposit, withdraw, transfer, capture or transaction

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Command:
        error = body.get("error")
        return cls(
            id=body["id"],
            type=body["type"],
            status=body["status"],
            partition=body["partition"],
            accepted_at=datetime.fromisoformat(body["accepted_at"]),
            error=CommandError(error["code"], error.get("detail", "")) if error else None,
            result=body.get("result"),
            finished_at=_time(body.get("finished_at")),
            reversed_amount=body.get("reversed_amount"),
        )

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES


@dataclass(frozen=True, slots=True)
class Account:
    id: str
    currency: str
    balance: int  # posted: the sum of the entries
    held: int  # the sum of pending holds
    available: int  # balance - held: what a debit or a new hold may use (with the overdraft limit)
    overdraft_limit: int
    entry_count: int
    updated_at: datetime
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Account:
        held = body.get("held", 0)  # an API older than holds has none, and sends neither field
        return cls(
            id=body["id"],
            currency=body["currency"],
            balance=body["balance"],
            held=held,
            available=body.get("available", body["balance"] - held),
            overdraft_limit=body["overdraft_limit"],
            entry_count=body["entry_count"],
            updated_at=datetime.fromisoformat(body["updated_at"]),
            metadata=body.get("metadata") or {},
        )


@dataclass(frozen=True, slots=True)
class Balance:
    """An account's balance after its last entry at or before a seq or a time (`seq` 0 before any)."""

    account_id: str
    balance: int
    seq: int
    at: datetime | None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Balance:
        return cls(body["account_id"], body["balance"], body["seq"], _time(body.get("at")))


@dataclass(frozen=True, slots=True)
class Hold:
    """A hold, by the id of the command that placed it: `pending`, then `captured`, `voided` or `expired`."""

    id: str
    account_id: str
    to_account_id: str | None
    amount: int
    currency: str
    status: str
    captured_amount: int
    expires_at: datetime
    finished_at: datetime | None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Hold:
        return cls(
            id=body["id"],
            account_id=body["account_id"],
            to_account_id=body.get("to_account_id"),
            amount=body["amount"],
            currency=body["currency"],
            status=body["status"],
            captured_amount=body["captured_amount"],
            expires_at=datetime.fromisoformat(body["expires_at"]),
            finished_at=_time(body.get("finished_at")),
        )

    @property
    def pending(self) -> bool:
        return self.status == "pending"


@dataclass(frozen=True, slots=True)
class HoldsPage:
    """One page of an account's holds, by id; `next_after_id` is None on the last page."""

    holds: list[Hold]
    next_after_id: str | None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> HoldsPage:
        return cls([Hold.from_json(h) for h in body["holds"]], body.get("next_after_id"))


@dataclass(frozen=True, slots=True)
class Event:
    """One final outcome from the events outbox (`GET /v1/events`, or a webhook's body). `id` orders the
    events and is where a reader resumes (`after_id=event.id`); a receiver dedupes on it."""

    id: int
    type: str
    command_id: str
    accounts: list[str]
    at: datetime
    data: dict[str, Any] = field(default_factory=dict)  # {"type", "status", "partition", "result"?, "error"?}

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Event:
        return cls(
            id=int(body["id"]),
            type=str(body["type"]),
            command_id=str(body["command_id"]),
            accounts=[str(a) for a in body.get("accounts") or ()],
            at=datetime.fromisoformat(str(body["at"])),
            data=dict(body.get("data") or {}),
        )

"""What the API answers, as small frozen dataclasses (no validation library: the server validated)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

CommandType = Literal["deposit", "withdraw", "transfer", "transaction"]
CommandStatus = Literal["queued", "started", "applied", "rejected", "failed"]
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
        )

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES


@dataclass(frozen=True, slots=True)
class Account:
    id: str
    currency: str
    balance: int
    overdraft_limit: int
    entry_count: int
    updated_at: datetime
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Account:
        return cls(
            id=body["id"],
            currency=body["currency"],
            balance=body["balance"],
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

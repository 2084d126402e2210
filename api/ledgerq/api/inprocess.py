"""The in-process client for Python backends that share ledgerq's Postgres and Redis.

Same validation, claim and enqueue as the HTTP API, without HTTP:

    client = LedgerClient.from_settings(Settings())
    client.submit({"id": "order-42", "type": "deposit", "account_id": "alice",
                   "amount": 5000, "currency": "USD"})
    client.wait("order-42", timeout_s=5)
    client.submit_many([...])   # many commands, one claim transaction and one Redis call

`InProcessClient` wraps it in every call of the HTTP client (`ledgerq_client.LedgerqClient`) by
the same names and arguments; it answers with the server's models (`Submitted`, `CommandOut`,
`AccountOut`, `HoldOut`, `HoldsOut`, `EventOut`) and raises the server's `ledgerq.shared.errors` (same class
names and codes as the client's), since the server does not depend on the client distribution. Its
`status` reads Redis too (for `started`), as the HTTP route does.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any, Literal

from ledgerq.api.accounts import NEW_ACCOUNT, balance_as_of, create_account, get_account
from ledgerq.api.body import validate
from ledgerq.api.context import Context
from ledgerq.api.events import events_page
from ledgerq.api.holds import hold_view, holds_page
from ledgerq.api.models import AccountOut, BalanceOut, CommandOut, EventOut, HoldOut, HoldsOut
from ledgerq.api.reads import Poll, command_view
from ledgerq.api.submit import Outcome, Submitted, submit, submit_many
from ledgerq.shared.commands import COMMAND_ADAPTER, PAGE_LIMIT_MAX
from ledgerq.shared.errors import InvalidRequest, LedgerError, NotFound
from ledgerq.shared.schema import FINAL_STATUSES, HoldStatus, commands
from ledgerq.shared.settings import Settings

SubmitType = Literal["deposit", "withdraw", "transfer", "hold"]
"""The types `submit` sends (`ledgerq_client.SubmitType`): one account, an amount and a currency."""


class LedgerClient:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @classmethod
    def from_settings(cls, settings: Settings) -> LedgerClient:
        return cls(Context.build(settings))

    def close(self) -> None:
        self.ctx.close()

    def submit(self, command: dict[str, Any]) -> Submitted:
        """Validate and enqueue one command; raises a `ledgerq.shared.errors.RequestError` on bad input."""
        return submit(self.ctx, validate(COMMAND_ADAPTER, command))

    def submit_many(self, batch: list[dict[str, Any]]) -> list[Outcome]:
        """Validate all, then submit them in order in as few rounds as possible.

        Returns one outcome per command: a `Submitted`, or the `ledgerq.shared.errors.LedgerError` that
        refused it (unknown account, id reused with another payload, queue full). Invalid input
        raises before anything is submitted; Postgres or Redis being away raises for the lot.
        """
        return submit_many(self.ctx, [validate(COMMAND_ADAPTER, command) for command in batch])

    def status(self, command_id: str) -> dict[str, Any] | None:
        """The command's row as stored (payload, error_code, attempts, ...), or None."""
        with self.ctx.engine.connect() as conn:
            row = conn.execute(commands.select().where(commands.c.id == command_id)).one_or_none()
        return None if row is None else dict(row._mapping)

    def wait(self, command_id: str, timeout_s: float) -> dict[str, Any] | None:
        """Poll until the command is final or `timeout_s` passes; returns the last row seen."""
        poll = Poll(time.monotonic() + timeout_s)
        while True:
            row = self.status(command_id)
            if row is None or row["status"] in FINAL_STATUSES or poll.due():
                return row
            time.sleep(poll.next_sleep_s())


class InProcessClient:
    """`ledgerq_client.LedgerqClient`'s calls, served in this process: no HTTP, no API key, no retries
    (a `TransientFault` or a driver error means Postgres or Redis is away; retry with the same id)."""

    def __init__(self, settings: Settings) -> None:
        self.ledger = LedgerClient.from_settings(settings)

    def __enter__(self) -> InProcessClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.ledger.close()

    def submit(
        self,
        type: SubmitType,
        account_id: str,
        amount: int,
        currency: str,
        *,
        id: str | None = None,
        to_account_id: str | None = None,
        reference: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Submitted:
        """Like `LedgerqClient.submit`: the id is yours or a new `cmd-<uuid>`; `replayed` if it was known."""
        body = _body(
            id,
            type=type,
            account_id=account_id,
            amount=amount,
            currency=currency,
            to_account_id=to_account_id,
            reference=reference,
            metadata=metadata,
        )
        return self.ledger.submit(body)

    def status(self, command_id: str, *, wait_s: float = 0) -> CommandOut:
        """The command as `GET /v1/commands/{id}` shows it (`started` included), waiting up to `wait_s`."""
        poll = Poll(time.monotonic() + wait_s)
        while True:
            found = command_view(self.ledger.ctx, command_id)
            if found is None:
                raise NotFound(f"command {command_id!r} not found")
            if found["status"] in FINAL_STATUSES or poll.due():
                return CommandOut.model_validate(found)
            time.sleep(poll.next_sleep_s())

    def wait(self, command_id: str, timeout_s: float = 30.0) -> CommandOut:
        return self.status(command_id, wait_s=timeout_s)

    def create_account(
        self, account_id: str, currency: str, *, overdraft_limit: int = 0, metadata: dict[str, Any] | None = None
    ) -> AccountOut:
        """Create an account (the same attributes again return it; other ones raise `Conflict`)."""
        body: dict[str, Any] = {"id": account_id, "currency": currency, "overdraft_limit": overdraft_limit}
        if metadata is not None:
            body["metadata"] = metadata
        return AccountOut.model_validate(create_account(self.ledger.ctx, validate(NEW_ACCOUNT, body))[1])

    def transaction(
        self,
        currency: str,
        legs: list[tuple[str, int]],
        *,
        id: str | None = None,
        reference: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Submitted:
        """Like `LedgerqClient.transaction`: every leg or none; `legs` as (account id, signed amount)."""
        legs_json = [{"account_id": account_id, "amount": amount} for account_id, amount in legs]
        body = _body(id, type="transaction", currency=currency, legs=legs_json, reference=reference, metadata=metadata)
        return self.ledger.submit(body)

    def submit_batch(self, commands: list[dict[str, Any]]) -> list[Outcome]:
        """Like `LedgerqClient.submit_batch`: one outcome per command body, in order: a `Submitted`, or
        the `ledgerq.shared.errors.LedgerError` that refused it (invalid ones included)."""
        outcomes: list[Outcome | None] = [None] * len(commands)
        valid: list[tuple[int, dict[str, Any]]] = []
        for i, command in enumerate(commands):
            body = {**command, "id": command.get("id") or new_command_id()}
            try:
                validate(COMMAND_ADAPTER, body)
            except LedgerError as refused:
                outcomes[i] = refused
                continue
            valid.append((i, body))
        for (i, _), outcome in zip(valid, self.ledger.submit_many([b for _, b in valid]), strict=True):
            outcomes[i] = outcome
        return [o for o in outcomes if o is not None]

    def balance_at(self, account_id: str, *, seq: int | None = None, at: datetime | None = None) -> BalanceOut:
        """The balance after the last entry at or before `seq` or `at` (exactly one)."""
        if (seq is None) == (at is None):
            raise InvalidRequest("give exactly one of seq and at")
        return BalanceOut.model_validate(balance_as_of(self.ledger.ctx, account_id, seq=seq, at=at))

    def account(self, account_id: str) -> AccountOut:
        return AccountOut.model_validate(get_account(self.ledger.ctx, account_id))

    def hold(
        self,
        account_id: str,
        amount: int,
        currency: str,
        *,
        to_account_id: str | None = None,
        expires_in_s: int | None = None,
        id: str | None = None,
        reference: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Submitted:
        """Like `LedgerqClient.hold`: reserve `amount` of the available balance until captured or voided."""
        body = _body(
            id,
            type="hold",
            account_id=account_id,
            amount=amount,
            currency=currency,
            to_account_id=to_account_id,
            expires_in_s=expires_in_s,
            reference=reference,
            metadata=metadata,
        )
        return self.ledger.submit(body)

    def capture(
        self,
        hold_id: str,
        *,
        amount: int | None = None,
        id: str | None = None,
        reference: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Submitted:
        """Like `LedgerqClient.capture`: post `amount` of the hold (all if None); `UnknownHold` if none."""
        body = _body(id, type="capture", hold_id=hold_id, amount=amount, reference=reference, metadata=metadata)
        return self.ledger.submit(body)

    def void(
        self,
        hold_id: str,
        *,
        id: str | None = None,
        reference: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Submitted:
        """Like `LedgerqClient.void`: release the hold whole; `UnknownHold` if none."""
        return self.ledger.submit(_body(id, type="void", hold_id=hold_id, reference=reference, metadata=metadata))

    def reverse(
        self,
        command_id: str,
        *,
        amount: int | None = None,
        id: str | None = None,
        reference: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Submitted:
        """Like `LedgerqClient.reverse`: mirror an applied command for `amount` (all that is left if None);
        `UnknownCommand` if no command has that id."""
        body = _body(id, type="reversal", command_id=command_id, amount=amount, reference=reference, metadata=metadata)
        return self.ledger.submit(body)

    def get_hold(self, hold_id: str) -> HoldOut:
        """The hold as `GET /v1/holds/{id}` shows it; `NotFound` before it is applied and for a rejected one."""
        return HoldOut.model_validate(hold_view(self.ledger.ctx, hold_id))

    def holds(
        self, account_id: str, *, status: str | None = None, after_id: str | None = None, limit: int = 100
    ) -> HoldsOut:
        """One page of the account's holds by id, as `GET /v1/accounts/{id}/holds` answers it (its
        query refusals are `InvalidRequest` here too)."""
        if status is not None and status not in set(HoldStatus):
            raise InvalidRequest(f"status must be one of {', '.join(HoldStatus)}, not {status!r}")
        if not 1 <= limit <= PAGE_LIMIT_MAX:
            raise InvalidRequest(f"limit must be 1..{PAGE_LIMIT_MAX}, not {limit}")
        return HoldsOut.model_validate(holds_page(self.ledger.ctx, account_id, status, after_id or "", limit))

    def events(
        self, after_id: int = 0, *, wait_s: float | None = None, limit: int = 100, follow: bool = True
    ) -> Iterator[EventOut]:
        """Like `LedgerqClient.events`: every event after `after_id` in id order, each once, read from the
        outbox page by page; following, it polls (20 ms doubling to 250 ms) up to `wait_s` per round when
        caught up, and never ends; `follow=False` ends once caught up. This door sees every account's."""
        wait_s_max = self.ledger.ctx.settings.wait_s_max
        poll_s = (wait_s_max if follow else 0.0) if wait_s is None else wait_s
        if not 0 <= poll_s <= wait_s_max:
            raise InvalidRequest(f"wait must be between 0 and {wait_s_max} seconds")
        if not 1 <= limit <= PAGE_LIMIT_MAX or after_id < 0:
            raise InvalidRequest(f"limit must be 1..{PAGE_LIMIT_MAX} and after_id >= 0, not {limit} and {after_id}")
        cursor = after_id
        while True:
            page = self._events_page(cursor, limit, poll_s)
            yield from page
            cursor = page[-1].id if page else cursor
            if not follow and len(page) < limit:
                return

    def _events_page(self, after_id: int, limit: int, wait_s: float) -> list[EventOut]:
        """One page after `after_id`, as `GET /v1/events?wait=` answers it: waits up to `wait_s` for one."""
        poll = Poll(time.monotonic() + wait_s)
        while True:
            found = events_page(self.ledger.ctx, after_id, limit)["events"]
            if found or poll.due():
                return [EventOut.model_validate(e) for e in found]
            time.sleep(poll.next_sleep_s())


def new_command_id() -> str:
    return f"cmd-{uuid.uuid4().hex}"


def _body(command_id: str | None, /, **fields: Any) -> dict[str, Any]:
    """A command body with its id fixed now (yours, or a new one) and the options left out that are None
    (positional-only, so a reversal's `command_id` field is one of the fields)."""
    return {"id": command_id or new_command_id(), **{k: v for k, v in fields.items() if v is not None}}

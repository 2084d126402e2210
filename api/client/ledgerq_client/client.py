"""The client for web backends: `LedgerqClient` (sync) and `AsyncLedgerqClient`, over HTTP.

    with LedgerqClient("http://ledgerq:8000", api_key) as ledger:
        accepted = ledger.submit("withdraw", "alice", 5_000, "USD", reference="order 42")
        outcome = ledger.wait(accepted.id, timeout_s=10)   # long-poll; outcome.status: applied | rejected | ...
        ledger.reverse(accepted.id, amount=1_000)           # a refund names what it refunds
        held = ledger.hold("alice", 5_000, "USD", to_account_id="gateway")   # a payout: reserve,
        ledger.capture(held.id, amount=4_000)               # then post part of it (or `void` it)

Every call that submits a command (`submit`, `transaction`, `hold`, `capture`,
`void`, `reverse`) picks the command id (or takes yours) before the first attempt and
sends that same id on every retry, so a retry can never apply a command
twice: the server answers a repeat with the first outcome. Connection errors,
5xx and 429 are retried with bounded, jittered backoff (Retry-After is
honoured up to the bound); a 4xx is never retried. Every error is a
`ledgerq_client.LedgerError` subclass chosen by the problem's `code` (for
example `IdempotencyConflict`, `UnknownAccount`, `RateLimited`, `Unauthorized`),
carrying `.status`, `.problem` and `.detail`. For Python backends that share
ledgerq's Postgres and Redis, the server's `ledgerq.api.inprocess.InProcessClient`
has the same calls without HTTP.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import httpx
from tenacity import AsyncRetrying, RetryCallState, Retrying, retry_if_exception, stop_after_attempt, stop_after_delay
from tenacity.wait import wait_exponential_jitter

from ledgerq_client.errors import ERRORS_BY_CODE, LedgerError, TransientFault, ValidationFailed
from ledgerq_client.models import (
    FINAL_STATUSES,
    Accepted,
    Account,
    Balance,
    Command,
    CommandType,
    Event,
    Hold,
    HoldsPage,
    HoldStatus,
    SubmitType,
)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounds on every call: attempts and backoff for retryable failures, and the longest `?wait=`
    one long-poll asks for (the server's `LEDGERQ_WAIT_S_MAX`, 30 by default; `wait` polls again
    until its own timeout)."""

    attempts_max: int = 6
    backoff_s_initial: float = 0.1
    backoff_s_max: float = 2.0
    total_s_max: float = 30.0
    poll_s_max: float = 30.0


def new_command_id() -> str:
    return f"cmd-{uuid.uuid4().hex}"


def command_json(type: CommandType, id: str | None, **fields: Any) -> dict[str, Any]:
    """A command's JSON, its id fixed here, once (yours, or a new `cmd-<uuid>`), whatever happens to the
    attempts; the options that are None are left out."""
    return {"id": id or new_command_id(), "type": type, **{k: v for k, v in fields.items() if v is not None}}


def account_body(
    account_id: str, currency: str, *, overdraft_limit: int = 0, metadata: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The JSON of a new account."""
    body: dict[str, Any] = {"id": account_id, "currency": currency, "overdraft_limit": overdraft_limit}
    if metadata is not None:
        body["metadata"] = metadata
    return body


def raise_for_problem(response: httpx.Response) -> None:
    """Raise the `LedgerError` a problem+json answer names; anything below 400 passes."""
    if response.status_code < 400:
        return
    try:
        body = response.json()
    except ValueError:  # a proxy's HTML page, say
        body = None
    error = error_from_problem(response.status_code, body if isinstance(body, dict) else {}, response.reason_phrase)
    retry_after = response.headers.get("retry-after", "")
    error.retry_after_s = float(retry_after) if retry_after.replace(".", "", 1).isdigit() else None
    raise error


def error_from_problem(status: int, problem: dict[str, Any], reason: str = "") -> LedgerError:
    """The typed error for a problem body (an answer's, or one result's in a batch)."""
    code = str(problem.get("code") or ("unavailable" if status >= 500 else "ledger_error"))
    fallback = TransientFault if status >= 500 else LedgerError
    error = ERRORS_BY_CODE.get(code, fallback)(str(problem.get("detail") or reason), code=code)
    error.status, error.problem = status, problem
    if isinstance(error, ValidationFailed):
        found = problem.get("errors")
        error.errors = [e for e in found if isinstance(e, dict)] if isinstance(found, list) else []
    return error


def batch_body(commands: list[dict[str, Any]]) -> dict[str, Any]:
    """The batch, every command's id fixed here (a new one where missing) before the first attempt."""
    return {"commands": [{**c, "id": c.get("id") or new_command_id()} for c in commands]}


def batch_outcomes(response: httpx.Response) -> list[Accepted | LedgerError]:
    """One outcome per command, in order: `Accepted`, or the typed error that refused it."""
    outcomes: list[Accepted | LedgerError] = []
    for result in response.json()["results"]:
        if "error" in result:
            outcomes.append(error_from_problem(result["http_status"], result["error"]))
        else:
            outcomes.append(Accepted(result["id"], result["status"], result["partition"], result["http_status"] == 200))
    return outcomes


def balance_params(seq: int | None, at: datetime | None) -> dict[str, Any]:
    return {"seq": seq} if at is None else {"at": at.isoformat()}


def holds_params(status: HoldStatus | None, after_id: str | None, limit: int) -> dict[str, Any]:
    """The listing's query; httpx would send a None as an empty value, so those are left out."""
    return {k: v for k, v in {"status": status, "after_id": after_id, "limit": limit}.items() if v is not None}


def events_wait_s(wait_s: float | None, follow: bool, policy: RetryPolicy) -> float:
    """How long each events request may wait for a new event: yours, else the API's bound when following
    (a long-poll, no busy loop) and none when reading only up to now."""
    return (policy.poll_s_max if follow else 0.0) if wait_s is None else wait_s


def events_params(after_id: int, limit: int, wait_s: float) -> dict[str, Any]:
    return {"after_id": after_id, "limit": limit, "wait": wait_s}


def events_page(body: dict[str, Any], after_id: int) -> tuple[list[Event], int, int]:
    """(the page's events past `after_id`, where to resume, how many the API sent). The filter is a guard:
    resuming from `next_after_id` never repeats an event, and this keeps it so whatever is answered."""
    fresh = [e for e in map(Event.from_json, body["events"]) if e.id > after_id]
    return fresh, max(after_id, int(body["next_after_id"]), *(e.id for e in fresh)), len(body["events"])


def retryable(exc: BaseException) -> bool:
    """Connection errors, 5xx and 429: the same request may succeed later. Never another 4xx."""
    if isinstance(exc, httpx.TransportError):
        return True
    return isinstance(exc, LedgerError) and exc.status is not None and (exc.status >= 500 or exc.status == 429)


def _retry_kwargs(policy: RetryPolicy) -> dict[str, Any]:
    backoff = wait_exponential_jitter(
        multiplier=policy.backoff_s_initial, max=policy.backoff_s_max, jitter=policy.backoff_s_initial
    )

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        hinted = exc.retry_after_s if isinstance(exc, LedgerError) else None
        return min(hinted, policy.backoff_s_max) if hinted else float(backoff(state))

    return {
        "retry": retry_if_exception(retryable),
        "stop": stop_after_attempt(policy.attempts_max) | stop_after_delay(policy.total_s_max),
        "wait": wait,
        "reraise": True,
    }


def _accepted(response: httpx.Response) -> Accepted:
    body = response.json()
    return Accepted(body["id"], body["status"], body["partition"], response.status_code == 200)


def _poll_s(deadline: float, poll_s_max: float) -> float:
    """How long the next long-poll may wait: what is left of the caller's timeout, within the API's bound."""
    return round(max(0.0, min(poll_s_max, deadline - time.monotonic())), 3)


def _headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}", "User-Agent": "ledgerq-client"}


R = TypeVar("R")


class _CommandCalls(Generic[R]):
    """The calls that submit one command, written once for both clients: each builds its body with
    `command_json` (the id fixed before the first attempt) and hands it to `_send`, which answers an
    `Accepted` (`R`) on the sync client and a coroutine of one on the async client."""

    def _send(self, body: dict[str, Any]) -> R:
        raise NotImplementedError

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
    ) -> R:
        """Enqueue a command; the id (yours, or a new `cmd-<uuid>`) is in the answer, `replayed` if known."""
        return self._send(
            command_json(
                type,
                id,
                account_id=account_id,
                amount=amount,
                currency=currency,
                to_account_id=to_account_id,
                reference=reference,
                metadata=metadata,
            )
        )

    def transaction(
        self,
        currency: str,
        legs: list[tuple[str, int]],
        *,
        id: str | None = None,
        reference: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> R:
        """Post every leg or none: `[("buyer", -100), ("seller", 85), ("fee", 15)]`, (account id, signed
        amount) pairs summing to zero. The debited accounts must share a partition (else `LegsSpanPartitions`)."""
        legs_json = [{"account_id": account_id, "amount": amount} for account_id, amount in legs]
        return self._send(
            command_json("transaction", id, currency=currency, legs=legs_json, reference=reference, metadata=metadata)
        )

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
    ) -> R:
        """Reserve `amount` of the account's available balance (for `expires_in_s`, 7 days if None) until a
        `capture` posts it to `to_account_id` (or `@world`) or a `void` releases it. Its id is the hold's."""
        return self._send(
            command_json(
                "hold",
                id,
                account_id=account_id,
                amount=amount,
                currency=currency,
                to_account_id=to_account_id,
                expires_in_s=expires_in_s,
                reference=reference,
                metadata=metadata,
            )
        )

    def capture(
        self,
        hold_id: str,
        *,
        amount: int | None = None,
        id: str | None = None,
        reference: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> R:
        """Post `amount` of a pending hold (all of it if None) and release the rest; `UnknownHold` if no hold
        command has that id."""
        return self._send(
            command_json("capture", id, hold_id=hold_id, amount=amount, reference=reference, metadata=metadata)
        )

    def void(
        self,
        hold_id: str,
        *,
        id: str | None = None,
        reference: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> R:
        """Release a pending hold whole; `UnknownHold` if no hold command has that id."""
        return self._send(command_json("void", id, hold_id=hold_id, reference=reference, metadata=metadata))

    def reverse(
        self,
        command_id: str,
        *,
        amount: int | None = None,
        id: str | None = None,
        reference: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> R:
        """Mirror an applied command's legs for `amount` (all that is left to reverse if None; a transaction is
        reversed whole); `UnknownCommand` if no command has that id."""
        return self._send(
            command_json("reversal", id, command_id=command_id, amount=amount, reference=reference, metadata=metadata)
        )


class LedgerqClient(_CommandCalls[Accepted]):
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout_s: float = 10.0,
        retry: RetryPolicy = RetryPolicy(),
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.retry = retry
        self.timeout_s = timeout_s
        self._http = httpx.Client(base_url=base_url, headers=_headers(api_key), timeout=timeout_s, transport=transport)

    def __enter__(self) -> LedgerqClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        for attempt in Retrying(**_retry_kwargs(self.retry)):
            with attempt:
                response = self._http.request(method, path, **kwargs)
                raise_for_problem(response)
        return response

    def _send(self, body: dict[str, Any]) -> Accepted:
        return _accepted(self._request("POST", "/v1/commands", json=body))

    def status(self, command_id: str, *, wait_s: float = 0) -> Command:
        response = self._request(
            "GET", f"/v1/commands/{command_id}", params={"wait": wait_s}, timeout=self.timeout_s + wait_s
        )
        return Command.from_json(response.json())

    def wait(self, command_id: str, timeout_s: float = 30.0) -> Command:
        """Long-poll until the command is final or `timeout_s` passes; returns the last status read."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.status(command_id, wait_s=_poll_s(deadline, self.retry.poll_s_max))
            if found.status in FINAL_STATUSES or time.monotonic() >= deadline:
                return found

    def create_account(
        self, account_id: str, currency: str, *, overdraft_limit: int = 0, metadata: dict[str, Any] | None = None
    ) -> Account:
        body = account_body(account_id, currency, overdraft_limit=overdraft_limit, metadata=metadata)
        return Account.from_json(self._request("POST", "/v1/accounts", json=body).json())

    def account(self, account_id: str) -> Account:
        return Account.from_json(self._request("GET", f"/v1/accounts/{account_id}").json())

    def submit_batch(self, commands: list[dict[str, Any]]) -> list[Accepted | LedgerError]:
        """Up to 1,000 command bodies in one request; each is accepted or refused as if alone (a retry of
        the whole batch is safe: every id is fixed before the first attempt)."""
        return batch_outcomes(self._request("POST", "/v1/commands/batch", json=batch_body(commands)))

    def balance_at(self, account_id: str, *, seq: int | None = None, at: datetime | None = None) -> Balance:
        """The balance after the last entry at or before `seq` or `at` (exactly one)."""
        response = self._request("GET", f"/v1/accounts/{account_id}/balance", params=balance_params(seq, at))
        return Balance.from_json(response.json())

    def get_hold(self, hold_id: str) -> Hold:
        """The hold placed by the command `hold_id`; `NotFound` until it is applied, and for a rejected hold."""
        return Hold.from_json(self._request("GET", f"/v1/holds/{hold_id}").json())

    def holds(
        self, account_id: str, *, status: HoldStatus | None = None, after_id: str | None = None, limit: int = 100
    ) -> HoldsPage:
        """One page of the account's holds by id (`limit` 1..1000); pass `after_id=page.next_after_id`
        for the next, until it is None."""
        params = holds_params(status, after_id, limit)
        return HoldsPage.from_json(self._request("GET", f"/v1/accounts/{account_id}/holds", params=params).json())

    def events(
        self, after_id: int = 0, *, wait_s: float | None = None, limit: int = 100, follow: bool = True
    ) -> Iterator[Event]:
        """Every event after `after_id`, in id order, each once: pages of up to `limit` (1..1000) from
        `GET /v1/events`, resuming from each page's `next_after_id`. With `follow` (the default) it never
        ends: when caught up, each request long-polls up to `wait_s` (`RetryPolicy.poll_s_max` if None)
        for the next event; stop it with `break`. `follow=False` ends once caught up (waiting `wait_s`,
        0 if None, for more). To resume after a restart, keep the last `event.id` you handled and pass it
        as `after_id`. A failure past the `RetryPolicy` bounds raises; resume the same way."""
        cursor = after_id
        poll_s = events_wait_s(wait_s, follow, self.retry)
        while True:
            params = events_params(cursor, limit, poll_s)
            response = self._request("GET", "/v1/events", params=params, timeout=self.timeout_s + poll_s)
            page, cursor, sent = events_page(response.json(), cursor)
            yield from page
            if not follow and sent < limit:
                return


class AsyncLedgerqClient(_CommandCalls[Coroutine[Any, Any, Accepted]]):
    """`LedgerqClient` for asyncio code (FastAPI, Starlette, aiohttp): the same calls, awaited."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout_s: float = 10.0,
        retry: RetryPolicy = RetryPolicy(),
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.retry = retry
        self.timeout_s = timeout_s
        self._http = httpx.AsyncClient(
            base_url=base_url, headers=_headers(api_key), timeout=timeout_s, transport=transport
        )

    async def __aenter__(self) -> AsyncLedgerqClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async for attempt in AsyncRetrying(**_retry_kwargs(self.retry)):
            with attempt:
                response = await self._http.request(method, path, **kwargs)
                raise_for_problem(response)
        return response

    async def _send(self, body: dict[str, Any]) -> Accepted:
        return _accepted(await self._request("POST", "/v1/commands", json=body))

    async def status(self, command_id: str, *, wait_s: float = 0) -> Command:
        response = await self._request(
            "GET", f"/v1/commands/{command_id}", params={"wait": wait_s}, timeout=self.timeout_s + wait_s
        )
        return Command.from_json(response.json())

    async def wait(self, command_id: str, timeout_s: float = 30.0) -> Command:
        deadline = time.monotonic() + timeout_s
        while True:
            found = await self.status(command_id, wait_s=_poll_s(deadline, self.retry.poll_s_max))
            if found.status in FINAL_STATUSES or time.monotonic() >= deadline:
                return found

    async def create_account(
        self, account_id: str, currency: str, *, overdraft_limit: int = 0, metadata: dict[str, Any] | None = None
    ) -> Account:
        body = account_body(account_id, currency, overdraft_limit=overdraft_limit, metadata=metadata)
        return Account.from_json((await self._request("POST", "/v1/accounts", json=body)).json())

    async def account(self, account_id: str) -> Account:
        return Account.from_json((await self._request("GET", f"/v1/accounts/{account_id}")).json())

    async def submit_batch(self, commands: list[dict[str, Any]]) -> list[Accepted | LedgerError]:
        return batch_outcomes(await self._request("POST", "/v1/commands/batch", json=batch_body(commands)))

    async def balance_at(self, account_id: str, *, seq: int | None = None, at: datetime | None = None) -> Balance:
        response = await self._request("GET", f"/v1/accounts/{account_id}/balance", params=balance_params(seq, at))
        return Balance.from_json(response.json())

    async def get_hold(self, hold_id: str) -> Hold:
        return Hold.from_json((await self._request("GET", f"/v1/holds/{hold_id}")).json())

    async def holds(
        self, account_id: str, *, status: HoldStatus | None = None, after_id: str | None = None, limit: int = 100
    ) -> HoldsPage:
        response = await self._request(
            "GET", f"/v1/accounts/{account_id}/holds", params=holds_params(status, after_id, limit)
        )
        return HoldsPage.from_json(response.json())

    async def events(
        self, after_id: int = 0, *, wait_s: float | None = None, limit: int = 100, follow: bool = True
    ) -> AsyncIterator[Event]:
        """`LedgerqClient.events`, as an async generator: `async for event in ledger.events(after_id):`."""
        cursor = after_id
        poll_s = events_wait_s(wait_s, follow, self.retry)
        while True:
            params = events_params(cursor, limit, poll_s)
            response = await self._request("GET", "/v1/events", params=params, timeout=self.timeout_s + poll_s)
            page, cursor, sent = events_page(response.json(), cursor)
            for event in page:
                yield event
            if not follow and sent < limit:
                return

"""The client library against a live `ledgerq api` process (and workers): ids fixed before the first
attempt, retries only where a retry is safe and useful, typed results and errors."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text

import ledgerq_client as remote_errors
from ledgerq.api.inprocess import InProcessClient
from ledgerq.ops.embedded import free_port
from ledgerq.shared import errors as server_errors
from ledgerq_client import AsyncLedgerqClient, LedgerqClient, RetryPolicy
from tests.chaos.cluster import LEDGERQ, Cluster
from tests.conftest import uid

FAST = RetryPolicy(attempts_max=6, backoff_s_initial=0.01, backoff_s_max=0.2, total_s_max=20)


class Flaky(httpx.BaseTransport):
    """Forwards to the real API, except as planned: `connect` fails before sending; `lost` sends,
    lets the API act, then drops its answer (the case a retry must never turn into a double apply)."""

    def __init__(self, plan: list[str]) -> None:
        self.inner = httpx.HTTPTransport()
        self.plan = plan
        self.sent: list[dict[str, Any]] = []
        self.statuses: list[int] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(json.loads(request.read() or b"null") or {"url": str(request.url)})
        mode = self.plan.pop(0) if self.plan else "ok"
        if mode == "connect":
            raise httpx.ConnectError("connection refused", request=request)
        response = self.inner.handle_request(request)
        response.read()
        self.statuses.append(response.status_code)
        if mode == "lost":
            raise httpx.ReadError("connection reset before the answer arrived", request=request)
        return response


class AsyncFlaky(httpx.AsyncBaseTransport):
    def __init__(self, plan: list[str]) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.plan = plan
        self.sent: list[dict[str, Any]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(json.loads(await request.aread() or b"null") or {})
        mode = self.plan.pop(0) if self.plan else "ok"
        if mode == "connect":
            raise httpx.ConnectError("connection refused", request=request)
        response = await self.inner.handle_async_request(request)
        await response.aread()
        if mode == "lost":
            raise httpx.ReadError("connection reset", request=request)
        return response


@pytest.fixture
def live(cluster: Cluster) -> Iterator[Cluster]:
    cluster.add_worker([])
    yield cluster


def commands_with_id(cluster: Cluster, command_id: str) -> int:
    with cluster.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM commands WHERE id = :i"), {"i": command_id}).scalar_one())


def test_submit_wait_and_typed_outcomes(live: Cluster) -> None:
    with LedgerqClient(live.url, live.key, retry=FAST) as ledger:
        alice = uid("alice")
        assert ledger.create_account(alice, "USD").balance == 0
        deposit = ledger.submit("deposit", alice, 100, "USD", reference="top-up")
        assert deposit.id.startswith("cmd-") and deposit.status == "queued" and not deposit.replayed
        assert ledger.wait(deposit.id, timeout_s=30).status == "applied"
        overdraft = ledger.submit("withdraw", alice, 101, "USD")
        outcome = ledger.wait(overdraft.id, timeout_s=30)
        assert outcome.status == "rejected" and outcome.error is not None
        assert outcome.error.code == "insufficient_funds"
        assert ledger.account(alice).balance == 100
        # The caller's own id is used as given; sending it again is a replay, not a second command.
        again = ledger.submit("deposit", alice, 5, "USD", id=f"order-{alice}")
        assert ledger.submit("deposit", alice, 5, "USD", id=again.id).replayed


def test_4xx_is_never_retried_and_raises_the_typed_error(live: Cluster) -> None:
    transport = Flaky([])
    with LedgerqClient(live.url, live.key, retry=FAST, transport=transport) as ledger:
        with pytest.raises(remote_errors.UnknownAccount) as unknown:
            ledger.submit("deposit", uid("nobody"), 1, "USD")
        assert unknown.value.status == 422 and unknown.value.problem is not None
        assert unknown.value.problem["code"] == "unknown_account"
        account = uid("acct")
        ledger.create_account(account, "USD")
        first = ledger.submit("deposit", account, 1, "USD")
        with pytest.raises(remote_errors.IdempotencyConflict) as conflict:
            ledger.submit("deposit", account, 2, "USD", id=first.id)
        assert conflict.value.status == 409
    assert transport.statuses == [422, 201, 202, 409]  # one attempt each
    with (
        LedgerqClient(live.url, "lq_not_a_key", retry=FAST, transport=transport) as stranger,
        pytest.raises(remote_errors.Unauthorized),
    ):
        stranger.account("x")
    assert transport.statuses[-1] == 401 and len(transport.statuses) == 5


def test_connection_errors_and_lost_answers_are_retried_with_the_same_id(live: Cluster) -> None:
    transport = Flaky(["ok", "connect", "connect", "lost", "ok"])
    with LedgerqClient(live.url, live.key, retry=FAST, transport=transport) as ledger:
        account = uid("retry")
        ledger.create_account(account, "USD")
        accepted = ledger.submit("deposit", account, 10, "USD")
        # The lost attempt was queued by the API; the retry that follows is its replay.
        assert accepted.replayed and transport.statuses == [201, 202, 200]
        ids = {body["id"] for body in transport.sent[1:]}
        assert ids == {accepted.id} and len(transport.sent) == 5
        assert ledger.wait(accepted.id).status == "applied"
        assert ledger.account(account).balance == 10
    assert commands_with_id(live, accepted.id) == 1


def test_retries_are_bounded(live: Cluster) -> None:
    transport = Flaky(["connect"] * 10)
    policy = RetryPolicy(attempts_max=3, backoff_s_initial=0.01, backoff_s_max=0.05)
    with (
        LedgerqClient(live.url, live.key, retry=policy, transport=transport) as ledger,
        pytest.raises(httpx.ConnectError),
    ):
        ledger.submit("deposit", "anyone", 1, "USD")
    assert len(transport.sent) == 3 and len({b["id"] for b in transport.sent}) == 1


def test_429_from_a_rate_limited_api_is_retried_until_accepted(live: Cluster) -> None:
    port = free_port()
    env = {**live.env, "LEDGERQ_RATE_LIMIT": "3/second"}
    api = subprocess.Popen([*LEDGERQ, "api", "--port", str(port)], env=env, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                asyncio.run(asyncio.sleep(0.05))
        transport = Flaky([])
        account = uid("limited")
        with LedgerqClient(
            url, live.key, retry=RetryPolicy(attempts_max=20, backoff_s_max=1.0), transport=transport
        ) as ledger:
            ledger.create_account(account, "USD")
            accepted = [ledger.submit("deposit", account, 1, "USD") for _ in range(8)]
        assert 429 in transport.statuses, transport.statuses
        assert transport.statuses.count(202) == 8 and not any(a.replayed for a in accepted)
        hasty = LedgerqClient(url, live.key, retry=RetryPolicy(attempts_max=1), transport=Flaky([]))
        with hasty, pytest.raises(remote_errors.RateLimited) as limited:
            for _ in range(10):
                hasty.account(account)
        assert limited.value.status == 429 and limited.value.retry_after_s is not None
    finally:
        api.terminate()
        api.wait(timeout=30)


def test_async_client_retries_a_lost_answer_with_the_same_id(live: Cluster) -> None:
    async def scenario() -> tuple[str, str, list[dict[str, Any]]]:
        transport = AsyncFlaky(["ok", "lost", "ok"])
        async with AsyncLedgerqClient(live.url, live.key, retry=FAST, transport=transport) as ledger:
            account = uid("async")
            await ledger.create_account(account, "USD")
            accepted = await ledger.submit("deposit", account, 3, "USD")
            assert accepted.replayed
            done = await ledger.wait(accepted.id, timeout_s=30)
            return accepted.id, done.status, transport.sent

    command_id, status, sent = asyncio.run(scenario())
    assert status == "applied" and {b.get("id") for b in sent[1:3]} == {command_id}
    assert commands_with_id(live, command_id) == 1


def test_validation_failed_is_its_own_error_with_the_field_errors(live: Cluster) -> None:
    """Not a bare LedgerError: a `ValidationFailed` (an `InvalidRequest`) listing every bad field."""
    with LedgerqClient(live.url, live.key, retry=FAST) as ledger:
        account = uid("val")
        ledger.create_account(account, "USD")
        with pytest.raises(remote_errors.ValidationFailed) as failed:
            ledger.submit("deposit", account, 0, "usd", id="bad id")
    assert isinstance(failed.value, remote_errors.InvalidRequest) and failed.value.status == 422
    fields = {error["loc"][-1] for error in failed.value.errors}
    assert {"id", "amount", "currency"} <= fields, failed.value.errors
    with InProcessClient(live.settings) as local, pytest.raises(server_errors.ValidationFailed) as locally:
        local.submit("deposit", account, 0, "USD")
    assert [error["loc"][-1] for error in locally.value.errors] == ["amount"]


def test_in_process_client_has_every_call_of_the_http_client(live: Cluster) -> None:
    """The same public calls by name, and accounts made and read without HTTP."""
    public = {name for name in dir(LedgerqClient) if not name.startswith("_")}
    assert public <= {name for name in dir(InProcessClient) if not name.startswith("_")}
    account = uid("inproc")
    with InProcessClient(live.settings) as ledger:
        made = ledger.create_account(account, "USD", overdraft_limit=5, metadata={"owner": "carol"})
        assert (made.id, made.balance, made.overdraft_limit, made.metadata) == (account, 0, 5, {"owner": "carol"})
        assert ledger.create_account(account, "USD", overdraft_limit=5, metadata={"owner": "carol"}) == made
        with pytest.raises(server_errors.Conflict):
            ledger.create_account(account, "EUR")
        with pytest.raises(server_errors.ValidationFailed):
            ledger.create_account("bad id", "USD")
        with pytest.raises(server_errors.NotFound):
            ledger.account(uid("ghost"))
    with LedgerqClient(live.url, live.key, retry=FAST) as remote:
        seen = remote.account(account)
    assert dataclasses.asdict(seen) == made.model_dump()  # every field, both doors


def test_in_process_client_has_the_same_calls(live: Cluster) -> None:
    account = uid("inproc")
    with LedgerqClient(live.url, live.key, retry=FAST) as ledger:
        ledger.create_account(account, "USD")
    with InProcessClient(live.settings) as ledger:
        accepted = ledger.submit("deposit", account, 7, "USD")
        assert accepted.id.startswith("cmd-") and not accepted.replayed
        assert ledger.wait(accepted.id, timeout_s=30).status == "applied"
        refused = ledger.submit("withdraw", account, 8, "USD")
        outcome = ledger.wait(refused.id, timeout_s=30)
        assert outcome.status == "rejected" and outcome.error and outcome.error.code == "insufficient_funds"
        with pytest.raises(server_errors.UnknownAccount):
            ledger.submit("deposit", uid("ghost"), 1, "USD")
        with pytest.raises(server_errors.LedgerError):
            ledger.status("no-such-command")


def test_batches_and_balances_as_of_through_every_client(live: Cluster) -> None:
    """`submit_batch` gives one typed outcome per command, in order; `balance_at` reads the history."""
    account = uid("batchc")
    body = {"type": "deposit", "account_id": account, "currency": "USD"}
    with LedgerqClient(live.url, live.key, retry=FAST) as ledger:
        ledger.create_account(account, "USD")
        first = {**body, "id": uid("b1"), "amount": 40}
        outcomes = ledger.submit_batch(
            [first, first, {**body, "amount": 0}, {**body, "account_id": uid("x"), "amount": 1}]
        )
        assert [type(o).__name__ for o in outcomes] == ["Accepted", "Accepted", "ValidationFailed", "UnknownAccount"]
        accepted = outcomes[0]
        assert isinstance(accepted, remote_errors.Accepted) and not accepted.replayed and outcomes[1].replayed  # type: ignore[union-attr]
        assert ledger.wait(accepted.id, timeout_s=30).status == "applied"
        assert ledger.balance_at(account, seq=1).balance == 40
        assert ledger.balance_at(account, seq=0).balance == 0

    async def scenario() -> tuple[int, str]:
        async with AsyncLedgerqClient(live.url, live.key, retry=FAST) as remote:
            (done,) = await remote.submit_batch([{**body, "amount": 2}])
            assert isinstance(done, remote_errors.Accepted)
            await remote.wait(done.id, timeout_s=30)
            return (await remote.balance_at(account, seq=2)).balance, done.id

    assert asyncio.run(scenario())[0] == 42
    with InProcessClient(live.settings) as local:
        here = local.submit_batch([{**body, "amount": 3}, {**body, "amount": -1}])
        assert type(here[1]).__name__ == "ValidationFailed" and not isinstance(here[0], Exception)
        local.wait(here[0].id, timeout_s=30)  # type: ignore[union-attr]
        assert local.balance_at(account, seq=3).balance == 45
        with pytest.raises(server_errors.InvalidRequest):
            local.balance_at(account)


def test_transactions_through_every_client(live: Cluster) -> None:
    """`transaction` posts every leg or none, on the sync, async and in-process clients alike."""
    payer, payee, fee = uid("payer"), uid("payee"), uid("fee")
    with LedgerqClient(live.url, live.key, retry=FAST) as ledger:
        for account in (payer, payee, fee):
            ledger.create_account(account, "USD")
        ledger.wait(ledger.submit("deposit", payer, 100, "USD").id, timeout_s=30)
        sale = ledger.transaction("USD", [(payer, -60), (payee, 55), (fee, 5)], reference="split")
        assert ledger.wait(sale.id, timeout_s=30).status == "applied"
        with pytest.raises(remote_errors.ValidationFailed):
            ledger.transaction("USD", [(payer, -1), (payee, 2)])

    async def scenario() -> str:
        async with AsyncLedgerqClient(live.url, live.key, retry=FAST) as remote:
            done = await remote.transaction("USD", [(payer, -30), (payee, 30)])
            return (await remote.wait(done.id, timeout_s=30)).status

    assert asyncio.run(scenario()) == "applied"
    with InProcessClient(live.settings) as local:
        short = local.transaction("USD", [(payer, -11), (fee, 11)])
        outcome = local.wait(short.id, timeout_s=30)
        assert outcome.status == "rejected" and outcome.error and outcome.error.code == "insufficient_funds"
        assert (local.account(payer).balance, local.account(payee).balance) == (10, 85)

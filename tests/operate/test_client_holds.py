"""Holds and reversals through every client (sync, async, in-process) against a live API and workers:
a payout held then captured in part, one held then voided, a refund reversed in parts, the hold views
and listing, and the refusals at the door as typed errors."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest

import ledgerq_client
from ledgerq.api.inprocess import InProcessClient
from ledgerq.shared import errors as server_errors
from ledgerq_client import AsyncLedgerqClient, LedgerqClient
from tests.chaos.cluster import Cluster
from tests.conftest import uid
from tests.operate.test_client import FAST, Flaky, commands_with_id


@pytest.fixture
def live(cluster: Cluster) -> Iterator[Cluster]:
    cluster.add_worker([])
    yield cluster


class Blocking:
    """The async client's calls, each awaited to its end on one event loop, so that the scenario below
    runs through `AsyncLedgerqClient` as written."""

    def __init__(self, client: AsyncLedgerqClient, loop: asyncio.AbstractEventLoop) -> None:
        self.client = client
        self.loop = loop

    def __getattr__(self, name: str) -> Callable[..., Any]:
        call = getattr(self.client, name)
        return lambda *args, **kwargs: self.loop.run_until_complete(call(*args, **kwargs))


def funds(ledger: Any, account_id: str) -> tuple[int, int, int]:
    found = ledger.account(account_id)
    assert found.available == found.balance - found.held
    return found.balance, found.held, found.available


def applied(ledger: Any, accepted: Any) -> Any:
    done = ledger.wait(accepted.id, timeout_s=30)
    assert done.status == "applied", done
    return accepted


def rejected(ledger: Any, accepted: Any, code: str) -> None:
    done = ledger.wait(accepted.id, timeout_s=30)
    assert (done.status, done.error and done.error.code) == ("rejected", code), done


def payout_and_refund(cluster: Cluster, ledger: Any, errors: ModuleType, status_422: int | None) -> None:
    """The calls of every client, in one story; `errors` is the module whose classes it raises, and
    `status_422` what their `.status` is for a 422 (None in process: no HTTP)."""
    wallet, gateway, shop = uid("wallet"), uid("gateway"), uid("shop")
    for account_id in (wallet, gateway, shop):
        ledger.create_account(account_id, "USD")
    applied(ledger, ledger.submit("deposit", wallet, 500, "USD"))

    # A payout: 100 reserved for the gateway, which confirms 70; the rest is released.
    placed = applied(ledger, ledger.hold(wallet, 100, "USD", to_account_id=gateway, expires_in_s=3600))
    assert funds(ledger, wallet) == (500, 100, 400)
    view = ledger.get_hold(placed.id)
    assert (view.id, view.account_id, view.to_account_id, view.amount, view.currency) == (
        placed.id,
        wallet,
        gateway,
        100,
        "USD",
    )
    assert (view.status, view.captured_amount, view.finished_at) == ("pending", 0, None) and view.expires_at
    captured = applied(ledger, ledger.capture(placed.id, amount=70, reference="gateway ok"))
    assert funds(ledger, wallet) == (430, 0, 430) and funds(ledger, gateway) == (70, 0, 70)
    view = ledger.get_hold(placed.id)
    assert (view.status, view.captured_amount) == ("captured", 70) and view.finished_at is not None
    # Sent again by its id, the same capture is a replay, not a second one.
    assert ledger.capture(placed.id, amount=70, reference="gateway ok", id=captured.id).replayed
    rejected(ledger, ledger.capture(placed.id), "hold_not_pending")  # captured at most once

    # A failed payout: the hold is voided whole.
    failed = applied(ledger, ledger.hold(wallet, 200, "USD"))
    assert funds(ledger, wallet) == (430, 200, 230)
    applied(ledger, ledger.void(failed.id))
    assert funds(ledger, wallet) == (430, 0, 430) and ledger.get_hold(failed.id).status == "voided"

    # The account's holds: one page, one status, and two pages of one.
    page = ledger.holds(wallet)
    assert {h.id for h in page.holds} == {placed.id, failed.id} and page.next_after_id is None
    assert [h.id for h in ledger.holds(wallet, status="voided").holds] == [failed.id]
    first = ledger.holds(wallet, limit=1)
    assert len(first.holds) == 1 and first.next_after_id == first.holds[0].id
    rest = ledger.holds(wallet, after_id=first.next_after_id)
    assert {h.id for h in [*first.holds, *rest.holds]} == {placed.id, failed.id} and rest.next_after_id is None

    # A refund names what it refunds: 30 first, then all that is left, then nothing more.
    sale = applied(ledger, ledger.submit("transfer", wallet, 80, "USD", to_account_id=shop))
    assert ledger.status(sale.id).reversed_amount == 0
    applied(ledger, ledger.reverse(sale.id, amount=30, reference="refund, part"))
    assert ledger.status(sale.id).reversed_amount == 30 and funds(ledger, shop)[0] == 50
    applied(ledger, ledger.reverse(sale.id))
    assert ledger.status(sale.id).reversed_amount == 80
    assert funds(ledger, shop)[0] == 0 and funds(ledger, wallet)[0] == 430
    rejected(ledger, ledger.reverse(sale.id, amount=1), "amount_exceeds_reversible")

    # Refused at the door, typed, and nothing claimed.
    never = uid("never")
    refusals: list[tuple[Callable[[], Any], type[Exception]]] = [
        (lambda: ledger.capture(never, id=never), errors.UnknownHold),
        (lambda: ledger.void(never, id=never), errors.UnknownHold),
        (lambda: ledger.void(sale.id, id=never), errors.UnknownHold),  # a command's id, but not a hold's
        (lambda: ledger.reverse(never, id=never), errors.UnknownCommand),
    ]
    for call, expected in refusals:
        with pytest.raises(expected) as refused:
            call()
        assert isinstance(refused.value, errors.RequestError) and refused.value.status == status_422
    assert commands_with_id(cluster, never) == 0
    with pytest.raises(errors.NotFound):
        ledger.status(never)
    with pytest.raises(errors.NotFound):
        ledger.get_hold(never)
    with pytest.raises(errors.NotFound):
        ledger.get_hold(sale.id)
    with pytest.raises(errors.NotFound):
        ledger.holds(never)
    for query in ({"limit": 0}, {"limit": 1001}, {"status": "open"}):  # as the HTTP query refuses them: 400
        with pytest.raises(errors.InvalidRequest):
            ledger.holds(wallet, **query)


def test_payouts_and_refunds_through_the_sync_client(live: Cluster) -> None:
    """Every hold and reversal call of `LedgerqClient`, and a lost answer to a capture retried as its replay."""
    with LedgerqClient(live.url, live.key, retry=FAST) as ledger:
        payout_and_refund(live, ledger, ledgerq_client, 422)
        wallet = uid("wallet")
        ledger.create_account(wallet, "USD")
        applied(ledger, ledger.submit("deposit", wallet, 10, "USD"))
        placed = applied(ledger, ledger.hold(wallet, 10, "USD"))
    transport = Flaky(["lost", "ok"])
    with LedgerqClient(live.url, live.key, retry=FAST, transport=transport) as flaky:
        captured = flaky.capture(placed.id, amount=4)
        # The lost attempt was claimed by the API; the retry, with the same id, is its replay.
        assert captured.replayed and transport.statuses == [202, 200]
        assert {body["id"] for body in transport.sent} == {captured.id}
        applied(flaky, captured)
        assert funds(flaky, wallet) == (6, 0, 6)
    assert commands_with_id(live, captured.id) == 1


def test_payouts_and_refunds_through_the_async_client(live: Cluster) -> None:
    """The same story through `AsyncLedgerqClient`, every call awaited."""
    loop = asyncio.new_event_loop()
    try:
        client = AsyncLedgerqClient(live.url, live.key, retry=FAST)
        try:
            payout_and_refund(live, Blocking(client, loop), ledgerq_client, 422)
        finally:
            loop.run_until_complete(client.aclose())
    finally:
        loop.close()


def test_payouts_and_refunds_through_the_in_process_client(live: Cluster) -> None:
    """The same story through `InProcessClient`, raising the server's errors of the same names."""
    with InProcessClient(live.settings) as ledger:
        payout_and_refund(live, ledger, server_errors, None)

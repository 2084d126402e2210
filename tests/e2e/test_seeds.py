"""The seeds' scenarios over HTTP, through real workers, to the ledger."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Workers, uid, wait_final

pytestmark = pytest.mark.usefixtures("workers")


def submit(http: TestClient, **command: Any) -> tuple[str, int]:
    command_id = uid(command["type"])
    response = http.post("/v1/commands", json={"id": command_id, "currency": "USD", **command})
    return command_id, response.status_code


def test_concurrent_deposits_are_not_lost(http: TestClient, make_account: Callable[..., str]) -> None:
    """Seed 000/002: 50.00 and 30.00 deposited at once on 100.00 end at 180.00, not 130.00."""
    for _ in range(10):
        account = make_account(balance=10_000)
        with ThreadPoolExecutor(2) as pool:
            sent = list(
                pool.map(
                    lambda amount, account=account: submit(http, type="deposit", account_id=account, amount=amount),
                    [5_000, 3_000],
                )
            )
        assert [code for _, code in sent] == [202, 202]
        assert [wait_final(http, c)["status"] for c, _ in sent] == ["applied", "applied"]
        assert http.get(f"/v1/accounts/{account}").json()["balance"] == 18_000


def test_concurrent_withdrawals_cannot_overdraw(http: TestClient, make_account: Callable[..., str]) -> None:
    """Seed 002: two 80.00 withdrawals from 100.00: exactly one applies, one is insufficient_funds."""
    for _ in range(30):
        account = make_account(balance=10_000)
        with ThreadPoolExecutor(2) as pool:
            sent = list(
                pool.map(
                    lambda _, account=account: submit(http, type="withdraw", account_id=account, amount=8_000), [0, 1]
                )
            )
        outcomes = sorted(
            (body["status"], body.get("error", {}).get("code")) for body in (wait_final(http, c) for c, _ in sent)
        )
        assert outcomes == [("applied", None), ("rejected", "insufficient_funds")]
        assert http.get(f"/v1/accounts/{account}").json()["balance"] == 2_000


def test_applied_withdrawal_is_visible_on_a_fresh_read(
    http: TestClient, make_account: Callable[..., str], workers: Workers
) -> None:
    """Seed 004: once the status says applied, every fresh read shows the new balance; no revert."""
    account = make_account(balance=10_000)
    command_id, code = submit(http, type="withdraw", account_id=account, amount=5_000)
    assert code == 202
    assert wait_final(http, command_id)["status"] == "applied"
    for _ in range(5):
        assert http.get(f"/v1/accounts/{account}").json()["balance"] == 5_000
    # The repeat that seed 004's user tried: refused, balance unchanged.
    again, _ = submit(http, type="withdraw", account_id=account, amount=6_000)
    body = wait_final(http, again)
    assert body["status"] == "rejected" and body["error"]["code"] == "insufficient_funds"
    assert http.get(f"/v1/accounts/{account}").json()["balance"] == 5_000


def test_per_account_order_is_submission_order(http: TestClient, make_account: Callable[..., str]) -> None:
    """Invariant 2: commands submitted one after another for one account land in that order, seq 1..n."""
    account, other = make_account(), make_account()
    ids = []
    for n in range(1, 41):
        if n % 3 == 0:
            command_id, code = submit(http, type="transfer", account_id=account, to_account_id=other, amount=1)
        else:
            command_id, code = submit(http, type="deposit", account_id=account, amount=n)
        assert code == 202
        ids.append(command_id)
    assert all(wait_final(http, c)["status"] == "applied" for c in ids[-1:])
    for c in ids:
        assert wait_final(http, c)["status"] == "applied"
    entries = http.get(f"/v1/accounts/{account}/entries", params={"limit": 1000}).json()["entries"]
    assert [e["command_id"] for e in entries] == ids
    assert [e["seq"] for e in entries] == list(range(1, 41))


def test_transfer_moves_money_and_trial_balance_stays_zero(http: TestClient, make_account: Callable[..., str]) -> None:
    """Invariant 4: a transfer writes two legs that sum to zero; the books stay balanced."""
    source, target = make_account(balance=1_000), make_account()
    command_id, code = submit(http, type="transfer", account_id=source, to_account_id=target, amount=400)
    assert code == 202
    body = wait_final(http, command_id)
    assert body["status"] == "applied"
    assert sum(leg["amount"] for leg in body["result"]["entries"]) == 0
    assert http.get(f"/v1/accounts/{source}").json()["balance"] == 600
    assert http.get(f"/v1/accounts/{target}").json()["balance"] == 400
    tb = http.get("/v1/trial-balance").json()
    assert tb["currencies"]["USD"] == {"total": 0, "balanced": True}

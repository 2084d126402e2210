"""Reversals end to end over real servers: refunds of deposits, withdrawals, transfers, captures and
transactions; partial reversals up to the original's amount; `reversed_amount` on the original; every
rejection and 422 for reversals; `ledgerq verify` clean."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from ledgerq.api.context import Context
from ledgerq.ops.verify import verify
from ledgerq.shared.routing import partition_for
from tests.conftest import PARTITIONS, Workers, refused_at_the_door, uid
from tests.e2e.test_holds import account, applied, hold, opened, rejected


def reverse(command_id: str, amount: int | None = None) -> dict[str, object]:
    body: dict[str, object] = {"type": "reversal", "command_id": command_id}
    if amount is not None:
        body["amount"] = amount
    return body


def test_a_refund_reverses_a_transfer_in_parts_up_to_its_amount(
    http: TestClient, ctx: Context, workers: Workers
) -> None:
    """Seed 002: a refund points at what it refunds."""
    buyer, shop = opened(http, balance=100), opened(http)
    sale = applied(
        http, {"type": "transfer", "account_id": buyer, "to_account_id": shop, "amount": 80, "currency": "USD"}
    )
    assert http.get(f"/v1/commands/{sale['id']}").json()["reversed_amount"] == 0
    part = applied(http, reverse(sale["id"], 30))
    assert part["result"]["reversed_amount"] == 30
    assert account(http, buyer)[0] == 50 and account(http, shop)[0] == 50
    assert http.get(f"/v1/commands/{sale['id']}").json()["reversed_amount"] == 30
    shop_entry = http.get(f"/v1/accounts/{shop}/entries").json()["entries"][-1]
    assert (shop_entry["command_id"], shop_entry["amount"], shop_entry["counterparty"]) == (part["id"], -30, buyer)
    rejected(http, reverse(sale["id"], 51), "amount_exceeds_reversible")
    rest = applied(http, reverse(sale["id"]))  # all that is left
    assert rest["result"]["reversed_amount"] == 50
    assert account(http, buyer)[0] == 100 and account(http, shop)[0] == 0
    rejected(http, reverse(sale["id"]), "amount_exceeds_reversible")
    assert http.get(f"/v1/commands/{sale['id']}").json()["reversed_amount"] == 80
    assert verify(ctx.engine) == []


def test_deposits_withdrawals_captures_and_transactions_reverse(
    http: TestClient, ctx: Context, workers: Workers
) -> None:
    wallet = opened(http)
    deposit = applied(http, {"type": "deposit", "account_id": wallet, "amount": 500, "currency": "USD"})
    withdraw = applied(http, {"type": "withdraw", "account_id": wallet, "amount": 100, "currency": "USD"})
    applied(http, reverse(withdraw["id"]))  # the money comes back from @world
    assert account(http, wallet)[0] == 500
    applied(http, reverse(deposit["id"], 200))
    assert account(http, wallet)[0] == 300
    merchant = opened(http)
    placed = applied(http, hold(wallet, 100, to_account_id=merchant))
    capture = applied(http, {"type": "capture", "hold_id": placed["id"], "amount": 60})
    applied(http, reverse(capture["id"]))
    assert account(http, wallet)[0] == 300 and account(http, merchant)[0] == 0
    seller, fee = opened(http), opened(http)
    if partition_for(seller, PARTITIONS) != partition_for(fee, PARTITIONS):  # reversing debits both
        fee = next(
            a
            for a in (opened(http) for _ in range(40))
            if partition_for(a, PARTITIONS) == partition_for(seller, PARTITIONS)
        )
    sale = applied(
        http,
        {
            "type": "transaction",
            "currency": "USD",
            "legs": [
                {"account_id": wallet, "amount": -100},
                {"account_id": seller, "amount": 90},
                {"account_id": fee, "amount": 10},
            ],
        },
    )
    undone = applied(http, reverse(sale["id"]))
    assert sorted(e["amount"] for e in undone["result"]["entries"]) == [-90, -10, 100]
    assert account(http, wallet)[0] == 300 and account(http, seller)[0] == 0 and account(http, fee)[0] == 0
    rejected(http, reverse(sale["id"]), "amount_exceeds_reversible")
    assert verify(ctx.engine) == []


def test_what_cannot_be_reversed_is_rejected(http: TestClient, workers: Workers) -> None:
    wallet, shop = opened(http, balance=100), opened(http)
    placed = applied(http, hold(wallet, 10))
    rejected(http, reverse(placed["id"]), "not_reversible")  # a hold is voided, not reversed
    refused = rejected(
        http, {"type": "withdraw", "account_id": wallet, "amount": 1000, "currency": "USD"}, "insufficient_funds"
    )
    rejected(http, reverse(refused["id"]), "not_reversible")  # only an applied command
    refund = applied(
        http, reverse(applied(http, {"type": "deposit", "account_id": wallet, "amount": 5, "currency": "USD"})["id"])
    )
    rejected(http, reverse(refund["id"]), "not_reversible")  # a reversal is not reversed
    # A refund whose money was spent: the debited account must cover it.
    sale = applied(
        http, {"type": "transfer", "account_id": wallet, "to_account_id": shop, "amount": 50, "currency": "USD"}
    )
    applied(http, {"type": "withdraw", "account_id": shop, "amount": 45, "currency": "USD"})
    short = rejected(http, reverse(sale["id"]), "insufficient_funds")
    # The refusal records the state it was decided on: the shop's, which is short, not the buyer's.
    assert (short["result"]["account_id"], short["result"]["balance"]) == (shop, 5)


def test_reversal_refusals_at_the_door_claim_nothing(http: TestClient, ctx: Context, workers: Workers) -> None:
    a, b = opened(http, balance=100), opened(http)
    far = next(
        x for x in (opened(http) for _ in range(40)) if partition_for(x, PARTITIONS) != partition_for(b, PARTITIONS)
    )
    split = applied(
        http,
        {
            "type": "transaction",
            "currency": "USD",
            "legs": [
                {"account_id": a, "amount": -20},
                {"account_id": b, "amount": 10},
                {"account_id": far, "amount": 10},
            ],
        },
    )
    cases = {
        "unknown_command": [reverse(uid("never"))],
        "legs_span_partitions": [reverse(split["id"])],  # reversing debits b and far, on two partitions
        "validation_failed": [reverse(split["id"], 5), {"type": "reversal", "command_id": split["id"], "amount": 0}],
    }
    refused_at_the_door(http, ctx.engine, cases)
    # The running total is held to the original's amount by the database too.
    with ctx.engine.connect() as conn, pytest.raises(DBAPIError, match="commands_reversed_within"):
        conn.execute(text("UPDATE commands SET reversed_amount = 21 WHERE id = :i"), {"i": split["id"]})

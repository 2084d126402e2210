"""Multi-leg `transaction` commands end to end over real PostgreSQL, Redis and workers: all legs or
none, counterparties, refusals at the door with nothing claimed, and `ledgerq verify` still clean."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import text

from ledgerq.api.context import Context
from ledgerq.ops.verify import verify
from ledgerq.shared.routing import partition_for
from tests.conftest import PARTITIONS, Workers, uid, wait_final


def opened(http: TestClient, currency: str = "USD", balance: int = 0, prefix: str = "tx") -> str:
    account = uid(prefix)
    assert http.post("/v1/accounts", json={"id": account, "currency": currency}).status_code == 201
    if balance:
        body = {"id": uid("fund"), "type": "deposit", "account_id": account, "amount": balance, "currency": currency}
        assert http.post("/v1/commands", json=body).status_code == 202
        assert wait_final(http, body["id"])["status"] == "applied"
    return account


def transaction(*legs: tuple[str, int], currency: str = "USD") -> dict[str, Any]:
    return {
        "id": uid("t"),
        "type": "transaction",
        "currency": currency,
        "legs": [{"account_id": a, "amount": n} for a, n in legs],
    }


def balance(http: TestClient, account: str) -> int:
    return int(http.get(f"/v1/accounts/{account}").json()["balance"])


def test_a_marketplace_split_is_posted_whole(http: TestClient, ctx: Context, workers: Workers) -> None:
    buyer, seller, fee, tax = opened(http, balance=100), opened(http), opened(http), opened(http)
    sale = transaction((buyer, -100), (seller, 85), (fee, 10), (tax, 5))
    assert http.post("/v1/commands", json=sale).status_code == 202
    done = wait_final(http, sale["id"])
    assert done["status"] == "applied" and done["type"] == "transaction"
    assert [balance(http, a) for a in (buyer, seller, fee, tax)] == [0, 85, 10, 5]
    assert sorted(leg["amount"] for leg in done["result"]["entries"]) == [-100, 5, 10, 85]
    seller_entry = http.get(f"/v1/accounts/{seller}/entries").json()["entries"][0]
    assert (seller_entry["command_id"], seller_entry["counterparty"]) == (sale["id"], buyer)
    assert http.get(f"/v1/accounts/{buyer}/entries").json()["entries"][-1]["counterparty"] == "*"
    assert verify(ctx.engine) == []  # applied_have_entries counts a transaction's legs


def test_one_uncovered_debit_refuses_every_leg(http: TestClient, workers: Workers) -> None:
    payer, short, payee = opened(http, balance=50), opened(http, balance=5), opened(http)
    if partition_for(payer, PARTITIONS) != partition_for(short, PARTITIONS):
        short = next(
            a
            for a in (opened(http, balance=5) for _ in range(40))
            if partition_for(a, PARTITIONS) == partition_for(payer, PARTITIONS)
        )
    attempt = transaction((payer, -20), (short, -10), (payee, 30))
    assert http.post("/v1/commands", json=attempt).status_code == 202
    refused = wait_final(http, attempt["id"])
    assert (refused["status"], refused["error"]["code"]) == ("rejected", "insufficient_funds")
    assert [balance(http, a) for a in (payer, short, payee)] == [50, 5, 0]


def test_refusals_at_the_door_claim_nothing(http: TestClient, ctx: Context) -> None:
    a, b = opened(http), opened(http)
    eur = opened(http, currency="EUR")
    elsewhere = next(
        x for x in (opened(http) for _ in range(40)) if partition_for(x, PARTITIONS) != partition_for(a, PARTITIONS)
    )
    cases = {
        "validation_failed": [
            transaction((a, -10), (b, 9)),
            transaction((a, -10)),
            transaction((a, -10), (a, 10)),
            {
                **transaction((a, -1), (b, 1)),
                "legs": [{"account_id": a, "amount": 1.5}, {"account_id": b, "amount": -1.5}],
            },
            {**transaction((a, -1), (b, 1)), "account_id": a},
            # Each leg fits in int64, but not what the transaction moves in all (nor its reversal).
            transaction((a, -(2**63 - 1)), (elsewhere, -(2**63 - 1)), (b, 2**63 - 1), (eur, 2**63 - 1)),
        ],
        "unknown_account": [transaction((a, -10), (uid("ghost"), 10))],
        "currency_mismatch": [transaction((a, -10), (eur, 10))],
        "legs_span_partitions": [transaction((a, -10), (elsewhere, -10), (b, 20))],
    }
    ids = []
    for code, bodies in cases.items():
        for body in bodies:
            answer = http.post("/v1/commands", json=body)
            assert answer.status_code == 422 and answer.json()["code"] == code, (code, answer.text)
            ids.append(body["id"])
    with ctx.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM commands WHERE id = ANY(:ids)"), {"ids": ids}).scalar() == 0
    # Credits may go anywhere: only the debits share a partition.
    spread = transaction((a, -10), (elsewhere, 10))
    assert http.post("/v1/commands", json=spread).status_code == 202

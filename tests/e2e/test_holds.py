"""Holds end to end over real PostgreSQL, Redis and workers: reserve, capture (whole or part), void,
posted / held / available on the account, the hold's views, every rejection and 422 of DESIGN.md's
list for holds, and `ledgerq verify` clean afterwards."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from ledgerq.api.context import Context
from ledgerq.ops.verify import verify
from tests.conftest import Workers, refused_at_the_door, uid, wait_final


def opened(http: TestClient, balance: int = 0, currency: str = "USD", overdraft_limit: int = 0) -> str:
    account = uid("h")
    body = {"id": account, "currency": currency, "overdraft_limit": overdraft_limit}
    assert http.post("/v1/accounts", json=body).status_code == 201
    if balance:
        applied(http, {"type": "deposit", "account_id": account, "amount": balance, "currency": currency})
    return account


def sent(http: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    body = {"id": uid(body["type"]), **body}
    answer = http.post("/v1/commands", json=body)
    assert answer.status_code == 202, answer.text
    return wait_final(http, body["id"])


def applied(http: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    done = sent(http, body)
    assert done["status"] == "applied", done
    return done


def rejected(http: TestClient, body: dict[str, Any], code: str) -> dict[str, Any]:
    done = sent(http, body)
    assert (done["status"], done.get("error", {}).get("code")) == ("rejected", code), done
    return done


def account(http: TestClient, account_id: str) -> tuple[int, int, int]:
    body = http.get(f"/v1/accounts/{account_id}").json()
    assert body["available"] == body["balance"] - body["held"]
    return body["balance"], body["held"], body["available"]


def hold(account_id: str, amount: int, **extra: Any) -> dict[str, Any]:
    return {"type": "hold", "account_id": account_id, "amount": amount, "currency": "USD", **extra}


def test_a_payout_hold_is_captured_in_part_and_releases_the_rest(
    http: TestClient, ctx: Context, workers: Workers
) -> None:
    """Seed 004's withdrawal: reserve, the gateway confirms 70 of 100, the rest is released."""
    wallet, gateway = opened(http, balance=500), opened(http)
    placed = applied(http, hold(wallet, 100, to_account_id=gateway, expires_in_s=3600))
    assert account(http, wallet) == (500, 100, 400)
    view = http.get(f"/v1/holds/{placed['id']}").json()
    assert {k: view[k] for k in ("account_id", "to_account_id", "amount", "currency", "status")} == {
        "account_id": wallet,
        "to_account_id": gateway,
        "amount": 100,
        "currency": "USD",
        "status": "pending",
    }
    assert view["captured_amount"] == 0 and view["finished_at"] is None
    # A withdrawal may use only what is available, not what is held.
    rejected(http, {"type": "withdraw", "account_id": wallet, "amount": 401, "currency": "USD"}, "insufficient_funds")
    captured = applied(http, {"type": "capture", "hold_id": placed["id"], "amount": 70})
    assert sorted(e["amount"] for e in captured["result"]["entries"]) == [-70, 70]
    assert account(http, wallet) == (430, 0, 430) and account(http, gateway)[0] == 70
    view = http.get(f"/v1/holds/{placed['id']}").json()
    assert (view["status"], view["captured_amount"]) == ("captured", 70) and view["finished_at"]
    entry = http.get(f"/v1/accounts/{gateway}/entries").json()["entries"][0]
    assert (entry["command_id"], entry["counterparty"], entry["amount"]) == (captured["id"], wallet, 70)
    # Captured at most once; a void after it is refused too.
    rejected(http, {"type": "capture", "hold_id": placed["id"]}, "hold_not_pending")
    rejected(http, {"type": "void", "hold_id": placed["id"]}, "hold_not_pending")
    assert verify(ctx.engine) == []


def test_a_failed_payout_is_voided_and_a_capture_without_target_goes_to_world(
    http: TestClient, ctx: Context, workers: Workers
) -> None:
    wallet = opened(http, balance=300)
    failed = applied(http, hold(wallet, 200))
    assert account(http, wallet) == (300, 200, 100)
    applied(http, {"type": "void", "hold_id": failed["id"]})
    assert account(http, wallet) == (300, 0, 300)
    assert http.get(f"/v1/holds/{failed['id']}").json()["status"] == "voided"
    paid = applied(http, hold(wallet, 120))
    applied(http, {"type": "capture", "hold_id": paid["id"]})  # the whole hold, to @world
    assert account(http, wallet) == (180, 0, 180)
    assert verify(ctx.engine) == []


def test_holds_reserve_available_and_are_refused_beyond_it(http: TestClient, ctx: Context, workers: Workers) -> None:
    wallet = opened(http, balance=100, overdraft_limit=20)
    applied(http, hold(wallet, 90))
    rejected(http, hold(wallet, 31), "insufficient_funds")  # 10 available + 20 overdraft
    applied(http, hold(wallet, 30))
    assert account(http, wallet) == (100, 120, -20)
    rejected(http, {"type": "withdraw", "account_id": wallet, "amount": 1, "currency": "USD"}, "insufficient_funds")
    # A capture above the hold is refused; the hold stays pending.
    small = applied(http, hold(opened(http, balance=10), 5))
    rejected(http, {"type": "capture", "hold_id": small["id"], "amount": 6}, "amount_exceeds_hold")
    assert http.get(f"/v1/holds/{small['id']}").json()["status"] == "pending"
    listed = http.get(f"/v1/accounts/{wallet}/holds", params={"status": "pending"}).json()
    assert sorted(h["amount"] for h in listed["holds"]) == [30, 90] and listed["next_after_id"] is None
    page = http.get(f"/v1/accounts/{wallet}/holds", params={"limit": 1}).json()
    assert len(page["holds"]) == 1 and page["next_after_id"] == page["holds"][0]["id"]
    rest = http.get(f"/v1/accounts/{wallet}/holds", params={"after_id": page["next_after_id"]}).json()
    assert len(rest["holds"]) == 1 and rest["holds"][0]["id"] != page["holds"][0]["id"]
    assert verify(ctx.engine) == []


def test_a_rejected_hold_has_no_view_and_cannot_be_captured(http: TestClient, workers: Workers) -> None:
    wallet = opened(http, balance=5)
    refused = rejected(http, hold(wallet, 50), "insufficient_funds")
    assert http.get(f"/v1/holds/{refused['id']}").status_code == 404
    rejected(http, {"type": "capture", "hold_id": refused["id"]}, "hold_not_pending")
    assert http.get(f"/v1/holds/{uid('nothing')}").json()["code"] == "not_found"


def test_hold_refusals_at_the_door_claim_nothing(http: TestClient, ctx: Context) -> None:
    wallet, eur = opened(http), opened(http, currency="EUR")
    transfer = {"id": uid("tr"), "type": "transfer", "account_id": wallet, "to_account_id": eur, "amount": 1}
    cases = {
        "validation_failed": [
            hold(wallet, 0),
            hold(wallet, 10, expires_in_s=0),
            hold(wallet, 10, expires_in_s=2_592_001),
            hold(wallet, 10, to_account_id=wallet),
            {"type": "capture", "hold_id": uid("x"), "amount": 1.5},
            {"type": "void", "hold_id": uid("x"), "amount": 5},
            {"type": "capture"},
        ],
        "unknown_account": [hold(uid("ghost"), 10), hold(wallet, 10, to_account_id=uid("ghost"))],
        "currency_mismatch": [hold(wallet, 10, to_account_id=eur), hold(wallet, 10, currency="EUR")],
        "unknown_hold": [
            {"type": "capture", "hold_id": uid("never")},
            {"type": "void", "hold_id": uid("never")},
            {"type": "void", "hold_id": transfer["id"]},  # an id, but not a hold's
        ],
    }
    http.post("/v1/commands", json={**transfer, "currency": "USD"})  # claimed (rejected later, or not)
    refused_at_the_door(http, ctx.engine, cases)


def test_the_database_refuses_what_the_rules_refuse(http: TestClient, ctx: Context, workers: Workers) -> None:
    """Raw SQL, past the worker: held beyond the overdraft floor, negative held, a second transition of a
    hold, a capture above the hold, deleting a hold — each is refused by a CHECK or the holds trigger."""
    wallet = opened(http, balance=100)
    placed = applied(http, hold(wallet, 60))
    applied(http, {"type": "void", "hold_id": placed["id"]})
    refused = [
        ("UPDATE accounts SET held = 101 WHERE id = :a", "accounts_no_overdraft"),
        ("UPDATE accounts SET held = -1 WHERE id = :a", "accounts_held_nonnegative"),
        ("UPDATE holds SET status = 'captured', captured_amount = 60, resolved_by = id WHERE id = :h", "cannot go"),
        ("UPDATE holds SET status = 'pending', finished_at = NULL, resolved_by = NULL WHERE id = :h", "cannot go"),
        ("DELETE FROM holds WHERE id = :h", "never deleted"),
    ]
    second = applied(http, hold(wallet, 10))
    over = "UPDATE holds SET status = 'captured', captured_amount = 11, resolved_by = id WHERE id = :s"
    refused.append((over, "holds_captured_within"))
    for sql, expected in refused:
        with ctx.engine.connect() as conn, pytest.raises(DBAPIError, match=expected):
            conn.execute(text(sql), {"a": wallet, "h": placed["id"], "s": second["id"]})

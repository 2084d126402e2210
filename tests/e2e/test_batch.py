"""`POST /v1/commands/batch` over real PostgreSQL, Redis and workers: each command answered as a lone
submit would be, in order, in one claim round; refusals claim nothing; only an outage fails the lot."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import text

from ledgerq.api.context import Context
from ledgerq.shared.apikeys import create_key
from ledgerq.shared.routing import partition_for
from tests.conftest import PARTITIONS, Workers, uid, wait_final

PROBLEM_FIELDS = {"type", "title", "status", "detail", "code"}


def deposit(account: str, amount: int = 10, **extra: Any) -> dict[str, Any]:
    return {"id": uid("b"), "type": "deposit", "account_id": account, "amount": amount, "currency": "USD", **extra}


def claimed(ctx: Context, ids: list[str]) -> set[str]:
    with ctx.engine.connect() as conn:
        rows = conn.execute(text("SELECT id FROM commands WHERE id = ANY(:ids)"), {"ids": ids})
        return {r.id for r in rows}


def test_each_command_is_answered_as_alone_in_order(http: TestClient, ctx: Context, workers: Workers) -> None:
    account, other = uid("batch"), uid("batch")
    for a in (account, other):
        assert http.post("/v1/accounts", json={"id": a, "currency": "USD"}).status_code == 201
    earlier = deposit(account)
    assert http.post("/v1/commands", json=earlier).status_code == 202
    first = deposit(account, 25)
    commands = [
        first,
        earlier,  # a replay: 200
        {**earlier, "amount": 11},  # the same id with another payload: 409
        deposit(account, 0),  # 422 validation_failed
        deposit(uid("ghost")),  # 422 unknown_account
        {**deposit(account), "currency": "EUR"},  # 422 currency_mismatch
        "not an object",  # 422
        first,  # repeated within the batch: the second is a replay
        {**deposit(account), "type": "transfer", "to_account_id": other, "amount": 5},
    ]
    answer = http.post("/v1/commands/batch", json={"commands": commands})
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [r["http_status"] for r in results] == [202, 200, 409, 422, 422, 422, 422, 200, 202]
    assert [r["id"] for r in results] == [c["id"] if isinstance(c, dict) else None for c in commands]
    codes = [r["error"]["code"] for r in results if "error" in r]
    assert codes == [
        "idempotency_conflict",
        "validation_failed",
        "unknown_account",
        "currency_mismatch",
        "validation_failed",
    ]
    assert all(r["error"].keys() >= PROBLEM_FIELDS for r in results if "error" in r)
    assert results[3]["error"]["errors"][0]["loc"][-1] == "amount"
    assert results[0]["status"] == "queued" and isinstance(results[0]["partition"], int)
    refused = [
        c["id"] for c, r in zip(commands, results, strict=True) if isinstance(c, dict) and r["http_status"] == 422
    ]
    assert claimed(ctx, refused) == set()  # a refused command is not claimed: its id is still free
    for command_id in (first["id"], commands[-1]["id"]):
        assert wait_final(http, command_id)["status"] == "applied"
    assert http.get(f"/v1/accounts/{other}").json()["balance"] == 5


def test_the_batch_itself_must_be_well_formed(http: TestClient) -> None:
    account = uid("batch")
    assert http.post("/v1/accounts", json={"id": account, "currency": "USD"}).status_code == 201
    for body in (
        {"commands": []},
        {"commands": [deposit(account)] * 1001},
        {"commands": "x"},
        {},
        {"commands": [deposit(account)], "x": 1},
    ):
        answer = http.post("/v1/commands/batch", json=body)
        assert answer.status_code == 422 and answer.json()["code"] == "validation_failed", (str(body)[:80], answer.text)
    big = json.dumps({"commands": [deposit(account, reference="r" * 200) for _ in range(1000)]}).encode()
    assert 64 * 1024 < len(big) <= 1024 * 1024  # over a lone body's bound, within the batch's
    assert http.post("/v1/commands/batch", content=big, headers={"content-type": "application/json"}).status_code == 200
    huge = json.dumps({"commands": [deposit(account, metadata={"k": "v" * 1200}) for _ in range(900)]}).encode()
    assert len(huge) > 1024 * 1024
    answer = http.post("/v1/commands/batch", content=huge, headers={"content-type": "application/json"})
    assert answer.status_code == 413 and answer.json()["code"] == "body_too_large"
    answer = http.post("/v1/commands/batch", content=b"{}", headers={"content-type": "text/plain"})
    assert answer.status_code == 415


def test_a_prefixed_keys_batch_is_scoped_like_its_lone_submits(
    http: TestClient, ctx: Context, workers: Workers
) -> None:
    shop = f"shop{uid()}:"
    mine, theirs = f"{shop}a", uid("elsewhere")
    for a in (mine, theirs):
        assert http.post("/v1/accounts", json={"id": a, "currency": "USD"}).status_code == 201
    secret, _ = create_key(ctx.engine, "write", prefix=shop)
    auth = {"Authorization": f"Bearer {secret}"}
    body = {"commands": [{**deposit(mine), "id": "order-1"}, {**deposit(theirs), "id": "order-2"}]}
    results = http.post("/v1/commands/batch", json=body, headers=auth).json()["results"]
    assert [(r["id"], r["http_status"]) for r in results] == [("order-1", 202), ("order-2", 404)]
    assert http.get("/v1/commands/order-1?wait=30", headers=auth).json()["status"] == "applied"
    assert claimed(ctx, [f"{shop}/order-2", "order-2"]) == set()


def test_a_read_key_may_not_submit_a_batch(http: TestClient, keys: dict[str, str]) -> None:
    answer = http.post("/v1/commands/batch", json={"commands": []}, headers={"Authorization": f"Bearer {keys['read']}"})
    assert answer.status_code == 403 and answer.json()["code"] == "forbidden"


def test_a_batch_may_name_its_own_earlier_commands(http: TestClient, ctx: Context, workers: Workers) -> None:
    """A hold and its capture, a transfer and its refund, in one batch: applied as if sent one after
    another; a capture of a hold that comes later in the batch is unknown, as it would be alone. (The
    refund is applied by the payee's partition: on the payer's here, so it is queued behind the sale.)"""
    payer = uid("batch")
    payee = next(
        a
        for a in (uid("batch") for _ in range(100))
        if partition_for(a, PARTITIONS) == partition_for(payer, PARTITIONS)
    )
    for a in (payer, payee):
        assert http.post("/v1/accounts", json={"id": a, "currency": "USD"}).status_code == 201
    fund = deposit(payer, 500)
    hold = {
        "id": uid("h"),
        "type": "hold",
        "account_id": payer,
        "to_account_id": payee,
        "amount": 200,
        "currency": "USD",
    }
    capture = {"id": uid("c"), "type": "capture", "hold_id": hold["id"], "amount": 150}
    sale = {
        "id": uid("t"),
        "type": "transfer",
        "account_id": payer,
        "to_account_id": payee,
        "amount": 100,
        "currency": "USD",
    }
    refund = {"id": uid("r"), "type": "reversal", "command_id": sale["id"], "amount": 40}
    late_hold = {"id": uid("h"), "type": "hold", "account_id": payer, "amount": 1, "currency": "USD"}
    too_early = {"id": uid("v"), "type": "void", "hold_id": late_hold["id"]}
    answer = http.post(
        "/v1/commands/batch", json={"commands": [fund, hold, capture, sale, refund, too_early, late_hold]}
    )
    results = answer.json()["results"]
    assert [r["http_status"] for r in results] == [202, 202, 202, 202, 202, 422, 202], results
    assert results[5]["error"]["code"] == "unknown_hold"
    for body in (fund, hold, capture, sale, refund, late_hold):
        assert wait_final(http, body["id"])["status"] == "applied", wait_final(http, body["id"])
    payer_view = http.get(f"/v1/accounts/{payer}").json()
    assert (payer_view["balance"], payer_view["held"]) == (500 - 150 - 100 + 40, 1)
    assert http.get(f"/v1/accounts/{payee}").json()["balance"] == 150 + 100 - 40


def test_naming_a_command_the_round_refused_is_refused(http: TestClient, ctx: Context) -> None:
    """A reversal or capture of a command refused in the same batch is unknown, as that id was never
    claimed (its client may send it again, corrected, as another command)."""
    ghost, real = uid("ghost"), uid("batch")
    assert http.post("/v1/accounts", json={"id": real, "currency": "USD"}).status_code == 201
    bad_deposit = deposit(ghost)
    bad_hold = {"id": uid("h"), "type": "hold", "account_id": real, "amount": 5, "currency": "EUR"}
    commands = [
        bad_deposit,
        {"id": uid("r"), "type": "reversal", "command_id": bad_deposit["id"]},
        bad_hold,
        {"id": uid("c"), "type": "capture", "hold_id": bad_hold["id"]},
    ]
    results = http.post("/v1/commands/batch", json={"commands": commands}).json()["results"]
    codes = [r["error"]["code"] for r in results]
    assert codes == ["unknown_account", "unknown_command", "currency_mismatch", "unknown_hold"], results
    assert claimed(ctx, [c["id"] for c in commands]) == set()

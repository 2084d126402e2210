"""Keys confined to an account prefix, end to end over real PostgreSQL, Redis and workers: their
commands are applied, they read every command in their accounts' entries, and tenants never collide."""

from __future__ import annotations

import urllib.parse
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from ledgerq.api.context import Context
from ledgerq.shared.apikeys import create_key
from ledgerq.worker.apply import _parse
from tests.conftest import Workers, uid, wait_final
from tests.unit.test_scoping import bodies, prefixes


def tenant(ctx: Context, prefix: str, scope: str = "write") -> dict[str, str]:
    secret, _ = create_key(ctx.engine, scope, prefix=prefix, name=f"tenant {prefix}")
    return {"Authorization": f"Bearer {secret}"}


def open_account(http: TestClient, account_id: str, currency: str = "USD") -> str:
    assert http.post("/v1/accounts", json={"id": account_id, "currency": currency}).status_code == 201
    return account_id


def final(http: TestClient, command_id: str, auth: dict[str, str]) -> dict[str, Any]:
    body: dict[str, Any] = http.get(f"/v1/commands/{command_id}", params={"wait": 30}, headers=auth).json()
    return body


def test_a_prefixed_keys_deposits_and_transfers_are_applied(http: TestClient, ctx: Context, workers: Workers) -> None:
    """The money bug: both were acknowledged, then failed `apply_failed` on the scoped id."""
    shop = f"shop{uid()}:"
    a1, a2 = open_account(http, f"{shop}a1"), open_account(http, f"{shop}a2")
    auth = tenant(ctx, shop)
    deposit = {"id": "dep-1", "type": "deposit", "account_id": a1, "amount": 10_000, "currency": "USD"}
    transfer = {**deposit, "id": "tr-1", "type": "transfer", "to_account_id": a2, "amount": 2_500}
    for body in (deposit, transfer):
        sent = http.post("/v1/commands", json=body, headers=auth)
        assert sent.status_code == 202, sent.text
        done = final(http, body["id"], auth)
        assert (done["status"], done["id"]) == ("applied", body["id"]), done
    assert http.get(f"/v1/accounts/{a1}", headers=auth).json()["balance"] == 7_500
    assert http.get(f"/v1/accounts/{a2}", headers=auth).json()["balance"] == 2_500
    # The entries name the key's own commands by the ids it chose.
    shown = [e["command_id"] for e in http.get(f"/v1/accounts/{a1}/entries", headers=auth).json()["entries"]]
    assert shown == ["dep-1", "tr-1"]


def test_a_tenant_reads_every_command_in_its_accounts_entries(http: TestClient, ctx: Context, workers: Workers) -> None:
    """An admin's deposit and a transfer in from an outside account are readable by the id shown."""
    shop = f"shop{uid()}:"
    mine = open_account(http, f"{shop}a1")
    treasury = open_account(http, uid("treasury"))
    admin_deposit = {"id": uid("adm"), "type": "deposit", "account_id": treasury, "amount": 900, "currency": "USD"}
    admin_transfer = {**admin_deposit, "id": uid("pay"), "type": "transfer", "to_account_id": mine, "amount": 400}
    for body in (admin_deposit, admin_transfer):
        assert http.post("/v1/commands", json=body).status_code == 202
        assert wait_final(http, body["id"])["status"] == "applied"
    own = {"id": "dep-own", "type": "deposit", "account_id": mine, "amount": 100, "currency": "USD"}
    auth = tenant(ctx, shop, "read")
    writer = tenant(ctx, shop)
    assert http.post("/v1/commands", json=own, headers=writer).status_code == 202
    assert final(http, "dep-own", writer)["status"] == "applied"

    entries = http.get(f"/v1/accounts/{mine}/entries", headers=auth).json()["entries"]
    shown = [e["command_id"] for e in entries]
    assert shown == [f"~{admin_transfer['id']}", "dep-own"]
    for command_id in shown:
        for path in (command_id, urllib.parse.quote(command_id, safe="")):
            read = http.get(f"/v1/commands/{path}", headers=auth)
            assert read.status_code == 200 and read.json()["id"] == command_id, read.text
    foreign = http.get(f"/v1/commands/~{admin_transfer['id']}", headers=auth).json()
    # Only this key's legs: the treasury's balance is not its to see, nor `@world`'s of its own deposit.
    assert [leg["account_id"] for leg in foreign["result"]["entries"]] == [mine]
    own_legs = http.get("/v1/commands/dep-own", headers=auth).json()["result"]["entries"]
    assert [leg["account_id"] for leg in own_legs] == [mine]
    # The treasury's own deposit touches none of the key's accounts: as unknown as a missing id.
    for missing in (f"~{admin_deposit['id']}", admin_deposit["id"], admin_transfer["id"]):
        answer = http.get(f"/v1/commands/{missing}", headers=auth)
        assert answer.status_code == 404 and answer.json()["code"] == "not_found", missing


def test_a_refused_transfer_into_a_tenant_hides_the_payers_balance(
    http: TestClient, ctx: Context, workers: Workers
) -> None:
    """The tenant sees that it was refused and why (the code), not the payer's balance in the detail."""
    shop = f"shop{uid()}:"
    mine = open_account(http, f"{shop}a")
    payer = open_account(http, uid("payer"))
    transfer = {"id": uid("tr"), "type": "transfer", "account_id": payer, "to_account_id": mine, "amount": 10**6}
    assert http.post("/v1/commands", json={**transfer, "currency": "USD"}).status_code == 202
    unconfined = wait_final(http, transfer["id"])
    assert unconfined["status"] == "rejected" and "balance 0" in unconfined["error"]["detail"]
    seen = http.get(f"/v1/commands/~{transfer['id']}", headers=tenant(ctx, shop, "read")).json()
    assert (seen["status"], seen["error"]["code"]) == ("rejected", "insufficient_funds")
    assert "balance" not in seen["error"]["detail"] and seen["error"]["detail"].startswith("withheld")
    assert "result" not in seen  # the payer's balance and seq


def test_two_tenants_share_an_id_without_colliding_or_seeing_each_other(http: TestClient, ctx: Context) -> None:
    """Both get 202 for `order-1`; each reads its own; neither can name the other's; admin reads both."""
    shops = [f"shop{uid()}:", f"shop{uid()}:"]
    keys = {}
    for shop in shops:
        account = open_account(http, f"{shop}a")
        keys[shop] = tenant(ctx, shop)
        body = {"id": "order-1", "type": "deposit", "account_id": account, "amount": 5, "currency": "USD"}
        assert http.post("/v1/commands", json=body, headers=keys[shop]).status_code == 202
    first, second = shops
    assert http.get("/v1/commands/order-1", headers=keys[first]).json()["id"] == "order-1"
    other = {"id": "order-1", "type": "deposit", "account_id": f"{first}a", "amount": 6, "currency": "USD"}
    conflict = http.post("/v1/commands", json=other, headers=keys[first])
    assert conflict.status_code == 409 and first not in conflict.text  # its id, never the stored scope
    for guess in (f"~{second}/order-1", f"{second}/order-1", "~order-1"):
        assert http.get(f"/v1/commands/{guess}", headers=keys[first]).status_code == 404, guess
    # An unconfined key names a tenant's command by its stored id, `/` and all (raw or %2F-escaped).
    for path in (f"{first}/order-1", urllib.parse.quote(f"{first}/order-1", safe="")):
        answer = http.get(f"/v1/commands/{path}")
        assert answer.status_code == 200 and answer.json()["id"] == f"{first}/order-1"


@pytest.fixture(scope="module")
def prefixed_keys(ctx: Context) -> dict[str, dict[str, str]]:
    return {}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_what_the_api_stores_for_any_key_is_what_the_worker_parses(
    data: st.DataObject, http: TestClient, ctx: Context, prefixed_keys: dict[str, dict[str, str]]
) -> None:
    """Generated commands through the real submit path: the stored row always parses for the worker."""
    prefix = data.draw(prefixes.map(lambda p: p[:40]))
    body = data.draw(bodies(prefix))
    if body.get("type") == "transfer" and body["to_account_id"] == body["account_id"]:
        return
    for account_id in {body["account_id"], body.get("to_account_id", body["account_id"])}:
        http.post("/v1/accounts", json={"id": account_id, "currency": body["currency"]})
    body["id"] = uid("p")  # fresh: generated ids would collide across examples
    if prefix not in prefixed_keys:
        prefixed_keys[prefix] = tenant(ctx, prefix) if prefix else {}
    sent = http.post("/v1/commands", json=body, headers=prefixed_keys[prefix])
    if sent.status_code == 422 and sent.json()["code"] == "currency_mismatch":
        return  # the generated account already existed in another currency
    assert sent.status_code == 202, sent.text
    with ctx.engine.connect() as conn:
        payload = conn.execute(
            text("SELECT payload FROM commands WHERE id = :id"),
            {"id": f"{prefix}/{body['id']}" if prefix else body["id"]},
        ).scalar_one()
    parsed = _parse(payload)
    assert not isinstance(parsed, str), parsed
    assert parsed.account_ids()[0] == body["account_id"]


def test_numbers_that_postgres_respells_neither_fail_a_command_nor_conflict_an_account(
    http: TestClient, workers: Workers
) -> None:
    """jsonb keeps `1e300` as 301 digits and `1e23` as an integer: an acknowledged command must still
    apply, and the same account body sent again must still be a 200, not a 409."""
    account = uid("num")
    body = {"id": account, "currency": "USD", "metadata": {"x": 1e23}}
    assert http.post("/v1/accounts", json=body).status_code == 201
    assert http.post("/v1/accounts", json=body).status_code == 200
    assert http.post("/v1/accounts", json={**body, "metadata": {"x": 2e23}}).status_code == 409
    command = {"id": uid("big"), "type": "deposit", "account_id": account, "amount": 5, "currency": "USD"}
    sent = http.post("/v1/commands", json={**command, "metadata": {f"k{i}": 1e300 for i in range(14)}})
    assert sent.status_code == 202, sent.text
    assert wait_final(http, command["id"])["status"] == "applied"


def test_a_tenant_holds_captures_voids_and_refunds_its_own_commands(
    http: TestClient, ctx: Context, workers: Workers
) -> None:
    """Captures, voids and reversals name other commands: a confined key names its own by the ids it
    chose, and another tenant's ids (or an outside hold on accounts it cannot see) are unknown to it."""
    shop = f"shop{uid()}:"
    wallet, payee = open_account(http, f"{shop}w"), open_account(http, f"{shop}p")
    auth = tenant(ctx, shop)
    steps = [
        {"id": "fund", "type": "deposit", "account_id": wallet, "amount": 1_000, "currency": "USD"},
        {"id": "h1", "type": "hold", "account_id": wallet, "to_account_id": payee, "amount": 400, "currency": "USD"},
        {"id": "c1", "type": "capture", "hold_id": "h1", "amount": 300},
        {"id": "h2", "type": "hold", "account_id": wallet, "amount": 100, "currency": "USD"},
        {"id": "v2", "type": "void", "hold_id": "h2"},
        {"id": "r1", "type": "reversal", "command_id": "c1", "amount": 100},
    ]
    for body in steps:
        sent = http.post("/v1/commands", json=body, headers=auth)
        assert sent.status_code == 202, sent.text
        assert final(http, body["id"], auth)["status"] == "applied", final(http, body["id"], auth)
    assert http.get("/v1/holds/h1", headers=auth).json()["status"] == "captured"
    assert http.get(f"/v1/holds/{urllib.parse.quote(shop + '/h1', safe='')}").json()["id"] == f"{shop}/h1"
    assert [h["id"] for h in http.get(f"/v1/accounts/{wallet}/holds", headers=auth).json()["holds"]] == ["h1", "h2"]
    assert http.get("/v1/commands/c1", headers=auth).json()["reversed_amount"] == 100
    view = http.get(f"/v1/accounts/{wallet}", headers=auth).json()
    assert (view["balance"], view["held"], view["available"]) == (800, 0, 800)
    # Another tenant's key does not see these ids, nor an outside hold on an account outside its prefix.
    other = f"shop{uid()}:"
    open_account(http, f"{other}x")
    theirs = tenant(ctx, other)
    outside = uid("outside")
    open_account(http, outside)
    http.post(
        "/v1/commands", json={"id": uid("d"), "type": "deposit", "account_id": outside, "amount": 5, "currency": "USD"}
    )
    outside_hold = {"id": uid("oh"), "type": "hold", "account_id": outside, "amount": 5, "currency": "USD"}
    assert http.post("/v1/commands", json=outside_hold).status_code == 202
    refused = [
        ({"id": "c9", "type": "capture", "hold_id": "h1"}, "unknown_hold"),
        ({"id": "v9", "type": "void", "hold_id": f"~{outside_hold['id']}"}, "unknown_hold"),
        ({"id": "r9", "type": "reversal", "command_id": "c1"}, "unknown_command"),
    ]
    for body, code in refused:
        answer = http.post("/v1/commands", json=body, headers=theirs)
        assert answer.status_code == 422 and answer.json()["code"] == code, answer.text
    assert http.get("/v1/holds/h1", headers=theirs).status_code == 404
    # An admin's deposit on the tenant's account is named `~<id>` by the tenant, which may refund it;
    # the admin names the tenant's hold by its stored id.
    admins = {"id": uid("adm"), "type": "deposit", "account_id": wallet, "amount": 50, "currency": "USD"}
    assert http.post("/v1/commands", json=admins).status_code == 202
    assert wait_final(http, admins["id"])["status"] == "applied"
    refund = {"id": "r2", "type": "reversal", "command_id": f"~{admins['id']}"}
    assert http.post("/v1/commands", json=refund, headers=auth).status_code == 202
    assert final(http, "r2", auth)["status"] == "applied"
    h3 = {"id": "h3", "type": "hold", "account_id": wallet, "amount": 10, "currency": "USD"}
    assert http.post("/v1/commands", json=h3, headers=auth).status_code == 202
    assert final(http, "h3", auth)["status"] == "applied"
    by_admin = {"id": uid("void"), "type": "void", "hold_id": f"{shop}/h3"}
    assert http.post("/v1/commands", json=by_admin).status_code == 202
    assert wait_final(http, by_admin["id"])["status"] == "applied"
    assert http.get("/v1/holds/h3", headers=auth).json()["status"] == "voided"
    # The admin's void and capture on the tenant's accounts are readable by the tenant, as `~<id>`.
    assert http.get(f"/v1/commands/~{by_admin['id']}", headers=auth).json()["status"] == "applied"
    h4 = {"id": "h4", "type": "hold", "account_id": wallet, "amount": 10, "currency": "USD"}
    assert http.post("/v1/commands", json=h4, headers=auth).status_code == 202
    assert final(http, "h4", auth)["status"] == "applied"
    admin_capture = {"id": uid("cap"), "type": "capture", "hold_id": f"{shop}/h4"}
    assert http.post("/v1/commands", json=admin_capture).status_code == 202
    assert wait_final(http, admin_capture["id"])["status"] == "applied"
    shown = [e["command_id"] for e in http.get(f"/v1/accounts/{wallet}/entries", headers=auth).json()["entries"]]
    assert f"~{admin_capture['id']}" in shown
    seen = http.get(f"/v1/commands/~{admin_capture['id']}", headers=auth).json()
    assert seen["status"] == "applied" and all(e["account_id"].startswith(shop) for e in seen["result"]["entries"])
    # Another tenant cannot tell this tenant's void from a missing command.
    for name in (f"~{shop}/v2", f"~{shop}/no-such-command"):
        probe = http.post("/v1/commands", json={"id": uid("p"), "type": "reversal", "command_id": name}, headers=theirs)
        assert probe.status_code == 422 and probe.json()["code"] == "unknown_command", probe.text

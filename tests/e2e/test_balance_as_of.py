"""`GET /v1/accounts/{id}/balance?seq=|?at=`: the balance after the last entry at or before a seq or a
time, read from `balance_after` with one index lookup (the plan is checked), over real servers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import text

from ledgerq.api.accounts import balance_query
from ledgerq.api.context import Context
from ledgerq.shared.apikeys import create_key
from tests.conftest import Workers, uid, wait_final


def move(http: TestClient, account: str, kind: str, amount: int) -> None:
    body = {"id": uid(kind), "type": kind, "account_id": account, "amount": amount, "currency": "USD"}
    assert http.post("/v1/commands", json=body).status_code == 202
    assert wait_final(http, body["id"])["status"] == "applied"


def balance(http: TestClient, account: str, **query: Any) -> dict[str, Any]:
    answer = http.get(f"/v1/accounts/{account}/balance", params=query)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_balance_as_of_a_seq_or_a_time(http: TestClient, workers: Workers) -> None:
    account = uid("asof")
    assert http.post("/v1/accounts", json={"id": account, "currency": "USD"}).status_code == 201
    assert balance(http, account, seq=5) == {"account_id": account, "balance": 0, "seq": 0, "at": None}
    for kind, amount in (("deposit", 100), ("deposit", 50), ("withdraw", 30)):
        move(http, account, kind, amount)
    entries = http.get(f"/v1/accounts/{account}/entries").json()["entries"]
    assert [e["balance_after"] for e in entries] == [100, 150, 120]
    assert [balance(http, account, seq=n)["balance"] for n in (0, 1, 2, 3, 99)] == [0, 100, 150, 120, 120]
    assert balance(http, account, seq=2)["at"] == entries[1]["created_at"]
    first = datetime.fromisoformat(entries[0]["created_at"])
    assert balance(http, account, at=(first - timedelta(seconds=1)).isoformat())["seq"] == 0
    for entry in entries:  # at an entry's own time: the last entry at or before it
        at = datetime.fromisoformat(entry["created_at"])
        expected = max((e for e in entries if datetime.fromisoformat(e["created_at"]) <= at), key=lambda e: e["seq"])
        assert balance(http, account, at=at.isoformat())["balance"] == expected["balance_after"]
    assert balance(http, account, at="2999-01-01T00:00:00Z")["balance"] == 120


def test_bad_queries_are_400_and_outside_accounts_404(http: TestClient, ctx: Context) -> None:
    account = uid("asof")
    assert http.post("/v1/accounts", json={"id": account, "currency": "USD"}).status_code == 201
    for query in (
        {},
        {"seq": 1, "at": "2026-01-01T00:00:00Z"},
        {"seq": -1},
        {"at": "yesterday"},
        {"at": "2026-01-01T00:00:00"},
    ):
        answer = http.get(f"/v1/accounts/{account}/balance", params=query)
        assert answer.status_code == 400 and answer.json()["code"] == "invalid_request", (query, answer.text)
    assert http.get(f"/v1/accounts/{uid('ghost')}/balance", params={"seq": 1}).status_code == 404
    secret, _ = create_key(ctx.engine, "read", prefix="shopx:")
    outside = http.get(
        f"/v1/accounts/{account}/balance", params={"seq": 1}, headers={"Authorization": f"Bearer {secret}"}
    )
    assert outside.status_code == 404 and outside.json()["code"] == "not_found"


def test_each_lookup_is_one_index_scan_whatever_the_history(ctx: Context) -> None:
    """The plans of the queries the API runs: a backward index scan under a Limit, stopping at one row.

    Sorts and sequential scans are priced out for the EXPLAIN, so the plan does not depend on how many
    entries this database happens to hold (on a near-empty table a seq scan and a sort are cheapest);
    an index that did not serve the query's filter and order would still leave a Sort, and fail."""
    queries = {
        "entries_pkey": balance_query("a", seq=5),
        "entries_account_time": balance_query("a", at=datetime(2026, 1, 1, tzinfo=UTC)),
    }
    with ctx.engine.begin() as conn:
        conn.execute(text("SET LOCAL enable_seqscan = off"))
        conn.execute(text("SET LOCAL enable_sort = off"))
        for index, query in queries.items():
            sql = str(query.compile(conn, compile_kwargs={"literal_binds": True}))
            plan = conn.execute(text(f"EXPLAIN (FORMAT JSON) {sql}")).scalar_one()[0]["Plan"]
            print(f"balance as of ({index}): {plan['Node Type']} -> {plan['Plans'][0]['Node Type']} on {index}")
            assert plan["Node Type"] == "Limit", plan
            (scan,) = plan["Plans"]
            assert scan["Node Type"] == "Index Scan" and scan["Index Name"] == index, scan
            assert scan["Scan Direction"] == "Backward", scan

"""Listing accounts by id prefix (`GET /v1/accounts?prefix=`): id order, a cursor that misses none,
a key confined to a prefix sees only its own, system accounts only when asked, bad queries refused."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from ledgerq.api.context import Context
from ledgerq.shared.apikeys import create_key
from tests.conftest import uid, wait_final

pytestmark = pytest.mark.usefixtures("workers")


def opened(http: TestClient, *ids: str, currency: str = "USD") -> list[str]:
    for account_id in ids:
        assert http.post("/v1/accounts", json={"id": account_id, "currency": currency}).status_code == 201
    return list(ids)


def listed(http: TestClient, headers: dict[str, str] | None = None, **params: Any) -> list[dict[str, Any]]:
    """Every page of the listing, following `next_after_id` (at most 100 pages)."""
    found: list[dict[str, Any]] = []
    after: str | None = ""
    for _ in range(100):
        answer = http.get("/v1/accounts", params={**params, "after_id": after}, headers=headers or {})
        assert answer.status_code == 200, answer.text
        page = answer.json()
        found += page["accounts"]
        after = page["next_after_id"]
        if after is None:
            return found
    raise AssertionError("more than 100 pages")


def confined(ctx: Context, prefix: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {create_key(ctx.engine, 'read', prefix=prefix, name='confined')[0]}"}


def test_accounts_by_prefix_in_id_order_with_the_account_shape(http: TestClient) -> None:
    """A prefix selects exactly its accounts, by id, each as `GET /v1/accounts/{id}` shows it."""
    shop = f"list{uid('')[1:]}:"
    ids = opened(http, f"{shop}b", f"{shop}a", f"{shop}d", f"{shop}c")
    opened(http, f"{shop[:-1]}x:a")  # shares the letters but not the prefix
    deposit_id = uid("dep")
    deposit = {"id": deposit_id, "type": "deposit", "account_id": ids[0], "amount": 250, "currency": "USD"}
    assert http.post("/v1/commands", json=deposit).status_code == 202
    assert wait_final(http, deposit_id)["status"] == "applied"

    found = listed(http, prefix=shop)
    assert [a["id"] for a in found] == sorted(ids)  # letters only: the same order in every collation
    assert {a["id"]: a for a in found}[ids[0]] == http.get(f"/v1/accounts/{ids[0]}").json()
    assert {a["id"]: a["balance"] for a in found}[ids[0]] == 250
    # `_` in a prefix is a character, not a LIKE wildcard: `c_` matches `c_1`, not `cx1`.
    opened(http, f"{shop}c_1", f"{shop}cx1")
    assert [a["id"] for a in listed(http, prefix=f"{shop}c_")] == [f"{shop}c_1"]
    assert listed(http, prefix=f"{shop}zzz") == []


def test_pages_follow_the_cursor_without_gaps_or_repeats(http: TestClient) -> None:
    """Pages of 2 over 7 accounts: 4 pages, every account once, the last page's cursor null."""
    shop = f"page{uid('')[1:]}:"
    ids = opened(http, *(f"{shop}{n}" for n in range(7)))
    pages, after, seen = 0, "", []
    while after is not None:
        page = http.get("/v1/accounts", params={"prefix": shop, "limit": 2, "after_id": after}).json()
        seen += [a["id"] for a in page["accounts"]]
        after = page["next_after_id"]
        pages += 1
    assert sorted(seen) == sorted(ids) and len(seen) == len(set(seen)) == 7
    assert pages == 4
    # An exact multiple of the limit ends with one empty page, the cursor null.
    last = http.get("/v1/accounts", params={"prefix": shop, "limit": 7}).json()
    assert len(last["accounts"]) == 7 and last["next_after_id"] == last["accounts"][-1]["id"]
    tail = http.get("/v1/accounts", params={"prefix": shop, "limit": 7, "after_id": last["next_after_id"]}).json()
    assert tail == {"accounts": [], "next_after_id": None}


def test_a_confined_key_sees_only_its_prefix(http: TestClient, ctx: Context) -> None:
    """A key for `shopA:` lists its accounts with no prefix or a shorter one, nothing for another shop."""
    tag = uid("")[1:]
    mine = opened(http, f"a{tag}:1", f"a{tag}:2")
    theirs = opened(http, f"a{tag}x:1", f"b{tag}:1")
    key = confined(ctx, f"a{tag}:")
    assert [a["id"] for a in listed(http, key, prefix=f"a{tag}")] == sorted(mine)
    assert [a["id"] for a in listed(http, key, prefix=f"a{tag}:2")] == [mine[1]]
    assert listed(http, key, prefix=f"b{tag}:") == []
    everything = {a["id"] for a in listed(http, key, limit=1000)}
    assert everything == set(mine) and not everything & set(theirs)
    assert listed(http, key, kind="system") == []  # no prefix starts with `@`
    # Unconfined, the shorter prefix finds all three `a…` accounts.
    assert {a["id"] for a in listed(http, prefix=f"a{tag}")} == {*mine, theirs[0]}


def test_system_accounts_only_when_asked(http: TestClient, make_account: Any) -> None:
    """`@world` accounts are left out of the default listing and listed with `kind=system`."""
    make_account(balance=100, currency="EUR")
    assert all(not a["id"].startswith("@") for a in listed(http, limit=1000))
    system = listed(http, kind="system", prefix="@world:EUR", limit=1000)
    assert system and all(a["id"].startswith("@world:EUR:") and a["currency"] == "EUR" for a in system)
    assert sum(a["balance"] for a in system) < 0  # deposits came from the outside world


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 1001},
        {"limit": "ten"},
        {"prefix": "has space"},
        {"prefix": "x" * 129},
        {"kind": "other"},
        {"after_id": "x" * 161},
        {"after_id": "a\x00b"},  # a NUL reached Postgres once (found by the fuzz test)
        {"after_id": "has space"},
    ],
)
def test_bad_queries_are_refused(http: TestClient, params: dict[str, Any]) -> None:
    """Out-of-range limits and malformed prefixes are a problem+json `invalid_request` (400, as every
    bad query in this API), not an empty or clamped page."""
    answer = http.get("/v1/accounts", params=params)
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["code"] == "invalid_request"


def test_listing_needs_a_key(http: TestClient) -> None:
    answer = http.get("/v1/accounts", headers={"Authorization": ""})
    assert answer.status_code == 401 and answer.json()["code"] == "unauthorized"

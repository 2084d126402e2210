"""The HTTP contract's edges, over real PostgreSQL and Redis: bodies are `application/json` or a 415
with nothing claimed; every refusal is problem+json with its code; `/` leads a browser to `/ui`."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from ledgerq.api.context import Context
from ledgerq.shared.keys import queue_key
from ledgerq.shared.schema import accounts, commands
from tests.conftest import PARTITIONS, uid

PROBLEM_FIELDS = {"type", "title", "status", "detail", "code"}


def counts(ctx: Context) -> tuple[int, int, int]:
    """(command rows, account rows, queued jobs): what a refused request must leave as it was."""
    with ctx.engine.connect() as conn:
        rows = conn.execute(select(func.count()).select_from(commands)).scalar_one()
        made = conn.execute(select(func.count()).select_from(accounts)).scalar_one()
    return int(rows), int(made), sum(int(ctx.redis.llen(queue_key(p))) for p in range(PARTITIONS))


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",  # what `curl -d` sends without -H
        "multipart/form-data; boundary=x",
        "application/jsonx",
        "text/json",
        None,
    ],
)
def test_a_body_that_is_not_application_json_is_a_415_and_nothing_is_claimed(
    http: TestClient, ctx: Context, content_type: str | None
) -> None:
    account = uid("mt")
    assert http.post("/v1/accounts", json={"id": account, "currency": "USD"}).status_code == 201
    deposit = {"id": uid("dep"), "type": "deposit", "account_id": account, "amount": 100, "currency": "USD"}
    headers = {"content-type": content_type} if content_type else {}
    before = counts(ctx)
    for path, body in (("/v1/commands", deposit), ("/v1/accounts", {"id": uid("acct"), "currency": "USD"})):
        answer = http.post(path, content=json.dumps(body).encode(), headers=headers)
        assert answer.status_code == 415, (path, content_type, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
        problem = answer.json()
        assert problem.keys() >= PROBLEM_FIELDS and problem["code"] == "unsupported_media_type"
        assert "application/json" in problem["detail"]
    assert counts(ctx) == before
    assert http.get(f"/v1/commands/{deposit['id']}").status_code == 404


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON"])
def test_application_json_with_or_without_parameters_is_accepted(http: TestClient, content_type: str) -> None:
    account = uid("mt")
    body = json.dumps({"id": account, "currency": "USD"}).encode()
    assert http.post("/v1/accounts", content=body, headers={"content-type": content_type}).status_code == 201


def test_a_wrong_method_is_a_405_problem(http: TestClient) -> None:
    answer = http.delete("/v1/accounts")
    assert answer.status_code == 405 and answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["code"] == "method_not_allowed" and answer.json().keys() >= PROBLEM_FIELDS
    assert "POST" in answer.headers["allow"]


def test_the_root_url_leads_a_browser_to_the_wallet_page(http: TestClient) -> None:
    answer = http.get("/", follow_redirects=False)
    assert answer.status_code == 307 and answer.headers["location"] == "/ui"
    page = http.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
